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

__all__ = [
    "causal_attention",
    "gelu_tanh",
    "layer_norm",
    "rms_norm",
    "rope_apply",
    "rope_tables",
    "silu",
    "softmax",
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
        ``[..., D]``: ``weight * x / sqrt(mean(x**2) + eps)``.

    Examples
    --------
    >>> import numpy as np
    >>> rms_norm(np.array([[3.0, 4.0]]), np.ones(2), 0.0, np).round(4).tolist()
    [[0.8485, 1.1314]]
    """
    mean_square = xp.mean(x * x, axis=-1, keepdims=True)  # [..., 1]
    return weight * (x * (1.0 / xp.sqrt(mean_square + eps)))  # [..., D]


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
    return 0.5 * x * (1.0 + xp.tanh(0.5 * x))


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
    return e / xp.sum(e, axis=axis, keepdims=True)


def rope_tables(
    inv_freq: np.ndarray, num_positions: int, scaling: float, xp: Any
) -> tuple[Array, Array]:
    """Cos/sin tables of rotary embeddings for positions ``0 .. num_positions-1``.

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
        ``[num_positions, R/2]`` float32, as Hugging Face computes them (the
        angle ``position * inv_freq`` is a float32 product).
    """
    positions = np.arange(num_positions, dtype=np.float32)  # [P]
    angles = positions[:, None] * inv_freq[None, :].astype(np.float32)  # [P, R/2] float32
    cos = (np.cos(angles.astype(np.float64)) * scaling).astype(np.float32)
    sin = (np.sin(angles.astype(np.float64)) * scaling).astype(np.float32)
    return xp.asarray(cos), xp.asarray(sin)


def rope_apply(x: Array, cos: Array, sin: Array, xp: Any) -> Array:
    """Rotate-half RoPE (Hugging Face / GPT-NeoX layout) on the first ``R`` components.

    Parameters
    ----------
    x : array
        ``[T, n_heads, hd]`` queries or keys.
    cos, sin : array
        ``[T, R/2]`` rows of :func:`rope_tables` for the tokens' positions.
    xp : module
        Array namespace.

    Returns
    -------
    array
        ``[T, n_heads, hd]``: ``x * cos + rotate_half(x) * sin`` on the rotated part,
        the remaining ``hd - R`` components unchanged.
    """
    half = cos.shape[-1]
    c = cos[:, None, :]  # [T, 1, R/2]
    s = sin[:, None, :]  # [T, 1, R/2]
    x1 = x[..., :half]  # [T, n, R/2]
    x2 = x[..., half : 2 * half]  # [T, n, R/2]
    parts = [x1 * c - x2 * s, x2 * c + x1 * s]
    if 2 * half < x.shape[-1]:
        parts.append(x[..., 2 * half :])
    return xp.concat(parts, axis=-1)  # [T, n, hd]


def causal_attention(
    q: Array, keys: Array, values: Array, start: int, scale: float, xp: Any
) -> Array:
    """Causal grouped-query attention of ``T`` new queries over ``S = start + T`` keys.

    Query head ``h`` reads key/value head ``h // (H // Hk)`` (Hugging Face
    ``repeat_kv`` order); nothing is repeated in memory.

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

    Returns
    -------
    array
        ``[T, H * hd]`` attention output, heads concatenated.
    """
    t, h, hd = q.shape
    hk, s, _ = keys.shape
    g = h // hk
    qg = xp.permute_dims(xp.reshape(q * scale, (t, hk, g, hd)), (1, 2, 0, 3))  # [Hk, G, T, hd]
    qg = xp.reshape(qg, (hk, g * t, hd))  # [Hk, G*T, hd]
    scores = qg @ xp.permute_dims(keys, (0, 2, 1))  # [Hk, G*T, S]
    if t > 1:
        scores = xp.reshape(scores, (hk, g, t, s))  # [Hk, G, T, S]
        future = xp.arange(s)[None, :] > (xp.arange(t) + start)[:, None]  # [T, S]
        scores = xp.where(future, -xp.inf, scores)
        scores = xp.reshape(scores, (hk, g * t, s))  # [Hk, G*T, S]
    probs = softmax(scores, xp)  # [Hk, G*T, S]
    out = xp.reshape(probs @ values, (hk, g, t, hd))  # [Hk, G, T, hd]
    return xp.reshape(xp.permute_dims(out, (2, 0, 1, 3)), (t, h * hd))  # [T, H*hd]
