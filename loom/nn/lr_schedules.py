"""Learning-rate schedules, one learning rate per epoch (as ``torch.optim.lr_scheduler`` stepped every epoch).

For epoch ``e`` (0-based), base rate ``lr``, ``E`` epochs and ``W = warmup_epochs``:

* **linear warm-up** (``W > 0``, any schedule): ``lr * (e + 1) / (W + 1)`` for ``e < W`` —
  torch's ``LinearLR(start_factor=1 / (W + 1), total_iters=W)``; the schedule below then runs
  on ``e' = e - W`` (torch's ``SequentialLR`` with milestone ``W``). ``"warmup"`` is the
  constant schedule after it;
* **constant**: ``lr``;
* **step**: ``lr * gamma ** (e' // step_size)`` — ``StepLR(step_size, gamma)``, defaults 10 and 0.1;
* **cosine**: ``min_lr + (lr - min_lr) * (1 + cos(pi * e' / (E - W))) / 2`` —
  ``CosineAnnealingLR(T_max=E - W, eta_min=min_lr)``.

Examples
--------
>>> schedule = LearningRateSchedule("step", 0.1, 30, step_size=10)
>>> [round(schedule(e), 6) for e in (0, 9, 10, 25)]
[0.1, 0.1, 0.01, 0.001]
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from loom.errors import ConfigError

__all__ = ["LR_SCHEDULES", "LearningRateSchedule"]

#: Accepted schedule names (``linear_warmup`` is an alias of ``warmup``).
LR_SCHEDULES = ("constant", "step", "cosine", "warmup")
_ALIASES = {"constant": "constant", "": "constant", "none": "constant", "step": "step", "cosine": "cosine"}
_ALIASES.update(warmup="warmup", linear_warmup="warmup")


def _int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer() or value < low:
        raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


class LearningRateSchedule:
    """The learning rate of each epoch.

    Parameters
    ----------
    name : str
        ``"constant"``, ``"step"``, ``"cosine"`` or ``"warmup"`` (any case).
    learning_rate : float
        Base rate.
    epochs : int
        Epochs of the run (the cosine period).
    warmup_epochs : int
        Epochs of linear warm-up before the schedule (required > 0 for ``"warmup"``).
    step_size, gamma : int, float
        Step decay: multiply by ``gamma`` every ``step_size`` epochs.
    min_lr : float
        Cosine floor.
    path : str
        Prefix of error messages.
    """

    def __init__(
        self,
        name: str | None,
        learning_rate: float,
        epochs: int,
        *,
        warmup_epochs: int = 0,
        step_size: int = 10,
        gamma: float = 0.1,
        min_lr: float = 0.0,
        path: str = "training config",
    ) -> None:
        key = "constant" if name is None else str(name).strip().lower()
        if key not in _ALIASES:
            hint = difflib.get_close_matches(key, list(_ALIASES), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{path}.lr_schedule: unknown schedule {name!r}{did_you_mean}; expected one of {list(LR_SCHEDULES)}"
            )
        self.name = _ALIASES[key]
        self.learning_rate = float(learning_rate)
        self.epochs = int(epochs)
        self.warmup_epochs = _int(warmup_epochs, f"{path}.warmup_epochs", 0)
        self.step_size = _int(step_size, f"{path}.lr_step_size", 1)
        self.gamma = _float(gamma, f"{path}.lr_gamma")
        self.min_lr = _float(min_lr, f"{path}.lr_min")
        if self.name == "warmup" and self.warmup_epochs == 0:
            raise ConfigError(f"{path}.warmup_epochs: lr_schedule 'warmup' needs warmup_epochs > 0")

    @property
    def is_constant(self) -> bool:
        """True when every epoch uses the base rate."""
        return self.name in ("constant", "warmup") and self.warmup_epochs == 0

    def __call__(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        lr, warm = self.learning_rate, self.warmup_epochs
        if warm == 0 and self.name != "step" and self.name != "cosine":
            return lr
        if epoch < warm:
            return lr * (epoch + 1) / (warm + 1)
        e = epoch - warm
        if self.name == "step":
            return lr * self.gamma ** (e // self.step_size)
        if self.name == "cosine":
            period = self.epochs - warm
            if period <= 0:
                return lr
            return self.min_lr + (lr - self.min_lr) * (1.0 + math.cos(math.pi * e / period)) / 2.0
        return lr

    def __repr__(self) -> str:
        return (
            f"LearningRateSchedule({self.name!r}, learning_rate={self.learning_rate}, epochs={self.epochs}, "
            f"warmup_epochs={self.warmup_epochs})"
        )
