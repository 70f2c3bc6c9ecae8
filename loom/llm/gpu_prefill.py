"""Prefill on a GPU: cuBLAS matrix products and fused kernels, no per-token Python.

Per decoder layer: RMSNorm/LayerNorm of all rows (one kernel), the fused QKV
GEMM, bias + RoPE + the cache write of keys and values (one kernel), causal
attention of all queries over the cache (one kernel), the output GEMM
accumulating into the residual (``beta = 1``), norm, the gate/up GEMM, SiLU·mul
(or GELU, one kernel) and the down GEMM accumulating into the residual: nine
launches per layer whatever the prompt length. GEMMs run in plain float32
unless the model's ``allow_tf32`` is set (TF32 tensor cores, about 1e-3
relative error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.llm.gpu_decode import FusedModel
    from loom.llm.model import RunState

__all__ = ["fused_forward"]

Array = Any


def fused_forward(fused: FusedModel, idx: Array, state: RunState | None, start: int, last_only: bool) -> Array:
    """Logits of ``T`` tokens at positions ``start..`` (``[T, V]``, or ``[1, V]`` with ``last_only``).

    Parameters
    ----------
    fused : FusedModel
        The model.
    idx : array
        ``[T]`` int64 token ids on the device.
    state : RunState or None
        KV cache to extend (None: a scratch cache for this call).
    start : int
        Position of the first token (``state.pos``, or 0).
    last_only : bool
        Run the LM head for the last position only.
    """
    model, k = fused.model, fused.kernels
    raw, w = model.backend.raw, model.weights
    t = int(idx.shape[0])
    h, hk, hd = fused.heads
    d, di = fused.hidden, fused.intermediate
    tf32 = bool(getattr(model, "allow_tf32", False))
    x = raw.ascontiguousarray(model._embed(idx, start, t), dtype=raw.float32)  # [T, D] residual, owned
    rope = fused.rope(start + t)
    if state is None:  # one scratch layer of keys/values, reused: each layer's attention ends before the next
        scratch = raw.empty((2, hk, t, hd), dtype=raw.float32)
    normed = raw.empty((t, d), dtype=raw.float32)  # [T, D]
    qkv = raw.empty((t, (h + 2 * hk) * hd), dtype=raw.float32)  # [T, (H+2Hk) hd]
    q = raw.empty((t, h * hd), dtype=raw.float32)  # [T, H hd]
    att = raw.empty((t, h * hd), dtype=raw.float32)  # [T, H hd]
    mlp_in = raw.empty((t, w.layers[0].mlp_in.shape[1]), dtype=raw.float32)  # [T, 2Di | Di]
    act = raw.empty((t, di), dtype=raw.float32)  # [T, Di]
    for i, layer in enumerate(w.layers):
        keys, values = (state.keys[i], state.values[i]) if state is not None else (scratch[0], scratch[1])
        k.norm_rows(x, layer.attn_norm, layer.attn_norm_bias, fused.eps, fused.norm_kind, normed)
        k.gemm(normed, layer.qkv, qkv, tf32=tf32)
        k.rope_scatter(qkv, layer.qkv_bias, fused.heads, rope, start, q, keys, values)
        k.prefill_attention(q, keys, values, start, fused.heads, fused.scales[i], att)
        k.gemm(att, layer.out, x, beta=1.0, tf32=tf32)
        if layer.out_bias is not None:
            x += layer.out_bias
        k.norm_rows(x, layer.mlp_norm, layer.mlp_norm_bias, fused.eps, fused.norm_kind, normed)
        k.gemm(normed, layer.mlp_in, mlp_in, tf32=tf32)
        k.gated_activation(mlp_in, layer.mlp_in_bias, fused.llama, act)
        k.gemm(act, layer.mlp_out, x, beta=1.0, tf32=tf32)
        if layer.mlp_out_bias is not None:
            x += layer.mlp_out_bias
    if state is not None:
        state.pos = start + t
    rows = x[-1:] if last_only else x  # [T', D]
    final = raw.empty(rows.shape, dtype=raw.float32)
    k.norm_rows(rows, w.final_norm, w.final_norm_bias, fused.eps, fused.norm_kind, final)
    logits = raw.empty((rows.shape[0], fused.vocab), dtype=raw.float32)  # [T', V]
    return k.gemm(final, w.head, logits, tf32=tf32)
