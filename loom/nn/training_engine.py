"""The training engine shared by LOOM's ``train`` and Keras-style ``fit``: one stepper, one loop, callbacks.

* :class:`~loom.nn.loss_function.LossFunction` (re-exported) — a loss name and its convention
  (LOOM's or the batch mean), bound to a backend and a batch size.
* :class:`Stepper` — one optimisation step over a network's
  :class:`~loom.nn.flat_parameters.FlatParameters`: the gradient comes from the fused step
  (:mod:`loom.nn.fused`) or layer by layer (``forward_tape`` / ``backward_tape``, then the
  layers' gradients copied into the flat gradient buffer); then :meth:`Stepper.finish` runs, the
  same code on both paths:

  1. the *gradient hooks*, each called with the flat gradient buffer — the place where a
     data-parallel run all-reduces the one array;
  2. global-norm clipping (a factor the optimizer applies; the buffer keeps the raw gradient);
  3. the divergence snapshot (one device copy of the parameters);
  4. the optimizer's update (:mod:`loom.nn.optimizers`) on the flat buffers.

  On CuPy nothing here leaves the device except the loss value (one host fetch per batch):
  the clipping factor stays a device scalar.

  Data-parallel training (:mod:`loom.nn.data_parallel`) passes a :class:`ParallelStep`: the
  reduction of the batch loss over the ranks starts as soon as the loss is computed and is
  waited for after the backward pass; the divergence check then reads the global loss (every
  rank halts at the same batch, before the update, having run the same collectives); the
  gradient reduction is the first gradient hook, and on the fused path each stage's gradient
  may be reduced during the backward pass (``overlap``).
* :func:`run_epochs` — the loop: learning-rate schedule per epoch, steps, divergence check,
  callbacks (:class:`Callback`, Keras' hooks), early stop through ``net.stop_training``.

A non-finite loss stops training with :class:`~loom.errors.TrainingDivergedError` naming the
epoch, the batch and the last finite loss, after putting back the parameters of the last
finite step (they produced that loss), so the network never keeps NaN / Inf weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from loom.errors import TrainingDivergedError
from loom.nn.fused import FusedTrainer, fused_eligible
from loom.nn.gpu_training import DeviceStep, device_kernels
from loom.nn.loss_function import LossFunction

if TYPE_CHECKING:
    from loom.nn.flat_parameters import FlatParameters
    from loom.nn.network import Network
    from loom.nn.optimizers import Optimizer

__all__ = [
    "Callback",
    "EpochStats",
    "GradientHook",
    "LossFunction",
    "ParallelStep",
    "Stepper",
    "run_epochs",
]

#: ``hook(flat_gradients)``: may change the flat gradient buffer in place (e.g. an all-reduce).
GradientHook = Callable[[Any], None]

#: ``(x, target, batch_size, extra)``: one training batch; ``extra`` is what a metric needs (labels).
Batch = tuple[Any, Any, int, Any]


class ParallelStep(Protocol):
    """What a data-parallel run adds to each step (:class:`loom.nn.data_parallel.DataParallel`).

    Per step, on every rank: :meth:`start_loss`, the backward pass (with :meth:`stage_done`
    calls when :attr:`overlap`), :meth:`global_loss`, then either :meth:`abandon` (a halted
    step) or ``finish`` with :meth:`reduce_gradient` as its first hook.
    """

    #: Hand each stage's gradient to :meth:`stage_done` during the backward pass (fused path).
    overlap: bool

    def start_loss(self, loss: float) -> None:
        """Start reducing this rank's batch loss over the ranks (does not wait)."""
        ...

    def global_loss(self) -> float:
        """Wait for :meth:`start_loss`'s reduction: the global batch's loss (the same on every rank)."""
        ...

    def stage_done(self, stage: int) -> None:
        """The gradient of top-level layer ``stage`` is final for this step."""
        ...

    def reduce_gradient(self, grads: Any) -> None:
        """Turn the flat gradient buffer into the global batch's gradient, in place (a gradient hook)."""
        ...

    def abandon(self) -> None:
        """The step halts (non-finite global loss): complete what was started, keep no result."""
        ...


