"""Lookup tables copied to the device once (RoPE tables, causal masks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loom.backend.selection import _cupy_backend

__all__ = ["device_constant"]

_DEVICE_CONSTANTS: dict[tuple[Any, ...], Any] = {}
_DEVICE_CONSTANTS_MAX = 256


def device_constant(xp: Any, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``xp.asarray(make())``, built and copied to the device once per (namespace, device, key).

    For lookup tables that layer math needs on every call (RoPE tables, causal
    masks): without it a GPU forward pass would copy them host-to-device each
    time. Callers must not modify the returned array in place.
    """
    name = getattr(xp, "__name__", type(xp).__name__)
    device = _cupy_backend().raw.cuda.Device().id if "cupy" in name else None
    full_key = (name, device, *key)
    array = _DEVICE_CONSTANTS.get(full_key)
    if array is None:
        if len(_DEVICE_CONSTANTS) >= _DEVICE_CONSTANTS_MAX:
            _DEVICE_CONSTANTS.clear()
        array = _DEVICE_CONSTANTS[full_key] = xp.asarray(make())
    return array
