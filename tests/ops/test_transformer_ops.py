"""loom.ops.transformer (the LLM's attention, norms, RoPE, SwiGLU) on the namespace under test vs NumPy formulas."""

from __future__ import annotations

import math

import numpy as np

import loom
from loom.ops.softmax import softmax_forward
from loom.ops.transformer import (
    causal_attention,
    gelu_tanh,
    layer_norm,
    rms_norm,
    rope_apply,
    rope_tables,
    swiglu,
)
from tests.ops.helpers import put


def softmax(x, xp):
    return softmax_forward(x, 1.0, xp)


RNG = np.random.default_rng(0)


def close(got, want, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(loom.to_numpy(got), want, rtol=1e-5, atol=atol)


def test_norms_and_activations(xp) -> None:
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    w = RNG.standard_normal(8).astype(np.float32)
    b = RNG.standard_normal(8).astype(np.float32)
    X, W, B = put(xp, x), put(xp, w), put(xp, b)
    close(rms_norm(X, W, 1e-5, xp), w * x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5))
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    close(layer_norm(X, W, B, 1e-5, xp), (x - mu) / np.sqrt(var + 1e-5) * w + b)
    close(swiglu(X, W, xp), x / (1 + np.exp(-x)) * w)
    close(gelu_tanh(X, xp), 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))))
    p = loom.to_numpy(softmax(X, xp))
    close(p, np.exp(x) / np.exp(x).sum(-1, keepdims=True))
    big = put(xp, np.array([[1000.0, 1000.0, -np.inf]], np.float32))
    close(softmax(big, xp), [[0.5, 0.5, 0.0]])
    with np.errstate(over="ignore"):  # exp(1e4) overflows to inf: silu(-1e4) is the correct -0
        extreme = swiglu(put(xp, np.array([-1e4, 1e4], np.float32)), put(xp, np.ones(2, np.float32)), xp)
    close(extreme, [0.0, 1e4])


def _rope_reference(x: np.ndarray, pos: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    angles = pos[:, None] * inv_freq[None, :]  # [T, R/2]
    cos = np.concatenate([np.cos(angles)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, -1)[:, None, :]
    r = 2 * inv_freq.size
    rot, rest = x[..., :r], x[..., r:]
    half = r // 2
    rotated = np.concatenate([-rot[..., half:], rot[..., :half]], -1)
    return np.concatenate([rot * cos + rotated * sin, rest], -1)


def test_rope_matches_rotate_half_formula(xp) -> None:
    inv_freq = (1.0 / 10000 ** (np.arange(0, 8, 2) / 8)).astype(np.float32)
    cos, sin = rope_tables(inv_freq, 12, 1.0, xp)
    x = RNG.standard_normal((5, 3, 8)).astype(np.float32)
    got = rope_apply(put(xp, x), cos[7:12, :], sin[7:12, :], xp)
    close(got, _rope_reference(x, np.arange(7, 12, dtype=np.float64), inv_freq))
    # partial rotary: 4 of 8 components rotated, the rest passed through
    cos4, sin4 = rope_tables(inv_freq[:2], 12, 1.0, xp)
    got = rope_apply(put(xp, x), cos4[:5, :], sin4[:5, :], xp)
    close(got, _rope_reference(x, np.arange(5, dtype=np.float64), inv_freq[:2]))
    identity = rope_apply(
        put(xp, x),
        put(xp, np.ones((5, 8), np.float32)),
        put(xp, np.zeros((5, 8), np.float32)),
        xp,
    )
    close(identity, x)


def _attention_reference(q, k, v, start, scale):
    t, h, hd = q.shape
    hk, s, _ = k.shape
    out = np.zeros((t, h, hd))
    for head in range(h):
        kv = head // (h // hk)
        scores = q[:, head] @ k[kv].T * scale  # [T, S]
        scores[np.arange(s)[None, :] > (start + np.arange(t))[:, None]] = -np.inf
        p = np.exp(scores - scores.max(-1, keepdims=True))
        out[:, head] = (p / p.sum(-1, keepdims=True)) @ v[kv]
    return out.reshape(t, h * hd)


def test_causal_gqa_attention(xp) -> None:
    q = RNG.standard_normal((4, 6, 8)).astype(np.float32)
    k = RNG.standard_normal((2, 7, 8)).astype(np.float32)
    v = RNG.standard_normal((2, 7, 8)).astype(np.float32)
    got = causal_attention(put(xp, q), put(xp, k), put(xp, v), 3, 0.3, xp)
    close(got, _attention_reference(q, k, v, 3, 0.3))
    one = causal_attention(put(xp, q[-1:]), put(xp, k), put(xp, v), 6, 0.3, xp)
    close(one, _attention_reference(q[-1:], k, v, 6, 0.3))


def test_blocked_prefill_attention_equals_one_block(xp) -> None:
    q = RNG.standard_normal((7, 4, 8)).astype(np.float32)
    k = RNG.standard_normal((2, 9, 8)).astype(np.float32)
    v = RNG.standard_normal((2, 9, 8)).astype(np.float32)
    args = (put(xp, q), put(xp, k), put(xp, v), 2, 0.35, xp)
    want = _attention_reference(q, k, v, 2, 0.35)
    for block in (1, 3, 64):
        close(causal_attention(*args, block=block), want)
