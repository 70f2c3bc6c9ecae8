"""One call (or a few) of every public function of ``loom.ops``, for any array namespace.

``CASES[qualified name](fn, xp)`` calls ``fn`` — the op itself, handed in by the test so
that it can count the calls — on inputs built in NumPy from a fixed seed and moved to
``xp``, and returns what the op returned (arrays, tuples, dicts, dataclasses, floats).
``tests/ops/test_every_op.py`` enumerates the public functions of ``loom.ops`` by
introspection and fails for any function without a case here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from loom.ops.activations import Activation, activate
from loom.ops.attention import mha_forward
from loom.ops.conv2d import conv2d_forward
from loom.ops.norms import layer_norm_forward, rms_norm_forward
from loom.ops.recurrent import lstm_cell, lstm_forward, rnn_forward
from loom.ops.rope import rope_frequencies, rope_tables
from loom.ops.softmax import entmax_blend_forward, softmax_forward, sparsemax_forward
from loom.ops.swiglu import swiglu_forward
from tests.ops.helpers import put

__all__ = ["ACTIVATION_IDS", "CASES"]

Case = Callable[[Callable[..., Any], Any], Any]
CASES: dict[str, Case] = {}

ACTIVATION_IDS = [int(a) for a in Activation if a.name != "RELU"]  # every id once (RELU aliases SCALED_RELU)


def case(*names: str) -> Callable[[Case], Case]:
    """Register the decorated function as the case of ``loom.ops.<name>`` for every name."""

    def register(func: Case) -> Case:
        for name in names:
            CASES[f"loom.ops.{name}"] = func
        return func

    return register


def data(seed: int, *shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Uniform float32 test data, the same on every namespace."""
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def arrays(xp: Any, seed: int, *shapes: tuple[int, ...], low: float = -2.0, high: float = 2.0) -> list[Any]:
    return [put(xp, data(seed + i, *shape, low=low, high=high)) for i, shape in enumerate(shapes)]


# ----------------------------------------------------------------------------- activations
@case("activations.activate")
def _activate(fn, xp):
    (x,) = arrays(xp, 1, (3, 7), low=-4, high=4)
    return [fn(x, act, xp) for act in ACTIVATION_IDS]


@case("activations.activation_derivative")
def _activation_derivative(fn, xp):
    (x,) = arrays(xp, 2, (3, 7), low=-4, high=4)
    return [fn(x, act, xp) for act in ACTIVATION_IDS]


@case("activations.activation_backward")
def _activation_backward(fn, xp):
    g, pre = arrays(xp, 3, (3, 7), (3, 7), low=-4, high=4)
    out = [fn(g, pre, activate(pre, act, xp), act, xp) for act in ACTIVATION_IDS]
    return [*out, fn(g, pre, None, 0, xp)]  # ScaledReLU without the forward output


@case("activations.activation_kernels")
def _activation_kernels(fn, xp):
    g, pre = arrays(xp, 4, (2, 5), (2, 5), low=-4, high=4)
    results = []
    for act in (0, 1, 2, 6, 7, 12):
        forward, backward = fn(act, xp, xp.float32)
        y = forward(pre)
        results += [y, backward(g, pre, y), backward(g, pre + 1.0, y)]  # a stale forward: recomputed
    return results


@case("activations.activation_from_name")
def _activation_from_name(fn, xp):
    return [int(fn(name)) for name in ("gelu", "ReLU", "swish", None, 3, 4.0)]


@case("activations.activation_name")
def _activation_name(fn, xp):
    return [fn(act) for act in (*ACTIVATION_IDS, 99)]


@case("activations.erf")
def _erf(fn, xp):
    (x,) = arrays(xp, 5, (11,), low=-3, high=3)
    return fn(x, xp)


# ----------------------------------------------------------------------------- attention
def _mha_inputs(xp, heads=4, kv_heads=2, head_dim=3, seq=5, batch=2):
    d = 6
    q_cols, kv_cols = heads * head_dim, kv_heads * head_dim
    x, wq, wk, wv, wo = arrays(xp, 10, (batch, seq, d), (d, q_cols), (d, kv_cols), (d, kv_cols), (q_cols, d), high=1)
    bq, bk, bv, bo = arrays(xp, 20, (q_cols,), (kv_cols,), (kv_cols,), (d,), low=-0.5, high=0.5)
    return (x, wq, bq, wk, bk, wv, bv, wo, bo, heads, kv_heads)


