"""Validation at the boundaries of ``loom.nn`` (issue #11): configs, bundles, budgets, forward and training data.

Each hostile input of the issue's table gets its exact error: type, field path, expected
and found. The fuzz suite (tests/fuzz) covers the same boundaries on generated inputs.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

import loom
import loom.limits
from loom.errors import BundleConfigError, ConfigError, ModelFormatError, ShapeError

DENSE = {"type": "dense", "input_size": 4, "output_size": 3}


def _config(*layers, batch_size=1, **top):
    return {
        "batch_size": batch_size,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": len(layers),
        "layers": list(layers),
        **top,
    }


def _bundle(net: loom.Network, *, cfg_layers=None, weights=None, raw_blob: str | None = None) -> str:
    bundle = json.loads(net.save_model_to_string("m"))
    model = bundle["models"][0]
    if cfg_layers is not None:
        model["cfg"]["layers"] = cfg_layers
    if weights is not None or raw_blob is not None:
        blob = raw_blob if raw_blob is not None else json.dumps(weights)
        model["weights"]["data"] = base64.b64encode(blob.encode()).decode()
    return json.dumps(bundle)


# ------------------------------------------------------------------ config values
@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            {"type": "softmax", "temperature": float("nan")},
            r"layers\[0\]\.temperature: expected a finite float32 number, got nan",
        ),
        (
            {"type": "softmax", "temperature": 1e39},
            r"layers\[0\]\.temperature: expected a finite float32 number, got 1e\+39",
        ),
        (
            {"type": "softmax", "softmax_variant": "entmax", "entmax_alpha": float("inf")},
            r"entmax_alpha: expected a finite",
        ),
        ({"type": "layer_norm", "norm_size": 4, "epsilon": float("nan")}, r"layers\[0\]\.epsilon: expected a finite"),
        (
            {"type": "layer_norm", "norm_size": 4, "epsilon": -1e-5},
            r"epsilon: expected a non-negative number, got -1e-05",
        ),
        (
            {"type": "dense", "input_size": 4, "output_size": 10**400},
            r"output_size: expected an integer in 0\.\.2147483647",
        ),
        ({"type": "dense", "input_size": 4, "output_size": 2.5}, r"output_size: expected an integer, got 2\.5"),
        ({"type": "dense", "input_size": 4, "output_size": True}, r"output_size: expected an integer, got True"),
        ({"type": "mha", "d_model": 4, "num_heads": 0}, r"num_heads: required for a multi_head_attention layer"),
        ({"type": "mha", "d_model": 4, "num_heads": 2, "rope_theta": float("nan")}, r"rope_theta: expected a finite"),
        (
            {"type": "softmax", "softmax_variant": "mixture", "mixture_weights": [1.0, float("nan")]},
            r"expected a finite",
        ),
    ],
)
def test_non_finite_and_out_of_range_config_values(layer, message) -> None:
    with pytest.raises(ConfigError, match=message):
        loom.create_network_from_json(_config(layer, input_size=4))


def test_nan_and_infinity_json_literals_are_rejected() -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps(_config(DENSE)).replace('"output_size": 3', f'"output_size": 3, "temperature": {literal}')
        with pytest.raises(ConfigError, match=rf"config: invalid JSON: {literal} is not a JSON number"):
            loom.create_network_from_json(text)


def test_deep_nesting_is_a_clear_error_not_a_recursion_error() -> None:
    text = json.dumps(_config(DENSE))[:-1] + ', "comment": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ConfigError, match=r"config: JSON nesting depth 100001 exceeds the limit of 64"):
        loom.create_network_from_json(text)
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ConfigError, match=r"config: JSON nesting depth at least 65 exceeds the limit of 64"):
        loom.create_network_from_json({**_config(DENSE), "comment": nested})
    branch = DENSE
    for _ in range(40):  # 40 nested Parallels = 81 JSON levels
        branch = {"type": "parallel", "branches": [branch]}
    with pytest.raises(ConfigError, match="nesting depth"):
        loom.create_network_from_json(json.dumps(_config(branch)))
    with loom.limits.limited(max_json_depth=200):  # raised explicitly, it builds (and forwards)
        net = loom.create_network_from_json(json.dumps(_config(branch)))
        assert loom.to_numpy(net.forward(np.ones(4, np.float32))).shape == (3,)


# ------------------------------------------------------------------ size budgets
def test_parameter_budget_is_checked_before_allocation_and_can_be_raised() -> None:
    huge = _config({"type": "dense", "input_size": 55, "output_size": 10**7})  # the 2.2 GB
    with pytest.raises(
        ConfigError,
        match=r"layers\[0\]: the network needs 560,000,000 parameters up to this layer, more than the limit of "
        r"134,217,728; .*loom\.limits\.set_limits\(max_parameters=\.\.\.\) or LOOM_MAX_PARAMETERS",
    ):
        loom.create_network_from_json(huge)
    small = _config({"type": "dense", "input_size": 100, "output_size": 100})
    with loom.limits.limited(max_parameters=1000), pytest.raises(ConfigError, match="10,100 parameters"):
        loom.create_network_from_json(small)
    with loom.limits.limited(max_parameters=10_100):
        assert loom.create_network_from_json(small).num_parameters() == 10_100


def test_activation_budget_counts_batch_and_conv_patches() -> None:
    conv = {
        "type": "conv2d",
        "input_channels": 3,
        "input_height": 2000,
        "input_width": 2000,
        "kernel_size": 3,
        "stride": 1,
        "padding": 1,
        "filters": 64,
    }
    with pytest.raises(ConfigError, match=r"layers\[0\]: the network needs [\d,]+ activation values \(batch 1\)"):
        loom.create_network_from_json(_config(conv))
    wide = _config({"type": "dense", "input_size": 4, "output_size": 1000}, batch_size=10**6)
    with pytest.raises(ConfigError, match=r"activation values \(batch 1000000\).*LOOM_MAX_ACTIVATIONS"):
        loom.create_network_from_json(wide)


def test_limits_from_the_environment(monkeypatch) -> None:
    monkeypatch.setattr(loom.limits, "_default", None)
    monkeypatch.setenv("LOOM_MAX_PARAMETERS", "50")
    assert loom.limits.get_limits().max_parameters == 50
    with pytest.raises(
        ConfigError, match=r"layers\[1\]: the network needs 55 parameters up to this layer, more than the limit of 50"
    ):
        loom.create_network_from_json(_config(DENSE, {"type": "dense", "output_size": 10}))
    monkeypatch.setattr(loom.limits, "_default", None)
    monkeypatch.setenv("LOOM_MAX_PARAMETERS", "lots")
    with pytest.raises(ConfigError, match=r"LOOM_MAX_PARAMETERS: expected an integer, got 'lots'"):
        loom.limits.get_limits()
    monkeypatch.setattr(loom.limits, "_default", None)
    monkeypatch.delenv("LOOM_MAX_PARAMETERS")
    with pytest.raises(ConfigError, match=r"unknown limit 'max_weights'"):
        loom.limits.set_limits(max_weights=1)


# ------------------------------------------------------------------ geometry
def test_conv2d_stated_output_size_must_match_the_geometry() -> None:
    conv = {
        "type": "conv2d",
        "input_channels": 1,
        "input_height": 5,
        "input_width": 5,
        "kernel_size": 3,
        "stride": 1,
        "padding": 0,
        "filters": 2,
        "output_height": 3,
        "output_width": 4,
    }
    message = (
        r"layers\[0\]\.output_width: expected 3 = \(input_width 5 \+ 2 x padding 0 - kernel_size 3\) // stride 1 "
        r"\+ 1, got 4"
    )
    with pytest.raises(ConfigError, match=message):
        loom.create_network_from_json(_config(conv))
    good = loom.create_network_from_json(_config({**conv, "output_width": 3}), seed=1)
    lying = json.loads(good.save_model_to_string("m"))
    lying["models"][0]["cfg"]["layers"][0]["output_height"] = 70_000  # the 13 GiB bundle
    with pytest.raises(BundleConfigError, match=r"^models\[0\]\.cfg\.layers\[0\]\.output_height: expected 3") as info:
        loom.load_model_from_string(json.dumps(lying), "m")
    assert isinstance(info.value, ModelFormatError) and isinstance(info.value, ConfigError)


# ------------------------------------------------------------------ bundles
def test_bundle_config_errors_are_both_model_format_and_config_errors() -> None:
    net = loom.create_network_from_json(_config(DENSE), seed=1)
    for layers, message in (
        (
            [{"type": "dense", "input_height": 4, "output_height": 3, "activation": "bogus"}],
            r"layers\[0\]\.activation: unknown activation 'bogus'",
        ),
        (
            [{"type": "dense", "input_height": -4, "output_height": 3}],
            r"layers\[0\]\.input_height: expected an integer in 0",
        ),
        ([{"type": "softmax", "temperature": 1e39}], r"layers\[0\]\.temperature: expected a finite float32 number"),
    ):
        with pytest.raises(ConfigError, match=rf"^models\[0\]\.cfg\.{message}") as info:
            loom.load_model_from_string(_bundle(net, cfg_layers=layers), "m")
        assert isinstance(info.value, ModelFormatError)


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        ([1.0] * 11 + [1e39], r"layers\[0\]: weights\.kernel\[11\]: expected a finite float32 number, got 1e\+39"),
        (
            [1.0] * 5 + [10**400] + [1.0] * 6,
            r"weights\.kernel: expected a flat list of 12 numbers, got int 1000.* at 5",
        ),
        ([1.0, "x"] + [1.0] * 10, r"weights\.kernel: expected a flat list of 12 numbers, got str 'x' at 1"),
        ([[1.0]] * 12, r"weights\.kernel: expected a flat list of 12 numbers, got list \[1\.0\] at 0"),
        ({"a": 1}, r"weights\.kernel: expected a list of 12 numbers, got dict"),
        ([1.0] * 11, r"weights\.kernel: expected 12 values for shape \[4, 3\], got 11"),
    ],
)
def test_bundle_weights_are_checked_with_the_layer_path(kernel, message) -> None:
    net = loom.create_network_from_json(_config(DENSE), seed=1)
    weights = {"type": "float32", "layers": [{"biases": [0.0, 0.0, 0.0], "kernel": kernel}]}
    with pytest.raises(ModelFormatError, match=message):
        loom.load_model_from_string(_bundle(net, weights=weights), "m")


def test_bundle_nan_literals_deep_nesting_and_branch_weight_types() -> None:
    net = loom.create_network_from_json(_config(DENSE), seed=1)
    blob = '{"type":"float32","layers":[{"biases":[0,0,NaN],"kernel":[' + ",".join(["1"] * 12) + "]}]}"
    with pytest.raises(
        ModelFormatError, match=r"models\[0\]\.weights\.data: failed to decode weights: invalid JSON: NaN"
    ):
        loom.load_model_from_string(_bundle(net, raw_blob=blob), "m")
    with pytest.raises(ModelFormatError, match="bundle: failed to parse JSON: JSON nesting depth 50001"):
        loom.load_model_from_string("[" * 50_001 + "]" * 50_001, "m")
    parallel = loom.create_network_from_json(_config({"type": "parallel", "branches": [DENSE]}, input_size=4), seed=1)
    weights = {"type": "float32", "layers": [{"branch_weights": {"0": {}}}]}
    with pytest.raises(ModelFormatError, match=r"layers\[0\]: weights\.branch_weights: expected a list of branch"):
        loom.load_model_from_string(_bundle(parallel, weights=weights), "m")
    weights = {"type": "float32", "layers": ["kernel"]}
    with pytest.raises(ModelFormatError, match=r"layers\[0\]: weights: expected an object of arrays, got str"):
        loom.load_model_from_string(_bundle(parallel, weights=weights), "m")


def test_non_finite_weights_are_rejected_on_load_and_on_save() -> None:
    net = loom.create_network_from_json(_config(DENSE), seed=1)
    net.layers[0].params["biases"][1] = np.inf
    with pytest.raises(ModelFormatError, match=r"layers\[0\]: weights\.biases contains NaN or Inf"):
        net.save_model_to_string("m")


# ------------------------------------------------------------------ forward inputs
def test_non_finite_forward_input_names_sample_and_position() -> None:
    net = loom.create_network_from_json(_config(DENSE, batch_size=2), seed=1)
    x = np.ones(8, np.float32)
    x[6] = np.nan
    with pytest.raises(ShapeError, match=r"^input: expected finite numbers, got nan at sample 1, position 2"):
        net.forward(x)
    rows = np.ones((3, 4), np.float32)
    rows[2, 0] = -np.inf
    with pytest.raises(ShapeError, match=r"got -inf at sample 2, position 0 \(flat index 8\)"):
        net.forward(rows)
    with pytest.raises(ShapeError, match=r"got inf at sample 0, position 1"):
        net.forward([[1.0, 1e39, 0.0, 0.0]])  # beyond float32: inf
    assert np.isnan(loom.to_numpy(net.forward(x, check_finite=False))).any()  # the documented opt-out
    big = np.full(8, 1e30, np.float32)  # finite, x @ x overflows: still accepted
    assert loom.to_numpy(net.forward(big)).shape == (6,)


# ------------------------------------------------------------------ training data
@pytest.mark.parametrize(
    ("batches", "message"),
    [
        (None, r"^batches: expected a list of \(input, target\) pairs, .* got NoneType"),
        (5, r"^batches: expected a list .* got int"),
        ({"Input": [1, 2, 3, 4], "Target": [0, 1, 0]}, r"^batches: expected a list .* got dict"),
        ([([1, 2, [3]], [0, 1, 0])], r"^batches\[0\]\.input: expected a flat or \[batch, features\] array of numbers"),
        (
            [([1, 2, 3, 4], [0, float("nan"), 0])],
            r"^batches\[0\]\.target: expected finite numbers, got nan at sample 0, position 1",
        ),
        (
            [([1, 2, 3, 4], [0, 1, 0]), ([1, float("inf"), 3, 4], [0, 1, 0])],
            r"^batches\[1\]\.input: expected finite numbers, got inf",
        ),
        (
            [(np.ones((2, 4)), np.ones((3, 3)))],
            r"^batches\[0\]\.target: expected 2 rows \(one per input sample\), got 3",
        ),
        ([([1, 2, 3, 4], [])], r"^batches\[0\]\.target: expected a non-empty target, got 0 values"),
        (
            [([1, 2, 3, 4], "abc")],
            r"^batches\[0\]\.target: expected a flat or \[batch, features\] array of numbers, got str",
        ),
    ],
)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_hostile_training_data_is_a_shape_error(batches, message, loss) -> None:
    net = loom.create_network_from_json(_config(DENSE, {"type": "softmax"}), seed=1)
    before = [loom.to_numpy(p).copy() for p in net.layers[0].params.values()]
    with pytest.raises(ShapeError, match=message):
        net.train(batches, {"epochs": 2, "learning_rate": 0.1, "loss_type": loss})
    for b, p in zip(before, net.layers[0].params.values(), strict=True):
        np.testing.assert_array_equal(b, loom.to_numpy(p))  # nothing was trained
