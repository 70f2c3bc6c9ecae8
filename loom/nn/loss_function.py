"""A loss and its reduction convention, bound to a namespace and a batch size.

Shared by the training engine (:mod:`loom.nn.training_engine`, which re-exports it) and the fused
step (:mod:`loom.nn.fused`), below both so that neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loom.nn.device_losses import device_loss_and_grad
from loom.ops.losses import batch_loss_and_grad, loss_and_grad

__all__ = ["LossFunction"]


@dataclass(frozen=True)
class LossFunction:
    """A loss and its reduction convention.

    Parameters
    ----------
    name : str
        Canonical loss name (``"mse"``, ``"cross_entropy"``, ``"binary_cross_entropy"``).
    reduction : str
        ``"loom"`` (LOOM's ``train``: divided by the output length) or ``"batch_mean"``
        (``fit``: mean over the samples of the per-sample loss). See :mod:`loom.ops.losses`.
    """

    name: str
    reduction: str = "loom"

    @property
    def key(self) -> tuple[str, str]:
        """What compiled steps are cached under."""
        return (self.name, self.reduction)

    def bind(self, xp: Any, batch: int) -> Callable[[Any, Any], tuple[float, Any]]:
        """``fn(y, t) -> (loss, dloss/dy)`` for flat arrays of ``batch`` samples."""
        name = self.name
        if self.reduction == "loom":
            return lambda y, t: loss_and_grad(name, y, t, xp)  # positional: cheaper than a partial with keywords
        return lambda y, t: batch_loss_and_grad(name, y, t, batch, xp)

    def bind_device(self, xp: Any, batch: int, gpu: Any) -> Callable[[Any, Any], tuple[Any, Any]]:
        """Like :meth:`bind`, with the loss left on the device (a float64 array of one value; GPU step)."""
        name, reduction = self.name, self.reduction
        return lambda y, t: device_loss_and_grad(name, reduction, y, t, batch, xp, gpu)
