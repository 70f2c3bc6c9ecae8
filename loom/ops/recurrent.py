"""Recurrent layer math (tanh RNN and LSTM) with exact backpropagation through time.

Layouts follow LOOM: inputs are ``[batch, seq, in]``, outputs every hidden state
``[batch, seq, hidden]``. The RNN keeps LOOM's ``[hidden][in]`` matrices
(``h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T + b)``). The LSTM works on *fused*
gate matrices, gate order i, f, g, o along the last axis:
``kernel_ih [in, 4H]``, ``kernel_hh [H, 4H]``, ``bias [4H]``, so one step is one
``[B, in] @ [in, 4H]`` and one ``[B, H] @ [H, 4H]`` product.

The backward passes are the true derivatives of the forward passes (unlike
Go LOOM's accumulator BPTT). An initial state ``h0`` / ``c0`` of ``None`` means
zeros; it is treated as a constant (no gradient flows into a previous call).
Gradients are sums over the batch, as LOOM computes them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
    "sigmoid",
]


def sigmoid(x: Any, xp: Any) -> Any:
    """Logistic function ``1 / (1 + exp(-x))``."""
    return 1.0 / (1.0 + xp.exp(-x))


# ----------------------------------------------------------------------------- RNN
def rnn_forward(x: Any, w_ih: Any, w_hh: Any, bias: Any, h0: Any, xp: Any) -> Any:
    """Forward pass of LOOM's tanh RNN.

    Parameters
    ----------
    x : array, shape [B, S, I]
    w_ih : array, shape [H, I]
    w_hh : array, shape [H, H]
    bias : array, shape [H]
    h0 : array, shape [B, H], or None
        Initial hidden state (``None`` = zeros).

    Returns
    -------
    hs : array, shape [B, S, H]
        Every hidden state ``h_1 .. h_S``.
    """
    pre_x = x @ w_ih.T + bias  # [B, S, I] @ [I, H] -> [B, S, H]
    seq = x.shape[1]
    if seq == 1 and h0 is None:
        return xp.tanh(pre_x)
    h = h0
    states = []
    for t in range(seq):
        pre = pre_x[:, t, :] if h is None else pre_x[:, t, :] + h @ w_hh.T  # [B, H]
        h = xp.tanh(pre)
        states.append(h)
    return xp.stack(states, axis=1)


def rnn_backward(
    grad_hs: Any, x: Any, hs: Any, h0: Any, w_ih: Any, w_hh: Any, xp: Any, *, need_grad_x: bool = True
) -> tuple[Any, Any, Any, Any]:
    """Exact BPTT for :func:`rnn_forward`.

    Parameters
    ----------
    grad_hs : array, shape [B, S, H]
        Gradient of the loss w.r.t. every hidden state output.
    x, hs, h0, w_ih, w_hh : as in / returned by :func:`rnn_forward`.
    need_grad_x : bool
        False skips the input gradient (``grad_x`` is then ``None``).

    Returns
    -------
    grad_x : array, shape [B, S, I], or None
    grad_w_ih : array, shape [H, I]
    grad_w_hh : array, shape [H, H], or None when it is exactly zero (S = 1, zero ``h0``)
    grad_bias : array, shape [H]
    """
    batch, seq, n_in = x.shape
    hidden = hs.shape[2]
    if seq == 1:
        d_pre = grad_hs * (1.0 - hs * hs)  # [B, 1, H]
    else:
        d_pres = [None] * seq
        carry = None
        for t in range(seq - 1, -1, -1):
            h_t = hs[:, t, :]
            dh = grad_hs[:, t, :] if carry is None else grad_hs[:, t, :] + carry
            d_t = dh * (1.0 - h_t * h_t)  # [B, H]
            d_pres[t] = d_t
            carry = d_t @ w_hh  # [B, H] @ [H, H] -> [B, H]
        d_pre = xp.stack(d_pres, axis=1)
    d2 = d_pre.reshape(batch * seq, hidden)
    grad_w_ih = d2.T @ x.reshape(batch * seq, n_in)  # [H, B*S] @ [B*S, I] -> [H, I]
    grad_bias = d2[0] if batch * seq == 1 else xp.sum(d2, axis=0)
    grad_x = d_pre @ w_ih if need_grad_x else None  # [B, S, H] @ [H, I] -> [B, S, I]
    grad_w_hh = _recurrent_weight_grad(d_pre, hs, h0, xp)
    return grad_x, grad_w_ih, grad_w_hh, grad_bias


def _recurrent_weight_grad(d_pre: Any, hs: Any, h0: Any, xp: Any) -> Any:
    """``sum_t d_pre_t^T @ h_{t-1}`` (None when every ``h_{t-1}`` is zero); d_pre [B, S, G]."""
    batch, seq, width = d_pre.shape
    hidden = hs.shape[2]
    if seq == 1:
        return None if h0 is None else d_pre[:, 0, :].T @ h0
    d_later = d_pre[:, 1:, :].reshape(batch * (seq - 1), width)
    grad = d_later.T @ hs[:, :-1, :].reshape(batch * (seq - 1), hidden)  # [G, H]
    if h0 is not None:
        grad = grad + d_pre[:, 0, :].T @ h0
    return grad


# ----------------------------------------------------------------------------- LSTM
def _lstm_cell(z: Any, c_prev: Any, hidden: int, xp: Any) -> tuple[Any, Any, Any, Any]:
    """One LSTM step from the gate pre-activations ``z [B, 4H]`` and the previous cell (``None`` = zeros).

    Returns the gate activations ``[B, 4H]`` (sigmoid; tanh for the g block), the cell ``c``,
    ``tanh(c)`` and the hidden state ``h``.
    """
    gates = 1.0 / (1.0 + xp.exp(-z))  # sigmoid of every block, g block replaced below
    g = xp.tanh(z[:, 2 * hidden : 3 * hidden])
    gates[:, 2 * hidden : 3 * hidden] = g
    i_gate = gates[:, :hidden]
    c = i_gate * g if c_prev is None else gates[:, hidden : 2 * hidden] * c_prev + i_gate * g
    ct = xp.tanh(c)
    return gates, c, ct, gates[:, 3 * hidden :] * ct


def lstm_forward(
    x: Any, kernel_ih: Any, kernel_hh: Any, bias: Any, h0: Any, c0: Any, xp: Any
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Forward pass of LOOM's LSTM (gates i, f, g, o; ``c = f c' + i g``; ``h = o tanh(c)``).

    Parameters
    ----------
    x : array, shape [B, S, I]
    kernel_ih : array, shape [I, 4H]
        Fused input weights, gate blocks i, f, g, o along the last axis.
    kernel_hh : array, shape [H, 4H]
    bias : array, shape [4H]
    h0, c0 : arrays, shape [B, H], or None (zeros)

    Returns
    -------
    hs : array, shape [B, S, H]
        Hidden state of every step.
    h_last, c_last : arrays, shape [B, H]
        Final states (for stateful layers).
    cache : dict
        What :func:`lstm_backward` needs (per-step gates, cells, tanh of cells).
    """
    batch, seq, n_in = x.shape
    hidden = kernel_hh.shape[0]
    if seq == 1 and h0 is None:  # one step from a zero state: no recurrent product, no 3-D work
        z = x.reshape(batch, n_in) @ kernel_ih + bias  # [B, I] @ [I, 4H] -> [B, 4H]
        gates, c, ct, h = _lstm_cell(z, c0, hidden, xp)
        cache = {"gates": [gates], "cells": [c], "tanh_cells": [ct], "c0": c0, "h0": None}
        return h.reshape(batch, 1, hidden), h, c, cache
    pre_x = x @ kernel_ih + bias  # [B, S, I] @ [I, 4H] -> [B, S, 4H]
    h, c = h0, c0
    gates_list, cells, tanh_cells, states = [], [], [], []
    for t in range(seq):
        z = pre_x[:, t, :] if h is None else pre_x[:, t, :] + h @ kernel_hh  # [B, 4H]
        gates, c, ct, h = _lstm_cell(z, c, hidden, xp)
        gates_list.append(gates)
        cells.append(c)
        tanh_cells.append(ct)
        states.append(h)
    hs = states[0][:, None, :] if seq == 1 else xp.stack(states, axis=1)
    cache = {"gates": gates_list, "cells": cells, "tanh_cells": tanh_cells, "c0": c0, "h0": h0}
    return hs, h, c, cache


