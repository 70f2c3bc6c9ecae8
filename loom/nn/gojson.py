"""JSON text the way Go's ``encoding/json`` writes it (for byte-compatible LOOM bundles).

Differences from Python's ``json`` that matter for LOOM files: float32 values
use Go's shortest round-trip formatting (``0.00001`` not ``1e-05``; ``1e-7``
not ``1e-07``); whole floats print without a decimal point; ``<``, ``>``, ``&``
are escaped as ``\\u003c`` etc.; ``MarshalIndent`` layout.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["dumps", "float32_list_json", "format_float32", "format_float64"]


def _go_exponent(text: str) -> str:
    mantissa, exp = text.split("e")
    sign = "-" if exp.startswith("-") else "+"
    digits = exp.lstrip("+-").lstrip("0") or "0"
    if sign == "-" and len(digits) == 1:
        return f"{mantissa}e-{digits}"
    if sign == "-":
        return f"{mantissa}e-{digits}"
    return f"{mantissa}e+{digits.zfill(2)}"


def _format(value: float, bits: int) -> str:
    if not np.isfinite(value):
        raise ValueError(f"json: unsupported value: {value}")
    typed = np.float32(value) if bits == 32 else np.float64(value)
    absval = abs(typed)
    if absval == 0.0:
        return "-0" if np.signbit(typed) else "0"
    # Go compares in the value's own precision: float32(|x|) < float32(1e-6) for float32.
    low, high = (np.float32(1e-6), np.float32(1e21)) if bits == 32 else (1e-6, 1e21)
    if low <= absval < high:
        return np.format_float_positional(typed, unique=True, trim="-")
    return _go_exponent(np.format_float_scientific(typed, unique=True, trim="-"))


def format_float32(value: float) -> str:
    """Go's JSON text of a float32 (shortest decimal that round-trips to the same float32)."""
    return _format(value, 32)


def format_float64(value: float) -> str:
    """Go's JSON text of a float64."""
    return _format(value, 64)


class Float32(float):
    """A float that :func:`dumps` writes with float32 precision."""


def _escape_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    return (
        encoded.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Float32 | np.float32):
        return format_float32(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return format_float64(float(value))
    if isinstance(value, str):
        return _escape_string(value)
    raise TypeError(f"json: unsupported type {type(value).__name__}")


def dumps(value: Any, indent: str | None = None, _level: int = 0) -> str:
    """Serialise dicts / lists / scalars like Go's ``json.Marshal`` (``indent`` = MarshalIndent)."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{_escape_string(str(k))}:{' ' if indent is not None else ''}{dumps(v, indent, _level + 1)}"
            for k, v in value.items()
        ]
        return _join("{", "}", items, indent, _level)
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return _join("[", "]", [dumps(v, indent, _level + 1) for v in value], indent, _level)
    if isinstance(value, np.ndarray):
        return float32_list_json(value) if indent is None else dumps(value.tolist(), indent, _level)
    return _scalar(value)


def _join(open_: str, close: str, items: list[str], indent: str | None, level: int) -> str:
    if indent is None:
        return open_ + ",".join(items) + close
    pad = "\n" + indent * (level + 1)
    return open_ + pad + ("," + pad).join(items) + "\n" + indent * level + close


def float32_list_json(array: np.ndarray) -> str:
    """Compact Go JSON of a float32 vector (``[0.1,-2,1e-7]``)."""
    values = np.asarray(array, dtype=np.float32).reshape(-1)
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError("json: unsupported value: NaN or Inf")
    return "[" + ",".join(map(format_float32, values.tolist())) + "]"
