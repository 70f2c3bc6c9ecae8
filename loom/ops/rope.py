"""Rotary position embeddings (RoPE): one table builder and one rotation, for ``loom.nn`` and ``loom.llm``.

Rotate-half layout (GPT-NeoX / Hugging Face, and Go LOOM's ``nn/attention.go``): the first
``R`` components of a head are two halves ``(x1, x2)`` rotated pairwise by the angle
``position * inv_freq[i]``::

    y1 = x1 cos - x2 sin,    y2 = x2 cos + x1 sin

Tables hold ``cos`` repeated for both halves and ``sin`` with the sign of ``rotate_half``
(``[-sin, sin]``), so the rotation is ``x * cos + swap_halves(x) * sin``, and its transpose
(the backward pass) is ``g * cos + swap_halves(g * sin)``.

Precision follows the caller's inverse frequencies: angles are computed in their dtype
(float64 for LOOM, which computes them so in Go; float32 for Hugging Face models, as
transformers does), the cosines in float64, the tables rounded to float32 once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["rope_apply", "rope_apply_backward", "rope_frequencies", "rope_tables", "rope_tables_host"]


def rope_frequencies(theta: float, dim: int, dtype: Any = np.float64) -> np.ndarray:
    """Inverse frequencies ``1 / theta ** (2i / dim)``, ``i < dim // 2``, computed in ``dtype`` (host NumPy).

    Parameters
    ----------
    theta : float
        RoPE base (LOOM: 1e6; LLaMA: 10000 or 500000).
    dim : int
        Rotary dimension (LOOM: the head size, odd sizes leave their last component unrotated).
    dtype : numpy dtype
        ``float64`` (LOOM, Go) or ``float32`` (Hugging Face ``default`` RoPE).

    Returns
    -------
    numpy.ndarray
        ``[dim // 2]`` of ``dtype``.

    Examples
    --------
    >>> rope_frequencies(10000.0, 4).tolist()
    [1.0, 0.01]
    """
    dtype = np.dtype(dtype)
    exponents = (2 * np.arange(dim // 2, dtype=np.int64)).astype(dtype) / dtype.type(dim)
    return (1.0 / (dtype.type(theta) ** exponents)).astype(dtype)


def rope_tables_host(inv_freq: np.ndarray, num_positions: int, scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Host (NumPy) float32 tables of :func:`rope_tables`: ``[num_positions, 2 * len(inv_freq)]`` each."""
    positions = np.arange(num_positions).astype(inv_freq.dtype)  # [P]
    angles = (positions[:, None] * inv_freq[None, :]).astype(np.float64)  # [P, R/2], rounded in inv_freq's dtype
    cos = np.cos(angles) * scaling  # [P, R/2]
    sin = np.sin(angles) * scaling
    cos_full = np.concatenate([cos, cos], axis=-1).astype(np.float32)  # [P, R]
    sin_signed = np.concatenate([-sin, sin], axis=-1).astype(np.float32)  # [P, R]
    return cos_full, sin_signed


def rope_tables(inv_freq: np.ndarray, num_positions: int, scaling: float, xp: Any) -> tuple[Any, Any]:
    """Cos/sin tables of rotary embeddings for positions ``0 .. num_positions-1``, laid out for :func:`rope_apply`.

    Parameters
    ----------
    inv_freq : numpy.ndarray
        ``[R/2]`` inverse frequencies (``R`` = rotary dimension); their dtype is the angles' precision.
    num_positions : int
        Number of positions to tabulate.
    scaling : float
        Factor multiplied into both tables (YaRN's attention scaling; 1.0 otherwise).
    xp : module
        Namespace of the returned arrays.

    Returns
    -------
    cos, sin : array
        ``[num_positions, R]`` float32: ``[cos θ, cos θ]`` and ``[-sin θ, sin θ]`` with
        ``θ = position * inv_freq``.

    Examples
    --------
    >>> cos, sin = rope_tables(np.array([1.0]), 2, 1.0, np)
    >>> cos.round(4).tolist(), sin.round(4).tolist()
    ([[1.0, 1.0], [0.5403, 0.5403]], [[-0.0, 0.0], [-0.8415, 0.8415]])
    """
    cos, sin = rope_tables_host(inv_freq, num_positions, scaling)
    return xp.asarray(cos), xp.asarray(sin)


def _swap_halves(v: Any, half: int, xp: Any) -> Any:
    """``[..., W]`` -> ``(v2, v1, tail)`` with halves of ``half`` components; its own inverse."""
    parts = [v[..., half : 2 * half], v[..., :half]]
    if v.shape[-1] > 2 * half:
        parts.append(v[..., 2 * half :])
    return xp.concat(parts, axis=-1)


def _per_token(table: Any, x: Any) -> Any:
    """A ``[T, W]`` table against ``[T, heads, hd]`` rows: the same angles for every head."""
    return table[:, None, :] if table.ndim == 2 and x.ndim == 3 else table


def rope_apply(x: Any, cos: Any, sin: Any, xp: Any) -> Any:
    """Rotate the first ``W = cos.shape[-1]`` components of the last axis of ``x``.

    Parameters
    ----------
    x : array
        ``[..., hd]`` queries or keys, e.g. ``[T, heads, hd]`` or ``[B, heads, S, hd]``.
    cos, sin : array
        Tables of :func:`rope_tables` (or built from them), broadcastable against
        ``x[..., :W]``; a ``[T, W]`` table against ``[T, heads, hd]`` rows applies per token.
        An odd ``W`` leaves component ``W - 1`` in place (its table entries are a plain
        factor: ``cos`` 1 or a scale, ``sin`` 0).
    xp : module
        Array namespace.

    Returns
    -------
    array
        ``x`` with ``x[..., :W] * cos + swap_halves(x[..., :W]) * sin`` in its first ``W``
        components; the remaining ``hd - W`` (partial rotary) unchanged.

    Examples
    --------
    >>> cos, sin = rope_tables(np.array([1.0]), 2, 1.0, np)
    >>> rope_apply(np.array([[1.0, 0.0], [1.0, 0.0]]), cos, sin, np).round(4).tolist()
    [[1.0, 0.0], [0.5403, 0.8415]]
    """
    width = cos.shape[-1]
    if width < x.shape[-1]:  # partial rotary: the tail passes through
        return xp.concat([rope_apply(x[..., :width], cos, sin, xp), x[..., width:]], axis=-1)
    cos, sin = _per_token(cos, x), _per_token(sin, x)
    out = x * cos
    swapped = _swap_halves(x, width // 2, xp)
    swapped *= sin
    out += swapped
    return out


def rope_apply_backward(grad: Any, cos: Any, sin: Any, xp: Any) -> Any:
    """Vector-Jacobian product of :func:`rope_apply`: ``grad * cos + swap_halves(grad * sin)``.

    Parameters
    ----------
    grad : array
        Gradient w.r.t. the output of :func:`rope_apply`, shaped like ``x``.
    cos, sin : array
        The tables the forward pass used.
    xp : module
        Array namespace.

    Returns
    -------
    array
        Gradient w.r.t. ``x``.
    """
    width = cos.shape[-1]
    if width < grad.shape[-1]:
        return xp.concat([rope_apply_backward(grad[..., :width], cos, sin, xp), grad[..., width:]], axis=-1)
    cos, sin = _per_token(cos, grad), _per_token(sin, grad)
    out = grad * cos
    out += _swap_halves(grad * sin, width // 2, xp)
    return out
