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
projections, RoPE, the softmax and V.

Shapes: ``B`` batch, ``S`` sequence, ``d`` model width, ``H`` query heads,
``Hk`` KV heads, ``g = H / Hk``, ``hd`` head size.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AttentionCache",
    "mha_backward",
    "mha_forward",
    "rope_backward",
    "rope_forward",
    "rope_tables",
]

MASK_VALUE = -1e9


@functools.lru_cache(maxsize=64)
def _rope_tables_np(seq: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    half = head_dim // 2
    freq = 1.0 / np.power(float(theta), 2.0 * np.arange(half, dtype=np.float64) / head_dim)  # [half] float64
    angles = np.arange(seq, dtype=np.float64)[:, None] * freq[None, :]  # [S, half] float64
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _causal_mask_np(seq: int, groups: int) -> np.ndarray:
    query_pos = np.arange(groups * seq) % seq  # [g*S]
    return np.arange(seq)[None, :] <= query_pos[:, None]  # [g*S, S]


def rope_tables(seq: int, head_dim: int, theta: float, xp: Any) -> tuple[Any, Any]:
    """LOOM's RoPE cos/sin tables for positions ``0 .. seq-1``.

    Parameters
    ----------
    seq, head_dim : int
        Sequence length and head size.
    theta : float
        RoPE base (LOOM: 1e6).

    Returns
    -------
    cos, sin : arrays, shape [seq, head_dim // 2]
        ``float32(cos(pos / theta^(2i/hd)))`` with the angle in float64, as Go.
    """
    cos, sin = _rope_tables_np(int(seq), int(head_dim), float(theta))
    return xp.asarray(cos), xp.asarray(sin)


def rope_forward(v: Any, cos: Any, sin: Any, xp: Any) -> Any:
    """Rotate-half RoPE on the last axis (odd sizes: the last component passes through).

    Parameters
    ----------
    v : array, shape [..., S, hd]
    cos, sin : arrays, shape [S, hd // 2]

    Returns
    -------
    array, shape [..., S, hd]
        ``v * cos + rotate_half(v) * sin``.
    """
    half = cos.shape[-1]
    if half == 0:
        return v
    v1, v2 = v[..., :half], v[..., half : 2 * half]  # [..., S, half] each
    parts = [v1 * cos - v2 * sin, v2 * cos + v1 * sin]
    if v.shape[-1] > 2 * half:
        parts.append(v[..., 2 * half :])
    return xp.concat(parts, axis=-1)


def rope_backward(grad: Any, cos: Any, sin: Any, xp: Any) -> Any:
    """Gradient of :func:`rope_forward` w.r.t. its input (the transposed rotation)."""
    half = cos.shape[-1]
    if half == 0:
        return grad
    g1, g2 = grad[..., :half], grad[..., half : 2 * half]  # [..., S, half] each
    parts = [g1 * cos + g2 * sin, g2 * cos - g1 * sin]
    if grad.shape[-1] > 2 * half:
        parts.append(grad[..., 2 * half :])
    return xp.concat(parts, axis=-1)


@dataclass
class AttentionCache:
    """What :func:`mha_backward` needs from the forward pass."""

    x: Any  # [B*S, d]
    q: Any  # [B, Hk, g*S, hd] rotated queries
    k: Any  # [B, Hk, S, hd] rotated keys
    v: Any  # [B, Hk, S, hd]
    probs: Any  # [B, Hk, g*S, S]
    context: Any  # [B*S, H*hd]
    cos: Any
    sin: Any
    scale: float
    shape: tuple[int, int, int, int, int]  # (B, S, H, Hk, hd)


def _to_heads(t: Any, batch: int, seq: int, heads: int, head_dim: int, xp: Any) -> Any:
    # [B*S, heads*hd] -> [B, heads, S, hd]
    return xp.permute_dims(t.reshape(batch, seq, heads, head_dim), (0, 2, 1, 3))


def _from_heads(t: Any, batch: int, seq: int, heads: int, head_dim: int, xp: Any) -> Any:
    # [B, heads, S, hd] (or any reshape-compatible grouping) -> [B*S, heads*hd]
    return xp.permute_dims(t.reshape(batch, heads, seq, head_dim), (0, 2, 1, 3)).reshape(batch * seq, heads * head_dim)


def mha_forward(
    x: Any, wq: Any, bq: Any, wk: Any, bk: Any, wv: Any, bv: Any, wo: Any, bo: Any,
    num_heads: int, num_kv_heads: int, causal: bool, rope_theta: float, xp: Any,
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

    Examples
    --------
    >>> import numpy as np
    >>> d = 4; w = np.eye(d, dtype=np.float32); b = np.zeros(d, np.float32)
    >>> x = np.ones((1, 2, d), np.float32)
    >>> mha_forward(x, w, b, w, b, w, b, w, b, 2, 2, True, 1e6, np)[0].shape
    (1, 2, 4)
    """
    batch, seq, d_model = x.shape
    head_dim = wq.shape[1] // num_heads
    groups = num_heads // num_kv_heads
    x2 = x.reshape(batch * seq, d_model)  # [B*S, d]
    cos, sin = rope_tables(seq, head_dim, rope_theta, xp)  # [S, hd/2]
    q = _to_heads(x2 @ wq + bq, batch, seq, num_heads, head_dim, xp)  # [B*S, d] -> [B, H, S, hd]
    k = _to_heads(x2 @ wk + bk, batch, seq, num_kv_heads, head_dim, xp)  # -> [B, Hk, S, hd]
    v = _to_heads(x2 @ wv + bv, batch, seq, num_kv_heads, head_dim, xp)  # -> [B, Hk, S, hd]
    q = rope_forward(q, cos, sin, xp).reshape(batch, num_kv_heads, groups * seq, head_dim)  # [B, Hk, g*S, hd]
    k = rope_forward(k, cos, sin, xp)  # [B, Hk, S, hd]
    scale = float(np.float32(1.0 / math.sqrt(head_dim)))
    scores = (q @ xp.matrix_transpose(k)) * scale  # [B, Hk, g*S, hd] @ [B, Hk, hd, S] -> [B, Hk, g*S, S]
    if causal:
        mask = xp.asarray(_causal_mask_np(seq, groups))  # [g*S, S]
        scores = xp.where(mask, scores, xp.asarray(MASK_VALUE, dtype=scores.dtype))
    exp = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))  # [B, Hk, g*S, S]
    probs = exp / xp.sum(exp, axis=-1, keepdims=True)
    context = _from_heads(probs @ v, batch, seq, num_heads, head_dim, xp)  # [B, Hk, g*S, hd] -> [B*S, H*hd]
    y = context @ wo + bo  # [B*S, H*hd] @ [H*hd, d] -> [B*S, d]
    cache = AttentionCache(x2, q, k, v, probs, context, cos, sin, scale, (batch, seq, num_heads, num_kv_heads, head_dim))
    return y.reshape(batch, seq, -1), cache


def mha_backward(
    grad_y: Any, cache: AttentionCache, wq: Any, wk: Any, wv: Any, wo: Any, xp: Any
) -> tuple[Any, dict[str, Any]]:
    """Exact backward pass of :func:`mha_forward`.

    Parameters
    ----------
    grad_y : array, shape [B, S, d]
    cache : AttentionCache
        From the forward pass.
    wq, wk, wv, wo : arrays
        The weights the forward pass used.

    Returns
    -------
    grad_x : array, shape [B, S, d]
    grads : dict
        ``q_weights``, ``q_bias``, ``k_weights``, ``k_bias``, ``v_weights``,
        ``v_bias``, ``output_weight``, ``output_bias`` with the shapes of the
        arguments of :func:`mha_forward`.
    """
    batch, seq, num_heads, num_kv_heads, head_dim = cache.shape
    groups = num_heads // num_kv_heads
    g2 = grad_y.reshape(batch * seq, -1)  # [B*S, d]
    grads = {
        "output_weight": cache.context.T @ g2,  # [H*hd, B*S] @ [B*S, d] -> [H*hd, d]
        "output_bias": xp.sum(g2, axis=0),
    }
    grad_ctx = g2 @ wo.T  # [B*S, H*hd]
    grad_ctx = _to_heads(grad_ctx, batch, seq, num_heads, head_dim, xp)  # [B, H, S, hd]
    grad_ctx = grad_ctx.reshape(batch, num_kv_heads, groups * seq, head_dim)  # [B, Hk, g*S, hd]
    probs = cache.probs
    grad_probs = grad_ctx @ xp.matrix_transpose(cache.v)  # [B, Hk, g*S, S]
    grad_v = xp.matrix_transpose(probs) @ grad_ctx  # [B, Hk, S, g*S] @ [B, Hk, g*S, hd] -> [B, Hk, S, hd]
    grad_scores = probs * (grad_probs - xp.sum(grad_probs * probs, axis=-1, keepdims=True))
    grad_scores = grad_scores * cache.scale  # masked entries have probs 0, hence gradient 0
    grad_q = grad_scores @ cache.k  # [B, Hk, g*S, hd]
    grad_k = xp.matrix_transpose(grad_scores) @ cache.q  # [B, Hk, S, hd]
    grad_q = rope_backward(grad_q.reshape(batch, num_heads, seq, head_dim), cache.cos, cache.sin, xp)
    grad_k = rope_backward(grad_k, cache.cos, cache.sin, xp)
    grad_x = None
    x_t = cache.x.T  # [d, B*S]
    for name, grad_heads, heads, weight in (
        ("q", grad_q, num_heads, wq), ("k", grad_k, num_kv_heads, wk), ("v", grad_v, num_kv_heads, wv),
    ):
        grad_proj = _from_heads(grad_heads, batch, seq, heads, head_dim, xp)  # [B*S, heads*hd]
        grads[f"{name}_weights"] = x_t @ grad_proj  # [d, heads*hd]
        grads[f"{name}_bias"] = xp.sum(grad_proj, axis=0)
        part = grad_proj @ weight.T  # [B*S, d]
        grad_x = part if grad_x is None else grad_x + part
    return grad_x.reshape(batch, seq, -1), grads
