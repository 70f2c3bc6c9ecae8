"""Merge functions of LOOM's Parallel layer, one per combine mode, each with its backward.

Branch outputs are flat vectors (``batch`` samples back to back). As in LOOM:

* ``concat`` joins the **whole** branch vectors in branch order (with ``batch > 1``
  this is not a per-sample concatenation);
* ``add`` sums equal-length vectors; ``avg`` multiplies the sum by ``1 / n``;
* ``grid_scatter`` places, per sample, each branch's features at its grid cell,
  cells in index order (``row * cols * layers + col * layers + layer``); empty cells
  contribute nothing.

A backward takes the gradient of the merged vector and returns one gradient per
branch (in branch order).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "add_backward",
    "add_forward",
    "avg_backward",
    "avg_forward",
    "concat_backward",
    "concat_forward",
    "grid_scatter_backward",
    "grid_scatter_forward",
]


def concat_forward(outputs: list[Any], xp: Any) -> Any:
    """Concatenate flat branch outputs in branch order: ``[len_0] ... -> [sum len_i]``."""
    return outputs[0] if len(outputs) == 1 else xp.concat(outputs)


def concat_backward(grad: Any, sizes: list[int]) -> list[Any]:
    """Split ``grad`` ``[sum sizes]`` into consecutive slices of ``sizes``."""
    parts, start = [], 0
    for size in sizes:
        parts.append(grad[start : start + size])
        start += size
    return parts


def add_forward(outputs: list[Any], xp: Any) -> Any:
    """Element-wise sum of equal-length branch outputs (accumulated in branch order)."""
    total = outputs[0]
    for out in outputs[1:]:
        total = total + out
    return total


def add_backward(grad: Any, count: int) -> list[Any]:
    """Every branch receives ``grad`` itself."""
    return [grad] * count


def avg_forward(outputs: list[Any], xp: Any) -> Any:
    """Element-wise mean as LOOM computes it: the sum times ``float32(1) / float32(n)``."""
    return add_forward(outputs, xp) * (1.0 / len(outputs))


def avg_backward(grad: Any, count: int) -> list[Any]:
    """Every branch receives ``grad / n``."""
    scaled = grad * (1.0 / count)
    return [scaled] * count


def grid_scatter_forward(outputs: list[Any], order: list[int], batch: int, xp: Any) -> Any:
    """Per-sample placement of branch features in grid-cell order.

    Parameters
    ----------
    outputs : list of arrays, shapes [batch * feat_i]
        Flat branch outputs, in branch order.
    order : list of int
        Branch index of each occupied cell, cells in increasing index.
    batch : int

    Returns
    -------
    array, shape [batch * sum feat_i]
        For each sample, the features of the branches in ``order``.
    """
    if batch == 1:
        return concat_forward([outputs[i] for i in order], xp)
    blocks = [xp.reshape(outputs[i], (batch, -1)) for i in order]  # [batch, feat_i]
    return xp.reshape(xp.concat(blocks, axis=1), (-1,))


def grid_scatter_backward(grad: Any, order: list[int], sizes: list[int], batch: int, xp: Any) -> list[Any]:
    """Gradient of each branch (branch order) from the gradient of :func:`grid_scatter_forward`.

    ``sizes`` are the flat branch output lengths (``batch * feat_i``), in branch order.
    """
    parts: list[Any] = [None] * len(sizes)
    if batch == 1:
        start = 0
        for i in order:
            parts[i] = grad[start : start + sizes[i]]
            start += sizes[i]
        return parts
    grad2 = xp.reshape(grad, (batch, -1))  # [batch, total]
    start = 0
    for i in order:
        feat = sizes[i] // batch
        parts[i] = xp.reshape(grad2[:, start : start + feat], (-1,))
        start += feat
    return parts
