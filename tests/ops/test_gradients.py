"""Every ``*_backward`` of ``loom.ops`` against central finite differences, on the namespace under test.

Each check differentiates ``sum(forward(inputs) * r)`` in float64 with respect to every
input the backward pass returns a gradient for (weights included). With ``--backend
strict`` the ops run on ``array_api_strict``, so these are the finite-difference checks
of the ``strict`` CI step.
"""

from __future__ import annotations

import numpy as np
import pytest

from loom.ops.activations import activate, activation_backward
from loom.ops.attention import mha_backward, mha_forward
from loom.ops.combine import (
    avg_backward,
    avg_forward,
    concat_backward,
    concat_forward,
    grid_scatter_backward,
    grid_scatter_forward,
)
from loom.ops.conv2d import conv2d_backward, conv2d_forward
from loom.ops.dense import dense_backward, dense_forward
from loom.ops.norms import layer_norm_backward, layer_norm_forward, rms_norm_backward, rms_norm_forward
from loom.ops.recurrent import lstm_backward, lstm_forward, rnn_backward, rnn_forward
from loom.ops.rope import rope_apply, rope_apply_backward, rope_frequencies, rope_tables
from loom.ops.softmax import (
    entmax_blend_backward,
    entmax_blend_forward,
    softmax_backward,
    softmax_forward,
    sparsemax_backward,
    sparsemax_forward,
)
from loom.ops.swiglu import swiglu_backward, swiglu_forward
from tests.ops.helpers import fd_check
from tests.ops.op_cases import ACTIVATION_IDS


def uniform(seed: int, *shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape)


class Tape:
    """Keeps what the last forward call returned, for the backward closure."""

    def __init__(self) -> None:
        self.saved: dict = {}


@pytest.mark.parametrize("act", ACTIVATION_IDS)
def test_activation_backward(xp, act: int) -> None:
    tape = Tape()

    def forward(x):
        tape.saved = {"x": x, "y": activate(x, act, xp)}
        return tape.saved["y"]

    # away from the kinks of the piecewise activations (0, +-1, +-3, 6)
    x = np.array([-4.3, -2.2, -0.7, -0.4, 0.3, 0.6, 1.7, 2.4, 4.1, 6.5])
    fd_check(xp, forward, lambda r: {"x": activation_backward(r, tape.saved["x"], tape.saved["y"], act, xp)}, {"x": x})


@pytest.mark.parametrize(("act", "batch"), [(1, 3), (2, 1), (6, 2), (0, 2)])
def test_dense(xp, act: int, batch: int) -> None:
    tape = Tape()

    def forward(x, kernel, bias):
        y, pre = dense_forward(x, kernel, bias, act, xp)
        tape.saved = {"x": x, "kernel": kernel, "pre": pre, "y": y}
        return y

    def backward(r):
        s = tape.saved
        grad_x, grad_kernel, grad_bias = dense_backward(r, s["x"], s["pre"], s["kernel"], act, xp, s["y"])
        return {"x": grad_x, "kernel": grad_kernel, "bias": grad_bias}

    inputs = {"x": uniform(1, batch, 4, low=0.1, high=1.0), "kernel": uniform(2, 4, 3), "bias": uniform(3, 3)}
    fd_check(xp, forward, backward, inputs)


@pytest.mark.parametrize(("stride", "padding", "act"), [(1, 0, 1), (2, 1, 2), (1, 1, 5)])
def test_conv2d(xp, stride: int, padding: int, act: int) -> None:
    tape = Tape()
    out = (5 + 2 * padding - 3) // stride + 1

    def forward(x, kernel, bias):
        y, pre, cols = conv2d_forward(x, kernel, bias, stride, padding, out, out, act, xp)
        tape.saved = {"pre": pre, "cols": cols, "kernel": kernel, "shape": tuple(x.shape), "y": y}
        return y

    def backward(r):
        s = tape.saved
        grad_x, grad_kernel, grad_bias = conv2d_backward(
            r, s["pre"], s["cols"], s["kernel"], s["shape"], stride, padding, act, xp, s["y"]
        )
        return {"x": grad_x, "kernel": grad_kernel, "bias": grad_bias}

    inputs = {"x": uniform(4, 2, 2, 5, 5), "kernel": uniform(5, 3, 2, 3, 3), "bias": uniform(6, 3)}
    fd_check(xp, forward, backward, inputs)


