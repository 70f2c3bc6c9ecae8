"""LOOM's training loop: ``TrainingConfig``, ``TrainingBatch``, ``TrainingResult``, ``train_network``.

For each epoch, for each batch in the given order: forward, loss (recorded
before the update), loss gradient, backward, optional global-norm clipping,
plain SGD step. ``LossHistory[e]`` is the mean of the epoch's batch losses.
"""

from __future__ import annotations

import difflib
import math
import operator
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from loom.backend import resolve_backend, to_numpy
from loom.errors import ConfigError, ShapeError, TrainingDivergedError
from loom.nn import batch_validation
from loom.nn.fused import FusedTrainer
from loom.ops.losses import clip_by_global_norm, loss_and_grad, normalize_loss_type

__all__ = ["TrainingBatch", "TrainingConfig", "TrainingResult", "go_duration", "train_network"]

#: LOOM's JSON key -> loom's field name.
_LOOM_KEYS = {
    "epochs": "epochs",
    "learningrate": "learning_rate",
    "usegpu": "use_gpu",
    "printeverybatch": "print_every_batch",
    "gradientclip": "gradient_clip",
    "losstype": "loss_type",
    "verbose": "verbose",
    "evaluateeveryn": "evaluate_every_n",
    "validationinputs": "validation_inputs",
    "validationtargets": "validation_targets",
}


