"""Fused CUDA kernels for transformer inference: launchers over ``cuda/llm_kernels.cu``.

The kernels (compiled once per device by NVRTC through CuPy's ``RawModule``)
cover one decoder step in five launches per layer, and the non-GEMM work of a
prefill (see the source file's header). :class:`LLMKernels` launches them on
the current stream with the arguments typed as the kernels expect; every
launcher documents its shapes and the array-API function of
:mod:`loom.ops.transformer` it is checked against.

:func:`llm_kernels` returns ``None`` on NumPy: callers keep the generic
array-API path there (and for anything the kernels do not cover, see
:func:`fused_support`). The kernels only read and write the arrays they are
given, so the same launchers also drive a CPU emulation of the kernels in
tests (``compile_module`` and ``gemm`` are injectable).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np

from loom.backend.array_backend import Backend

__all__ = [
    "GEMV_THREADS",
    "WEIGHT_FORMATS",
    "LLMKernels",
    "columns_per_block",
    "fused_support",
    "kernel_source",
    "llm_kernels",
    "vector_width",
]

Array = Any
#: Weight storage formats of the decode kernels (arithmetic is float32 for all).
WEIGHT_FORMATS = ("float32", "float16", "bfloat16")
_SUFFIX = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
GEMV_THREADS = 256
_ATTENTION_THREADS = 128
_MAX_HEAD_DIM = 256
_DEFAULT_SHARED_LIMIT = 48 * 1024
#: Shared-memory share of L1 for every kernel here (percent): one configuration for all of them,
#: so consecutive kernels of a decode step never wait for the multiprocessors to reconfigure.
_SHARED_CARVEOUT = 50
_TF32_MATH = 3  # CUBLAS_TF32_TENSOR_OP_MATH


def kernel_source() -> str:
    """The CUDA C++ source of the kernels (``loom/backend/cuda/llm_kernels.cu``)."""
    return resources.files("loom.backend").joinpath("cuda", "llm_kernels.cu").read_text(encoding="utf-8")


def vector_width(weight_format: str) -> int:
    """Columns one 16-byte weight load covers: 4 float32 or 8 16-bit values."""
    return 4 if weight_format == "float32" else 8


def columns_per_block(items: int, multiprocessors: int = 132) -> int:
    """Column vectors per GEMV block (a power of two in 2..32): about one block per multiprocessor or more.

    Few columns per block give more blocks (more loads in flight across the
    chip) at the cost of more rows per reduction; the LM head's many columns
    take 32 per block, which also keeps its argmax atomics few.
    """
    tx = 2
    while tx < 32 and items // (2 * tx) >= multiprocessors:
        tx *= 2
    return tx


def fused_support(
    *,
    hidden: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    rotary_dim: int,
) -> str | None:
    """Why the fused kernels cannot run a model of these sizes, or ``None`` when they can.

    The kernels load 16 bytes (up to 8 columns) at a time, so the widths of the
    layer matrices and the head size must be multiples of 8 and the rotated
    half a multiple of 8 too; a head holds at most 256 dimensions.
    """
    if head_dim % 8 or head_dim > _MAX_HEAD_DIM:
        return f"head_dim {head_dim} is not a multiple of 8 up to {_MAX_HEAD_DIM}"
    if rotary_dim % 16:
        return f"rotary dimension {rotary_dim} is not a multiple of 16"
    if hidden % 8 or intermediate % 8:
        return f"hidden size {hidden} / intermediate size {intermediate} not multiples of 8"
    if kv_heads < 1 or heads % kv_heads:
        return f"{heads} query heads do not split evenly over {kv_heads} key/value heads"
    return None


def _head_class(head_dim: int) -> str:
    """Suffix of the attention kernel for ``head_dim``: ``_sN`` serves up to ``32 N`` dimensions."""
    slots = 1
    while 32 * slots < head_dim:
        slots *= 2
    return f"_s{slots}"


def _i(value: int) -> np.int32:
    return np.int32(value)


def _f(value: float) -> np.float32:
    return np.float32(value)


class LLMKernels:
    """Launchers of the fused transformer kernels, on the current stream.

    Parameters
    ----------
    compile_module : callable
        ``compile_module(source) -> module`` with ``module.get_function(name)``
        returning a launchable kernel (``cupy.RawModule`` on a GPU).
    gemm : callable
        ``gemm(a, b, out, beta, tf32)``: ``out = a @ b + beta * out`` for C-contiguous
        float32 matrices (cuBLAS on a GPU).
    multiprocessors : int
        Multiprocessor count of the device (sizes the GEMV grids).
    """

    def __init__(self, compile_module: Callable[[str], Any], gemm: Callable[..., Any], multiprocessors: int) -> None:
        self._module = compile_module(kernel_source())
        self._gemm = gemm
        self._functions: dict[str, Any] = {}
        self.multiprocessors = multiprocessors

    def _launch(self, name: str, grid: tuple[int, ...], block: int, args: tuple[Any, ...], shared: int = 0) -> None:
        kernel = self._functions.get(name)
        if kernel is None:
            kernel = self._functions[name] = self._module.get_function(name)
            with contextlib.suppress(Exception):  # a hint: older drivers/CuPy may not take it
                kernel.preferred_shared_memory_carveout = _SHARED_CARVEOUT
        if shared > _DEFAULT_SHARED_LIMIT and getattr(kernel, "max_dynamic_shared_size_bytes", shared) < shared:
            kernel.max_dynamic_shared_size_bytes = shared
        kernel(grid, (block,), args, shared_mem=shared)

    def _gemv_grid(self, items: int) -> tuple[int, int]:
        tx = columns_per_block(items, self.multiprocessors)
        return -(-items // tx), tx

    # ------------------------------------------------------------------ decode
    def set_step(self, io: Array, token: int, pos: int) -> None:
        """``io[:2] = (token, pos)``: the inputs of a recorded decode step (``io``: int32 ``[2]``)."""
        self._launch("loom_set_step", (1,), 32, (io, _i(token), _i(pos)))

    def embed(self, table: Array, tied: bool, positions: Array | None, io: Array, x: Array, best: Array) -> None:
        """``x`` ``[D]`` = embedding of token ``io[0]`` (+ learned position ``io[1]``); ``best[0] = 0``.

        ``table`` is the LM head ``[D, V]`` when ``tied`` (token = column), else the
        embedding ``[V, D]``; ``positions`` ``[P, D]`` or None.
        Reference: ``Transformer._embed``.
        """
        d = x.shape[0]
        vocab = table.shape[1] if tied else table.shape[0]
        pos_table = positions if positions is not None else x
        args = (table, _i(tied), _i(vocab), _i(d), pos_table, _i(positions is not None), io, x, best)
        self._launch("loom_embed", (-(-d // 256),), 256, args)

    def qkv_rope(
        self,
        fmt: str,
        x: Array,
        norm: tuple[Array, Array | None, float, int],
        w: Array,
        bias: Array | None,
        heads: tuple[int, int, int],
        rope: tuple[Array, Array, int] | None,
        io: Array,
        q: Array,
        k_cache: Array,
        v_cache: Array,
    ) -> None:
        """Norm, fused QKV projection, RoPE and the cache write of one decode step.

        ``x`` ``[D]``; ``norm = (weight, bias or None, eps, kind)`` (kind 0 RMSNorm,
        1 LayerNorm); ``w`` ``[D, (H + 2 Hk) hd]`` in format ``fmt``; ``heads = (H, Hk, hd)``;
        ``rope = (cos, sin, R)`` tables ``[P, R]`` or None. Writes ``q`` ``[H hd]`` and row
        ``io[1]`` of ``k_cache``/``v_cache`` ``[Hk, S_max, hd]``.
        Reference: ``rms_norm`` / ``layer_norm``, ``@``, ``rope_apply``.
        """
        h, hk, hd = heads
        cos, sin, r = rope if rope is not None else (x, x, 0)
        vw = vector_width(fmt)
        items = (h + hk) * (hd - r // 2) // vw + hk * hd // vw
        blocks, tx = self._gemv_grid(items)
        nw, nb, eps, kind = norm
        args = (x, nw, nb if nb is not None else nw, _f(eps), _i(kind), w, bias if bias is not None else x)
        args += (_i(bias is not None), _i(x.shape[0]), _i(h), _i(hk), _i(hd), _i(r), cos, sin, io, _i(tx))
        args += (q, k_cache, v_cache, _i(k_cache.shape[1]))
        self._launch(f"loom_qkv_rope_{_SUFFIX[fmt]}", (blocks,), GEMV_THREADS, args, 4 * x.shape[0])

    def decode_attention(
        self,
        q: Array,
        k_cache: Array,
        v_cache: Array,
        io: Array,
        heads: tuple[int, int, int],
        scale: float,
        part_o: Array,
        part_ml: Array,
    ) -> None:
        """Attention of ``q`` ``[H hd]`` over cache rows ``0..io[1]``, split into ``splits`` key ranges.

        Writes per (head, split) the unnormalised output ``part_o`` ``[H, splits, hd]``
        and its max and sum ``part_ml`` ``[H, splits, 2]`` (combined by :meth:`attn_out`).
        Reference: ``causal_attention`` for one query.
        """
        h, hk, hd = heads
        splits = part_ml.shape[1]
        args = (q, k_cache, v_cache, io, _i(h), _i(hk), _i(hd), _i(k_cache.shape[1]), _f(scale), _i(splits))
        name = "loom_decode_attention" + _head_class(hd)
        self._launch(name, (h, splits), _ATTENTION_THREADS, (*args, part_o, part_ml))

    def attn_out(self, fmt: str, part_o: Array, part_ml: Array, w: Array, bias: Array | None, x: Array) -> None:
        """``x += combine(part_o, part_ml) @ w (+ bias)``; ``w`` ``[H hd, D]``."""
        h, splits, hd = part_o.shape
        d = x.shape[0]
        blocks, tx = self._gemv_grid(d // vector_width(fmt))
        args = (part_o, part_ml, _i(h), _i(hd), _i(splits), w, bias if bias is not None else x)
        args += (_i(bias is not None), _i(d), _i(tx), x)
        self._launch(f"loom_attn_out_{_SUFFIX[fmt]}", (blocks,), GEMV_THREADS, args, 4 * h * hd)

    def mlp_in(
        self,
        fmt: str,
        x: Array,
        norm: tuple[Array, Array | None, float, int],
        w: Array,
        bias: Array | None,
        gated: bool,
        out: Array,
    ) -> None:
        """``out`` ``[Di]`` = ``swiglu`` of ``norm(x) @ w`` ``[D, 2 Di]`` (gated) or ``gelu_tanh`` of ``[D, Di]``."""
        d, di = x.shape[0], out.shape[0]
        blocks, tx = self._gemv_grid(di // vector_width(fmt))
        nw, nb, eps, kind = norm
        args = (x, nw, nb if nb is not None else nw, _f(eps), _i(kind), w, bias if bias is not None else x)
        args += (_i(bias is not None), _i(d), _i(di), _i(gated), _i(tx), out)
        self._launch(f"loom_mlp_in_{_SUFFIX[fmt]}", (blocks,), GEMV_THREADS, args, 4 * d)

    def mlp_out(self, fmt: str, a: Array, w: Array, bias: Array | None, x: Array) -> None:
        """``x += a @ w (+ bias)``; ``a`` ``[Di]``, ``w`` ``[Di, D]``."""
        di, d = a.shape[0], x.shape[0]
        blocks, tx = self._gemv_grid(d // vector_width(fmt))
        args = (a, w, bias if bias is not None else x, _i(bias is not None), _i(di), _i(d), _i(tx), x)
        self._launch(f"loom_mlp_out_{_SUFFIX[fmt]}", (blocks,), GEMV_THREADS, args, 4 * di)

    def lm_head(
        self,
        fmt: str,
        x: Array,
        norm: tuple[Array, Array | None, float, int],
        w: Array,
        logits: Array,
        best: Array,
    ) -> None:
        """``logits`` ``[V]`` = ``norm(x) @ w`` (``w`` ``[D, V']``, ``V' >= V`` padded) and the argmax into ``best``.

        ``best[0]`` (uint64, zeroed by :meth:`embed`) ends as ``(ordered(max) << 32) |
        (2**32 - 1 - argmax)``; :func:`argmax_from_key` decodes it.
        """
        d, v = x.shape[0], logits.shape[0]
        ldw = w.shape[1]
        vw = vector_width(fmt)
        items = ldw // vw
        tx = 32
        while tx > 2 and -(-items // tx) < 2 * self.multiprocessors:
            tx //= 2
        nw, nb, eps, kind = norm
        args = (x, nw, nb if nb is not None else nw, _f(eps), _i(kind), w, _i(d), _i(v), _i(ldw), _i(tx))
        self._launch(f"loom_lm_head_{_SUFFIX[fmt]}", (-(-items // tx),), GEMV_THREADS, (*args, logits, best), 4 * d)

    # ----------------------------------------------------------------- prefill
    def norm_rows(self, x: Array, weight: Array, bias: Array | None, eps: float, kind: int, out: Array) -> None:
        """``out[t] = norm(x[t])`` for ``x`` ``[T, D]`` (kind 0 RMSNorm, 1 LayerNorm)."""
        t, d = x.shape
        args = (x, _i(d), weight, bias if bias is not None else weight, _f(eps), _i(kind), out)
        self._launch("loom_norm_rows", (t,), GEMV_THREADS, args, 4 * d)

    def rope_scatter(
        self,
        qkv: Array,
        bias: Array | None,
        heads: tuple[int, int, int],
        rope: tuple[Array, Array, int] | None,
        start: int,
        q: Array,
        k_cache: Array,
        v_cache: Array,
    ) -> None:
        """``qkv`` ``[T, (H + 2 Hk) hd]`` (+ bias) -> ``q`` ``[T, H hd]`` rotated; keys and values into the cache."""
        t = qkv.shape[0]
        h, hk, hd = heads
        cos, sin, r = rope if rope is not None else (qkv, qkv, 0)
        total = t * ((h + hk) * (hd - r // 2) + hk * hd)
        args = (qkv, _i(t), bias if bias is not None else qkv, _i(bias is not None), _i(h), _i(hk), _i(hd), _i(r))
        args += (cos, sin, _i(start), q, k_cache, v_cache, _i(k_cache.shape[1]))
        self._launch("loom_rope_scatter", (min(-(-total // 256), 65535),), 256, args)

    def prefill_attention(
        self,
        q: Array,
        k_cache: Array,
        v_cache: Array,
        start: int,
        heads: tuple[int, int, int],
        scale: float,
        out: Array,
    ) -> None:
        """Causal attention of ``q`` ``[T, H hd]`` (positions ``start..``) over the cache -> ``out`` ``[T, H hd]``.

        Reference: ``causal_attention``.
        """
        t = q.shape[0]
        h, hk, hd = heads
        args = (q, k_cache, v_cache, _i(t), _i(start), _i(h), _i(hk), _i(hd), _i(k_cache.shape[1]), _f(scale), out)
        self._launch("loom_prefill_attention" + _head_class(hd), (h, -(-t // 4)), _ATTENTION_THREADS, args)

    def gated_activation(self, a: Array, bias: Array | None, gated: bool, out: Array) -> None:
        """``out`` ``[T, Di]`` = ``swiglu(a[:, :Di], a[:, Di:])`` (gated) or ``gelu_tanh(a)`` (+ bias first)."""
        t, di = out.shape
        total = t * di
        args = (a, bias if bias is not None else a, _i(bias is not None), _i(t), _i(di), _i(gated), out)
        self._launch("loom_gated_activation", (min(-(-total // 256), 65535),), 256, args)

    def gemm(self, a: Array, b: Array, out: Array, beta: float = 0.0, tf32: bool = False) -> Array:
        """``out = a @ b + beta * out``: C-contiguous float32 ``a`` ``[M, K]``, ``b`` ``[K, N]``, ``out`` ``[M, N]``."""
        self._gemm(a, b, out, beta, tf32)
        return out


def argmax_from_key(key: int) -> int:
    """The token index packed into an argmax key by the LM-head kernel."""
    return 0xFFFFFFFF - (int(key) & 0xFFFFFFFF)


def _cublas_gemm(cupy: Any) -> Callable[..., None]:
    from cupy import cublas
    from cupy_backends.cuda.libs import cublas as libcublas

    def gemm(a: Array, b: Array, out: Array, beta: float, tf32: bool) -> None:
        if not tf32:
            cublas.gemm("N", "N", a, b, out=out, alpha=1.0, beta=beta)
            return
        handle = cupy.cuda.device.get_cublas_handle()
        mode = libcublas.getMathMode(handle)
        libcublas.setMathMode(handle, getattr(libcublas, "CUBLAS_TF32_TENSOR_OP_MATH", _TF32_MATH))
        try:
            cublas.gemm("N", "N", a, b, out=out, alpha=1.0, beta=beta)
        finally:
            libcublas.setMathMode(handle, mode)

    return gemm


@functools.cache
def _cupy_kernels(device_id: int) -> LLMKernels:
    from loom.backend.selection import _cupy_backend

    cupy = _cupy_backend().raw
    with cupy.cuda.Device(device_id):
        sms = cupy.cuda.Device(device_id).attributes.get("MultiProcessorCount", 132)

        def compile_module(source: str) -> Any:
            return cupy.RawModule(code=source, options=("-std=c++17",))

        return LLMKernels(compile_module, _cublas_gemm(cupy), sms)


def llm_kernels(backend: Backend) -> LLMKernels | None:
    """The fused kernels for the current device of a CuPy backend; ``None`` on NumPy."""
    if not backend.is_gpu:
        return None
    return _cupy_kernels(backend.raw.cuda.Device().id)
