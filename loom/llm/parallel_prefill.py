"""Row-parallel execution of a CPU prefill on a persistent thread pool.

NumPy runs its element-wise loops (softmax, SwiGLU, RoPE, norms) on one core,
while OpenBLAS spreads a matmul over all of them. A prefill of many tokens is
row-parallel almost everywhere: each token's norm, projections and MLP only
read its own row, and attention only needs every key/value written first. So
:class:`RowParallel` gives each of ``n`` workers a share of the rows (the
calling thread does share 0), with BLAS limited to one thread per worker
(:func:`single_threaded_blas`): NumPy releases the GIL in BLAS calls and in
ufunc loops over large arrays, so the element-wise work runs on every core too.

No multi-threaded BLAS call may run in between (e.g. the LM head): OpenBLAS's
own threads then keep spinning for a while on the cores the workers need.

This module only schedules: :meth:`RowParallel.run` runs one phase on all
workers and returns when every share is done (a barrier), re-raising the
first exception. :func:`split_rows` and :func:`balance_blocks` say which rows
and which causal-attention query blocks each worker takes. The transformer
math stays in :class:`loom.llm.model.Transformer`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from loom.errors import ConfigError

__all__ = ["RowParallel", "balance_blocks", "prefill_workers", "row_parallel", "single_threaded_blas", "split_rows"]

ENV_THREADS = "LOOM_PREFILL_THREADS"


def prefill_workers() -> int:
    """Workers of a parallel prefill: ``$LOOM_PREFILL_THREADS``, else the usable cores.

    ``LOOM_PREFILL_THREADS=1`` (or ``0``) disables the parallel prefill.
    """
    value = os.environ.get(ENV_THREADS, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError as exc:
            raise ConfigError(f"{ENV_THREADS}: expected an integer number of threads, got {value!r}") from exc
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_rows(t: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ``(r0, r1)`` row ranges covering ``0 .. t-1``, sizes differing by at most 1.

    Examples
    --------
    >>> split_rows(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    """
    size, extra = divmod(t, n)
    bounds = [0]
    for w in range(n):
        bounds.append(bounds[-1] + size + (w < extra))
    return list(itertools.pairwise(bounds))


def balance_blocks(t: int, start: int, block: int, n: int) -> list[list[tuple[int, int]]]:
    """Causal-attention query blocks ``(b0, b1)`` of ``t`` rows dealt to ``n`` workers by cost.

    Block ``b0 .. b1-1`` (queries at positions ``start + b0 ..``) scores
    ``start + b1`` keys, so later blocks cost more; the blocks are dealt
    largest first to the least-loaded worker (longest-processing-time rule).

    Examples
    --------
    >>> balance_blocks(256, 0, 64, 2)
    [[(192, 256), (0, 64)], [(128, 192), (64, 128)]]
    """
    blocks = [(b0, min(t, b0 + block)) for b0 in range(0, t, block)]
    blocks.sort(key=lambda b: (b[1] - b[0]) * (start + b[1]), reverse=True)
    shares: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    loads = [0] * n
    for b0, b1 in blocks:
        w = loads.index(min(loads))
        shares[w].append((b0, b1))
        loads[w] += (b1 - b0) * (start + b1)
    return shares


class RowParallel:
    """``n`` workers (the caller plus ``n - 1`` pool threads) running phases of a prefill.

    Parameters
    ----------
    workers : int
        Number of shares per phase (at least 2).

    Examples
    --------
    >>> pool = RowParallel(2)
    >>> out = [0, 0]
    >>> pool.run(lambda w: out.__setitem__(w, w + 10))
    >>> out
    [10, 11]
    """

    def __init__(self, workers: int) -> None:
        if workers < 2:
            raise ConfigError(f"workers: RowParallel needs at least 2, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="loom-prefill")

    def run(self, task: Callable[[int], None]) -> None:
        """Run ``task(w)`` for every worker ``w`` (``0`` in the calling thread); wait for all.

        The first exception raised by any share is re-raised here, after every
        share has finished (so none is still writing shared buffers).
        """
        futures: list[Future[None]] = [self._executor.submit(task, w) for w in range(1, self.workers)]
        error: BaseException | None = None
        try:
            task(0)
        except BaseException as exc:
            error = exc
        for future in futures:
            exc = future.exception()
            if exc is not None and error is None:
                error = exc
        if error is not None:
            raise error

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pool threads once their queued shares are done."""
        self._executor.shutdown(wait=wait)


_pool: RowParallel | None = None
_pool_lock = threading.Lock()
_blas_lock = threading.Lock()
_blas_controller: Any = None  # threadpoolctl.ThreadpoolController, made on first use
_blas_limiter: Any = None  # the active limit while _blas_users > 0
_blas_users = 0


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit the BLAS libraries to one thread inside the block (each worker is one core).

    The limit is process-wide and counted: concurrent prefills (other threads)
    share it, and the original thread counts come back when the last one leaves.
    Entering and leaving cost a few microseconds (the libraries are scanned once).
    """
    global _blas_controller, _blas_limiter, _blas_users
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's pool threads: make a new pool on first use."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def row_parallel(workers: int) -> RowParallel:
    """The process-wide :class:`RowParallel` of ``workers`` workers, created on first use.

    A different worker count replaces the pool (e.g. after ``$LOOM_PREFILL_THREADS`` changed).
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool.workers != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)  # a run still using it finishes its queued shares
            _pool = RowParallel(workers)
        return _pool
