"""Data-parallel training in the engine (``fit(distributed=...)``, ``train`` with ``Distributed``), ranks as threads.

Each rank is a thread with its own network and a :class:`~tests.thread_ranks.ThreadCommunicator`
(the real communicator protocol over shared memory), so the engine's data-parallel wiring is
checked in milliseconds; tests/test_distributed_mpi.py runs the same scenarios under
``mpiexec -n 2`` and tests/test_distributed_nccl.py on NCCL.

* N ranks with per-rank batch b give the weights and history of one process with batch N·b
  (train and fit, fused and layer by layer, SGD and Adam; uneven and empty shards; with and
  without overlapping the reductions with the backward pass);
* every rank logs identical numbers (loss, accuracy, validation), so callbacks decide alike;
  only rank 0 runs ``ModelCheckpoint``;
* a non-finite loss on one rank's shard stops every rank at the same batch, and the job goes on;
  an error on one rank ends every rank with it; ranks that disagree on the data stop at once;
* with the switch off nothing distributed is imported (tests/test_distributed.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import loom
import loom.distributed as dist
from loom.backend.distributed.base import LocalControlPlane, Pending, SingleProcessCommunicator
from loom.cli import GRID_SCATTER_CONFIG
from loom.errors import ConfigError, RankFailedError
from loom.nn.data_parallel import DataParallel
from tests import distributed_engine_worker as engine
from tests.thread_ranks import ThreadCommunicator, ThreadGroup, run_ranks


class BackgroundThreadCommunicator(ThreadCommunicator):
    """Claims background progress (as NCCL does): the fused step reduces each stage during backward."""

    progresses_in_background = True


class CupyOnlyCommunicator(ThreadCommunicator):
    """Takes no NumPy arrays (as NCCL)."""

    array_backend = "cupy"

    def _is_native_array(self, buffer: Any) -> bool:
        return not isinstance(buffer, np.ndarray)


class NoGradientReduction(ThreadCommunicator):
    """Reduces scalars but leaves gradients alone (a negative control)."""

    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        return Pending.done()


def communicators(world: int, kind: type[ThreadCommunicator] = ThreadCommunicator) -> list[ThreadCommunicator]:
    group = ThreadGroup(world)
    return [kind(group, rank, 10.0) for rank in range(world)]


def ranks(world: int, body: Any, kind: type[ThreadCommunicator] = ThreadCommunicator) -> list[Any]:
    """``body(comm)`` on ``world`` thread ranks; raises the first rank's exception, if any."""
    results = run_ranks(communicators(world, kind), body)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def flat_weights(net: loom.Network) -> np.ndarray:
    return engine.weights(net)


# ---------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("scenario", engine.SCENARIOS, ids=lambda s: s.name)
def test_two_ranks_equal_one_process_with_the_doubled_batch(scenario: engine.Scenario) -> None:
    reference, reference_history = engine.run_scenario(scenario, per_rank_batch=2 * engine.PER_RANK_BATCH)
    results = ranks(2, lambda comm: engine.run_scenario(scenario, distributed=comm, rank=comm.rank))
    (w0, h0), (w1, h1) = results
    assert np.array_equal(w0, w1)  # every rank takes the same steps
    assert h0 == h1  # identical loss history (and validation) on every rank
    np.testing.assert_allclose(w0, reference, rtol=0, atol=1e-5)
    assert h0.keys() == reference_history.keys() and len(h0["loss"]) == engine.EPOCHS
    for key, values in reference_history.items():
        np.testing.assert_allclose(h0[key], values, rtol=1e-6)


def test_without_the_gradient_reduction_the_ranks_would_differ() -> None:
    """Negative control: each rank really trains on its own part of every batch."""
    scenario = engine.Scenario("train", "fused", "sgd")
    reference, _ = engine.run_scenario(scenario)
    results = ranks(2, lambda comm: engine.run_scenario(scenario, distributed=comm), NoGradientReduction)
    assert not np.array_equal(results[0][0], results[1][0])
    assert min(np.abs(w - reference).max() for w, _ in results) > 1e-3


def classification_data(samples: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(samples, 8)).astype(np.float32)
    return x, (x[:, :4].sum(axis=1) > x[:, 4:].sum(axis=1)).astype(np.int64)


def grid_scatter_net(seed: int) -> loom.Network:
    return loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=seed)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer"])
