"""LOOM multi-head attention: projections, rotate-half RoPE, causal softmax attention, GQA.

Layouts are LOOM's: projections are ``x @ W + b`` with ``W`` stored ``[in][out]``.
Every sample of a batch is its own sequence (positions ``0 .. S-1``). The
forward follows Go LOOM step by step (``nn/attention.go``): RoPE with
frequencies ``1 / theta^(2i/hd)`` and angles computed in float64, then
rounded to float32; for an odd head size the last component is not rotated;
scores are ``(q . k) * (1/sqrt(hd))``; the causal mask writes ``-1e9``; a row
softmax. Query head ``h`` reads key/value head ``h // (H / Hk)`` (consecutive
query heads share a KV head, like Hugging Face ``repeat_kv``); this is done by
folding the ``H / Hk`` query heads of a group into the query axis, so no K/V
copy is made. The backward pass is the exact derivative through the
projections, RoPE, the softmax and V. RoPE is :mod:`loom.ops.rope`'s and the
softmax :mod:`loom.ops.softmax`'s, the same ones ``loom.llm`` runs.

Shapes: ``B`` batch, ``S`` sequence, ``d`` model width, ``H`` query heads,
``Hk`` KV heads, ``g = H / Hk``, ``hd`` head size.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from loom.backend import device_constant
from loom.backend.fast_paths import matrix_transpose, permute_dims, reshape
from loom.ops.rope import rope_apply, rope_apply_backward, rope_frequencies, rope_tables_host
from loom.ops.softmax import softmax_backward, softmax_forward

__all__ = [
    "AttentionCache",
    "mha_backward",
    "mha_forward",
]

MASK_VALUE = -1e9


@functools.lru_cache(maxsize=64)
def _rope_apply_tables_np(
    seq: int, head_dim: int, theta: float, num_heads: int, num_kv_heads: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full-width tables for :func:`~loom.ops.rope.rope_apply` on ``[H + Hk]`` heads (queries pre-scaled)."""
    cos, sin = rope_tables_host(rope_frequencies(theta, head_dim), seq)  # [S, 2 * (hd // 2)], angles in float64
    tail = head_dim - cos.shape[1]  # 1 for odd head sizes: cos 1, sin 0 (not rotated)
    cos_full = np.concatenate([cos, np.ones((seq, tail), np.float32)], axis=1)  # [S, hd]
    sin_full = np.concatenate([sin, np.zeros((seq, tail), np.float32)], axis=1)  # [S, hd]
    head_scale = np.array([scale] * num_heads + [1.0] * num_kv_heads, dtype=np.float32)[:, None, None]  # [H+Hk,1,1]
    return cos_full[None] * head_scale, sin_full[None] * head_scale  # [H+Hk, S, hd]


@functools.lru_cache(maxsize=64)
def _causal_mask_np(seq: int, groups: int) -> np.ndarray:
    query_pos = np.arange(groups * seq) % seq  # [g*S]
    return np.arange(seq)[None, :] <= query_pos[:, None]  # [g*S, S]


@dataclass
class AttentionCache:
    """What :func:`mha_backward` needs from the forward pass."""

    x: Any  # [B*S, d]
    w_qkv: Any  # [d, (H+2Hk)*hd] the projection weights used
    q: Any  # [B, Hk, g*S, hd] rotated queries, pre-multiplied by 1/sqrt(hd)
    k: Any  # [B, Hk, S, hd] rotated keys
    v: Any  # [B, Hk, S, hd]
    probs: Any  # [B, Hk, g*S, S]
    context: Any  # [B*S, H*hd]
    cos: Any  # [H+Hk, S, hd]
    sin: Any  # [H+Hk, S, hd]
    shape: tuple[int, int, int, int, int]  # (B, S, H, Hk, hd)


