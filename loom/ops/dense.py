"""Dense (fully connected) layer math in LOOM's layout.

LOOM stores the kernel row-major as ``[in][out]`` (the transpose of a PyTorch
``nn.Linear.weight``): ``y = act(x @ kernel + bias)``. Gradients are sums over
the batch, as LOOM computes them.
"""

from __future__ import annotations

from typing import Any

from loom.ops.activations import activate, activation_backward

__all__ = ["dense_backward", "dense_forward"]


def dense_forward(x: Any, kernel: Any, bias: Any, act: int, xp: Any) -> tuple[Any, Any]:
    """Forward pass of a dense layer.

    Parameters
    ----------
    x : array, shape [batch, in]
    kernel : array, shape [in, out]
    bias : array, shape [out]
    act : int
        Activation id (:class:`loom.ops.activations.Activation`).

    Returns
    -------
    y, pre : arrays, shape [batch, out]
        Output and pre-activation (kept for the backward pass).
    """
    pre = x @ kernel + bias  # [batch, in] @ [in, out] -> [batch, out]
    return activate(pre, act, xp), pre


def dense_backward(
    grad_y: Any, x: Any, pre: Any, kernel: Any, act: int, xp: Any, y: Any = None, *, need_grad_x: bool = True
) -> tuple[Any, Any, Any]:
    """Backward pass of a dense layer.

    Parameters
    ----------
    grad_y : array, shape [batch, out]
        Gradient of the loss w.r.t. the layer output.
    x, pre, kernel : arrays as in :func:`dense_forward`.
    y : array, shape [batch, out], optional
        The forward output (lets sigmoid / tanh reuse it instead of recomputing).
    need_grad_x : bool
        False skips the input gradient (``grad_x`` is then ``None``).

    Returns
    -------
    grad_x : array, shape [batch, in], or None
    grad_kernel : array, shape [in, out]
    grad_bias : array, shape [out]
    """
    if y is None and act in (1, 2):
        y = activate(pre, act, xp)
    grad_pre = activation_backward(grad_y, pre, y, act, xp)
    # batch 1 is an outer product: broadcasting beats a K=1 BLAS gemm by ~10x
    grad_kernel = x.T * grad_pre if x.shape[0] == 1 else x.T @ grad_pre  # [in, batch] @ [batch, out] -> [in, out]
    grad_bias = grad_pre[0, :] if grad_pre.shape[0] == 1 else xp.sum(grad_pre, axis=0)
    grad_x = grad_pre @ kernel.T if need_grad_x else None  # [batch, out] @ [out, in] -> [batch, in]
    return grad_x, grad_kernel, grad_bias
