"""2-D convolution in LOOM's layouts, by im2col and one matmul.

LOOM stores data as ``[batch][channels][height][width]`` and the kernel as
``[filters][channels][k][k]``; taps that fall outside the input (padding) count
as zeros. The array API has no convolution, so the forward pass gathers the
``k * k`` shifted (strided) windows of a zero-padded copy of the input by
slicing (like chainer's ``im2col``) and does one matmul; the backward pass
scatters the column gradient back with ``k * k`` slice-adds (``col2im``), so
no scatter with repeated indices is needed.
"""

from __future__ import annotations

from typing import Any

from loom.backend.fast_paths import reshape
from loom.ops.activations import activate, activation_backward

__all__ = ["col2im", "conv2d_backward", "conv2d_forward", "conv2d_output_size", "im2col"]


def conv2d_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of one spatial axis: ``(size + 2 * padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _padded_size(size: int, out: int, kernel: int, stride: int, padding: int) -> int:
    # Room for every tap of `out` windows; taps past the input read zeros, as LOOM skips them.
    return max(size + 2 * padding, (out - 1) * stride + kernel)


def im2col(x: Any, kernel: int, stride: int, padding: int, out_h: int, out_w: int, xp: Any) -> Any:
    """Gather convolution windows into columns.

    Parameters
    ----------
    x : array, shape [batch, C, H, W]
    kernel, stride, padding : int
        Square kernel size, stride and zero padding.
    out_h, out_w : int
        Output height and width (LOOM takes them from the config).
    xp : module
        Array namespace.

    Returns
    -------
    array, shape [batch, C * kernel * kernel, out_h * out_w]
        Row ``c * k * k + kh * k + kw`` holds tap ``(c, kh, kw)`` of every window.
    """
    batch, channels, height, width = x.shape
    hp = _padded_size(height, out_h, kernel, stride, padding)
    wp = _padded_size(width, out_w, kernel, stride, padding)
    if hp != height or wp != width:
        padded = xp.zeros((batch, channels, hp, wp), dtype=x.dtype)
        padded[:, :, padding : padding + height, padding : padding + width] = x
    else:
        padded = x
    h_span, w_span = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [
        padded[:, :, kh : kh + h_span : stride, kw : kw + w_span : stride]  # [B, C, oH, oW]
        for kh in range(kernel)
        for kw in range(kernel)
    ]
    cols = xp.stack(taps, axis=2)  # [B, C, k*k, oH, oW]
    return reshape(cols, (batch, channels * kernel * kernel, out_h * out_w), xp)


def col2im(
    cols: Any,
    shape: tuple[int, int, int, int],
    kernel: int,
    stride: int,
    padding: int,
    out_h: int,
    out_w: int,
    xp: Any,
) -> Any:
    """Adjoint of :func:`im2col`: sum column values back onto the input positions.

    Parameters
    ----------
    cols : array, shape [batch, C * kernel * kernel, out_h * out_w]
    shape : tuple
        ``(batch, C, H, W)`` of the input.

    Returns
    -------
    array, shape [batch, C, H, W]
    """
    batch, channels, height, width = shape
    hp = _padded_size(height, out_h, kernel, stride, padding)
    wp = _padded_size(width, out_w, kernel, stride, padding)
    taps = reshape(cols, (batch, channels, kernel * kernel, out_h, out_w), xp)
    padded = xp.zeros((batch, channels, hp, wp), dtype=cols.dtype)
    h_span, w_span = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    for kh in range(kernel):
        for kw in range(kernel):
            window = (slice(None), slice(None), slice(kh, kh + h_span, stride), slice(kw, kw + w_span, stride))
            padded[window] = padded[window] + taps[:, :, kh * kernel + kw, :, :]  # [B, C, oH, oW]
    if hp == height and wp == width:
        return padded
    return padded[:, :, padding : padding + height, padding : padding + width]


def conv2d_forward(
    x: Any, kernel: Any, bias: Any, stride: int, padding: int, out_h: int, out_w: int, act: int, xp: Any
) -> tuple[Any, Any, Any]:
    """Forward pass of a LOOM Conv2D layer.

    Parameters
    ----------
    x : array, shape [batch, C, H, W]
    kernel : array, shape [F, C, k, k]
    bias : array, shape [F]
    stride, padding, out_h, out_w : int
        Geometry (``out_h``/``out_w`` as configured, LOOM does not recompute them).
    act : int
        Activation id.

    Returns
    -------
    y, pre : arrays, shape [batch, F, out_h, out_w]
        Output and pre-activation.
    cols : array, shape [batch, C*k*k, out_h*out_w]
        The im2col matrix, kept for the backward pass.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    >>> k = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> conv2d_forward(x, k, np.zeros(1, np.float32), 1, 0, 2, 2, 5, np)[0].reshape(-1).tolist()
    [8.0, 12.0, 20.0, 24.0]
    """
    filters, size = kernel.shape[0], kernel.shape[2]
    cols = im2col(x, size, stride, padding, out_h, out_w, xp)  # [B, C*k*k, L]
    pre = reshape(kernel, (filters, -1), xp) @ cols + bias[:, None]  # [F, C*k*k] @ [B, C*k*k, L] -> [B, F, L]
    pre = reshape(pre, (x.shape[0], filters, out_h, out_w), xp)  # [B, F, oH, oW]
    return activate(pre, act, xp), pre, cols


def conv2d_backward(
    grad_y: Any,
    pre: Any,
    cols: Any,
    kernel: Any,
    x_shape: tuple[int, int, int, int],
    stride: int,
    padding: int,
    act: int,
    xp: Any,
    y: Any = None,
) -> tuple[Any, Any, Any]:
    """Backward pass of :func:`conv2d_forward` (exact).

    Parameters
    ----------
    grad_y : array, shape [batch, F, oH, oW]
    pre, cols : arrays from :func:`conv2d_forward`.
    kernel : array, shape [F, C, k, k]
    x_shape : tuple
        ``(batch, C, H, W)``.
    y : array, optional
        The forward output (sigmoid / tanh derivatives reuse it).

    Returns
    -------
    grad_x : array, shape [batch, C, H, W]
    grad_kernel : array, shape [F, C, k, k]
    grad_bias : array, shape [F]
    """
    batch, filters, out_h, out_w = pre.shape
    grad_pre = activation_backward(grad_y, pre, activate(pre, act, xp) if y is None and act in (1, 2) else y, act, xp)
    grad_pre = reshape(grad_pre, (batch, filters, out_h * out_w), xp)  # [B, F, L]
    grad_bias = xp.sum(grad_pre, axis=(0, 2))  # [F]
    grad_kernel = (  # [F, L] @ [L, C*k*k] -> [F, C*k*k], summed over the batch
        grad_pre[0, ...] @ cols[0, ...].T if batch == 1 else xp.sum(grad_pre @ xp.matrix_transpose(cols), axis=0)
    )
    grad_cols = reshape(kernel, (filters, -1), xp).T @ grad_pre  # [C*k*k, F] @ [B, F, L] -> [B, C*k*k, L]
    grad_x = col2im(grad_cols, x_shape, kernel.shape[2], stride, padding, out_h, out_w, xp)
    return grad_x, reshape(grad_kernel, kernel.shape, xp), grad_bias
