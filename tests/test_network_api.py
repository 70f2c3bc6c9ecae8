"""The public Network API: config parsing, errors, training API, introspection, registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

import loom
from loom.errors import ConfigError, LoomError, ShapeError, TrainingDivergedError


def dense_config(**overrides):
    config = {
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 2,
        "layers": [
            {"type": "dense", "input_size": 4, "output_size": 3, "activation": "tanh"},
            {"type": "dense", "input_size": 3, "output_size": 2, "activation": "sigmoid"},
        ],
    }
    config.update(overrides)
    return config


# ----------------------------------------------------------------------------- config parsing
def test_readme_example_without_dense_input_sizes_builds_by_inference(backend):
    config = {
        "input_size": 10,
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 3,
        "layers": [
            {"type": "dense", "output_size": 8, "activation": "relu"},
            {"type": "dense", "output_size": 4, "activation": "relu"},
            {"type": "dense", "output_size": 2, "activation": "sigmoid"},
        ],
    }
    net = loom.create_network_from_json(json.dumps(config), backend=backend, seed=0)
    assert [layer.input_size for layer in net.layers] == [10, 8, 4]
    assert loom.to_numpy(net.forward(np.ones(10))).shape == (2,)


def test_missing_size_names_the_field():
    config = dense_config()
    del config["layers"][0]["input_size"]
    with pytest.raises(ConfigError, match=r"layers\[0\]\.input_size: missing and cannot be inferred"):
        loom.create_network_from_json(config)


def test_inconsistent_sizes_name_the_field():
    config = dense_config()
    config["layers"][1]["input_size"] = 5
    with pytest.raises(ConfigError, match=r"layers\[1\]\.input_size: 5 does not match the 3 features"):
        loom.create_network_from_json(config)


def test_unknown_activation_lists_accepted_names():
    config = dense_config()
    config["layers"][1]["activation"] = "sigmod"
    with pytest.raises(
        ConfigError,
        match=r"layers\[1\]\.activation: unknown activation 'sigmod' \(did you mean 'sigmoid'\?\); accepted: .*gelu",
    ):
        loom.create_network_from_json(config)


def test_unknown_layer_key_has_did_you_mean():
    config = dense_config()
    config["layers"][0]["ouput_size"] = 3
    with pytest.raises(ConfigError, match=r"layers\[0\]\.ouput_size: unknown key \(did you mean 'output_size'\?\)"):
        loom.create_network_from_json(config)


def test_unknown_layer_type():
    config = dense_config()
    config["layers"][0]["type"] = "dens"
    with pytest.raises(ConfigError, match=r"layers\[0\]\.type: unknown layer type 'dens' \(did you mean 'dense'\?\)"):
        loom.create_network_from_json(config)


def test_layer_count_mismatch():
    with pytest.raises(
        ConfigError, match=r"layer count mismatch: expected 3 \(grid_rows=1 x grid_cols=1 x layers_per_cell=3\), got 2"
    ):
        loom.create_network_from_json(dense_config(layers_per_cell=3))


def test_integers_must_be_integers():
    config = dense_config()
    config["layers"][0]["output_size"] = 3.5
    with pytest.raises(ConfigError, match=r"layers\[0\]\.output_size: expected an integer, got 3.5"):
        loom.create_network_from_json(config)
    config["layers"][0]["output_size"] = 3.0  # Go rejects 3.0; loom is lenient
    assert loom.create_network_from_json(config).layers[0].output_size == 3


def test_keys_are_case_insensitive_and_json_text_is_accepted():
    config = dense_config()
    config["Grid_Rows"] = config.pop("grid_rows")
    net = loom.create_network_from_json(json.dumps(config).encode())
    assert net.total_layers() == 2


def test_invalid_json_text():
    with pytest.raises(ConfigError, match="invalid JSON"):
        loom.create_network_from_json("{not json")


def test_bundle_passed_to_create_is_loaded(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend, seed=3)
    text = net.save_model_to_string("m")
    again = loom.create_network_from_json(text, backend=backend)
    np.testing.assert_array_equal(loom.to_numpy(again.forward([1, 2, 3, 4])), loom.to_numpy(net.forward([1, 2, 3, 4])))


def test_seeded_initialisation_is_reproducible(backend):
    a = loom.create_network_from_json(dense_config(), backend=backend, seed=7)
    b = loom.create_network_from_json(dense_config(), backend=backend, seed=7)
    c = loom.create_network_from_json(dense_config(), backend=backend, seed=8)
    x = [0.5, -1, 2, 0.1]
    assert loom.to_numpy(a.forward(x)).tolist() == loom.to_numpy(b.forward(x)).tolist()
    assert loom.to_numpy(a.forward(x)).tolist() != loom.to_numpy(c.forward(x)).tolist()
    kernel = loom.to_numpy(a.layers[0].params["kernel"])
    assert np.all(np.abs(kernel) <= 0.25)  # LOOM's Uniform(-1/in, 1/in)


# ----------------------------------------------------------------------------- forward / backward
def test_forward_accepts_flat_and_2d(backend):
    net = loom.create_network_from_json(dense_config(batch_size=2), backend=backend, seed=0)
    flat = loom.to_numpy(net.forward(np.arange(8) / 10))
    assert flat.shape == (4,)
    batch = loom.to_numpy(net.forward((np.arange(12) / 10).reshape(3, 4)))
    assert batch.shape == (3, 2)
    np.testing.assert_allclose(batch[:2].reshape(-1), flat, rtol=1e-6)


def test_wrong_input_length_is_a_shape_error(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend)
    with pytest.raises(ShapeError, match=r"layers\[0\] \(dense\): expected 4 input values .* got 3"):
        net.forward([1, 2, 3])


def test_backward_before_forward_is_an_error(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend)
    with pytest.raises(LoomError, match="call forward first"):
        net.backward([0.1, 0.2])


def test_backward_accumulate_and_zero(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend, seed=1)
    net.forward([1, 2, 3, 4])
    net.backward([0.1, -0.2])
    first = loom.to_numpy(net.layers[0].grads["kernel"]).copy()
    net.backward([0.1, -0.2], accumulate=True)
    np.testing.assert_allclose(loom.to_numpy(net.layers[0].grads["kernel"]), 2 * first, rtol=1e-6)
    net.backward([0.1, -0.2])
    np.testing.assert_allclose(loom.to_numpy(net.layers[0].grads["kernel"]), first, rtol=1e-6)
    net.zero_gradients()
    assert not np.any(loom.to_numpy(net.layers[0].grads["kernel"]))


def test_loom_names_return_lists_and_durations(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend, seed=1)
    out, ns = net.ForwardCPU([1, 2, 3, 4])
    assert isinstance(out, list) and len(out) == 2 and isinstance(ns, int) and ns >= 0
    grad, ns = net.BackwardCPU([0.1, 0.2])
    assert len(grad) == 4 and isinstance(grad[0], float)
    assert len(net.Activations()) == 3 and net.TotalLayers() == 2


# ----------------------------------------------------------------------------- training
BATCHES = [
    {"Input": [0.9, 0.9, 0.1, 0.1], "Target": [1.0, 0.0]},
    {"Input": [0.1, 0.1, 0.9, 0.9], "Target": [0.0, 1.0]},
]


def test_train_accepts_every_batch_form_and_config_spelling(backend):
    results = []
    for batches, config in [
        (BATCHES, {"Epochs": 20, "LearningRate": 0.5}),
        (
            [loom.TrainingBatch(b["Input"], b["Target"]) for b in BATCHES],
            loom.TrainingConfig(epochs=20, learning_rate=0.5),
        ),
        ([(b["Input"], b["Target"]) for b in BATCHES], {"epochs": 20, "learning_rate": 0.5}),
    ]:
        net = loom.create_network_from_json(dense_config(), backend=backend, seed=4)
        results.append(net.train(batches, config).loss_history)
    assert results[0] == results[1] == results[2]
    assert results[0][-1] < results[0][0]


def test_training_result_to_dict_uses_loom_keys(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend, seed=4)
    result = net.train(BATCHES, {"Epochs": 3, "LearningRate": 0.1})
    d = result.to_dict()
    assert list(d) == ["FinalLoss", "BestLoss", "TotalTime", "AvgThroughput", "LossHistory", "EvalMetrics"]
    assert isinstance(d["TotalTime"], int) and d["FinalLoss"] == d["LossHistory"][-1]
    assert d["BestLoss"] == min(d["LossHistory"]) and d["AvgThroughput"] > 0


def test_unknown_training_key_has_a_hint():
    with pytest.raises(ConfigError, match=r"LearningRat: unknown key \(did you mean 'learningrate'\?\)"):
        loom.TrainingConfig.from_dict({"LearningRat": 0.1})


def test_zero_epochs_gives_an_empty_history(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend)
    assert net.train(BATCHES, {"Epochs": 0}).loss_history == []


def test_no_batches_is_a_shape_error(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend)
    with pytest.raises(ShapeError, match="at least one training batch"):
        net.train([], {"Epochs": 1})


def test_wrong_target_length_is_a_shape_error(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend)
    with pytest.raises(ShapeError, match=r"target: expected 2 values"):
        net.train([{"Input": [1, 2, 3, 4], "Target": [1.0]}], {"Epochs": 1})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_stops_with_epoch_and_batch(backend):
    config = dense_config()
    config["layers"][1]["activation"] = "linear"
    net = loom.create_network_from_json(config, backend=backend, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+, batch \d+") as info:
        net.train([{"Input": [100.0, 100, 100, 100], "Target": [1e6, -1e6]}], {"Epochs": 50, "LearningRate": 10.0})
    assert info.value.epoch >= 1 and info.value.batch == 1


def test_evaluate_network_leaves_backward_state_alone(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend, seed=2)
    net.forward([1, 2, 3, 4])
    net.evaluate_network([[0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.9]], [0, 1])
    grad = loom.to_numpy(net.backward([0.5, 0.5]))
    net2 = loom.create_network_from_json(dense_config(), backend=backend, seed=2)
    net2.forward([1, 2, 3, 4])
    np.testing.assert_array_equal(grad, loom.to_numpy(net2.backward([0.5, 0.5])))


def test_evaluate_predictions_buckets():
    m = loom.evaluate_predictions([0, 1, 2, 0, 10], [0, 0, 2, 2, 11])
    assert [r.bucket for r in m.results] == ["0-10%", "50-100%", "0-10%", "100%+", "0-10%"]
    assert m.failures == 1 and m.total_samples == 5
    assert m.score == pytest.approx((100 + 0 + 100 + 0 + 90) / 5)
    assert m.to_dict()["buckets"]["100%+"]["range_max"] == 1e9


# ----------------------------------------------------------------------------- grid, registry, introspection
def test_grid_get_set_layer(backend):
    net = loom.new_network(4, 1, 2, 1, backend=backend)
    net.set_layer(0, 0, 0, loom.init_dense_layer(4, 3, "tanh", seed=0))
    net.set_layer(0, 1, 0, loom.call_layer_init("InitDenseLayer", 3, 2, 1))
    assert net.get_layer(0, 1, 0).activation == loom.Activation.SIGMOID
    assert loom.to_numpy(net.forward([1, 2, 3, 4])).shape == (2,)
    with pytest.raises(IndexError, match="outside the 1x2x1 grid"):
        net.get_layer(0, 2, 0)


def test_registry_lists_sorted_functions_and_converts_arguments():
    names = [f["name"] for f in loom.list_layer_init_functions()]
    assert names == sorted(names) and "InitMultiHeadAttentionLayer" in names
    cfg = loom.call_layer_init("InitDenseLayer", 784.0, 392, 0)
    assert cfg.params["kernel"].shape == (784, 392)
    assert abs(float(np.std(cfg.params["kernel"])) - np.sqrt(2 / 784)) < 0.002
    with pytest.raises(ConfigError, match="not found"):
        loom.call_layer_init("InitFooLayer")
    with pytest.raises(ConfigError, match=r"expects 2\.\.3 arguments, got 1"):
        loom.call_layer_init("InitDenseLayer", 3)


def test_introspection(backend):
    net = loom.create_network_from_json(dense_config(), backend=backend)
    methods = net.list_methods()
    assert methods == sorted(methods)
    for name in ("ForwardCPU", "forward", "train", "SaveModelToString", "evaluate_network", "to_backend"):
        assert net.has_method(name) and net.HasMethod(name)
    assert not net.has_method("forwardcpu")
    assert net.get_method_signature("update_weights") == "update_weights(learning_rate: float)"
    assert net.get_method_signature("total_layers") == "total_layers() -> int"
    info = json.loads(net.get_methods_json())
    assert {"method_name", "parameters", "returns"} <= set(info[0])
    with pytest.raises(LoomError, match="method Nope not found"):
        net.get_method_signature("Nope")


def test_loom_readme_root_names_and_network_loader(backend):
    net = loom.NewNetwork(4, 1, 1, 2, backend=backend)
    net.SetLayer(0, 0, 0, loom.CallLayerInit("InitDenseLayer", 4, 3, 2))
    net.SetLayer(0, 0, 1, loom.CallLayerInit("InitDenseLayer", 3, 2, 1))
    assert [f["name"] for f in loom.ListLayerInitFunctions()] == [f["name"] for f in loom.list_layer_init_functions()]
    text = net.SaveModelToString("m")
    other = loom.create_network_from_json(dense_config(layers_per_cell=2), backend=backend, seed=9)
    assert other.LoadModelFromString(text, "m") is other
    x = [0.1, 0.2, 0.3, 0.4]
    np.testing.assert_array_equal(loom.to_numpy(other.forward(x)), loom.to_numpy(net.forward(x)))
