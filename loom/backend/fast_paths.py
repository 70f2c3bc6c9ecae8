"""Measured fast paths outside the array-API standard, each with the standard version as fallback.

:mod:`loom.ops` is written against the standard alone (it runs under ``array_api_strict``).
Where a measurement showed that NumPy or CuPy do better with something the standard does not
have, the op asks for it here by name, and every other namespace gets the standard spelling:

* :func:`constant` – a 0-d NumPy array of the operand's dtype instead of a Python float.
  NumPy 2 resolves a Python float operand (``x * 1.1``) through its weak-scalar promotion:
  ~0.4 µs per call on top of a ~0.45 µs ufunc on a tiny array; a 0-d array of the same dtype
  takes the array-array path at no extra cost, with the same values. The fused training step
  (thousands of tiny ops per second) binds its constants once with it.
* :func:`elementwise` – NumPy's own ufunc where ``array_api_compat`` wraps it in a Python
  layer that costs more than the ufunc on a tiny array (``sign``, for complex support).
* :func:`reshape`, :func:`permute_dims`, :func:`matrix_transpose` and :func:`astype` – the
  array's own C-level method or attribute on NumPy arrays. ``np.reshape`` and
  ``np.transpose`` (which ``array_api_compat`` calls) are Python wrappers costing 0.5-1 µs
  more per call than ``ndarray.reshape`` / ``.transpose`` / ``.mT``, ``astype`` ~0.25 µs more;
  a Conv2D training step of the layer benchmarks reshapes 7 times, a multi-head attention
  step reshapes, permutes and transposes 21 times (3-5% of their time).

Recognising a namespace is the backend's business (``array_api_compat.is_numpy_namespace``),
which is why these helpers live here and not in the ops.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "astype",
    "constant",
    "elementwise",
    "matrix_transpose",
    "permute_dims",
    "reshape",
]

_NDARRAY = np.ndarray


def constant(value: float, xp: Any, dtype: Any) -> Any:
    """``value`` as a read-only 0-d NumPy array of ``dtype`` on NumPy namespaces, else the float itself.

    Parameters
    ----------
    value : float
        The constant.
    xp : module
        Namespace of the arrays the constant will meet.
    dtype : dtype
        Their dtype (a NumPy dtype on NumPy namespaces).

    Returns
    -------
    numpy.ndarray or float
        Other namespaces get the Python float (CuPy passes it as a kernel argument; the
        standard defines Python scalars as operands).

    Examples
    --------
    >>> constant(0.5, np, np.float32).dtype
    dtype('float32')
    """
    if not array_api_compat.is_numpy_namespace(xp):
        return value
    array = np.asarray(value, dtype=dtype)
    array.flags.writeable = False
    return array


def elementwise(xp: Any, name: str) -> Any:
    """Element-wise function ``name`` of ``xp``, unwrapped to NumPy's own ufunc on NumPy namespaces.

    ``array_api_compat`` wraps a few NumPy functions (``sign`` for complex inputs) in a Python
    layer; for real inputs they agree with the ufunc.

    Examples
    --------
    >>> elementwise(np, "sign") is np.sign
    True
    """
    if array_api_compat.is_numpy_namespace(xp):
        return getattr(np, name)
    return getattr(xp, name)


def reshape(x: Any, shape: tuple[int, ...], xp: Any) -> Any:
    """``xp.reshape(x, shape)`` (a view where possible); NumPy arrays use their own method.

    Examples
    --------
    >>> reshape(np.arange(6), (2, 3), np).shape
    (2, 3)
    """
    if type(x) is _NDARRAY:
        return x.reshape(shape)
    return xp.reshape(x, shape)


def permute_dims(x: Any, axes: tuple[int, ...], xp: Any) -> Any:
    """``xp.permute_dims(x, axes)`` (a view); NumPy arrays use their own ``transpose`` method."""
    if type(x) is _NDARRAY:
        return x.transpose(axes)
    return xp.permute_dims(x, axes)


def matrix_transpose(x: Any, xp: Any) -> Any:
    """``xp.matrix_transpose(x)``: the last two axes swapped (a view); NumPy arrays use ``.mT``."""
    if type(x) is _NDARRAY:
        return x.mT
    return xp.matrix_transpose(x)


def astype(x: Any, dtype: Any, xp: Any) -> Any:
    """``xp.astype(x, dtype)`` (always a copy); NumPy arrays use their own method."""
    if type(x) is _NDARRAY:
        return x.astype(dtype)
    return xp.astype(x, dtype)
