"""Loss curves as PNG files with matplotlib (the ``plot`` extra, imported only when a plot is drawn).

:func:`plot_history` draws the training and validation loss per epoch (log scale on request)
and, when the history has accuracies, a second panel with them; the figure is rendered with
matplotlib's Agg canvas (no display, no global pyplot state) and written atomically.
Without matplotlib it raises :class:`~loom.errors.MissingDependencyError` with the pip command.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.atomic_files import write_file_atomically
from loom.errors import ConfigError, MissingDependencyError

__all__ = ["plot_history"]

_INSTALL = "pip install 'loom-nn[plot]'  (or: pip install matplotlib)"


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(f"plotting needs matplotlib, which is not installed; {_INSTALL}") from exc
    return Figure, FigureCanvasAgg


def _curves(history: Any) -> dict[str, list[float]]:
    data = history.history if hasattr(history, "history") else history
    if hasattr(data, "loss_history"):  # a TrainingResult of LOOM's train
        data = {"loss": data.loss_history}
    if not isinstance(data, Mapping) or not data.get("loss"):
        raise ConfigError("plot_history: expected a History, a TrainingResult or a dict with a non-empty 'loss' list")
    return {str(k): [float(v) for v in values] for k, values in data.items() if values}


def plot_history(
    history: Any,
    path: str | Path,
    *,
    log_scale: bool = False,
    title: str | None = None,
    size: tuple[float, float] = (6.4, 4.8),
    dpi: int = 100,
) -> Path:
    """Write a PNG of the loss per epoch (training and validation), plus accuracy when recorded.

    Parameters
    ----------
    history : History, TrainingResult or dict
        ``fit``'s :class:`~loom.nn.training_callbacks.History`, ``train``'s result, or
        ``{"loss": [...], "val_loss": [...], "accuracy": [...], ...}``.
    path : str or Path
        The PNG to write (its folder is created; the file is replaced atomically).
    log_scale : bool
        Logarithmic loss axis.
    title : str, optional
        Figure title.
    size : (float, float)
        Figure size in inches; the image is ``size * dpi`` pixels (640 x 480 by default).
    dpi : int
        Pixels per inch.

    Returns
    -------
    Path
        ``path``.
    """
    curves = _curves(history)
    figure_cls, canvas_cls = _matplotlib()
    accuracy = [k for k in ("accuracy", "val_accuracy") if k in curves]
    figure = figure_cls(figsize=size, dpi=dpi, layout="constrained")
    canvas_cls(figure)
    axes = figure.subplots(1, 2 if accuracy else 1, squeeze=False)[0]
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in curves:
            epochs = range(1, len(curves[key]) + 1)
            axes[0].plot(epochs, curves[key], style, marker="o" if len(curves[key]) < 30 else None, label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss (log scale)" if log_scale else "loss")
    if log_scale:
        axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].grid(True, alpha=0.3)
    if accuracy:
        for key, style in zip(accuracy, ("-", "--"), strict=False):
            axes[1].plot(range(1, len(curves[key]) + 1), curves[key], style, label=key)
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("accuracy")
        axes[1].legend()
        axes[1].grid(True, alpha=0.3)
    if title:
        figure.suptitle(title)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=dpi)
    target = Path(path)
    write_file_atomically(target, png.getvalue())
    return target