@case("attention.mha_forward")
def _mha_forward(fn, xp):
    causal = fn(*_mha_inputs(xp), True, 1e6, xp)
    plain = fn(*_mha_inputs(xp, heads=2, kv_heads=2, head_dim=4), False, 1e4, xp)
    return causal, plain


@case("attention.mha_backward")
def _mha_backward(fn, xp):
    inputs = _mha_inputs(xp)
    y, cache = mha_forward(*inputs, True, 1e6, xp)
    (grad_y,) = arrays(xp, 30, tuple(y.shape))
    return fn(grad_y, cache, inputs[7], xp)


# ----------------------------------------------------------------------------- combine
@case("combine.concat_forward", "combine.add_forward", "combine.avg_forward")
def _merge_forward(fn, xp):
    a, b, c = arrays(xp, 40, (6,), (6,), (6,))
    return fn([a, b, c], xp), fn([a], xp)


@case("combine.concat_backward")
def _concat_backward(fn, xp):
    (grad,) = arrays(xp, 41, (9,))
    return fn(grad, [2, 3, 4])


@case("combine.add_backward", "combine.avg_backward")
def _add_avg_backward(fn, xp):
    (grad,) = arrays(xp, 42, (5,))
    return fn(grad, 3)


@case("combine.grid_scatter_forward")
def _grid_scatter_forward(fn, xp):
    a, b = arrays(xp, 43, (2 * 3,), (2 * 2,))
    return fn([a, b], [1, 0], 2, xp), fn([a[:3], b[:2]], [1, 0], 1, xp)


@case("combine.grid_scatter_backward")
def _grid_scatter_backward(fn, xp):
    (grad,) = arrays(xp, 44, (10,))
    return fn(grad, [1, 0], [6, 4], 2, xp), fn(grad[:5], [1, 0], [3, 2], 1, xp)


# ----------------------------------------------------------------------------- conv2d
_CONV = {"kernel": 3, "stride": 2, "padding": 1, "out_h": 3, "out_w": 3}


@case("conv2d.conv2d_output_size")
def _conv2d_output_size(fn, xp):
    return [fn(5, 3, 2, 1), fn(28, 3, 1, 0), fn(7, 2, 3, 2)]


@case("conv2d.im2col")
def _im2col(fn, xp):
    (x,) = arrays(xp, 50, (2, 2, 5, 5))
    return fn(x, _CONV["kernel"], _CONV["stride"], _CONV["padding"], _CONV["out_h"], _CONV["out_w"], xp)


@case("conv2d.col2im")
def _col2im(fn, xp):
    (cols,) = arrays(xp, 51, (2, 2 * 9, 9))
    return fn(
        cols, (2, 2, 5, 5), _CONV["kernel"], _CONV["stride"], _CONV["padding"], _CONV["out_h"], _CONV["out_w"], xp
    )


def _conv_inputs(xp):
    x, kernel, bias = arrays(xp, 52, (2, 2, 5, 5), (3, 2, 3, 3), (3,))
    return x, kernel, bias, _CONV["stride"], _CONV["padding"], _CONV["out_h"], _CONV["out_w"]


@case("conv2d.conv2d_forward")
def _conv2d_forward(fn, xp):
    return [fn(*_conv_inputs(xp), act, xp) for act in (0, 1, 5)]


@case("conv2d.conv2d_backward")
def _conv2d_backward(fn, xp):
    x, kernel, bias, stride, padding, out_h, out_w = _conv_inputs(xp)
    results = []
    for act in (0, 1):
        y, pre, cols = conv2d_forward(x, kernel, bias, stride, padding, out_h, out_w, act, xp)
        (grad_y,) = arrays(xp, 53, tuple(y.shape))
        results.append(fn(grad_y, pre, cols, kernel, tuple(x.shape), stride, padding, act, xp))
        results.append(
            fn(grad_y[:1, ...], pre[:1, ...], cols[:1, ...], kernel, (1, 2, 5, 5), stride, padding, act, xp, y[:1, ...])
        )
    return results


# ----------------------------------------------------------------------------- dense
@case("dense.dense_forward")
def _dense_forward(fn, xp):
    x, kernel, bias = arrays(xp, 60, (3, 4), (4, 5), (5,))
    return [fn(x, kernel, bias, act, xp) for act in (0, 1, 6)]


