"""Seeded mutators for JSON documents and binary files, and the "moderate values" test.

Every mutation is a pure function of a :class:`random.Random`, so a case is reproduced
from its seed. JSON mutations walk to a random node and replace, delete, duplicate or
perturb it (hostile scalars: NaN, infinities, 10**400, -1, 2**63, wrong types, deep
nesting); byte mutations overwrite structural integers, flip bits and truncate.
"""

from __future__ import annotations

import copy
import json
import math
import random
import struct
from typing import Any

import numpy as np

HOSTILE_SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    7,
    10**5,
    10**7,
    2**31,
    2**63,
    10**400,
    -(2**40),
    0.0,
    -0.0,
    0.5,
    1.5,
    -2.5,
    1e-45,
    1e-30,
    1e30,
    1e39,
    3.4e38,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "abc",
    "NaN",
    "dense",
    "softmax",
    "relu",
    "grid",
    "concat",
    "1",
    [],
    [1],
    [1.5, "x"],
    [[1, 2], [3]],
    {},
    {"type": "dense"},
]

#: Config values treated as moderate: 0 or magnitudes in [1e-6, 1e6].
MODERATE_RANGE = (1e-6, 1e6)
#: Largest magnitude of a moderate weight or input value.
ARRAY_MODERATE = 1e4


def deep_nest(rng: random.Random) -> Any:
    """A list or object nested 65..800 levels deep (deeper text is made by :func:`mutate_text`)."""
    depth = rng.choice([65, 100, 300, 800])
    value: Any = 1
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"branches": value}
    return value


def _paths(value: Any, prefix: tuple[Any, ...] = (), out: list[tuple[Any, ...]] | None = None, limit: int = 4000):
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    out.append(prefix)
    if isinstance(value, dict):
        for key in value:
            _paths(value[key], (*prefix, key), out, limit)
    elif isinstance(value, list):
        step = max(1, len(value) // 16)  # long weight lists: sample a few positions
        for i in range(0, len(value), step):
            _paths(value[i], (*prefix, i), out, limit)
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def mutate_json(value: Any, rng: random.Random, count: int | None = None, *, keys: tuple[str, ...] = ()) -> Any:
    """A mutated deep copy of a JSON-like value (``count`` mutations, default 1-3)."""
    value = copy.deepcopy(value)
    for _ in range(count if count is not None else rng.randint(1, 3)):
        paths = _paths(value)
        path = rng.choice(paths)
        if not path:
            if rng.random() < 0.1:
                value = copy.deepcopy(rng.choice(HOSTILE_SCALARS))
            continue
        parent, key = _get(value, path[:-1]), path[-1]
        current = parent[key]
        op = rng.random()
        if op < 0.40:
            parent[key] = copy.deepcopy(rng.choice(HOSTILE_SCALARS))
        elif op < 0.55 and isinstance(current, int | float) and not isinstance(current, bool):
            factor = rng.choice([0, -1, 2, 3, 10, 1000, 0.5, 1e-3, 1e6])
            try:
                new = current * factor + rng.choice([0, 1, -1])
                parent[key] = int(new) if isinstance(current, int) and float(new).is_integer() else new
            except (OverflowError, ValueError):  # 10**400 * 0.5
                parent[key] = current
        elif op < 0.65:
            if isinstance(parent, dict):
                del parent[key]
            elif parent:
                parent.pop(key)
        elif op < 0.72 and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(current))
        elif op < 0.80 and isinstance(parent, dict):
            parent[rng.choice(keys) if keys and rng.random() < 0.7 else f"unknown_{rng.randint(0, 9)}"] = copy.deepcopy(
                rng.choice(HOSTILE_SCALARS)
            )
        elif op < 0.85:
            parent[key] = deep_nest(rng)
            break  # the value is now too deep to walk again
        elif op < 0.93 and isinstance(current, str) and keys:
            parent[key] = rng.choice(
                [
                    "dense",
                    "conv2d",
                    "mha",
                    "rnn",
                    "lstm",
                    "softmax",
                    "layer_norm",
                    "rms_norm",
                    "swiglu",
                    "parallel",
                    "residual",
                    "add",
                    "avg",
                    "grid_scatter",
                    "sparse",
                    "entmax",
                    "masked",
                    "gelu",
                    "linear",
                    current.upper(),
                ]
            )
        else:
            parent[key] = copy.deepcopy(_get(value, rng.choice(paths))) if rng.random() < 0.5 else current
    return value


