"""The :class:`Communicator` interface and the failure semantics every implementation shares.

A communicator moves data between the ranks of one data-parallel job (all-reduce,
broadcast, barrier) over a *data plane* (MPI or NCCL) and watches the job over a
*control plane* (:class:`ControlPlane`: MPI point-to-point messages or a TCP store),
which carries the out-of-band messages that turn a failed rank into an error on every
rank instead of a hang:

* Every collective is started non-blocking and waited for by :meth:`Communicator._wait`:
  it spins on the operation, polls the control plane every few milliseconds and gives
  up at a deadline (``timeout`` seconds, default :data:`DEFAULT_TIMEOUT` or
  ``$LOOM_DIST_TIMEOUT``).
* A rank that raises reports it (:meth:`Communicator.report_failure`, called by
  :meth:`Communicator.guard` and by loom's ``sys.excepthook``): its rank number and
  ``"ExcType: message"`` go to every peer. A peer waiting in a collective — or entering
  the next one — raises :class:`~loom.errors.RankFailedError` with that rank and text.
* A rank that leaves the job (closes its communicator, or its process ends) tells its
  peers too; a peer still waiting for it in a collective raises ``RankFailedError``
  after a short grace period (its last messages may still be in flight).
* Nothing arrives before the deadline: :class:`~loom.errors.DistributedTimeoutError`,
  reported to the peers like any other failure.
* :meth:`Communicator.close` is an *exit vote*: every rank says whether it failed and
  waits (bounded by the timeout) until all have voted. Launchers end the whole job when
  one process exits with an error, so this vote keeps every rank alive until each has
  reported its own error. After a failure the data plane is abandoned (an MPI request
  or NCCL kernel may still wait for the dead peer), never finalized.

Collectives must be called in the same order on every rank, with buffers of the same
length and dtype (use :meth:`Communicator.agree` once to check the length).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loom.errors import ConfigError, DistributedError, DistributedTimeoutError, RankFailedError, ShapeError

__all__ = [
    "DEFAULT_TIMEOUT",
    "REDUCE_OPS",
    "Communicator",
    "ControlPlane",
    "LocalControlPlane",
    "PeerEvent",
    "Pending",
    "PendingReduce",
    "SingleProcessCommunicator",
    "resolve_timeout",
]

#: Seconds a collective may wait for its peers before :class:`~loom.errors.DistributedTimeoutError`.
DEFAULT_TIMEOUT = 300.0
#: Reductions of :meth:`Communicator.all_reduce_scalars`.
REDUCE_OPS = ("sum", "mean", "max", "min")

FAILED = "failed"
CLOSED = "closed"

_SPIN_SECONDS = 0.005  # test and yield this long before sleeping between tests (latency of small collectives)
_MAX_SLEEP = 0.001
_POLL_INTERVAL = 0.002  # seconds between control-plane polls while waiting
_DEPARTURE_GRACE = 2.0  # a peer left: give its last in-flight data this long to arrive
_MESSAGE_GRACE = 0.5  # the exit vote says a peer failed: wait this long for its error text


def resolve_timeout(timeout: float | None) -> float:
    """``timeout`` if given, else ``$LOOM_DIST_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`; checked > 0."""
    source = "timeout"
    if timeout is None:
        text = os.environ.get("LOOM_DIST_TIMEOUT", "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        source = "LOOM_DIST_TIMEOUT"
        try:
            timeout = float(text)
        except ValueError:
            raise ConfigError(f"LOOM_DIST_TIMEOUT: expected seconds as a number, got {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"{source}: expected a positive number of seconds, got {timeout!r}")
    return float(timeout)


@dataclass(frozen=True)
class PeerEvent:
    """A message from another rank: it ``"failed"`` (with its error text) or ``"closed"`` (left the job)."""

    kind: str
    rank: int
    message: str = ""


class Pending:
    """A started operation: ``test()`` is True once it is complete; ``finish()`` runs after that.

    ``abandon()`` is called instead of ``finish()`` when the wait is given up.
    """

    def __init__(
        self,
        test: Callable[[], bool],
        finish: Callable[[], Any] | None = None,
        abandon: Callable[[], None] | None = None,
    ) -> None:
        self.test = test
        self._finish = finish
        self._abandon = abandon

    @classmethod
    def done(cls, value: Any = None) -> Pending:
        """An operation that completed at once and returns ``value``."""
        return cls(lambda: True, lambda: value)

    def finish(self) -> Any:
        return None if self._finish is None else self._finish()

    def abandon(self) -> None:
        if self._abandon is not None:
            self._abandon()


class ControlPlane(ABC):
    """Out-of-band messages between the ranks: failures, departures, small broadcasts, the exit vote."""

    rank: int
    world_size: int

    @abstractmethod
    def notify(self, kind: str, message: str = "") -> None:
        """Tell every peer that this rank ``"failed"`` (with ``message``) or ``"closed"``; never blocks."""

    @abstractmethod
    def poll(self) -> list[PeerEvent]:
        """Events from peers that arrived since the last call (non-blocking)."""

    @abstractmethod
    def begin_broadcast_bytes(self, data: bytes | None, root: int, size: int) -> Pending:
        """Start sending ``size`` bytes from ``root`` to every rank; ``finish()`` returns them."""

    @abstractmethod
    def begin_exit_vote(self, failed: bool) -> Pending:
        """Start the exit vote; ``finish()`` returns True when any rank voted failed."""

    def close(self, clean: bool) -> None:  # noqa: B027 - optional hook
        """Release resources (``clean``: every operation completed)."""


class LocalControlPlane(ControlPlane):
    """The control plane of a job of one process: no peers, every operation completes at once."""

    def __init__(self) -> None:
        self.rank, self.world_size = 0, 1

    def notify(self, kind: str, message: str = "") -> None:
        return None

    def poll(self) -> list[PeerEvent]:
        return []

    def begin_broadcast_bytes(self, data: bytes | None, root: int, size: int) -> Pending:
        return Pending.done(bytes(data or b""))

    def begin_exit_vote(self, failed: bool) -> Pending:
        return Pending.done(failed)


class PendingReduce:
    """A started all-reduce (:meth:`Communicator.start_all_reduce`); :meth:`wait` finishes it."""

    def __init__(self, comm: Communicator, pending: Pending, operation: str, buffer: Any) -> None:
        self._comm, self._pending, self._operation, self.buffer = comm, pending, operation, buffer
        self._done = False

    def wait(self) -> Any:
        """Wait (bounded by the communicator's timeout) and return the reduced buffer."""
        if not self._done:
            self._done = True
            self._comm._complete(self._pending, self._operation)
        return self.buffer


class Communicator(ABC):
    """The narrow interface data-parallel training needs: rank, world size and a few collectives.

    Data collectives work in place on one contiguous array of the communicator's array
    library (:attr:`array_backend`: NumPy for MPI, CuPy for NCCL), dtype float32/float64
    (int32/int64 for counts). Every collective waits at most :attr:`timeout` seconds and
    raises a :class:`~loom.errors.DistributedError` (never hangs) when a peer failed or
    left; see the module docstring for the protocol.

    Attributes
    ----------
    rank, world_size, local_rank : int
        This process's place in the job and on its host (``local_rank`` picks the GPU).
    kind : str
        ``"single"``, ``"mpi"`` or ``"nccl"``.
    array_backend : str
        ``"numpy"`` or ``"cupy"``: what buffers must be.
    timeout : float
        Seconds a collective may wait for the peers.
    progresses_in_background : bool
        Started collectives (:meth:`start_all_reduce`) advance while the caller computes (NCCL,
        on a stream of its own); MPI advances them only inside MPI calls. A trainer overlaps
        gradient reductions with its backward pass only when this is true.
    """

    kind = "abstract"
    array_backend = "numpy"
    progresses_in_background = False
    _DTYPES = ("float32", "float64", "int32", "int64")

    def __init__(
        self, rank: int, world_size: int, local_rank: int, timeout: float | None, control: ControlPlane
    ) -> None:
        self.rank, self.world_size, self.local_rank = int(rank), int(world_size), int(local_rank)
        self.timeout = resolve_timeout(timeout)
        self._control = control
        self._error: DistributedError | None = None  # set once this communicator cannot be used any more
        self._peer_failure: PeerEvent | None = None
        self._departed: dict[int, float] = {}  # peer rank -> when its "closed" message was seen
        self._reported = False
        self._abandoned = False  # an operation was given up: the data plane must not be finalized
        self._closed = False
        self.vote_complete = True  # False when close() gave up waiting for the other ranks' exit votes

    # ------------------------------------------------------------------ data-plane hooks
    @abstractmethod
    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        """Start an in-place sum (``op="sum"``) or mean (``"mean"``) of ``buffer`` over the ranks."""

    @abstractmethod
    def _start_broadcast(self, buffer: Any, root: int) -> Pending:
        """Start copying ``buffer`` of ``root`` into ``buffer`` of every rank."""

    @abstractmethod
    def _start_barrier(self) -> Pending:
        """Start a barrier."""

    @abstractmethod
    def _start_scalar_reduce(self, values: np.ndarray, op: str) -> Pending:
        """Start reducing float64 host ``values`` (op sum/max/min); ``finish()`` returns the host result."""

    def _is_native_array(self, buffer: Any) -> bool:
        return isinstance(buffer, np.ndarray)

    def _release(self, clean: bool) -> None:  # noqa: B027 - optional hook
        """Free the data plane (``clean``: no operation was abandoned)."""

    # ------------------------------------------------------------------ public collectives
    def accepts(self, array: Any) -> bool:
        """True when ``array`` is of the library (and, for NCCL, on the GPU) this communicator's collectives take."""
        return self._is_native_array(array)

    def all_reduce_sum(self, buffer: Any) -> Any:
        """Replace ``buffer`` (in place) by its element-wise sum over all ranks; returns it.

        Parameters
        ----------
        buffer : array
            Contiguous NumPy array (MPI) or CuPy array on this rank's GPU (NCCL), any
            shape, the same length and dtype on every rank.
        """
        return self.start_all_reduce(buffer, "sum").wait()

    def all_reduce_mean(self, buffer: Any) -> Any:
        """Replace ``buffer`` (in place) by its element-wise mean over all ranks (sum / world size)."""
        return self.start_all_reduce(buffer, "mean").wait()

    def start_all_reduce(self, buffer: Any, op: str = "mean") -> PendingReduce:
        """Start an in-place all-reduce (``op``: ``"sum"`` or ``"mean"``); ``.wait()`` on the result.

        Lets a trainer overlap the reduction of one gradient bucket with the backward pass of
        the layers before it. Started reductions complete in the order they were started,
        which must be the same on every rank; ``buffer`` must not be touched until ``wait()``.
        """
        if op not in ("sum", "mean"):
            raise ConfigError(f"op: expected 'sum' or 'mean', got {op!r}")
        operation = f"all_reduce_{op}"
        self._check_usable(operation)
        self._check_buffer(buffer, operation)
        if op == "mean" and buffer.dtype.kind != "f":
            raise ShapeError(f"{operation}: buffer: expected a float array, got {buffer.dtype}")
        pending = self._start_all_reduce(buffer, op)  # also with one process: the transport runs (tests)
        return PendingReduce(self, pending, operation, buffer)

    def broadcast(self, buffer: Any, root: int = 0) -> Any:
        """Copy ``buffer`` of rank ``root`` into ``buffer`` of every rank (in place); returns it."""
        self._check_usable("broadcast")
        if isinstance(root, bool) or not isinstance(root, int | np.integer) or not 0 <= root < self.world_size:
            raise ConfigError(f"root: expected a rank in [0, {self.world_size}), got {root!r}")
        self._check_buffer(buffer, "broadcast")
        self._complete(self._start_broadcast(buffer, int(root)), "broadcast")
        return buffer

    def barrier(self) -> None:
        """Wait until every rank has called ``barrier`` (bounded by the timeout)."""
        self._check_usable("barrier")
        self._complete(self._start_barrier(), "barrier")

    def all_reduce_scalars(self, values: float | Sequence[float], op: str = "sum") -> tuple[float, ...]:
        """Reduce host numbers (float64) over the ranks: ``op`` is sum, mean, max or min.

        For loss history, validation sums and sample counts: one call reduces several
        numbers at once. Every rank receives identical results.

        Examples
        --------
        >>> comm = SingleProcessCommunicator()
        >>> comm.all_reduce_scalars([0.25, 3.0])
        (0.25, 3.0)
        """
        if op not in REDUCE_OPS:
            raise ConfigError(f"op: expected one of {list(REDUCE_OPS)}, got {op!r}")
        self._check_usable("all_reduce_scalars")
        try:
            array = np.array(np.atleast_1d(np.asarray(values, dtype=np.float64)).reshape(-1), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"values: expected a number or a sequence of numbers ({exc})") from None
        if array.size == 0:
            return ()
        pending = self._start_scalar_reduce(array, "sum" if op == "mean" else op)
        array = np.asarray(self._complete(pending, f"all_reduce_{op}"), dtype=np.float64)
        if op == "mean":
            array = array / self.world_size
        return tuple(float(v) for v in array)

    def agree(self, what: str, value: int) -> None:
        """Check that every rank passes the same integer (e.g. the gradient buffer length).

        Raises :class:`~loom.errors.ConfigError` on every rank, naming ``what`` and the
        smallest and largest values seen, when they differ.
        """
        high, negated_low = self.all_reduce_scalars([float(value), -float(value)], "max")
        low = -negated_low
        if low != high:
            raise ConfigError(
                f"{what}: differs between ranks (from {low:.0f} to {high:.0f}; this rank {self.rank}: {value}); "
                "every rank must build the same network and buffers"
            )

    # ------------------------------------------------------------------ failures
    @property
    def failed(self) -> DistributedError | None:
        """The error that made this communicator unusable, or None."""
        return self._error

    def report_failure(self, error: BaseException | str) -> None:
        """Tell every peer that this rank failed with ``error`` (once; peers' own errors are not resent).

        Peers waiting in (or entering) a collective then raise
        :class:`~loom.errors.RankFailedError` carrying this rank's number and
        ``"ExcType: message"``.
        """
        if isinstance(error, RankFailedError) and error.failed_rank != self.rank:
            self._mark_failed(error)
            return  # the failing peer has told everyone already
        text = error if isinstance(error, str) else _describe(error)
        if self._error is None:
            self._error = DistributedError(f"rank {self.rank} failed: {text}", rank=self.rank)
        if not self._reported and not self._closed:
            self._reported = True
            with contextlib.suppress(Exception):  # best effort: the process is failing already
                self._control.notify(FAILED, text)

    @contextlib.contextmanager
    def guard(self) -> Iterator[Communicator]:
        """Context manager: an exception inside is reported to every peer, then re-raised.

        Examples
        --------
        >>> comm = SingleProcessCommunicator()
        >>> with comm.guard():
        ...     comm.barrier()
        """
        try:
            yield self
        except SystemExit as exc:
            if exc.code not in (None, 0):
                self.report_failure(f"SystemExit: exit code {exc.code}")
            raise
        except BaseException as exc:
            self.report_failure(exc)
            raise

    def close(self, *, raise_on_peer_failure: bool = True) -> None:
        """Leave the job: tell the peers, take part in the exit vote, free the data plane.

        Waits at most :attr:`timeout` seconds for the other ranks to vote. When a peer
        failed and this rank did not, raises :class:`~loom.errors.RankFailedError`
        (unless ``raise_on_peer_failure`` is False). Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        failed_here = self._error is not None
        any_failed = failed_here
        try:
            if self.world_size > 1:
                with contextlib.suppress(Exception):
                    self._control.notify(CLOSED)
                vote = self._control.begin_exit_vote(failed_here)
                if self._wait_quietly(vote.test):
                    any_failed = bool(vote.finish()) or any_failed
                else:
                    self.vote_complete = False
                    self._abandoned = True
                    _warn(f"rank {self.rank}: not every rank reached the exit vote within {self.timeout:g} s")
        finally:
            clean = not self._abandoned
            with contextlib.suppress(Exception):
                self._release(clean)
            with contextlib.suppress(Exception):
                self._control.close(clean)
        if any_failed and not failed_here:
            event = self._peer_failure or self._await_failure_message()
            error = self._peer_error(event, "close")
            self._error = error
            if raise_on_peer_failure:
                raise error

    # ------------------------------------------------------------------ waiting
    def _complete(self, pending: Pending, operation: str) -> Any:
        self._wait(pending, operation)
        return pending.finish()

    def _wait(self, pending: Pending, operation: str) -> None:
        """Spin, then sleep, on ``pending.test()`` while polling peers, up to the deadline."""
        if pending.test():
            return
        start = time.monotonic()
        deadline = start + self.timeout
        next_poll = start
        pause = 1e-5
        while True:
            if pending.test():
                return
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + _POLL_INTERVAL
                problem = self._data_plane_error()
                if problem is not None:
                    self._give_up(pending)
                    error = DistributedError(f"rank {self.rank}: {operation} failed: {problem}", rank=self.rank)
                    self.report_failure(problem)
                    self._error = error
                    raise error
                self._absorb(self._control.poll())
                cause = self._blocking_event(now)
                if cause is not None:
                    if pending.test():
                        return
                    self._give_up(pending)
                    error = self._mark_failed(self._peer_error(cause, operation))
                    if cause.kind == CLOSED:  # tell the others (the departed rank too) why this rank stops
                        self.report_failure(f"{type(error).__name__}: {error}")
                    raise error
            if now >= deadline:
                self._give_up(pending)
                error = DistributedTimeoutError(
                    f"rank {self.rank} of {self.world_size}: {operation} did not complete within "
                    f"{self.timeout:g} s (a rank is stuck, or the ranks ran different collectives)",
                    rank=self.rank,
                    operation=operation,
                    timeout=self.timeout,
                )
                self.report_failure(error)
                self._error = error
                raise error
            if now - start > _SPIN_SECONDS:
                time.sleep(pause)
            else:  # let a peer that shares this core run (oversubscribed hosts); returns at once otherwise
                _yield()
                pause = min(pause * 2, _MAX_SLEEP)

    def _wait_quietly(self, test: Callable[[], bool]) -> bool:
        """Wait for ``test()`` up to the timeout, recording peer events; False at the deadline."""
        deadline = time.monotonic() + self.timeout
        pause = 1e-5
        while not test():
            if time.monotonic() >= deadline:
                return False
            with contextlib.suppress(Exception):
                self._absorb(self._control.poll())
            time.sleep(pause)
            pause = min(pause * 2, _MAX_SLEEP)
        with contextlib.suppress(Exception):
            self._absorb(self._control.poll())
        return True

    def _data_plane_error(self) -> str | None:
        """An asynchronous error the data plane reports (NCCL), as text; None when healthy."""
        return None

    def _absorb(self, events: list[PeerEvent]) -> None:
        now = time.monotonic()
        for event in events:
            if event.kind == FAILED and self._peer_failure is None:
                self._peer_failure = event
            elif event.kind == CLOSED:
                self._departed.setdefault(event.rank, now)

    def _blocking_event(self, now: float) -> PeerEvent | None:
        """The peer event that makes the current collective impossible, if any."""
        if self._peer_failure is not None:
            return self._peer_failure
        for rank, seen in sorted(self._departed.items()):
            if now - seen >= min(_DEPARTURE_GRACE, self.timeout / 2):
                return PeerEvent(CLOSED, rank)
        return None

    def _give_up(self, pending: Pending) -> None:
        self._abandoned = True
        with contextlib.suppress(Exception):
            pending.abandon()

    def _await_failure_message(self) -> PeerEvent:
        deadline = time.monotonic() + _MESSAGE_GRACE
        while self._peer_failure is None and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                self._absorb(self._control.poll())
            time.sleep(0.005)
        return self._peer_failure or PeerEvent(FAILED, -1, "a peer rank failed (its message did not arrive)")

    def _peer_error(self, event: PeerEvent, operation: str) -> RankFailedError:
        where = f"rank {self.rank} of {self.world_size}, in {operation}"
        if event.kind == FAILED:
            who = f"rank {event.rank}" if event.rank >= 0 else "another rank"
            return RankFailedError(
                f"{who} failed: {event.message} (seen by {where})",
                rank=self.rank,
                failed_rank=event.rank,
                remote_message=event.message,
            )
        message = "left the job (closed its communicator or exited) before this collective"
        return RankFailedError(
            f"rank {event.rank} {message} (seen by {where}); the ranks ran different numbers of collectives",
            rank=self.rank,
            failed_rank=event.rank,
            remote_message=message,
        )

    def _mark_failed(self, error: DistributedError) -> DistributedError:
        if self._error is None:
            self._error = error
        return error

    # ------------------------------------------------------------------ checks
    def _check_usable(self, operation: str) -> None:
        if self._closed:
            raise DistributedError(f"{operation}: the communicator of rank {self.rank} is closed", rank=self.rank)
        error = self._error
        if error is None:
            return
        if isinstance(error, RankFailedError):
            raise RankFailedError(
                f"rank {error.failed_rank} failed earlier: {error.remote_message} "
                f"(rank {self.rank}, {operation} refused)",
                rank=self.rank,
                failed_rank=error.failed_rank,
                remote_message=error.remote_message,
            )
        raise DistributedError(f"{operation}: this communicator failed earlier: {error}", rank=self.rank)

    def _check_buffer(self, buffer: Any, operation: str) -> None:
        if not self._is_native_array(buffer):
            raise ShapeError(
                f"{operation}: buffer: expected a contiguous {self.array_backend} array "
                f"(the {self.kind} communicator's), got {type(buffer).__module__}.{type(buffer).__name__}"
            )
        if not buffer.flags.c_contiguous:
            raise ShapeError(f"{operation}: buffer: expected a C-contiguous array, got a strided view")
        if str(buffer.dtype) not in self._DTYPES:
            raise ShapeError(f"{operation}: buffer: expected dtype one of {list(self._DTYPES)}, got {buffer.dtype}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size}, kind={self.kind!r})"


class SingleProcessCommunicator(Communicator):
    """World size 1: every collective returns its input unchanged. Imports nothing, waits for nothing."""

    kind = "single"

    def __init__(self, array_backend: str = "numpy", timeout: float | None = None) -> None:
        super().__init__(0, 1, 0, timeout if timeout is not None else DEFAULT_TIMEOUT, LocalControlPlane())
        self.array_backend = array_backend

    def _is_native_array(self, buffer: Any) -> bool:
        return hasattr(buffer, "flags") and hasattr(buffer, "dtype")

    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        return Pending.done()

    def _start_broadcast(self, buffer: Any, root: int) -> Pending:
        return Pending.done()

    def _start_barrier(self) -> Pending:
        return Pending.done()

    def _start_scalar_reduce(self, values: np.ndarray, op: str) -> Pending:
        return Pending.done(values)


_yield = getattr(os, "sched_yield", lambda: None)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _warn(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"loom.distributed: {message}\n")
        sys.stderr.flush()