def mha_forward(
    x: Any,
    wq: Any,
    bq: Any,
    wk: Any,
    bk: Any,
    wv: Any,
    bv: Any,
    wo: Any,
    bo: Any,
    num_heads: int,
    num_kv_heads: int,
    causal: bool,
    rope_theta: float,
    xp: Any,
) -> tuple[Any, AttentionCache]:
    """Forward pass of LOOM multi-head attention.

    Parameters
    ----------
    x : array, shape [B, S, d]
        ``B`` independent sequences.
    wq : array, shape [d, H*hd]
    bq : array, shape [H*hd]
    wk, wv : arrays, shape [d, Hk*hd]
    bk, bv : arrays, shape [Hk*hd]
    wo : array, shape [H*hd, d]
    bo : array, shape [d]
    num_heads, num_kv_heads : int
        ``H`` and ``Hk`` (``H`` a multiple of ``Hk``).
    causal : bool
        Mask keys after the query position with ``-1e9``.
    rope_theta : float
        RoPE base.

    Returns
    -------
    y : array, shape [B, S, d]
    cache : AttentionCache

    Notes
    -----
    The score scale ``1/sqrt(hd)`` is folded into the queries' RoPE tables
    (Go multiplies the dot product; the two differ by float32 rounding only).

    Examples
    --------
    >>> import numpy as np
    >>> d = 4; w = np.eye(d, dtype=np.float32); b = np.zeros(d, np.float32)
    >>> x = np.ones((1, 2, d), np.float32)
    >>> mha_forward(x, w, b, w, b, w, b, w, b, 2, 2, True, 1e6, np)[0].shape
    (1, 2, 4)
    """
    batch, seq, d_model = x.shape
    heads, kv_heads = num_heads, num_kv_heads
    head_dim = wq.shape[1] // heads
    groups = heads // kv_heads
    rotated = heads + kv_heads
    scale = float(np.float32(1.0 / math.sqrt(head_dim)))
    key = ("loom_mha_rope", seq, head_dim, float(rope_theta), heads, kv_heads, scale)
    cos = device_constant(xp, (*key, "cos"), lambda: _rope_apply_tables_np(*key[1:])[0])  # [H+Hk, S, hd]
    sin = device_constant(xp, (*key, "sin"), lambda: _rope_apply_tables_np(*key[1:])[1])  # [H+Hk, S, hd]
    x2 = reshape(x, (batch * seq, d_model), xp)  # [B*S, d]
    w_qkv = xp.concat([wq, wk, wv], axis=1)  # [d, (H+2Hk)*hd]
    qkv = x2 @ w_qkv + xp.concat([bq, bk, bv])  # [B*S, d] @ [d, (H+2Hk)*hd] -> [B*S, (H+2Hk)*hd]
    qkv = permute_dims(
        reshape(qkv, (batch, seq, rotated + kv_heads, head_dim), xp), (0, 2, 1, 3), xp
    )  # [B, H+2Hk, S, hd]
    qk = rope_apply(qkv[:, :rotated, ...], cos, sin, xp)  # [B, H+Hk, S, hd]; the score scale on the queries
    q = reshape(qk[:, :heads, ...], (batch, kv_heads, groups * seq, head_dim), xp)  # [B, Hk, g*S, hd]
    k = qk[:, heads:, ...]  # [B, Hk, S, hd]
    v = qkv[:, rotated:, ...]  # [B, Hk, S, hd]
    scores = q @ matrix_transpose(k, xp)  # [B, Hk, g*S, hd] @ [B, Hk, hd, S] -> [B, Hk, g*S, S]
    if causal:
        mask = device_constant(xp, ("loom_causal_mask", seq, groups), lambda: _causal_mask_np(seq, groups))  # [g*S, S]
        dtype = scores.dtype
        fill = device_constant(xp, ("loom_mask_value", dtype), lambda: xp.asarray(MASK_VALUE, dtype=dtype))
        scores = xp.where(mask, scores, fill)
    probs = softmax_forward(scores, 1.0, xp)  # [B, Hk, g*S, S]
    context = probs @ v  # [B, Hk, g*S, S] @ [B, Hk, S, hd] -> [B, Hk, g*S, hd]
    context = permute_dims(reshape(context, (batch, heads, seq, head_dim), xp), (0, 2, 1, 3), xp)  # [B, S, H, hd]
    context = reshape(context, (batch * seq, heads * head_dim), xp)  # [B*S, H*hd]
    y = context @ wo + bo  # [B*S, H*hd] @ [H*hd, d] -> [B*S, d]
    cache = AttentionCache(x2, w_qkv, q, k, v, probs, context, cos, sin, (batch, seq, heads, kv_heads, head_dim))
    return reshape(y, (batch, seq, d_model), xp), cache


