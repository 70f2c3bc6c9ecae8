"""CUDA graphs recorded from Python step functions, and the graph-safe row-times-matrix kernel."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["DeviceGraph", "row_matmul_kernel"]


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

    @property
    def stream(self) -> Any:
        """The stream the graph replays on."""
        return self._stream

    def run(self, prepare: Callable[[], Any] | None = None, fetch: Callable[[], Any] | None = None) -> Any:
        """``prepare()``, replay the graph, then return ``fetch()`` (all on the graph's stream)."""
        with self._stream:
            if prepare is not None:
                prepare()
            self._graph.launch(self._stream)
            return None if fetch is None else fetch()


@functools.cache
def row_matmul_kernel(cupy: ModuleType) -> Any:
    """``y[n] = sum_d x[d, 0] * w[d, n]`` as a CuPy reduction kernel (no cuBLAS: graph-capturable)."""
    return cupy.ReductionKernel("T x, T w", "T y", "x * w", "a + b", "y = a", "0", "loom_row_matmul")
