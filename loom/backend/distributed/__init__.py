"""Data-parallel communication behind one narrow interface, :class:`Communicator`.

Implementations, chosen by :func:`create_communicator` from the array backend and the
launcher found in the environment (:func:`detect_launch`):

=========  =====================================  =========================================
kind       data plane                             control plane (failures, unique id, vote)
=========  =====================================  =========================================
single     nothing (world size 1)                 nothing
mpi        MPI through mpi4py, NumPy buffers      MPI point-to-point messages
nccl       NCCL through ``cupy.cuda.nccl``,       MPI under ``mpiexec``; else the TCP store
           CuPy buffers, one process per GPU      of :func:`loom.distributed.launch`
=========  =====================================  =========================================

Nothing of MPI or NCCL is imported until a communicator of that kind is created; the
single-process one imports nothing. Failure semantics (every rank raises the failing
rank's error within the timeout, never hangs) are described in
:mod:`loom.backend.distributed.base`; deterministic sharding of global batches and the
weighted gradient reduction in :mod:`loom.backend.distributed.sharding`.
"""

from __future__ import annotations

import os

from loom.backend.distributed.base import (
    DEFAULT_TIMEOUT,
    FAILED,
    Communicator,
    ControlPlane,
    LocalControlPlane,
    PeerEvent,
    PendingReduce,
    SingleProcessCommunicator,
    resolve_timeout,
)
from loom.backend.distributed.environment import LaunchInfo, detect_launch
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
from loom.errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "TRANSPORTS",
    "Communicator",
    "ControlPlane",
    "LaunchInfo",
    "LocalControlPlane",
    "PeerEvent",
    "PendingReduce",
    "Shard",
    "SingleProcessCommunicator",
    "create_communicator",
    "detect_launch",
    "epoch_permutation",
    "global_batch_indices",
    "rank_batch_indices",
    "reduce_gradient",
    "reduce_loss",
    "resolve_timeout",
    "shard_batch",
    "shard_range",
]

#: Values of ``transport``: ``"auto"`` picks single / mpi (NumPy) / nccl (CuPy).
TRANSPORTS = ("auto", "single", "mpi", "nccl")

_servers: list[object] = []  # stores served by rank 0 (LOOM_STORE_SERVER=rank0), kept alive


def create_communicator(
    backend: str = "numpy",
    *,
    transport: str = "auto",
    timeout: float | None = None,
    info: LaunchInfo | None = None,
) -> Communicator:
    """Join the job this process belongs to and return its communicator.

    Parameters
    ----------
    backend : str
        ``"numpy"`` or ``"cupy"``: the array library of the buffers to reduce.
    transport : str
        ``"auto"`` (world size 1: single; else NumPy → mpi, CuPy → nccl), or force
        ``"single"``, ``"mpi"`` or ``"nccl"`` (``mpi`` / ``nccl`` also work with one process).
    timeout : float, optional
        Seconds a collective may wait (default ``$LOOM_DIST_TIMEOUT`` or 300).
    info : LaunchInfo, optional
        The launch environment (default: :func:`detect_launch`).

    Returns
    -------
    Communicator
    """
    info = detect_launch() if info is None else info
    if backend not in ("numpy", "cupy"):
        raise ConfigError(f"backend: expected 'numpy' or 'cupy', got {backend!r}")
    if transport not in TRANSPORTS:
        raise ConfigError(f"transport: expected one of {list(TRANSPORTS)}, got {transport!r}")
    resolve_timeout(timeout)
    if transport == "auto":
        transport = "single" if info.world_size == 1 else ("nccl" if backend == "cupy" else "mpi")
    if transport == "single":
        if info.world_size > 1:
            raise ConfigError(f"transport: 'single' in a job of {info.world_size} processes ({info.launcher} launcher)")
        return SingleProcessCommunicator(backend, timeout)
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast stays off in every process of a job
    if transport == "mpi":
        if info.launcher == "loom" and info.world_size > 1:
            raise ConfigError(
                "transport: 'mpi' needs processes started by mpiexec, these were started with LOOM_RANK "
                "(the GPU launcher); CPU jobs run under mpiexec: loom.distributed.launch(n, argv) does that"
            )
        from loom.backend.distributed.mpi import MpiCommunicator

        return MpiCommunicator(timeout, backend)
    if backend != "cupy":
        raise ConfigError("transport: 'nccl' reduces CuPy arrays; use the 'cupy' backend (or transport 'mpi')")
    return _nccl_communicator(info, timeout)


def _nccl_communicator(info: LaunchInfo, timeout: float | None) -> Communicator:
    from loom.backend.distributed.nccl import NcclCommunicator

    rank, world_size, local_rank = info.rank, info.world_size, info.local_rank
    control: ControlPlane
    if info.launcher == "mpi":
        from loom.backend.distributed.mpi import MpiControlPlane, import_mpi

        MPI = import_mpi()
        world = MPI.COMM_WORLD
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank = node.Get_rank()
        node.Free()
        control = MpiControlPlane(MPI, world)
        rank, world_size = control.rank, control.world_size
    elif info.launcher == "loom" and info.world_size > 1:
        from loom.backend.distributed.store import StoreClient, StoreControlPlane, StoreServer

        if info.store is None:
            raise ConfigError("LOOM_STORE: not set; a job of several processes needs the store's 'host:port'")
        host, port = info.store
        if info.store_on_rank0 and rank == 0:
            _servers.append(StoreServer(host, port, info.store_token))
        client = StoreClient(host, port, info.store_token, connect_timeout=resolve_timeout(timeout))
        control = StoreControlPlane(client, rank, world_size)
    else:
        control = LocalControlPlane()
    try:
        return NcclCommunicator(rank, world_size, local_rank, control, timeout)
    except BaseException as exc:
        text = str(exc)
        control.notify(FAILED, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        raise
