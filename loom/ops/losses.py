"""Losses exactly as LOOM computes them, plus global-norm gradient clipping.

* MSE: ``mean((y - t)^2)`` (divisor ``len(y)``), gradient ``2 (y - t) / len(y)``.
* Cross-entropy on probabilities: ``-sum(t * log(clip(y, 1e-7, 1 - 1e-7))) / len(y)``
  over ``t > 0``; gradient ``-(t / max(y, 1e-7)) / len(y)`` where ``t > 0``.

Loss values are returned as Python floats accumulated in float64, as LOOM does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from loom.errors import ConfigError, ShapeError

__all__ = [
    "LOSS_TYPES",
    "clip_by_global_norm",
    "cross_entropy_grad",
    "cross_entropy_loss",
    "global_norm",
    "loss_and_grad",
    "mse_grad",
    "mse_loss",
    "normalize_loss_type",
]

LOSS_TYPES = ("mse", "cross_entropy")
_LOSS_ALIASES = {
    "": "mse",
    "mse": "mse",
    "cross_entropy": "cross_entropy",
    "crossentropy": "cross_entropy",
    "ce": "cross_entropy",
}
_CE_EPS = 1e-7


def normalize_loss_type(name: Any, path: str = "LossType") -> str:
    """Canonical loss name; an unknown name is a ``ConfigError`` (Go silently uses MSE)."""
    key = "" if name is None else str(name).strip().lower()
    if key in _LOSS_ALIASES:
        return _LOSS_ALIASES[key]
    hint = difflib.get_close_matches(key, list(_LOSS_ALIASES), n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"{path}: unknown loss type {name!r}{did_you_mean}; expected one of {list(LOSS_TYPES)}")


def _check(y: Any, t: Any) -> None:
    if y.shape != t.shape:
        raise ShapeError(f"target: expected {y.shape[0]} values (the network output length), got {t.shape[0]}")


def mse_loss(y: Any, t: Any, xp: Any) -> float:
    """Mean squared error as a float64 Python float. ``y``, ``t``: flat arrays of equal length."""
    _check(y, t)
    d = xp.astype(y - t, xp.float64)
    return float(xp.sum(d * d)) / y.shape[0]


def mse_grad(y: Any, t: Any, xp: Any) -> Any:
    """Gradient of :func:`mse_loss` w.r.t. ``y``: ``2 (y - t) / len(y)`` (float32)."""
    _check(y, t)
    return (y - t) * (2.0 / y.shape[0])


def cross_entropy_loss(y: Any, t: Any, xp: Any) -> float:
    """LOOM cross-entropy on probabilities ``y`` (clamped to [1e-7, 1-1e-7]), float64."""
    _check(y, t)
    p = xp.clip(xp.astype(y, xp.float64), _CE_EPS, 1.0 - _CE_EPS)
    t64 = xp.astype(t, xp.float64)
    terms = xp.where(t64 > 0, t64 * xp.log(p), xp.zeros_like(p))
    return -float(xp.sum(terms)) / y.shape[0]


def cross_entropy_grad(y: Any, t: Any, xp: Any) -> Any:
    """Gradient of :func:`cross_entropy_loss`: ``-(t / max(y, 1e-7)) / len(y)`` where ``t > 0``."""
    _check(y, t)
    p = xp.maximum(y, _CE_EPS)
    return xp.where(t > 0, -(t / p) * (1.0 / y.shape[0]), xp.zeros_like(y))


def loss_and_grad(loss_type: str, y: Any, t: Any, xp: Any) -> tuple[float, Any]:
    """Loss value and its gradient for a canonical ``loss_type``."""
    if loss_type == "cross_entropy":
        return cross_entropy_loss(y, t, xp), cross_entropy_grad(y, t, xp)
    if y.shape != t.shape:
        _check(y, t)
    diff = y - t
    d64 = diff.astype(xp.float64)  # the array method: no array-api-compat wrapper call
    n = y.shape[0]
    return float(d64 @ d64) / n, diff * (2.0 / n)  # = mse_loss, mse_grad with one subtraction


def global_norm(grads: Iterable[Any], xp: Any) -> float:
    """L2 norm over every element of every gradient array."""
    total = 0.0
    for g in grads:
        total = total + xp.sum(g * g)
    return float(total) ** 0.5


def clip_by_global_norm(grads: list[Any], max_norm: float, xp: Any) -> float:
    """Scale ``grads`` in place when their global L2 norm exceeds ``max_norm``; returns the norm."""
    norm = global_norm(grads, xp)
    if norm > max_norm:
        scale = max_norm / norm
        for g in grads:
            g *= scale
    return norm