@case("dense.dense_backward")
def _dense_backward(fn, xp):
    x, kernel, pre, grad_y = arrays(xp, 61, (3, 4), (4, 5), (3, 5), (3, 5))
    return [
        fn(grad_y, x, pre, kernel, 1, xp),
        fn(grad_y, x, pre, kernel, 0, xp, activate(pre, 0, xp), need_grad_x=False),
        fn(grad_y[:1, :], x[:1, :], pre[:1, :], kernel, 2, xp),  # batch 1: outer product
    ]


# ----------------------------------------------------------------------------- losses
def _probabilities(xp, seed, n=6):
    (y,) = arrays(xp, seed, (n,), low=0.05, high=0.95)
    t = put(xp, np.array([0.0, 1.0, 0.0, 0.5, 0.0, 0.25][:n], np.float32))
    return y, t


@case("losses.mse_loss", "losses.mse_grad", "losses.cross_entropy_loss", "losses.cross_entropy_grad")
def _loss(fn, xp):
    return fn(*_probabilities(xp, 70), xp)


@case("losses.loss_and_grad")
def _loss_and_grad(fn, xp):
    y, t = _probabilities(xp, 71)
    return fn("mse", y, t, xp), fn("cross_entropy", y, t, xp)


@case("losses.batch_loss_and_grad")
def _batch_loss_and_grad(fn, xp):
    y, t = _probabilities(xp, 72)
    return [fn(name, y, t, 2, xp) for name in ("mse", "cross_entropy", "binary_cross_entropy")]


@case("losses.global_norm")
def _global_norm(fn, xp):
    return fn(arrays(xp, 73, (4,), (2, 3)), xp)


@case("losses.clip_by_global_norm")
def _clip_by_global_norm(fn, xp):
    grads = arrays(xp, 74, (4,), (2, 3))
    return fn(grads, 0.5, xp), grads  # the gradients are scaled in place


@case("losses.normalize_loss_type")
def _normalize_loss_type(fn, xp):
    return [fn(name) for name in ("MSE", "categorical_crossentropy", None, "")] + [
        fn("bce", accepted=("mse", "binary_cross_entropy"))
    ]


# ----------------------------------------------------------------------------- norms
@case("norms.split_rows")
def _split_rows(fn, xp):
    (x,) = arrays(xp, 80, (11,))
    return fn(x, 4, xp), fn(x[:8], 4, xp)


@case("norms.join_rows")
def _join_rows(fn, xp):
    (y,) = arrays(xp, 81, (2, 4))
    return fn(y, 3, xp), fn(y, 0, xp)


@case("norms.layer_norm_forward", "norms.layer_norm")
def _layer_norm(fn, xp):
    x, gamma, beta = arrays(xp, 82, (3, 5), (5,), (5,))
    return fn(x, gamma, beta, 1e-5, xp), fn(x[:, None, :], gamma, beta, 0.0, xp)


@case("norms.rms_norm_forward", "norms.rms_norm")
def _rms_norm(fn, xp):
    x, gamma = arrays(xp, 83, (3, 5), (5,))
    return fn(x, gamma, 1e-6, xp), fn(x[:, None, :], gamma, 0.0, xp)


@case("norms.layer_norm_backward")
def _layer_norm_backward(fn, xp):
    x, gamma, beta, grad_y = arrays(xp, 84, (3, 5), (5,), (5,), (3, 5))
    _, cache = layer_norm_forward(x, gamma, beta, 1e-5, xp)
    return fn(grad_y, cache, gamma, xp)


@case("norms.rms_norm_backward")
def _rms_norm_backward(fn, xp):
    x, gamma, grad_y = arrays(xp, 85, (3, 5), (5,), (3, 5))
    _, inv_rms = rms_norm_forward(x, gamma, 1e-6, xp)
    return fn(grad_y, x, inv_rms, gamma, xp)


# ----------------------------------------------------------------------------- recurrent
@case("recurrent.sigmoid", "recurrent.rnn_step")
def _pointwise_recurrent(fn, xp):
    (x,) = arrays(xp, 90, (2, 6), low=-5, high=5)
    return fn(x, xp)


@case("recurrent.rnn_step_backward")
def _rnn_step_backward(fn, xp):
    grad_h, h = arrays(xp, 91, (2, 6), (2, 6), low=-1, high=1)
    return fn(grad_h, h), fn(grad_h, h, put(xp, np.float32(1.0)))


def _rnn_inputs(xp, seq=3):
    return arrays(xp, 92, (2, seq, 3), (4, 3), (4, 4), (4,), (2, 4), high=1)


