"""Losses whose value stays on the device: the GPU training step reads it once, after the update is queued.

:func:`device_loss_and_grad` returns ``(loss, grad)`` with ``loss`` a float64 device array of one
value, for the losses of :mod:`loom.ops.losses` in both conventions (LOOM's ``train``, ``fit``'s batch
mean) and the same formulas: MSE through the fused kernel of :mod:`loom.backend.cuda_train` (gradient
and value in one pass), cross-entropy and binary cross-entropy through array-API expressions with the
sum left on the device. :mod:`loom.ops.losses` is the reference the tests compare against.
"""

from __future__ import annotations

from typing import Any

from loom.errors import ShapeError

__all__ = ["device_loss_and_grad"]

_CE_EPS = 1e-7


def device_loss_and_grad(name: str, reduction: str, y: Any, t: Any, batch: int, xp: Any, gpu: Any) -> tuple[Any, Any]:
    """Loss (float64 device array, one value) and its gradient w.r.t. the flat output ``y``.

    Parameters
    ----------
    name : str
        ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"`` (canonical names).
    reduction : str
        ``"loom"`` (divided by ``len(y)``) or ``"batch_mean"`` (mean over the ``batch`` samples).
    y, t : array ``[batch * outputs]``
    gpu : TrainKernels
        The training kernels (MSE's fused kernel).
    """
    if y.shape != t.shape:
        raise ShapeError(f"target: expected {y.shape[0]} values (the network output length), got {t.shape[0]}")
    n = y.shape[0]
    if name == "mse":
        return gpu.mse(y, t, float(n))
    if name == "cross_entropy":
        divisor = float(n if reduction == "loom" else batch)
        p = xp.clip(xp.astype(y, xp.float64), _CE_EPS, 1.0 - _CE_EPS)
        t64 = xp.astype(t, xp.float64)
        loss = -xp.sum(xp.where(t64 > 0, t64 * xp.log(p), xp.zeros_like(p))) / divisor
        loss = xp.reshape(xp.asarray(loss), (1,))  # NumPy reductions give scalars: an array, as the kernels read
        grad = xp.where(t > 0, -(t / xp.maximum(y, _CE_EPS)) * (1.0 / divisor), xp.zeros_like(y))
        return loss, grad
    if name == "binary_cross_entropy":
        p = xp.clip(y, _CE_EPS, 1.0 - _CE_EPS)
        p64, t64 = xp.astype(p, xp.float64), xp.astype(t, xp.float64)
        loss = -xp.sum(t64 * xp.log(p64) + (1.0 - t64) * xp.log(1.0 - p64)) / n
        return xp.reshape(xp.asarray(loss), (1,)), (p - t) / (p * (1.0 - p)) * (1.0 / n)
    raise ValueError(f"unknown loss {name!r}")