@pytest.mark.parametrize(("seq", "with_state"), [(4, True), (3, False), (1, False)])
def test_rnn(xp, seq: int, with_state: bool) -> None:
    tape = Tape()

    def forward(x, w_ih, w_hh, bias, h0):
        h0 = h0 if with_state else None
        tape.saved = {"x": x, "w_ih": w_ih, "w_hh": w_hh, "h0": h0, "hs": rnn_forward(x, w_ih, w_hh, bias, h0, xp)}
        return tape.saved["hs"]

    def backward(r):
        s = tape.saved
        grad_x, grad_w_ih, grad_w_hh, grad_bias = rnn_backward(r, s["x"], s["hs"], s["h0"], s["w_ih"], s["w_hh"], xp)
        grads = {"x": grad_x, "w_ih": grad_w_ih, "bias": grad_bias}
        if grad_w_hh is not None:
            grads["w_hh"] = grad_w_hh
        return grads

    inputs = {
        "x": uniform(7, 2, seq, 3),
        "w_ih": uniform(8, 4, 3),
        "w_hh": uniform(9, 4, 4),
        "bias": uniform(10, 4),
        "h0": uniform(11, 2, 4),
    }
    fd_check(xp, forward, backward, inputs)


@pytest.mark.parametrize(("seq", "with_state"), [(4, True), (3, False), (1, False), (1, True)])
def test_lstm(xp, seq: int, with_state: bool) -> None:
    tape = Tape()

    def forward(x, kernel_ih, kernel_hh, bias, h0, c0):
        h0, c0 = (h0, c0) if with_state else (None, None)
        hs, _, _, cache = lstm_forward(x, kernel_ih, kernel_hh, bias, h0, c0, xp)
        tape.saved = {"x": x, "hs": hs, "cache": cache, "kernel_ih": kernel_ih, "kernel_hh": kernel_hh}
        return hs

    def backward(r):
        s = tape.saved
        grad_x, grad_ih, grad_hh, grad_bias = lstm_backward(
            r, s["x"], s["hs"], s["cache"], s["kernel_ih"], s["kernel_hh"], xp
        )
        grads = {"x": grad_x, "kernel_ih": grad_ih, "bias": grad_bias}
        if grad_hh is not None:
            grads["kernel_hh"] = grad_hh
        return grads

    inputs = {
        "x": uniform(12, 2, seq, 3),
        "kernel_ih": uniform(13, 3, 16),
        "kernel_hh": uniform(14, 4, 16),
        "bias": uniform(15, 16),
        "h0": uniform(16, 2, 4),
        "c0": uniform(17, 2, 4),
    }
    fd_check(xp, forward, backward, inputs)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "causal"), [(4, 2, 3, True), (2, 2, 4, False)])
def test_multi_head_attention(xp, heads: int, kv_heads: int, head_dim: int, causal: bool) -> None:
    tape = Tape()

    def forward(x, wq, bq, wk, bk, wv, bv, wo, bo):
        y, cache = mha_forward(x, wq, bq, wk, bk, wv, bv, wo, bo, heads, kv_heads, causal, 1e4, xp)
        tape.saved = {"cache": cache, "wo": wo}
        return y

    def backward(r):
        grad_x, grads = mha_backward(r, tape.saved["cache"], tape.saved["wo"], xp)
        names = {"q_weights": "wq", "q_bias": "bq", "k_weights": "wk", "k_bias": "bk", "v_weights": "wv"}
        names |= {"v_bias": "bv", "output_weight": "wo", "output_bias": "bo"}
        return {"x": grad_x, **{names[key]: value for key, value in grads.items()}}

    d, q_cols, kv_cols = 6, heads * head_dim, kv_heads * head_dim
    shapes = {"x": (2, 4, d), "wq": (d, q_cols), "bq": (q_cols,), "wk": (d, kv_cols), "bk": (kv_cols,)}
    shapes |= {"wv": (d, kv_cols), "bv": (kv_cols,), "wo": (q_cols, d), "bo": (d,)}
    inputs = {name: uniform(20 + i, *shape) for i, (name, shape) in enumerate(shapes.items())}
    fd_check(xp, forward, backward, inputs, samples=8)


def test_rope(xp) -> None:
    cos, sin = rope_tables(rope_frequencies(100.0, 5), 4, 1.0, xp)  # [4, 4]: rotary width 4 of head size 6
    fd_check(
        xp,
        lambda x: rope_apply(x, cos, sin, xp),
        lambda r: {"x": rope_apply_backward(r, cos, sin, xp)},
        {"x": uniform(30, 4, 3, 6)},
    )


def test_layer_norm(xp) -> None:
    tape = Tape()

    def forward(x, gamma, beta):
        y, cache = layer_norm_forward(x, gamma, beta, 1e-5, xp)
        tape.saved = {"cache": cache, "gamma": gamma}
        return y

    def backward(r):
        grad_x, grad_gamma, grad_beta = layer_norm_backward(r, tape.saved["cache"], tape.saved["gamma"], xp)
        return {"x": grad_x, "gamma": grad_gamma, "beta": grad_beta}

    fd_check(xp, forward, backward, {"x": uniform(31, 3, 5), "gamma": uniform(32, 5), "beta": uniform(33, 5)})


