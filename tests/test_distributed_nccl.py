"""The NCCL communicator (CuPy) — runs only with ``--backend cupy`` on a machine with a GPU.

With one GPU: an NCCL communicator of world size 1 (no launcher, a local control
plane) runs the same checks as the MPI tests — collectives on CuPy buffers, 20 SGD
steps equal to one process without a communicator, loss history, refusal after a
failure. With two or more visible GPUs, the 2-rank jobs of tests/test_distributed_mpi.py
run on NCCL through ``spawn_with_store`` (what ``loom.distributed.launch(gpu=True)`` runs):
equivalence with one process at the doubled batch, identical losses, a failing rank.

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
