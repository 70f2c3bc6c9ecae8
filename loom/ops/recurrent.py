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

from typing import Any, NamedTuple

import numpy as np

from loom.backend import device_constant
from loom.backend.fast_paths import reshape

__all__ = [
    "GateConstants",
    "lstm_backward",
    "lstm_cell",
    "lstm_cell_backward",
    "lstm_forward",
    "lstm_gate_constants",
    "rnn_backward",
    "rnn_forward",
    "rnn_step",
    "rnn_step_backward",
    "sigmoid",
]


def sigmoid(x: Any, xp: Any) -> Any:
    """Logistic function ``1 / (1 + exp(-x))``."""
    return 1.0 / (1.0 + xp.exp(-x))


# ----------------------------------------------------------------------------- RNN
def rnn_step(pre: Any, xp: Any) -> Any:
    """Hidden state from the pre-activation ``x W_ih^T + h W_hh^T + b`` of one step: ``tanh(pre)``."""
    return xp.tanh(pre)


def rnn_step_backward(grad_h: Any, h: Any, one: Any = 1.0) -> Any:
    """Gradient w.r.t. the pre-activation of one step, from ``dL/dh`` and ``h = tanh(pre)``.

    ``one``: the constant 1 (a prebuilt 0-d array on NumPy's fast path, :func:`loom.backend.fast_paths.constant`).
    """
    return grad_h * (one - h * h)


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
        return rnn_step(pre_x, xp)
    h = h0
    states = []
    for t in range(seq):
        pre = pre_x[:, t, :] if h is None else pre_x[:, t, :] + h @ w_hh.T  # [B, H]
        h = rnn_step(pre, xp)
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
        d_pre = rnn_step_backward(grad_hs, hs)  # [B, 1, H]
    else:
        d_pres = [None] * seq
        carry = None
        for t in range(seq - 1, -1, -1):
            h_t = hs[:, t, :]
            dh = grad_hs[:, t, :] if carry is None else grad_hs[:, t, :] + carry
            d_t = rnn_step_backward(dh, h_t)  # [B, H]
            d_pres[t] = d_t
            carry = d_t @ w_hh  # [B, H] @ [H, H] -> [B, H]
        d_pre = xp.stack(d_pres, axis=1)
    d2 = reshape(d_pre, (batch * seq, hidden), xp)
    grad_w_ih = d2.T @ reshape(x, (batch * seq, n_in), xp)  # [H, B*S] @ [B*S, I] -> [H, I]
    grad_bias = d2[0, :] if batch * seq == 1 else xp.sum(d2, axis=0)
    grad_x = d_pre @ w_ih if need_grad_x else None  # [B, S, H] @ [H, I] -> [B, S, I]
    grad_w_hh = _recurrent_weight_grad(d_pre, hs, h0, xp)
    return grad_x, grad_w_ih, grad_w_hh, grad_bias


def _recurrent_weight_grad(d_pre: Any, hs: Any, h0: Any, xp: Any) -> Any:
    """``sum_t d_pre_t^T @ h_{t-1}`` (None when every ``h_{t-1}`` is zero); d_pre [B, S, G]."""
    batch, seq, width = d_pre.shape
    hidden = hs.shape[2]
    if seq == 1:
        return None if h0 is None else d_pre[:, 0, :].T @ h0
    d_later = reshape(d_pre[:, 1:, :], (batch * (seq - 1), width), xp)
    grad = d_later.T @ reshape(hs[:, :-1, :], (batch * (seq - 1), hidden), xp)  # [G, H]
    if h0 is not None:
        grad = grad + d_pre[:, 0, :].T @ h0
    return grad


# ----------------------------------------------------------------------------- LSTM
class GateConstants(NamedTuple):
    """``[1, 4H]`` rows that turn one ``tanh`` into the four LSTM gates, and the constant 1.

    ``sigmoid(z) = 0.5 tanh(z / 2) + 0.5``, so with ``t = tanh(z * scale)`` every gate is
    ``t * mul + add`` (``scale = mul = 1/2, add = 1/2`` on the i, f, o blocks; ``1, 1, 0``
    on the g block) and every derivative is ``(1 - t^2) * slope`` (``1/4`` or ``1``).
    """

    scale: Any
    mul: Any
    add: Any
    slope: Any
    one: Any