def lstm_backward(
    grad_hs: Any,
    x: Any,
    hs: Any,
    cache: dict[str, Any],
    kernel_ih: Any,
    kernel_hh: Any,
    xp: Any,
    *,
    need_grad_x: bool = True,
) -> tuple[Any, Any, Any, Any]:
    """Exact BPTT for :func:`lstm_forward`.

    Parameters
    ----------
    grad_hs : array, shape [B, S, H]
    x, hs, cache, kernel_ih, kernel_hh : as in / returned by :func:`lstm_forward`.
    need_grad_x : bool
        False skips the input gradient (``grad_x`` is then ``None``).

    Returns
    -------
    grad_x : array, shape [B, S, I], or None
    grad_kernel_ih : array, shape [I, 4H]
    grad_kernel_hh : array, shape [H, 4H], or None when it is exactly zero (S = 1, zero ``h0``)
    grad_bias : array, shape [4H]
    """
    batch, seq, n_in = x.shape
    hidden = kernel_hh.shape[0]
    gates_list, cells, tanh_cells = cache["gates"], cache["cells"], cache["tanh_cells"]
    c0, h0 = cache["c0"], cache["h0"]
    if seq == 1 and h0 is None:  # one step from a zero hidden state: no recurrent gradient, no 3-D work
        d2, _ = _lstm_cell_backward(grad_hs[:, 0, :], None, gates_list[0], tanh_cells[0], c0, hidden, xp)
        grad_kernel_ih = x.reshape(batch, n_in).T @ d2  # [I, B] @ [B, 4H] -> [I, 4H]
        grad_bias = d2[0] if batch == 1 else xp.sum(d2, axis=0)
        grad_x = (d2 @ kernel_ih.T).reshape(batch, 1, n_in) if need_grad_x else None
        return grad_x, grad_kernel_ih, None, grad_bias
    d_zs = [None] * seq
    dh_carry = dc_carry = None
    for t in range(seq - 1, -1, -1):
        dh = grad_hs[:, t, :] if dh_carry is None else grad_hs[:, t, :] + dh_carry
        c_prev = cells[t - 1] if t > 0 else c0
        d_z, dc = _lstm_cell_backward(dh, dc_carry, gates_list[t], tanh_cells[t], c_prev, hidden, xp)
        d_zs[t] = d_z
        if t > 0 or h0 is not None:
            dh_carry = d_z @ kernel_hh.T  # [B, 4H] @ [4H, H] -> [B, H]
        dc_carry = dc * gates_list[t][:, hidden : 2 * hidden]  # through the forget gate
    d_z_all = d_zs[0][:, None, :] if seq == 1 else xp.stack(d_zs, axis=1)  # [B, S, 4H]
    d2 = d_z_all.reshape(batch * seq, 4 * hidden)
    grad_kernel_ih = x.reshape(batch * seq, n_in).T @ d2  # [I, B*S] @ [B*S, 4H] -> [I, 4H]
    grad_bias = d2[0] if batch * seq == 1 else xp.sum(d2, axis=0)
    grad_x = d_z_all @ kernel_ih.T if need_grad_x else None  # [B, S, 4H] @ [4H, I] -> [B, S, I]
    grad_t = _recurrent_weight_grad(d_z_all, hs, h0, xp)  # [4H, H]
    grad_kernel_hh = None if grad_t is None else grad_t.T
    return grad_x, grad_kernel_ih, grad_kernel_hh, grad_bias