class Stepper:
    """One optimisation step of a network over its attached flat buffers (see the module docstring).

    Parameters
    ----------
    net : Network
    flat : FlatParameters
        ``net``'s attached buffers (:meth:`~loom.nn.network.Network.training_parameters`).
    loss : LossFunction
    optimizer : Optimizer
    gradient_clip : float
        Global L2 norm to clip the gradient to (``0``: no clipping).
    fused : bool
        Use the fused step when the network is eligible.
    guard : bool
        Divergence guard: return before the backward pass on a non-finite loss and snapshot
        the parameters before each update, so :meth:`restore_last_finite` can put them back.
    gradient_hooks : sequence of callable
        Called with the flat gradient buffer before clipping.
    parallel : ParallelStep, optional
        Data-parallel training: the loss reduction before the divergence check and the
        gradient reduction before the hooks (see the module docstring).
    """

    def __init__(
        self,
        net: Network,
        flat: FlatParameters,
        loss: LossFunction,
        optimizer: Optimizer,
        *,
        gradient_clip: float = 0.0,
        fused: bool = True,
        guard: bool = True,
        gradient_hooks: Sequence[GradientHook] = (),
        parallel: ParallelStep | None = None,
    ) -> None:
        self.net, self.flat, self.loss, self.optimizer = net, flat, loss, optimizer
        self.guard = guard
        self.parallel = parallel
        # GPU step kernels (loom.nn.gpu_training), or None; data-parallel runs take the generic step
        gpu = device_kernels(flat, optimizer) if parallel is None else None
        self.fused: FusedTrainer | None = (
            FusedTrainer.for_parameters(net, flat, gpu) if fused and fused_eligible(net) else None
        )
        self.context = None if self.fused is not None else net.training_context()
        self.layers = list(net.iter_all_layers())
        self.last_output: Any = None
        self._losses: dict[int, Callable[[Any, Any], tuple[float, Any]]] = {}
        self.device: DeviceStep | None = None
        if gpu is not None:
            self.device = DeviceStep(self, gpu, float(gradient_clip), gradient_hooks)
            self.finish = self.device.finish  # type: ignore[assignment]
            step = self.device.fused_step() if self.fused is not None else self.device.layer_step()
            self.step = step  # type: ignore[method-assign]
            return
        self.update = optimizer.bind(flat.params, flat.grads, flat.raw)
        hooks = tuple(gradient_hooks) if parallel is None else (parallel.reduce_gradient, *gradient_hooks)
        self.finish = self._make_finish(float(gradient_clip), hooks)
        if self.fused is not None:
            self.step = (  # type: ignore[method-assign]
                self._fused_step_function() if parallel is None else self._fused_parallel_step_function(parallel)
            )
        elif parallel is not None:
            self.step = self._parallel_step  # type: ignore[method-assign]

    @property
    def path(self) -> str:
        """``"fused"`` or ``"layer"``: how gradients are computed."""
        return "fused" if self.fused is not None else "layer"

    def _make_finish(self, clip: float, hooks: tuple[GradientHook, ...]) -> Callable[[float], None]:
        flat, update, guard = self.flat, self.update, self.guard
        grads, params, raw = flat.grads, flat.params, flat.raw
        on_device = flat.backend.is_gpu
        backup = raw.empty_like(params) if guard else None  # the parameters before the latest update
        copyto, minimum, sqrt = raw.copyto, raw.minimum, raw.sqrt

        def finish(lr: float) -> None:
            if hooks:
                for hook in hooks:
                    hook(grads)
            scale: Any = 1.0
            if clip > 0:
                if on_device:  # the factor stays on the device: no host round trip
                    scale = minimum(clip / sqrt(grads.dot(grads)), 1.0)
                else:
                    norm = float(grads.dot(grads)) ** 0.5
                    if norm > clip:
                        scale = clip / norm
                self.grad_scale = scale
            if guard:
                copyto(backup, params)
            update(lr, scale)

        self._first_step = self.optimizer.step_count  # restore_last_finite: did an update happen since?
        self._backup = backup
        self.grad_scale: Any = 1.0
        return finish

    def _fused_step_function(self) -> Callable[[Any, Any, int, float], float]:
        """:meth:`step` through the fused trainer, its compiled functions looked up per batch size."""
        fused, loss, finish, guard = self.fused, self.loss, self.finish, self.guard
        assert fused is not None
        ready: dict[int, Any] = {}  # batch size -> final compiled step

        def step(x: Any, target: Any, batch: int, lr: float) -> float:
            compiled = ready.get(batch)
            if compiled is not None:
                value, self.last_output = compiled(x, target, lr, finish)
                return value
            value, self.last_output = fused.step(x, target, batch, loss, lr, finish, guard)
            compiled = fused.steps[(batch, loss.key, guard)]
            if not compiled.provisional:
                ready[batch] = compiled
            return value

        return step

    def _fused_parallel_step_function(self, parallel: ParallelStep) -> Callable[[Any, Any, int, float], float]:
        """:meth:`_fused_step_function` for a data-parallel run (the compiled steps take ``parallel``)."""
        fused, loss, finish, guard = self.fused, self.loss, self.finish, self.guard
        assert fused is not None
        ready: dict[int, Any] = {}

        def step(x: Any, target: Any, batch: int, lr: float) -> float:
            compiled = ready.get(batch)
            if compiled is not None:
                value, self.last_output = compiled(x, target, lr, finish, parallel)
                return value
            value, self.last_output = fused.step(x, target, batch, loss, lr, finish, guard, parallel)
            compiled = fused.steps[fused.step_key(batch, loss, guard, parallel)]
            if not compiled.provisional:
                ready[batch] = compiled
            return value

        return step

    def _parallel_step(self, x: Any, target: Any, batch: int, lr: float) -> float:
        """:meth:`step` of a data-parallel run on the layer-by-layer path (see :class:`ParallelStep`)."""
        net, parallel = self.net, self.parallel
        assert parallel is not None
        y = self.last_output = net.forward_tape(x, batch, self.context, input_grad=False)
        loss_fn = self._losses.get(batch)
        if loss_fn is None:
            loss_fn = self._losses[batch] = self.loss.bind(self.flat.xp, batch)
        loss, grad = loss_fn(y, target)
        parallel.start_loss(loss)
        net.backward_tape(grad, layers=self.layers)
        self.flat.gather_gradients()
        loss = parallel.global_loss()
        if self.guard and not math.isfinite(loss):
            parallel.abandon()
            return loss
        self.finish(lr)
        return loss

    def skip_step(self, lr: float) -> float:
        """A data-parallel step without samples on this rank (its shard of the global batch is empty).

        Takes part in every reduction of the step (a zero loss and a zero gradient, the stages
        handed over as a backward pass would), then clips and updates like the other ranks;
        returns the global loss.
        """
        parallel, flat = self.parallel, self.flat
        assert parallel is not None
        parallel.start_loss(0.0)
        flat.grads[...] = 0
        if parallel.overlap and self.fused is not None:
            for stage in range(len(flat.stage_ranges) - 1, -1, -1):
                if flat.stage_ranges[stage]:
                    parallel.stage_done(stage)
        self.last_output = flat.raw.zeros(0, dtype=flat.grads.dtype)
        loss = parallel.global_loss()
        if self.guard and not math.isfinite(loss):
            parallel.abandon()
            return loss
        self.finish(lr)
        return loss

    def step(self, x: Any, target: Any, batch: int, lr: float) -> float:
        """Forward, loss, backward and update on the flat input ``x`` of ``batch`` samples; returns the loss.

        With the guard on, a non-finite loss returns before the backward pass (nothing changes).
        The output is left in :attr:`last_output`.
        """
        net = self.net
        y = self.last_output = net.forward_tape(x, batch, self.context, input_grad=False)
        loss_fn = self._losses.get(batch)
        if loss_fn is None:
            loss_fn = self._losses[batch] = self.loss.bind(self.flat.xp, batch)
        loss, grad = loss_fn(y, target)
        if self.guard and not math.isfinite(loss):
            return loss
        net.backward_tape(grad, layers=self.layers)
        self.flat.gather_gradients()
        self.finish(lr)
        return loss

    def restore_last_finite(self) -> bool:
        """Put back the parameters of the last step whose loss was finite; False when no step updated yet."""
        if self._backup is None or self.optimizer.step_count == self._first_step:
            return False
        self.flat.raw.copyto(self.flat.params, self._backup)
        return True

    def export_gradients(self) -> None:
        """Leave the last step's (clipped) gradients in the layers' ``cfg.grads``."""
        self.flat.export_gradients(self.grad_scale)
        if self.fused is not None:
            self.net.clear_tape()  # the fused step records no layer-by-layer tape


