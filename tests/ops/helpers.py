"""Helpers of the ``loom.ops`` tests: data onto a namespace and back, and finite differences through an op.

The tests of ``tests/ops`` take the namespace as the ``xp`` fixture — NumPy or CuPy (the
backend's ``array_api_compat`` namespace) or ``array_api_strict`` with ``--backend strict`` — and
build every input in NumPy first, so each namespace sees the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from loom.backend import to_numpy

__all__ = ["dtype_name", "fd_check", "host", "put"]


def put(xp: Any, data: Any, dtype: str = "float32") -> Any:
    """``data`` (anything ``numpy.asarray`` takes) as an ``xp`` array; floating data as ``dtype`` (a name)."""
    array = np.asarray(data)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(dtype)
    return xp.asarray(array, dtype=getattr(xp, str(array.dtype)))


def host(array: Any) -> np.ndarray:
    """Any namespace's array (NumPy, CuPy, array_api_strict) as a NumPy array."""
    return to_numpy(array)


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for NumPy's, CuPy's and array_api_strict's float32 alike."""
    return str(dtype).rsplit(".", 1)[-1]


def fd_check(
    xp: Any,
    forward: Callable[..., Any],
    backward: Callable[[Any], Mapping[str, Any]],
    inputs: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    samples: int = 12,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> dict[str, float]:
    """Check ``backward`` against central differences of ``sum(forward(**inputs) * r)`` in float64.

    Parameters
    ----------
    xp : module
        Namespace the op runs on.
    forward : callable
        ``forward(**arrays) -> y``: the op (or a composition ending in it) on ``xp`` arrays.
    backward : callable
        ``backward(r) -> {name: gradient}`` for the last ``forward`` call, ``r`` the output gradient.
        Only the names it returns are checked.
    inputs : mapping of str to numpy.ndarray
        Every input of ``forward`` (float64 copies are made).
    samples : int
        Elements of each input perturbed (spread over the array; all of them when fewer).

    Returns
    -------
    dict of str to float
        The largest relative error per checked input.
    """
    rng = np.random.default_rng(seed)
    base = {name: np.asarray(value, dtype=np.float64) for name, value in inputs.items()}
    arrays = {name: put(xp, value, "float64") for name, value in base.items()}
    y = forward(**arrays)
    r = put(xp, rng.standard_normal(tuple(y.shape)), "float64")
    analytic = {name: host(grad) for name, grad in backward(r).items()}

    def objective(name: str, index: tuple[int, ...], delta: float) -> float:
        moved = base[name].copy()
        moved[index] += delta
        return float(xp.sum(forward(**{**arrays, name: put(xp, moved, "float64")}) * r))

    worst: dict[str, float] = {}
    for name, grad in analytic.items():
        assert grad.shape == base[name].shape, f"d/d{name}: shape {grad.shape}, expected {base[name].shape}"
        flat = np.arange(base[name].size)
        picks = flat if flat.size <= samples else rng.choice(flat, samples, replace=False)
        worst[name] = 0.0
        for k in picks:
            index = np.unravel_index(k, base[name].shape)
            numeric = (objective(name, index, eps) - objective(name, index, -eps)) / (2 * eps)
            got = float(grad[index])
            assert abs(got - numeric) <= atol + rtol * abs(numeric), (
                f"d/d{name}{tuple(int(i) for i in index)}: backward {got:.8g}, finite differences {numeric:.8g}"
            )
            worst[name] = max(worst[name], abs(got - numeric) / max(abs(numeric), 1e-12))
    return worst
