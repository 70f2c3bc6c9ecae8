"""The training engine: divergence guard, parameters after training, gradient hooks, the public engine API.

* A non-finite loss stops training with ``TrainingDivergedError`` (epoch, batch, last finite
  loss) and the network keeps the weights of its last finite step, on both paths, through
  ``train`` and ``fit``: it then saves and forwards finite values.
* After training, every layer type forwards bit for bit like its saved-and-reloaded copy
  (parameters are plain C-contiguous arrays again, not strided views of the training buffer):
  every Go LOOM fixture network is trained and round-tripped.
* Gradient hooks see the one flat gradient buffer between backward and the optimizer step.
"""

from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stdout

import numpy as np
import pytest

import loom
from loom.errors import TrainingDivergedError
from tests.conftest import REPO_ROOT, shared_root

FIXTURE_DIR = shared_root() / "fixtures" / "loom-go"
FIXTURES = sorted(p.stem for p in FIXTURE_DIR.glob("*.json")) if FIXTURE_DIR.is_dir() else []


def linear_net(backend, n_in: int = 3) -> loom.Network:
    config = {
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 2,
        "layers": [
            {"type": "dense", "input_size": n_in, "output_size": 4, "activation": "linear"},
            {"type": "dense", "input_size": 4, "output_size": 1, "activation": "linear"},
        ],
    }
    return loom.create_network_from_json(config, backend=backend, seed=1)


X = np.array([[2.0, -3.0, 4.0]], dtype=np.float32)
T = np.array([[1.0]], dtype=np.float32)


# ---------------------------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer"])
def test_a_diverging_train_raises_and_leaves_the_last_finite_weights(fused, backend, tmp_path):
    net = linear_net(backend)
    with pytest.raises(TrainingDivergedError) as info:
        net.train([(X, T)], {"Epochs": 200, "LearningRate": 50.0, "Fused": fused})
    err = info.value
    assert err.epoch > 2 and err.batch == 1
    assert math.isfinite(err.last_finite_loss) and err.last_finite_loss > 1e10  # it really blew up
    assert re.search(
        rf"at epoch {err.epoch}, batch 1 \(last finite loss [0-9.e+]+\); the weights were put back", str(err)
    )
    for name, array in net.named_parameters():
        assert np.all(np.isfinite(loom.to_numpy(array))), name
    y = loom.to_numpy(net.forward(X))
    assert np.all(np.isfinite(y))
    # the restored weights are the ones that produced the last finite loss
    assert float(((y - T) ** 2).mean()) == pytest.approx(err.last_finite_loss, rel=1e-3)  # huge values: rounding
    net.save_model(tmp_path / "m.json", "m")  # finite weights save (NaN / Inf would be refused)
    again = loom.load_model(tmp_path / "m.json", "m", backend=backend)
    np.testing.assert_array_equal(loom.to_numpy(again.forward(X)), y)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer"])
def test_a_diverging_fit_restores_the_last_finite_weights(fused, backend):
    net = linear_net(backend)
    x = np.tile(X, (8, 1))
    with pytest.raises(TrainingDivergedError, match=r"at epoch \d+, batch \d+") as info:
        net.fit(x, np.ones(8), epochs=200, batch_size=4, optimizer="sgd", learning_rate=50.0, fused=fused, verbose=0)
    assert info.value.last_finite_loss is not None
    assert all(np.all(np.isfinite(loom.to_numpy(a))) for _, a in net.named_parameters())
    assert np.all(np.isfinite(loom.to_numpy(net.predict(x))))


def test_without_the_guard_training_goes_on_as_go_does(backend):
    net = linear_net(backend)
    with np.errstate(all="ignore"):
        result = net.train([(X, T)], {"Epochs": 40, "LearningRate": 50.0, "RaiseOnDivergence": False})
    assert len(result.loss_history) == 40 and not math.isfinite(result.final_loss)