def dumps_lenient(value: Any) -> str:
    """JSON text that may hold NaN / Infinity literals (what a hostile file can contain)."""
    return json.dumps(value, allow_nan=True)


def mutate_text(text: str, rng: random.Random) -> str:
    """Character-level damage: truncation, deletion, duplication, bracket injection."""
    op = rng.random()
    if not text:
        return "{"
    i = rng.randrange(len(text))
    if op < 0.3:
        return text[:i]
    if op < 0.5:
        return text[:i] + text[i + rng.randint(1, 8) :]
    if op < 0.7:
        return text[:i] + rng.choice(["[", "{", "]", "}", '"', ",", ":", "NaN", "1e999", "-", "\\"]) + text[i:]
    if op < 0.85:
        return text[:i] + "[" * 5000 + text[i:]
    j = rng.randrange(len(text))
    return text[:i] + text[j : j + rng.randint(1, 64)] + text[i:]


_EXTREME_INTS = [0, 1, 2, 3, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1]


def mutate_bytes(blob: bytes, rng: random.Random, fields: list[tuple[int, int]] | None = None) -> bytes:
    """Overwrite a structural integer (``fields``: ``(offset, size)`` of 4/8-byte fields), flip bits or truncate."""
    data = bytearray(blob)
    op = rng.random()
    if fields and op < 0.55:
        offset, size = rng.choice(fields)
        value = rng.choice(_EXTREME_INTS)
        if rng.random() < 0.3:
            current = int.from_bytes(data[offset : offset + size], "little")
            value = max(0, current + rng.choice([-2, -1, 1, 2, 1000]))
        data[offset : offset + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
    elif op < 0.75:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif op < 0.9:
        data = data[: rng.randrange(len(data))]
    else:
        i = rng.randrange(len(data))
        data[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
    return bytes(data)


def write_float32(blob: bytes, rng: random.Random, start: int, count: int, extreme: bool = True) -> bytes:
    """Write one float32 (NaN, inf, huge or a random bit pattern) at a random element of a data region."""
    data = bytearray(blob)
    i = start + 4 * rng.randrange(max(count, 1))
    value = rng.choice([float("nan"), float("inf"), -float("inf"), 3e38, 1e30, -7.5, 0.0] if extreme else [0.25])
    data[i : i + 4] = struct.pack("<f", value) if rng.random() < 0.8 else rng.getrandbits(32).to_bytes(4, "little")
    return bytes(data)


def _number_moderate(value: Any) -> bool:
    low, high = MODERATE_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    if isinstance(value, int):
        return abs(value) <= high
    if not math.isfinite(value):
        return True  # a NaN / inf a loader accepted is its failure, not an overflow
    mag = abs(value)
    return mag == 0 or low <= mag <= high


def _array_moderate(values: np.ndarray) -> bool:
    if values.size == 0 or values.dtype.kind not in "fiu":
        return True
    values = values.astype(np.float64, copy=False)
    return bool(np.all(~np.isfinite(values) | (np.abs(values) <= ARRAY_MODERATE)))


def free_of_extremes(value: Any) -> bool:
    """False when a JSON-like value (or array) holds an extreme *finite* number (walked without recursion).

    Config numbers are extreme outside 0 and ``MODERATE_RANGE``; long number lists (weights)
    and arrays beyond ``ARRAY_MODERATE``. NaN and infinities are not extreme: when a file or
    input holding them is accepted and the output is non-finite, that is a silent NaN.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            if not _array_moderate(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            if len(item) > 64 and all(type(v) in (int, float) for v in item[:64]):
                try:
                    if not _array_moderate(np.asarray(item, dtype=np.float64)):
                        return False
                    continue
                except (ValueError, TypeError, OverflowError):
                    pass
            stack.extend(item)
        elif not _number_moderate(item):
            return False
    return True
