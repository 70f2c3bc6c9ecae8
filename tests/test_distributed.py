"""loom.distributed in one process: sharding, the communicator protocol, configuration errors.

The failure protocol of :class:`~loom.backend.distributed.base.Communicator` (failure
messages, departures, timeouts, the exit vote) is exercised by ranks running as threads
of this process (:class:`~tests.thread_ranks.ThreadGroup`: a test-only data and control plane in shared
memory), so every case costs milliseconds; tests/test_distributed_mpi.py runs the same
protocol over real MPI processes.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import loom.distributed as dist
from loom.backend.distributed import (
    LaunchInfo,
    SingleProcessCommunicator,
    create_communicator,
    detect_launch,
    resolve_timeout,
)
from loom.backend.distributed.base import PeerEvent
from loom.backend.distributed.launcher import launch
from loom.backend.distributed.nccl import pick_device
from loom.backend.distributed.sharding import (
    Shard,
    epoch_permutation,
    global_batch_indices,
    rank_batch_indices,
    reduce_gradient,
    reduce_loss,
    shard_batch,
    shard_range,
)
from loom.errors import (
    BackendUnavailableError,
    ConfigError,
    DistributedError,
    DistributedTimeoutError,
    LoomError,
    RankFailedError,
    ShapeError,
)
from tests.thread_ranks import ThreadCommunicator, ThreadGroup, run_ranks


# ---------------------------------------------------------------------------------------------- sharding
@pytest.mark.parametrize(("total", "world"), [(0, 1), (1, 3), (7, 3), (8, 4), (9, 2), (100, 7)])
def test_shards_partition_the_batch_contiguously_and_evenly(total: int, world: int) -> None:
    shards = [shard_range(total, r, world) for r in range(world)]
    assert shards[0].start == 0 and shards[-1].stop == total
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    sizes = [s.size for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert sizes == [len(part) for part in np.array_split(np.arange(total), world)]
    assert sum(s.weight for s in shards) == pytest.approx(1.0 if total else 0.0)


@pytest.mark.parametrize(
    ("world", "per_rank", "shuffle", "drop_last"), [(2, 4, True, False), (3, 2, True, True), (4, 3, False, False)]
)
def test_rank_batches_reassemble_the_single_process_batches(
    world: int, per_rank: int, shuffle: bool, drop_last: bool
) -> None:
    n, seed, epoch = 23, 9, 2
    single = global_batch_indices(n, world * per_rank, seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last)
    per_rank_lists = [
        rank_batch_indices(n, per_rank, r, world, seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last)
        for r in range(world)
    ]
    assert all(len(lst) == len(single) for lst in per_rank_lists)
    for b, expected in enumerate(single):
        parts = [per_rank_lists[r][b][0] for r in range(world)]
        assert np.array_equal(np.concatenate(parts), expected)
        assert sum(per_rank_lists[r][b][1].weight for r in range(world)) == pytest.approx(1.0)
    if shuffle:
        assert not np.array_equal(np.concatenate(single), np.arange(sum(map(len, single))))


def test_epoch_permutation_depends_on_seed_and_epoch_only() -> None:
    a = epoch_permutation(50, seed=3, epoch=0)
    assert np.array_equal(a, epoch_permutation(50, seed=3, epoch=0))
    assert sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_permutation(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_permutation(50, seed=4, epoch=0))


def test_shard_take_and_take_flat() -> None:
    data = np.arange(20).reshape(5, 4)
    part, shard = shard_batch(data, 1, 2)
    assert (shard.start, shard.stop, shard.global_size) == (3, 5, 5)
    assert np.array_equal(part, data[3:5])
    assert np.array_equal(shard.take(data.T, axis=1), data.T[:, 3:5])
    assert np.array_equal(shard.take_flat(data.reshape(-1), 4), data[3:5].reshape(-1))
    with pytest.raises(ShapeError, match=r"flat batch: expected 5 samples x 3 values = 15, got 20"):
        shard.take_flat(data.reshape(-1), 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: shard_range(4, 2, 2), r"rank: expected an integer in \[0, 2\), got 2"),
        (lambda: shard_range(4, 0, 0), r"world_size: expected an integer >= 1, got 0"),
        (lambda: shard_range(-1, 0, 1), r"global_size: expected an integer >= 0, got -1"),
        (lambda: shard_range(4, True, 2), r"rank: expected an integer"),
        (lambda: global_batch_indices(10, 0), r"global_batch_size: expected an integer >= 1, got 0"),
        (lambda: global_batch_indices(10, 2), r"seed: shuffled sharding needs a seed shared by every rank"),
        (lambda: rank_batch_indices(10, 2.5, 0, 2, seed=1), r"per_rank_batch: expected an integer >= 1, got 2.5"),
        (lambda: epoch_permutation(10, seed=-1, epoch=0), r"seed: expected an integer >= 0, got -1"),
    ],
)
def test_sharding_rejects_bad_arguments(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_shard_batch_needs_a_sample_axis() -> None:
    with pytest.raises(ShapeError, match="batch: expected an array with a sample axis"):
        shard_batch(np.float32(1.0), 0, 1)


# --------------------------------------------------------------------------------- thread ranks (tests/thread_ranks.py)
def test_reduce_gradient_weights_uneven_shards_to_the_global_mean() -> None:
    """Linear least squares: per-shard mean gradients, weighted and summed, equal the global mean gradient."""
    rng = np.random.default_rng(0)
    x, t, w = rng.normal(size=(7, 3)), rng.normal(size=7), rng.normal(size=3)

    def mean_gradient(rows: slice) -> np.ndarray:
        xs, ts = x[rows], t[rows]
        return 2 * xs.T @ (xs @ w - ts) / len(ts) if len(ts) else np.full(3, np.nan)  # garbage when empty

    expected = mean_gradient(slice(None))
    expected_loss = float(np.mean((x @ w - t) ** 2))
    for world in (2, 3, 8):  # 7 samples: 4/3, 3/2/2, and one empty shard for 8 ranks
        comms = ThreadGroup(world).communicators()

        def body(comm: ThreadCommunicator) -> tuple[np.ndarray, float]:
            shard = shard_range(7, comm.rank, comm.world_size)
            rows = slice(shard.start, shard.stop)
            local = float(np.mean((x[rows] @ w - t[rows]) ** 2)) if shard.size else float("nan")
            return reduce_gradient(comm, mean_gradient(rows), shard), reduce_loss(comm, local, shard)

        results = run_ranks(comms, body)
        for grad, loss in results:
            np.testing.assert_allclose(grad, expected, rtol=1e-12)
            assert loss == pytest.approx(expected_loss, rel=1e-12)
        assert all(np.array_equal(results[0][0], g) for g, _ in results)


def test_thread_ranks_run_every_collective() -> None:
    def body(comm: ThreadCommunicator) -> dict[str, Any]:
        a = np.arange(4, dtype=np.float32) * (comm.rank + 1)
        comm.all_reduce_mean(a)
        b = np.full(2, float(comm.rank), dtype=np.float64)
        comm.broadcast(b, root=2)
        pending = comm.start_all_reduce(np.ones(3, dtype=np.int64), "sum")
        comm.barrier()
        comm.agree("length", 10)
        return {"mean": a.tolist(), "bcast": b.tolist(), "sum": pending.wait().tolist()}

    for result in run_ranks(ThreadGroup(3).communicators(), body):
        assert result == {"mean": [0.0, 2.0, 4.0, 6.0], "bcast": [2.0, 2.0], "sum": [3, 3, 3]}


def test_agree_raises_on_every_rank_when_values_differ() -> None:
    results = run_ranks(ThreadGroup(2).communicators(), lambda c: c.agree("gradient length", 100 + c.rank))
    for rank, error in enumerate(results):
        assert isinstance(error, ConfigError)
        assert f"gradient length: differs between ranks (from 100 to 101; this rank {rank}: {100 + rank})" in str(error)


def test_failure_on_one_rank_raises_its_error_on_the_others() -> None:
    def body(comm: ThreadCommunicator) -> Any:
        with comm.guard():
            if comm.rank == 2:
                raise ValueError("bad batch 7")
            start = time.monotonic()
            try:
                comm.all_reduce_sum(np.ones(2))
            finally:
                comm.elapsed = time.monotonic() - start

    comms = ThreadGroup(3).communicators(timeout=10)
    results = run_ranks(comms, body)
    assert isinstance(results[2], ValueError)
    for rank in (0, 1):
        error = results[rank]
        assert isinstance(error, RankFailedError) and isinstance(error, LoomError)
        assert (error.rank, error.failed_rank, error.remote_message) == (rank, 2, "ValueError: bad batch 7")
        assert str(error) == f"rank 2 failed: ValueError: bad batch 7 (seen by rank {rank} of 3, in all_reduce_sum)"
        assert comms[rank].elapsed < 1.0  # the message, not the 10 s timeout
        with pytest.raises(RankFailedError, match=r"rank 2 failed earlier: ValueError: bad batch 7 .*barrier refused"):
            comms[rank].barrier()  # a failed communicator refuses further collectives


def test_stuck_rank_gives_a_timeout_reported_to_the_others() -> None:
    def body(comm: ThreadCommunicator) -> Any:
        if comm.rank == 1:
            time.sleep(0.6)  # "stuck" past rank 0's timeout, then joins (and completes) that collective
            comm.all_reduce_sum(np.ones(1))
        return comm.all_reduce_sum(np.ones(1))  # rank 1's next one learns that rank 0 gave up

    results = run_ranks(ThreadGroup(2).communicators(timeout=0.3), body)
    assert isinstance(results[0], DistributedTimeoutError)
    assert (results[0].operation, results[0].timeout) == ("all_reduce_sum", 0.3)
    assert "rank 0 of 2: all_reduce_sum did not complete within 0.3 s" in str(results[0])
    assert isinstance(results[1], RankFailedError) and results[1].failed_rank == 0
    assert "all_reduce_sum did not complete" in results[1].remote_message


def test_a_rank_that_closes_early_ends_a_peer_waiting_for_it() -> None:
    def body(comm: ThreadCommunicator) -> Any:
        if comm.rank == 1:
            comm.close()  # leaves without the collective rank 0 waits in
            return "closed"
        try:
            return comm.all_reduce_sum(np.ones(1))
        finally:
            comm.close()

    results = run_ranks(ThreadGroup(2).communicators(timeout=1.0), body)
    # RankFailedError, not DistributedTimeoutError: the departure ends the wait after timeout / 2.
    assert isinstance(results[0], RankFailedError) and results[0].failed_rank == 1
    assert "rank 1 left the job (closed its communicator or exited) before this collective" in str(results[0])
    # The rank that left learns at its exit vote why the job failed.
    assert isinstance(results[1], RankFailedError) and results[1].failed_rank == 0
    assert results[1].remote_message.startswith("RankFailedError: rank 1 left the job")


def test_close_raises_when_a_peer_failed_after_the_last_collective() -> None:
    def body(comm: ThreadCommunicator) -> Any:
        comm.barrier()
        if comm.rank == 0:
            comm.report_failure(RuntimeError("disk full while saving"))
            comm.close()
            return "rank 0 closed"
        time.sleep(0.05)
        comm.close()

    results = run_ranks(ThreadGroup(2).communicators(), body)
    assert results[0] == "rank 0 closed"
    assert isinstance(results[1], RankFailedError)
    assert results[1].failed_rank == 0 and results[1].remote_message == "RuntimeError: disk full while saving"


def test_exit_vote_gives_up_at_the_timeout() -> None:
    comm = ThreadGroup(2).communicators(timeout=0.2)[0]  # rank 1 never votes
    start = time.monotonic()
    comm.close()
    assert 0.2 <= time.monotonic() - start < 2
    assert comm.vote_complete is False


@pytest.mark.parametrize(("code", "reported"), [(0, False), (None, False), (3, True)])
def test_guard_reports_a_failing_system_exit_only(code: Any, reported: bool) -> None:
    group = ThreadGroup(2)
    comm = group.communicators()[0]
    with pytest.raises(SystemExit), comm.guard():
        sys.exit(code)
    assert bool(group.events) is reported
    if reported:
        assert group.events[0] == PeerEvent("failed", 0, "SystemExit: exit code 3")


def test_report_failure_does_not_resend_a_peers_error() -> None:
    group = ThreadGroup(2)
    comm = group.communicators()[0]
    comm.report_failure(RankFailedError("x", rank=0, failed_rank=1, remote_message="ValueError: y"))
    assert group.events == []
    assert comm.failed is not None


# ---------------------------------------------------------------------------------------------- one process
def test_single_process_communicator_changes_nothing() -> None:
    comm = SingleProcessCommunicator()
    a = np.array([1.5, -2.0], dtype=np.float32)
    assert comm.all_reduce_mean(a) is a and a.tolist() == [1.5, -2.0]
    assert comm.all_reduce_sum(a) is a and comm.broadcast(a) is a
    comm.barrier()
    assert comm.all_reduce_scalars([1.0, 2.0], "mean") == (1.0, 2.0)
    assert comm.all_reduce_scalars([]) == ()
    comm.agree("anything", 3)
    assert (comm.rank, comm.world_size, comm.kind) == (0, 1, "single")
    comm.close()
    with pytest.raises(DistributedError, match="all_reduce_sum: the communicator of rank 0 is closed"):
        comm.all_reduce_sum(a)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.all_reduce_sum([1.0]), ShapeError, r"all_reduce_sum: buffer: expected a contiguous numpy array"),
        (lambda c: c.all_reduce_sum(np.ones((4, 4), np.float32)[:, 0]), ShapeError, r"expected a C-contiguous array"),
        (lambda c: c.all_reduce_sum(np.ones(3, np.float16)), ShapeError, r"expected dtype one of .*got float16"),
        (
            lambda c: c.all_reduce_mean(np.ones(3, np.int64)),
            ShapeError,
            r"mean: buffer: expected a float array, got int64",
        ),
        (lambda c: c.start_all_reduce(np.ones(3), "max"), ConfigError, r"op: expected 'sum' or 'mean', got 'max'"),
        (lambda c: c.broadcast(np.ones(3), root=1), ConfigError, r"root: expected a rank in \[0, 1\), got 1"),
        (lambda c: c.all_reduce_scalars([1.0], "prod"), ConfigError, r"op: expected one of \['sum', 'mean', 'max'"),
        (lambda c: c.all_reduce_scalars(["a"]), ShapeError, r"values: expected a number or a sequence of numbers"),
    ],
)
def test_collectives_reject_bad_input(call: Callable[[Any], Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call(ThreadGroup(1).communicators()[0])


# ---------------------------------------------------------------------------------------------- configuration
def test_detect_launch_reads_each_launcher() -> None:
    assert detect_launch({}) == LaunchInfo()
    mpich = detect_launch({"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1"})
    assert (mpich.launcher, mpich.rank, mpich.world_size, mpich.local_rank) == ("mpi", 1, 4, 1)
    ompi = detect_launch({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3"})
    assert (ompi.launcher, ompi.rank, ompi.world_size, ompi.local_rank) == ("mpi", 2, 3, 2)
    env = {"LOOM_RANK": "0", "LOOM_WORLD_SIZE": "2", "LOOM_STORE": "10.0.0.1:29500", "LOOM_STORE_SERVER": "rank0"}
    own = detect_launch(env)
    assert (own.launcher, own.store, own.store_on_rank0, own.local_rank) == ("loom", ("10.0.0.1", 29500), True, 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOOM_RANK": "x", "LOOM_WORLD_SIZE": "2"}, r"LOOM_RANK: expected an integer, got 'x'"),
        ({"LOOM_RANK": "0"}, r"LOOM_WORLD_SIZE: not set"),
        ({"LOOM_RANK": "2", "LOOM_WORLD_SIZE": "2", "LOOM_STORE": "h:1"}, r"expected 0 <= rank < world size"),
        ({"LOOM_RANK": "0", "LOOM_WORLD_SIZE": "2"}, r"LOOM_STORE: not set"),
        ({"LOOM_RANK": "0", "LOOM_WORLD_SIZE": "1", "LOOM_STORE_SERVER": "me"}, r"LOOM_STORE_SERVER: expected"),
        ({"PMI_RANK": "0"}, r"PMI_SIZE: not set"),
    ],
)
def test_detect_launch_rejects_bad_variables(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        detect_launch(env)


def test_resolve_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOM_DIST_TIMEOUT", raising=False)
    assert resolve_timeout(None) == 300.0 and resolve_timeout(2) == 2.0
    monkeypatch.setenv("LOOM_DIST_TIMEOUT", "12.5")
    assert resolve_timeout(None) == 12.5
    monkeypatch.setenv("LOOM_DIST_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match=r"LOOM_DIST_TIMEOUT: expected seconds as a number, got 'soon'"):
        resolve_timeout(None)
    for bad in (0, -1, float("inf"), True):
        with pytest.raises(ConfigError, match=r"timeout: expected a positive number of seconds"):
            resolve_timeout(bad)


@pytest.mark.parametrize(
    ("kwargs", "info", "message"),
    [
        ({"transport": "gloo"}, LaunchInfo(), r"transport: expected one of \['auto', 'single', 'mpi', 'nccl'\]"),
        ({"transport": "single"}, LaunchInfo("mpi", 0, 2, 0), r"transport: 'single' in a job of 2 processes"),
        ({"transport": "nccl"}, LaunchInfo(), r"transport: 'nccl' reduces CuPy arrays"),
        ({"transport": "mpi"}, LaunchInfo("loom", 0, 2, 0, ("h", 1)), r"transport: 'mpi' needs processes started by"),
        ({"backend": "torch"}, LaunchInfo(), r"backend: expected 'numpy' or 'cupy', got 'torch'"),
    ],
)
def test_create_communicator_rejects_bad_requests(kwargs: dict[str, Any], info: LaunchInfo, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_communicator(**kwargs, info=info)


def test_pick_device() -> None:
    assert [pick_device(r, 4) for r in range(4)] == [0, 1, 2, 3]
    assert pick_device(5, 1) == 0  # CUDA_VISIBLE_DEVICES gives every process its own single GPU
    with pytest.raises(ConfigError, match=r"local rank 2: no GPU of its own \(2 visible on this host\)"):
        pick_device(2, 2)
    with pytest.raises(BackendUnavailableError, match="no CUDA device is visible"):
        pick_device(0, 0)


@pytest.mark.parametrize(
    ("nproc", "argv", "message"),
    [(0, ["x"], r"nproc: expected a positive number of processes, got 0"), (2, [], r"argv: expected the command")],
)
def test_launch_rejects_bad_arguments(nproc: int, argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        launch(nproc, argv)


def test_gpu_jobs_need_cupy() -> None:
    from loom.backend import cupy_available

    if cupy_available():
        pytest.skip("CuPy and a CUDA device are available here")
    with pytest.raises(BackendUnavailableError, match="the 'cupy' backend needs CuPy"):
        launch(2, ["x"], gpu=True)
    with pytest.raises(BackendUnavailableError, match="the 'cupy' backend needs CuPy"):
        dist.init("cupy")


def test_distributed_mode_off_imports_nothing() -> None:
    code = (
        "import sys, numpy as np, loom\n"
        "net = loom.create_network_from_json({'batch_size': 1, 'grid_rows': 1, 'grid_cols': 1, 'layers_per_cell': 1,"
        " 'layers': [{'type': 'dense', 'input_size': 2, 'output_size': 1, 'activation': 'sigmoid'}]}, seed=0)\n"
        "x = np.ones((4, 2), np.float32)\n"
        "net.fit(x, x[:, 0], epochs=1, verbose=0); net.train([(x[0], x[0, :1])], {'Epochs': 1})\n"
        "bad = [m for m in sys.modules if 'distributed' in m or 'data_parallel' in m]\n"
        "assert not bad, bad  # training without the switch: nothing of it imported\n"
        "import loom.distributed as d\n"
        "c = d.init('numpy')\n"
        "assert (c.kind, d.rank(), d.world_size(), d.is_main_process()) == ('single', 0, 1, True), c\n"
        "bad = [m for m in ('mpi4py', 'cupy', 'loom.backend.distributed.mpi', 'loom.backend.distributed.nccl') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
        "d.finalize()\n"
        "assert not d.is_initialized()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "LOOM_RANK"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr


def test_rank_helpers_read_the_launch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_RANK", "3")
    monkeypatch.setenv("LOOM_WORLD_SIZE", "4")
    monkeypatch.setenv("LOOM_LOCAL_RANK", "1")
    monkeypatch.setenv("LOOM_STORE", "127.0.0.1:1")
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main_process()) == (3, 4, 1, False)
    assert dist.communicator().kind == "single"  # not initialised: collectives are the identity


def test_init_installs_a_given_communicator_once() -> None:
    comm = ThreadGroup(1).communicators()[0]
    try:
        assert dist.init("numpy", communicator=comm, excepthook=False) is comm
        assert dist.init("numpy") is comm and dist.communicator() is comm
        with pytest.raises(ConfigError, match=r"communicator: distributed mode is already initialised"):
            dist.init("numpy", communicator=SingleProcessCommunicator())
    finally:
        dist.finalize()
    assert not dist.is_initialized()
    with pytest.raises(ConfigError, match="communicator: expected a Communicator, got str"):
        dist.init("numpy", communicator="mpi")  # type: ignore[arg-type]


def test_shard_repr_and_fields() -> None:
    shard = Shard(rank=0, world_size=2, start=0, stop=0, global_size=1)
    assert (shard.size, shard.weight, shard.even) == (0, 0.0, False)
