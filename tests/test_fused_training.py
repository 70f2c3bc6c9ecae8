"""The fused training step (loom.nn.fused) against the layer-by-layer path it replaces.

``train`` compiles eligible networks into one generated step function; these tests
train the same network both ways (``loom.nn.fused.ENABLED`` off for the reference)
and compare loss histories, weights and the gradients left in ``cfg.grads``, over
Dense / RNN / LSTM leaves sharing a weight block, layers run through their kinds
(Conv2D, MHA, softmax, multi-step and stateful recurrences), every combine mode,
nesting and batch sizes 1 and 2.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import loom
import loom.nn.fused as fused
from loom.cli import GRID_SCATTER_CONFIG
from loom.errors import ShapeError, TrainingDivergedError

NET = {"grid_rows": 1, "grid_cols": 1, "layers_per_cell": 1}


def seed_demo_layers() -> list[dict]:
    """The LOOM README's grid-scatter network (shared dense -> 3 agents on a grid -> sigmoid)."""
    return copy.deepcopy(GRID_SCATTER_CONFIG["layers"])


CASES = {
    "seed_demo": (8, 2, 1, seed_demo_layers()),
    "concat_mixed_batch2": (
        6,
        4,
        2,
        [
            {
                "type": "parallel",
                "combine_mode": "concat",
                "branches": [
                    {"type": "dense", "input_size": 6, "output_size": 4, "activation": "tanh"},
                    {"type": "rnn", "input_size": 6, "hidden_size": 3, "seq_length": 1},
                    {"type": "lstm", "input_size": 6, "hidden_size": 2, "seq_length": 1},
                    {"type": "dense", "input_size": 6, "output_size": 4, "activation": "tanh"},
                    {"type": "softmax"},
                ],
            },
            {"type": "dense", "input_size": 19, "output_size": 4, "activation": "sigmoid"},
        ],
    ),
    "nested_avg_with_kind_branches": (
        8,
        8,
        1,
        [
            {"type": "dense", "input_size": 8, "output_size": 8, "activation": "leaky_relu"},
            {
                "type": "parallel",
                "combine_mode": "avg",
                "branches": [
                    {"type": "multi_head_attention", "d_model": 4, "num_heads": 2, "seq_length": 2},
                    {"type": "lstm", "input_size": 4, "hidden_size": 4, "seq_length": 2},
                    {
                        "type": "parallel",
                        "combine_mode": "add",
                        "branches": [
                            {"type": "dense", "input_size": 8, "output_size": 8, "activation": "sigmoid"},
                            {"type": "rnn", "input_size": 8, "hidden_size": 8, "seq_length": 1},
                        ],
                    },
                ],
            },
            {"type": "dense", "input_size": 8, "output_size": 8, "activation": "linear"},
        ],
    ),
    "conv_then_dense": (
        16,
        3,
        1,
        [
            {
                "type": "conv2d",
                "input_channels": 1,
                "input_height": 4,
                "input_width": 4,
                "kernel_size": 3,
                "stride": 1,
                "filters": 2,
                "activation": "relu",
            },
            {"type": "dense", "input_size": 8, "output_size": 3, "activation": "sigmoid"},
        ],
    ),
    "stateful_rnn_kind_leaf": (
        4,
        2,
        1,
        [
            {"type": "rnn", "input_size": 4, "hidden_size": 5, "seq_length": 1, "stateful": True},
            {"type": "dense", "input_size": 5, "output_size": 2, "activation": "tanh"},
        ],
    ),
}


def make_net(case: str, backend) -> tuple[loom.Network, list[tuple[np.ndarray, np.ndarray]]]:
    n_in, n_out, batch, layers = CASES[case]
    config = {**NET, "batch_size": batch, "grid_cols": len(layers), "layers": layers}
    net = loom.create_network_from_json(config, backend=backend, seed=3)
    rng = np.random.default_rng(1)
    data = [
        (rng.standard_normal(batch * n_in).astype(np.float32), rng.random(batch * n_out).astype(np.float32))
        for _ in range(3)
    ]
    return net, data