def lstm_gate_constants(hidden: int, like: Any, xp: Any) -> GateConstants:
    """The :class:`GateConstants` of ``hidden`` units in ``like``'s dtype, on ``like``'s namespace (built once)."""
    dtype = like.dtype

    def table() -> Any:
        rows = np.array([[0.5, 1.0], [0.5, 1.0], [0.5, 0.0], [0.25, 1.0]])  # (i, f, o value; g value) per row
        values = np.repeat(rows[:, [0, 0, 1, 0]], hidden, axis=1)  # [4, 4H], blocks i, f, g, o
        return xp.asarray(values.reshape(4, 1, 4 * hidden), dtype=dtype)  # rows [1, 4H]: same-shape fast path at B = 1

    rows = device_constant(xp, ("loom_lstm_gates", hidden, dtype), table)
    one = device_constant(xp, ("loom_one", dtype), lambda: xp.asarray(1.0, dtype=dtype))
    return GateConstants(rows[0, ...], rows[1, ...], rows[2, ...], rows[3, ...], one)


def lstm_cell(
    z: Any, c_prev: Any, hidden: int, xp: Any, consts: GateConstants | None = None
) -> tuple[Any, Any, Any, Any, Any]:
    """One LSTM step from the gate pre-activations ``z [B, 4H]`` and the previous cell (``None`` = zeros).

    Returns the gate activations ``[B, 4H]`` (sigmoid; tanh for the g block), their ``tanh``
    form ``t`` (for the backward pass), the cell ``c``, ``tanh(c)`` and the hidden state ``h``.
    ``consts``: :func:`lstm_gate_constants` (looked up when omitted).
    """
    if consts is None:
        consts = lstm_gate_constants(hidden, z, xp)
    t = xp.tanh(z * consts.scale)  # [B, 4H]
    gates = t * consts.mul + consts.add  # sigmoid on i, f, o; tanh on g
    i_gate, g_gate = gates[:, :hidden], gates[:, 2 * hidden : 3 * hidden]
    c = i_gate * g_gate if c_prev is None else gates[:, hidden : 2 * hidden] * c_prev + i_gate * g_gate
    ct = xp.tanh(c)
    return gates, t, c, ct, gates[:, 3 * hidden :] * ct


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
        z = reshape(x, (batch, n_in), xp) @ kernel_ih + bias  # [B, I] @ [I, 4H] -> [B, 4H]
        gates, t, c, ct, h = lstm_cell(z, c0, hidden, xp)
        cache = {"gates": [gates], "tanh_gates": [t], "cells": [c], "tanh_cells": [ct], "c0": c0, "h0": None}
        return reshape(h, (batch, 1, hidden), xp), h, c, cache
    pre_x = x @ kernel_ih + bias  # [B, S, I] @ [I, 4H] -> [B, S, 4H]
    h, c = h0, c0
    consts = lstm_gate_constants(hidden, pre_x, xp)
    gates_list, tanh_gates, cells, tanh_cells, states = [], [], [], [], []
    for step in range(seq):
        z = pre_x[:, step, :] if h is None else pre_x[:, step, :] + h @ kernel_hh  # [B, 4H]
        gates, t, c, ct, h = lstm_cell(z, c, hidden, xp, consts)
        gates_list.append(gates)
        tanh_gates.append(t)
        cells.append(c)
        tanh_cells.append(ct)
        states.append(h)
    hs = states[0][:, None, :] if seq == 1 else xp.stack(states, axis=1)
    cache = {
        "gates": gates_list,
        "tanh_gates": tanh_gates,
        "cells": cells,
        "tanh_cells": tanh_cells,
        "c0": c0,
        "h0": h0,
    }
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
    x, hs, cache, kernel_ih, kernel_hh : as in / returned by :func:`lstm_forward`.
    grad_hs : array, shape [B, S, H]
        ``dL/dhs``: the gradient reaching the hidden state of every step.
    need_grad_x : bool
        False skips the input gradient (``grad_x`` is then ``None``). The cell state's
        gradient flows back through the forget gates; none reaches ``c0``.

    Returns
    -------
    grad_x : array, shape [B, S, I], or None
    grad_kernel_ih : array, shape [I, 4H]
    grad_kernel_hh : array, shape [H, 4H], or None when it is exactly zero (S = 1, zero ``h0``)
    grad_bias : array, shape [4H]
    """
    batch, seq, n_in = x.shape
    hidden = kernel_hh.shape[0]
    gates_list, tanh_gates, cells, tanh_cells = cache["gates"], cache["tanh_gates"], cache["cells"], cache["tanh_cells"]
    c0, h0 = cache["c0"], cache["h0"]
    if seq == 1 and h0 is None:  # one step from a zero hidden state: no recurrent gradient, no 3-D work
        d2, _ = lstm_cell_backward(grad_hs[:, 0, :], None, gates_list[0], tanh_gates[0], tanh_cells[0], c0, hidden, xp)
        grad_kernel_ih = reshape(x, (batch, n_in), xp).T @ d2  # [I, B] @ [B, 4H] -> [I, 4H]
        grad_bias = d2[0, :] if batch == 1 else xp.sum(d2, axis=0)
        grad_x = reshape(d2 @ kernel_ih.T, (batch, 1, n_in), xp) if need_grad_x else None
        return grad_x, grad_kernel_ih, None, grad_bias
    d_zs = [None] * seq
    dh_carry = dc_carry = None
    consts = lstm_gate_constants(hidden, gates_list[0], xp)
    for t in range(seq - 1, -1, -1):
        dh = grad_hs[:, t, :] if dh_carry is None else grad_hs[:, t, :] + dh_carry
        c_prev = cells[t - 1] if t > 0 else c0
        d_z, dc = lstm_cell_backward(
            dh, dc_carry, gates_list[t], tanh_gates[t], tanh_cells[t], c_prev, hidden, xp, consts
        )
        d_zs[t] = d_z
        if t > 0 or h0 is not None:
            dh_carry = d_z @ kernel_hh.T  # [B, 4H] @ [4H, H] -> [B, H]
        dc_carry = dc * gates_list[t][:, hidden : 2 * hidden]  # through the forget gate
    d_z_all = d_zs[0][:, None, :] if seq == 1 else xp.stack(d_zs, axis=1)  # [B, S, 4H]
    d2 = reshape(d_z_all, (batch * seq, 4 * hidden), xp)
    grad_kernel_ih = reshape(x, (batch * seq, n_in), xp).T @ d2  # [I, B*S] @ [B*S, 4H] -> [I, 4H]
    grad_bias = d2[0, :] if batch * seq == 1 else xp.sum(d2, axis=0)
    grad_x = d_z_all @ kernel_ih.T if need_grad_x else None  # [B, S, 4H] @ [4H, I] -> [B, S, I]
    grad_t = _recurrent_weight_grad(d_z_all, hs, h0, xp)  # [4H, H]
    grad_kernel_hh = None if grad_t is None else grad_t.T
    return grad_x, grad_kernel_ih, grad_kernel_hh, grad_bias


def lstm_cell_backward(
    dh: Any,
    dc_carry: Any,
    gates: Any,
    tanh_gates: Any,
    ct: Any,
    c_prev: Any,
    hidden: int,
    xp: Any,
    consts: GateConstants | None = None,
) -> tuple[Any, Any]:
    """Gradient of one LSTM step: ``dL/dz [B, 4H]`` and ``dL/dc`` of this step's cell.

    ``dh``: gradient reaching ``h``; ``dc_carry``: gradient from the next step's cell (``None`` = zero);
    ``gates``, ``tanh_gates``, ``ct``: as from :func:`lstm_cell`; ``c_prev``: previous cell (``None`` = zeros).
    """
    if consts is None:
        consts = lstm_gate_constants(hidden, gates, xp)
    one = consts.one
    i_gate = gates[:, :hidden]
    g_gate = gates[:, 2 * hidden : 3 * hidden]
    dc = dh * gates[:, 3 * hidden :] * (one - ct * ct)
    if dc_carry is not None:
        dc = dc + dc_carry
    slope = (one - tanh_gates * tanh_gates) * consts.slope  # sigmoid' = s (1 - s) on i, f, o; tanh' on g
    if c_prev is None:  # zero previous cell: the forget gate gets no gradient
        slope[:, hidden : 2 * hidden] = 0.0
        c_prev = ct  # any finite value: multiplied by the zero slope
    # [dc g, dc c_prev, dc i, dh tanh(c)] * slope, as two [B, 4H] products
    d_z = xp.concat([dc, dc, dc, dh], axis=1) * xp.concat([g_gate, c_prev, i_gate, ct], axis=1) * slope  # [B, 4H]
    return d_z, dc
