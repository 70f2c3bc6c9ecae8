"""Softmax-family math: LOOM's forwards and their exact derivatives.

Every function works along the last axis of its input, so a 1-D vector is one
distribution and a ``[rows, cols]`` array is one distribution per row (LOOM's
grid softmax). Each forward has its ``*_backward`` twin, the vector-Jacobian
product of that forward:

* ``softmax(z / T)``: ``dz = p * (g - sum(g p)) / T``;
* sparsemax: ``dz = g - mean(g over the support)`` on the support, 0 elsewhere;
* LOOM's *entmax* (a blend ``q = (1 - w) softmax(z) + w sparsemax(z)``, ``w = alpha - 1``,
  renormalised ``p = q / sum(q)``): the blend of both Jacobians after the
  renormalisation's Jacobian.

Gumbel noise and masking are applied to the logits by the caller; the noise is
held fixed in the backward pass (it does not depend on ``z``).

This is loom's one softmax: the softmax layer's variants, multi-head attention
(:mod:`loom.ops.attention`) and ``loom.llm``'s attention (:mod:`loom.ops.transformer`,
through :func:`softmax_unnormalized`, which leaves the division to after the ``@ values``)
all use it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MASKED_LOGIT",
    "entmax_blend_backward",
    "entmax_blend_forward",
    "gumbel_noise",
    "softmax_backward",
    "softmax_forward",
    "softmax_unnormalized",
    "sparsemax_backward",
    "sparsemax_forward",
]

#: Value LOOM writes over masked-out logits.
MASKED_LOGIT = -1e9


def softmax_unnormalized(z: Any, xp: Any, *, overwrite: bool = False) -> Any:
    """``exp(z - max(z))`` along the last axis: the softmax before its division by the sum.

    Every exponent is ``<= 0`` (no overflow); ``-inf`` entries give 0.

    Parameters
    ----------
    z : array, shape [..., n]
    overwrite : bool
        Subtract the maximum in ``z``'s own memory (the caller owns ``z`` and no longer needs it).

    Returns
    -------
    e : array, shape [..., n]
        ``softmax(z) = e / sum(e)``.
    """
    if not overwrite:
        return xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    z -= xp.max(z, axis=-1, keepdims=True)
    return xp.exp(z)


def softmax_forward(z: Any, temperature: float, xp: Any) -> Any:
    """LOOM's ``softmaxStandard``: ``softmax(z / T)`` along the last axis (T = 0 means 1).

    Computed as ``exp((z - max z) / T)`` normalised (``min`` for a negative ``T``), so no
    exponent is positive and a tiny ``|T|`` cannot overflow; Go divides first
    (``z / T - max(z / T)``), which equals this up to float32 rounding (exactly when
    ``T`` is a power of two).

    Parameters
    ----------
    z : array, shape [..., n]
        Logits, one distribution per row.
    temperature : float
        ``T``; 0 means 1 (LOOM's convention).

    Returns
    -------
    p : array, shape [..., n]
        Probabilities; every row sums to 1.
    """
    if temperature != 0 and temperature != 1:
        # (z - ref) / T with ref the arg-max of z / T: every exponent is <= 0 whatever |T|
        ref = xp.max(z, axis=-1, keepdims=True) if temperature > 0 else xp.min(z, axis=-1, keepdims=True)
        e = xp.exp((z - ref) / temperature)
    else:
        e = softmax_unnormalized(z, xp)
    return e / xp.sum(e, axis=-1, keepdims=True)


def softmax_backward(grad_p: Any, p: Any, temperature: float, xp: Any) -> Any:
    """Vector-Jacobian product of :func:`softmax_forward`.

    Parameters
    ----------
    grad_p, p : arrays, shape [..., n]
        Gradient w.r.t. the output, and the output.

    Returns
    -------
    grad_z : array, shape [..., n]
    """
    grad_z = p * (grad_p - xp.sum(grad_p * p, axis=-1, keepdims=True))
    if temperature != 0 and temperature != 1:
        grad_z = grad_z * (1.0 / temperature)
    return grad_z


def sparsemax_forward(z: Any, xp: Any) -> Any:
    """Sparsemax (Martins & Astudillo 2016) along the last axis, as LOOM computes it.

    Parameters
    ----------
    z : array, shape [..., n]

    Returns
    -------
    p : array, shape [..., n]
        Euclidean projection of ``z`` onto the probability simplex (exact zeros possible).
    """
    n = z.shape[-1]
    srt = xp.flip(xp.sort(z, axis=-1), axis=-1)  # descending
    cum = xp.cumulative_sum(srt, axis=-1)
    ks = xp.arange(1, n + 1, dtype=z.dtype)
    in_support = (srt - (cum - 1.0) / ks) > 0  # a prefix of the sorted order
    k = xp.sum(xp.astype(in_support, z.dtype), axis=-1, keepdims=True)
    top_sum = xp.sum(xp.where(in_support, srt, xp.zeros_like(srt)), axis=-1, keepdims=True)
    tau = (top_sum - 1.0) / k
    return xp.maximum(z - tau, 0.0)


def sparsemax_backward(grad_p: Any, p: Any, xp: Any) -> Any:
    """Vector-Jacobian product of :func:`sparsemax_forward` (``p``: its output)."""
    support = xp.astype(p > 0, grad_p.dtype)
    mean = xp.sum(grad_p * support, axis=-1, keepdims=True) / xp.sum(support, axis=-1, keepdims=True)
    return support * (grad_p - mean)


def entmax_blend_forward(z: Any, alpha: float, xp: Any) -> tuple[Any, tuple[Any, Any, Any]]:
    """LOOM's ``entmax``: ``alpha <= 1`` softmax, ``alpha >= 2`` sparsemax, else the renormalised blend.

    Parameters
    ----------
    z : array, shape [..., n]
        Logits, one distribution per row.
    alpha : float
        LOOM's ``entmax_alpha``: the blend weight of sparsemax is ``alpha - 1``.

    Returns
    -------
    p : array, shape [..., n]
    cache : tuple
        ``(softmax, sparsemax, total)`` for :func:`entmax_blend_backward`.
    """
    if alpha <= 1:
        p = softmax_forward(z, 1.0, xp)
        return p, (p, None, None)
    if alpha >= 2:
        p = sparsemax_forward(z, xp)
        return p, (None, p, None)
    w = alpha - 1.0
    soft = softmax_forward(z, 1.0, xp)
    sparse = sparsemax_forward(z, xp)
    q = soft * (1.0 - w) + sparse * w
    total = xp.sum(q, axis=-1, keepdims=True)
    # LOOM divides only when the sum is positive (it always is: both parts sum to 1)
    p = q / xp.where(total > 0, total, xp.ones_like(total))
    return p, (soft, sparse, total)


def entmax_blend_backward(grad_p: Any, p: Any, alpha: float, cache: tuple[Any, Any, Any], xp: Any) -> Any:
    """Vector-Jacobian product of :func:`entmax_blend_forward`."""
    soft, sparse, total = cache
    if alpha <= 1:
        return softmax_backward(grad_p, soft, 1.0, xp)
    if alpha >= 2:
        return sparsemax_backward(grad_p, sparse, xp)
    w = alpha - 1.0
    safe = xp.where(total > 0, total, xp.ones_like(total))
    grad_q = (grad_p - xp.sum(grad_p * p, axis=-1, keepdims=True)) / safe  # through p = q / sum(q)
    return softmax_backward(grad_q, soft, 1.0, xp) * (1.0 - w) + sparsemax_backward(grad_q, sparse, xp) * w


def gumbel_noise(u: Any, xp: Any) -> Any:
    """LOOM's Gumbel noise ``-log(-log(u))`` from uniforms ``u`` in [0, 1) (``u`` clamped to >= 1e-10)."""
    u = xp.maximum(u, 1e-10)
    return -xp.log(-xp.log(u))
