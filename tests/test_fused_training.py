"""The fused training step (loom.nn.fused) against the layer-by-layer path it replaces.

``train`` compiles eligible networks into one generated step function; these tests
train the same network both ways (``TrainingConfig(fused=False)`` for the reference)
and compare loss histories, weights and the gradients left in ``cfg.grads``, over
Dense / RNN / LSTM leaves sharing a weight block, layers run through their kinds
(Conv2D, MHA, softmax, multi-step and stateful recurrences), every combine mode,
nesting and batch sizes 1 and 2. The generated source itself is checked against golden
text for two small networks, and its lines show up in tracebacks.
"""

from __future__ import annotations

import copy
import random
import traceback

import numpy as np
import pytest

import loom
import loom.nn.fused as fused
from loom.backend import cuda_train
from loom.cli import GRID_SCATTER_CONFIG
from loom.errors import ShapeError, TrainingDivergedError

NET = {"grid_rows": 1, "grid_cols": 1, "layers_per_cell": 1}


@pytest.fixture(autouse=True)
def _step_by_step(monkeypatch):
    """These tests are about the Python fused step: on a GPU, keep tiny networks off the epoch kernel.

    (The epoch kernel of loom.nn.fused_cuda is tested in test_gpu_training.py.)
    """
    monkeypatch.setenv("LOOM_TINY_EPOCH_KERNEL", "0")


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


def train_both(case: str, backend, **config) -> tuple:
    """Train copies of one network with the fused step and layer by layer; return both."""
    results = []
    for enabled in (True, False):
        net, data = make_net(case, backend)
        result = net.train(data, {"Epochs": 6, "LearningRate": 0.05, "GradientClip": 1.0, "Fused": enabled, **config})
        results.append((net, result))
    return results


