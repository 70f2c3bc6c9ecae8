"""Decoder-only transformer inference: full forward, KV-cache prefill/decode, generation.

Three parts in the llama2.c manner:

* :class:`~loom.llm.config.TransformerConfig` – the numbers;
* :class:`~loom.llm.weights.TransformerWeights` – the parameters, fused and
  stored ``[in, out]`` so a decode step is one contiguous pass over them;
* :class:`RunState` – the preallocated KV cache and the current position.

:class:`Transformer` runs one code path for both families: LLaMA (RMSNorm,
RoPE, GQA, SwiGLU) and GPT-2 (LayerNorm with bias, learned positions, tanh
GELU). The math is written against the backend's array-API namespace
(resolved once, at construction) with the pure ops of
:mod:`loom.ops.transformer`, so it runs unchanged on NumPy and CuPy. Only the
chosen token id (or, when sampling, the last logits row) leaves the device.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from loom.backend import Backend, to_numpy
from loom.errors import ShapeError
from loom.llm.config import TransformerConfig
from loom.llm.gpu_decode import GraphDecoder, Sampling, build_decoder, fused_model
from loom.llm.parallel_prefill import (
    RowParallel,
    balance_blocks,
    prefill_workers,
    row_parallel,
    single_threaded_blas,
    split_rows,
)
from loom.llm.rope import rope_inv_freq
from loom.llm.sampling import sample
from loom.llm.weights import LayerWeights, TransformerWeights
from loom.ops.transformer import (
    causal_attention,
    causal_attention_block,
    gelu_tanh,
    layer_norm,
    rms_norm,
    rope_apply,
    rope_tables,
    swiglu,
)

__all__ = ["GraphDecoder", "RunState", "Transformer"]

Array = Any


class RunState:
    """Preallocated key/value cache of one sequence (llama2.c ``RunState``).

    Parameters
    ----------
    config : TransformerConfig
        Model sizes.
    max_seq_len : int
        Capacity in tokens (prompt + generated).
    backend : Backend
        Where the cache lives.
    dtype : dtype
        Cache dtype (the model's compute dtype).

    Attributes
    ----------
    keys, values : array
        ``[L, Hk, max_seq_len, hd]``; position ``p`` of layer ``l`` is ``[l, :, p, :]``.
    pos : int
        Number of positions already filled.
    """

    def __init__(self, config: TransformerConfig, max_seq_len: int, backend: Backend, dtype: Any = np.float32) -> None:
        shape = (config.num_layers, config.num_kv_heads, max_seq_len, config.head_dim)
        self.keys = backend.zeros(shape, dtype)
        self.values = backend.zeros(shape, dtype)
        self.max_seq_len = max_seq_len
        self.pos = 0

    def reset(self) -> None:
        """Forget the cached sequence (the buffers are reused)."""
        self.pos = 0


class Transformer:
    """A loaded decoder-only language model.

    Build with :func:`loom.llm.load_transformer`, or directly from a config and
    weights.

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
        Storage precision of the weights: the compute dtype's name, or
        ``"float16"`` / ``"bfloat16"`` for a model loaded with that ``dtype``
        (weights rounded to it; GPU decoding then streams 16-bit copies).
    allow_tf32 : bool
        Let GPU prefill matrix products use TF32 tensor cores (faster, about
        1e-3 relative error). False by default.

    Examples
    --------
    >>> from loom.llm import load_transformer
    >>> model = load_transformer("fixtures/llm/tiny-llama")  # doctest: +SKIP
    >>> model.logits([46, 208, 75]).shape  # doctest: +SKIP
    (3, 512)
    >>> state = model.new_state(8)  # doctest: +SKIP
    >>> first = model.forward([46, 208], state, last_only=True)  # prefill  # doctest: +SKIP
    >>> model.generate([46, 208, 75], 4, stop_ids=[])  # greedy  # doctest: +SKIP
    [71, 71, 71, 71]
    """

    def __init__(
        self, config: TransformerConfig, weights: TransformerWeights, backend: Backend, dtype: Any = np.float32
    ) -> None:
        self.config = config
        self.weights = weights
        self.backend = backend
        self.dtype = dtype
        self._xp = backend.xp
        self.weight_dtype = np.dtype(dtype).name
        self.allow_tf32 = False
        self._fused: Any = None  # loom.llm.gpu_decode.FusedModel (False: not applicable), built on first use
        self._is_llama = config.architecture == "llama"
        if config.rope is not None:
            self._inv_freq, self._rope_scaling = rope_inv_freq(config.rope)
        limited = not self._is_llama or (config.rope is not None and config.rope.rope_type == "dynamic")
        self.max_seq_len: int | None = config.max_position_embeddings if limited else None
        self._cos: Array = None
        self._sin: Array = None
        # SwiGLU's exp(-gate) may overflow to inf (giving the correct silu = -0); NumPy
        # would warn about it on every call, so its overflow warnings are off in forward().
        errstate = getattr(backend.raw, "errstate", None)
        self._quiet_overflow = (lambda: errstate(over="ignore")) if errstate is not None else contextlib.nullcontext
        # prefill attention in query blocks: skips masked work on the CPU; on a GPU the
        # kernel-launch count matters more, so one block covers a whole prompt there
        self._attention_block = 4096 if backend.is_gpu else 64
        # NumPy prefills with at least this many tokens per core run row-parallel on all
        # cores (loom.llm.parallel_prefill; $LOOM_PREFILL_THREADS=1 turns it off). With fewer,
        # multi-threaded BLAS on all rows wins: on 2 cores (SmolLM2-135M) the row split lost
        # at 128 tokens, broke even near 192 and gained 5% at 256, 8% at 384 tokens.
        self.parallel_min_rows = 96
        self._scales = [
            1.0 / math.sqrt(config.head_dim) / ((i + 1) if config.attn_scale_by_layer else 1)
            for i in range(config.num_layers)
        ]

    # ------------------------------------------------------------------ forward
    def logits(self, ids: Sequence[int]) -> Array:
        """Full forward pass without a cache.

        Parameters
        ----------
        ids : sequence of int
            ``[T]`` token ids (positions ``0 .. T-1``).

        Returns
        -------
        array
            ``[T, vocab_size]`` logits on the model's backend.
        """
        return self.forward(ids)

    def new_state(self, max_seq_len: int) -> RunState:
        """A fresh :class:`RunState` holding up to ``max_seq_len`` positions."""
        self._check_length(max_seq_len)
        return RunState(self.config, max_seq_len, self.backend, self.dtype)

    def forward(self, ids: Sequence[int], state: RunState | None = None, *, last_only: bool = False) -> Array:
        """Run ``T`` tokens through the model, appending them to ``state``'s cache.

        Parameters
        ----------
        ids : sequence of int
            ``[T]`` new token ids, at positions ``state.pos .. state.pos + T - 1``
            (``0 .. T-1`` without a state).
        state : RunState, optional
            KV cache to read and extend (prefill: many ids; decode: one id).
        last_only : bool
            Compute the LM head only for the last position.

        Returns
        -------
        array
            ``[T, V]`` logits, or ``[1, V]`` with ``last_only``.
        """
        w = self.weights
        idx = self._token_ids(ids)
        t = len(ids)
        start = 0 if state is None else state.pos
        if state is not None and start + t > state.max_seq_len:
            raise ShapeError(f"KV cache holds {state.max_seq_len} positions; got {start} cached + {t} new")
        self._check_length(start + t)
        fused = self._fused_path()
        if fused is not None:  # CUDA: cuBLAS GEMMs + fused kernels (loom.llm.gpu_prefill)
            return fused.forward(idx, state, start, last_only)
        x = self._embed(idx, start, t)  # [T, D]
        cos = sin = None
        xp, block = self._xp, self._attention_block
        if self._is_llama:
            cos, sin = self._rope(start + t)
            cos, sin = cos[start : start + t], sin[start : start + t]  # [T, R]
            if t > 1:  # repeated for every rotated head once, not broadcast in every layer
                heads = (t, self.config.num_heads + self.config.num_kv_heads, cos.shape[-1])
                cos = xp.asarray(xp.broadcast_to(cos[:, None, :], heads), copy=True)  # [T, H+Hk, R]
                sin = xp.asarray(xp.broadcast_to(sin[:, None, :], heads), copy=True)  # [T, H+Hk, R]

        def attend(i: int, q: Array, k: Array, v: Array) -> Array:
            if state is not None:
                state.keys[i, :, start : start + t, :] = k
                state.values[i, :, start : start + t, :] = v
                k = state.keys[i, :, : start + t, :]  # [Hk, S, hd] view
                v = state.values[i, :, : start + t, :]  # [Hk, S, hd] view
            # q: all T new rows, or only the last one (last layer of a last_only pass)
            return causal_attention(q, k, v, k.shape[1] - q.shape[0], self._scales[i], xp, block=block)

        workers = self._parallel_workers(t)
        if workers > 1:
            pool = row_parallel(workers)
            # one BLAS thread per worker, the LM head included: a multi-threaded BLAS call
            # would leave OpenBLAS's threads spinning on the cores the next prefill needs
            with single_threaded_blas():
                x = self._layers_parallel(x, state, start, cos, sin, pool, last_only)  # [T', D]
                if state is not None:
                    state.pos = start + t
                return self._head(x[-1:] if last_only else x, pool)  # [T', V]
        last = len(w.layers) - 1 if last_only else -1  # that layer's output is needed for one row
        with self._quiet_overflow():
            for i, layer in enumerate(w.layers):
                x = self._block(x, layer, i, cos, sin, attend, last_row=i == last)  # [T, D] or [1, D]
        if state is not None:
            state.pos = start + t
        return self._head(x[-1:] if last_only else x)  # [T', V]

    def _fused_path(self) -> Any:
        """The fused-CUDA-kernel view of this model (:mod:`loom.llm.gpu_decode`), or None."""
        if self._fused is None:
            self._fused = fused_model(self) or False
        return self._fused or None

    def _head(self, x: Array, pool: RowParallel | None = None) -> Array:
        """Final norm and LM head of ``[T', D]`` rows -> ``[T', V]`` logits (row-parallel on ``pool``)."""
        w = self.weights
        if pool is None:
            return self._norm(x, w.final_norm, w.final_norm_bias) @ w.head  # [T', D] @ [D, V]
        logits = self._xp.empty((x.shape[0], w.head.shape[1]), dtype=x.dtype)  # [T', V]
        if x.shape[0] < pool.workers:  # last row only: each worker reads a share of the head's columns
            h = self._norm(x, w.final_norm, w.final_norm_bias)  # [T', D]
            cols = split_rows(w.head.shape[1], pool.workers)

            def task(i: int) -> None:
                c0, c1 = cols[i]
                logits[:, c0:c1] = h @ w.head[:, c0:c1]
        else:
            rows = split_rows(x.shape[0], pool.workers)

            def task(i: int) -> None:
                r0, r1 = rows[i]
                logits[r0:r1] = self._norm(x[r0:r1], w.final_norm, w.final_norm_bias) @ w.head

        pool.run(task)
        return logits

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

        With ``last_row`` only the last row's output ``[1, D]`` is computed (keys
        and values still for all ``T``): the last layer of a ``last_only`` pass.
        """
        q, k, v = self._attention_in(x, layer, cos, sin, matmul)
        if last_row:
            q, x = q[-1:], x[-1:]  # [1, H, hd], [1, D]
        return self._attention_out_mlp(x, attend(i, q, k, v), layer, matmul)  # [T, D] or [1, D]

    def _attention_in(
        self,
        x: Array,
        layer: LayerWeights,
        cos: Array,
        sin: Array,
        matmul: Callable[[Array, Array], Array] = operator.matmul,
    ) -> tuple[Array, Array, Array]:
        """First part of a block (row-wise): norm, QKV projection, RoPE.

        Returns ``q`` ``[T, H, hd]`` and ``k``, ``v`` ``[Hk, T, hd]`` of the ``[T, D]`` rows ``x``.
        """
        xp, cfg = self._xp, self.config
        t = x.shape[0]
        h_q, h_kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        h = self._norm(x, layer.attn_norm, layer.attn_norm_bias)  # [T, D]
        qkv = matmul(h, layer.qkv)  # [T, D] @ [D, (H+2Hk)hd] -> [T, (H+2Hk)hd]
        if layer.qkv_bias is not None:
            qkv += layer.qkv_bias
        qk = xp.reshape(qkv[:, : (h_q + h_kv) * hd], (t, h_q + h_kv, hd))  # [T, H+Hk, hd]
        if cos is not None:
            qk = rope_apply(qk, cos, sin, xp)  # [T, H+Hk, hd]
        q = qk[:, :h_q]  # [T, H, hd]
        k = xp.permute_dims(qk[:, h_q:], (1, 0, 2))  # [Hk, T, hd]
        v = xp.permute_dims(xp.reshape(qkv[:, (h_q + h_kv) * hd :], (t, h_kv, hd)), (1, 0, 2))  # [Hk, T, hd]
        return q, k, v

    def _attention_out_mlp(
        self, x: Array, att: Array, layer: LayerWeights, matmul: Callable[[Array, Array], Array] = operator.matmul
    ) -> Array:
        """Rest of a block (row-wise): output projection, residual, MLP, residual -> ``[T, D]``."""
        xp = self._xp
        out = matmul(att, layer.out)  # [T, H*hd] @ [H*hd, D] -> [T, D]
        if layer.out_bias is not None:
            out += layer.out_bias
        out += x
        x = out  # [T, D] residual
        h = self._norm(x, layer.mlp_norm, layer.mlp_norm_bias)  # [T, D]
        a = matmul(h, layer.mlp_in)  # [T, D] @ [D, 2Di | Di] -> [T, 2Di | Di]
        if layer.mlp_in_bias is not None:
            a += layer.mlp_in_bias
        if self._is_llama:
            di = self.config.intermediate_size
            a = swiglu(a[:, :di], a[:, di:], xp)  # [T, Di]
        else:
            a = gelu_tanh(a, xp)  # [T, Di]
        out = matmul(a, layer.mlp_out)  # [T, Di] @ [Di, D] -> [T, D]
        if layer.mlp_out_bias is not None:
            out += layer.mlp_out_bias
        out += x
        return out  # [T, D] residual

    def _parallel_workers(self, t: int) -> int:
        """Workers of a row-parallel prefill of ``t`` tokens (1: run serially)."""
        if self.backend.name != "numpy" or t < 2 * self.parallel_min_rows:  # decode steps stop here
            return 1
        workers = prefill_workers()
        return workers if workers > 1 and t >= workers * self.parallel_min_rows else 1

    def _layers_parallel(
        self,
        x: Array,
        state: RunState | None,
        start: int,
        cos: Array,
        sin: Array,
        pool: RowParallel,
        last_only: bool = False,
    ) -> Array:
        """All decoder blocks over ``[T, D]`` rows ``x`` (owned, updated in place), row-parallel.

        Per layer: phase A (norm, QKV, RoPE, K/V into the cache) on contiguous
        row ranges; phase B (causal attention) on query blocks dealt by cost;
        phase C (out projection, MLP) on the same row ranges as phase A, fused
        with the next layer's phase A. Each phase ends when every worker is done.
        With ``last_only`` the last layer after its phase A runs for the last row
        only, in the calling thread, and ``[1, D]`` is returned.
        """
        xp, cfg = self._xp, self.config
        t = x.shape[0]
        h_q, h_kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        layers = self.weights.layers
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
        blocks = balance_blocks(t, start, self._attention_block, pool.workers)
        quiet = self._quiet_overflow

        def phase_a(i: int, r0: int, r1: int) -> None:
            c = s = None
            if cos is not None:
                c, s = cos[r0:r1], sin[r0:r1]
            q, k, v = self._attention_in(x[r0:r1], layers[i], c, s)
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
                            q_all[b0:b1], keys[j, :, :visible], values[j, :, :visible], start + b0, self._scales[i], xp
                        )  # [B, H*hd]

            return task

        def mlp_then_next(i: int) -> Callable[[int], None]:
            def task(w: int) -> None:
                r0, r1 = rows[w]
                with quiet():
                    x[r0:r1] = self._attention_out_mlp(x[r0:r1], att[r0:r1], layers[i])
                    if i + 1 < len(layers):
                        phase_a(i + 1, r0, r1)

            return task

        pool.run(first)
        for i in range(len(layers) - 1 if last_only else len(layers)):
            pool.run(attention(i))
            pool.run(mlp_then_next(i))
        if not last_only:
            return x
        i = len(layers) - 1  # its keys/values are cached; the same ops as _block(last_row=True)
        j, s = (i if state is not None else 0), key_rows + t
        with quiet():
            a = causal_attention(q_all[-1:], keys[j, :, :s], values[j, :, :s], s - 1, self._scales[i], xp)
            return self._attention_out_mlp(x[-1:], a, layers[i])  # [1, D]

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
        if w.positions is not None:
            x = x + w.positions[start : start + t]  # [T, D]
        return x

    def _rope(self, n: int) -> tuple[Array, Array]:
        if self._cos is None or self._cos.shape[0] < n:
            size = max(n, 256, 2 * (0 if self._cos is None else self._cos.shape[0]))
            if self.max_seq_len is not None:
                size = min(size, self.max_seq_len)
            self._cos, self._sin = rope_tables(self._inv_freq, size, self._rope_scaling, self._xp)
            if self._cos.dtype != self.dtype:
                self._cos = self._xp.astype(self._cos, self.dtype)
                self._sin = self._xp.astype(self._sin, self.dtype)
        return self._cos, self._sin

    def _token_ids(self, ids: Sequence[int]) -> Array:
        array = np.asarray(ids)
        if array.ndim != 1 or array.size == 0:
            raise ShapeError(f"token ids: expected a non-empty 1-D sequence, got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ShapeError(f"token ids: expected integers, got dtype {array.dtype}")
        bad = (array < 0) | (array >= self.config.vocab_size)
        if bad.any():
            raise ShapeError(
                f"token ids: {int(array[bad][0])} is out of range; expected 0 <= id < "
                f"vocab_size ({self.config.vocab_size})"
            )
        return self.backend.asarray(array, dtype=np.int64)

    def _check_length(self, n: int) -> None:
        if self.max_seq_len is not None and n > self.max_seq_len:
            raise ShapeError(
                f"sequence of {n} tokens exceeds the model's context of {self.max_seq_len} "
                "positions (max_position_embeddings / n_positions)"
            )

    # --------------------------------------------------------------- generation
    def generate(
        self,
        ids: Sequence[int],
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Generate up to ``max_new_tokens`` ids after ``ids`` using the KV cache.

        Parameters
        ----------
        ids : sequence of int
            ``[T]`` prompt ids.
        max_new_tokens : int
            Upper bound on new tokens.
        temperature : float
            0 (default) is greedy argmax; > 0 samples.
        top_k, top_p : optional
            Sampling filters (see :mod:`loom.llm.sampling`).
        seed : int, optional
            Seed of the sampling RNG (reproducible output).
        stop_ids : sequence of int, optional
            Generation stops after emitting one of these (the stop id is
            included). Default: the config's EOS ids; ``[]`` never stops early.

        Returns
        -------
        list of int
            The new token ids only.
        """
        return list(
            self.stream(
                ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop_ids=stop_ids
            )
        )

    def stream(
        self,
        ids: Sequence[int],
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop_ids: Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
    ) -> Iterator[int]:
        """Like :meth:`generate`, but yields each new id as soon as it is chosen.

        ``rng`` overrides ``seed`` with an existing generator.
        """
        stops = set(self.config.eos_token_ids if stop_ids is None else stop_ids)
        rng = rng if rng is not None else np.random.default_rng(seed)
        ids = list(ids)
        if max_new_tokens <= 0:
            self._token_ids(ids)
            return
        state = self.new_state(len(ids) + max_new_tokens)
        logits = self.forward(ids, state, last_only=True)[0]  # prefill -> [V]
        token = self._choose(logits, temperature, top_k, top_p, rng)
        sampling = Sampling(temperature, top_k, top_p, rng)
        decoder = build_decoder(self, state, sampling) if max_new_tokens > 1 else None
        for step in range(max_new_tokens):
            yield token
            if token in stops or step == max_new_tokens - 1:
                return
            if decoder is not None:  # GPU: one recorded graph per token (loom.llm.gpu_decode)
                token = decoder.step(token)
            else:
                logits = self.forward([token], state, last_only=True)[0]  # decode -> [V]
                token = self._choose(logits, temperature, top_k, top_p, rng)

    def _choose(
        self, logits: Array, temperature: float, top_k: int | None, top_p: float | None, rng: np.random.Generator
    ) -> int:
        if temperature <= 0:
            return int(self._xp.argmax(logits))
        return sample(to_numpy(logits), rng, temperature=temperature, top_k=top_k, top_p=top_p)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Transformer({c.model_type}, layers={c.num_layers}, hidden={c.hidden_size}, "
            f"vocab={c.vocab_size}, backend={self.backend.name})"
        )
