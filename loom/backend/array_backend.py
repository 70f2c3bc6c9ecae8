"""The :class:`Backend` object: one array library (NumPy or CuPy) as loom uses it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from loom.backend.graphs import DeviceGraph

__all__ = ["Backend", "to_numpy"]


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
        from loom.backend.graphs import row_matmul_kernel

        return row_matmul_kernel(self.raw)(x.reshape(-1, 1), w, axis=0).reshape(1, -1)  # [1, N]

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

    def fetch(self, array: Any) -> np.ndarray:
        """Copy a (small) device array to the host: the one device-to-host transfer of a decode step.

        Decoders read their per-token result through this method only, so a test
        can count the transfers by wrapping it.
        """
        return to_numpy(array)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def to_numpy(array: Any) -> np.ndarray:
    """Any backend array (or list / scalar) to a ``numpy.ndarray`` on the host."""
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
