"""Decoding on a GPU: fused CUDA kernels replayed as one CUDA graph per token.

Three parts:

* :class:`FusedModel` – a :class:`~loom.llm.model.Transformer` as the fused
  kernels of :mod:`loom.backend.cuda_llm` see it: sizes, the weight matrices in
  the decode storage format (float32, or float16/bfloat16 copies for a model
  loaded with that ``dtype``), and the prefill entry :meth:`FusedModel.forward`
  (:mod:`loom.llm.gpu_prefill`). Built once per model, on first GPU use.
* :class:`FusedDecoder` – one sequence's decode step: embedding, per layer
  five kernels (norm + QKV + RoPE + cache write, attention, output projection,
  norm + gate/up + SiLU·mul, down projection), final norm + LM head + argmax.
  The step reads token and position from a device buffer, is recorded once as
  a CUDA graph and replayed per token; greedy decoding reads back one 8-byte
  argmax key per token, sampling draws on the device with
  :func:`~loom.llm.sampling.sample_array` and reads back one index.
* :class:`GraphDecoder` – the generic fallback for what the kernels do not
  cover (float64 models, odd head sizes): the array-API decode step of
  :mod:`loom.ops.transformer`, recorded as a graph the same way.

:func:`build_decoder` picks one of them (or ``None`` on NumPy, where the model
decodes eagerly).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from loom.backend.cuda_llm import LLMKernels, argmax_from_key, fused_support, llm_kernels, vector_width
from loom.errors import ShapeError
from loom.llm.sampling import Sampler
from loom.ops.transformer import decode_attention

if TYPE_CHECKING:
    from loom.llm.model import RunState, Transformer

__all__ = ["FusedDecoder", "FusedModel", "GraphDecoder", "build_decoder", "fused_model"]

Array = Any
_REDUCED = ("float16", "bfloat16")


def _to_format(raw: Any, matrix: Array, fmt: str, columns: int) -> Array:
    """``matrix`` ``[K, N]`` float32 in storage format ``fmt``, zero-padded to ``columns`` columns."""
    if matrix.shape[1] != columns:
        padded = raw.zeros((matrix.shape[0], columns), dtype=raw.float32)
        padded[:, : matrix.shape[1]] = matrix
        matrix = padded
    if fmt == "float32":
        return raw.ascontiguousarray(matrix)
    if fmt == "float16":
        return raw.ascontiguousarray(matrix.astype(raw.float16))
    bits = raw.ascontiguousarray(matrix, dtype=raw.float32).view(raw.uint32)
    bits = bits + (raw.uint32(0x7FFF) + ((bits >> raw.uint32(16)) & raw.uint32(1)))  # round to nearest even
    return (bits >> raw.uint32(16)).astype(raw.uint16)


@dataclass
class _LayerMatrices:
    qkv: Array
    out: Array
    mlp_in: Array
    mlp_out: Array


class FusedModel:
    """A Transformer as the fused CUDA kernels run it (see the module docstring).

    Parameters
    ----------
    model : Transformer
        A float32 model whose sizes :func:`~loom.backend.cuda_llm.fused_support` accepts.
    kernels : LLMKernels
        The kernels (the device's, or an emulation in tests).
    """

    def __init__(self, model: Transformer, kernels: LLMKernels) -> None:
        cfg, w = model.config, model.weights
        raw = model.backend.raw
        self.model = model
        self.kernels = kernels
        self.format = model.weight_dtype if model.weight_dtype in _REDUCED else "float32"
        self.heads = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        self.hidden, self.intermediate, self.vocab = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
        self.llama = model._is_llama
        self.rotary = cfg.rope.rotary_dim if (self.llama and cfg.rope is not None) else 0
        self.norm_kind = 0 if self.llama else 1
        self.eps = cfg.norm_eps
        self.scales = list(model._scales)
        fmt = self.format
        self.layers = [
            _LayerMatrices(
                qkv=_to_format(raw, layer.qkv, fmt, layer.qkv.shape[1]),
                out=_to_format(raw, layer.out, fmt, layer.out.shape[1]),
                mlp_in=_to_format(raw, layer.mlp_in, fmt, layer.mlp_in.shape[1]),
                mlp_out=_to_format(raw, layer.mlp_out, fmt, layer.mlp_out.shape[1]),
            )
            for layer in w.layers
        ]
        vw = vector_width(fmt)
        self.head = _to_format(raw, w.head, fmt, -(-self.vocab // vw) * vw)  # [D, V'] padded to whole loads

    def norm(self, weight: Array, bias: Array | None) -> tuple[Array, Array | None, float, int]:
        return weight, bias, self.eps, self.norm_kind

    def rope(self, positions: int) -> tuple[Array, Array, int] | None:
        """``(cos, sin, R)`` tables covering ``positions`` positions, or None without RoPE."""
        if not self.rotary:
            return None
        cos, sin = self.model.rope.upto(positions)
        return cos, sin, self.rotary

    def forward(self, idx: Array, state: RunState | None, start: int, last_only: bool) -> Array:
        """Prefill (or any multi-token forward) with cuBLAS GEMMs and fused kernels: ``[T', V]`` logits."""
        from loom.llm.gpu_prefill import fused_forward

        return fused_forward(self, idx, state, start, last_only)


def fused_model(model: Transformer, kernels: LLMKernels | None = None) -> FusedModel | None:
    """The fused-kernel view of ``model``, or ``None`` where the kernels do not apply.

    They apply to float32 compute on a CuPy backend (or with explicit ``kernels``)
    for the sizes :func:`~loom.backend.cuda_llm.fused_support` accepts; setting
    ``LOOM_FUSED_KERNELS=0`` turns them off (the generic path runs instead).
    """
    if kernels is None:
        if not model.backend.is_gpu or os.environ.get("LOOM_FUSED_KERNELS", "1") == "0":
            return None
        kernels = llm_kernels(model.backend)
    if kernels is None or np.dtype(model.dtype) != np.float32:
        return None
    cfg = model.config
    reason = fused_support(
        hidden=cfg.hidden_size,
        intermediate=cfg.intermediate_size,
        heads=cfg.num_heads,
        kv_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        rotary_dim=cfg.rope.rotary_dim if (model._is_llama and cfg.rope is not None) else 0,
    )
    return None if reason is not None else FusedModel(model, kernels)


class FusedDecoder:
    """Decode steps of one sequence with the fused kernels, replayed from one CUDA graph.

    Parameters
    ----------
    fused : FusedModel
        The model.
    state : RunState
        Its KV cache, already holding the prompt; :meth:`step` appends one token.
    sampling : Sampler
        Greedy or sampled choice of the next token.
    """

    def __init__(self, fused: FusedModel, state: RunState, sampling: Sampler | None = None) -> None:
        model = fused.model
        be, raw = model.backend, model.backend.raw
        h, _, hd = fused.heads
        if state.pos >= state.max_seq_len:
            raise ShapeError(f"KV cache holds {state.max_seq_len} positions and is full")
        self.fused, self.state = fused, state
        self.sampling = sampling if sampling is not None else Sampler()
        self.backend = be
        splits = min(32, max(1, math.ceil(state.max_seq_len / 128)))
        self.io = raw.zeros(2, dtype=raw.int32)  # token, position
        self.x = raw.zeros(fused.hidden, dtype=raw.float32)  # [D] residual stream
        self.q = raw.zeros(h * hd, dtype=raw.float32)  # [H hd]
        self.part_o = raw.zeros((h, splits, hd), dtype=raw.float32)
        self.part_ml = raw.zeros((h, splits, 2), dtype=raw.float32)
        self.act = raw.zeros(fused.intermediate, dtype=raw.float32)  # [Di]
        self.logits = raw.zeros(fused.vocab, dtype=raw.float32)  # [V]
        self.best = raw.zeros(1, dtype=raw.uint64)  # argmax key of the step
        self._rope = fused.rope(state.max_seq_len)
        fused.kernels.set_step(self.io, 0, state.pos)  # warm-up and capture write the slot the next step overwrites
        be.synchronize()  # buffers, inputs and the prefilled cache are ready before the graph's own stream reads them
        self.graph = be.capture(self._run)

    def _run(self) -> None:
        """The whole decode step: fixed kernels over fixed buffers (recorded as the graph)."""
        f, k, w = self.fused, self.fused.kernels, self.fused.model.weights
        fmt, heads = f.format, f.heads
        tied = w.embed is None
        k.embed(w.head if tied else w.embed, tied, w.positions, self.io, self.x, self.best)
        for i, (layer, m) in enumerate(zip(w.layers, f.layers, strict=True)):
            keys, values = self.state.keys[i], self.state.values[i]  # [Hk, S_max, hd]
            norm = f.norm(layer.attn_norm, layer.attn_norm_bias)
            k.qkv_rope(fmt, self.x, norm, m.qkv, layer.qkv_bias, heads, self._rope, self.io, self.q, keys, values)
            k.decode_attention(self.q, keys, values, self.io, heads, f.scales[i], self.part_o, self.part_ml)
            k.attn_out(fmt, self.part_o, self.part_ml, m.out, layer.out_bias, self.x)
            norm = f.norm(layer.mlp_norm, layer.mlp_norm_bias)
            k.mlp_in(fmt, self.x, norm, m.mlp_in, layer.mlp_in_bias, f.llama, self.act)
            k.mlp_out(fmt, self.act, m.mlp_out, layer.mlp_out_bias, self.x)
        k.lm_head(fmt, self.x, f.norm(w.final_norm, w.final_norm_bias), f.head, self.logits, self.best)

    def step(self, token: int) -> int:
        """Feed ``token`` at the state's position; return the next token id (one device-to-host read)."""
        pos = self.state.pos
        if pos >= self.state.max_seq_len:
            raise ShapeError(f"KV cache holds {self.state.max_seq_len} positions and is full")
        be, kernels = self.backend, self.fused.kernels

        def prepare() -> None:
            kernels.set_step(self.io, token, pos)

        if self.sampling.greedy:

            def fetch() -> int:
                return argmax_from_key(be.fetch(self.best)[0])
        else:

            def fetch() -> int:
                return int(be.fetch(self.sampling.pick(self.logits, be.xp)))

        if self.graph is not None:
            nxt = self.graph.run(prepare, fetch)
        else:
            prepare()
            self._run()
            nxt = fetch()
        self.state.pos = pos + 1
        return nxt


class GraphDecoder:
    """Decode steps of the generic array-API step replayed from one recorded device graph.

    The fallback of :class:`FusedDecoder` on GPUs: the step (token and position
    read from device buffers, the cache scored in full with a visibility mask)
    is recorded once per generation and replayed for each new token.
    """

    def __init__(self, model: Transformer, state: RunState, sampling: Sampler | None = None) -> None:
        be = model.backend
        self.model, self.state = model, state
        self.sampling = sampling if sampling is not None else Sampler()
        self.token = be.zeros((1,), np.int64)
        self.pos = be.zeros((1,), np.int64)
        self.positions = be.raw.arange(state.max_seq_len)  # [S_max]
        self.logits: Array = None
        self.next_token: Array = None
        self.pos.fill(state.pos)  # warm-up writes the slot the first real step overwrites
        if model._is_llama:
            model.rope.upto(state.max_seq_len)
        be.synchronize()  # the graph's stream does not wait for the default stream
        self.graph = be.capture(self.run_step)

    def run_step(self) -> None:
        """One decode step reading token/position from device buffers (graph-capturable)."""
        model = self.model
        xp, w, state = model._xp, model.weights, self.state
        token, pos = self.token, self.pos  # [1] int64 device buffers
        if w.embed is not None:
            x = xp.take(w.embed, token, axis=0)  # [1, D]
        else:
            x = xp.permute_dims(xp.take(w.head, token, axis=1), (1, 0))  # [D, 1] -> [1, D]
        if w.positions is not None:
            x = x + xp.take(w.positions, pos, axis=0)  # [1, D]
        cos = sin = None
        if model._is_llama:
            cos = xp.take(model.rope.cos, pos, axis=0)  # [1, R]
            sin = xp.take(model.rope.sin, pos, axis=0)  # [1, R]
        visible = self.positions <= pos  # [S_max]

        def attend(i: int, q: Array, k: Array, v: Array) -> Array:
            keys, values = state.keys[i], state.values[i]  # [Hk, S_max, hd] views
            keys[:, pos, :] = k  # [Hk, 1, hd] written at the device-side position
            values[:, pos, :] = v
            return decode_attention(q, keys, values, visible, model._scales[i], xp)

        with model._quiet_overflow():
            for i, layer in enumerate(w.layers):
                x = model._block(x, layer, i, cos, sin, attend, model.backend.row_matmul)  # [1, D]
        x = model._norm(x, w.final_norm, w.final_norm_bias)  # [1, D]
        self.logits = model.backend.row_matmul(x, w.head)[0]  # [V]
        self.next_token = xp.argmax(self.logits)  # [] on device

    def step(self, token: int) -> int:
        """Feed ``token`` at the state's position; return the next token id."""
        pos = self.state.pos
        be = self.model.backend

        def prepare() -> None:
            self.token.fill(token)
            self.pos.fill(pos)

        def fetch() -> int:
            chosen = self.next_token if self.sampling.greedy else self.sampling.pick(self.logits, be.xp)
            return int(be.fetch(chosen))

        if self.graph is not None:
            nxt = self.graph.run(prepare, fetch)
        else:
            prepare()
            self.run_step()
            nxt = fetch()
        self.state.pos = pos + 1
        return nxt


def build_decoder(model: Transformer, state: RunState, sampling: Sampler) -> FusedDecoder | GraphDecoder | None:
    """The fastest decoder for ``model`` here: fused kernels, else a recorded generic step, else None (eager)."""
    fused = model._fused_path()
    if fused is not None:
        return FusedDecoder(fused, state, sampling)
    if not model.backend.is_gpu:
        return None
    decoder = GraphDecoder(model, state, sampling)
    return decoder if decoder.graph is not None else None
