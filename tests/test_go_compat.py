"""Go interop: which features Go LOOM would run differently, and ``save(..., go_compatible=...)``."""

from __future__ import annotations

import json
import re
import warnings

import pytest

import loom
from loom.errors import ConfigError
from loom.nn.go_compat import GoCompatibilityWarning, check_go_compatibility, go_compatibility_report


def network(layers, **top):
    config = {"batch_size": 1, "grid_rows": 1, "grid_cols": 1, "layers_per_cell": len(layers), "layers": layers}
    config.update(top)
    return loom.create_network_from_json(config, seed=0)


DENSE = {"type": "dense", "input_size": 4, "output_size": 4, "activation": "tanh"}


@pytest.mark.parametrize(
    ("layers", "top", "path", "feature"),
    [
        ([{**DENSE, "activation": "gelu"}], {}, "layers[0]", "activation 'gelu' (id 6)"),
        ([{**DENSE, "activation": "linear"}], {}, "layers[0]", "activation 'linear' (id 5)"),
        (
            [{"type": "mha", "d_model": 4, "num_heads": 2, "num_kv_heads": 1, "seq_length": 2}],
            {},
            "layers[0]",
            "num_kv_heads 1",
        ),
        (
            [{"type": "mha", "d_model": 4, "num_heads": 2, "seq_length": 2, "causal": False}],
            {},
            "layers[0]",
            "causal: false",
        ),
        (
            [{"type": "mha", "d_model": 4, "num_heads": 2, "seq_length": 2, "rope_theta": 10000}],
            {},
            "layers[0]",
            "rope_theta 10000",
        ),
        (
            [{"type": "mha", "d_model": 4, "num_heads": 2, "seq_length": 1}],
            {"batch_size": 2},
            "layers[0]",
            "multi-head attention with batch_size 2",
        ),
        (
            [DENSE, {"type": "softmax", "softmax_variant": "sparsemax"}],
            {"batch_size": 3},
            "layers[1]",
            "softmax with batch_size 3",
        ),
        ([DENSE, {"type": "residual"}], {}, "layers[1]", "layer type 'residual'"),
        (
            [{"type": "lstm", "input_size": 4, "hidden_size": 4, "seq_length": 1, "stateful": True}],
            {},
            "layers[0]",
            "stateful: true",
        ),
        (
            [
                {
                    "type": "parallel",
                    "combine_mode": "grid_scatter",
                    "grid_output_rows": 2,
                    "grid_output_cols": 1,
                    "grid_output_layers": 1,
                    "grid_positions": [
                        {"branch_index": 1, "target_row": 0, "target_col": 0, "target_layer": 0},
                        {"branch_index": 0, "target_row": 1, "target_col": 0, "target_layer": 0},
                    ],
                    "branches": [DENSE, {**DENSE, "output_size": 2}],
                }
            ],
            {},
            "layers[0]",
            "grid_scatter branch_index out of list order",
        ),
        (
            [
                {
                    "type": "parallel",
                    "combine_mode": "add",
                    "branches": [DENSE, {"type": "mha", "d_model": 4, "num_heads": 2, "seq_length": 1}],
                }
            ],
            {},
            "layers[0].branches[1]",
            "multi-head attention inside a Parallel branch",
        ),
        (
            [
                {"type": "mha", "d_model": 4, "num_heads": 2, "seq_length": 3},
                {"type": "layer_norm", "norm_size": 4},
            ],
            {},
            "layers[1]",
            "layer_norm over 3 rows per sample",
        ),
        (
            [
                {
                    "type": "parallel",
                    "branches": [DENSE, {**DENSE, "activation": "silu"}],
                }
            ],
            {},
            "layers[0].branches[1]",
            "activation 'silu' (id 7)",
        ),
    ],
)
def test_each_loom_only_feature_is_reported_with_its_layer_path(layers, top, path, feature):
    net = network(layers, **top)
    findings = go_compatibility_report(net)
    assert [(f.path, f.feature.split(" (grid")[0]) for f in findings if f.feature.startswith(feature)], findings
    found = next(f for f in findings if f.feature.startswith(feature))
    assert found.path == path and "Go LOOM" in str(found) and found.go_behaviour
    with pytest.raises(ConfigError, match="go_compatible: .*" + re.escape(path + ": " + feature)):
        net.save_model_to_string("m", go_compatible=True)
    with pytest.warns(GoCompatibilityWarning, match=feature.split(" ")[0]):
        text = net.save_model_to_string("m", go_compatible="warn")
    assert json.loads(text)["type"] == "modelhost/bundle"


def test_a_gelu_bundle_names_the_layer_path_and_the_feature(tmp_path):
    net = network([DENSE, {**DENSE, "activation": "gelu"}])
    with pytest.raises(ConfigError, match=r"layers\[1\]: activation 'gelu' \(id 6\) — Go LOOM reads it as ScaledReLU"):
        net.save_model_to_string("m", go_compatible=True)
    with pytest.raises(ConfigError, match=r"layers\[1\]: activation 'gelu'"):
        net.SaveModel(tmp_path / "m.json", "m", go_compatible="strict")
    assert not (tmp_path / "m.json").exists()
    assert net.save_model_to_string("m")  # the default does not check


def test_go_only_networks_save_without_a_word():
    net = network(
        [DENSE, {"type": "dense", "input_size": 4, "output_size": 2, "activation": "leaky_relu"}, {"type": "softmax"}]
    )
    assert go_compatibility_report(net) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.save_model_to_string("m", go_compatible=True)
        net.save_model_to_string("m", go_compatible="warn")


def test_go_written_bundles_report_only_gos_own_reload_limits(go_fixtures):
    limited = {
        "parallel_branch_types_b.json": ["multi-head attention inside a Parallel branch"],
        "residual_layer.json": ["layer type 'residual'"],
    }
    checked = 0
    for path in sorted(go_fixtures.glob("*.json")):
        case = json.loads(path.read_text())
        if "model_before" not in case:
            continue
        net = loom.load_model_from_string(case["model_before"])
        features = [f.feature for f in go_compatibility_report(net)]
        assert features == limited.get(path.name, []), path.name
        if path.name not in limited:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert net.save_model_to_string(case.get("model_id", "m"), go_compatible=True)
        checked += 1
    assert checked >= 40


def test_mode_is_validated():
    with pytest.raises(ConfigError, match="go_compatible: expected True, False, 'strict' or 'warn', got 'yes'"):
        check_go_compatibility(network([DENSE]), "yes")


def test_report_is_at_the_package_root():
    assert loom.go_compatibility_report is go_compatibility_report
    finding = go_compatibility_report(network([{**DENSE, "activation": "mish"}]))[0]
    assert finding.to_dict() == {
        "path": "layers[0]",
        "feature": "activation 'mish' (id 10)",
        "go_behaviour": finding.go_behaviour,
    }
