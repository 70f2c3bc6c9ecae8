"""Keras-style training callbacks: ``History``, ``EarlyStopping``, ``ModelCheckpoint``.

They plug into :func:`loom.nn.training_engine.run_epochs` through the
:class:`~loom.nn.training_engine.Callback` hooks and see each epoch's ``logs``: ``loss``,
``accuracy`` (when the targets are classes), ``val_loss``, ``val_accuracy`` (with validation
data) and ``learning_rate``.

Examples
--------
>>> import numpy as np, loom
>>> net = loom.create_network_from_json({"batch_size": 1, "grid_rows": 1, "grid_cols": 1,
...     "layers_per_cell": 1, "layers": [{"type": "dense", "input_size": 2, "output_size": 1,
...     "activation": "linear"}]}, seed=0)
>>> x = np.random.default_rng(0).random((64, 2), dtype=np.float32); y = x.sum(axis=1)
>>> stop = loom.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
>>> history = net.fit(x, y, epochs=5, optimizer="sgd", learning_rate=0.1, callbacks=[stop], verbose=0)
>>> sorted(history.history)
['loss']
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loom.errors import ConfigError
from loom.nn.training_engine import Callback

__all__ = ["Callback", "EarlyStopping", "History", "ModelCheckpoint"]


class History(Callback):
    """Per-epoch numbers of a ``fit`` run (what ``fit`` returns).

    Attributes
    ----------
    history : dict of str to list of float
        One value per epoch under Keras' keys: ``loss``, and ``accuracy``, ``val_loss``,
        ``val_accuracy`` where they apply.
    epoch : list of int
        The 0-based epochs that ran (shorter than asked after an early stop).
    params : dict
        ``epochs``, ``steps`` (per epoch), ``samples``, ``batch_size``, ``optimizer``, ``loss``.
    learning_rates : list of float
        The learning rate of each epoch.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.params: dict[str, Any] = {}
        self.learning_rates: list[float] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.history, self.epoch, self.learning_rates = {}, [], []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            if key == "learning_rate":
                self.learning_rates.append(float(value))
            else:
                self.history.setdefault(key, []).append(float(value))

    def plot(
        self,
        path: str | Path,
        *,
        log_scale: bool = False,
        title: str | None = None,
        size: tuple[float, float] = (6.4, 4.8),
        dpi: int = 100,
    ) -> Path:
        """Write the loss curves (train and validation; accuracy in a second panel) as a PNG.

        See :func:`loom.nn.plots.plot_history`; needs matplotlib (``pip install 'loom-nn[plot]'``).
        """
        from loom.nn.plots import plot_history

        return plot_history(self, path, log_scale=log_scale, title=title, size=size, dpi=dpi)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


def _mode(monitor: str, mode: str, who: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"{who}.mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(logs: dict[str, Any] | None, monitor: str, who: str) -> float:
    if not logs or monitor not in logs:
        available = sorted(k for k in (logs or {}) if k != "learning_rate")
        hint = " (pass validation data, or monitor 'loss')" if monitor.startswith("val_") else ""
        raise ConfigError(f"{who}.monitor: {monitor!r} is not logged{hint}; logged: {available}")
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop training when a monitored number stops improving (Keras' ``EarlyStopping``).

    Parameters
    ----------
    monitor : str
        A key of the epoch logs (``"val_loss"``, ``"loss"``, ``"val_accuracy"`` ...).
    min_delta : float
        Smallest change that counts as an improvement.
    patience : int
        Epochs without improvement before stopping.
    mode : str
        ``"min"``, ``"max"`` or ``"auto"`` (``max`` for accuracies).
    restore_best_weights : bool
        At the end of training, put back the weights of the best epoch (kept on the device).
    baseline : float, optional
        Stop unless the monitored number gets better than this.
    start_from_epoch : int
        Epochs to wait before watching.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        baseline: float | None = None,
        start_from_epoch: int = 0,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ConfigError(f"EarlyStopping.patience: expected an integer >= 0, got {patience!r}")
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), patience
        self.mode = _mode(monitor, mode, "EarlyStopping")
        self.restore_best_weights, self.baseline, self.start_from_epoch = (
            restore_best_weights,
            baseline,
            start_from_epoch,
        )
        self.best = math.inf
        self.best_epoch = -1
        self.stopped_epoch = 0
        self.wait = 0
        self.best_weights: list[Any] | None = None

    def _better(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.stopped_epoch, self.wait, self.best_weights = -1, 0, 0, None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._better(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = [array.copy() for _, array in self.model.named_parameters()]
            if self.baseline is None or self._better(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            for (_, array), best in zip(self.model.named_parameters(), self.best_weights, strict=True):
                array[...] = best


class ModelCheckpoint(Callback):
    """Save the network as a LOOM bundle after epochs (Keras' ``ModelCheckpoint``); writes are atomic.

    Parameters
    ----------
    filepath : str or Path
        Where to write; may hold ``{epoch}`` (1-based) and log keys, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.json"``.
    monitor : str
        The log key that decides what is best.
    save_best_only : bool
        Save only when ``monitor`` improved (else after every epoch).
    mode : str
        ``"min"``, ``"max"`` or ``"auto"``.
    model_id : str
        The model id inside the bundle.

    In data-parallel training only rank 0 saves (every rank holds the same weights).
    """

    main_process_only = True  # data-parallel training: rank 0 writes the files

    def __init__(
        self,
        filepath: str | Path,
        *,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        model_id: str = "model",
    ) -> None:
        self.filepath, self.monitor, self.save_best_only, self.model_id = (
            str(filepath),
            monitor,
            save_best_only,
            model_id,
        )
        self.mode = _mode(monitor, mode, "ModelCheckpoint")
        self.best = math.inf
        self.saved: list[Path] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        try:
            path = Path(self.filepath.format(epoch=epoch + 1, **logs))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"ModelCheckpoint.filepath: cannot fill {self.filepath!r} from {sorted(logs)} ({exc})"
            ) from exc
        self.model.save_model(path, self.model_id)
        self.saved.append(path)
