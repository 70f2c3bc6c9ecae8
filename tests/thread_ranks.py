"""Ranks as threads of one process: a test-only communicator for the distributed tests.

:class:`ThreadGroup` holds the shared memory of ``world_size`` ranks; each
:class:`ThreadCommunicator` runs the real :class:`~loom.backend.distributed.base.Communicator`
protocol (failure messages, departures, timeouts, the exit vote) over it, so a distributed case
costs milliseconds instead of an ``mpiexec`` start. Reductions add the ranks' parts in rank
order: every rank receives bit-identical results, as with MPI and NCCL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from loom.backend.distributed.base import Communicator, ControlPlane, PeerEvent, Pending

__all__ = ["ThreadCommunicator", "ThreadControl", "ThreadGroup", "run_ranks"]


class ThreadGroup:
    """Shared memory for ``world_size`` ranks running as threads (test-only data and control plane)."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.lock = threading.Lock()
        self.deposits: dict[tuple[str, int], dict[int, Any]] = {}
        self.events: list[PeerEvent] = []
        self.votes: dict[int, bool] = {}

    def communicators(self, timeout: float = 5.0) -> list[ThreadCommunicator]:
        return [ThreadCommunicator(self, r, timeout) for r in range(self.world_size)]


class ThreadControl(ControlPlane):
    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self.group, self.rank, self.world_size = group, rank, group.world_size
        self.seen = 0

    def notify(self, kind: str, message: str = "") -> None:
        with self.group.lock:
            self.group.events.append(PeerEvent(kind, self.rank, message))

    def poll(self) -> list[PeerEvent]:
        with self.group.lock:
            new, self.seen = self.group.events[self.seen :], len(self.group.events)
        return [e for e in new if e.rank != self.rank]

    def begin_broadcast_bytes(self, data: bytes | None, root: int, size: int) -> Pending:
        raise NotImplementedError

    def begin_exit_vote(self, failed: bool) -> Pending:
        with self.group.lock:
            self.group.votes[self.rank] = failed
        return Pending(lambda: len(self.group.votes) == self.world_size, lambda: any(self.group.votes.values()))


class ThreadCommunicator(Communicator):
    kind = "thread-test"

    def __init__(self, group: ThreadGroup, rank: int, timeout: float) -> None:
        super().__init__(rank, group.world_size, rank, timeout, ThreadControl(group, rank))
        self.group, self.calls = group, 0

    def _exchange(self, payload: Any, combine: Callable[[list[Any]], Any]) -> Pending:
        key, self.calls = ("op", self.calls), self.calls + 1
        with self.group.lock:
            self.group.deposits.setdefault(key, {})[self.rank] = payload
        slot = self.group.deposits[key]
        return Pending(lambda: len(slot) == self.world_size, lambda: combine([slot[r] for r in sorted(slot)]))

    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        def combine(parts: list[Any]) -> None:
            total = np.sum(parts, axis=0, dtype=buffer.dtype)
            buffer[...] = total / self.world_size if op == "mean" else total

        return self._exchange(buffer.copy(), combine)

    def _start_broadcast(self, buffer: Any, root: int) -> Pending:
        return self._exchange(buffer.copy(), lambda parts: buffer.__setitem__(Ellipsis, parts[root]))

    def _start_barrier(self) -> Pending:
        return self._exchange(None, lambda parts: None)

    def _start_scalar_reduce(self, values: np.ndarray, op: str) -> Pending:
        reducer = {"sum": np.sum, "max": np.max, "min": np.min}[op]
        return self._exchange(values.copy(), lambda parts: reducer(parts, axis=0))


def run_ranks(comms: list[ThreadCommunicator], body: Callable[[ThreadCommunicator], Any]) -> list[Any]:
    """Run ``body(comm)`` on every rank in its own thread; returns each result or raised exception."""
    results: list[Any] = [None] * len(comms)

    def target(comm: ThreadCommunicator) -> None:
        try:
            results[comm.rank] = body(comm)
        except BaseException as exc:
            results[comm.rank] = exc

    threads = [threading.Thread(target=target, args=(c,)) for c in comms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a rank thread hung"
    return results
