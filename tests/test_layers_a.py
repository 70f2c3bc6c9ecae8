"""Conv2D, multi-head attention, LayerNorm, RMSNorm, SwiGLU and Residual layers.

Every kind goes through :func:`tests.layer_harness.check_layer` (shape,
finite-difference gradients w.r.t. input and every parameter, bundle round
trip, NumPy/CuPy agreement); the ops are also compared with direct loop
implementations of Go LOOM's formulas (``spec/layers.md``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import loom
from loom.errors import ConfigError, ShapeError
from loom.ops.attention import mha_forward
from loom.ops.conv2d import conv2d_forward
from loom.ops.swiglu import swiglu_forward
from tests.layer_harness import check_layer


# ----------------------------------------------------------------------------- reference loops
def conv2d_loop(x, kernel, bias, stride, padding, out_h, out_w):
    """Go ``nn/cnn.go`` forward (pre-activation), straight loops in float64."""
    batch, channels, height, width = x.shape
    filters, _, k, _ = kernel.shape
    out = np.zeros((batch, filters, out_h, out_w))
    for b in range(batch):
        for f in range(filters):
            for oh in range(out_h):
                for ow in range(out_w):
                    s = float(bias[f])
                    for c in range(channels):
                        for kh in range(k):
                            for kw in range(k):
                                ih, iw = oh * stride + kh - padding, ow * stride + kw - padding
                                if 0 <= ih < height and 0 <= iw < width:
                                    s += x[b, c, ih, iw] * kernel[f, c, kh, kw]
                    out[b, f, oh, ow] = s
    return out


def mha_loop(x, wq, bq, wk, bk, wv, bv, wo, bo, heads, kv_heads, head_dim, causal=True, theta=1e6):
    """Go ``nn/attention.go`` forward for one sequence ``x [S, d]`` (layers.md §3), float64 loops."""
    seq, d = x.shape
    kv_dim = kv_heads * head_dim
    q = x @ wq + bq
    k = x @ wk[:, :kv_dim] + bk[:kv_dim]
    v = x @ wv[:, :kv_dim] + bv[:kv_dim]
    half = head_dim // 2
    freq = np.zeros(head_dim)
    for i in range(half):
        freq[i] = freq[i + half] = 1.0 / theta ** (2 * i / head_dim)

    def rope(vec, pos):
        out = np.empty(head_dim)
        for t in range(head_dim):
            r = -vec[t + half] if t < half else vec[t - half]
            ang = freq[t] * pos
            out[t] = vec[t] * math.cos(ang) + r * math.sin(ang)
        return out

    concat = np.zeros((seq, d))
    for h in range(heads):
        kvh = h // (heads // kv_heads)
        qh = [rope(q[s, h * head_dim : (h + 1) * head_dim], s) for s in range(seq)]
        kh = [rope(k[s, kvh * head_dim : (kvh + 1) * head_dim], s) for s in range(seq)]
        for qi in range(seq):
            scores = np.array([np.dot(qh[qi], kh[ki]) / math.sqrt(head_dim) for ki in range(seq)])
            if causal:
                scores[qi + 1 :] = -1e9
            p = np.exp(scores - scores.max())
            p /= p.sum()
            for t in range(head_dim):
                concat[qi, h * head_dim + t] = sum(p[ki] * v[ki, kvh * head_dim + t] for ki in range(seq))
    return concat @ wo + bo


# ----------------------------------------------------------------------------- conv2d
@pytest.mark.parametrize(
    ("channels", "size", "k", "stride", "padding", "filters", "batch"),
    [(1, 5, 3, 1, 0, 2, 1), (2, 6, 3, 2, 1, 3, 1), (3, 7, 2, 3, 2, 2, 2), (2, 4, 3, 1, 1, 4, 2)],
)
def test_conv2d_matches_direct_loop(backend, channels, size, k, stride, padding, filters, batch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, channels, size, size + 1)).astype(np.float32)
    kernel = rng.standard_normal((filters, channels, k, k)).astype(np.float32)
    bias = rng.standard_normal(filters).astype(np.float32)
    out_h = (size + 2 * padding - k) // stride + 1
    out_w = (size + 1 + 2 * padding - k) // stride + 1
    xp = backend.xp
    _, pre, _ = conv2d_forward(
        backend.asarray(x), backend.asarray(kernel), backend.asarray(bias), stride, padding, out_h, out_w, 5, xp
    )
    expected = conv2d_loop(x.astype(np.float64), kernel, bias, stride, padding, out_h, out_w)
    np.testing.assert_allclose(loom.to_numpy(pre), expected, rtol=1e-5, atol=1e-5)


def test_conv2d_configured_output_larger_than_natural(backend):
    """LOOM takes oH/oW from the config; taps past the input read zeros."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    kernel = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    bias = np.zeros(2, np.float32)
    _, pre, _ = conv2d_forward(
        backend.asarray(x), backend.asarray(kernel), backend.asarray(bias), 1, 0, 3, 4, 5, backend.xp
    )
    np.testing.assert_allclose(loom.to_numpy(pre), conv2d_loop(x, kernel, bias, 1, 0, 3, 4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("geometry", "batch", "activation"),
    [
        (
            {"input_channels": 1, "input_height": 5, "input_width": 5, "kernel_size": 3, "stride": 1, "filters": 2},
            1,
            "tanh",
        ),
        (
            {
                "input_channels": 2,
                "input_height": 6,
                "input_width": 6,
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
                "filters": 3,
            },
            1,
            "sigmoid",
        ),
        (
            {
                "input_channels": 3,
                "input_height": 5,
                "input_width": 4,
                "kernel_size": 2,
                "stride": 1,
                "padding": 1,
                "filters": 2,
            },
            2,
            "softplus",
        ),
        (
            {
                "input_channels": 2,
                "input_height": 4,
                "input_width": 4,
                "kernel_size": 3,
                "stride": 1,
                "filters": 2,
                "output_height": 2,
                "output_width": 2,
            },
            2,
            "leaky_relu",
        ),
    ],
)
def test_conv2d_layer(backend, geometry, batch, activation):
    layer = {"type": "conv2d", "activation": activation, **geometry}
    c, h, w = geometry["input_channels"], geometry["input_height"], geometry["input_width"]
    k, s, p = geometry["kernel_size"], geometry["stride"], geometry.get("padding", 0)
    out = geometry["filters"] * ((h + 2 * p - k) // s + 1) * ((w + 2 * p - k) // s + 1)
    check_layer(layer, input_size=c * h * w, output_size=out, batch_size=batch, backend=backend)


def test_conv2d_then_dense_with_inferred_sizes(backend):
    layer = {
        "type": "conv2d",
        "input_channels": 1,
        "input_height": 6,
        "input_width": 6,
        "kernel_size": 3,
        "stride": 1,
        "filters": 2,
        "activation": "relu",
    }
    report = check_layer(
        layer,
        input_size=36,
        backend=backend,
        input_scale=2.0,
        extra_layers=[{"type": "dense", "output_size": 3, "activation": "sigmoid"}],
    )
    conv = report.network.layers[0]
    assert (conv.output_height, conv.output_width) == (4, 4)
    assert report.network.layers[1].input_size == 32


def test_conv2d_config_errors():
    base = {"type": "conv2d", "input_channels": 1, "input_height": 4, "input_width": 4, "kernel_size": 3, "filters": 2}
    net = {"batch_size": 1, "grid_rows": 1, "grid_cols": 1, "layers_per_cell": 1}
    with pytest.raises(ConfigError, match=r"layers\[0\]\.stride"):
        loom.create_network_from_json({**net, "layers": [base]})
    with pytest.raises(ConfigError, match=r"layers\[0\]\.filters"):
        loom.create_network_from_json({**net, "layers": [{**base, "stride": 1, "filters": 0}]})
    with pytest.raises(ConfigError, match=r"layers\[0\]\.input_channels"):
        loom.create_network_from_json({**net, "input_size": 17, "layers": [{**base, "stride": 1}]})


def test_conv2d_rejects_wrong_input_length(backend):
    net = loom.create_network_from_json(
        {
            "batch_size": 1,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [
                {
                    "type": "conv2d",
                    "input_channels": 1,
                    "input_height": 4,
                    "input_width": 4,
                    "kernel_size": 3,
                    "stride": 1,
                    "filters": 2,
                }
            ],
        },
        backend=backend,
    )
    with pytest.raises(ShapeError, match=r"layers\[0\]"):
        net.forward(np.zeros(15, np.float32))


# ----------------------------------------------------------------------------- attention
def _mha_params(rng, d, kv_dim):
    return [
        rng.uniform(-0.5, 0.5, shape).astype(np.float32)
        for shape in ((d, d), (d,), (d, kv_dim), (kv_dim,), (d, kv_dim), (kv_dim,), (d, d), (d,))
    ]


@pytest.mark.parametrize(
    ("d", "heads", "kv_heads", "causal", "theta"),
    [(8, 2, 2, True, 1e6), (12, 4, 2, True, 1e6), (6, 2, 1, False, 100.0), (10, 2, 2, True, 10.0)],
)
def test_mha_matches_go_loops(backend, d, heads, kv_heads, causal, theta):
    rng = np.random.default_rng(4)
    seq, hd = 5, d // heads
    params = _mha_params(rng, d, kv_heads * hd)
    x = rng.standard_normal((2, seq, d)).astype(np.float32)
    y, _ = mha_forward(
        backend.asarray(x), *(backend.asarray(p) for p in params), heads, kv_heads, causal, theta, backend.xp
    )
    for b in range(2):  # every sample is its own sequence
        expected = mha_loop(x[b].astype(np.float64), *params, heads, kv_heads, hd, causal, theta)
        np.testing.assert_allclose(loom.to_numpy(y)[b], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "batch", "seq"),
    [
        ({}, 1, 4),
        ({"num_kv_heads": 2}, 1, 3),  # GQA: 4 query heads share 2 KV heads
        ({"num_kv_heads": 1, "causal": False}, 2, 3),
        ({"rope_theta": 50.0}, 2, 4),
    ],
)
def test_mha_layer(backend, extra, batch, seq):
    layer = {"type": "multi_head_attention", "d_model": 8, "num_heads": 4, **extra}
    report = check_layer(layer, input_size=seq * 8, output_size=seq * 8, batch_size=batch, backend=backend)
    saved = json.loads(report.network.save_model_to_string("m"))["models"][0]["cfg"]["layers"][0]
    for key, value in extra.items():
        assert saved[key] == value
    cfg = report.network.layers[0]
    assert cfg.causal == extra.get("causal", True) and cfg.rope_theta == extra.get("rope_theta", 1e6)


def test_mha_odd_head_dim_and_go_truncation(backend):
    """d_model 6 with 2 heads: head size 3 (last component not rotated)."""
    layer = {"type": "mha", "d_model": 6, "num_heads": 2}
    check_layer(layer, input_size=18, output_size=18, backend=backend)
    # d_model 7 with 2 heads: hd 3, columns 6 of Q and row 6 of O unused, K/V read with row stride 6.
    report = check_layer({"type": "mha", "d_model": 7, "num_heads": 2}, input_size=21, output_size=21, backend=backend)
    cfg = report.network.layers[0]
    assert tuple(cfg.params["k_weights"].shape) == (7, 7)


def test_mha_truncation_matches_go_rule(backend):
    rng = np.random.default_rng(5)
    d, heads, hd, seq = 7, 2, 3, 4
    net = loom.create_network_from_json(
        {
            "batch_size": 1,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [{"type": "mha", "d_model": d, "num_heads": heads}],
        },
        backend=backend,
        seed=1,
    )
    cfg = net.layers[0]
    p = {k: loom.to_numpy(v).astype(np.float64) for k, v in cfg.params.items()}
    for name in ("q_bias", "k_bias", "v_bias", "output_bias"):
        p[name] = rng.uniform(-0.3, 0.3, d)
        cfg.params[name] = backend.asarray(p[name])
    x = rng.standard_normal((seq, d))
    kv = heads * hd
    wk = p["k_weights"].reshape(-1)[: d * kv].reshape(d, kv)
    wv = p["v_weights"].reshape(-1)[: d * kv].reshape(d, kv)
    q_used = p["q_weights"].copy()
    q_used[:, kv:] = 0
    expected = mha_loop(
        x, q_used, p["q_bias"], wk, p["k_bias"], wv, p["v_bias"], p["output_weight"], p["output_bias"], heads, heads, hd
    )
    np.testing.assert_allclose(loom.to_numpy(net.forward(x.reshape(-1))), expected.reshape(-1), rtol=1e-4, atol=1e-5)


def test_mha_config_errors(backend):
    net = {"batch_size": 1, "grid_rows": 1, "grid_cols": 1, "layers_per_cell": 1}
    with pytest.raises(ConfigError, match=r"layers\[0\]\.d_model"):
        loom.create_network_from_json({**net, "layers": [{"type": "mha", "num_heads": 2}]})
    with pytest.raises(ConfigError, match=r"layers\[0\]\.num_heads"):
        loom.create_network_from_json({**net, "layers": [{"type": "mha", "d_model": 8}]})
    with pytest.raises(ConfigError, match=r"layers\[0\]\.num_kv_heads"):
        loom.create_network_from_json(
            {**net, "layers": [{"type": "mha", "d_model": 8, "num_heads": 4, "num_kv_heads": 3}]}
        )
    model = loom.create_network_from_json(
        {**net, "layers": [{"type": "mha", "d_model": 8, "num_heads": 2}]}, backend=backend
    )
    with pytest.raises(ShapeError, match=r"layers\[0\]"):
        model.forward(np.zeros(12, np.float32))


def test_mha_batch_samples_are_independent(backend):
    config = {
        "batch_size": 2,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 1,
        "layers": [{"type": "mha", "d_model": 4, "num_heads": 2}],
    }
    net = loom.create_network_from_json(config, backend=backend, seed=3)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(12).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    both = loom.to_numpy(net.forward(np.concatenate([a, b])))
    net.batch_size = 1
    np.testing.assert_allclose(both[:12], loom.to_numpy(net.forward(a)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both[12:], loom.to_numpy(net.forward(b)), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- norms
@pytest.mark.parametrize(
    ("kind", "batch", "rows"), [("layer_norm", 1, 1), ("layer_norm", 2, 3), ("rms_norm", 1, 1), ("rms_norm", 2, 3)]
)
def test_norm_layers(backend, kind, batch, rows):
    layer = {"type": kind, "norm_size": 5, "epsilon": 1e-3}
    extra = [{"type": "dense", "output_size": 3, "activation": "tanh"}]  # makes gamma/beta gradients non-trivial
    check_layer(layer, input_size=5 * rows, output_size=5 * rows, batch_size=batch, backend=backend)
    check_layer(layer, input_size=5 * rows, batch_size=batch, backend=backend, extra_layers=extra)


def test_norms_normalise_every_row(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(12).astype(np.float32) * 3 + 1
    for kind in ("layer_norm", "rms_norm"):
        net = loom.create_network_from_json(
            {
                "batch_size": 1,
                "grid_rows": 1,
                "grid_cols": 1,
                "layers_per_cell": 1,
                "layers": [{"type": kind, "norm_size": 4}],
            },
            backend=backend,
        )
        y = loom.to_numpy(net.forward(x)).reshape(3, 4)
        rows = x.reshape(3, 4).astype(np.float64)
        if kind == "layer_norm":
            expected = (rows - rows.mean(1, keepdims=True)) / np.sqrt(rows.var(1, keepdims=True) + 1e-5)
        else:
            expected = rows / np.sqrt((rows**2).mean(1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_rms_norm_partial_row_is_zero_and_epsilon_defaults(backend):
    net = loom.create_network_from_json(
        {
            "batch_size": 1,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [{"type": "rms_norm", "norm_size": 4}],
        },
        backend=backend,
    )
    y = loom.to_numpy(net.forward(np.arange(1, 7, dtype=np.float32)))
    assert y[4:].tolist() == [0.0, 0.0]
    assert net.layers[0].epsilon == pytest.approx(1e-5)  # the builder's default
    net.layers[0].epsilon = 0.0  # as in a Go bundle: 1e-6 at run time
    x = np.array([1e-3, 0, 0, 0], np.float32)
    expected = 1e-3 / math.sqrt(1e-6 / 4 + 1e-6)
    assert loom.to_numpy(net.forward(x))[0] == pytest.approx(expected, rel=1e-5)


def test_norm_requires_norm_size():
    with pytest.raises(ConfigError, match=r"layers\[0\]\.norm_size"):
        loom.create_network_from_json(
            {"batch_size": 1, "grid_rows": 1, "grid_cols": 1, "layers_per_cell": 1, "layers": [{"type": "layer_norm"}]}
        )


# ----------------------------------------------------------------------------- swiglu / residual
@pytest.mark.parametrize(
    ("keys", "batch", "rows"),
    [({"input_size": 4, "output_size": 6}, 1, 1), ({"input_height": 3, "output_height": 5}, 2, 3)],
)
def test_swiglu_layer(backend, keys, batch, rows):
    hidden = keys.get("input_size") or keys["input_height"]
    report = check_layer(
        {"type": "swiglu", **keys},
        input_size=hidden * rows,
        output_size=hidden * rows,
        batch_size=batch,
        backend=backend,
        input_scale=2.0,
    )
    saved = json.loads(report.network.save_model_to_string("m"))["models"][0]["cfg"]["layers"][0]
    assert (saved["input_height"], saved["output_height"]) == (hidden, keys.get("output_size") or keys["output_height"])


def test_swiglu_requires_sizes():
    with pytest.raises(ConfigError, match=r"layers\[0\]\.output_size"):
        loom.create_network_from_json(
            {
                "batch_size": 1,
                "grid_rows": 1,
                "grid_cols": 1,
                "layers_per_cell": 1,
                "layers": [{"type": "swiglu", "input_size": 4}],
            }
        )


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "leaky_relu", "gelu", "linear"])
def test_residual_layer(backend, activation):
    layer = {"type": "residual"} if activation is None else {"type": "residual", "activation": activation}
    report = check_layer(
        layer, input_size=7, output_size=7, batch_size=2, backend=backend, input_scale=2.0, extra_layers=None
    )
    if activation is None:  # ScaledReLU by default
        x = np.array([-1.0, 2.0, 0.5, -3, 1, 1, 1], np.float32)
        report.network.batch_size = 1
        np.testing.assert_allclose(loom.to_numpy(report.network.forward(x)), np.maximum(0, 1.1 * x), rtol=1e-6)


# ----------------------------------------------------------------------------- residual stream
def test_transformer_block_gradients_through_residual_stream(backend):
    """[rms_norm, mha, rms_norm, swiglu]: h = x + Attn(RMS(x)); y = h + MLP(RMS(h)), exact gradients."""
    layer = {"type": "rms_norm", "norm_size": 8}
    extra = [
        {"type": "multi_head_attention", "d_model": 8, "num_heads": 2, "num_kv_heads": 1},
        {"type": "rms_norm", "norm_size": 8},
        {"type": "swiglu", "input_size": 8, "output_size": 12},
    ]
    report = check_layer(layer, input_size=24, batch_size=2, backend=backend, extra_layers=extra, fd_samples=8)
    net = report.network
    net.batch_size = 2
    x = np.random.default_rng(1).standard_normal(48).astype(np.float32)
    net.forward(x)
    _, _, h, normed, y = (loom.to_numpy(a) for a in net.activations())
    p = {k: loom.to_numpy(v) for k, v in net.layers[3].params.items()}
    mlp, _ = swiglu_forward(
        normed.reshape(-1, 8),
        p["gate_weights"],
        p["gate_bias"],
        p["up_weights"],
        p["up_bias"],
        p["down_weights"],
        p["down_bias"],
        np,
    )
    np.testing.assert_allclose(y, h + mlp.reshape(-1), rtol=1e-5, atol=1e-6)  # y = h + MLP(RMS(h))


def test_layer_norm_adds_the_stream(backend):
    """[rms_norm, swiglu, layer_norm]: LayerNorm normalises swiglu(...) + stream, gradients exact."""
    extra = [{"type": "swiglu", "input_size": 4, "output_size": 6}, {"type": "layer_norm", "norm_size": 4}]
    check_layer({"type": "rms_norm", "norm_size": 4}, input_size=8, batch_size=1, backend=backend, extra_layers=extra)


# ----------------------------------------------------------------------------- Go fixtures (forward)
GO_CASES = [
    "conv2d_basic",
    "conv2d_stride_padding",
    "batch2_conv2d",
    "mha_seq4",
    "transformer_block",
    "layernorm_basic",
    "rmsnorm_basic",
    "swiglu_after_rmsnorm",
    "residual_layer",
]


@pytest.mark.parametrize("name", GO_CASES)
def test_go_fixture_forward_and_round_trip(go_fixtures, backend, name):
    fix = json.loads((go_fixtures / f"{name}.json").read_text())
    for which in ("before", "after"):
        text = fix[f"model_{which}"]
        net = loom.load_model_from_string(text, fix["model_id"], backend=backend)
        for x, expected in zip(fix["forward"]["inputs"], fix["forward"][f"outputs_{which}"], strict=True):
            y = np.asarray(loom.to_numpy(net.forward(np.float32(x))), np.float64)
            np.testing.assert_allclose(y, np.float32(expected).astype(np.float64), rtol=1e-5, atol=1e-6)
        assert net.save_model_to_string(fix["model_id"]) == text  # byte-identical with Go's file
