"""Array backends: the only place in loom that knows NumPy from CuPy.

A :class:`Backend` bundles everything layer math needs from an array library:

* ``xp``  – the Python array-API namespace (via ``array_api_compat``);
* ``raw`` – the underlying module (``numpy`` / ``cupy``) for measured fast paths;
* an explicitly seeded random generator, ``asarray``, ``to_numpy``,
  ``synchronize`` and ``scatter_add`` (the array API has no scatter-add with
  repeated indices).

The current backend lives in a :class:`contextvars.ContextVar`; switch it with
:func:`set_backend` or temporarily with :func:`use_backend`. The initial value
comes from the ``LOOM_BACKEND`` environment variable (default ``"numpy"``).
``cupy`` is imported lazily here and nowhere else in loom.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from loom.errors import BackendUnavailableError, ConfigError

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "DeviceGraph",
    "backend_of",
    "cupy_available",
    "current_backend",
    "device_constant",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "to_numpy",
    "use_backend",
]

BACKEND_NAMES = ("numpy", "cupy")
DEFAULT_DTYPE = "float32"

_GPU_INSTALL_HINT = (
    "install CuPy for your CUDA version: pip install 'loom-nn[gpu]' (CUDA 12) "
    "or pip install 'loom-nn[gpu-cuda13]' (CUDA 13)"
)


@dataclass(frozen=True, eq=False)
class Backend:
    """One array library as loom uses it.

    Parameters
    ----------
    name : str
        ``"numpy"`` or ``"cupy"``.
    raw : module
        The array module itself (``numpy`` or ``cupy``).
    xp : module
        Its array-API namespace from ``array_api_compat``.
    """

    name: str
    raw: ModuleType
    xp: ModuleType
    float_dtype: Any = field(default=None)

    @property
    def is_gpu(self) -> bool:
        """True for device (CUDA) backends."""
        return self.name == "cupy"

    def __deepcopy__(self, memo: dict[int, Any]) -> Backend:
        return self  # one backend per library: copies of networks share it

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """Convert ``data`` (list, NumPy or backend array) to a backend array, float32 by default."""
        dtype = self.float_dtype if dtype is None else dtype
        if self.name == "cupy" and not isinstance(data, self.raw.ndarray):
            data = np.asarray(data, dtype=dtype)
        return self.raw.asarray(data, dtype=dtype)

    def to_numpy(self, array: Any) -> np.ndarray:
        """Copy a backend array to host memory as a ``numpy.ndarray``."""
        return to_numpy(array)

    def zeros(self, shape: Any, dtype: Any = None) -> Any:
        """Zero-filled backend array (float32 by default)."""
        return self.raw.zeros(shape, dtype=self.float_dtype if dtype is None else dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on NumPy); use before timing."""
        if self.name == "cupy":
            self.raw.cuda.get_current_stream().synchronize()

    def rng(self, seed: int | None = None) -> Any:
        """A fresh random generator of this backend, seeded when ``seed`` is given."""
        return self.raw.random.default_rng(seed)

    def scatter_add(self, target: Any, indices: Any, values: Any) -> Any:
        """``target[indices] += values`` with repeated indices summed; returns ``target``."""
        # numpy.add.at / cupy.add.at (CuPy >= 13; cupyx.scatter_add is deprecated in CuPy 14)
        self.raw.add.at(target, indices, values)
        return target

    def row_matmul(self, x: Any, w: Any) -> Any:
        """``x @ w`` for one row ``x`` ``[1, D]`` and ``w`` ``[D, N]``, safe inside graph capture.

        CuPy refuses cuBLAS calls while a stream is being captured, so on CuPy
        this is a reduction kernel (``y[n] = sum_d x[d] * w[d, n]``); NumPy uses ``@``.
        """
        if self.name != "cupy":
            return x @ w
        return _row_matmul_kernel(self.raw)(x.reshape(-1, 1), w, axis=0).reshape(1, -1)  # [1, N]

    def capture(self, step: Callable[[], Any]) -> DeviceGraph | None:
        """Record ``step``'s device work once as a CUDA graph for cheap replays.

        ``step`` must run a fixed sequence of kernels (inputs read from device
        buffers, no host synchronisation). Returns ``None`` where graphs are not
        available (NumPy, or a CuPy/driver without graph capture): callers then
        simply call ``step`` themselves.
        """
        if self.name != "cupy":
            return None
        try:
            return DeviceGraph(self.raw, step)
        except Exception:  # capture unsupported here (old driver / CuPy): run eagerly
            return None

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


@functools.cache
def _row_matmul_kernel(cupy: ModuleType) -> Any:
    return cupy.ReductionKernel("T x, T w", "T y", "x * w", "a + b", "y = a", "0", "loom_row_matmul")


