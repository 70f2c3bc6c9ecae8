"""MPI through mpi4py: the communicator of the NumPy backend, and an MPI control plane.

mpi4py is imported only here, and only when a distributed job asks for MPI. When loom
is the one that initialises MPI it also finalizes it at exit — unless a collective was
abandoned after a failure (a request still waiting for a dead peer), in which case
``MPI_Finalize`` would complain or hang and is skipped.

Data collectives run on a duplicate of ``COMM_WORLD``; the control plane's messages
(failures, departures: ``[kind u8][rank i32][utf-8 text]``, at most 4 KB so they are
sent eagerly and complete without the receiver) on a second one. Buffers of the CuPy
backend are staged through host memory (the NCCL communicator is the fast GPU path).
"""

from __future__ import annotations

import atexit
import struct
import sys
from types import ModuleType
from typing import Any

import numpy as np

from loom.backend.distributed.base import (
    CLOSED,
    FAILED,
    Communicator,
    ControlPlane,
    PeerEvent,
    Pending,
)
from loom.errors import BackendUnavailableError, DistributedError

__all__ = ["MpiCommunicator", "MpiControlPlane", "import_mpi"]

INSTALL_HINT = "pip install 'loom-nn[distributed]' (mpi4py and the mpich wheel, which brings mpiexec)"

_EVENT_TAG = 7411
_MAX_MESSAGE_BYTES = 4000
_KIND_CODES = {FAILED: 1, CLOSED: 2}
_CODE_KINDS = {code: kind for kind, code in _KIND_CODES.items()}


class _State:
    owned = False  # loom called MPI_Init (through the import of mpi4py.MPI)
    abandoned = False  # a request was given up: never call MPI_Finalize


def import_mpi() -> ModuleType:
    """``mpi4py.MPI``, initialised; a clear :class:`~loom.errors.BackendUnavailableError` when missing."""
    module = sys.modules.get("mpi4py.MPI")
    if module is not None:
        return module
    try:
        import mpi4py
    except ImportError as exc:
        message = f"distributed training on the NumPy backend needs mpi4py: {INSTALL_HINT}"
        raise BackendUnavailableError(message) from exc
    mpi4py.rc.finalize = False  # loom finalizes, and only when no collective was abandoned
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # mpi4py without a loadable MPI library
        raise BackendUnavailableError(f"mpi4py could not load an MPI library ({exc}): {INSTALL_HINT}") from exc
    _State.owned = True
    atexit.register(_finalize_mpi)
    return MPI


def _finalize_mpi() -> None:
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not _State.owned or _State.abandoned:
        return
    if MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.Finalize()


def _abandon() -> None:
    _State.abandoned = True


class MpiControlPlane(ControlPlane):
    """Failure and departure messages as MPI point-to-point messages; the exit vote as an Iallreduce."""

    def __init__(self, MPI: ModuleType, world: Any) -> None:
        self._MPI = MPI
        self._comm = world.Dup()
        self.rank, self.world_size = self._comm.Get_rank(), self._comm.Get_size()
        self._sends: list[tuple[Any, np.ndarray]] = []  # in-flight sends and their payloads

    def notify(self, kind: str, message: str = "") -> None:
        text = message.encode("utf-8", "replace")[:_MAX_MESSAGE_BYTES]
        payload = np.frombuffer(struct.pack("<Bi", _KIND_CODES[kind], self.rank) + text, dtype=np.uint8).copy()
        for peer in range(self.world_size):
            if peer != self.rank:
                request = self._comm.Isend([payload, self._MPI.BYTE], dest=peer, tag=_EVENT_TAG)
                self._sends.append((request, payload))

    def poll(self) -> list[PeerEvent]:
        MPI = self._MPI
        events = []
        status = MPI.Status()
        while self._comm.Iprobe(source=MPI.ANY_SOURCE, tag=_EVENT_TAG, status=status):
            payload = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
            self._comm.Recv([payload, MPI.BYTE], source=status.Get_source(), tag=_EVENT_TAG)
            data = payload.tobytes()
            if len(data) >= 5:
                code, rank = struct.unpack_from("<Bi", data)
                events.append(PeerEvent(_CODE_KINDS.get(code, FAILED), rank, data[5:].decode("utf-8", "replace")))
        self._sends = [(request, payload) for request, payload in self._sends if not request.Test()]
        return events

    def begin_broadcast_bytes(self, data: bytes | None, root: int, size: int) -> Pending:
        buffer = np.zeros(size, dtype=np.uint8)
        if self.rank == root:
            raw = np.frombuffer(bytes(data or b""), dtype=np.uint8)[:size]
            buffer[: raw.size] = raw
        request = self._comm.Ibcast([buffer, self._MPI.BYTE], root=root)
        return Pending(request.Test, buffer.tobytes, _abandon)

    def begin_exit_vote(self, failed: bool) -> Pending:
        flag = np.array([1 if failed else 0], dtype=np.int32)
        request = self._comm.Iallreduce(self._MPI.IN_PLACE, flag, self._MPI.MAX)
        return Pending(request.Test, lambda: bool(flag[0]), _abandon)

    def close(self, clean: bool) -> None:
        self.poll()  # receive what is left, so no message is pending at MPI_Finalize
        if not clean:
            _abandon()
        elif not self._sends:
            self._comm.Free()


