"""Transformer-inference ops of :mod:`loom.llm`: attention over a KV cache, SwiGLU, tanh GELU.

Every function takes the array-API namespace ``xp`` (``backend.xp``) and reads no global
state, so the same code runs on NumPy and CuPy (and under ``array_api_strict``). Shapes follow
the picoGPT convention: ``T`` tokens in this call, ``S`` tokens attended to (cache included),
``H`` query heads, ``Hk`` key/value heads, ``hd`` head size.

The pieces ``loom.nn`` shares are defined once and re-exported here under the names the LLM
code uses: the norms (:func:`~loom.ops.norms.rms_norm`, :func:`~loom.ops.norms.layer_norm`),
RoPE (:func:`~loom.ops.rope.rope_tables`, :func:`~loom.ops.rope.rope_apply`) and the softmax
(:mod:`loom.ops.softmax`). These are inference-only building blocks; nothing trains through
them, so they have no ``*_backward`` twins.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loom.backend import device_constant
from loom.ops.norms import layer_norm, rms_norm
from loom.ops.rope import rope_apply, rope_tables
from loom.ops.softmax import softmax_unnormalized

__all__ = [
    "causal_attention",
    "causal_attention_block",
    "decode_attention",
    "gelu_tanh",
    "layer_norm",
    "rms_norm",
    "rope_apply",
    "rope_tables",
    "swiglu",
]

Array = Any
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def swiglu(gate: Array, up: Array, xp: Any) -> Array:
    """SwiGLU activation ``silu(gate) * up = gate / (1 + exp(-gate)) * up`` (LLaMA MLP).

    Written as torch computes ``silu`` (then times ``up``); for ``gate < -88`` the float32
    ``exp`` overflows to ``inf`` and ``silu`` is the correct ``-0`` (NumPy callers may
    silence the overflow warning, see :class:`loom.llm.model.Transformer`).

    Parameters
    ----------
    gate, up : array
        ``[..., Di]`` halves of the fused gate/up projection.
    xp : module
        Array namespace.

    Returns
    -------
    array
        ``[..., Di]``.

    Examples
    --------
    >>> import numpy as np
    >>> float(swiglu(np.array(1.0), np.array(2.0), np).round(6))
    1.462117
    """
    denominator = xp.exp(-gate)  # [..., Di]
    denominator += 1.0
    out = gate / denominator  # silu(gate)
    out *= up
    return out


def gelu_tanh(x: Array, xp: Any) -> Array:
    """GPT-2 ``gelu_new``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Examples
    --------
    >>> import numpy as np
    >>> float(gelu_tanh(np.array(1.0), np).round(6))
    0.841192
    """
    return 0.5 * x * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))))


def causal_attention(
    q: Array,
    keys: Array,
    values: Array,
    start: int,
    scale: float,
    xp: Any,
    block: int = 64,
) -> Array:
    """Causal grouped-query attention of ``T`` new queries over ``S = start + T`` keys.

    Query head ``h`` reads key/value head ``h // (H // Hk)`` (Hugging Face
    ``repeat_kv`` order); nothing is repeated in memory. One query (decoding)
    takes a short path without a mask; many queries (prefill) are processed
    in blocks of ``block`` rows that only score the keys they can see.

    Parameters
    ----------
    q : array
        ``[T, H, hd]`` queries of the tokens at positions ``start .. start+T-1``.
    keys, values : array
        ``[Hk, S, hd]`` keys and values of positions ``0 .. S-1`` (e.g. a view of
        a KV cache); ``S`` must equal ``start + T``.
    start : int
        Position of the first query.
    scale : float
        Multiplier of the scores (``1/sqrt(hd)``).
    xp : module
        Array namespace.
    block : int
        Query rows per block in the many-query case.

    Returns
    -------
    array
        ``[T, H * hd]`` attention output, heads concatenated.
    """
    t, h, hd = q.shape
    hk = keys.shape[0]
    if t == 1:
        qg = xp.reshape(q, (hk, h // hk, hd)) * scale  # [Hk, G, hd]
        out = _softmax_matmul(qg @ xp.permute_dims(keys, (0, 2, 1)), values, xp)  # [Hk, G, hd]
        return xp.reshape(out, (1, h * hd))  # [1, H*hd]
    outs = []
    for b0 in range(0, t, block):
        b1 = min(t, b0 + block)
        visible = start + b1  # keys this block can attend to
        outs.append(
            causal_attention_block(q[b0:b1, ...], keys[:, :visible, :], values[:, :visible, :], start + b0, scale, xp)
        )
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)  # [T, H*hd]


def decode_attention(q: Array, keys: Array, values: Array, visible: Array, scale: float, xp: Any) -> Array:
    """Attention of one new query over a whole preallocated KV cache, masked by ``visible``.

    Fixed shapes whatever the position (for device-graph replay): the cache is
    scored in full and positions not yet written are masked out.

    Parameters
    ----------
    q : array
        ``[1, H, hd]`` query.
    keys, values : array
        ``[Hk, S_max, hd]`` cache of one layer.
    visible : array
        ``[S_max]`` booleans, true for positions ``<=`` the query's.
    scale : float
        Multiplier of the scores.
    xp : module
        Array namespace.

    Returns
    -------
    array
        ``[1, H * hd]``.
    """
    _, h, hd = q.shape
    hk = keys.shape[0]
    qg = xp.reshape(q, (hk, h // hk, 1, hd)) * scale  # [Hk, G, 1, hd]
    # broadcast-and-sum instead of matmul: no BLAS call, so it can be recorded in a device graph
    scores = xp.sum(qg * keys[:, None, :, :], axis=-1)  # [Hk, G, S_max]
    scores = xp.where(visible, scores, -xp.inf)  # [Hk, G, S_max]
    weights = softmax_unnormalized(scores, xp, overwrite=True)  # [Hk, G, S_max]
    out = xp.sum(weights[..., None] * values[:, None, :, :], axis=-2)  # [Hk, G, hd]
    out = out / xp.sum(weights, axis=-1, keepdims=True)  # [Hk, G, hd]
    return xp.reshape(out, (1, h * hd))  # [1, H*hd]


def causal_attention_block(q: Array, keys: Array, values: Array, start: int, scale: float, xp: Any) -> Array:
    """Masked attention of ``[T, H, hd]`` queries at ``start..`` over ``[Hk, start+T, hd]`` keys/values.

    One query block of :func:`causal_attention` (returns ``[T, H*hd]``); a
    row-parallel prefill calls it directly for the blocks each worker takes.
    """
    t, h, hd = q.shape
    hk, s, _ = keys.shape
    g = h // hk
    qg = xp.permute_dims(xp.reshape(q * scale, (t, hk, g, hd)), (1, 2, 0, 3))  # [Hk, G, T, hd]
    qg = xp.reshape(qg, (hk, g * t, hd))  # [Hk, G*T, hd]
    scores = xp.reshape(qg @ xp.permute_dims(keys, (0, 2, 1)), (hk, g, t, s))  # [Hk, G, T, S]
    # only the last T columns can lie in a query's future: mask that [T, T] corner in place
    scores[..., s - t :] += _future_mask(t, scores.dtype, xp)
    out = _softmax_matmul(xp.reshape(scores, (hk, g * t, s)), values, xp)  # [Hk, G*T, hd]
    out = xp.reshape(out, (hk, g, t, hd))  # [Hk, G, T, hd]
    return xp.reshape(xp.permute_dims(out, (2, 0, 1, 3)), (t, h * hd))  # [T, H*hd]


def _future_mask(t: int, dtype: Any, xp: Any) -> Array:
    """Additive causal mask ``[T, T]``: ``-inf`` above the diagonal, 0 elsewhere (one per device; never written)."""

    def make() -> Array:
        future = np.arange(t)[None, :] > np.arange(t)[:, None]  # [T, T]
        return xp.asarray(np.where(future, -np.inf, 0.0), dtype=dtype)

    return device_constant(xp, ("loom_future_mask", t, str(dtype)), make)


def _softmax_matmul(scores: Array, values: Array, xp: Any) -> Array:
    """``softmax(scores) @ values`` for ``[Hk, R, S]`` scores we own (overwritten).

    The normalisation divides the ``[Hk, R, hd]`` result instead of the wider
    ``[Hk, R, S]`` probabilities.
    """
    weights = softmax_unnormalized(scores, xp, overwrite=True)  # [Hk, R, S]
    return (weights @ values) / xp.sum(weights, axis=-1, keepdims=True)  # [Hk, R, hd]
