"""RNN, LSTM, Softmax (every variant) and Parallel (every combine mode) through ``check_layer``.

Finite differences in float64 check that every backward is the exact derivative of
its forward (w.r.t. the input and every parameter, branches included); the harness
also round-trips each network through a LOOM bundle and compares NumPy with CuPy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import loom
from loom.errors import ConfigError, ShapeError
from loom.nn.layers import kind_names
from tests.layer_harness import check_layer


def _net(layers: list[dict], *, batch_size: int = 1, input_size: int | None = None, backend=None, seed: int = 0):
    config = {
        "batch_size": batch_size,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": len(layers),
        "layers": layers,
    }
    if input_size:
        config["input_size"] = input_size
    return loom.create_network_from_json(config, backend=backend, seed=seed)


# ----------------------------------------------------------------------------- RNN / LSTM
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize(("seq", "batch"), [(1, 1), (4, 1), (1, 2), (4, 2)])
def test_recurrent_gradients(kind, seq, batch, backend):
    layer = {"type": kind, "input_size": 3, "hidden_size": 4, "seq_length": seq}
    report = check_layer(layer, input_size=3 * seq, batch_size=batch, output_size=4 * seq, backend=backend)
    assert report.output.shape == (batch * seq * 4,)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_infers_input_size_and_seq_length(kind, backend):
    net = _net([{"type": kind, "hidden_size": 5, "seq_length": 3}], input_size=6, backend=backend)
    assert (net.layers[0].input_size, net.layers[0].seq_length) == (2, 3)
    net = _net([{"type": kind, "input_size": 2, "hidden_size": 5}], input_size=8, backend=backend)
    assert net.layers[0].seq_length == 4
    assert net.forward(np.ones(8, np.float32)).shape == (20,)
    with pytest.raises(ConfigError, match=r"layers\[0\]\.seq_length"):
        _net([{"type": kind, "hidden_size": 5}], input_size=6, backend=backend)
    with pytest.raises(ConfigError, match=r"layers\[0\]\.hidden_size"):
        _net([{"type": kind, "input_size": 2, "seq_length": 3}], input_size=6, backend=backend)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_stateful_keeps_state_and_reset_clears_it(kind, backend):
    layer = {"type": kind, "input_size": 3, "hidden_size": 4, "seq_length": 2}
    stateless = _net([layer], backend=backend, seed=1)
    stateful = _net([{**layer, "stateful": True}], backend=backend, seed=1)
    x = np.linspace(-1, 1, 6).astype(np.float32)
    first = loom.to_numpy(stateful.forward(x))
    np.testing.assert_allclose(first, loom.to_numpy(stateless.forward(x)), rtol=1e-6)
    second = loom.to_numpy(stateful.forward(x))
    assert not np.allclose(first, second), "a stateful layer must start from the kept state"
    # the gradient does not flow into the previous call: backward works and has the input's length
    assert stateful.backward(np.ones_like(second)).shape == x.shape
    stateful.reset_state()
    np.testing.assert_allclose(loom.to_numpy(stateful.forward(x)), first, rtol=1e-6)
    np.testing.assert_allclose(loom.to_numpy(stateless.forward(x)), first, rtol=1e-6)  # default: stateless
    assert '"stateful": true' in stateful.save_model_to_string("m")
    assert "stateful" not in stateless.save_model_to_string("m")


def test_lstm_bundle_uses_loom_weight_names(backend):
    net = _net([{"type": "lstm", "input_size": 2, "hidden_size": 3, "seq_length": 1}], backend=backend)
    bundle = json.loads(net.save_model_to_string("m"))
    import base64

    weights = json.loads(base64.b64decode(bundle["models"][0]["weights"]["data"]))["layers"][0]
    assert list(weights) == [
        "weight_ii",
        "weight_if",
        "weight_ig",
        "weight_io",
        "weight_hi",
        "weight_hf",
        "weight_hg",
        "weight_ho",
        "bias_i",
        "bias_f",
        "bias_g",
        "bias_o",
    ]
    assert len(weights["weight_ii"]) == 6 and len(weights["weight_hi"]) == 9 and weights["bias_f"] == [0, 0, 0]


def test_registry_lstm_keeps_forget_bias():
    cfg = loom.init_lstm_layer(2, 3, seed=0)
    weights = loom.nn.layers.kind_for("lstm").export_weights(cfg, loom.to_numpy)
    assert weights["bias_f"].tolist() == [1.0, 1.0, 1.0] and np.any(weights["weight_ii"] != 0)


# ----------------------------------------------------------------------------- Softmax
_SOFTMAX_CASES = {
    "standard": ({"softmax_variant": "standard"}, 6),
    "standard_temperature": ({"softmax_variant": "standard", "temperature": 0.5}, 6),
    "temperature": ({"softmax_variant": "temperature", "temperature": 2.5}, 6),
    "grid": ({"softmax_variant": "grid", "softmax_rows": 2, "softmax_cols": 3, "temperature": 0.7}, 6),
    "hierarchical": ({"softmax_variant": "hierarchical", "hierarchy_levels": [2, 3]}, 6),
    "gumbel": ({"softmax_variant": "gumbel", "temperature": 0.8, "gumbel_noise": True}, 6),
    "masked": ({"softmax_variant": "masked", "mask": [True, False, True, True, False, True]}, 6),
    "masked_no_mask": ({"softmax_variant": "masked"}, 6),
    "sparse": ({"softmax_variant": "sparse"}, 6),
    "sparsemax": ({"softmax_variant": "sparsemax"}, 6),
    "adaptive": ({"softmax_variant": "adaptive", "temperature": 3.0}, 6),
    "mixture": ({"softmax_variant": "mixture", "mixture_weights": [0.25, 0.75]}, 6),
    "entmax_blend": ({"softmax_variant": "entmax", "entmax_alpha": 1.5}, 6),
    "entmax_softmax": ({"softmax_variant": "entmax", "entmax_alpha": 1.0}, 6),
    "entmax_sparse": ({"softmax_variant": "entmax", "entmax_alpha": 2.0}, 6),
}


@pytest.mark.parametrize("case", sorted(_SOFTMAX_CASES))
def test_softmax_variant_gradients(case, backend):
    fields, n = _SOFTMAX_CASES[case]
    head = [{"type": "dense", "input_size": n, "output_size": 3, "activation": "tanh"}]
    report = check_layer(
        {"type": "softmax", **fields}, input_size=n, output_size=n, backend=backend, extra_layers=head, input_scale=2.0
    )
    probs = report.network.layers[0]
    assert probs.softmax_variant in {
        "standard",
        "temperature",
        "grid",
        "hierarchical",
        "gumbel",
        "masked",
        "sparse",
        "adaptive",
        "mixture",
        "entmax",
    }
    alone = _net([{"type": "softmax", **fields}], input_size=n, backend=backend)
    alone.seed(3)
    p = loom.to_numpy(alone.forward(np.linspace(-2, 3, n).astype(np.float32)))
    assert np.all(p >= 0)
    if fields["softmax_variant"] in ("grid", "hierarchical"):
        np.testing.assert_allclose(p.reshape(2, 3).sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert p.sum() == pytest.approx(1.0, rel=1e-5)
    if fields["softmax_variant"] == "masked" and "mask" in fields:
        assert np.all(p[~np.array(fields["mask"])] == 0)


def test_softmax_forward_values(backend):
    z = np.array([1.0, 2.0, 0.5, -1.0], np.float32)
    p = loom.to_numpy(_net([{"type": "softmax", "temperature": 0.5}], input_size=4, backend=backend).forward(z))
    e = np.exp(z / 0.5 - (z / 0.5).max())
    np.testing.assert_allclose(p, e / e.sum(), rtol=1e-6)
    sp = loom.to_numpy(
        _net([{"type": "softmax", "softmax_variant": "sparse"}], input_size=4, backend=backend).forward(
            np.array([1.0, 1.5, 0.5, -1.0], np.float32)
        )
    )
    np.testing.assert_allclose(sp, [0.25, 0.75, 0.0, 0.0], atol=1e-7)


def test_softmax_batch_normalises_each_sample(backend):
    """Go normalises the whole flat batch as one vector; loom gives every sample its own distribution."""
    net = _net([{"type": "softmax"}], batch_size=2, input_size=3, backend=backend)
    x = np.arange(6, dtype=np.float32)
    p = loom.to_numpy(net.forward(x)).reshape(2, 3)
    e = np.exp(x.reshape(2, 3) - x.reshape(2, 3).max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-6)
    grid = _net(
        [{"type": "softmax", "softmax_variant": "grid", "softmax_rows": 1, "softmax_cols": 3}],
        batch_size=2,
        input_size=3,
        backend=backend,
    )
    np.testing.assert_allclose(loom.to_numpy(grid.forward(x)).reshape(2, 3).sum(1), 1.0, rtol=1e-6)


def test_gumbel_noise_is_seeded(backend):
    net = _net([{"type": "softmax", "softmax_variant": "gumbel"}], input_size=5, backend=backend)
    x = np.zeros(5, np.float32)
    net.seed(7)
    a = loom.to_numpy(net.forward(x))
    b = loom.to_numpy(net.forward(x))
    net.seed(7)
    np.testing.assert_array_equal(loom.to_numpy(net.forward(x)), a)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    ("layer", "input_size", "match"),
    [
        (
            {"type": "softmax", "softmax_variant": "grid", "softmax_rows": 2, "softmax_cols": 2},
            6,
            r"layers\[0\]\.softmax_rows: softmax_rows x softmax_cols = 2 x 2 = 4 does not match the softmax "
            r"input length 6",
        ),
        ({"type": "softmax", "softmax_variant": "grid", "softmax_rows": 2}, 6, r"layers\[0\]\.softmax_rows"),
        (
            {"type": "softmax", "softmax_variant": "hierarchical", "hierarchy_levels": [2, 2]},
            6,
            r"layers\[0\]\.hierarchy_levels",
        ),
        (
            {"type": "softmax", "softmax_variant": "masked", "mask": [True, False]},
            3,
            r"layers\[0\]\.mask: the mask length 2 = 2 does not match the softmax input length 3",
        ),
        (
            {"type": "softmax", "softmax_variant": "fancy"},
            3,
            r"layers\[0\]\.softmax_variant: unknown softmax variant 'fancy'; accepted: standard, grid",
        ),
    ],
)
def test_softmax_config_errors(layer, input_size, match, backend):
    with pytest.raises(ConfigError, match=match):
        _net([layer], input_size=input_size, backend=backend)


def test_softmax_size_error_inside_branch_names_path(backend):
    branch = {"type": "softmax", "softmax_variant": "masked", "mask": [True, True]}
    with pytest.raises(ConfigError, match=r"layers\[1\]\.branches\[1\]\.mask"):
        _net(
            [
                {"type": "dense", "input_size": 2, "output_size": 3},
                {"type": "parallel", "branches": [{"type": "dense", "output_size": 2}, branch]},
            ],
            backend=backend,
        )


def test_softmax_saved_as_go(backend):
    net = _net([{"type": "softmax", "softmax_variant": "sparsemax", "temperature": 0.3}], input_size=3, backend=backend)
    layer = json.loads(net.save_model_to_string("m"))["models"][0]["cfg"]["layers"][0]
    assert layer == {"type": "softmax", "activation": "relu", "softmax_variant": "sparse", "temperature": 0.3}


# ----------------------------------------------------------------------------- Parallel
_DENSE = {"type": "dense", "output_size": 3, "activation": "tanh"}


@pytest.mark.parametrize("mode", ["concat", "add", "avg", "average", None])
@pytest.mark.parametrize("batch", [1, 2])
def test_parallel_modes(mode, batch, backend):
    layer = {
        "type": "parallel",
        "branches": [
            {"type": "dense", "output_size": 3, "activation": "sigmoid"},
            {"type": "dense", "output_size": 3, "activation": "relu"},
            {"type": "dense", "output_size": 3, "activation": "leaky_relu"},
        ],
    }
    if mode is not None:
        layer["combine_mode"] = mode
    out = 9 if mode in ("concat", None) else 3
    report = check_layer(layer, input_size=4, batch_size=batch, output_size=out, backend=backend)
    saved = json.loads(report.network.save_model_to_string("m"))["models"][0]["cfg"]["layers"][0]
    assert saved["combine_mode"] == (mode or "concat")


def test_parallel_concat_is_whole_vector_as_go(backend):
    net = _net(
        [{"type": "parallel", "branches": [{"type": "dense", "output_size": 2}, {"type": "dense", "output_size": 1}]}],
        batch_size=2,
        input_size=2,
        backend=backend,
    )
    x = np.array([1.0, 2.0, -1.0, 0.5], np.float32)
    y = loom.to_numpy(net.forward(x))
    b0 = loom.to_numpy(net.layers[0].branches[0].params["kernel"])
    expected0 = np.maximum(1.1 * (x.reshape(2, 2) @ b0 + loom.to_numpy(net.layers[0].branches[0].params["biases"])), 0)
    np.testing.assert_allclose(y[:4], expected0.reshape(-1), rtol=1e-6)  # branch 0, both samples, first


@pytest.mark.parametrize("batch", [1, 2])
def test_grid_scatter_branch_index_and_empty_cell(batch, backend):
    layer = {
        "type": "parallel",
        "combine_mode": "grid_scatter",
        "grid_output_rows": 2,
        "grid_output_cols": 2,
        "grid_output_layers": 1,
        "grid_positions": [  # listed out of branch order; cell (0, 1) stays empty
            {"branch_index": 2, "target_row": 1, "target_col": 0, "target_layer": 0},
            {"branch_index": 0, "target_row": 1, "target_col": 1, "target_layer": 0},
            {"branch_index": 1, "target_row": 0, "target_col": 0, "target_layer": 0},
        ],
        "branches": [
            {"type": "dense", "output_size": 3, "activation": "tanh"},
            {"type": "dense", "output_size": 2, "activation": "sigmoid"},
            {"type": "dense", "output_size": 4, "activation": "relu"},
        ],
    }
    report = check_layer(layer, input_size=5, batch_size=batch, output_size=9, backend=backend)
    net = report.network
    x = np.linspace(-1, 1, 5 * batch).astype(np.float32)
    y = loom.to_numpy(net.forward(x)).reshape(batch, 9)
    branch_out = [loom.to_numpy(net.layers[0].branches[i].params["kernel"]) for i in range(3)]
    assert [b.shape[1] for b in branch_out] == [3, 2, 4]
    ctx_y = [
        loom.to_numpy(
            loom.nn.layers.kind_for("dense").forward(
                net.layers[0].branches[i],
                net._as_input(x)[0],
                loom.nn.layers.ForwardContext(net._backend, net.xp, batch),
            )[0]
        ).reshape(batch, -1)
        for i in range(3)
    ]
    np.testing.assert_allclose(y, np.concatenate([ctx_y[1], ctx_y[2], ctx_y[0]], axis=1), rtol=1e-6)
    saved = json.loads(net.save_model_to_string("m"))["models"][0]["cfg"]["layers"][0]
    assert saved["grid_positions"][0] == {"branch_index": 2, "target_row": 1, "target_col": 0, "target_layer": 0}


def test_parallel_nested_three_deep_and_mixed_types(backend):
    inner = {
        "type": "parallel",
        "combine_mode": "avg",
        "branches": [
            {"type": "dense", "output_size": 4, "activation": "gelu"},
            {"type": "rnn", "hidden_size": 2, "seq_length": 2},
        ],
    }
    middle = {
        "type": "parallel",
        "combine_mode": "add",
        "branches": [
            inner,
            {"type": "lstm", "hidden_size": 2, "seq_length": 2},
            {
                "type": "parallel",
                "branches": [{"type": "dense", "output_size": 1}, {"type": "dense", "output_size": 3}],
            },
        ],
    }
    branches = [
        middle,
        {"type": "softmax", "softmax_variant": "entmax", "entmax_alpha": 1.3},
        {"type": "lstm", "hidden_size": 3, "seq_length": 1},
    ]
    for extra_type, extra in (
        (
            "conv2d",
            {
                "type": "conv2d",
                "input_channels": 1,
                "input_height": 2,
                "input_width": 3,
                "kernel_size": 2,
                "filters": 2,
                "stride": 1,
                "output_height": 1,
                "output_width": 2,
                "activation": "tanh",
            },
        ),
        ("multi_head_attention", {"type": "mha", "d_model": 6, "num_heads": 2, "seq_length": 1}),
        ("swiglu", {"type": "swiglu", "input_size": 6, "output_size": 4}),
    ):
        if extra_type in kind_names():
            branches.append(extra)
    layer = {"type": "parallel", "combine_mode": "concat", "branches": branches}
    check_layer(layer, input_size=6, backend=backend, fd_samples=8)


def test_branches_train_and_take_no_residual(backend):
    net = _net(
        [
            {"type": "dense", "input_size": 3, "output_size": 4},
            {
                "type": "parallel",
                "combine_mode": "add",
                "branches": [{"type": "parallel", "combine_mode": "avg", "branches": [_DENSE, _DENSE]}, _DENSE],
            },
        ],
        backend=backend,
    )
    before = [loom.to_numpy(c.params["kernel"]).copy() for c in net.iter_all_layers() if c.params]
    net.train([{"Input": [0.1, 0.2, 0.3], "Target": [1.0, 0.0, 0.5]}], {"Epochs": 2, "LearningRate": 0.1})
    after = [loom.to_numpy(c.params["kernel"]) for c in net.iter_all_layers() if c.params]
    assert len(before) == 4 and all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (
            {
                "type": "parallel",
                "combine_mode": "grid_scatter",
                "grid_output_rows": 2,
                "grid_output_cols": 1,
                "grid_output_layers": 1,
                "branches": [_DENSE, _DENSE],
                "grid_positions": [{"branch_index": 0, "target_row": 1}, {"branch_index": 1, "target_row": 1}],
            },
            r"layers\[0\]\.grid_positions\[1\]: cell \(row 1, col 0, layer 0\) already holds branch 0",
        ),
        (
            {
                "type": "parallel",
                "combine_mode": "grid_scatter",
                "grid_output_rows": 2,
                "grid_output_cols": 1,
                "grid_output_layers": 1,
                "branches": [_DENSE, _DENSE],
                "grid_positions": [{"branch_index": 0}, {"branch_index": 0, "target_row": 1}],
            },
            r"layers\[0\]\.grid_positions\[1\]\.branch_index: expected one position per branch, got a second "
            r"one for branch 0",
        ),
        (
            {
                "type": "parallel",
                "combine_mode": "grid_scatter",
                "grid_output_rows": 1,
                "grid_output_cols": 1,
                "grid_output_layers": 1,
                "branches": [_DENSE, _DENSE],
                "grid_positions": [{"branch_index": 0}, {"branch_index": 1, "target_row": 1}],
            },
            r"layers\[0\]\.grid_positions\[1\]\.target_row: 1 is outside 0\.\.0",
        ),
        (
            {
                "type": "parallel",
                "combine_mode": "grid_scatter",
                "grid_output_rows": 2,
                "grid_output_cols": 1,
                "grid_output_layers": 1,
                "branches": [_DENSE, _DENSE],
                "grid_positions": [{"branch_index": 0}],
            },
            r"layers\[0\]\.grid_positions: grid_scatter needs one position per branch: 1 positions for 2",
        ),
        (
            {"type": "parallel", "combine_mode": "mean", "branches": [_DENSE]},
            r"layers\[0\]\.combine_mode: unknown combine mode 'mean'",
        ),
        (
            {"type": "parallel", "combine_mode": "add", "branches": [_DENSE, {"type": "dense", "output_size": 2}]},
            r"layers\[0\]\.branches\[1\]: output size 2 does not match",
        ),
        ({"type": "parallel", "branches": []}, r"layers\[0\]\.branches"),
        (
            {
                "type": "parallel",
                "branches": [_DENSE, {"type": "parallel", "combine_mode": "bogus", "branches": [_DENSE]}],
            },
            r"layers\[0\]\.branches\[1\]\.combine_mode",
        ),
    ],
)
def test_parallel_config_errors(layer, match, backend):
    with pytest.raises(ConfigError, match=match):
        _net([layer], input_size=4, backend=backend)


def test_bad_mode_in_bundle_is_an_error_at_load(backend):
    net = _net(
        [{"type": "parallel", "combine_mode": "add", "branches": [_DENSE, _DENSE]}], input_size=2, backend=backend
    )
    text = net.save_model_to_string("m").replace('"combine_mode": "add"', '"combine_mode": "sum"')
    with pytest.raises(loom.errors.ModelFormatError, match=r"combine_mode: unknown combine mode 'sum'"):
        loom.load_model_from_string(text, "m", backend=backend)


def test_wrong_input_length_is_a_shape_error(backend):
    net = _net([{"type": "rnn", "input_size": 2, "hidden_size": 3, "seq_length": 2}], backend=backend)
    with pytest.raises(ShapeError, match=r"layers\[0\] \(rnn\): expected 4 input values"):
        net.forward(np.ones(5, np.float32))


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_stateful_gradient_treats_kept_state_as_constant(kind, backend):
    net = _net(
        [{"type": kind, "input_size": 3, "hidden_size": 4, "seq_length": 3, "stateful": True}],
        batch_size=2,
        backend=backend,
    )
    xp = net.xp
    layer = net.layers[0]
    layer.params = {k: xp.astype(v, xp.float64) for k, v in layer.params.items()}
    rng = np.random.default_rng(0)
    net._forward(net._backend.asarray(rng.standard_normal(18), dtype=xp.float64), 2)  # builds up state
    kept = {k: v for k, v in layer.state.items() if k in ("h", "c")}
    x = net._backend.asarray(rng.standard_normal(18), dtype=xp.float64)
    r = net._backend.asarray(rng.standard_normal(24), dtype=xp.float64)

    def objective() -> float:
        layer.state.update(kept)
        return float(xp.sum(net._forward(x, 2) * r))

    objective()
    grad_x = loom.to_numpy(net._backward(r, False))
    grads = {k: loom.to_numpy(v) for k, v in layer.grads.items()}
    for name, param in layer.params.items():
        flat = param.reshape(-1)
        for i in rng.choice(flat.shape[0], size=min(5, flat.shape[0]), replace=False):
            original = float(flat[i])
            flat[i] = original + 1e-6
            plus = objective()
            flat[i] = original - 1e-6
            minus = objective()
            flat[i] = original
            assert grads[name].reshape(-1)[i] == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-8), name
    for i in (0, 7, 17):
        original = float(x[i])
        x[i] = original + 1e-6
        plus = objective()
        x[i] = original - 1e-6
        minus = objective()
        x[i] = original
        assert grad_x[i] == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-8)