class DeviceGraph:
    """A CUDA graph recorded from a Python step function (CuPy only).

    The step runs once eagerly (warm-up: cuBLAS handles, kernel compilation,
    memory-pool blocks), then once under stream capture. Its temporaries come
    from a private memory pool, so replays never race with other allocations.
    :meth:`run` launches the graph on its own stream after ``prepare`` (e.g.
    filling input buffers) and returns ``fetch()`` evaluated on that stream.
    """

    def __init__(self, cupy: ModuleType, step: Callable[[], Any]) -> None:
        self._cupy = cupy
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._pool = cupy.cuda.MemoryPool()
        with self._stream, cupy.cuda.using_allocator(self._pool.malloc):
            step()  # warm-up, uncaptured
            self._stream.synchronize()
            mode = getattr(cupy.cuda.runtime, "streamCaptureModeRelaxed", None)
            if mode is None:
                self._stream.begin_capture()
            else:
                self._stream.begin_capture(mode)
            try:
                step()
            finally:
                self._graph = self._stream.end_capture()
        self._graph.upload(self._stream)

    def run(self, prepare: Callable[[], Any] | None = None, fetch: Callable[[], Any] | None = None) -> Any:
        """``prepare()``, replay the graph, then return ``fetch()`` (all on the graph's stream)."""
        with self._stream:
            if prepare is not None:
                prepare()
            self._graph.launch(self._stream)
            return None if fetch is None else fetch()


@functools.cache
def _numpy_backend() -> Backend:
    import array_api_compat.numpy as xp_numpy

    return Backend("numpy", np, xp_numpy, np.float32)


@functools.cache
def _cupy_backend() -> Backend:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising on import
        raise BackendUnavailableError(
            f"the 'cupy' backend needs CuPy, which could not be imported ({exc}); " + _GPU_INSTALL_HINT
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailableError(
            f"CuPy is installed but no CUDA device is usable ({exc}); check the NVIDIA "
            "driver and CUDA_VISIBLE_DEVICES, or " + _GPU_INSTALL_HINT
        ) from exc
    if count < 1:
        raise BackendUnavailableError(
            "CuPy is installed but no CUDA device was found (getDeviceCount() == 0); "
            "run on a machine with an NVIDIA GPU or use the 'numpy' backend"
        )
    import array_api_compat.cupy as xp_cupy

    return Backend("cupy", cupy, xp_cupy, cupy.float32)


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _cupy_backend()
    except BackendUnavailableError:
        return False
    return True


def resolve_backend(spec: str | Backend | None = None) -> Backend:
    """Turn a backend name, a :class:`Backend` or ``None`` (= current) into a Backend."""
    if spec is None:
        return current_backend()
    if isinstance(spec, Backend):
        return spec
    name = str(spec).strip().lower()
    if name in ("numpy", "cpu", "np"):
        return _numpy_backend()
    if name in ("cupy", "gpu", "cuda", "cp"):
        return _cupy_backend()
    raise ConfigError(f"backend: unknown backend {spec!r}; expected one of {list(BACKEND_NAMES)}")


def _initial_backend_name() -> str:
    return os.environ.get("LOOM_BACKEND", "numpy") or "numpy"


_current: contextvars.ContextVar[str] = contextvars.ContextVar("loom_backend")


def current_backend() -> Backend:
    """The :class:`Backend` that new networks and models use by default."""
    return resolve_backend(_current.get(None) or _initial_backend_name())


def get_backend() -> str:
    """Name of the current default backend: ``"numpy"`` or ``"cupy"``."""
    return current_backend().name


def set_backend(name: str | Backend) -> None:
    """Set the default backend for new networks (``"numpy"`` or ``"cupy"``).

    Raises :class:`~loom.errors.BackendUnavailableError` when CuPy or a CUDA
    device is missing.
    """
    _current.set(resolve_backend(name).name)


@contextlib.contextmanager
def use_backend(name: str | Backend) -> Iterator[Backend]:
    """Context manager: use ``name`` as the default backend inside the block.

    Examples
    --------
    >>> with use_backend("numpy") as be:
    ...     be.name
    'numpy'
    """
    backend = resolve_backend(name)
    token = _current.set(backend.name)
    try:
        yield backend
    finally:
        _current.reset(token)


_DEVICE_CONSTANTS: dict[tuple[Any, ...], Any] = {}
_DEVICE_CONSTANTS_MAX = 256


def device_constant(xp: Any, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``xp.asarray(make())``, built and copied to the device once per (namespace, device, key).

    For lookup tables that layer math needs on every call (RoPE tables, causal
    masks): without it a GPU forward pass would copy them host-to-device each
    time. Callers must not modify the returned array in place.
    """
    name = getattr(xp, "__name__", type(xp).__name__)
    device = _cupy_backend().raw.cuda.Device().id if "cupy" in name else None
    full_key = (name, device, *key)
    array = _DEVICE_CONSTANTS.get(full_key)
    if array is None:
        if len(_DEVICE_CONSTANTS) >= _DEVICE_CONSTANTS_MAX:
            _DEVICE_CONSTANTS.clear()
        array = _DEVICE_CONSTANTS[full_key] = xp.asarray(make())
    return array


def backend_of(array: Any) -> Backend:
    """The backend an array belongs to (NumPy for anything that is not a CuPy array)."""
    module = type(array).__module__
    if module.startswith("cupy"):
        return _cupy_backend()
    return _numpy_backend()


def to_numpy(array: Any) -> np.ndarray:
    """Any backend array (or list / scalar) to a ``numpy.ndarray`` on the host."""
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
