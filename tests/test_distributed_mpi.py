"""Real MPI jobs (``mpiexec -n 2``, mpi4py + the mpich wheel) running tests/distributed_worker.py.

* collectives return the known values on every rank;
* 20 SGD steps on 2 ranks (per-rank batch 4, an uneven last global batch, clipping)
  equal one process with batch 8 within 1e-5, with bit-identical weights and identical
  loss histories on both ranks — started through ``loom.distributed.launch``;
* a rank that raises ends every rank within the timeout with that rank's error;
* a stuck rank ends the others with DistributedTimeoutError; a rank that leaves early
  ends the others with RankFailedError instead of a hang.

Training through loom's public APIs (one ``mpiexec -n 2`` job for all of it, see
tests/distributed_engine_worker.py): ``net.train(..., {"Distributed": True})`` and
``net.fit(..., distributed=True)``, fused and layer by layer, SGD and Adam, equal one process
with the doubled batch after 20 steps; identical histories; ``ModelCheckpoint`` on rank 0
only; a divergence on one rank's shard stops both at the same batch; a rank that raises inside
training ends both with its error. ``loom train --nproc 2`` (the CLI starting the job itself)
equals ``loom train`` with the doubled batch, and only rank 0 prints and writes.

Skipped (with the reason) when mpi4py or mpiexec is missing: ``pip install -e ".[test]"``
installs both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import loom
import loom.distributed as dist
from loom.errors import BackendUnavailableError
from tests import distributed_engine_worker as engine
from tests import distributed_worker as worker

REPO = Path(__file__).resolve().parents[1]


def _mpiexec() -> str:
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install 'loom-nn[distributed]')")
    try:
        from loom.backend.distributed.launcher import find_mpiexec

        return find_mpiexec()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def mpiexec() -> str:
    return _mpiexec()


def run_job(mpiexec: str, scenario: str, out: Path, *, timeout: float, wall: float = 60.0) -> tuple[int, float]:
    """``mpiexec -n 2 python -m tests.distributed_worker SCENARIO OUT``; returns (exit code, seconds)."""
    start = time.monotonic()
    command = [mpiexec, "-n", "2", sys.executable, "-m", "tests.distributed_worker", scenario, str(out)]
    completed = subprocess.run(
        [*command, "--timeout", str(timeout)], cwd=REPO, capture_output=True, text=True, timeout=wall, check=False
    )
    return completed.returncode, time.monotonic() - start


def read_rank(out: Path, rank: int) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def sgd_job(tmp_path_factory: pytest.TempPathFactory, mpiexec: str) -> Path:
    """One 2-rank job started by loom.distributed.launch (through mpiexec)."""
    out = tmp_path_factory.mktemp("sgd")
    command = [sys.executable, "-m", "tests.distributed_worker", "sgd", str(out)]
    code = subprocess.run(
        [sys.executable, "-c", f"import loom.distributed as d, sys; sys.exit(d.launch(2, {command!r}, timeout=30))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert code.returncode == 0, code.stdout + code.stderr
    return out


def test_collectives_give_known_values_on_every_rank(sgd_job: Path) -> None:
    for rank in (0, 1):
        seen = read_rank(sgd_job, rank)
        assert (seen["rank"], seen["world_size"], seen["kind"]) == (rank, 2, "mpi")
        c = seen["collectives"]
        assert c["mean"] == [0.0, 1.5, 3.0, 4.5, 6.0]  # mean of arange(5) * 1 and * 2
        assert c["sum"] == [3.0, 3.0, 3.0]  # 1 + 2
        assert c["broadcast"] == [1.0, 1.0, 1.0, 1.0]  # rank 1's values
        assert c["scalars_max"] == [1.0, 0.0]  # max(0, 1), max(-0, -1)
        assert c["scalars_mean"] == [0.5]


def test_two_ranks_equal_one_process_with_the_doubled_batch(sgd_job: Path) -> None:
    w0, w1 = np.load(sgd_job / "weights0.npy"), np.load(sgd_job / "weights1.npy")
    assert np.array_equal(w0, w1)  # every rank takes the same step on the same weights
    reference, reference_losses = worker.single_process_reference(2 * worker.PER_RANK_BATCH)
    np.testing.assert_allclose(w0, reference, rtol=0, atol=1e-5)
    losses = read_rank(sgd_job, 0)["losses"]
    assert len(losses) == worker.STEPS
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-6)
    # The test can fail: the undoubled batch (what each rank sees alone) trains differently.
    alone, _ = worker.single_process_reference(worker.PER_RANK_BATCH)
    assert np.abs(alone - reference).max() > 1e-3


def test_loss_history_is_identical_on_all_ranks(sgd_job: Path) -> None:
    assert read_rank(sgd_job, 0)["losses"] == read_rank(sgd_job, 1)["losses"]


def test_a_rank_that_raises_ends_every_rank_with_its_error(tmp_path: Path, mpiexec: str) -> None:
    timeout = 20.0
    code, seconds = run_job(mpiexec, "raise", tmp_path, timeout=timeout)
    assert code != 0
    assert seconds < timeout  # ended by the failure message, not by the timeout
    failing, other = read_rank(tmp_path, 1), read_rank(tmp_path, 0)
    assert failing["outcome"] == "ValueError"
    assert other["outcome"] == "RankFailedError"
    assert other["failed_rank"] == 1
    assert "rank 1 failed: ValueError: rank 1 gave up at step 5" in other["message"]
    assert other["elapsed"] < timeout


def test_a_stuck_rank_ends_the_others_with_a_timeout(tmp_path: Path, mpiexec: str) -> None:
    code, seconds = run_job(mpiexec, "hang", tmp_path, timeout=1.0)
    assert code != 0
    assert seconds < 15  # timeout, exit vote (another timeout), then mpiexec ends the stuck rank
    other = read_rank(tmp_path, 0)
    assert other["outcome"] == "DistributedTimeoutError"
    assert "all_reduce_mean did not complete within 1 s" in other["message"]


def test_a_rank_that_leaves_early_ends_the_others(tmp_path: Path, mpiexec: str) -> None:
    code, seconds = run_job(mpiexec, "leave", tmp_path, timeout=1.0)
    assert code != 0
    assert read_rank(tmp_path, 1)["outcome"] == "ok"
    other = read_rank(tmp_path, 0)
    assert other["outcome"] == "RankFailedError"
    assert other["failed_rank"] == 1
    assert "rank 1 left the job" in other["message"]
    assert seconds < 15


def test_launch_returns_the_exit_code_of_a_failed_job(mpiexec: str) -> None:
    code = dist.launch(2, [sys.executable, "-c", "import sys; sys.exit(3)"], timeout=5)
    assert code == 3


def test_mpi_world_of_one_without_mpiexec(mpiexec: str) -> None:
    """``transport="mpi"`` in a plain process: MPI's singleton world, the real transport, then a clean finalize."""
    code = (
        "import numpy as np, loom.distributed as d\n"
        "c = d.init('numpy', transport='mpi')\n"
        "a = np.arange(4, dtype=np.float32)\n"
        "c.all_reduce_mean(a); c.broadcast(a); c.barrier()\n"
        "print(c.kind, c.world_size, a.tolist(), c.all_reduce_scalars([2.5], 'max'))\n"
        "d.finalize()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "mpi 1 [0.0, 1.0, 2.0, 3.0] (2.5,)"


# ---------------------------------------------------------------------------------------------- the engine
ENGINE_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def engine_job(tmp_path_factory: pytest.TempPathFactory, mpiexec: str) -> tuple[Path, int, float]:
    """One 2-rank job through the public APIs (every scenario, then a divergence, then a failure)."""
    out = tmp_path_factory.mktemp("engine")
    start = time.monotonic()
    completed = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, "-m", "tests.distributed_engine_worker", str(out)],
        cwd=REPO,
        env={**os.environ, "LOOM_DIST_TIMEOUT": str(ENGINE_TIMEOUT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out, completed.returncode, time.monotonic() - start


@pytest.mark.parametrize("scenario", engine.SCENARIOS, ids=lambda s: s.name)
def test_engine_on_two_ranks_equals_one_process_with_the_doubled_batch(engine_job, scenario) -> None:
    out = engine_job[0]
    first, second = read_rank(out, 0), read_rank(out, 1)
    assert (first["kind"], first["world_size"]) == ("mpi", 2)
    w0, w1 = np.load(out / f"weights0-{scenario.name}.npy"), np.load(out / f"weights1-{scenario.name}.npy")
    assert np.array_equal(w0, w1)
    reference, history = engine.run_scenario(scenario, per_rank_batch=2 * engine.PER_RANK_BATCH)
    np.testing.assert_allclose(w0, reference, rtol=0, atol=1e-5)
    seen = first["scenarios"][scenario.name]["history"]
    assert seen == second["scenarios"][scenario.name]["history"]  # identical on every rank
    assert seen.keys() == history.keys()
    for key, values in history.items():
        np.testing.assert_allclose(seen[key], values, rtol=1e-6)


def test_engine_checkpoints_on_rank_0_only(engine_job) -> None:
    out = engine_job[0]
    first, second = read_rank(out, 0), read_rank(out, 1)
    for scenario in engine.SCENARIOS:
        expected = [f"{scenario.name}-{epoch}.json" for epoch in (1, 2)] if scenario.api == "fit" else []
        assert first["scenarios"][scenario.name]["checkpoints"] == expected
        assert second["scenarios"][scenario.name]["checkpoints"] == []
    assert loom.load_model(out / "fit-fused-adam-2.json") is not None


def test_engine_divergence_stops_both_ranks_at_the_same_batch(engine_job) -> None:
    out = engine_job[0]
    expected, net = engine.run_diverging(per_rank_batch=4)
    for rank in (0, 1):
        seen = read_rank(out, rank)["diverge"]
        assert seen["message"] == expected and "at epoch 1, batch 2" in expected
        np.testing.assert_allclose(seen["weights"], engine.weights(net), rtol=0, atol=1e-6)


def test_engine_a_rank_that_raises_ends_every_rank_with_its_error(engine_job) -> None:
    out, code, seconds = engine_job
    assert code != 0
    assert seconds < 60
    failing, other = read_rank(out, 1)["raise"], read_rank(out, 0)["raise"]
    assert failing["outcome"] == "ValueError" and failing["message"] == "rank 1 gave up at step 5"
    assert other["outcome"] == "RankFailedError" and other["failed_rank"] == 1
    assert "rank 1 failed: ValueError: rank 1 gave up at step 5" in other["message"]
    assert other["elapsed"] < ENGINE_TIMEOUT / 2  # ended by the failure message, not by the timeout


# ---------------------------------------------------------------------------------------------- loom train --nproc
def test_loom_train_nproc_2_equals_one_process_and_rank_0_alone_writes(
    tmp_path: Path, mpiexec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loom import cli

    net_config = {**engine.NET_CONFIG, "input_size": 6}
    (tmp_path / "net.json").write_text(json.dumps(net_config))
    x, y = engine.make_data()
    np.savez(tmp_path / "data.npz", x=x[: engine.NUM_SAMPLES], y=y[: engine.NUM_SAMPLES])
    common = ["--epochs", "2", "--optimizer", "sgd", "--lr", "0.5", "--seed", "3", "--clip", "0.8"]
    argv = ["train", "net.json", "data.npz", "--nproc", "2", "--batch-size", "4", *common]
    completed = subprocess.run(
        [sys.executable, "-m", "loom.cli", *argv, "--save", "job.json", "--plot", "job.png"],
        cwd=tmp_path,
        env={**os.environ, "LOOM_DIST_TIMEOUT": "30"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert sum(line.startswith("trained 2 epochs on 75 samples") for line in lines) == 1
    assert lines.count("saved model to job.json (model id 'model')") == 1
    assert lines.count("saved loss plot to job.png") == 1
    assert sum(line.startswith("Epoch ") for line in lines) == 2  # one line per epoch, from rank 0
    monkeypatch.chdir(tmp_path)
    one_process = ["train", "net.json", "data.npz", "--batch-size", "8", *common, "--save", "one.json", "--quiet"]
    assert cli.main(one_process) == 0
    job, one = loom.load_model(tmp_path / "job.json"), loom.load_model(tmp_path / "one.json")
    for (name, a), (_, b) in zip(job.named_parameters(), one.named_parameters(), strict=True):
        np.testing.assert_allclose(loom.to_numpy(a), loom.to_numpy(b), rtol=0, atol=1e-5, err_msg=name)
