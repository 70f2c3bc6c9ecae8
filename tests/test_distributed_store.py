"""The GPU launcher's machinery without a GPU: loom's own process spawner, the TCP store, its control plane.

``spawn_with_store`` (what ``loom.distributed.launch(gpu=True)`` runs) starts two
processes of tests/distributed_worker.py; their collectives go through a test-only
communicator that exchanges bytes through the store, so the control plane (failure
messages, departures, exit vote) and the supervisor are exercised exactly as in an
NCCL job. Plus the store itself: its operations, its token, its limits.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from loom.backend.distributed.launcher import spawn_with_store
from loom.backend.distributed.store import StoreClient, StoreControlPlane, StoreServer, parse_address
from loom.errors import ConfigError, DistributedError
from tests import distributed_worker as worker

REPO = Path(__file__).resolve().parents[1]


def run_job(scenario: str, out: Path, timeout: float = 20.0) -> int:
    argv = [sys.executable, "-m", "tests.distributed_worker", scenario, str(out), "--timeout", str(timeout)]
    return spawn_with_store(2, argv, timeout=timeout)


def read_rank(out: Path, rank: int) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the children run `python -m tests.distributed_worker`


def test_store_job_trains_like_one_process(tmp_path: Path) -> None:
    assert run_job("store-sgd", tmp_path) == 0
    first, second = read_rank(tmp_path, 0), read_rank(tmp_path, 1)
    assert first["collectives"] == second["collectives"]
    assert first["collectives"]["broadcast"] == [1.0, 1.0, 1.0, 1.0]
    assert first["losses"] == second["losses"]
    reference, _ = worker.single_process_reference(2 * worker.PER_RANK_BATCH)
    np.testing.assert_allclose(np.load(tmp_path / "weights0.npy"), reference, rtol=0, atol=1e-5)


def test_store_job_reports_the_failing_ranks_error(tmp_path: Path) -> None:
    start = time.monotonic()
    assert run_job("store-raise", tmp_path) == 1
    assert time.monotonic() - start < 20
    other = read_rank(tmp_path, 0)
    assert other["outcome"] == "RankFailedError"
    assert other["failed_rank"] == 1
    assert "rank 1 failed: ValueError: rank 1 gave up at step 5" in other["message"]


def test_supervisor_reports_a_killed_process(tmp_path: Path) -> None:
    start = time.monotonic()
    assert run_job("store-kill", tmp_path) == 128 + 9  # SIGKILL
    assert time.monotonic() - start < 20
    other = read_rank(tmp_path, 0)
    assert other["outcome"] == "RankFailedError"
    assert "rank 1 failed: process killed by SIGKILL" in other["message"]


# ---------------------------------------------------------------------------------------------- the store
@pytest.fixture
def server():
    store = StoreServer("127.0.0.1", 0, token="secret")
    yield store
    store.close()


def test_store_operations(server: StoreServer) -> None:
    client = StoreClient("127.0.0.1", server.port, "secret", connect_timeout=5)
    assert client.get("a") is None
    client.set("a", b"1")
    assert client.get("a") == b"1"
    assert client.set_if_absent("a", b"2") is False
    assert client.get("a") == b"1"
    assert client.add("n", 5) == 5 and client.add("n", -2) == 3 and client.add("n", 0) == 3
    client.set("p/2", b"x")
    client.set("p/10", b"")
    assert client.items("p/") == [("p/10", b""), ("p/2", b"x")]
    assert server.get("p/2") == b"x"  # the launcher reads and writes in process
    client.close()


def test_store_refuses_a_wrong_token(server: StoreServer) -> None:
    with pytest.raises(DistributedError, match="refused this process's LOOM_STORE_TOKEN"):
        StoreClient("127.0.0.1", server.port, "guess", connect_timeout=5)


def test_store_drops_oversized_requests(server: StoreServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(struct.pack("<BII", 1, 1 << 20, 0))  # a 1 MiB key: not a loom client
        assert sock.recv(16) == b""  # closed without a reply


def test_store_client_gives_up_connecting() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(DistributedError, match=rf"cannot reach the rendezvous store at 127.0.0.1:{port}"):
            StoreClient("127.0.0.1", port, connect_timeout=0.3)


def test_control_plane_reports_a_lost_store() -> None:
    store = StoreServer("127.0.0.1", 0)
    plane = StoreControlPlane(StoreClient("127.0.0.1", store.port, connect_timeout=5), 0, 2)
    assert plane.poll() == []
    store.close()
    plane._client.close()  # the connection breaks as when the launcher dies
    (event,) = plane.poll()
    assert (event.kind, event.rank) == ("failed", -1)
    assert "lost the connection to the rendezvous store" in event.message


@pytest.mark.parametrize(("text", "expected"), [("127.0.0.1:29500", ("127.0.0.1", 29500)), ("[::1]:80", ("::1", 80))])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost", ":80", "host:0", "host:x", "host:70000"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="LOOM_STORE: expected 'host:port'"):
        parse_address(text)