@case("recurrent.rnn_forward")
def _rnn_forward(fn, xp):
    x, w_ih, w_hh, bias, h0 = _rnn_inputs(xp)
    return (
        fn(x, w_ih, w_hh, bias, h0, xp),
        fn(x, w_ih, w_hh, bias, None, xp),
        fn(x[:, :1, :], w_ih, w_hh, bias, None, xp),
    )


@case("recurrent.rnn_backward")
def _rnn_backward(fn, xp):
    x, w_ih, w_hh, bias, h0 = _rnn_inputs(xp)
    results = []
    for x_, h0_ in ((x, h0), (x, None), (x[:, :1, :], None), (x[:1, :1, :], h0[:1, :])):
        hs = rnn_forward(x_, w_ih, w_hh, bias, h0_, xp)
        (grad_hs,) = arrays(xp, 93, tuple(hs.shape))
        results.append(fn(grad_hs, x_, hs, h0_, w_ih, w_hh, xp))
    return results


def _lstm_inputs(xp):
    return arrays(xp, 94, (2, 3, 3), (3, 16), (4, 16), (16,), (2, 4), (2, 4), high=1)


@case("recurrent.lstm_gate_constants")
def _lstm_gate_constants(fn, xp):
    (like,) = arrays(xp, 95, (2, 12))
    return fn(3, like, xp)


@case("recurrent.lstm_cell")
def _lstm_cell(fn, xp):
    z, c_prev = arrays(xp, 96, (2, 16), (2, 4))
    return fn(z, c_prev, 4, xp), fn(z, None, 4, xp)


@case("recurrent.lstm_cell_backward")
def _lstm_cell_backward(fn, xp):
    z, c_prev, dh, dc = arrays(xp, 97, (2, 16), (2, 4), (2, 4), (2, 4))
    gates, t, _, ct, _ = lstm_cell(z, c_prev, 4, xp)
    gates0, t0, _, ct0, _ = lstm_cell(z, None, 4, xp)
    return fn(dh, dc, gates, t, ct, c_prev, 4, xp), fn(dh, None, gates0, t0, ct0, None, 4, xp)


@case("recurrent.lstm_forward")
def _lstm_forward(fn, xp):
    x, k_ih, k_hh, bias, h0, c0 = _lstm_inputs(xp)
    return fn(x, k_ih, k_hh, bias, h0, c0, xp), fn(x[:, :1, :], k_ih, k_hh, bias, None, None, xp)


@case("recurrent.lstm_backward")
def _lstm_backward(fn, xp):
    x, k_ih, k_hh, bias, h0, c0 = _lstm_inputs(xp)
    results = []
    for x_, h0_, c0_ in ((x, h0, c0), (x, None, None), (x[:, :1, :], None, None), (x[:, :1, :], h0, c0)):
        hs, _, _, cache = lstm_forward(x_, k_ih, k_hh, bias, h0_, c0_, xp)
        (grad_hs,) = arrays(xp, 98, tuple(hs.shape))
        results.append(fn(grad_hs, x_, hs, cache, k_ih, k_hh, xp))
    return results


# ----------------------------------------------------------------------------- rope
@case("rope.rope_frequencies")
def _rope_frequencies(fn, xp):
    return fn(1e6, 5), fn(10000.0, 8, np.float32)


@case("rope.rope_tables_host")
def _rope_tables_host(fn, xp):
    return fn(rope_frequencies(10000.0, 8, np.float32), 6, 1.25)


@case("rope.rope_tables")
def _rope_tables(fn, xp):
    return fn(rope_frequencies(10000.0, 8, np.float32), 6, 1.0, xp), fn(rope_frequencies(1e6, 5), 3, 1.0, xp)


@case("rope.rope_apply", "rope.rope_apply_backward")
def _rope_apply(fn, xp):
    cos, sin = rope_tables(rope_frequencies(10000.0, 4), 5, 1.0, xp)  # [5, 4]
    (x,) = arrays(xp, 100, (5, 3, 6))
    per_head = (xp.concat([cos, cos[:, :1]], axis=1), xp.concat([sin, sin[:, :1] * 0.0], axis=1))  # odd width 5
    return fn(x, cos, sin, xp), fn(x[:, :, :4], cos, sin, xp), fn(x, *per_head, xp)


