"""Resource limits loom applies to untrusted input: configs, bundles, model files, chat templates.

Every limit has a default that no legitimate LOOM network or chat template comes near,
and can be raised explicitly, three ways (the innermost wins):

* for a block of code: ``with loom.limits.limited(max_parameters=10**9): ...``;
* for the process: ``loom.limits.set_limits(max_parameters=10**9)``;
* from the environment, read when a limit is first needed: ``LOOM_MAX_PARAMETERS``,
  ``LOOM_MAX_ACTIVATIONS``, ``LOOM_MAX_JSON_DEPTH``, ``LOOM_TEMPLATE_SECONDS``,
  ``LOOM_TEMPLATE_OUTPUT_CHARS``, ``LOOM_TEMPLATE_WORK_CHARS``.

The limits are checked before anything is allocated: a network config or bundle whose
sizes add up to more parameters or activation values than allowed is a
:class:`~loom.errors.ConfigError` naming the layer, the count and the limit.
SECURITY.md says what each one protects.

Examples
--------
>>> import loom.limits
>>> loom.limits.get_limits().max_json_depth
64
>>> with loom.limits.limited(max_json_depth=8):
...     loom.limits.get_limits().max_json_depth
8
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from loom.errors import ConfigError

__all__ = ["Limits", "get_limits", "limited", "set_limits"]


@dataclass(frozen=True)
class Limits:
    """The limits in force (read them with :func:`get_limits`).

    Attributes
    ----------
    max_parameters : int
        Trainable scalars of one network built from a config or bundle (float32:
        4 bytes each; the default, 2**27, is 512 MiB of weights).
    max_activations : int
        Values one forward pass of such a network materialises: ``batch_size`` times the
        sum of every layer's output size and scratch (Conv2D patches, attention scores),
        computed from the config before anything is allocated.
    max_json_depth : int
        Nesting depth of any JSON loom parses (configs, bundles, weights blobs,
        ``config.json``, safetensors headers, tokenizer files).
    template_seconds : float
        Wall-clock deadline of one chat-template rendering.
    template_output_chars : int
        Characters one chat-template rendering may produce, and the size of any single
        string or list it may build.
    template_work_chars : int
        Characters a rendering may produce in total, intermediate strings included.
    """

    max_parameters: int = 2**27
    max_activations: int = 2**27
    max_json_depth: int = 64
    template_seconds: float = 2.0
    template_output_chars: int = 4_000_000
    template_work_chars: int = 64_000_000


_ENV = {
    "max_parameters": "LOOM_MAX_PARAMETERS",
    "max_activations": "LOOM_MAX_ACTIVATIONS",
    "max_json_depth": "LOOM_MAX_JSON_DEPTH",
    "template_seconds": "LOOM_TEMPLATE_SECONDS",
    "template_output_chars": "LOOM_TEMPLATE_OUTPUT_CHARS",
    "template_work_chars": "LOOM_TEMPLATE_WORK_CHARS",
}
_FIELDS = {f.name: f for f in dataclasses.fields(Limits)}
_default: Limits | None = None
_current: ContextVar[Limits | None] = ContextVar("loom_limits", default=None)


def _checked(name: str, value: object, where: str) -> int | float:
    if name not in _FIELDS:
        raise ConfigError(f"{where}: unknown limit {name!r}; known: {', '.join(_FIELDS)}")
    want_int = _FIELDS[name].type in (int, "int")
    if isinstance(value, str):
        try:
            value = int(value) if want_int else float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected {'an integer' if want_int else 'a number'}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or (want_int and not isinstance(value, int)):
        raise ConfigError(f"{where}: expected {'an integer' if want_int else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: expected a positive finite value, got {value!r}")
    return value


def _from_environment() -> Limits:
    changes = {}
    for name, variable in _ENV.items():
        text = os.environ.get(variable)
        if text:
            changes[name] = _checked(name, text.strip(), variable)
    return Limits(**changes)


def get_limits() -> Limits:
    """The limits in force here (innermost :func:`limited` block, else :func:`set_limits`, else env)."""
    current = _current.get()
    if current is not None:
        return current
    global _default
    if _default is None:
        _default = _from_environment()
    return _default


def set_limits(**changes: int | float) -> Limits:
    """Change the process-wide limits (e.g. ``set_limits(max_parameters=10**9)``); returns them."""
    global _default
    checked = {name: _checked(name, value, f"set_limits({name}=...)") for name, value in changes.items()}
    base = _default if _default is not None else _from_environment()
    _default = dataclasses.replace(base, **checked)
    return _default


@contextlib.contextmanager
def limited(**changes: int | float) -> Iterator[Limits]:
    """Context manager: run a block under changed limits (this thread / task only)."""
    checked = {name: _checked(name, value, f"limited({name}=...)") for name, value in changes.items()}
    token = _current.set(dataclasses.replace(get_limits(), **checked))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
