"""Training on the GPU (loom.nn.gpu_training, loom.nn.fused_cuda, loom.backend.cuda_train) against the NumPy step.

* every training kernel against the array-API function it replaces: activations and their
  derivatives (every id), bias gradient, MSE, clipping factor (one block and several), and the
  update of every optimizer with clipping factor, guard copy and the non-finite gate;
* weights after 10 steps equal the NumPy step's within 1e-5: fused and layer-by-layer step,
  whole-epoch kernel of tiny networks, SGD (plain, momentum + Nesterov + decay), Adam, AdamW,
  RMSprop, clipping, MSE and cross-entropy, Dense / RNN / LSTM leaves and every merge;
* one device-to-host transfer per batch (the loss), one per epoch for the epoch kernel; on a
  GPU, the queued step does not wait for the device;
* the divergence guard on the GPU paths restores the last finite weights.

Runs on the GPU with ``--backend cupy``; on the CPU with ``LOOM_CUDA_EMULATOR=1`` (the kernels
built by g++); skipped otherwise.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import loom
from loom.backend import Backend
from loom.cli import GRID_SCATTER_CONFIG
from loom.errors import TrainingDivergedError
from loom.nn import fused_cuda
from loom.nn.optimizers import make_optimizer
from loom.ops.activations import activate, activation_backward
from loom.ops.losses import loss_and_grad
from tests.gpu_training_utils import TrainRig, assert_same_parameters, parameters, train_rig

NET = {"grid_rows": 1, "grid_cols": 1, "layers_per_cell": 1}


@pytest.fixture(scope="module")
def rig(backend_name: str) -> TrainRig:
    return train_rig(backend_name)


def _rng(request: pytest.FixtureRequest) -> np.random.Generator:
    return np.random.default_rng(abs(hash(request.node.name)) % (2**32))


# ------------------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("act", [*range(16), 99])
def test_bias_activation_and_its_derivative_match_the_ops(rig, act, request):
    rng = _rng(request)
    z = (rng.standard_normal((5, 37)) * 4).astype(np.float32)
    z[0, :5] = [0.0, -3.0, 3.0, 6.0, -1.0]  # the kinks of the piecewise activations
    bias = rng.standard_normal(37).astype(np.float32)
    bias[:5] = 0.0
    grad_y = rng.standard_normal((5, 37)).astype(np.float32)
    pre = z + bias
    y_ref = activate(pre, act, np)
    z_dev = rig.put(z)
    y = rig.kernels.bias_act(z_dev, rig.put(bias), act)
    np.testing.assert_array_equal(loom.to_numpy(z_dev), pre)  # the pre-activation is kept for backward
    np.testing.assert_allclose(loom.to_numpy(y), y_ref, rtol=2e-6, atol=1e-6)
    grad = rig.kernels.act_backward(rig.put(grad_y), z_dev, y, act)
    np.testing.assert_allclose(
        loom.to_numpy(grad), activation_backward(grad_y, pre, y_ref, act, np), rtol=2e-6, atol=1e-6
    )


def test_column_sum_mse_and_clip_scale_match_their_references(rig, request):
    rng = _rng(request)
    a = rng.standard_normal((33, 70)).astype(np.float32)
    out = rig.put(np.full(70, np.nan, np.float32))
    np.testing.assert_allclose(loom.to_numpy(rig.kernels.column_sum(rig.put(a), out)), a.sum(0), rtol=1e-5, atol=1e-5)
    for n in (7, 70_001):  # one block; several blocks and the second pass
        y, t = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        loss, grad = rig.kernels.mse(rig.put(y), rig.put(t), float(n))
        ref_loss, ref_grad = loss_and_grad("mse", y, t, np)
        assert float(loom.to_numpy(loss)[0]) == pytest.approx(ref_loss, rel=1e-12)
        np.testing.assert_allclose(loom.to_numpy(grad), ref_grad, rtol=1e-6)
        g = rng.standard_normal(n).astype(np.float32)
        norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
        for clip, expected in ((norm / 3, 1 / 3), (norm * 2, 1.0)):
            scale = rig.put(np.zeros((), np.float32))
            rig.kernels.clip_scale(rig.put(g), clip, scale)
            assert float(loom.to_numpy(scale).reshape(-1)[0]) == pytest.approx(expected, rel=1e-6)


OPTIMIZERS = {
    "sgd": ("sgd", {}),
    "sgd_momentum_nesterov_decay": ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    "adam": ("adam", {}),
    "adamw": ("adamw", {"weight_decay": 0.1}),
    "rmsprop_momentum": ("rmsprop", {"momentum": 0.5, "weight_decay": 0.01}),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_update_kernel_is_each_optimizers_update(rig, name, request):
    rng = _rng(request)
    spec, options = OPTIMIZERS[name]
    params = rng.standard_normal(1000).astype(np.float32)
    reference, device = make_optimizer(spec, 0.01, **options), make_optimizer(spec, 0.01, **options)
    ref_params, dev_params = params.copy(), rig.put(params)
    update = reference.bind(ref_params, ref_grads := np.zeros_like(params), np)
    state = device.state_buffers(dev_params, rig.raw)
    backup = rig.put(np.zeros_like(params))
    finite, infinite = rig.put(np.array([0.5])), rig.put(np.array([np.inf]))
    for step in range(1, 5):
        g = (rng.standard_normal(1000) * 10.0 ** rng.integers(-6, 1, 1000)).astype(np.float32)
        ref_grads[...] = g
        before = loom.to_numpy(dev_params).copy()
        scale = 0.5 if step % 2 else 1.0
        update(0.01 * step, scale)
        scale_dev = rig.put(np.array(scale, np.float32)) if step % 2 else None
        rig.kernels.update(
            device, dev_params, rig.put(g), state, 0.01 * step, step, scale=scale_dev, gate=finite, backup=backup
        )
        np.testing.assert_array_equal(loom.to_numpy(backup), before)
        np.testing.assert_allclose(loom.to_numpy(dev_params), ref_params, rtol=1e-6, atol=1e-7)
    frozen = loom.to_numpy(dev_params).copy()
    rig.kernels.update(device, dev_params, rig.put(g), state, 0.01, 5, gate=infinite, backup=backup)
    np.testing.assert_array_equal(loom.to_numpy(dev_params), frozen)  # a non-finite loss: no update at all
    for key, value in reference.state.items():
        np.testing.assert_allclose(loom.to_numpy(device.state[key]), value, rtol=1e-5, atol=1e-7, err_msg=key)


# ------------------------------------------------------------------------------------------ training
def _mlp() -> tuple[dict, int, int]:
    layers = [
        {"type": "dense", "input_size": 12, "output_size": 16, "activation": "relu"},
        {"type": "dense", "input_size": 16, "output_size": 8, "activation": "gelu"},
        {"type": "dense", "input_size": 8, "output_size": 3, "activation": "sigmoid"},
    ]
    return {**NET, "batch_size": 4, "grid_cols": 3, "layers": layers}, 12, 3


def _seed_demo() -> tuple[dict, int, int]:
    return copy.deepcopy(GRID_SCATTER_CONFIG), 8, 2


def _mixed_batch2() -> tuple[dict, int, int]:
    layers = [
        {"type": "dense", "input_size": 6, "output_size": 6, "activation": "tanh"},
        {
            "type": "parallel",
            "combine_mode": "grid_scatter",
            "grid_output_rows": 1,
            "grid_output_cols": 3,
            "grid_output_layers": 1,
            "grid_positions": [
                {"branch_index": 0, "target_row": 0, "target_col": 2, "target_layer": 0},
                {"branch_index": 1, "target_row": 0, "target_col": 0, "target_layer": 0},
                {"branch_index": 2, "target_row": 0, "target_col": 1, "target_layer": 0},
            ],
            "branches": [
                {"type": "lstm", "input_size": 6, "hidden_size": 3, "seq_length": 1},
                {
                    "type": "parallel",
                    "combine_mode": "avg",
                    "branches": [
                        {"type": "dense", "input_size": 6, "output_size": 2, "activation": "elu"},
                        {"type": "rnn", "input_size": 6, "hidden_size": 2, "seq_length": 1},
                    ],
                },
                {
                    "type": "parallel",
                    "combine_mode": "concat",
                    "branches": [
                        {"type": "dense", "input_size": 6, "output_size": 2, "activation": "silu"},
                        {"type": "dense", "input_size": 6, "output_size": 1, "activation": "softplus"},
                    ],
                },
            ],
        },
        {"type": "dense", "input_size": 8, "output_size": 4, "activation": "sigmoid"},
    ]
    return {**NET, "batch_size": 2, "grid_cols": 3, "layers": layers}, 6, 4


NETWORKS = {"mlp": _mlp, "seed_demo": _seed_demo, "mixed_batch2": _mixed_batch2}


def _data(config: dict, n_in: int, n_out: int, batches: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    b = config["batch_size"]
    return [
        (rng.standard_normal(b * n_in).astype(np.float32), rng.random(b * n_out).astype(np.float32))
        for _ in range(batches)
    ]


def _train_pair(rig: TrainRig, network: str, settings: dict, *, epochs: int = 2):
    """The same network trained 2 epochs x 5 batches (10 steps) on NumPy (reference) and through the GPU path."""
    config, n_in, n_out = NETWORKS[network]()
    data = _data(config, n_in, n_out)
    settings = {"Epochs": epochs, "LearningRate": 0.05, **settings}
    reference = loom.create_network_from_json(config, backend="numpy", seed=3)
    ref_result = reference.train(data, settings)
    device = rig.network(config, seed=3)
    device_data = [(rig.put(x), rig.put(t)) for x, t in data]
    with rig.device():
        result = device.train(device_data, settings)
    return reference, ref_result, device, result


def _count_epoch_kernel_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    runs: list[int] = []
    original = fused_cuda.EpochKernel.run

    def run(self, device, batches, lr):
        runs.append(len(batches))
        return original(self, device, batches, lr)

    monkeypatch.setattr(fused_cuda.EpochKernel, "run", run)
    return runs


STEP_CASES = [
    ("mlp", "fused", {"Optimizer": "sgd"}),
    ("mlp", "fused", {"Optimizer": "adam", "GradientClip": 0.05}),
    ("mlp", "layer", {"Optimizer": "sgd", "GradientClip": 0.05}),
    ("mlp", "layer", {"Optimizer": "adam"}),
    ("mlp", "fused", {"Optimizer": "sgd", "Momentum": 0.9, "Nesterov": True, "WeightDecay": 0.01}),
    ("mlp", "fused", {"Optimizer": "adamw", "LossType": "cross_entropy"}),
    ("mlp", "fused", {"Optimizer": "rmsprop", "LearningRate": 0.005}),
    ("seed_demo", "fused", {"GradientClip": 1.0}),
    ("mixed_batch2", "fused", {"Optimizer": "adam"}),
]


@pytest.mark.parametrize(("network", "path", "settings"), STEP_CASES)
def test_the_gpu_step_trains_as_the_numpy_step(rig, network, path, settings, monkeypatch):
    monkeypatch.setenv("LOOM_TINY_EPOCH_KERNEL", "0")  # step by step: the cuBLAS + fused-kernel step
    runs = _count_epoch_kernel_runs(monkeypatch)
    reference, ref_result, device, result = _train_pair(rig, network, {**settings, "Fused": path == "fused"})
    assert not runs
    assert_same_parameters(reference, device)
    np.testing.assert_allclose(result.loss_history, ref_result.loss_history, rtol=1e-5)


EPOCH_CASES = [
    ("seed_demo", {"GradientClip": 1.0, "LearningRate": 0.15}),
    ("seed_demo", {"Optimizer": "adam", "LossType": "cross_entropy"}),
    ("mixed_batch2", {"Optimizer": "sgd", "Momentum": 0.9, "GradientClip": 0.5}),
    ("mixed_batch2", {"Optimizer": "rmsprop", "LearningRate": 0.005, "Shuffle": True, "Seed": 4}),
    ("mlp", {"Optimizer": "adamw", "LrSchedule": "cosine"}),
]


@pytest.mark.parametrize(("network", "settings"), EPOCH_CASES)
def test_the_epoch_kernel_trains_tiny_networks_as_the_numpy_step(rig, network, settings, monkeypatch):
    runs = _count_epoch_kernel_runs(monkeypatch)
    reference, ref_result, device, result = _train_pair(rig, network, settings)
    assert runs == [5, 5]  # one launch per epoch
    assert_same_parameters(reference, device)
    np.testing.assert_allclose(result.loss_history, ref_result.loss_history, rtol=1e-5)


@pytest.mark.parametrize("runner", ["epoch", "step"])
def test_one_device_to_host_transfer_per_batch_and_one_per_epoch_kernel(rig, runner, monkeypatch):
    if runner == "step":
        monkeypatch.setenv("LOOM_TINY_EPOCH_KERNEL", "0")
    fetches: list[tuple[int, ...]] = []
    original = Backend.fetch

    def fetch(self, array):
        fetches.append(tuple(array.shape))
        return original(self, array)

    monkeypatch.setattr(Backend, "fetch", fetch)
    config, n_in, n_out = _mlp()
    net = rig.network(config)
    data = [(rig.put(x), rig.put(t)) for x, t in _data(config, n_in, n_out)]
    with rig.device():
        net.train(data, {"Epochs": 3, "LearningRate": 0.05, "GradientClip": 1.0})
    assert fetches == ([(5,)] * 3 if runner == "epoch" else [(1,)] * 15)


def test_the_queued_gpu_step_does_not_wait_for_the_device(rig, monkeypatch):
    if rig.emulated:
        pytest.skip("a CPU emulation runs kernels when they are launched")
    monkeypatch.setenv("LOOM_TINY_EPOCH_KERNEL", "0")
    cupy = rig.raw
    config, n_in, n_out = _mlp()
    net = rig.network(config)
    data = [(rig.put(x), rig.put(t)) for x, t in _data(config, n_in, n_out, batches=1)]
    net.train(data, {"Epochs": 1})  # compiled and warm
    spin = cupy.RawKernel(
        'extern "C" __global__ void spin(long long n) { long long t = clock64(); while (clock64() - t < n) {} }', "spin"
    )
    with net.training_parameters() as flat:
        from loom.nn.training_engine import LossFunction, Stepper

        stepper = Stepper(net, flat, LossFunction("mse"), make_optimizer("sgd", 0.01))
        x, t = data[0]
        stepper.step(x, t, 4, 0.01)  # compile this stepper's step
        compiled = stepper.fused.steps[(4, ("mse", "loom"), True)]
        spin((1,), (1,), (np.int64(1_000_000_000),))  # about 0.5 s of device time ahead of the step
        loss, _ = compiled(x, t, 0.01, stepper.finish)  # forward, loss, backward, clip, update: queued
        assert not cupy.cuda.get_current_stream().done  # nothing above waited for the device
        assert math.isfinite(stepper.device.fetch(loss))


@pytest.mark.parametrize("runner", ["epoch", "step"])
def test_divergence_on_the_gpu_restores_the_last_finite_weights(rig, runner, monkeypatch):
    if runner == "step":
        monkeypatch.setenv("LOOM_TINY_EPOCH_KERNEL", "0")
    config = {
        **NET,
        "batch_size": 1,
        "grid_cols": 2,
        "layers": [
            {"type": "dense", "input_size": 3, "output_size": 4, "activation": "linear"},
            {"type": "dense", "input_size": 4, "output_size": 1, "activation": "linear"},
        ],
    }
    x, t = np.array([2.0, -3.0, 4.0], np.float32), np.array([1.0], np.float32)
    settings = {"Epochs": 200, "LearningRate": 50.0}
    reference = loom.create_network_from_json(config, backend="numpy", seed=1)
    with pytest.raises(TrainingDivergedError) as ref_info:
        reference.train([(x, t)], settings)
    device = rig.network(config)
    with rig.device(), pytest.raises(TrainingDivergedError) as info:
        device.train([(rig.put(x), rig.put(t))], settings)
    assert (info.value.epoch, info.value.batch) == (ref_info.value.epoch, ref_info.value.batch)
    # growing exponentially, the runs' float roundings drift apart by ~1e-4 of these huge values
    assert info.value.last_finite_loss == pytest.approx(ref_info.value.last_finite_loss, rel=1e-2)
    restored = parameters(device)
    assert all(np.all(np.isfinite(v)) for v in restored.values())
    for name, value in parameters(reference).items():
        np.testing.assert_allclose(restored[name], value, rtol=1e-2, err_msg=name)
    y = loom.to_numpy(device.forward(x))
    assert float(((y - t) ** 2).mean()) == pytest.approx(info.value.last_finite_loss, rel=1e-3)


def test_the_generated_gpu_step_reads_nothing_back(rig):
    config, n_in, n_out = _mlp()
    net = rig.network(config)
    data = [(rig.put(x), rig.put(t)) for x, t in _data(config, n_in, n_out, batches=1)]
    with rig.device(), net.training_parameters() as flat:
        from loom.nn.training_engine import LossFunction, Stepper

        stepper = Stepper(net, flat, LossFunction("mse"), make_optimizer("sgd", 0.01))
        stepper.step(*data[0], 4, 0.01)
        source = stepper.fused.steps[(4, ("mse", "loom"), True)].source
    assert "isfinite" not in source and "float(" not in source  # no host read inside the step
    assert "finish(lr, loss)" in source  # the update kernel is gated by the loss on the device
    assert source.count("gemm_") >= 8  # 3 forward, 3 weight and 2 input gradients through cuBLAS


def test_the_epoch_kernel_source_is_printed_for_debugging(rig, monkeypatch, capsys):
    monkeypatch.setenv("LOOM_DEBUG_FUSED", "1")
    config, n_in, n_out = _seed_demo()
    config["layers"][-1]["activation"] = "tanh"  # a layout no other test compiled: built (and printed) here
    net = rig.network(config)
    with rig.device():
        net.train([(rig.put(x), rig.put(t)) for x, t in _data(config, n_in, n_out, batches=2)], {"Epochs": 1})
    err = capsys.readouterr().err
    assert "# <loom epoch kernel, batch 1>" in err and 'extern "C" __global__' in err and "loom_act(2," in err
