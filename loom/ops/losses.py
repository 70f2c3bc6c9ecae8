"""Losses: LOOM's exactly as Go computes them, the batch-mean losses of ``fit``, and global-norm clipping.

Two conventions, for a flat output ``y`` of ``B`` samples x ``O`` outputs and target ``t``:

* **LOOM** (``Network.train``, :func:`loss_and_grad`): everything is divided by ``len(y) = B * O``.
  MSE ``sum((y - t)^2) / len(y)``, gradient ``2 (y - t) / len(y)``; cross-entropy on
  probabilities ``-sum(t * log(clip(y, 1e-7, 1 - 1e-7))) / len(y)`` over ``t > 0``, gradient
  ``-(t / max(y, 1e-7)) / len(y)`` where ``t > 0``.
* **batch mean** (``Network.fit``, :func:`batch_loss_and_grad`): the mean over the ``B`` samples
  of each sample's loss, as Keras and PyTorch (``reduction="mean"``) compute it. MSE is the
  mean over samples and outputs (the same number as LOOM's); ``cross_entropy`` is
  ``-sum(t * log(clip(y))) / B`` (LOOM's times ``O``: Keras' ``categorical_crossentropy``, PyTorch's
  ``NLLLoss`` of ``log(y)``); ``binary_cross_entropy`` is
  ``-mean(t log(p) + (1 - t) log(1 - p))`` with ``p = clip(y, 1e-7, 1 - 1e-7)`` (``BCELoss``).

Loss values are returned as Python floats accumulated in float64, as LOOM does (the one host
fetch of a training step).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from loom.backend.fast_paths import astype
from loom.errors import ConfigError, ShapeError

__all__ = [
    "FIT_LOSS_TYPES",
    "LOSS_TYPES",
    "batch_loss_and_grad",
    "clip_by_global_norm",
    "cross_entropy_grad",
    "cross_entropy_loss",
    "global_norm",
    "loss_and_grad",
    "mse_grad",
    "mse_loss",
    "normalize_loss_type",
]

#: Losses of LOOM's ``train``.
LOSS_TYPES = ("mse", "cross_entropy")
#: Losses of ``fit`` (batch-mean convention).
FIT_LOSS_TYPES = ("mse", "cross_entropy", "binary_cross_entropy")
_LOSS_ALIASES = {
    "": "mse",
    "mse": "mse",
    "mean_squared_error": "mse",
    "cross_entropy": "cross_entropy",
    "crossentropy": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "categorical_cross_entropy": "cross_entropy",
    "sparse_categorical_crossentropy": "cross_entropy",
    "ce": "cross_entropy",
    "binary_cross_entropy": "binary_cross_entropy",
    "binary_crossentropy": "binary_cross_entropy",
    "bce": "binary_cross_entropy",
}
_CE_EPS = 1e-7


def normalize_loss_type(name: Any, path: str = "LossType", accepted: tuple[str, ...] = LOSS_TYPES) -> str:
    """Canonical loss name out of ``accepted``; an unknown name is a ``ConfigError`` (Go silently uses MSE)."""
    key = "" if name is None else str(name).strip().lower()
    if _LOSS_ALIASES.get(key) in accepted:
        return _LOSS_ALIASES[key]
    names = [alias for alias, canonical in _LOSS_ALIASES.items() if alias and canonical in accepted]
    hint = difflib.get_close_matches(key, names, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"{path}: unknown loss type {name!r}{did_you_mean}; expected one of {list(accepted)}")


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
    d64 = astype(diff, xp.float64, xp)
    n = y.shape[0]
    return float(d64 @ d64) / n, diff * (2.0 / n)  # = mse_loss, mse_grad with one subtraction


def batch_loss_and_grad(loss_type: str, y: Any, t: Any, batch: int, xp: Any) -> tuple[float, Any]:
    """Batch-mean loss value and its gradient w.r.t. ``y`` (``fit``'s convention, see the module docstring).

    Parameters
    ----------
    loss_type : str
        ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"`` (canonical names).
    y, t : array ``[batch * outputs]``
        Flat output and target.
    batch : int
        Samples in ``y``.
    """
    if y.shape != t.shape:
        _check(y, t)
    if loss_type == "cross_entropy":
        p = xp.clip(xp.astype(y, xp.float64), _CE_EPS, 1.0 - _CE_EPS)
        t64 = xp.astype(t, xp.float64)
        loss = -float(xp.sum(xp.where(t64 > 0, t64 * xp.log(p), xp.zeros_like(p)))) / batch
        grad = xp.where(t > 0, -(t / xp.maximum(y, _CE_EPS)) * (1.0 / batch), xp.zeros_like(y))
        return loss, grad
    n = y.shape[0]
    if loss_type == "binary_cross_entropy":
        p = xp.clip(y, _CE_EPS, 1.0 - _CE_EPS)
        p64, t64 = xp.astype(p, xp.float64), xp.astype(t, xp.float64)
        loss = -float(xp.sum(t64 * xp.log(p64) + (1.0 - t64) * xp.log(1.0 - p64))) / n
        return loss, (p - t) / (p * (1.0 - p)) * (1.0 / n)
    return loss_and_grad("mse", y, t, xp)


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