def test_rms_norm(xp) -> None:
    tape = Tape()

    def forward(x, gamma):
        y, inv_rms = rms_norm_forward(x, gamma, 1e-6, xp)
        tape.saved = {"x": x, "inv_rms": inv_rms, "gamma": gamma}
        return y

    def backward(r):
        s = tape.saved
        grad_x, grad_gamma = rms_norm_backward(r, s["x"], s["inv_rms"], s["gamma"], xp)
        return {"x": grad_x, "gamma": grad_gamma}

    fd_check(xp, forward, backward, {"x": uniform(34, 3, 5), "gamma": uniform(35, 5)})


@pytest.mark.parametrize("temperature", [1.0, 0.5, -2.0])
def test_softmax(xp, temperature: float) -> None:
    tape = Tape()

    def forward(z):
        tape.saved["p"] = softmax_forward(z, temperature, xp)
        return tape.saved["p"]

    fd_check(
        xp, forward, lambda r: {"z": softmax_backward(r, tape.saved["p"], temperature, xp)}, {"z": uniform(34, 3, 5)}
    )


def test_sparsemax_and_entmax(xp) -> None:
    tape = Tape()
    z = np.array([[0.9, 0.1, -0.6, 0.45, -0.2], [0.05, 0.3, 0.2, -1.0, 0.7]])  # no support boundary within eps

    def sparse(z):
        tape.saved["p"] = sparsemax_forward(z, xp)
        return tape.saved["p"]

    fd_check(xp, sparse, lambda r: {"z": sparsemax_backward(r, tape.saved["p"], xp)}, {"z": z})
    for alpha in (1.0, 1.5, 2.0):

        def blend(z, alpha=alpha):
            tape.saved["p"], tape.saved["cache"] = entmax_blend_forward(z, alpha, xp)
            return tape.saved["p"]

        def blend_grad(r, alpha=alpha):
            return {"z": entmax_blend_backward(r, tape.saved["p"], alpha, tape.saved["cache"], xp)}

        fd_check(xp, blend, blend_grad, {"z": z})


def test_swiglu(xp) -> None:
    tape = Tape()

    def forward(x, w_gate, b_gate, w_up, b_up, w_down, b_down):
        y, cache = swiglu_forward(x, w_gate, b_gate, w_up, b_up, w_down, b_down, xp)
        tape.saved = {"x": x, "cache": cache, "w": (w_gate, w_up, w_down)}
        return y

    def backward(r):
        s = tape.saved
        grad_x, grads = swiglu_backward(r, s["x"], s["cache"], *s["w"], xp)
        names = {"gate_weights": "w_gate", "up_weights": "w_up", "down_weights": "w_down"}
        names |= {"gate_bias": "b_gate", "up_bias": "b_up", "down_bias": "b_down"}
        return {"x": grad_x, **{names[key]: value for key, value in grads.items()}}

    shapes = {"x": (3, 4), "w_gate": (4, 5), "b_gate": (5,), "w_up": (4, 5), "b_up": (5,), "w_down": (5, 4)}
    inputs = {name: uniform(40 + i, *shape) for i, (name, shape) in enumerate({**shapes, "b_down": (4,)}.items())}
    fd_check(xp, forward, backward, inputs)


def test_parallel_merges(xp) -> None:
    a, b = uniform(50, 6), uniform(51, 4)
    fd_check(
        xp,
        lambda a, b: concat_forward([a, b], xp),
        lambda r: dict(zip("ab", concat_backward(r, [6, 4]), strict=True)),
        {"a": a, "b": b},
    )
    fd_check(
        xp,
        lambda a, b: avg_forward([a, b], xp),
        lambda r: dict(zip("ab", avg_backward(r, 2), strict=True)),
        {"a": a, "b": a[::-1].copy()},
    )
    fd_check(
        xp,
        lambda a, b: grid_scatter_forward([a, b], [1, 0], 2, xp),
        lambda r: dict(zip("ab", grid_scatter_backward(r, [1, 0], [6, 4], 2, xp), strict=True)),
        {"a": a, "b": b},
    )


def test_a_wrong_gradient_fails_the_check(xp) -> None:
    """The checker itself: a backward pass off by a factor is caught."""
    tape = Tape()

    def forward(z):
        tape.saved["p"] = softmax_forward(z, 1.0, xp)
        return tape.saved["p"]

    with pytest.raises(AssertionError, match="finite differences"):
        fd_check(
            xp, forward, lambda r: {"z": softmax_backward(r, tape.saved["p"], 1.0, xp) * 1.01}, {"z": uniform(60, 2, 4)}
        )
