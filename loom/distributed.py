"""Data-parallel training across processes: MPI on CPUs, NCCL on GPUs.

Every rank runs the same program on its shard of each global batch; gradients are
averaged with one all-reduce of the flat gradient buffer before the optimizer step;
weights are broadcast from rank 0 at the start; only rank 0 writes files and logs.

.. code-block:: console

    $ mpiexec -n 4 python train.py            # NumPy: 4 MPI processes
    $ python -c "import loom.distributed as d, sys; d.launch(2, [sys.executable, 'train.py'])"
    $ python -c "... d.launch(None, [sys.executable, 'train.py', '--gpu'], gpu=True)"   # one per GPU

.. code-block:: python

    import loom.distributed as dist

    comm = dist.init()                        # world size 1 outside a launcher: nothing imported
    comm.broadcast(flat_params, root=0)       # identical start
    with comm.guard():                        # an exception here ends every rank with its message
        for idx, shard in dist.rank_batch_indices(n, per_rank_batch, comm.rank, comm.world_size,
                                                  seed=0, epoch=epoch):
            ...                               # forward / backward on x[idx] -> flat gradient
            dist.reduce_gradient(comm, flat_grad, shard)
            loss = dist.reduce_loss(comm, local_loss, shard)
            ...                               # clip, optimizer step: same on every rank
    if dist.is_main_process():
        net.save_model("model.json")

``init`` joins the job described by the environment (``mpiexec``'s or
:func:`launch`'s variables) and installs two hooks: an uncaught exception is reported
to the other ranks before its traceback is printed, and at exit the communicator is
closed with the exit vote, so no rank is killed before it has reported its own error.
See :mod:`loom.backend.distributed` for the communicators and their failure semantics.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from loom.backend.distributed import (
    DEFAULT_TIMEOUT,
    Communicator,
    Shard,
    SingleProcessCommunicator,
    create_communicator,
    detect_launch,
    epoch_permutation,
    global_batch_indices,
    rank_batch_indices,
    reduce_gradient,
    reduce_loss,
    shard_batch,
    shard_range,
)
from loom.backend.distributed.launcher import launch
from loom.errors import ConfigError, RankFailedError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Communicator",
    "Shard",
    "communicator",
    "epoch_permutation",
    "finalize",
    "global_batch_indices",
    "guard",
    "init",
    "is_initialized",
    "is_main_process",
    "launch",
    "local_rank",
    "rank",
    "rank_batch_indices",
    "reduce_gradient",
    "reduce_loss",
    "shard_batch",
    "shard_range",
    "world_size",
]


class _State:
    comm: Communicator | None = None
    exit_hook = False
    previous_excepthook: Any = None


def init(
    backend: str | None = None,
    *,
    transport: str = "auto",
    timeout: float | None = None,
    excepthook: bool = True,
    communicator: Communicator | None = None,
) -> Communicator:
    """Join the job this process was started in; returns its :class:`Communicator`.

    Parameters
    ----------
    backend : str, optional
        ``"numpy"`` or ``"cupy"`` (default: loom's current backend). CuPy jobs pin each
        process to GPU ``local_rank`` and use NCCL.
    transport : str
        ``"auto"``, ``"single"``, ``"mpi"`` or ``"nccl"``; see
        :func:`loom.backend.distributed.create_communicator`.
    timeout : float, optional
        Seconds a collective may wait for the others (default ``$LOOM_DIST_TIMEOUT`` or 300).
    excepthook : bool
        Report uncaught exceptions to the other ranks (``sys.excepthook``).
    communicator : Communicator, optional
        Install this communicator instead of creating one (another transport, tests).

    Returns
    -------
    Communicator
        The same object on later calls until :func:`finalize` (after a failure too: its
        collectives then raise that failure).
    """
    from loom.backend import resolve_backend

    name = resolve_backend(backend).name
    comm = _State.comm
    if comm is not None:  # until finalize(); a failed communicator keeps raising its error
        if communicator is not None and communicator is not comm:
            raise ConfigError("communicator: distributed mode is already initialised; call finalize() first")
        if comm.array_backend != name and comm.world_size > 1:
            raise ConfigError(
                f"backend: distributed mode is already initialised for {comm.array_backend!r}, not {name!r}"
            )
        return comm
    if communicator is not None:
        if not isinstance(communicator, Communicator):
            raise ConfigError(f"communicator: expected a Communicator, got {type(communicator).__name__}")
        comm = communicator
    else:
        comm = create_communicator(name, transport=transport, timeout=timeout)
    _State.comm = comm
    if comm.kind != "single":
        if not _State.exit_hook:
            _State.exit_hook = True
            atexit.register(_close_at_exit)
        if excepthook and _State.previous_excepthook is None:
            _State.previous_excepthook = sys.excepthook
            sys.excepthook = _report_uncaught
    return comm


def finalize() -> None:
    """Leave the job: close the communicator (exit vote, then free MPI / NCCL resources).

    Raises :class:`~loom.errors.RankFailedError` when another rank failed. Called at exit
    automatically; calling it earlier lets a program end the job explicitly.
    """
    comm, _State.comm = _State.comm, None
    if comm is not None:
        comm.close()


def is_initialized() -> bool:
    """True between :func:`init` and :func:`finalize`."""
    return _State.comm is not None


def communicator() -> Communicator:
    """The communicator of :func:`init`, or a single-process one when distributed mode is off."""
    return _State.comm if _State.comm is not None else SingleProcessCommunicator()


def rank() -> int:
    """This process's rank (before :func:`init`: as the launcher's environment says; 0 alone)."""
    return _State.comm.rank if _State.comm is not None else detect_launch().rank


def world_size() -> int:
    """Number of processes in the job (1 when not launched as a job)."""
    return _State.comm.world_size if _State.comm is not None else detect_launch().world_size


def local_rank() -> int:
    """This process's rank on its host (its GPU in a CuPy job)."""
    return _State.comm.local_rank if _State.comm is not None else detect_launch().local_rank


def is_main_process() -> bool:
    """True on rank 0, the rank that writes checkpoints, logs and plots."""
    return rank() == 0


@contextlib.contextmanager
def guard() -> Iterator[Communicator]:
    """``communicator().guard()``: an exception inside is reported to every rank, then re-raised."""
    with communicator().guard() as comm:
        yield comm


def _report_uncaught(exc_type: Any, exc: BaseException, tb: Any) -> None:
    comm = _State.comm
    if comm is not None:
        with contextlib.suppress(Exception):
            comm.report_failure(exc)
    previous = _State.previous_excepthook or sys.__excepthook__
    previous(exc_type, exc, tb)


def _close_at_exit() -> None:
    comm, _State.comm = _State.comm, None
    if comm is None:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    known = comm.failed
    try:
        comm.close(raise_on_peer_failure=False)
    except Exception as exc:  # never raise from an exit hook
        sys.stderr.write(f"loom.distributed: closing rank {comm.rank} failed: {exc}\n")
        return
    error = comm.failed
    if known is None and isinstance(error, RankFailedError):  # a peer failed after this rank's last collective
        with contextlib.suppress(Exception):
            sys.stderr.write(f"loom.distributed: {error}\n")
            sys.stderr.flush()
    if not comm.vote_complete:
        # A peer never reached the exit vote (stuck or dead). Exiting with 0 here would let
        # mpiexec report the job as successful while it kills the stuck rank: exit with 1.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(1)
