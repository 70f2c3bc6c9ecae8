"""JSON parsing for untrusted text: bounded nesting depth, no NaN/Infinity literals.

Every JSON document loom reads from a user or a file (network configs, bundles and
their weights blobs, ``config.json``, safetensors headers, tokenizer files) goes through
:func:`loads`. Before parsing, the nesting depth is measured without recursion (strings
removed by one regular expression, the brackets counted with NumPy), so a deeply nested
document is a clear error instead of a ``RecursionError`` here or in loom's own recursive
code later. Python's ``json`` accepts the non-standard literals ``NaN``, ``Infinity`` and
``-Infinity``; they are rejected. Numbers such as ``1e999`` still parse (to ``inf``) and
are rejected by the validation of the field they land in.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from loom.errors import LoomError
from loom.limits import get_limits

__all__ = ["check_depth", "json_depth", "loads"]

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class _NonFiniteLiteral(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFiniteLiteral(name)


def json_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` outside strings (0 for a scalar document).

    Examples
    --------
    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int64)
    return int(np.cumsum(steps).max())


def _too_deep(source: str, depth: object, limit: int) -> str:
    return (
        f"{source}: JSON nesting depth {depth} exceeds the limit of {limit} "
        "(raise it with loom.limits.set_limits(max_json_depth=...) or LOOM_MAX_JSON_DEPTH)"
    )


def check_depth(value: Any, source: str, error: type[LoomError]) -> None:
    """Raise ``error`` when dicts / lists nest deeper than ``max_json_depth`` (walked without recursion)."""
    limit = get_limits().max_json_depth
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is None:
            continue
        if depth > limit:
            raise error(_too_deep(source, f"at least {depth}", limit))
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))


def loads(text: str | bytes | bytearray | memoryview, *, source: str, error: type[LoomError]) -> Any:
    """Parse JSON text from an untrusted source.

    Parameters
    ----------
    text : str or bytes
        The document (bytes are decoded as UTF-8).
    source : str
        What is parsed, for messages (``"config"``, ``"models[0].weights.data"``, a path).
    error : type
        The :class:`~loom.errors.LoomError` subclass to raise.

    Returns
    -------
    Any
        The parsed value.

    Raises
    ------
    LoomError
        ``error``: invalid JSON, a ``NaN``/``Infinity`` literal, or nesting deeper than
        ``loom.limits`` ``max_json_depth``.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{source}: invalid JSON (not UTF-8: {exc})") from None
    if not isinstance(text, str):
        raise error(f"{source}: expected JSON text, got {type(text).__name__}")
    depth, limit = json_depth(text), get_limits().max_json_depth
    if depth > limit:
        raise error(_too_deep(source, depth, limit))
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteLiteral as exc:
        raise error(f"{source}: invalid JSON: {exc} is not a JSON number (non-finite values are not allowed)") from None
    except (ValueError, RecursionError) as exc:
        raise error(f"{source}: invalid JSON ({exc})") from None
