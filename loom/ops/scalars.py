"""0-d constants for NumPy's fast path on tiny arrays.

NumPy 2 resolves a Python float operand (``x * 1.1``) through its weak-scalar
promotion: ~0.4 µs per call on top of a ~0.45 µs ufunc on a tiny array. A 0-d
array of the operand's own dtype takes the array-array path at no extra cost,
with the same values (the float is cast to the array's dtype either way). Code
that runs the same small ops thousands of times (the fused training step)
builds its constants once with :func:`constant` and passes them to the ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["constant", "elementwise"]


def constant(value: float, xp: Any, dtype: Any) -> Any:
    """``value`` as a read-only 0-d NumPy array of ``dtype`` for NumPy namespaces, else the float itself.

    Other backends get the Python float (CuPy passes it as a kernel argument).
    """
    if "numpy" not in getattr(xp, "__name__", ""):
        return value
    array = np.asarray(value, dtype=dtype)
    array.flags.writeable = False
    return array


def elementwise(xp: Any, name: str) -> Any:
    """Element-wise function ``name`` of ``xp``, unwrapped to NumPy's own ufunc for NumPy namespaces.

    array-api-compat wraps a few NumPy functions (``sign`` for complex inputs) in a Python
    layer that costs more than the ufunc on a tiny array; for real inputs they agree.
    """
    if "numpy" in getattr(xp, "__name__", ""):
        return getattr(np, name)
    return getattr(xp, name)