# ----------------------------------------------------------------------------- softmax
@case("softmax.softmax_forward")
def _softmax_forward(fn, xp):
    (z,) = arrays(xp, 110, (3, 5), low=-4, high=4)
    return [fn(z, temperature, xp) for temperature in (1.0, 0.0, 0.5, -2.0)]


@case("softmax.softmax_unnormalized")
def _softmax_unnormalized(fn, xp):
    (z,) = arrays(xp, 111, (3, 5), low=-4, high=4)
    return fn(z, xp), fn(z * 1.0, xp, overwrite=True)


@case("softmax.softmax_backward")
def _softmax_backward(fn, xp):
    z, grad = arrays(xp, 112, (3, 5), (3, 5))
    return [fn(grad, softmax_forward(z, temperature, xp), temperature, xp) for temperature in (1.0, 0.5)]


@case("softmax.sparsemax_forward")
def _sparsemax_forward(fn, xp):
    (z,) = arrays(xp, 113, (3, 6), low=-1, high=1)
    return fn(z, xp), fn(z * 10.0, xp)


@case("softmax.sparsemax_backward")
def _sparsemax_backward(fn, xp):
    z, grad = arrays(xp, 114, (3, 6), (3, 6), low=-1, high=1)
    return fn(grad, sparsemax_forward(z, xp), xp)


@case("softmax.entmax_blend_forward")
def _entmax_blend_forward(fn, xp):
    (z,) = arrays(xp, 115, (2, 5), low=-1, high=1)
    return [fn(z, alpha, xp) for alpha in (1.0, 1.5, 2.0)]


@case("softmax.entmax_blend_backward")
def _entmax_blend_backward(fn, xp):
    z, grad = arrays(xp, 116, (2, 5), (2, 5), low=-1, high=1)
    results = []
    for alpha in (1.0, 1.5, 2.0):
        p, cache = entmax_blend_forward(z, alpha, xp)
        results.append(fn(grad, p, alpha, cache, xp))
    return results


@case("softmax.gumbel_noise")
def _gumbel_noise(fn, xp):
    (u,) = arrays(xp, 117, (8,), low=0.0, high=1.0)
    return fn(xp.concat([u, put(xp, np.zeros(1, np.float32))]), xp)


# ----------------------------------------------------------------------------- swiglu (layer)
def _swiglu_inputs(xp):
    return arrays(xp, 120, (3, 4), (4, 6), (6,), (4, 6), (6,), (6, 4), (4,), high=1)


@case("swiglu.swiglu_forward")
def _swiglu_forward(fn, xp):
    return fn(*_swiglu_inputs(xp), xp)


@case("swiglu.swiglu_backward")
def _swiglu_backward(fn, xp):
    x, w_gate, b_gate, w_up, b_up, w_down, b_down = _swiglu_inputs(xp)
    y, cache = swiglu_forward(x, w_gate, b_gate, w_up, b_up, w_down, b_down, xp)
    (grad_y,) = arrays(xp, 121, tuple(y.shape))
    return fn(grad_y, x, cache, w_gate, w_up, w_down, xp)


# ----------------------------------------------------------------------------- transformer (LLM inference)
@case("transformer.swiglu")
def _swiglu_activation(fn, xp):
    gate, up = arrays(xp, 130, (3, 5), (3, 5), low=-6, high=6)
    return fn(gate, up, xp)


@case("transformer.gelu_tanh")
def _gelu_tanh(fn, xp):
    (x,) = arrays(xp, 131, (3, 5), low=-6, high=6)
    return fn(x, xp)


def _qkv(xp, t=5, s=7, heads=4, kv_heads=2, head_dim=3):
    return arrays(xp, 132, (t, heads, head_dim), (kv_heads, s, head_dim), (kv_heads, s, head_dim))


@case("transformer.causal_attention")
def _causal_attention(fn, xp):
    q, k, v = _qkv(xp)
    return fn(q, k, v, 2, 0.4, xp), fn(q, k, v, 2, 0.4, xp, block=2), fn(q[-1:, ...], k, v, 6, 0.4, xp)


@case("transformer.causal_attention_block")
def _causal_attention_block(fn, xp):
    q, k, v = _qkv(xp)
    return fn(q, k, v, 2, 0.4, xp), fn(q[:2, ...], k[:, :4, :], v[:, :4, :], 2, 0.4, xp)


@case("transformer.decode_attention")
def _decode_attention(fn, xp):
    q, k, v = _qkv(xp, t=1)
    visible = put(xp, np.arange(7) <= 4)
    return fn(q, k, v, visible, 0.4, xp)
