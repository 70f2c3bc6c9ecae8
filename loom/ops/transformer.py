"""Pure transformer-inference ops: arrays in, arrays out, namespace passed in.

Every function takes the array-API namespace ``xp`` (``backend.xp``) as its
last argument and reads no global state, so the same code runs on NumPy and
CuPy. Callers resolve the namespace once per forward pass. Shapes follow the
picoGPT convention: ``T`` tokens in this call, ``S`` tokens attended to (cache
included), ``H`` query heads, ``Hk`` key/value heads, ``hd`` head size.

These are inference-only building blocks used by :mod:`loom.llm`; they have no
``*_backward`` twins because nothing trains through them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loom.backend import device_constant

__all__ = [
    "causal_attention",
    "causal_attention_block",
    "decode_attention",
    "gelu_tanh",
    "layer_norm",
    "rms_norm",
    "rope_apply",
    "rope_tables",
    "silu",
    "softmax",
    "swiglu",
]

Array = Any
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def rms_norm(x: Array, weight: Array, eps: float, xp: Any) -> Array:
    """Root-mean-square norm over the last axis (LLaMA ``RMSNorm``).

    Parameters
    ----------
    x : array
        ``[..., D]``.
    weight : array
        ``[D]`` gain.
    eps : float
        Added to the mean square.
    xp : module
        Array namespace.

    Returns
    -------
    array
        ``[..., D]``: ``x * (1 / sqrt(mean(x**2) + eps)) * weight`` (Hugging Face's order).

    Examples
    --------
    >>> import numpy as np
    >>> rms_norm(np.array([[3.0, 4.0]]), np.ones(2), 0.0, np).round(4).tolist()
    [[0.8485, 1.1314]]
    """
    sum_square = xp.sum(x * x, axis=-1, keepdims=True)  # [..., 1] (vecdot is a cuBLAS call on CuPy: not in graphs)
    out = x * (1.0 / xp.sqrt(sum_square * (1.0 / x.shape[-1]) + eps))  # [..., D]
    out *= weight
    return out


def layer_norm(x: Array, weight: Array, bias: Array, eps: float, xp: Any) -> Array:
    """LayerNorm over the last axis with gain and bias (GPT-2 ``ln_*``).

    Parameters
    ----------
    x : array
        ``[..., D]``.
    weight, bias : array
        ``[D]``.
    eps : float
        Added to the (biased) variance.
    xp : module
        Array namespace.

    Returns
    -------
    array
        ``[..., D]``.
    """
    mean = xp.mean(x, axis=-1, keepdims=True)  # [..., 1]
    centered = x - mean  # [..., D]
    var = xp.mean(centered * centered, axis=-1, keepdims=True)  # [..., 1]
    return centered * (1.0 / xp.sqrt(var + eps)) * weight + bias  # [..., D]


def silu(x: Array, xp: Any) -> Array:
    """``x * sigmoid(x)`` written as ``0.5 x (1 + tanh(x / 2))`` (no exp overflow).

    Examples
    --------
    >>> import numpy as np
    >>> float(silu(np.array(1.0), np).round(6))
    0.731059
    """
    half = 0.5 * x
    return half * (1.0 + xp.tanh(half))


def swiglu(gate: Array, up: Array, xp: Any) -> Array:
    """SwiGLU activation ``silu(gate) * up = gate / (1 + exp(-gate)) * up`` (LLaMA MLP).

    Written as torch computes ``silu`` (then times ``up``), in place on one new
    array (NumPy and CuPy ufuncs take ``out=``); for ``gate < -88`` the float32
    ``exp`` overflows to ``inf`` and ``silu`` is the correct ``-0`` (NumPy callers
    may silence the overflow warning, see :class:`loom.llm.model.Transformer`).

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
    out = -gate  # [..., Di]; the only new array, the rest is computed in place
    if out.ndim == 0:  # NumPy gives a scalar for 0-d input: nothing to write into
        return gate / (1.0 + xp.exp(out)) * up
    xp.exp(out, out=out)
    out += 1.0
    xp.divide(gate, out, out=out)  # silu(gate)
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


def softmax(x: Array, xp: Any, axis: int = -1) -> Array:
    """Numerically stable softmax along ``axis`` (``-inf`` entries get probability 0).

    Examples
    --------
    >>> import numpy as np
    >>> softmax(np.array([0.0, 0.0, -np.inf]), np).tolist()
    [0.5, 0.5, 0.0]
    """
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    e /= xp.sum(e, axis=axis, keepdims=True)
    return e


def rope_tables(inv_freq: np.ndarray, num_positions: int, scaling: float, xp: Any) -> tuple[Array, Array]:
    """Cos/sin tables of rotary embeddings for positions ``0 .. num_positions-1``.

    The tables are laid out for :func:`rope_apply`: ``cos`` repeats the cosines
    for both halves, ``sin`` carries the sign of ``rotate_half``.

    Parameters
    ----------
    inv_freq : numpy.ndarray
        ``[R/2]`` float32 inverse frequencies (``R`` = rotary dimension).
    num_positions : int
        Number of positions to tabulate.
    scaling : float
        Attention scaling multiplied into both tables (YaRN; 1.0 otherwise).
    xp : module
        Namespace of the returned arrays.

    Returns
    -------
    cos, sin : array
        ``[num_positions, R]`` float32: ``[cos θ, cos θ]`` and ``[-sin θ, sin θ]``
        with ``θ = position * inv_freq`` computed in float32, as Hugging Face does.
    """
    positions = np.arange(num_positions, dtype=np.float32)  # [P]
    angles = (positions[:, None] * inv_freq[None, :].astype(np.float32)).astype(np.float64)
    cos = np.cos(angles) * scaling  # [P, R/2]
    sin = np.sin(angles) * scaling  # [P, R/2]
    cos_full = np.concatenate([cos, cos], axis=-1).astype(np.float32)  # [P, R]
    sin_signed = np.concatenate([-sin, sin], axis=-1).astype(np.float32)  # [P, R]
    return xp.asarray(cos_full), xp.asarray(sin_signed)


def rope_apply(x: Array, cos: Array, sin: Array, xp: Any) -> Array:
    """Rotate-half RoPE (Hugging Face / GPT-NeoX layout) on the first ``R`` components.

    Parameters
    ----------
    x : array
        ``[T, n_heads, hd]`` queries or keys.
    cos, sin : array
        ``[T, R]`` rows of :func:`rope_tables` for the tokens' positions, or the
        same repeated for every head, ``[T, n_heads, R]`` (contiguous: faster
        for many tokens, see :meth:`loom.llm.model.Transformer.forward`).
    xp : module
        Array namespace.

    Returns
    -------
    array
        ``[T, n_heads, hd]``: ``x * cos + rotate_half(x) * sin`` on the rotated part,
        the remaining ``hd - R`` components unchanged.
    """
    r = cos.shape[-1]
    half = r // 2
    if r < x.shape[-1]:  # partial rotary: rotate the first R components only
        return xp.concat([rope_apply(x[..., :r], cos, sin, xp), x[..., r:]], axis=-1)
    if cos.ndim == 2:
        cos, sin = cos[:, None, :], sin[:, None, :]  # [T, 1, R]
    swapped = xp.concat([x[..., half:], x[..., :half]], axis=-1)  # [T, n, R]: [x2, x1]
    out = x * cos  # [T, n, R]
    swapped *= sin
    out += swapped
    return out


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
        outs.append(causal_attention_block(q[b0:b1], keys[:, :visible], values[:, :visible], start + b0, scale, xp))
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
    weights = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))  # [Hk, G, S_max]
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

    def make() -> np.ndarray:
        future = np.arange(t)[None, :] > np.arange(t)[:, None]  # [T, T]
        return np.where(future, -np.inf, 0.0).astype(dtype)

    return device_constant(xp, ("loom_future_mask", t, str(dtype)), make)


def _softmax_matmul(scores: Array, values: Array, xp: Any) -> Array:
    """``softmax(scores) @ values`` for ``[Hk, R, S]`` scores we own (modified in place).

    The normalisation divides the ``[Hk, R, hd]`` result instead of the wider
    ``[Hk, R, S]`` probabilities.
    """
    scores -= xp.max(scores, axis=-1, keepdims=True)
    weights = xp.exp(scores, out=scores)  # [Hk, R, S] unnormalised, in place
    return (weights @ values) / xp.sum(weights, axis=-1, keepdims=True)  # [Hk, R, hd]