def params_of(net: loom.Network, attr: str = "params") -> list[np.ndarray]:
    return [
        loom.to_numpy(getattr(cfg, attr)[name]).astype(np.float64)
        for cfg in net.iter_all_layers()
        for name in sorted(getattr(cfg, attr))
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_step_trains_like_the_layer_by_layer_path(case, backend):
    (fast, fast_result), (slow, slow_result) = train_both(case, backend)
    assert fused.fused_eligible(fast)  # the case really ran compiled
    np.testing.assert_allclose(fast_result.loss_history, slow_result.loss_history, rtol=1e-4, atol=1e-7)
    assert fast_result.loss_history[-1] < fast_result.loss_history[0]
    for a, b in zip(params_of(fast), params_of(slow), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
    # the (clipped) gradients of the last step are left in cfg.grads, as layer-by-layer training leaves them
    for a, b in zip(params_of(fast, "grads"), params_of(slow, "grads"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_fused_training_without_clipping_and_with_cross_entropy(backend):
    (_, fast_result), (_, slow_result) = train_both(
        "concat_mixed_batch2", backend, GradientClip=0.0, LossType="cross_entropy"
    )
    np.testing.assert_allclose(fast_result.loss_history, slow_result.loss_history, rtol=1e-4)


def test_fused_training_saves_and_reloads_and_continues(backend):
    net, data = make_net("seed_demo", backend)
    net.train(data, {"Epochs": 2, "LearningRate": 0.1})
    again = loom.load_model_from_string(net.save_model_to_string("m"), "m", backend=backend)
    x = data[0][0]
    np.testing.assert_array_equal(loom.to_numpy(again.forward(x)), loom.to_numpy(net.forward(x)))
    # a second train call (a fresh compiled step over the same buffer) continues from there
    before = net.train(data, {"Epochs": 1, "LearningRate": 0.1}).loss_history[0]
    assert before == pytest.approx(net.train(data, {"Epochs": 1, "LearningRate": 0.0}).loss_history[0], rel=0.05)


def test_divergence_stops_before_the_update_as_layer_by_layer(backend):
    weights = []
    for enabled in (True, False):
        net, data = make_net("seed_demo", backend)
        net.layers[0].params["kernel"][...] = 3e38  # finite weights whose products overflow
        with pytest.raises(TrainingDivergedError, match="epoch 1, batch 1"):
            net.train(data, {"Epochs": 2, "LearningRate": 0.1, "Fused": enabled})
        weights.append(params_of(net))
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_wrong_input_length_raises_the_layer_error(backend):
    messages = []
    for enabled in (True, False):
        net, data = make_net("seed_demo", backend)
        with pytest.raises(ShapeError) as info:
            net.train([(np.zeros(7, np.float32), data[0][1])], {"Epochs": 1, "Fused": enabled})
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "layers[0]" in messages[0]


def test_batches_of_different_sizes_compile_one_step_each(backend):
    """2-D inputs carry their own batch size: one compiled step per size, same training as layer by layer."""
    rng = np.random.default_rng(5)
    data = [
        (rng.standard_normal((rows, 8)).astype(np.float32), rng.random((rows, 2)).astype(np.float32))
        for rows in (1, 3, 2, 3)
    ]
    histories = []
    for enabled in (True, False):
        net = loom.create_network_from_json(GRID_SCATTER_CONFIG, backend=backend, seed=0)
        histories.append(net.train(data, {"Epochs": 3, "LearningRate": 0.1, "Fused": enabled}).loss_history)
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-4)


# ---------------------------------------------------------------------------------------------- random networks
ACTIVATIONS = ["relu", "sigmoid", "tanh", "leaky_relu", "linear", "gelu", "softplus", "elu"]


def random_branch(rng: random.Random, n_in: int, depth: int) -> tuple[dict, int]:
    """A random layer on ``n_in`` features (nested Parallels up to depth 2) and its output size."""
    kind = rng.choice(["dense", "dense", "rnn", "lstm", "parallel" if depth < 2 else "dense", "softmax"])
    if kind == "dense":
        out = rng.randint(1, 6)
        return {"type": "dense", "input_size": n_in, "output_size": out, "activation": rng.choice(ACTIVATIONS)}, out
    if kind in ("rnn", "lstm"):
        seq = rng.choice([s for s in (1, 2) if n_in % s == 0])
        hidden = rng.randint(1, 4)
        return {"type": kind, "input_size": n_in // seq, "hidden_size": hidden, "seq_length": seq}, hidden * seq
    if kind == "softmax":
        return {"type": "softmax"}, n_in
    mode = rng.choice(["concat", "add", "avg", "grid_scatter"])
    if mode in ("add", "avg"):
        out = rng.randint(1, 5)
        branches = [
            {"type": "dense", "input_size": n_in, "output_size": out, "activation": rng.choice(ACTIVATIONS)}
            for _ in range(rng.randint(1, 3))
        ]
        if rng.random() < 0.5:
            branches.append({"type": "rnn", "input_size": n_in, "hidden_size": out, "seq_length": 1})
        return {"type": "parallel", "combine_mode": mode, "branches": branches}, out
    pairs = [random_branch(rng, n_in, depth + 1) for _ in range(rng.randint(1, 3))]
    layer = {"type": "parallel", "combine_mode": mode, "branches": [b for b, _ in pairs]}
    if mode == "grid_scatter":
        rows = list(range(len(pairs)))
        rng.shuffle(rows)
        layer.update(grid_output_rows=len(pairs), grid_output_cols=1, grid_output_layers=1)
        layer["grid_positions"] = [
            {"branch_index": i, "target_row": row, "target_col": 0, "target_layer": 0} for i, row in enumerate(rows)
        ]
    return layer, sum(out for _, out in pairs)


@pytest.mark.parametrize("seed", range(0, 150, 10))
def test_random_networks_train_like_the_layer_by_layer_path(seed, backend):
    """Ten random networks per case: stacks of Dense / RNN / LSTM / softmax / nested Parallels, batch 1-3."""
    for case in range(seed, seed + 10):
        rng = random.Random(case)
        n_in = n = rng.randint(2, 6)
        layers = []
        for _ in range(rng.randint(1, 3)):
            layer, n = random_branch(rng, n, 0)
            layers.append(layer)
        layers.append({"type": "dense", "input_size": n, "output_size": 2, "activation": "sigmoid"})
        batch, clip = rng.choice([1, 1, 2, 3]), rng.choice([0.0, 1.0])
        config = {**NET, "batch_size": batch, "grid_cols": len(layers), "layers": layers}
        data_rng = np.random.default_rng(case)
        data = [
            (data_rng.standard_normal(batch * n_in).astype(np.float32), data_rng.random(batch * 2).astype(np.float32))
            for _ in range(3)
        ]
        runs = []
        for enabled in (True, False):
            net = loom.create_network_from_json(copy.deepcopy(config), backend=backend, seed=case)
            settings = {"Epochs": 4, "LearningRate": 0.05, "GradientClip": clip, "Fused": enabled}
            history = net.train(data, settings).loss_history
            runs.append((history, params_of(net)))
        (fast_history, fast_params), (slow_history, slow_params) = runs
        np.testing.assert_allclose(fast_history, slow_history, rtol=1e-4, atol=1e-6, err_msg=f"case {case}: {layers}")
        for a, b in zip(fast_params, slow_params, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5, err_msg=f"case {case}")


def compiled_trainer(net: loom.Network) -> fused.FusedTrainer:
    """The fused trainer cached on the network's flat parameters (through the public engine API)."""
    with net.training_parameters() as flat:
        return fused.FusedTrainer.for_parameters(net, flat)


def test_train_calls_reuse_the_compiled_step_until_something_changes(backend):
    epoch = {"Epochs": 1, "LearningRate": 0.1, "GradientClip": 1.0}
    net, data = make_net("seed_demo", backend)
    whole, _ = make_net("seed_demo", backend)
    one_call = whole.train(data, {**epoch, "Epochs": 5}).loss_history
    per_epoch = [net.train(data, epoch).loss_history[0] for _ in range(5)]
    np.testing.assert_allclose(per_epoch, one_call, rtol=1e-6)
    trainer = compiled_trainer(net)
    assert trainer.steps  # compiled by the calls above
    net.train(data, epoch)
    assert compiled_trainer(net) is trainer  # nothing changed: no new layout, no new compilation
    net.layers[0].params["kernel"] = net.layers[0].params["kernel"] * 1  # a replaced array is copied in ...
    net.train(data, epoch)
    assert compiled_trainer(net) is trainer
    net.layers[2].activation = loom.Activation.TANH  # ... a config change compiles again
    net.train(data, epoch)
    assert compiled_trainer(net) is not trainer
    # the recompiled step trains the changed network as the layer-by-layer path does
    twin = loom.load_model_from_string(net.save_model_to_string("m"), "m", backend=backend)
    fast = net.train(data, epoch).loss_history
    np.testing.assert_allclose(fast, twin.train(data, {**epoch, "Fused": False}).loss_history, rtol=1e-5)


def test_parameters_changed_between_calls_are_trained_from_their_new_values(backend):
    net, data = make_net("seed_demo", backend)
    net.train(data, {"Epochs": 2, "LearningRate": 0.1})
    kernel = net.layers[0].params["kernel"]
    kernel[...] = 0.5  # in place, between two train calls
    net.layers[2].params["biases"] = net.layers[2].params["biases"] + 1.0  # replaced
    twin = loom.load_model_from_string(net.save_model_to_string("m"), "m", backend=backend)
    got = net.train(data, {"Epochs": 2, "LearningRate": 0.1}).loss_history
    want = twin.train(data, {"Epochs": 2, "LearningRate": 0.1}).loss_history
    np.testing.assert_array_equal(got, want)


def test_a_deep_copy_of_a_trained_network_trains_on_its_own(backend):
    net, data = make_net("seed_demo", backend)
    net.train(data, {"Epochs": 2, "LearningRate": 0.1})
    before = params_of(net)
    twin = copy.deepcopy(net)
    assert compiled_trainer(twin) is not compiled_trainer(net)  # the compiled step stays with the original
    twin.train(data, {"Epochs": 3, "LearningRate": 0.1})
    for a, b in zip(before, params_of(net), strict=True):
        np.testing.assert_array_equal(a, b)  # training the copy left the original alone
    assert any(not np.array_equal(a, b) for a, b in zip(before, params_of(twin), strict=True))


# ---------------------------------------------------------------------------------------------- the switch
def test_fused_switch_is_a_config_field_and_the_module_flag_still_works(backend, monkeypatch):
    net, data = make_net("concat_mixed_batch2", backend)
    config = loom.TrainingConfig.from_dict({"Epochs": 2, "LearningRate": 0.05, "Fused": False})
    assert config.fused is False and loom.TrainingConfig.from_dict({"fused": True}).fused is True
    with pytest.raises(loom.errors.ConfigError, match="fused: expected true or false"):
        loom.TrainingConfig(fused="no")
    layer_by_layer = net.train(data, config).loss_history
    assert compiled_trainer(net).steps == {}  # nothing was compiled
    monkeypatch.setattr(fused, "ENABLED", False)  # the deprecated switch
    again, _ = make_net("concat_mixed_batch2", backend)
    with pytest.warns(DeprecationWarning, match="TrainingConfig"):
        deprecated = again.train(data, {"Epochs": 2, "LearningRate": 0.05}).loss_history
    assert compiled_trainer(again).steps == {}
    np.testing.assert_array_equal(deprecated, layer_by_layer)


# ---------------------------------------------------------------------------------------------- generated source
GOLDEN_DENSE = """\
def step(x, target, lr, finish):
    if x.shape[0] != 3: shape_error_1(x)
    x_in_2[...] = x
    z_3 = x_aug_4.dot(block_5)
    y_6 = act_7(z_3)
    out_8 = y_6.reshape(-1)
    if out_8.shape[0] != 4: shape_error_9(out_8)
    x_in_10[...] = out_8
    z_11 = x_aug_12.dot(block_13)
    y_14 = act_15(z_11)
    out_16 = y_14.reshape(-1)
    loss, grad = loss_fn(out_16, target)
    if not isfinite(loss): return loss, out_16
    gy_18 = grad.reshape(1, 2)
    gz_19 = act_bw_20(gy_18, z_11, y_14)
    x_col_21.dot(gz_19, out=grad_block_22)  # every kernel and bias gradient at once
    gx_23 = gz_19.dot(kernel_t_24).reshape(-1)
    gy_26 = gx_23.reshape(1, 4)
    gz_27 = act_bw_28(gy_26, z_3, y_6)
    x_col_29.dot(gz_27, out=grad_block_30)  # every kernel and bias gradient at once
    finish(lr)
    return loss, out_16
"""

# after a first step: the concat merge and its gradient split inline
GOLDEN_PARALLEL = """\
def step(x, target, lr, finish):
    if x.shape[0] != 6: shape_error_1(x)
    x_in_2[...] = x.reshape(2, 3)
    z_3 = x_aug_4.dot(block_5)
    z_6 = z_3[:, 0:2]
    y_7 = act_8(z_6)
    out_9 = y_7.reshape(-1)
    z_10 = z_3[:, 2:3]
    h_11 = rnn_12(z_10, xp_13)
    out_14 = h_11.reshape(-1)
    out_15 = kind_16.run(x, False)
    merged_17 = concat_18([out_9, out_14, out_15])
    loss, grad = loss_fn(merged_17, target)
    if not isfinite(loss): return loss, merged_17
    g_19 = grad[0:4]
    g_20 = grad[4:6]
    g_21 = grad[6:12]
    gy_23 = g_19.reshape(2, 2)
    gz_24 = act_bw_25(gy_23, z_6, y_7)
    gy_26 = g_20.reshape(2, 1)
    gz_27 = rnn_bw_28(gy_26, h_11, one_29)
    concatenate_22([gz_24, gz_27], axis=1, out=grad_z_30)
    x_col_31.dot(grad_z_30, out=grad_block_32)  # every kernel and bias gradient at once
    kind_33.run_backward(g_21)
    finish(lr)
    return loss, merged_17
"""


def test_generated_source_of_a_dense_stack_is_golden(backend, monkeypatch):
    monkeypatch.setattr(cuda_train, "_OVERRIDE", [None])  # the generic step, also under an emulated GPU step
    layers = [
        {"type": "dense", "input_size": 3, "output_size": 4, "activation": "tanh"},
        {"type": "dense", "input_size": 4, "output_size": 2, "activation": "sigmoid"},
    ]
    net = loom.create_network_from_json({**NET, "grid_cols": 2, "batch_size": 1, "layers": layers}, backend=backend)
    assert fused.fused_step_source(net) == GOLDEN_DENSE


def test_generated_source_of_a_parallel_block_is_golden(backend, monkeypatch):
    monkeypatch.setattr(cuda_train, "_OVERRIDE", [None])  # the generic step, also under an emulated GPU step
    layers = [
        {
            "type": "parallel",
            "combine_mode": "concat",
            "branches": [
                {"type": "dense", "input_size": 3, "output_size": 2, "activation": "relu"},
                {"type": "rnn", "input_size": 3, "hidden_size": 1, "seq_length": 1},
                {"type": "softmax"},
            ],
        }
    ]
    net = loom.create_network_from_json({**NET, "batch_size": 2, "layers": layers}, backend=backend, seed=0)
    data = [(np.ones(6, np.float32), np.full(12, 0.5, np.float32))]
    net.train(data, {"Epochs": 1, "LearningRate": 0.1})  # binds the merge: the step now inlines it
    assert fused.fused_step_source(net, 2) == GOLDEN_PARALLEL


def test_tracebacks_show_the_generated_line(backend):
    net, data = make_net("conv_then_dense", backend)
    with pytest.raises(ShapeError) as info:
        net.train([(data[0][0], np.zeros(5, np.float32))], {"Epochs": 1})  # the target is 2 values short
    text = "".join(traceback.format_exception(info.value))
    assert "<loom fused step" in text
    assert "loss, grad = loss_fn(" in text  # the generated line, read back through linecache


def test_debug_environment_variable_prints_the_source(backend, monkeypatch, capsys):
    monkeypatch.setenv("LOOM_DEBUG_FUSED", "1")
    net, data = make_net("seed_demo", backend)
    net.train(data, {"Epochs": 1})
    err = capsys.readouterr().err
    assert "# <loom fused step" in err and "def step(x, target, lr, finish):" in err