def test_a_first_step_that_diverges_changes_nothing(backend):
    net = linear_net(backend)
    net.layers[0].params["kernel"][...] = 3e38  # finite weights, finite data, an overflowing forward
    before = [loom.to_numpy(a).copy() for _, a in net.named_parameters()]
    with pytest.raises(
        TrainingDivergedError, match=r"epoch 1, batch 1 \(no finite loss before it\); the weights are unchanged"
    ):
        net.train([(X, T)], {"Epochs": 3})
    for b, (_, a) in zip(before, net.named_parameters(), strict=True):
        np.testing.assert_array_equal(loom.to_numpy(a), b)


# ---------------------------------------------------------------------------------------------- after training
def _fixture_net(name: str, backend):
    fix = json.loads((FIXTURE_DIR / f"{name}.json").read_text())
    return fix, loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)


@pytest.mark.skipif(not FIXTURES, reason=f"Go LOOM fixtures not found at {FIXTURE_DIR}")
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer"])
def test_every_layer_type_forwards_bit_identically_after_training_and_a_round_trip(fused, backend):
    """Every Go fixture network (all layer types, nesting, batches): train, save, load, compare outputs."""
    layer_types = set()
    for name in FIXTURES:
        fix, net = _fixture_net(name, backend)
        if not fix["deterministic"] or fix["training"]["config"].get("LossType") not in ("mse", "cross_entropy", ""):
            continue
        config = {**fix["training"]["config"], "Epochs": 2, "Verbose": False, "Fused": fused}
        with redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
            net.train(fix["training"]["batches"], {**config, "RaiseOnDivergence": False})
        if not all(np.all(np.isfinite(loom.to_numpy(a))) for _, a in net.named_parameters()):
            continue
        layer_types.update(cfg.type for cfg in net.iter_all_layers())
        arrays = [a for _, a in net.named_parameters()]
        assert all(loom.to_numpy(a).flags["C_CONTIGUOUS"] for a in arrays), name
        again = loom.load_model_from_string(net.save_model_to_string("m"), "m", backend=backend)
        for x in fix["forward"]["inputs"]:
            want, got = loom.to_numpy(net.forward(x)), loom.to_numpy(again.forward(x))
            np.testing.assert_array_equal(got, want, err_msg=f"{name}: reloaded network forwards differently")
    assert layer_types >= {"dense", "conv2d", "multi_head_attention", "rnn", "lstm", "softmax", "layer_norm"}
    assert layer_types >= {"rms_norm", "swiglu", "parallel", "residual"}


def test_trained_parameters_are_independent_arrays(backend):
    net = loom.create_network_from_json(
        {
            "batch_size": 1,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [
                {
                    "type": "parallel",
                    "branches": [
                        {"type": "dense", "input_size": 3, "output_size": 2},
                        {"type": "rnn", "input_size": 3, "hidden_size": 2, "seq_length": 1},
                    ],
                }
            ],
        },
        backend=backend,
        seed=0,
    )
    net.train([(X[0], np.zeros(4, np.float32))], {"Epochs": 1, "LearningRate": 0.1})
    arrays = [loom.to_numpy(a) for _, a in net.named_parameters()]
    for i, a in enumerate(arrays):
        assert a.flags["C_CONTIGUOUS"]
        for b in arrays[i + 1 :]:
            assert not np.shares_memory(a, b)


def test_train_shuffles_the_batch_order_per_epoch_with_a_seed(backend):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal(3).astype(np.float32), rng.standard_normal(1).astype(np.float32)) for _ in range(5)]
    runs = []
    for config in ({"Shuffle": True, "Seed": 4}, {"shuffle": True, "seed": 4}, {"Shuffle": True, "Seed": 5}, {}):
        runs.append(linear_net(backend).train(batches, {"Epochs": 3, "LearningRate": 0.01, **config}).loss_history)
    assert runs[0] == runs[1] and runs[0] != runs[2] and runs[0] != runs[3]
    # a shuffled epoch visits every batch once: with a zero learning rate the epoch mean is the same
    still = [
        linear_net(backend).train(batches, {"Epochs": 1, "LearningRate": 0.0, "Shuffle": s}) for s in (True, False)
    ]
    assert still[0].final_loss == pytest.approx(still[1].final_loss, rel=1e-12)