@dataclass
class TrainingConfig:
    """Training settings (LOOM's ``TrainingConfig``).

    ``from_dict`` accepts LOOM's keys in any case (``"LearningRate"``,
    ``"epochs"``) and snake_case (``"learning_rate"``). ``use_gpu=True`` trains
    on CuPy (``BackendUnavailableError`` when CuPy or a CUDA device is missing).
    ``raise_on_divergence`` stops with ``TrainingDivergedError`` on a non-finite loss.
    """

    epochs: int = 10
    learning_rate: float = 0.001
    use_gpu: bool = False
    print_every_batch: int = 0
    gradient_clip: float = 0.0
    loss_type: str = "mse"
    verbose: bool = False
    evaluate_every_n: int = 0
    validation_inputs: Any = None
    validation_targets: Any = None
    raise_on_divergence: bool = True
    progress_bar: bool | None = None

    def __post_init__(self) -> None:
        self.loss_type = normalize_loss_type(self.loss_type, "loss_type")
        for name in ("epochs", "print_every_batch", "evaluate_every_n"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < 0
                or not float(value).is_integer()
            ):
                raise ConfigError(f"{name}: expected a non-negative integer, got {value!r}")
            setattr(self, name, int(value))
        for name in ("learning_rate", "gradient_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name}: expected a finite number, got {value!r}")
            setattr(self, name, float(value))
        if self.gradient_clip < 0:
            raise ConfigError(f"gradient_clip: expected >= 0 (0 disables clipping), got {self.gradient_clip}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Build from LOOM keys (any case) or snake_case keys; unknown keys raise ``ConfigError``."""
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            low = str(key).lower()
            name = _LOOM_KEYS.get(low) or (low if low in names else None)
            if name is None:
                choices = sorted(set(_LOOM_KEYS) | names)
                hint = difflib.get_close_matches(low, choices, n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"training config.{key}: unknown key{did_you_mean}")
            if name == "loss_type":
                value = normalize_loss_type(value, f"training config.{key}")
            kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """LOOM's JSON keys."""
        return {
            "Epochs": self.epochs,
            "LearningRate": self.learning_rate,
            "UseGPU": self.use_gpu,
            "PrintEveryBatch": self.print_every_batch,
            "GradientClip": self.gradient_clip,
            "LossType": self.loss_type,
            "Verbose": self.verbose,
            "EvaluateEveryN": self.evaluate_every_n,
            "ValidationInputs": self.validation_inputs,
            "ValidationTargets": self.validation_targets,
        }


@dataclass
class TrainingBatch:
    """One training step's data: a flat input (``batch_size`` samples) and its target."""

    input: Any
    target: Any

    @classmethod
    def coerce(cls, item: Any, index: int) -> TrainingBatch:
        """Accept a TrainingBatch, a ``{"Input", "Target"}`` dict (any case) or an (input, target) pair."""
        if isinstance(item, TrainingBatch):
            return item
        if isinstance(item, Mapping):
            low = {str(k).lower(): v for k, v in item.items()}
            if "input" not in low or "target" not in low:
                raise ShapeError(f"batches[{index}]: expected keys 'Input' and 'Target', got {sorted(item)}")
            return cls(low["input"], low["target"])
        if isinstance(item, tuple | list) and len(item) == 2:
            return cls(item[0], item[1])
        raise ShapeError(f"batches[{index}]: expected a TrainingBatch, a dict or an (input, target) pair")


@dataclass
class TrainingResult:
    """Outcome of :func:`train_network` (LOOM's ``TrainingResult``)."""

    final_loss: float = 0.0
    best_loss: float = math.inf
    total_time: float = 0.0
    avg_throughput: float = 0.0
    loss_history: list[float] = field(default_factory=list)
    eval_metrics: Any = None

    def to_dict(self) -> dict[str, Any]:
        """LOOM's JSON keys (``TotalTime`` in integer nanoseconds)."""
        return {
            "FinalLoss": self.final_loss,
            "BestLoss": self.best_loss,
            "TotalTime": round(self.total_time * 1e9),
            "AvgThroughput": self.avg_throughput,
            "LossHistory": list(self.loss_history),
            "EvalMetrics": None if self.eval_metrics is None else self.eval_metrics.to_dict(),
        }


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` text (``13.638µs``, ``1.5s``)."""
    ns = round(seconds * 1e9)
    if ns < 1000:
        return f"{ns}ns"
    for unit, scale in (("µs", 1e3), ("ms", 1e6)):
        if ns < scale * 1000:
            return f"{ns / scale:.3f}".rstrip("0").rstrip(".") + unit
    return f"{ns / 1e9:.9f}".rstrip("0").rstrip(".") + "s"


def _coerce_config(config: Any) -> TrainingConfig:
    if config is None:
        return TrainingConfig()
    if isinstance(config, TrainingConfig):
        return config
    if isinstance(config, Mapping):
        return TrainingConfig.from_dict(config)
    raise ConfigError(f"config: expected a TrainingConfig or a dict, got {type(config).__name__}")


def _prepare_batches(net: Any, batches: Iterable[Any]) -> list[tuple[Any, Any, int]]:
    prepared = []
    for i, item in enumerate(batch_validation.training_items(batches)):
        prepared.append(batch_validation.prepare_batch(net, TrainingBatch.coerce(item, i), i))
    if not prepared:
        raise ShapeError("batches: expected at least one training batch, got none")
    return prepared


def _want_progress_bar(cfg: TrainingConfig) -> bool:
    if cfg.progress_bar is not None:
        return cfg.progress_bar
    return cfg.verbose and sys.stderr.isatty()


class _FlatSGD:
    """SGD step (with global-norm clipping) on every parameter, viewed as one flat vector.

    Tiny networks spend their time in per-array overhead, so at the start of training
    every parameter is moved into one flat buffer (``cfg.params`` then hold views of
    it) and a step is one concatenation of the gradients, one norm, one scaling and
    one update. The result equals ``clip_by_global_norm`` + ``update_weights``
    (a parameter without a gradient is left unchanged); networks whose parameters
    cannot share a buffer (mixed dtypes, replaced arrays) take that path instead.
    """

    def __init__(self, net: Any) -> None:
        self.net, self.xp = net, net.xp
        self.layers = list(net.iter_all_layers())
        self.entries: list[tuple[Any, str, Any, int]] = []
        self.flat: Any = None
        self.last_grad: Any = None
        self.grad_buf: Any = None  # flat gradient, reused every step
        self.step_buf: Any = None  # lr * flat gradient, reused every step
        self.views: list[Any] = []  # the parameter views, in entry order
        self.zeros: dict[int, Any] = {}  # entry index -> zero gradient for a layer that produced none
        self.checked = True  # the buffer was just built
        self._build()

    def _build(self) -> None:
        xp = self.xp
        entries = [(cfg, name, p) for cfg in self.layers for name, p in cfg.params.items()]
        self.entries, self.flat, self.views = [], None, []
        if not entries or len({p.dtype for _, _, p in entries}) != 1:
            return
        flat = xp.concat([xp.reshape(p, (-1,)) for _, _, p in entries])
        views, start = [], 0
        for cfg, name, p in entries:
            size = int(np.prod(p.shape)) if p.shape else 1
            view = xp.reshape(flat[start : start + size], p.shape)
            views.append((cfg, name, view, size))
            start += size
        if isinstance(flat, np.ndarray) and not all(np.shares_memory(v, flat) for _, _, v, _ in views):
            return
        for cfg, name, view, _ in views:
            cfg.params[name] = view
        self.entries, self.flat = views, flat
        self.views = [view for _, _, view, _ in views]
        self.zeros = {}

    def _buffer_intact(self) -> bool:
        """True while every parameter is still the view of the flat buffer made by ``_build``."""
        current = [cfg.params.get(name) for cfg, name, _, _ in self.entries]
        return all(map(operator.is_, current, self.views))

    def _gather(self) -> list[Any] | None:
        """This step's gradient of every entry (a cached zero where a gradient is missing).

        ``None`` when some layer holds a gradient of an array outside the buffer.
        """
        grads = [cfg.grads.get(name) for cfg, name, _, _ in self.entries]
        missing = [k for k, g in enumerate(grads) if g is None]
        for k in missing:
            zero = self.zeros.get(k)
            if zero is None:
                view = self.entries[k][2]
                zero = self.zeros[k] = self.xp.zeros(view.shape, dtype=view.dtype)
            grads[k] = zero
        if len(grads) - len(missing) != sum([len(cfg.grads) for cfg in self.layers]):
            return None
        return grads

    def new_epoch(self) -> None:
        """Re-check the buffer at the next step: code run between epochs may replace parameters."""
        self.checked = False

    def step(self, lr: float, clip: float) -> None:
        """Clip the stored gradients to global norm ``clip`` (0 = off), then ``w -= lr * g``.

        Whether the parameters are still buffer views is checked at the first step after
        construction or :meth:`new_epoch` (nothing inside an epoch replaces them).
        """
        if not self.checked:
            self.checked = True
            if not self._buffer_intact():  # parameters were replaced: rebuild the buffer
                self._build()
        if not self.entries:
            return self._plain_step(lr, clip)
        grads = self._gather()
        if grads is None:
            return self._plain_step(lr, clip)  # no parameters, or gradients of unknown arrays
        # Persistent buffers: a fresh multi-MB array each step costs more in page faults than
        # the arithmetic (784-392-10 at batch 1: ~700 of ~1000 us/step on a 2-core VM).
        raw = self.net._backend.raw
        if self.grad_buf is None or self.grad_buf.shape != self.flat.shape:
            self.grad_buf, self.step_buf = raw.empty_like(self.flat), raw.empty_like(self.flat)
        if clip <= 0:  # no norm to take: scale each gradient straight into the step buffer (no concat pass)
            start = 0
            for grad, (_, _, _, size) in zip(grads, self.entries, strict=True):
                end = start + size
                raw.multiply(grad.reshape(-1), lr, out=self.step_buf[start:end])
                start = end
            self.flat -= self.step_buf
            self.last_grad = None  # cfg.grads already hold this step's (unclipped) gradients
            return None
        flat_grad = raw.concatenate(grads, axis=None, out=self.grad_buf)  # axis=None: flattened
        norm = float(flat_grad @ flat_grad) ** 0.5
        if norm > clip:
            flat_grad *= clip / norm
        self.flat -= raw.multiply(flat_grad, lr, out=self.step_buf)
        self.last_grad = flat_grad
        return None

    def _plain_step(self, lr: float, clip: float) -> None:
        net = self.net
        if clip > 0:
            clip_by_global_norm(net.gradients(), clip, self.xp)
        net.update_weights(lr)
        self.last_grad = None

    def finish(self) -> None:
        """Leave the (clipped) gradients of the last step in ``cfg.grads``, as the plain path does."""
        flat_grad, xp = self.last_grad, self.xp
        if flat_grad is None:
            return
        start = 0
        for cfg, name, view, size in self.entries:
            if name in cfg.grads:
                cfg.grads[name] = xp.reshape(flat_grad[start : start + size], view.shape)
            start += size


def train_network(net: Any, batches: Iterable[Any], config: Any = None) -> TrainingResult:
    """Train ``net`` with LOOM's loop.

    Parameters
    ----------
    net : Network
    batches : list
        ``TrainingBatch`` objects, ``{"Input": [...], "Target": [...]}`` dicts or
        ``(input, target)`` pairs, used in this order every epoch.
    config : TrainingConfig or dict, optional

    Returns
    -------
    TrainingResult
    """
    cfg = _coerce_config(config)
    if cfg.use_gpu and net.backend != "cupy":
        net.to_backend(resolve_backend("cupy"))
    elif (
        not cfg.use_gpu
        and isinstance(config, Mapping)
        and net.backend != "numpy"
        and any(str(k).lower() in ("usegpu", "use_gpu") for k in config)
    ):
        net.to_backend("numpy")
    data = _prepare_batches(net, batches)
    xp = net.xp
    result = TrainingResult()
    if cfg.epochs == 0:
        return result
    out = sys.stdout
    samples_per_epoch = sum(b for _, _, b in data)
    if cfg.verbose:
        out.write(
            "\n=== Training Configuration ===\n"
            f"Epochs: {cfg.epochs}\nLearning Rate: {cfg.learning_rate:.6f}\n"
            f"Batches per Epoch: {len(data)}\nSamples per Epoch: {samples_per_epoch}\n"
            f"Backend: {'GPU (CuPy)' if net.backend == 'cupy' else 'CPU'}\nLoss Function: {cfg.loss_type}\n\n"
        )
    progress = None
    if _want_progress_bar(cfg):
        from tqdm.auto import tqdm

        progress = tqdm(total=cfg.epochs, desc="training", unit="epoch", file=sys.stderr)
    loss_type, lr, clip = cfg.loss_type, cfg.learning_rate, cfg.gradient_clip
    print_batches = cfg.verbose or cfg.print_every_batch > 0
    every = max(cfg.print_every_batch, 1)
    start = time.perf_counter()
    fused = FusedTrainer.for_network(net)
    sgd = None if fused is not None else _FlatSGD(net)
    ctx = net._training_context()  # reused by every step: configs do not change while training
    try:
        for epoch in range(cfg.epochs):
            epoch_start = time.perf_counter()
            if sgd is not None:
                sgd.new_epoch()
            total = 0.0
            for b, (x, target, batch_size) in enumerate(data):
                if fused is not None:  # forward, loss, backward and update in one compiled call
                    loss = fused.step(x, target, batch_size, loss_type, lr, clip, cfg.raise_on_divergence)
                else:
                    y = net._forward(x, batch_size, ctx, input_grad=False)
                    loss, grad = loss_and_grad(loss_type, y, target, xp)
                if not math.isfinite(loss) and cfg.raise_on_divergence:
                    raise TrainingDivergedError(
                        f"training diverged: loss is {loss} at epoch {epoch + 1}, batch {b + 1} "
                        "(lower the learning rate or set gradient_clip; raise_on_divergence=False continues)",
                        epoch=epoch + 1,
                        batch=b + 1,
                    )
                total += loss
                if fused is None:
                    net._backward(grad, False, sgd.layers)
                    sgd.step(lr, clip)
                if print_batches and (b + 1) % every == 0:
                    out.write(f"\rEpoch {epoch + 1}/{cfg.epochs} - Batch {b + 1}/{len(data)} - Loss: {loss:.6f}")
            avg = total / len(data)
            result.loss_history.append(avg)
            result.best_loss = min(result.best_loss, avg)
            if cfg.verbose:
                elapsed = time.perf_counter() - epoch_start
                out.write(
                    f"\rEpoch {epoch + 1}/{cfg.epochs} - Avg Loss: {avg:.6f} (Best: {result.best_loss:.6f}) - "
                    f"Time: {go_duration(elapsed)} - "
                    f"Throughput: {samples_per_epoch / max(elapsed, 1e-12):.0f} samples/sec\n"
                )
                if (epoch + 1) % 5 == 0:
                    if fused is not None:
                        fused.export_grads()
                    _print_gradient_stats(net, out)
            if (
                cfg.evaluate_every_n > 0
                and (epoch + 1) % cfg.evaluate_every_n == 0
                and cfg.validation_inputs is not None
                and cfg.validation_targets is not None
            ):
                if cfg.verbose:
                    out.write("\n  Running validation evaluation...\n")
                result.eval_metrics = net.evaluate_network(cfg.validation_inputs, cfg.validation_targets)
                if cfg.verbose:
                    m = result.eval_metrics
                    out.write(
                        f"  Validation Score: {m.score:.2f}/100, Avg Deviation: {m.avg_deviation:.2f}%, "
                        f"Failures: {m.failures}/{m.total_samples}\n"
                    )
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{avg:.6f}")
    finally:
        if fused is not None:
            fused.export_grads()
            net._activations, net._tape = [], None  # the fused step records no layer-by-layer tape
        else:
            sgd.finish()
        if progress is not None:
            progress.close()
    net._backend.synchronize()
    result.total_time = time.perf_counter() - start
    result.final_loss = result.loss_history[-1]
    result.avg_throughput = samples_per_epoch * cfg.epochs / max(result.total_time, 1e-12)
    if cfg.verbose:
        out.write(
            f"\n✓ Training Complete!\nFinal Loss: {result.final_loss:.6f}\nBest Loss: {result.best_loss:.6f}\n"
            f"Total Time: {go_duration(result.total_time)}\n"
            f"Average Throughput: {result.avg_throughput:.0f} samples/sec\n\n"
        )
        out.flush()
    return result


def _print_gradient_stats(net: Any, out: Any) -> None:
    """LOOM's verbose "Gradient Statistics" block (kernel = every non-bias gradient of a layer)."""
    kernel: list[tuple[int, list[Any]]] = []
    bias_layers = 0
    for i, top in enumerate(net.layers):
        grads = [(name, g) for cfg in top.iter_layers() for name, g in cfg.grads.items()]
        weights = [g for name, g in grads if "bias" not in name]
        if weights:
            kernel.append((i, weights))
        bias_layers += any("bias" in name for name, _ in grads)
    out.write(
        f"  Gradient Statistics:\n    Total layers: {len(net.layers)}, Kernel grads: {len(kernel)}, "
        f"Bias grads: {bias_layers}\n"
    )
    for i, grads in kernel:
        flat = np.concatenate([to_numpy(g).reshape(-1).astype(np.float64) for g in grads])
        norm = math.sqrt(float(flat @ flat))
        out.write(f"    Layer {i}: norm={norm:.6f}, mean={float(flat.mean()):.6f}, size={flat.size}\n")