class MpiCommunicator(Communicator):
    """Collectives over ``MPI.COMM_WORLD`` (non-blocking ``Iallreduce`` / ``Ibcast`` / ``Ibarrier``).

    Parameters
    ----------
    timeout : float, optional
        Seconds a collective may wait (default ``$LOOM_DIST_TIMEOUT`` or 300).
    array_backend : str
        ``"numpy"``; ``"cupy"`` accepts CuPy buffers and stages them through host memory.
    """

    kind = "mpi"

    def __init__(self, timeout: float | None = None, array_backend: str = "numpy") -> None:
        MPI = import_mpi()
        world = MPI.COMM_WORLD
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank = node.Get_rank()
        node.Free()
        super().__init__(world.Get_rank(), world.Get_size(), local_rank, timeout, MpiControlPlane(MPI, world))
        self._MPI = MPI
        self._comm = world.Dup()
        self.array_backend = array_backend

    def _is_native_array(self, buffer: Any) -> bool:
        if isinstance(buffer, np.ndarray):
            return True
        return self.array_backend == "cupy" and type(buffer).__module__.startswith("cupy")

    def _host(self, buffer: Any) -> tuple[np.ndarray, bool]:
        if isinstance(buffer, np.ndarray):
            return buffer, False
        return buffer.get(), True  # a CuPy array: reduce a host copy, then copy back

    def _started(self, start: Any, buffer: Any, host: np.ndarray, staged: bool, post: Any = None) -> Pending:
        try:
            request = start()
        except self._MPI.Exception as exc:
            raise DistributedError(f"rank {self.rank}: MPI error: {exc}", rank=self.rank) from exc

        def finish() -> Any:
            if post is not None:
                post()
            if staged:
                buffer.set(host)
            return host

        return Pending(request.Test, finish, _abandon)

    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        host, staged = self._host(buffer)
        MPI = self._MPI
        post = (lambda: np.divide(host, self.world_size, out=host)) if op == "mean" else None
        return self._started(lambda: self._comm.Iallreduce(MPI.IN_PLACE, host, MPI.SUM), buffer, host, staged, post)

    def _start_broadcast(self, buffer: Any, root: int) -> Pending:
        host, staged = self._host(buffer)
        return self._started(lambda: self._comm.Ibcast(host, root=root), buffer, host, staged)

    def _start_barrier(self) -> Pending:
        empty = np.empty(0)
        return self._started(self._comm.Ibarrier, empty, empty, False)

    def _start_scalar_reduce(self, values: np.ndarray, op: str) -> Pending:
        MPI = self._MPI
        mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        return self._started(lambda: self._comm.Iallreduce(MPI.IN_PLACE, values, mpi_op), values, values, False)

    def _release(self, clean: bool) -> None:
        if clean:
            self._comm.Free()
        else:
            _abandon()