def train_both(case: str, backend, monkeypatch, **config) -> tuple:
    """Train copies of one network with the fused step and layer by layer; return both."""
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        net, data = make_net(case, backend)
        result = net.train(data, {"Epochs": 6, "LearningRate": 0.05, "GradientClip": 1.0, **config})
        results.append((net, result))
    return results


def params_of(net: loom.Network, attr: str = "params") -> list[np.ndarray]:
    return [
        loom.to_numpy(getattr(cfg, attr)[name]).astype(np.float64)
        for cfg in net.iter_all_layers()
        for name in sorted(getattr(cfg, attr))
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_step_trains_like_the_layer_by_layer_path(case, backend, monkeypatch):
    (fast, fast_result), (slow, slow_result) = train_both(case, backend, monkeypatch)
    monkeypatch.setattr(fused, "ENABLED", True)
    assert fused.FusedTrainer.build(fast) is not None  # the case really ran compiled
    np.testing.assert_allclose(fast_result.loss_history, slow_result.loss_history, rtol=1e-4, atol=1e-7)
    assert fast_result.loss_history[-1] < fast_result.loss_history[0]
    for a, b in zip(params_of(fast), params_of(slow), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
    # the (clipped) gradients of the last step are left in cfg.grads, as layer-by-layer training leaves them
    for a, b in zip(params_of(fast, "grads"), params_of(slow, "grads"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_fused_training_without_clipping_and_with_cross_entropy(backend, monkeypatch):
    (_, fast_result), (_, slow_result) = train_both(
        "concat_mixed_batch2", backend, monkeypatch, GradientClip=0.0, LossType="cross_entropy"
    )
    np.testing.assert_allclose(fast_result.loss_history, slow_result.loss_history, rtol=1e-4)


def test_fused_parameters_are_views_that_save_and_reload(backend, monkeypatch):
    monkeypatch.setattr(fused, "ENABLED", True)
    net, data = make_net("seed_demo", backend)
    net.train(data, {"Epochs": 2, "LearningRate": 0.1})
    again = loom.load_model_from_string(net.save_model_to_string("m"), "m", backend=backend)
    x = data[0][0]
    np.testing.assert_array_equal(loom.to_numpy(again.forward(x)), loom.to_numpy(net.forward(x)))
    # a second train call (a fresh compiled step over the same buffer) continues from there
    before = net.train(data, {"Epochs": 1, "LearningRate": 0.1}).loss_history[0]
    assert before == pytest.approx(net.train(data, {"Epochs": 1, "LearningRate": 0.0}).loss_history[0], rel=0.05)


def test_divergence_stops_before_the_update_as_layer_by_layer(backend, monkeypatch):
    weights = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        net, data = make_net("seed_demo", backend)
        bad = [(np.full_like(x, np.nan), t) for x, t in data]
        with pytest.raises(TrainingDivergedError, match="epoch 1, batch 1"):
            net.train(bad, {"Epochs": 2, "LearningRate": 0.1})
        weights.append(params_of(net))
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_wrong_input_length_raises_the_layer_error(backend, monkeypatch):
    messages = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        net, data = make_net("seed_demo", backend)
        with pytest.raises(ShapeError) as info:
            net.train([(np.zeros(7, np.float32), data[0][1])], {"Epochs": 1})
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "layers[0]" in messages[0]


def test_generated_step_is_straight_line_code(backend, monkeypatch):
    monkeypatch.setattr(fused, "ENABLED", True)
    net, data = make_net("seed_demo", backend)
    trainer = fused.FusedTrainer.build(net)
    x, t = net._as_input(data[0][0])[0], net._as_input(data[0][1])[0]
    trainer.step(x, t, 1, "mse", 0.1, 1.0, True)
    source = trainer.steps[(1, "mse")].source
    assert "for " not in source  # no loops: one line per array call
    # 3 block products, 3 weight-gradient products, 2 input gradients (none for the first layer), the norm
    assert source.count(".dot(") == 9
