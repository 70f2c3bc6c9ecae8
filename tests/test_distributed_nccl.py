"""The NCCL communicator (CuPy) — runs only with ``--backend cupy`` on a machine with a GPU.

With one GPU: an NCCL communicator of world size 1 (no launcher, a local control
plane) runs the same checks as the MPI tests — collectives on CuPy buffers, 20 SGD
steps equal to one process without a communicator, loss history, refusal after a
failure. With two or more visible GPUs, the 2-rank jobs of tests/test_distributed_mpi.py
run on NCCL through ``spawn_with_store`` (what ``loom.distributed.launch(gpu=True)`` runs):
equivalence with one process at the doubled batch, identical losses, a failing rank.

The training engine on NCCL (world size 1 on one GPU; 2 ranks with two GPUs): the scenarios of
tests/distributed_engine_worker.py through ``net.train(..., {"Distributed": comm})`` and
``net.fit(..., distributed=comm)`` — fused (each layer's gradient all-reduced during the backward
pass: NCCL progresses in the background) and layer by layer, SGD and Adam — equal the plain run;
a divergence halts with the same message and the communicator keeps working; an error inside
training marks the communicator failed.

    python -m pytest --backend cupy tests/test_distributed_nccl.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import loom
from loom.backend.distributed import LaunchInfo, create_communicator
from loom.errors import DistributedError, RankFailedError, ShapeError
from tests import distributed_engine_worker as engine
from tests import distributed_worker as worker

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cupy(backend_name: str):
    if backend_name != "cupy":
        pytest.skip("NCCL tests run with --backend cupy (CuPy and a CUDA device)")
    return loom.backend.resolve_backend("cupy").raw


@pytest.fixture
def comm(cupy):
    """An NCCL communicator of world size 1 on GPU 0."""
    communicator = create_communicator("cupy", transport="nccl", timeout=60, info=LaunchInfo())
    yield communicator
    communicator.close()


def test_nccl_world_of_one_runs_every_collective(comm, cupy) -> None:
    assert (comm.kind, comm.rank, comm.world_size, comm.device_id) == ("nccl", 0, 1, 0)
    assert os.environ["NCCL_NVLS_ENABLE"] == "0"
    seen = worker.check_collectives(comm, cupy)
    assert seen["mean"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert seen["sum"] == [1.0, 1.0, 1.0]
    assert seen["broadcast"] == [0.0, 0.0, 0.0, 0.0]
    assert seen["scalars_max"] == [0.0, 0.0] and seen["scalars_mean"] == [0.0]
    pending = comm.start_all_reduce(cupy.arange(6, dtype=cupy.float32), "sum")
    assert cupy.asnumpy(pending.wait()).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_nccl_sgd_equals_one_process(comm, cupy) -> None:
    net = worker.make_net("cupy", 0)
    losses = worker.train_data_parallel(comm, net, per_rank_batch=2 * worker.PER_RANK_BATCH)
    reference, reference_losses = worker.single_process_reference(2 * worker.PER_RANK_BATCH, backend="cupy")
    np.testing.assert_allclose(worker.final_weights(net), reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-6)


def test_nccl_rejects_host_buffers(comm) -> None:
    with pytest.raises(ShapeError, match=r"all_reduce_sum: buffer: expected a contiguous cupy array"):
        comm.all_reduce_sum(np.ones(3, dtype=np.float32))


def test_nccl_refuses_collectives_after_a_failure(comm, cupy) -> None:
    comm.report_failure(ValueError("bad shard"))
    with pytest.raises(DistributedError, match=r"communicator failed earlier: rank 0 failed: ValueError: bad shard"):
        comm.all_reduce_mean(cupy.ones(2, dtype=cupy.float32))


# ---------------------------------------------------------------------------------------------- engine, 1 GPU
@pytest.mark.parametrize("scenario", engine.SCENARIOS, ids=lambda s: s.name)
def test_nccl_engine_world_of_one_equals_the_plain_run(comm, cupy, scenario) -> None:
    assert comm.progresses_in_background  # the fused path reduces each stage during the backward pass
    reference, reference_history = engine.run_scenario(scenario, backend="cupy")
    weights, history = engine.run_scenario(scenario, backend="cupy", distributed=comm)
    np.testing.assert_allclose(weights, reference, rtol=0, atol=1e-5)
    assert history.keys() == reference_history.keys()
    for key, values in reference_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-6)
    assert comm.failed is None


def test_nccl_engine_overlaps_on_the_fused_path(comm, cupy) -> None:
    net = engine.make_net("cupy", 0)
    x, y = engine.make_data()
    net.fit(x, y, epochs=1, batch_size=8, optimizer="sgd", verbose=0, distributed=comm)
    with net.training_parameters() as flat:
        steps = flat.caches["fused"].steps
    overlapped = [step for key, step in steps.items() if key[3:] == ("overlap",)]
    assert overlapped and all(step.source.count("parallel.stage_done(") == 2 for step in overlapped)


def test_nccl_engine_divergence_halts_and_the_communicator_goes_on(comm, cupy) -> None:
    expected, reference = engine.run_diverging(backend="cupy", per_rank_batch=4)
    message, net = engine.run_diverging(backend="cupy", distributed=comm, per_rank_batch=4)
    assert message == expected and "at epoch 1, batch 2" in message
    np.testing.assert_allclose(engine.weights(net), engine.weights(reference), rtol=0, atol=1e-6)
    comm.barrier()
    assert comm.failed is None


def test_nccl_engine_an_error_inside_training_fails_the_communicator(comm, cupy) -> None:
    hook = engine.FailAtStep(engine.FAIL_STEP, 0)
    with pytest.raises(ValueError, match="rank 0 gave up at step 5"):
        engine.run_scenario(engine.SCENARIOS[-1], backend="cupy", distributed=comm, gradient_hooks=(hook,))
    assert "rank 0 failed: ValueError: rank 0 gave up at step 5" in str(comm.failed)
    with pytest.raises(DistributedError, match="this communicator failed earlier"):
        comm.barrier()


# ---------------------------------------------------------------------------------------------- 2 GPUs
@pytest.fixture(scope="module")
def two_gpus(cupy) -> None:
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs 2 visible GPUs (the NCCL jobs of 2 processes)")


def run_gpu_job(scenario: str, out: Path, timeout: float = 60.0) -> int:
    from loom.backend.distributed.launcher import spawn_with_store

    argv = [sys.executable, "-m", "tests.distributed_worker", scenario, str(out), "--backend", "cupy"]
    return spawn_with_store(2, [*argv, "--timeout", str(timeout)], timeout=timeout)


def read_rank(out: Path, rank: int) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


def test_two_gpus_equal_one_gpu_with_the_doubled_batch(two_gpus, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert run_gpu_job("sgd", tmp_path) == 0
    first, second = read_rank(tmp_path, 0), read_rank(tmp_path, 1)
    assert first["kind"] == "nccl" and first["collectives"]["broadcast"] == [1.0, 1.0, 1.0, 1.0]
    assert first["collectives"]["mean"] == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert first["losses"] == second["losses"]
    w0, w1 = np.load(tmp_path / "weights0.npy"), np.load(tmp_path / "weights1.npy")
    assert np.array_equal(w0, w1)
    reference, reference_losses = worker.single_process_reference(2 * worker.PER_RANK_BATCH, backend="cupy")
    np.testing.assert_allclose(w0, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(first["losses"], reference_losses, rtol=1e-6)


def test_two_gpus_a_failing_rank_ends_the_job(two_gpus, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    start = time.monotonic()
    assert run_gpu_job("raise", tmp_path, timeout=60) != 0
    assert time.monotonic() - start < 60
    other = read_rank(tmp_path, 0)
    assert other["outcome"] == RankFailedError.__name__ and other["failed_rank"] == 1
    assert "rank 1 failed: ValueError: rank 1 gave up at step 5" in other["message"]


def test_two_gpus_engine_equals_one_gpu_with_the_doubled_batch(two_gpus, tmp_path: Path, monkeypatch) -> None:
    """The MPI engine job of tests/test_distributed_mpi.py on two GPUs with NCCL."""
    from loom.backend.distributed.launcher import spawn_with_store

    monkeypatch.chdir(REPO)
    argv = [sys.executable, "-m", "tests.distributed_engine_worker", str(tmp_path), "--backend", "cupy"]
    assert spawn_with_store(2, argv, timeout=60) != 0  # the last part: rank 1 raises
    first, second = read_rank(tmp_path, 0), read_rank(tmp_path, 1)
    assert (first["kind"], first["world_size"]) == ("nccl", 2)
    for scenario in engine.SCENARIOS:
        w0 = np.load(tmp_path / f"weights0-{scenario.name}.npy")
        assert np.array_equal(w0, np.load(tmp_path / f"weights1-{scenario.name}.npy"))
        reference, history = engine.run_scenario(scenario, backend="cupy", per_rank_batch=2 * engine.PER_RANK_BATCH)
        np.testing.assert_allclose(w0, reference, rtol=0, atol=1e-5, err_msg=scenario.name)
        seen = first["scenarios"][scenario.name]["history"]
        assert seen == second["scenarios"][scenario.name]["history"]
        for key, values in history.items():
            np.testing.assert_allclose(seen[key], values, rtol=1e-6, err_msg=f"{scenario.name} {key}")
    assert first["diverge"]["message"] == second["diverge"]["message"]
    other = first["raise"]
    assert other["outcome"] == "RankFailedError" and other["failed_rank"] == 1
    assert "rank 1 failed: ValueError: rank 1 gave up at step 5" in other["message"]