@pytest.mark.parametrize(
    ("world", "kind"), [(3, BackgroundThreadCommunicator), (4, ThreadCommunicator)], ids=["3-overlap", "4"]
)
def test_uneven_and_empty_shards_and_reduced_metrics(world: int, kind: type, fused: bool) -> None:
    """Parallel branches, LSTM / RNN leaves; 49 training samples, per-rank batch 2: the last global batch
    (1 sample) leaves ranks empty; 13 validation samples split unevenly; accuracy counted over the ranks."""
    x, y = classification_data(62)
    options = {"epochs": 2, "optimizer": "adam", "learning_rate": 0.01, "seed": 9, "verbose": 0, "fused": fused}
    options["validation_split"] = 0.2
    single = grid_scatter_net(3)
    expected = single.fit(x, y, batch_size=2 * world, **options).history

    def body(comm: ThreadCommunicator) -> tuple[np.ndarray, dict[str, list[float]], Any]:
        net = grid_scatter_net(3 + comm.rank)
        history = net.fit(x, y, batch_size=2, distributed=comm, **options)
        return flat_weights(net), history.history, history.params

    results = ranks(world, body, kind)
    for weights, history, params in results:
        np.testing.assert_array_equal(weights, results[0][0])
        assert history == results[0][1]
        assert params["world_size"] == world and params["global_batch_size"] == 2 * world
        assert params["steps"] == -(-49 // (2 * world))
    np.testing.assert_allclose(results[0][0], flat_weights(single), rtol=0, atol=1e-5)
    assert sorted(results[0][1]) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for key, values in expected.items():
        np.testing.assert_allclose(results[0][1][key], values, rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("kind", [ThreadCommunicator, BackgroundThreadCommunicator], ids=["reduce", "overlap"])
def test_loom_train_splits_each_training_batch_by_samples(kind: type) -> None:
    """TrainingBatches of 5 and 2 samples on 3 ranks (one rank empty); flat LOOM inputs; shuffled batches."""
    cfg = {**GRID_SCATTER_CONFIG, "batch_size": 5}
    x, y = classification_data(12)
    one_hot = np.eye(2, dtype=np.float32)[y]
    batches = [(x[:5].reshape(-1), one_hot[:5].reshape(-1)), (x[5:10].reshape(-1), one_hot[5:10].reshape(-1))]
    batches.append((x[10:12], one_hot[10:12]))  # 2-D: 2 samples
    config = {"Epochs": 3, "LearningRate": 0.1, "Shuffle": True, "Seed": 1, "LossType": "cross_entropy"}
    single = loom.create_network_from_json(cfg, seed=2)
    expected = single.train(batches, config).loss_history

    def body(comm: ThreadCommunicator) -> tuple[np.ndarray, list[float]]:
        net = loom.create_network_from_json(cfg, seed=2 + comm.rank)
        result = net.train(batches, {**config, "Distributed": comm})
        return flat_weights(net), result.loss_history

    results = ranks(3, body, kind)
    assert all(np.array_equal(w, results[0][0]) and h == results[0][1] for w, h in results)
    np.testing.assert_allclose(results[0][0], flat_weights(single), rtol=0, atol=1e-5)
    np.testing.assert_allclose(results[0][1], expected, rtol=1e-6)


def test_a_world_of_one_trains_exactly_as_one_process() -> None:
    """``distributed=True`` outside a launcher: a single-process communicator, bit-identical results."""
    scenario = engine.Scenario("fit", "fused", "adam")
    reference, reference_history = engine.run_scenario(scenario)
    try:
        weights, history = engine.run_scenario(scenario, distributed=True)
        assert dist.communicator().kind == "single"
    finally:
        dist.finalize()
    np.testing.assert_array_equal(weights, reference)
    assert history == reference_history


# ---------------------------------------------------------------------------------------------- every rank alike
@pytest.mark.parametrize("kind", [ThreadCommunicator, BackgroundThreadCommunicator], ids=["reduce", "overlap"])
def test_divergence_on_one_ranks_shard_stops_every_rank_at_the_same_batch(kind: type) -> None:
    expected, reference = engine.run_diverging(per_rank_batch=4)

    def body(comm: ThreadCommunicator) -> tuple[str, np.ndarray]:
        message, net = engine.run_diverging(distributed=comm)
        comm.barrier()  # not a failure of one rank: the communicator keeps working
        return message, flat_weights(net)

    results = ranks(2, body, kind)
    assert "at epoch 1, batch 2 (last finite loss" in expected
    for message, weights in results:
        assert message == expected
        np.testing.assert_allclose(weights, flat_weights(reference), rtol=0, atol=1e-6)
        assert np.all(np.isfinite(weights))


def test_an_error_on_one_rank_ends_every_rank_with_it() -> None:
    scenario = engine.Scenario("fit", "layer", "sgd")

    def body(comm: ThreadCommunicator) -> Any:
        hooks = (engine.FailAtStep(engine.FAIL_STEP, comm.rank),) if comm.rank == 1 else ()
        return engine.run_scenario(scenario, distributed=comm, rank=comm.rank, gradient_hooks=hooks)

    first, second = run_ranks(communicators(2), body)
    assert isinstance(second, ValueError) and str(second) == "rank 1 gave up at step 5"
    assert isinstance(first, RankFailedError) and first.failed_rank == 1
    assert "rank 1 failed: ValueError: rank 1 gave up at step 5" in str(first)


def test_only_rank_0_checkpoints_and_every_rank_stops_early_alike(tmp_path: Path) -> None:
    x, y = engine.make_data()

    def body(comm: ThreadCommunicator) -> tuple[list[str], int, list[float]]:
        checkpoint = loom.ModelCheckpoint(tmp_path / "ckpt-{epoch}.json", monitor="val_loss", save_best_only=True)
        stop = loom.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
        net = engine.make_net("numpy", comm.rank)
        history = net.fit(
            x[:60],
            y[:60],
            validation_data=(x[60:], y[60:]),
            epochs=30,
            batch_size=4,
            optimizer="sgd",
            learning_rate=3.0,  # noisy: validation stops improving early
            seed=0,
            verbose=2,  # an epoch line per epoch: rank 0 only
            callbacks=[checkpoint, stop],
            distributed=comm,
        )
        return [p.name for p in checkpoint.saved], stop.stopped_epoch, history.history["val_loss"]

    (saved0, stopped0, val0), (saved1, stopped1, val1) = ranks(2, body)
    assert saved1 == [] and saved0 and sorted(p.name for p in tmp_path.iterdir()) == sorted(saved0)
    assert 0 < stopped0 == stopped1 < 29 and val0 == val1


def test_ranks_that_disagree_on_the_data_stop_at_once() -> None:
    x, y = engine.make_data()

    def body(comm: ThreadCommunicator) -> Any:
        rows = 60 if comm.rank == 0 else 59
        return engine.make_net("numpy", 0).fit(x[:rows], y[:rows], epochs=1, verbose=0, distributed=comm)

    results = run_ranks(communicators(2), body)
    for result in results:
        assert isinstance(result, ConfigError)
        assert "training samples: differs between ranks (from 59 to 60" in str(result)


def test_ranks_that_disagree_on_the_seed_stop_at_once() -> None:
    x, y = engine.make_data()

    def body(comm: ThreadCommunicator) -> Any:
        return engine.make_net("numpy", 0).fit(x, y, epochs=1, seed=comm.rank, verbose=0, distributed=comm)

    for result in run_ranks(communicators(2), body):
        assert isinstance(result, ConfigError) and "seed: differs between ranks (from 0 to 1" in str(result)


# ---------------------------------------------------------------------------------------------- the switch
def test_the_switch_is_checked() -> None:
    net = engine.make_net("numpy", 0)
    x, y = engine.make_data()
    with pytest.raises(ConfigError, match=r"fit.distributed: expected True, False or a loom.distributed Communicator"):
        net.fit(x, y, verbose=0, distributed=1)
    with pytest.raises(ConfigError, match=r"distributed: expected true, false or a loom.distributed Communicator"):
        loom.TrainingConfig(distributed="yes")
    with pytest.raises(ConfigError, match=r"the communicator reduces cupy arrays but the network lives on numpy"):
        DataParallel(communicators(1, CupyOnlyCommunicator)[0], net)
    assert DataParallel(SingleProcessCommunicator("cupy"), net).world_size == 1  # a world of one takes anything
    config = loom.TrainingConfig.from_dict({"Distributed": True, "Epochs": 2})
    assert config.distributed is True and config.to_dict()["Distributed"] is True
    assert "Distributed" not in loom.TrainingConfig().to_dict()
    assert json.dumps(loom.TrainingConfig(distributed=communicators(1)[0]).to_dict())  # JSON-safe: True


def test_a_training_batch_that_does_not_split_into_samples_is_named() -> None:
    cfg = {**engine.NET_CONFIG, "batch_size": 4}

    def body(comm: ThreadCommunicator) -> Any:
        net = loom.create_network_from_json(cfg, seed=0)
        batches = [(np.zeros(24, np.float32), np.zeros(12, np.float32)), (np.zeros(23, np.float32), np.zeros(12))]
        return net.train(batches, {"Distributed": comm})

    for result in run_ranks(communicators(2), body):
        assert "batches[1].Input: 23 values do not split into 4 samples" in str(result)


class EchoCommunicator(dist.Communicator):
    """Rank 1 of a world of two whose peer holds the same buffers (no peer process needed)."""

    kind = "echo-test"

    def __init__(self) -> None:
        super().__init__(1, 2, 1, 10.0, LocalControlPlane())

    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        if op == "sum":
            buffer *= 2
        return Pending.done()

    def _start_broadcast(self, buffer: Any, root: int) -> Pending:
        return Pending.done()

    def _start_barrier(self) -> Pending:
        return Pending.done()

    def _start_scalar_reduce(self, values: np.ndarray, op: str) -> Pending:
        return Pending.done(values * 2 if op == "sum" else values)


def test_loom_train_cli_on_another_rank_prints_and_writes_nothing(tmp_path, capsys, monkeypatch) -> None:
    from loom import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.json").write_text(json.dumps(engine.NET_CONFIG))
    x, y = engine.make_data()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    argv = ["train", "net.json", "data.npz", "--distributed", "--epochs", "2", "--save", "m.json", "--plot", "l.png"]
    dist.init("numpy", communicator=EchoCommunicator(), excepthook=False)
    try:
        code = cli.main(argv)
    finally:
        dist.finalize()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == "" and captured.err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "net.json"]
