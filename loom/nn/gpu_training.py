"""The training step on the GPU: cuBLAS products, fused kernels, one host read per batch.

:class:`~loom.nn.training_engine.Stepper` hands its network to :class:`DeviceStep` when the
network's backend has training kernels (:func:`loom.backend.cuda_train.train_kernels`: CuPy, or
their CPU emulation in tests), its parameters are float32 and the optimizer is one the update
kernel implements. The step then differs from the generic one in what runs, not in what it
computes (the generic path is the reference the tests compare against, to 1e-5 after 10 steps):

* fused step (:mod:`loom.nn.fused_codegen` with ``gpu`` set): per stage ``z = x @ W`` through cuBLAS,
  then bias + activation in one kernel; backward ``gz = gy * act'(z)`` in one kernel, ``x^T gz`` and
  ``gz W^T`` through cuBLAS with transposes as flags, the bias gradient as a column-sum kernel —
  no augmented ``[x, 1]`` copies, no misaligned leading dimensions;
* the loss stays on the device (:mod:`loom.nn.device_losses`; MSE's gradient and value in one
  kernel). The fused step queues forward, backward, clipping and update without waiting, and the
  update kernel skips itself when the loss is not finite, so the divergence guard needs no early
  return; the one host read of the step (``Backend.fetch`` of the loss) comes last. The
  layer-by-layer step reads the loss before its backward pass, as the generic one does;
* clipping: the squared norm and the factor are computed on the device and the update kernel
  applies the factor;
* the update: one kernel over the flat buffer for SGD (momentum, Nesterov, decay), Adam, AdamW
  and RMSprop, which also writes the divergence guard's copy of the parameters in the same pass.

Opt in with ``LOOM_GPU_TRAIN_KERNELS=1``: the kernels match the generic step on the CPU emulation
(``tools/cuda_emulator``) but have not yet run on a GPU, so CuPy training takes the generic step
unless asked.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from loom.backend.cuda_train import optimizer_supported, train_kernels

if TYPE_CHECKING:
    from loom.nn.flat_parameters import FlatParameters
    from loom.nn.optimizers import Optimizer
    from loom.nn.training_engine import Stepper

__all__ = ["DeviceStep", "device_kernels"]


def device_kernels(flat: FlatParameters, optimizer: Optimizer | None = None) -> Any:
    """The training kernels for these buffers and this optimizer, or ``None`` for the generic step."""
    if np.dtype(str(flat.params.dtype)) != np.float32:
        return None
    if optimizer is not None and not optimizer_supported(optimizer):
        return None
    try:
        return train_kernels(flat.backend)
    except Exception as exc:  # a CUDA toolkit that cannot compile them: the generic step still trains
        warnings.warn(f"loom: GPU training kernels unavailable ({exc}); using the generic step", stacklevel=3)
        return None


class DeviceStep:
    """The GPU step's ``finish`` and ``step`` functions for one :class:`Stepper` (see the module docstring).

    Parameters
    ----------
    stepper : Stepper
        Its network, buffers, loss, optimizer, guard, fused trainer and layer list are used; its
        ``_backup``, ``_first_step`` and ``grad_scale`` are set here.
    gpu : TrainKernels
    clip : float
        Global-norm clipping threshold (0: none).
    hooks : sequence of callable
        Gradient hooks, called with the flat gradient buffer before clipping.
    """

    def __init__(self, stepper: Stepper, gpu: Any, clip: float, hooks: Sequence[Callable[[Any], None]]) -> None:
        self.stepper, self.gpu, self.clip, self.hooks = stepper, gpu, clip, tuple(hooks)
        flat, optimizer = stepper.flat, stepper.optimizer
        raw = flat.raw
        self.backend = flat.backend
        self.state = optimizer.state_buffers(flat.params, raw)
        self.scale = raw.ones((), dtype=flat.params.dtype)  # the clipping factor, on the device
        self.backup = raw.empty_like(flat.params) if stepper.guard else None
        stepper._backup = self.backup
        stepper._first_step = optimizer.step_count
        stepper.grad_scale = self.scale if clip > 0 else 1.0
        self._losses: dict[int, Callable[[Any, Any], tuple[Any, Any]]] = {}
        self._stack: tuple[Any, ...] | None = None  # the epoch kernel's stacked batches (see stacked)
        self._order: tuple[Any, Any] | None = None

    def fetch(self, loss: Any) -> float:
        """The loss as a Python float: the step's one device-to-host transfer (through ``Backend.fetch``)."""
        return float(self.backend.fetch(loss).reshape(-1)[0])

    def finish(self, lr: float, gate: Any = None) -> None:
        """Hooks, clipping factor and the update kernel (skipped on the device when ``gate`` is not finite)."""
        stepper, gpu = self.stepper, self.gpu
        flat, optimizer = stepper.flat, stepper.optimizer
        for hook in self.hooks:
            hook(flat.grads)
        scale = None
        if self.clip > 0:
            scale = gpu.clip_scale(flat.grads, self.clip, self.scale)
        gpu.update(
            optimizer,
            flat.params,
            flat.grads,
            self.state,
            lr,
            optimizer.step_count + 1,
            scale=scale,
            gate=gate if stepper.guard else None,
            backup=self.backup,
        )

    def _counted(self, value: float) -> float:
        """Count the update the step queued (the kernel skipped it on a non-finite loss under the guard)."""
        if math.isfinite(value) or not self.stepper.guard:
            self.stepper.optimizer.step_count += 1
        return value

    # ------------------------------------------------------------------ the two steps
    def fused_step(self) -> Callable[[Any, Any, int, float], float]:
        """``step(x, target, batch, lr) -> loss`` through the fused trainer's GPU step."""
        stepper, fetch, finish = self.stepper, self.fetch, self.finish
        fused, loss, guard = stepper.fused, stepper.loss, stepper.guard
        assert fused is not None
        ready: dict[int, Any] = {}  # batch size -> final compiled step

        def step(x: Any, target: Any, batch: int, lr: float) -> float:
            compiled = ready.get(batch)
            if compiled is not None:
                value, stepper.last_output = compiled(x, target, lr, finish)
                return self._counted(fetch(value))
            value, stepper.last_output = fused.step(x, target, batch, loss, lr, finish, guard, fetch=fetch)
            compiled = fused.steps[(batch, loss.key, guard)]
            if not compiled.provisional:
                ready[batch] = compiled
            return self._counted(value)

        return step

    def layer_step(self) -> Callable[[Any, Any, int, float], float]:
        """``step(x, target, batch, lr) -> loss`` layer by layer, with the GPU loss, clipping and update."""
        stepper = self.stepper
        net, flat, guard = stepper.net, stepper.flat, stepper.guard

        def step(x: Any, target: Any, batch: int, lr: float) -> float:
            y = stepper.last_output = net.forward_tape(x, batch, stepper.context, input_grad=False)
            loss_fn = self._losses.get(batch)
            if loss_fn is None:
                loss_fn = self._losses[batch] = stepper.loss.bind_device(flat.xp, batch, self.gpu)
            loss, grad = loss_fn(y, target)
            value = self.fetch(loss)
            if guard and not math.isfinite(value):
                return value
            net.backward_tape(grad, layers=stepper.layers)
            flat.gather_gradients()
            self.finish(lr)
            return self._counted(value)

        return step

    # ------------------------------------------------------------------ whole epochs
    def stacked(self, batches: list[Any]) -> tuple[Any, Any, Any]:
        """Inputs and targets of the batches back to back on the device, and this epoch's order of them.

        Built once per training run (the same batch objects every epoch, shuffled or not); the
        order (int32, one index per batch) is copied to the device when it changes.
        """
        raw = self.stepper.flat.raw
        pairs = [(id(item[0]), id(item[1])) for item in batches]
        key = tuple(sorted(pairs))
        if self._stack is None or self._stack[0] != key:
            xs = raw.concatenate([raw.ascontiguousarray(item[0]).reshape(-1) for item in batches])
            ts = raw.concatenate([raw.ascontiguousarray(item[1]).reshape(-1) for item in batches])
            index = {pair: i for i, pair in enumerate(pairs)}
            self._stack = (key, xs, ts, index, list(batches))  # the batches stay referenced: their ids stay theirs
            self._order = None
        _, xs, ts, index, _ = self._stack
        if self._order is None or self._order[0] != pairs:
            self._order = (pairs, raw.asarray(np.array([index[p] for p in pairs], dtype=np.int32)))
        return xs, ts, self._order[1]

    def run_epoch(self, batches: Any, lr: float) -> list[float] | None:
        """One epoch of a tiny network in one kernel launch (:mod:`loom.nn.fused_cuda`): the batch losses.

        ``None`` when the epoch must run step by step: batches not a list of equal-size float32
        batches, a network or loss the epoch kernel does not cover, ``LOOM_TINY_EPOCH_KERNEL=0``.
        """
        if not isinstance(batches, list) or not batches or self.stepper.fused is None:
            return None
        if os.environ.get("LOOM_TINY_EPOCH_KERNEL", "").strip() == "0":
            return None
        x0, t0, size = batches[0][0], batches[0][1], batches[0][2]
        shape = (x0.shape, t0.shape, size)
        dtype = self.stepper.flat.params.dtype
        raw_array = type(self.stepper.flat.params)
        for x, t, b, _ in batches:
            if (x.shape, t.shape, b) != shape or x.dtype != dtype or t.dtype != dtype:
                return None
            if type(x) is not raw_array or type(t) is not raw_array:
                return None
        key = (int(size), int(x0.shape[0]), int(t0.shape[0]))
        from loom.nn.fused_cuda import EpochKernel

        try:
            kernel = EpochKernel.for_step(self, *key)
        except Exception as exc:  # a compiler that rejects the generated kernel: run step by step
            warnings.warn(f"loom: tiny-network epoch kernel unavailable ({exc}); training step by step", stacklevel=2)
            kernel = None
        return None if kernel is None else kernel.run(self, batches, lr)
