"""What training prints: LOOM's verbose text, a tqdm bar over epochs, or one line per epoch.

* :class:`LoomVerboseReporter` writes Go LOOM's ``Train`` output line for line (configuration
  block, ``\\rEpoch e/E - Batch b/B - Loss``, the epoch summary, the gradient statistics every
  five epochs, validation, the completion block), used by ``train(..., verbose=True)``.
* :class:`ProgressBar` (a tqdm bar on stderr, one step per epoch, the epoch's numbers as its
  postfix) and :class:`EpochLogger` (``Epoch 3/50 - loss: 0.1234 - val_loss: ... - 0.05s`` on
  stdout) are :class:`~loom.nn.training_engine.Callback` objects; :func:`fit_reporters` picks
  them for ``fit`` and the ``loom train`` command (a bar when stderr is a terminal, else lines).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from loom.backend import to_numpy
from loom.nn.training_engine import Callback

if TYPE_CHECKING:
    from loom.nn.network import Network

__all__ = ["EpochLogger", "LoomVerboseReporter", "ProgressBar", "fit_reporters", "format_logs", "go_duration"]


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` text (``13.638µs``, ``1.5s``)."""
    ns = round(seconds * 1e9)
    if ns < 1000:
        return f"{ns}ns"
    for unit, scale in (("µs", 1e3), ("ms", 1e6)):
        if ns < scale * 1000:
            return f"{ns / scale:.3f}".rstrip("0").rstrip(".") + unit
    return f"{ns / 1e9:.9f}".rstrip("0").rstrip(".") + "s"


class LoomVerboseReporter:
    """Go LOOM's verbose ``Train`` output.

    Parameters
    ----------
    out : text stream
        Where the text goes (``sys.stdout`` as in Go).
    epochs : int
        Epochs of the run (``Epoch e/E``).
    """

    def __init__(self, out: TextIO, epochs: int) -> None:
        self.out, self.epochs = out, epochs

    def configuration(self, *, learning_rate: float, batches: int, samples: int, on_gpu: bool, loss_type: str) -> None:
        """The ``=== Training Configuration ===`` block."""
        self.out.write(
            "\n=== Training Configuration ===\n"
            f"Epochs: {self.epochs}\nLearning Rate: {learning_rate:.6f}\n"
            f"Batches per Epoch: {batches}\nSamples per Epoch: {samples}\n"
            f"Backend: {'GPU (CuPy)' if on_gpu else 'CPU'}\nLoss Function: {loss_type}\n\n"
        )

    def batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        """``\\rEpoch e/E - Batch b/B - Loss: ...`` (0-based ``epoch`` and ``batch``)."""
        self.out.write(f"\rEpoch {epoch + 1}/{self.epochs} - Batch {batch + 1}/{batches} - Loss: {loss:.6f}")

    def epoch(self, epoch: int, average: float, best: float, elapsed: float, samples: int) -> None:
        """The epoch summary line."""
        self.out.write(
            f"\rEpoch {epoch + 1}/{self.epochs} - Avg Loss: {average:.6f} (Best: {best:.6f}) - "
            f"Time: {go_duration(elapsed)} - "
            f"Throughput: {samples / max(elapsed, 1e-12):.0f} samples/sec\n"
        )

    def gradient_statistics(self, net: Network) -> None:
        """LOOM's "Gradient Statistics" block (kernel = every non-bias gradient of a layer)."""
        kernel: list[tuple[int, list[Any]]] = []
        bias_layers = 0
        for i, top in enumerate(net.layers):
            grads = [(name, g) for cfg in top.iter_layers() for name, g in cfg.grads.items()]
            weights = [g for name, g in grads if "bias" not in name]
            if weights:
                kernel.append((i, weights))
            bias_layers += any("bias" in name for name, _ in grads)
        self.out.write(
            f"  Gradient Statistics:\n    Total layers: {len(net.layers)}, Kernel grads: {len(kernel)}, "
            f"Bias grads: {bias_layers}\n"
        )
        for i, grads in kernel:
            flat = np.concatenate([to_numpy(g).reshape(-1).astype(np.float64) for g in grads])
            norm = math.sqrt(float(flat @ flat))
            self.out.write(f"    Layer {i}: norm={norm:.6f}, mean={float(flat.mean()):.6f}, size={flat.size}\n")

    def validation_start(self) -> None:
        """The line before a validation evaluation."""
        self.out.write("\n  Running validation evaluation...\n")

    def validation(self, metrics: Any) -> None:
        """The validation metrics line."""
        self.out.write(
            f"  Validation Score: {metrics.score:.2f}/100, Avg Deviation: {metrics.avg_deviation:.2f}%, "
            f"Failures: {metrics.failures}/{metrics.total_samples}\n"
        )

    def complete(self, result: Any) -> None:
        """The ``✓ Training Complete!`` block."""
        self.out.write(
            f"\n✓ Training Complete!\nFinal Loss: {result.final_loss:.6f}\nBest Loss: {result.best_loss:.6f}\n"
            f"Total Time: {go_duration(result.total_time)}\n"
            f"Average Throughput: {result.avg_throughput:.0f} samples/sec\n\n"
        )
        self.out.flush()


def format_logs(logs: dict[str, Any]) -> str:
    """``loss: 0.1234 - accuracy: 0.9612 - ...`` (the learning rate only when it changes over epochs)."""
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items() if key != "learning_rate")


class ProgressBar(Callback):
    """A tqdm bar over epochs on stderr, the epoch's numbers as its postfix.

    Parameters
    ----------
    epochs : int
        Length of the bar.
    desc : str
        Label in front of the bar.
    """

    main_process_only = True  # data-parallel training: one bar, drawn by rank 0

    def __init__(self, epochs: int, desc: str = "training") -> None:
        self.epochs, self.desc = epochs, desc
        self.bar: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.epochs, desc=self.desc, unit="epoch", file=sys.stderr)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(format_logs(logs or {}), refresh=False)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (also after an exception)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLogger(Callback):
    """One line per epoch: ``Epoch 3/50 - loss: 0.1234 - val_loss: 0.1011 - 0.05s``.

    Parameters
    ----------
    epochs : int
        Epochs of the run.
    out : text stream, optional
        Default ``sys.stdout`` (looked up when training starts).
    """

    main_process_only = True  # data-parallel training: rank 0 prints

    def __init__(self, epochs: int, out: TextIO | None = None) -> None:
        self.epochs, self.out = epochs, out
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        out = self.out or sys.stdout
        elapsed = time.perf_counter() - self._start
        out.write(f"Epoch {epoch + 1}/{self.epochs} - {format_logs(logs or {})} - {elapsed:.2f}s\n")
        out.flush()


def fit_reporters(verbose: Any, epochs: int) -> list[Callback]:
    """The reporters of ``fit(verbose=...)``: 0 nothing, 2 a line per epoch, 1 / ``"auto"`` a bar on a terminal.

    Raises ``ConfigError`` for other values.
    """
    from loom.errors import ConfigError

    if verbose in (0, False):
        return []
    if verbose == 2:
        return [EpochLogger(epochs)]
    if verbose in (1, True, "auto"):
        return [ProgressBar(epochs)] if sys.stderr.isatty() else [EpochLogger(epochs)]
    raise ConfigError(f"fit.verbose: expected 0, 1, 2 or 'auto', got {verbose!r}")