# ---------------------------------------------------------------------------------------------- hooks
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer"])
def test_gradient_hooks_see_the_flat_gradient_before_the_step(fused, backend):
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    y = x.sum(axis=1)
    seen = []

    def double(grads):  # what an all-reduce of two identical workers would produce
        seen.append((grads.shape, type(grads)))
        grads *= 2

    hooked, plain = linear_net(backend), linear_net(backend)
    common = {"epochs": 2, "batch_size": 4, "optimizer": "sgd", "shuffle": False, "verbose": 0, "fused": fused}
    hooked.fit(x, y, learning_rate=0.01, gradient_hooks=[double], **common)
    plain.fit(x, y, learning_rate=0.02, **common)
    n = hooked.num_parameters()
    assert len(seen) == 8 and all(shape == (n,) for shape, _ in seen)  # one flat buffer per step
    for (name, a), (_, b) in zip(hooked.named_parameters(), plain.named_parameters(), strict=True):
        np.testing.assert_array_equal(loom.to_numpy(a), loom.to_numpy(b), err_msg=name)


# ---------------------------------------------------------------------------------------------- engine API
def test_trainers_use_only_the_public_network_api():
    """No trainer module reaches into ``net._*`` (the engine API of Network is what they use)."""
    modules = ["training.py", "training_engine.py", "fit.py", "fused.py", "fused_codegen.py", "cli.py"]
    modules += ["flat_parameters.py", "training_callbacks.py", "training_reporters.py", "summary.py", "evaluation.py"]
    for module in modules:
        text = (REPO_ROOT / "loom" / "nn" / module).read_text()
        found = re.findall(r"\b(?:net|self\.net|self\.model|model)\._[a-z]\w*", text)
        assert not found, f"{module}: {found}"


def test_engine_api_of_the_network(backend):
    net = linear_net(backend)
    flat, batch, two_d = net.prepare_input(X)
    assert (batch, two_d, tuple(flat.shape)) == (1, True, (3,))
    y = net.forward_tape(flat, 1, net.training_context(), input_grad=False)
    assert net.backward_tape(y - net.array_backend.asarray(T.reshape(-1))) is None  # no input gradient asked
    assert sorted(name for name, _ in net.named_parameters()) == [
        "layers[0].biases", "layers[0].kernel", "layers[1].biases", "layers[1].kernel",
    ]  # fmt: skip
    with net.training_parameters() as buffers:
        assert buffers.size == net.num_parameters()
        views = {id(view.value) for view in buffers.views}
        assert {id(array) for _, array in net.named_parameters()} == views  # every parameter is a view
        with net.training_parameters() as inner:
            assert inner is buffers  # nested uses share the attachment
    assert not any(np.shares_memory(loom.to_numpy(a), loom.to_numpy(buffers.params)) for _, a in net.named_parameters())
    with net.tape_preserved():
        net.forward(np.zeros(3, np.float32))
    net.backward(np.ones(1, np.float32))  # the tape of the recorded forward survived


def test_readme_training_section_commands_are_the_tested_ones():
    """The README's workflow commands are the ones the CLI test runs (kept in one place)."""
    readme = (REPO_ROOT / "README.md").read_text()
    for command in (
        "loom dataset moons moons.csv --samples 1000 --noise 0.1 --seed 0",
        "loom train moons-net.json moons.csv --epochs 50 --batch-size 32 --lr 0.01 --optimizer adam",
        "loom eval m.json moons.csv",
    ):
        assert command in readme, command
