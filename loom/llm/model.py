"""Decoder-only transformer inference: the forward pass over a KV cache, with generation on top.

Three parts in the llama2.c manner: :class:`~loom.llm.config.TransformerConfig` (the numbers),
:class:`~loom.llm.weights.TransformerWeights` (the parameters, fused and stored ``[in, out]`` so a
decode step is one contiguous pass over them) and :class:`~loom.llm.run_state.RunState` (the
preallocated KV cache and the current position).

:class:`Transformer` runs one code path for both families: LLaMA (RMSNorm, RoPE, GQA, SwiGLU)
and GPT-2 (LayerNorm with bias, learned positions, tanh GELU), written against the backend's
array-API namespace with the pure ops of :mod:`loom.ops.transformer`, so it runs unchanged on
NumPy and CuPy. Other schedules of the same math live in their own modules: the row-parallel
CPU prefill (:mod:`loom.llm.parallel_prefill`), the fused CUDA prefill and the CUDA-graph
decode (:mod:`loom.llm.gpu_prefill`, :mod:`loom.llm.gpu_decode`); the token loop and the
choice of tokens are :mod:`loom.llm.decoding` and :mod:`loom.llm.sampling`'s.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from loom.backend import Backend
from loom.errors import ShapeError
from loom.llm.config import TransformerConfig
from loom.llm.decoding import stream_tokens
from loom.llm.gpu_decode import GraphDecoder, fused_model
from loom.llm.parallel_prefill import parallel_workers, prefill_rows_parallel
from loom.llm.rope import RopeTables
from loom.llm.run_state import RunState
from loom.llm.sampling import Sampler, SamplingParams
from loom.llm.weights import LayerWeights, TransformerWeights
from loom.ops.transformer import causal_attention, gelu_tanh, layer_norm, rms_norm, rope_apply, swiglu

__all__ = ["GraphDecoder", "RunState", "Transformer"]

Array = Any


class Transformer:
    """A loaded decoder-only language model: one forward pass over a KV cache, and generation on top.

    Build with :func:`loom.llm.load_transformer`, or directly from a config and weights.

    Parameters
    ----------
    config : TransformerConfig
        Parsed config.
    weights : TransformerWeights
        Parameters on ``backend`` (see :func:`loom.llm.weights.build_weights`).
    backend : Backend
        Array backend of the weights.
    dtype : dtype
        Compute dtype (float32).

    Attributes
    ----------
    weight_dtype : str
        Storage precision of the weights: the compute dtype's name, or ``"float16"`` /
        ``"bfloat16"`` for a model loaded with that ``dtype`` (GPU decoding then streams 16-bit copies).
    allow_tf32 : bool
        Let GPU prefill matrix products use TF32 tensor cores (about 1e-3 relative error). False by default.
    parallel_min_rows : int
        Fewest tokens per core of a row-parallel NumPy prefill (:func:`~loom.llm.parallel_prefill.parallel_workers`).

    Examples
    --------
    >>> model = load_transformer("fixtures/llm/tiny-llama")  # doctest: +SKIP
    >>> model.logits([46, 208, 75]).shape  # doctest: +SKIP
    (3, 512)
    >>> model.generate([46, 208, 75], 4, stop_ids=[])  # greedy  # doctest: +SKIP
    [71, 71, 71, 71]
    """

    def __init__(
        self, config: TransformerConfig, weights: TransformerWeights, backend: Backend, dtype: Any = np.float32
    ) -> None:
        self.config, self.weights, self.backend, self.dtype = config, weights, backend, dtype
        self._xp = backend.xp
        self.weight_dtype = np.dtype(dtype).name
        self.allow_tf32 = False
        self._fused: Any = None  # loom.llm.gpu_decode.FusedModel (False: not applicable), built on first use
        self._is_llama = config.architecture == "llama"
        self.max_seq_len = config.context_length
        self.rope = None if config.rope is None else RopeTables(config.rope, self._xp, dtype, self.max_seq_len)
        # SwiGLU's exp(-gate) may overflow to inf (the correct silu = -0): NumPy's warnings are off in forward()
        errstate = getattr(backend.raw, "errstate", None)
        self._quiet_overflow = (lambda: errstate(over="ignore")) if errstate is not None else contextlib.nullcontext
        # prefill attention in query blocks skips masked work on the CPU; on a GPU one block covers a prompt
        self._attention_block = 4096 if backend.is_gpu else 64
        self.parallel_min_rows = 96
        self._scales = [
            1.0 / math.sqrt(config.head_dim) / ((i + 1) if config.attn_scale_by_layer else 1)
            for i in range(config.num_layers)
        ]

    def logits(self, ids: Sequence[int]) -> Array:
        """``[T, vocab_size]`` logits of the ``[T]`` ids at positions ``0 .. T-1`` (no cache)."""
        return self.forward(ids)

    def new_state(self, max_seq_len: int) -> RunState:
        """A fresh :class:`RunState` holding up to ``max_seq_len`` positions."""
        self.config.check_length(max_seq_len)
        return RunState(self.config, max_seq_len, self.backend, self.dtype)

    def forward(self, ids: Sequence[int], state: RunState | None = None, *, last_only: bool = False) -> Array:
        """Run ``T`` tokens through the model, appending them to ``state``'s cache.

        Parameters
        ----------
        ids : sequence of int
            ``[T]`` new token ids, at positions ``state.pos .. state.pos + T - 1`` (``0 .. T-1`` without a state).
        state : RunState, optional
            KV cache to read and extend (prefill: many ids; decode: one id).
        last_only : bool
            Compute the LM head only for the last position.

        Returns
        -------
        array
            ``[T, V]`` logits, or ``[1, V]`` with ``last_only``.

        """
        idx = self.backend.asarray(self.config.token_ids(ids), dtype=np.int64)
        t = len(ids)
        start = 0 if state is None else state.pos
        if state is not None and start + t > state.max_seq_len:
            raise ShapeError(f"KV cache holds {state.max_seq_len} positions; got {start} cached + {t} new")
        self.config.check_length(start + t)
        if self._fused_path() is not None:
            return self._fused.forward(idx, state, start, last_only)
        x = self._embed(idx, start, t)  # [T, D]
        heads = self.config.num_heads + self.config.num_kv_heads
        cos, sin = self.rope.rows(start, t, heads) if self._is_llama else (None, None)  # [T, (H+Hk,) R]
        workers = parallel_workers(self, t)
        if workers > 1:
            return prefill_rows_parallel(self, x, state, start, cos, sin, workers, last_only)

        def attend(i: int, q: Array, k: Array, v: Array) -> Array:
            if state is not None:
                state.keys[i, :, start : start + t, :], state.values[i, :, start : start + t, :] = k, v
                k, v = state.keys[i, :, : start + t, :], state.values[i, :, : start + t, :]  # [Hk, S, hd] views
            # q: all T new rows, or only the last one (last layer of a last_only pass)
            return causal_attention(q, k, v, k.shape[1] - q.shape[0], self._scales[i], self._xp, self._attention_block)

        last = len(self.weights.layers) - 1 if last_only else -1  # that layer's output is needed for one row
        with self._quiet_overflow():
            for i, layer in enumerate(self.weights.layers):
                x = self._block(x, layer, i, cos, sin, attend, last_row=i == last)  # [T, D] or [1, D]
        if state is not None:
            state.pos = start + t
        w = self.weights
        return self._norm(x[-1:] if last_only else x, w.final_norm, w.final_norm_bias) @ w.head  # [T', V]

    def _block(
        self,
        x: Array,
        layer: LayerWeights,
        i: int,
        cos: Array,
        sin: Array,
        attend: Callable[[int, Array, Array, Array], Array],
        matmul: Callable[[Array, Array], Array] = operator.matmul,
        *,
        last_row: bool = False,
    ) -> Array:
        """One decoder block; ``attend(i, q, k, v)`` stores k/v and returns ``[T_q, H*hd]``.

        With ``last_row`` only the last row's output ``[1, D]`` is computed (keys and values
        still for all ``T``): the last layer of a ``last_only`` pass.
        """
        q, k, v = self._attention_in(x, layer, cos, sin, matmul)
        if last_row:
            q, x = q[-1:], x[-1:]  # [1, H, hd], [1, D]
        return self._attention_out_mlp(x, attend(i, q, k, v), layer, matmul)  # [T, D] or [1, D]

    def _attention_in(
        self, x: Array, layer: LayerWeights, cos: Array, sin: Array, matmul: Callable = operator.matmul
    ) -> tuple[Array, Array, Array]:
        """First, row-wise half of a block: norm, QKV projection, RoPE -> ``q [T, H, hd]``, ``k, v [Hk, T, hd]``."""
        xp, cfg = self._xp, self.config
        t, h_q, h_kv, hd = x.shape[0], cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        qkv = matmul(self._norm(x, layer.attn_norm, layer.attn_norm_bias), layer.qkv)  # [T, (H+2Hk)hd]
        if layer.qkv_bias is not None:
            qkv += layer.qkv_bias
        qk = xp.reshape(qkv[:, : (h_q + h_kv) * hd], (t, h_q + h_kv, hd))  # [T, H+Hk, hd]
        if cos is not None:
            qk = rope_apply(qk, cos, sin, xp)  # [T, H+Hk, hd]
        k = xp.permute_dims(qk[:, h_q:], (1, 0, 2))  # [Hk, T, hd]
        v = xp.permute_dims(xp.reshape(qkv[:, (h_q + h_kv) * hd :], (t, h_kv, hd)), (1, 0, 2))  # [Hk, T, hd]
        return qk[:, :h_q], k, v

    def _attention_out_mlp(
        self, x: Array, att: Array, layer: LayerWeights, matmul: Callable = operator.matmul
    ) -> Array:
        """Second, row-wise half of a block: output projection, residual, MLP, residual -> ``[T, D]``."""
        out = matmul(att, layer.out)  # [T, H*hd] @ [H*hd, D] -> [T, D]
        if layer.out_bias is not None:
            out += layer.out_bias
        out += x
        x = out  # [T, D] residual
        a = matmul(self._norm(x, layer.mlp_norm, layer.mlp_norm_bias), layer.mlp_in)  # [T, 2Di | Di]
        if layer.mlp_in_bias is not None:
            a += layer.mlp_in_bias
        di = self.config.intermediate_size
        a = swiglu(a[:, :di], a[:, di:], self._xp) if self._is_llama else gelu_tanh(a, self._xp)  # [T, Di]
        out = matmul(a, layer.mlp_out)  # [T, Di] @ [Di, D] -> [T, D]
        if layer.mlp_out_bias is not None:
            out += layer.mlp_out_bias
        out += x
        return out  # [T, D] residual

    def _norm(self, x: Array, weight: Array, bias: Array | None) -> Array:
        if self._is_llama:
            return rms_norm(x, weight, self.config.norm_eps, self._xp)
        return layer_norm(x, weight, bias, self.config.norm_eps, self._xp)

    def _embed(self, idx: Array, start: int, t: int) -> Array:
        xp, w = self._xp, self.weights
        if w.embed is not None:
            x = xp.take(w.embed, idx, axis=0)  # [T, D]
        else:
            x = xp.permute_dims(xp.take(w.head, idx, axis=1), (1, 0))  # [D, T] -> [T, D]
        return x if w.positions is None else x + w.positions[start : start + t]  # [T, D]

    def _fused_path(self) -> Any:
        """The fused-CUDA-kernel view of this model (:mod:`loom.llm.gpu_decode`), or None."""
        if self._fused is None:
            self._fused = fused_model(self) or False
        return self._fused or None

    # --------------------------------------------------------------- generation
    def generate(
        self,
        ids: Sequence[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        *,
        stop_ids: Sequence[int] | None = None,
        **options: Any,
    ) -> list[int]:
        """Generate up to ``max_new_tokens`` ids after ``ids`` using the KV cache; returns the new ids only.

        Parameters
        ----------
        ids : sequence of int
            ``[T]`` prompt ids.
        max_new_tokens : int
            Upper bound on new tokens.
        sampling : SamplingParams, optional
            How tokens are chosen (default: greedy).
        stop_ids : sequence of int, optional
            Generation stops after emitting one of these (included). Default: the config's
            EOS ids; ``[]`` never stops early.
        **options
            Fields of :class:`~loom.llm.sampling.SamplingParams` overriding ``sampling``
            (``temperature=``, ``top_k=``, ``top_p=``, ``seed=``).
        """
        return list(self.stream(ids, max_new_tokens, sampling, stop_ids=stop_ids, **options))

    def stream(
        self,
        ids: Sequence[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        *,
        stop_ids: Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
        **options: Any,
    ) -> Iterator[int]:
        """Like :meth:`generate`, but yields each new id as soon as it is chosen.

        ``rng`` draws the samples instead of a generator seeded with ``sampling.seed``.
        """
        params = (sampling or SamplingParams()).with_options(**options)
        return stream_tokens(self, ids, max_new_tokens, Sampler(params, rng), stop_ids)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Transformer({c.model_type}, layers={c.num_layers}, hidden={c.hidden_size}, "
            f"vocab={c.vocab_size}, backend={self.backend.name})"
        )
