"""SwiGLU feed-forward block in LOOM's layout, with its exact backward pass.

``y = (silu(x @ Wg + bg) * (x @ Wu + bu)) @ Wd + bd`` row by row, weights
stored ``[in][out]`` as in Go LOOM (``gate_weights``/``up_weights``
``[hidden][intermediate]``, ``down_weights`` ``[intermediate][hidden]``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["swiglu_backward", "swiglu_forward"]


def swiglu_forward(
    x: Any, w_gate: Any, b_gate: Any, w_up: Any, b_up: Any, w_down: Any, b_down: Any, xp: Any
) -> tuple[Any, tuple[Any, ...]]:
    """Forward pass of a SwiGLU block.

    Parameters
    ----------
    x : array, shape [rows, hidden]
    w_gate, w_up : arrays, shape [hidden, inter]
    b_gate, b_up : arrays, shape [inter]
    w_down : array, shape [inter, hidden]
    b_down : array, shape [hidden]

    Returns
    -------
    y : array, shape [rows, hidden]
    cache : tuple
        ``(gate, up, sigmoid(gate), h)`` for the backward pass.

    Examples
    --------
    >>> import numpy as np
    >>> one = np.ones((1, 1), np.float32); zero = np.zeros(1, np.float32)
    >>> y, _ = swiglu_forward(np.zeros((1, 1), np.float32), one, zero, one, zero, one, zero, np)
    >>> y.tolist()
    [[0.0]]
    """
    gate = x @ w_gate + b_gate  # [rows, hidden] @ [hidden, inter] -> [rows, inter]
    up = x @ w_up + b_up  # [rows, inter]
    sig = 1.0 / (1.0 + xp.exp(-gate))
    h = gate * sig * up  # [rows, inter]
    return h @ w_down + b_down, (gate, up, sig, h)  # [rows, inter] @ [inter, hidden] -> [rows, hidden]


def swiglu_backward(
    grad_y: Any, x: Any, cache: tuple[Any, ...], w_gate: Any, w_up: Any, w_down: Any, xp: Any
) -> tuple[Any, dict[str, Any]]:
    """Exact backward pass of :func:`swiglu_forward`.

    Returns
    -------
    grad_x : array, shape [rows, hidden]
    grads : dict
        ``gate_weights``, ``up_weights``, ``down_weights``, ``gate_bias``,
        ``up_bias``, ``down_bias`` (shapes of the forward arguments).
    """
    gate, up, sig, h = cache
    grad_h = grad_y @ w_down.T  # [rows, hidden] @ [hidden, inter] -> [rows, inter]
    silu = gate * sig
    grad_up = grad_h * silu
    grad_gate = grad_h * up * (sig * (1.0 + gate * (1.0 - sig)))  # d silu / d gate
    x_t = x.T  # [hidden, rows]
    grads = {
        "gate_weights": x_t @ grad_gate,
        "up_weights": x_t @ grad_up,
        "down_weights": h.T @ grad_y,  # [inter, rows] @ [rows, hidden]
        "gate_bias": xp.sum(grad_gate, axis=0),
        "up_bias": xp.sum(grad_up, axis=0),
        "down_bias": xp.sum(grad_y, axis=0),
    }
    grad_x = grad_gate @ w_gate.T + grad_up @ w_up.T  # [rows, hidden]
    return grad_x, grads
