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

:meth:`RowParallel.run` runs one phase on all workers and returns when every
share is done (a barrier), re-raising the first exception. :func:`split_rows`
and :func:`balance_blocks` say which rows and which causal-attention query
blocks each worker takes. :func:`prefill_rows_parallel` is the prefill itself:
the decoder blocks of :class:`loom.llm.model.Transformer` (its two row-wise
halves, ``_attention_in`` and ``_attention_out_mlp``, and the attention of
:mod:`loom.ops.transformer` between them) phase by phase, then the LM head;
:func:`parallel_workers` says when a prefill runs this way.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from loom.errors import ConfigError
from loom.ops.transformer import causal_attention, causal_attention_block

if TYPE_CHECKING:
    from loom.llm.model import RunState, Transformer

__all__ = [
    "RowParallel",
    "balance_blocks",
    "parallel_workers",
    "prefill_rows_parallel",
    "prefill_workers",
    "row_parallel",
    "single_threaded_blas",
    "split_rows",
]

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


# ----------------------------------------------------------------------------- the prefill
Array = Any


def parallel_workers(model: Transformer, t: int) -> int:
    """Workers of a row-parallel prefill of ``t`` tokens on ``model`` (1: run serially).

    NumPy prefills with at least ``model.parallel_min_rows`` tokens per core run on all
    cores; with fewer, multi-threaded BLAS on all rows wins: on 2 cores (SmolLM2-135M) the
    row split lost at 128 tokens, broke even near 192 and gained 5% at 256, 8% at 384 tokens.
    ``$LOOM_PREFILL_THREADS=1`` turns it off.
    """
    if model.backend.name != "numpy" or t < 2 * model.parallel_min_rows:  # decode steps stop here
        return 1
    workers = prefill_workers()
    return workers if workers > 1 and t >= workers * model.parallel_min_rows else 1


def prefill_rows_parallel(
    model: Transformer,
    x: Array,
    state: RunState | None,
    start: int,
    cos: Array,
    sin: Array,
    workers: int,
    last_only: bool = False,
) -> Array:
    """:meth:`Transformer.forward <loom.llm.model.Transformer.forward>` of the ``[T, D]`` embedded rows ``x``,
    row-parallel on ``workers`` threads: ``[T, V]`` logits (``[1, V]`` with ``last_only``).

    One BLAS thread per worker, the LM head included: a multi-threaded BLAS call would
    leave OpenBLAS's threads spinning on the cores the next prefill needs.
    """
    pool, t = row_parallel(workers), x.shape[0]
    with single_threaded_blas():
        x = _layers(model, x, state, start, cos, sin, pool, last_only)  # [T', D]
        if state is not None:
            state.pos = start + t
        return _head(model, x[-1:] if last_only else x, pool)  # [T', V]


def _layers(
    model: Transformer,
    x: Array,
    state: RunState | None,
    start: int,
    cos: Array,
    sin: Array,
    pool: RowParallel,
    last_only: bool,
) -> Array:
    """All decoder blocks over ``[T, D]`` rows ``x`` (owned, updated in place), row-parallel.

    Per layer: phase A (norm, QKV, RoPE, K/V into the cache) on contiguous
    row ranges; phase B (causal attention) on query blocks dealt by cost;
    phase C (out projection, MLP) on the same row ranges as phase A, fused
    with the next layer's phase A. Each phase ends when every worker is done.
    With ``last_only`` the last layer after its phase A runs for the last row
    only, in the calling thread, and ``[1, D]`` is returned.
    """
    xp, cfg = model.backend.xp, model.config
    t = x.shape[0]
    h_q, h_kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layers, scales = model.weights.layers, model._scales
    if state is not None:
        keys, values = state.keys, state.values  # [L, Hk, S_max, hd]
        key_rows = start
    else:  # no cache: one scratch layer, reused (phase B of a layer ends before the next phase A)
        keys = xp.empty((1, h_kv, t, hd), dtype=x.dtype)
        values = xp.empty((1, h_kv, t, hd), dtype=x.dtype)
        key_rows = 0
    q_all = xp.empty((t, h_q, hd), dtype=x.dtype)  # [T, H, hd]
    att = xp.empty((t, h_q * hd), dtype=x.dtype)  # [T, H*hd]
    rows = split_rows(t, pool.workers)
    blocks = balance_blocks(t, start, model._attention_block, pool.workers)
    quiet = model._quiet_overflow

    def phase_a(i: int, r0: int, r1: int) -> None:
        c = s = None
        if cos is not None:
            c, s = cos[r0:r1], sin[r0:r1]
        q, k, v = model._attention_in(x[r0:r1], layers[i], c, s)
        q_all[r0:r1] = q
        j = i if state is not None else 0
        keys[j, :, key_rows + r0 : key_rows + r1, :] = k
        values[j, :, key_rows + r0 : key_rows + r1, :] = v

    def first(w: int) -> None:
        with quiet():
            phase_a(0, *rows[w])

    def attention(i: int) -> Callable[[int], None]:
        j = i if state is not None else 0

        def task(w: int) -> None:
            with quiet():
                for b0, b1 in blocks[w]:
                    visible = key_rows + b1
                    att[b0:b1] = causal_attention_block(
                        q_all[b0:b1], keys[j, :, :visible], values[j, :, :visible], start + b0, scales[i], xp
                    )  # [B, H*hd]

        return task

    def mlp_then_next(i: int) -> Callable[[int], None]:
        def task(w: int) -> None:
            r0, r1 = rows[w]
            with quiet():
                x[r0:r1] = model._attention_out_mlp(x[r0:r1], att[r0:r1], layers[i])
                if i + 1 < len(layers):
                    phase_a(i + 1, r0, r1)

        return task

    pool.run(first)
    for i in range(len(layers) - 1 if last_only else len(layers)):
        pool.run(attention(i))
        pool.run(mlp_then_next(i))
    if not last_only:
        return x
    i = len(layers) - 1  # its keys/values are cached; the same ops as Transformer._block(last_row=True)
    j, s = (i if state is not None else 0), key_rows + t
    with quiet():
        a = causal_attention(q_all[-1:], keys[j, :, :s], values[j, :, :s], s - 1, scales[i], xp)
        return model._attention_out_mlp(x[-1:], a, layers[i])  # [1, D]


def _head(model: Transformer, x: Array, pool: RowParallel) -> Array:
    """Final norm and LM head of ``[T', D]`` rows -> ``[T', V]`` logits, row- or column-parallel on ``pool``."""
    w = model.weights
    logits = model.backend.xp.empty((x.shape[0], w.head.shape[1]), dtype=x.dtype)  # [T', V]
    if x.shape[0] < pool.workers:  # last row only: each worker reads a share of the head's columns
        h = model._norm(x, w.final_norm, w.final_norm_bias)  # [T', D]
        cols = split_rows(w.head.shape[1], pool.workers)

        def task(i: int) -> None:
            c0, c1 = cols[i]
            logits[:, c0:c1] = h @ w.head[:, c0:c1]
    else:
        rows = split_rows(x.shape[0], pool.workers)

        def task(i: int) -> None:
            r0, r1 = rows[i]
            logits[r0:r1] = model._norm(x[r0:r1], w.final_norm, w.final_norm_bias) @ w.head

    pool.run(task)
    return logits
