"""``loom.compat.welvet``: the welvet Python package's API on loom's engine."""

from __future__ import annotations

import numpy as np
import pytest

import loom
from loom.compat import welvet

CONFIG = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 2,
    "layers": [
        {"type": "dense", "input_size": 4, "output_size": 3, "activation": "tanh"},
        {"type": "dense", "input_size": 3, "output_size": 2, "activation": "sigmoid"},
    ],
}
BATCHES = [
    {"Input": [0.9, 0.9, 0.1, 0.1], "Target": [1.0, 0.0]},
    {"Input": [0.1, 0.1, 0.9, 0.9], "Target": [0.0, 1.0]},
]


def test_simple_api_round_trip():
    welvet.create_network_from_json(CONFIG)
    out = welvet.forward_simple([0.9, 0.9, 0.1, 0.1])
    assert len(out) == 2 and all(isinstance(v, float) for v in out)
    result = welvet.train_simple(BATCHES, {"Epochs": 30, "LearningRate": 0.5})
    assert result["LossHistory"][-1] < result["LossHistory"][0] and result["FinalLoss"] == result["LossHistory"][-1]
    metrics = welvet.evaluate_network_simple([b["Input"] for b in BATCHES], [0, 1])
    assert set(metrics) >= {"score", "avg_deviation", "buckets"}
    text = welvet.save_model_simple()
    before = welvet.forward_simple([0.9, 0.9, 0.1, 0.1])
    welvet.load_model_simple(text)
    assert welvet.forward_simple([0.9, 0.9, 0.1, 0.1]) == before
    assert welvet.get_network_info_simple() == {
        "batch_size": 1,
        "grid_cols": 1,
        "grid_rows": 1,
        "layers_per_cell": 2,
        "total_layers": 2,
    }
    welvet.backward_simple([0.1, -0.1])
    welvet.update_weights_simple(0.1)
    assert welvet.forward_simple([0.9, 0.9, 0.1, 0.1]) != before


def test_handle_api_works_and_fixes_welvets_bugs():
    handle = welvet.create_network(4, grid_rows=1, grid_cols=1, layers_per_cell=2)
    welvet.configure_sequential_network(handle, [4, 3, 2])
    info = welvet.get_network_info(handle)
    assert info["total_layers"] == 2
    out = welvet.forward(handle, [0.5, 0.1, 0.2, 0.3])
    assert welvet.get_output(handle, 2) == out  # welvet 0.0.6 always returned []
    inputs = [b["Input"] for b in BATCHES]
    targets = [b["Target"] for b in BATCHES]
    losses = [welvet.train_epoch(handle, inputs, targets, learning_rate=0.5) for _ in range(30)]
    assert losses[-1] < losses[0]  # a real MSE gradient (welvet passed the target)
    result = welvet.train(handle, [(b["Input"], b["Target"]) for b in BATCHES], {"epochs": 5, "learning_rate": 0.1})
    assert len(result["LossHistory"]) == 5
    layer = welvet.call_layer_init("InitDenseLayer", [4, 3, 1])
    assert layer["InputHeight"] == 4 and layer["Activation"] == 1
    welvet.set_layer(handle, 0, 0, 0, welvet.init_dense_layer(4, 3, 2))
    assert welvet.get_network_info(handle)["total_layers"] == 2
    text = welvet.save_model_to_string(handle, "saved_model")
    other = welvet.load_model_from_string(text, "saved_model")
    assert welvet.forward(other, [1, 2, 3, 4]) == welvet.forward(handle, [1, 2, 3, 4])
    welvet.free_network(other)
    with pytest.raises(welvet.NoNetworkError, match="no such network"):
        welvet.forward(other, [1, 2, 3, 4])
    assert welvet.initialize_gpu(handle) in (True, False)
    welvet.cleanup_gpu(handle)
    assert welvet.get_version().startswith("loom-nn ")
    names = [f["Name"] for f in welvet.list_layer_init_functions()]
    assert "InitDenseLayer" in names and names == sorted(names)
    assert welvet.Activation.LINEAR == 5 and welvet.Activation.RELU == welvet.Activation.SCALED_RELU == 0


def test_no_network_is_a_runtime_error():
    welvet._global.clear()
    with pytest.raises(RuntimeError, match="no network created"):
        welvet.forward_simple([1.0])
    assert issubclass(welvet.NoNetworkError, loom.errors.LoomError)


def test_backward_passes_its_argument_as_the_gradient():
    handle = welvet.create_network(4, grid_rows=1, grid_cols=1, layers_per_cell=2)
    welvet.configure_sequential_network(handle, [4, 3, 2], [1, 1])  # sigmoid: no dead units, never a zero gradient
    net = welvet._handles[handle]
    welvet.forward(handle, [1, 2, 3, 4])
    welvet.backward(handle, [0.5, -0.5])
    via_welvet = loom.to_numpy(net.layers[1].grads["kernel"]).copy()
    net.forward([1, 2, 3, 4])
    net.backward([0.5, -0.5])
    np.testing.assert_array_equal(via_welvet, loom.to_numpy(net.layers[1].grads["kernel"]))
    assert np.any(via_welvet)