class Callback:
    """Base class of training callbacks, with Keras' hook names (override what you need).

    ``self.model`` is the network being trained (set before ``on_train_begin``); setting
    ``self.model.stop_training = True`` ends training after the current epoch. ``logs`` holds
    the epoch's numbers under Keras' keys (``loss``, ``accuracy``, ``val_loss``,
    ``val_accuracy``) and ``learning_rate``.

    Data-parallel training runs the callbacks on every rank, with the same ``logs`` (reduced
    over the ranks); a callback whose :attr:`main_process_only` is true (checkpoints, progress
    output) runs on rank 0 only.
    """

    model: Network | None = None
    #: Run only on rank 0 of a data-parallel run (it writes files or prints).
    main_process_only: bool = False

    def set_model(self, model: Network) -> None:
        """Called by the loop before training starts."""
        self.model = model

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Before the first epoch."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """After the last epoch (also after an early stop; not after an exception)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Before epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """After epoch ``epoch`` with its numbers in ``logs``."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """After every training step (``logs["loss"]``: that batch's loss). Costs a call per step."""


def _overrides(callback: Callback, name: str) -> bool:
    return getattr(type(callback), name) is not getattr(Callback, name)


@dataclass(slots=True)
class EpochStats:
    """What one epoch's steps add up to."""

    epoch: int
    learning_rate: float
    loss_sum: float = 0.0  # sum of the batch losses
    weighted_loss_sum: float = 0.0  # sum of batch loss x batch size
    batches: int = 0
    samples: int = 0
    hits: Any = 0  # correct predictions (a device scalar until the epoch ends)


def run_epochs(
    net: Network,
    stepper: Stepper,
    *,
    epochs: int,
    epoch_batches: Callable[[int], Iterable[Batch]],
    learning_rate: Callable[[int], float],
    callbacks: Sequence[Callback] = (),
    summarize: Callable[[EpochStats], dict[str, Any]],
    hits: Callable[[Any, Any], Any] | None = None,
) -> dict[str, Any]:
    """Run ``epochs`` epochs of ``stepper`` steps; returns the last epoch's logs.

    Parameters
    ----------
    epoch_batches : callable
        ``epoch_batches(epoch)`` yields that epoch's ``(x, target, batch_size, extra)``.
    learning_rate : callable
        ``learning_rate(epoch)`` (a :class:`~loom.nn.lr_schedules.LearningRateSchedule`).
    callbacks : sequence of Callback
        Hooks, in order; batch hooks are called only for callbacks that define one.
    summarize : callable
        ``summarize(stats) -> logs`` at the end of each epoch (before the callbacks see them);
        ``stats`` is refilled by the next epoch.
    hits : callable, optional
        ``hits(output, extra)``: correct predictions of a batch, summed into ``stats.hits``.

    Raises
    ------
    TrainingDivergedError
        On a non-finite loss while the stepper's guard is on (parameters restored first).
    """
    net.stop_training = False
    for cb in callbacks:
        cb.set_model(net)
    for cb in callbacks:
        cb.on_train_begin({})
    # With the guard on, a non-finite loss ends in a TrainingDivergedError: NumPy's overflow
    # warnings on the way there would only repeat it.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore") if stepper.guard else nullcontext():
        logs = _epochs(net, stepper, epochs, epoch_batches, learning_rate, callbacks, summarize, hits)
    for cb in callbacks:
        cb.on_train_end(logs)
    return logs


def _epochs(
    net: Network,
    stepper: Stepper,
    epochs: int,
    epoch_batches: Callable[[int], Iterable[Batch]],
    learning_rate: Callable[[int], float],
    callbacks: Sequence[Callback],
    summarize: Callable[[EpochStats], dict[str, Any]],
    hits: Callable[[Any, Any], Any] | None,
) -> dict[str, Any]:
    batch_callbacks = [cb for cb in callbacks if _overrides(cb, "on_train_batch_end")]
    begin_callbacks = [cb for cb in callbacks if _overrides(cb, "on_epoch_begin")]
    logs: dict[str, Any] = {}
    step, guard, isfinite = stepper.step, stepper.guard, math.isfinite
    # tiny networks on the GPU: a whole epoch per kernel launch when nothing needs the steps one by one
    run_epoch = stepper.device.run_epoch if stepper.device and not batch_callbacks and hits is None else None
    last_finite: float | None = None
    stats = EpochStats(0, 0.0)  # one object, refilled every epoch
    for epoch in range(epochs):
        lr = learning_rate(epoch)
        for cb in begin_callbacks:
            cb.on_epoch_begin(epoch, {"learning_rate": lr})
        stats.epoch, stats.learning_rate, stats.hits = epoch, lr, 0
        loss_sum = weighted = 0.0
        samples = 0
        b = -1
        batches = epoch_batches(epoch)
        losses = run_epoch(batches, lr) if run_epoch is not None else None
        for b, (x, target, batch, extra) in enumerate(batches):
            loss = step(x, target, batch, lr) if losses is None else losses[b]
            if not isfinite(loss):
                if guard:
                    _diverged(stepper, epoch, b, loss, last_finite)
            else:
                last_finite = loss
            loss_sum += loss
            weighted += loss * batch
            samples += batch
            if hits is not None:
                stats.hits = stats.hits + hits(stepper.last_output, extra)
            for cb in batch_callbacks:
                cb.on_train_batch_end(b, {"loss": loss, "size": batch, "epoch": epoch})
        stats.loss_sum, stats.weighted_loss_sum, stats.samples, stats.batches = loss_sum, weighted, samples, b + 1
        logs = summarize(stats)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        if net.stop_training:
            break
    return logs


def _diverged(stepper: Stepper, epoch: int, batch: int, loss: float, last_finite: float | None) -> None:
    restored = stepper.restore_last_finite()
    where = f"epoch {epoch + 1}, batch {batch + 1}"
    last = "no finite loss before it" if last_finite is None else f"last finite loss {last_finite:.6g}"
    state = (
        "the weights were put back to those of the last finite step"
        if restored
        else "the weights are unchanged (no update happened in this run)"
    )
    raise TrainingDivergedError(
        f"training diverged: loss is {loss} at {where} ({last}); {state}. Lower the learning rate or set "
        "gradient_clip (raise_on_divergence=False continues training)",
        epoch=epoch + 1,
        batch=batch + 1,
        last_finite_loss=last_finite,
    )
