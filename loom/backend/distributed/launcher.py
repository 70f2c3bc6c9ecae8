"""Starting the processes of a data-parallel job on this host.

* NumPy (CPU): ``mpiexec -n N ARGV...`` — the ``mpiexec`` next to the running Python
  (the ``mpich`` wheel of the ``distributed`` extra puts it there), else the one on ``PATH``.
* GPU: one process per GPU, started here with ``LOOM_RANK`` / ``LOOM_WORLD_SIZE`` /
  ``LOOM_LOCAL_RANK`` / ``LOOM_STORE`` / ``LOOM_STORE_TOKEN``; this process serves the
  rendezvous store and supervises the children: when one exits with an error or a
  signal without having reported it (killed, segfault), the supervisor records the
  failure in the store so the others raise :class:`~loom.errors.RankFailedError` at
  once; children still running ``timeout`` + 10 s after a failure are terminated.

Every child gets ``NCCL_NVLS_ENABLE=0`` (NVLink multicast off) and ``LOOM_DIST_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from loom.backend.distributed.base import resolve_timeout
from loom.backend.distributed.store import StoreServer
from loom.errors import BackendUnavailableError, ConfigError

__all__ = ["find_mpiexec", "launch", "spawn_with_store", "visible_gpu_count"]

_KILL_GRACE = 10.0  # seconds past the timeout before stragglers of a failed job are terminated


def find_mpiexec() -> str:
    """Path of ``mpiexec``: beside ``sys.executable`` first (a virtual environment's), else on ``PATH``."""
    local = Path(sys.executable).parent / "mpiexec"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        from loom.backend.distributed.mpi import INSTALL_HINT

        raise BackendUnavailableError(f"mpiexec not found (needed to start CPU processes): {INSTALL_HINT}")
    return found


def visible_gpu_count() -> int:
    """CUDA devices this process sees (CuPy; :class:`~loom.errors.BackendUnavailableError` without)."""
    from loom.backend import resolve_backend

    return int(resolve_backend("cupy").raw.cuda.runtime.getDeviceCount())


def _child_environment(env: Mapping[str, str] | None, timeout: float) -> dict[str, str]:
    child = dict(os.environ if env is None else env)
    child["NCCL_NVLS_ENABLE"] = "0"
    child["LOOM_DIST_TIMEOUT"] = repr(timeout)
    return child


def launch(
    nproc: int | None,
    argv: Sequence[str],
    *,
    gpu: bool = False,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``argv`` as ``nproc`` processes of one job and wait for them; returns the job's exit code.

    Parameters
    ----------
    nproc : int or None
        Number of processes; None: one per visible GPU (``gpu``) or per CPU core.
    argv : sequence of str
        The command each process runs, e.g. ``[sys.executable, "-m", "loom.cli", "train", ...]``;
        it calls :func:`loom.distributed.init` to join the job.
    gpu : bool
        One process per GPU with NCCL (rendezvous through a store served here);
        otherwise NumPy processes under ``mpiexec``.
    timeout : float, optional
        Collective timeout for the children (``LOOM_DIST_TIMEOUT``; default 300 s).
    env : mapping, optional
        Environment of the children (default: this process's).

    Returns
    -------
    int
        0 when every process succeeded, else the exit code of the first that failed
        (128 + signal number for a signal).
    """
    command = [str(a) for a in argv]
    if not command:
        raise ConfigError("argv: expected the command every process runs, got an empty list")
    timeout = resolve_timeout(timeout)
    child_env = _child_environment(env, timeout)
    if gpu:
        count = visible_gpu_count()
        if nproc is None:
            nproc = count
        nproc = _check_nproc(nproc)
        if nproc > count:
            raise ConfigError(f"nproc: {nproc} GPU processes asked for, but {count} GPU(s) are visible")
        return spawn_with_store(nproc, command, env=child_env, timeout=timeout)
    nproc = _check_nproc((os.cpu_count() or 1) if nproc is None else nproc)
    completed = subprocess.run([find_mpiexec(), "-n", str(nproc), *command], env=child_env, check=False)
    return _exit_code(completed.returncode)


def _check_nproc(nproc: object) -> int:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc: expected a positive number of processes, got {nproc!r}")
    return nproc


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"process killed by {name}"
    return f"process exited with code {code} (no error was reported)"


def spawn_with_store(
    nproc: int, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None
) -> int:
    """Start ``nproc`` processes joined through a store served by this process; supervise them.

    Used by :func:`launch` for GPUs; works for any program that joins through
    ``LOOM_*`` variables. Returns the job's exit code as :func:`launch` does.
    """
    nproc = _check_nproc(nproc)
    timeout = resolve_timeout(timeout)
    token = secrets.token_hex(16)
    server = StoreServer("127.0.0.1", 0, token)
    base = _child_environment(env, timeout)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(nproc):
            child = dict(base)
            child.update(
                LOOM_RANK=str(rank),
                LOOM_WORLD_SIZE=str(nproc),
                LOOM_LOCAL_RANK=str(rank),
                LOOM_STORE=f"{server.host}:{server.port}",
                LOOM_STORE_TOKEN=token,
                LOOM_STORE_SERVER="launcher",
            )
            processes.append(subprocess.Popen(list(argv), env=child))
        return _supervise(processes, server, timeout)
    finally:
        _terminate(processes)
        server.close()


def _supervise(processes: list[subprocess.Popen[bytes]], server: StoreServer, timeout: float) -> int:
    codes: list[int | None] = [None] * len(processes)
    first_failure: tuple[int, float] | None = None
    while any(code is None for code in codes):
        for rank, process in enumerate(processes):
            if codes[rank] is not None:
                continue
            code = process.poll()
            if code is None:
                continue
            codes[rank] = code
            _record_exit(server, rank, code)
            if code != 0 and first_failure is None:
                first_failure = (rank, time.monotonic())
        if first_failure is not None and time.monotonic() - first_failure[1] > timeout + _KILL_GRACE:
            _terminate(processes)
        time.sleep(0.02)
    if first_failure is None:
        return 0
    return _exit_code(codes[first_failure[0]] or 1)


def _record_exit(server: StoreServer, rank: int, code: int) -> None:
    """Write what a process that ended could not write itself (idempotent: set-if-absent)."""
    changed = False
    if code != 0:
        changed |= server.set_if_absent(f"failed/{rank}", _describe_exit(code).encode())
    changed |= server.set_if_absent(f"closed/{rank}", b"")
    server.set_if_absent(f"vote/{rank}", b"1" if code != 0 else b"0")
    if changed:
        server.add("events", 1)


def _terminate(processes: list[subprocess.Popen[bytes]]) -> None:
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(OSError):
            process.terminate()
    deadline = time.monotonic() + 5.0
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()
