"""Which launcher started this process, read from the environment (no imports, no side effects).

* ``mpiexec`` / ``mpirun``: MPICH's Hydra sets ``PMI_RANK`` / ``PMI_SIZE`` (and
  ``MPI_LOCALRANKID``), Open MPI ``OMPI_COMM_WORLD_RANK`` / ``_SIZE`` / ``_LOCAL_RANK``;
  MPI itself is authoritative once initialised.
* :func:`loom.distributed.launch` for GPUs (and jobs started by hand without MPI):
  ``LOOM_RANK``, ``LOOM_WORLD_SIZE``, ``LOOM_LOCAL_RANK`` (default: the rank),
  ``LOOM_STORE`` (``host:port`` of the rendezvous store), ``LOOM_STORE_TOKEN`` and, when
  no launcher hosts the store, ``LOOM_STORE_SERVER=rank0`` (rank 0 serves it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from loom.errors import ConfigError

__all__ = ["LaunchInfo", "detect_launch"]


@dataclass(frozen=True)
class LaunchInfo:
    """How this process was started.

    Attributes
    ----------
    launcher : str
        ``"none"`` (a plain process), ``"mpi"`` (mpiexec) or ``"loom"`` (``LOOM_*`` variables).
    rank, world_size, local_rank : int
    store : tuple of (str, int) or None
        The rendezvous store (``"loom"`` launcher only).
    store_token : str
    store_on_rank0 : bool
        Rank 0 must serve the store itself.
    """

    launcher: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    store: tuple[str, int] | None = None
    store_token: str = ""
    store_on_rank0: bool = False


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = env.get(name)
    if text is None or not text.strip():
        if default is None:
            raise ConfigError(f"{name}: not set (the launcher must set it)")
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {text!r}") from None


def _checked(rank: int, size: int, local: int, names: str) -> tuple[int, int, int]:
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"{names}: expected 0 <= rank < world size and local rank >= 0, got {rank}, {size}, {local}")
    return rank, size, local


def detect_launch(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read the launcher's variables from ``environ`` (default ``os.environ``).

    Examples
    --------
    >>> detect_launch({"LOOM_RANK": "1", "LOOM_WORLD_SIZE": "2", "LOOM_STORE": "127.0.0.1:5000"}).rank
    1
    >>> detect_launch({}).world_size
    1
    """
    env = os.environ if environ is None else environ
    if "LOOM_RANK" in env or "LOOM_WORLD_SIZE" in env:
        from loom.backend.distributed.store import parse_address

        rank = _int(env, "LOOM_RANK")
        size = _int(env, "LOOM_WORLD_SIZE")
        local = _int(env, "LOOM_LOCAL_RANK", rank)
        rank, size, local = _checked(rank, size, local, "LOOM_RANK/LOOM_WORLD_SIZE/LOOM_LOCAL_RANK")
        store = env.get("LOOM_STORE", "").strip()
        if not store and size > 1:
            raise ConfigError("LOOM_STORE: not set; a job of several processes needs the store's 'host:port'")
        server = env.get("LOOM_STORE_SERVER", "").strip().lower()
        if server not in ("", "launcher", "rank0"):
            raise ConfigError(f"LOOM_STORE_SERVER: expected 'launcher' or 'rank0', got {server!r}")
        return LaunchInfo(
            "loom",
            rank,
            size,
            local,
            parse_address(store) if store else None,
            env.get("LOOM_STORE_TOKEN", ""),
            server == "rank0",
        )
    for rank_name, size_name, local_name in (
        ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ):
        if rank_name in env:
            rank = _int(env, rank_name)
            size = _int(env, size_name)
            local = _int(env, local_name, rank)
            return LaunchInfo("mpi", *_checked(rank, size, local, f"{rank_name}/{size_name}"))
    return LaunchInfo()