def _lstm_cell_backward(
    dh: Any, dc_carry: Any, gates: Any, ct: Any, c_prev: Any, hidden: int, xp: Any
) -> tuple[Any, Any]:
    """Gradient of one LSTM step: ``dL/dz [B, 4H]`` and ``dL/dc`` of this step's cell.

    ``dh``: gradient reaching ``h``; ``dc_carry``: gradient from the next step's cell (``None`` = zero);
    ``gates``, ``ct``: as from :func:`_lstm_cell`; ``c_prev``: previous cell (``None`` = zeros).
    """
    i_gate = gates[:, :hidden]
    g_gate = gates[:, 2 * hidden : 3 * hidden]
    dc = dh * gates[:, 3 * hidden :] * (1.0 - ct * ct)
    if dc_carry is not None:
        dc = dc + dc_carry
    slope = gates * (1.0 - gates)  # sigmoid'(z) = s (1 - s) for i, f, o
    slope[:, 2 * hidden : 3 * hidden] = 1.0 - g_gate * g_gate  # tanh'(z) for g
    if c_prev is None:  # zero previous cell: the forget gate gets no gradient
        slope[:, hidden : 2 * hidden] = 0.0
        c_prev = ct  # any finite value: multiplied by the zero slope
    d_z = xp.concat([dc * g_gate, dc * c_prev, dc * i_gate, dh * ct], axis=1) * slope  # [B, 4H]
    return d_z, dc
