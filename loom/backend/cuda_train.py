"""Fused CUDA kernels for training: launchers over ``cuda/train_device.cuh`` and ``cuda/train_kernels.cu``.

What a training step on the GPU needs beyond cuBLAS' matrix products, one launch each:

* :meth:`TrainKernels.bias_act` / :meth:`TrainKernels.act_backward` — a Dense layer's bias and
  activation, and the activation's derivative (every activation id of :mod:`loom.ops.activations`);
* :meth:`TrainKernels.column_sum` — the bias gradient;
* :meth:`TrainKernels.mse` — the MSE gradient and the loss as a device scalar (no host round trip);
* :meth:`TrainKernels.clip_scale` — the global-norm clipping factor, kept on the device;
* :meth:`TrainKernels.update` — SGD (momentum, Nesterov, decay), Adam / AdamW or RMSprop over the
  whole flat parameter buffer in one pass, writing the divergence guard's copy of the parameters
  in the same pass and skipping the update when the step's loss is not finite;
* :meth:`TrainKernels.gemm` — ``out = op(a) @ op(b)`` through cuBLAS with transposes as flags.

Each launcher names the array-API reference it is tested against. :func:`train_kernels` gives the
kernels of a CuPy backend and ``None`` on NumPy, where the generic path runs; tests can install
kernels for NumPy arrays (the CPU emulation in ``tools/cuda_emulator``) with
:func:`use_train_kernels`, so the GPU code path runs on machines without a GPU too.
:meth:`TrainKernels.compile_epoch` compiles the generated whole-epoch kernels of tiny networks
(:mod:`loom.nn.fused_cuda`) with the same device functions.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import numpy as np

from loom.backend.array_backend import Backend

__all__ = ["TrainKernels", "device_source", "device_train_kernels", "train_kernels", "use_train_kernels"]

Array = Any
THREADS = 256
_MAX_BLOCKS = 4096  # grid-stride loops beyond this
_REDUCE_BLOCKS = 1024  # partial sums of a reduction (loom_sum_squares, loom_mse)
_OPTIMIZER_KINDS = {"sgd": 0, "adam": 1, "adamw": 1, "rmsprop": 2}


def device_source() -> str:
    """The device functions every training kernel uses (activations, reductions, optimizer updates)."""
    return _read("train_device.cuh")


def _read(name: str) -> str:
    return resources.files("loom.backend").joinpath("cuda", name).read_text(encoding="utf-8")


def _i(value: int) -> np.int32:
    return np.int32(value)


def _f(value: float) -> np.float32:
    return np.float32(value)


def _blocks(n: int, cap: int = _MAX_BLOCKS) -> int:
    return max(1, min(-(-n // THREADS), cap))


class TrainKernels:
    """Launchers of the training kernels on the current stream.

    Parameters
    ----------
    raw : module
        The array module of the buffers (``cupy``; ``numpy`` under the CPU emulation).
    compile_module : callable
        ``compile_module(source) -> module`` with ``module.get_function(name)``
        (``cupy.RawModule`` on a GPU).
    gemm : callable
        ``gemm(transa, transb, a, b, out)``: ``out = op(a) @ op(b)`` for float32 matrices
        (``op`` transposes when the flag is true); cuBLAS on a GPU.
    """

    def __init__(self, raw: Any, compile_module: Callable[[str], Any], gemm: Callable[..., Any]) -> None:
        self.raw = raw
        self._compile = compile_module
        self._module = compile_module(device_source() + _read("train_kernels.cu"))
        self._gemm = gemm
        self._functions: dict[str, Any] = {"loom_update": self._module.get_function("loom_update")}  # compile now
        self._epoch_modules: dict[str, Any] = {}
        self._partials = raw.empty(_REDUCE_BLOCKS, dtype=np.float64)

    def _launch(self, name: str, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        kernel = self._functions.get(name)
        if kernel is None:
            kernel = self._functions[name] = self._module.get_function(name)
        kernel(grid, block, args)

    # ------------------------------------------------------------------ matrix products
    def gemm(self, a: Array, b: Array, out: Array | None = None, *, ta: bool = False, tb: bool = False) -> Array:
        """``out = op(a) @ op(b)`` (``op`` = transpose when ``ta`` / ``tb``); a new ``out`` when None.

        ``a``, ``b`` C- or F-contiguous float32 matrices; ``out`` C-contiguous. Reference: ``@``.
        """
        m = a.shape[1] if ta else a.shape[0]
        n = b.shape[0] if tb else b.shape[1]
        if out is None:
            out = self.raw.empty((m, n), dtype=a.dtype)
        self._gemm("T" if ta else "N", "T" if tb else "N", a, b, out)
        return out

    # ------------------------------------------------------------------ layers
    def bias_act(self, z: Array, bias: Array, act: int, out: Array | None = None) -> Array:
        """``z += bias`` (in place, rows ``[R, C]``), returns ``act(z)`` (into ``out``; ``out=z`` is allowed).

        Reference: ``loom.ops.activations.activate(z + bias, act, xp)``.
        """
        rows, cols = z.shape
        y = self.raw.empty_like(z) if out is None else out
        self._launch("loom_bias_act", (_blocks(rows * cols),), (THREADS,), (z, bias, y, _i(rows), _i(cols), _i(act)))
        return y

    def act_backward(self, grad_y: Array, z: Array, y: Array, act: int) -> Array:
        """``grad_y * act'(z)`` (``y = act(z)``), a new array. Reference: ``activation_backward``."""
        n = int(z.size)
        grad_z = self.raw.empty_like(z)
        self._launch("loom_act_backward", (_blocks(n),), (THREADS,), (grad_y, z, y, grad_z, np.int64(n), _i(act)))
        return grad_z

    def column_sum(self, a: Array, out: Array) -> Array:
        """``out[c] = sum_r a[r, c]`` for ``a`` ``[R, C]``. Reference: ``xp.sum(a, axis=0)``."""
        rows, cols = a.shape
        self._launch("loom_column_sum", (-(-cols // 32),), (32, 8), (a, out, _i(rows), _i(cols)))
        return out

    # ------------------------------------------------------------------ loss, clipping
    def mse(self, y: Array, target: Array, divisor: float) -> tuple[Array, Array]:
        """MSE of flat ``y``, ``target``: ``(loss, grad)`` with ``loss`` a float64 ``[1]`` device array.

        ``loss = sum((y - t)^2) / divisor``, ``grad = (y - t) * (2 / divisor)``: LOOM's MSE with
        ``divisor = len(y)`` (batch-mean MSE is the same number). Reference:
        ``loom.ops.losses.loss_and_grad("mse", ...)``.
        """
        n = int(y.shape[0])
        grad = self.raw.empty_like(y)
        loss = self.raw.empty(1, dtype=np.float64)
        blocks = _blocks(n, _REDUCE_BLOCKS)
        args = (y, target, grad, np.int64(n), _f(2.0 / divisor), self._partials, np.float64(divisor), loss)
        self._launch("loom_mse", (blocks,), (THREADS,), args)
        if blocks > 1:
            self._launch("loom_loss_final", (1,), (THREADS,), (self._partials, _i(blocks), np.float64(divisor), loss))
        return loss, grad

    def clip_scale(self, grads: Array, clip: float, scale: Array) -> Array:
        """``scale[0] = clip / ||grads||`` when the norm exceeds ``clip``, else 1 (float32, on the device).

        Reference: ``loom.ops.losses.clip_by_global_norm`` (the norm in float64).
        """
        n = int(grads.size)
        blocks = _blocks(n, _REDUCE_BLOCKS)
        self._launch("loom_sum_squares", (blocks,), (THREADS,), (grads, np.int64(n), self._partials, _f(clip), scale))
        if blocks > 1:
            self._launch("loom_clip_scale", (1,), (THREADS,), (self._partials, _i(blocks), _f(clip), scale))
        return scale

    # ------------------------------------------------------------------ optimizer
    def update(
        self,
        optimizer: Any,
        params: Array,
        grads: Array,
        state: tuple[Array, Array],
        lr: float,
        step: int,
        *,
        scale: Array | None = None,
        gate: Array | None = None,
        backup: Array | None = None,
    ) -> None:
        """One step of ``optimizer`` (:mod:`loom.nn.optimizers`) over flat ``params`` from ``grads``.

        Parameters
        ----------
        optimizer : Optimizer
            Its hyper-parameters are read (``name``, ``momentum``, ``beta1`` ...).
        state : (array, array)
            SGD: (momentum buffer, unused); Adam: (m, v); RMSprop: (v, momentum buffer).
        lr : float
            This step's learning rate.
        step : int
            The step number from 1 (Adam's bias correction).
        scale : array ``[1]``, optional
            Gradient factor on the device (the clipping factor).
        gate : float64 array ``[1]``, optional
            This step's loss: no update when it is not finite.
        backup : array, optional
            Receives the parameters before the update.
        """
        n = int(params.size)
        s0, s1 = state
        args = (
            params,
            grads,
            s0,
            s1,
            params if backup is None else backup,
            np.int64(n),
            grads if scale is None else scale,
            _i(scale is not None),
            self._partials if gate is None else gate,
            _i(gate is not None),
            _i(backup is not None),
            *optimizer_arguments(optimizer),
            *step_arguments(optimizer, lr, step),
        )
        self._launch("loom_update", (_blocks(n),), (THREADS,), args)

    # ------------------------------------------------------------------ generated kernels
    def compile_epoch(self, source: str, name: str) -> Any:
        """The kernel ``name`` of a generated source (prefixed with the device functions), compiled once."""
        key = hashlib.sha256(source.encode("utf-8")).hexdigest()
        module = self._epoch_modules.get(key)
        if module is None:
            if len(self._epoch_modules) >= 64:
                self._epoch_modules.clear()
            module = self._epoch_modules[key] = self._compile(device_source() + source)
        return module.get_function(name)


def optimizer_arguments(optimizer: Any) -> tuple[Any, ...]:
    """The ``LoomOptimizer`` fields of ``optimizer`` (train_device.cuh), complements rounded from float64."""
    b1 = getattr(optimizer, "beta1", 0.9)
    b2 = getattr(optimizer, "beta2", 0.999)
    alpha = getattr(optimizer, "alpha", 0.99)
    return (
        _i(_OPTIMIZER_KINDS[optimizer.name]),
        _f(getattr(optimizer, "momentum", 0.0)),
        _i(bool(getattr(optimizer, "nesterov", False))),
        _f(optimizer.weight_decay),
        _f(1.0 - b1),
        _f(b2),
        _f(1.0 - b2),
        _f(getattr(optimizer, "epsilon", 1e-8)),
        _i(bool(getattr(optimizer, "decoupled", False))),
        _f(alpha),
        _f(1.0 - alpha),
    )


def step_arguments(optimizer: Any, lr: float, step: int) -> tuple[np.float32, ...]:
    """The ``LoomStep`` fields for learning rate ``lr`` at step ``step`` (from 1), as the reference rounds them."""
    b1 = getattr(optimizer, "beta1", 0.9)
    b2 = getattr(optimizer, "beta2", 0.999)
    adam = _OPTIMIZER_KINDS[optimizer.name] == 1
    step_size = lr / (1.0 - b1**step) if adam else 0.0
    bias2 = float(np.sqrt(1.0 - b2**step)) if adam else 1.0
    return _f(lr), _f(1.0 - lr * optimizer.weight_decay), _f(step_size), _f(bias2)


def optimizer_supported(optimizer: Any) -> bool:
    """True when :meth:`TrainKernels.update` implements ``optimizer`` (by its ``name``)."""
    return getattr(optimizer, "name", None) in _OPTIMIZER_KINDS


# ---------------------------------------------------------------------------------------- selection
_OVERRIDE: list[TrainKernels] = []


@contextlib.contextmanager
def use_train_kernels(kernels: TrainKernels | None) -> Iterator[TrainKernels | None]:
    """Use ``kernels`` for networks inside the block (tests: the CPU emulation, or the GPU's own kernels).

    ``None`` pins the generic step inside the block.
    """
    _OVERRIDE.append(kernels)
    try:
        yield kernels
    finally:
        _OVERRIDE.pop()


def train_kernels(backend: Backend) -> TrainKernels | None:
    """The kernels GPU training uses for ``backend``'s networks, or ``None`` for the generic step.

    Inside :func:`use_train_kernels`, those kernels. Otherwise, for a CuPy backend, the current
    device's kernels — only when ``LOOM_GPU_TRAIN_KERNELS=1``: they have been checked against the
    generic step on the CPU emulation but not yet on a GPU, so CuPy training takes the generic
    (verified) step by default. ``None`` on NumPy.
    """
    if _OVERRIDE:
        return _OVERRIDE[-1]
    if not backend.is_gpu or os.environ.get("LOOM_GPU_TRAIN_KERNELS", "").strip() != "1":
        return None
    return device_train_kernels(backend)


def device_train_kernels(backend: Backend) -> TrainKernels:
    """The training kernels compiled for the current device of the CuPy ``backend`` (no opt-in check)."""
    return _cupy_kernels(backend.raw.cuda.Device().id)


def _cublas_gemm(cupy: Any) -> Callable[..., None]:
    from cupy import cublas

    def gemm(transa: str, transb: str, a: Array, b: Array, out: Array) -> None:
        cublas.gemm(transa, transb, a, b, out=out)

    return gemm


@functools.cache
def _cupy_kernels(device_id: int) -> TrainKernels:
    from loom.backend.selection import _cupy_backend

    cupy = _cupy_backend().raw
    with cupy.cuda.Device(device_id):

        def compile_module(source: str) -> Any:
            return cupy.RawModule(code=source, options=("-std=c++17",))

        return TrainKernels(cupy, compile_module, _cublas_gemm(cupy))


def numpy_gemm(transa: str, transb: str, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """The reference of the cuBLAS product for the CPU emulation: ``out[...] = op(a) @ op(b)``."""
    np.matmul(a.T if transa == "T" else a, b.T if transb == "T" else b, out=out)