def mha_backward(grad_y: Any, cache: AttentionCache, wo: Any, xp: Any) -> tuple[Any, dict[str, Any]]:
    """Exact backward pass of :func:`mha_forward`.

    Parameters
    ----------
    grad_y : array, shape [B, S, d]
    cache : AttentionCache
        From the forward pass (holds the Q/K/V weights it used).
    wo : array, shape [H*hd, d]
        The output weights the forward pass used.

    Returns
    -------
    grad_x : array, shape [B, S, d]
    grads : dict
        ``q_weights``, ``q_bias``, ``k_weights``, ``k_bias``, ``v_weights``,
        ``v_bias``, ``output_weight``, ``output_bias`` with the shapes of the
        arguments of :func:`mha_forward`.
    """
    batch, seq, heads, kv_heads, head_dim = cache.shape
    groups = heads // kv_heads
    g2 = reshape(grad_y, (batch * seq, -1), xp)  # [B*S, d]
    grads = {
        "output_weight": cache.context.T @ g2,  # [H*hd, B*S] @ [B*S, d] -> [H*hd, d]
        "output_bias": xp.sum(g2, axis=0),
    }
    grad_ctx = reshape(g2 @ wo.T, (batch, seq, heads, head_dim), xp)  # [B, S, H, hd]
    grad_ctx = reshape(permute_dims(grad_ctx, (0, 2, 1, 3), xp), (batch, kv_heads, groups * seq, head_dim), xp)
    probs = cache.probs  # [B, Hk, g*S, S]
    grad_probs = grad_ctx @ matrix_transpose(cache.v, xp)  # [B, Hk, g*S, S]
    grad_v = matrix_transpose(probs, xp) @ grad_ctx  # [B, Hk, S, g*S] @ [B, Hk, g*S, hd] -> [B, Hk, S, hd]
    grad_scores = softmax_backward(grad_probs, probs, 1.0, xp)  # masked entries: probability 0, gradient 0
    grad_q = reshape(grad_scores @ cache.k, (batch, heads, seq, head_dim), xp)  # [B, H, S, hd]
    grad_k = matrix_transpose(grad_scores, xp) @ cache.q  # [B, Hk, S, hd]
    grad_qk = xp.concat([grad_q, grad_k], axis=1)  # [B, H+Hk, S, hd]
    grad_qk = rope_apply_backward(grad_qk, cache.cos, cache.sin, xp)
    grad_qkv = permute_dims(xp.concat([grad_qk, grad_v], axis=1), (0, 2, 1, 3), xp)  # [B, S, H+2Hk, hd]
    grad_qkv = reshape(grad_qkv, (batch * seq, -1), xp)  # [B*S, (H+2Hk)*hd]
    grad_w = cache.x.T @ grad_qkv  # [d, B*S] @ [B*S, (H+2Hk)*hd] -> [d, (H+2Hk)*hd]
    grad_b = xp.sum(grad_qkv, axis=0)
    q_cols, kv_cols = heads * head_dim, kv_heads * head_dim
    for name, lo, hi in (("q", 0, q_cols), ("k", q_cols, q_cols + kv_cols), ("v", q_cols + kv_cols, None)):
        grads[f"{name}_weights"] = grad_w[:, lo:hi]
        grads[f"{name}_bias"] = grad_b[lo:hi]
    grad_x = grad_qkv @ cache.w_qkv.T  # [B*S, (H+2Hk)*hd] @ [(H+2Hk)*hd, d] -> [B*S, d]
    return reshape(grad_x, (batch, seq, -1), xp), grads
