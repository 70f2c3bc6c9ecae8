"""NCCL through CuPy's bindings (``cupy.cuda.nccl``): the communicator of the CuPy backend.

One process per GPU: the process is pinned to GPU ``local_rank`` before anything is
allocated (or GPU 0 when it sees a single device, e.g. ``CUDA_VISIBLE_DEVICES`` set per
rank). Rank 0 makes the NCCL unique id; the control plane — MPI when the job was started
by ``mpiexec``, else the TCP store of :func:`loom.distributed.launch` — hands it to the
others. ``NCCL_NVLS_ENABLE=0`` is forced before NCCL starts: NVLink multicast stays off.

Collectives run on a communicator stream of their own, ordered after the work queued on
the caller's current stream by an event; completion is another event, polled from the
host with the deadline and the control plane (:meth:`Communicator._wait`), and the
caller's stream then waits for it. A failed peer or a timeout aborts the NCCL
communicator (``ncclCommAbort``), which frees kernels stuck waiting for the dead rank.
A mean is a sum followed by a division on the communicator stream, so every rank holds
bit-identical results (NCCL's ring and tree algorithms reduce each element once).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from loom.backend.distributed.base import Communicator, ControlPlane, Pending
from loom.errors import BackendUnavailableError, ConfigError, DistributedError

__all__ = ["NcclCommunicator", "pick_device"]

UNIQUE_ID_BYTES = 128
_NCCL_HINT = (
    "CuPy could not load NCCL; install it for your CUDA version: pip install nvidia-nccl-cu12 (CUDA 12) "
    "or nvidia-nccl-cu13 (CUDA 13)"
)


def pick_device(local_rank: int, device_count: int) -> int:
    """The GPU of the process with ``local_rank`` on its host, seeing ``device_count`` GPUs.

    Examples
    --------
    >>> pick_device(1, 4), pick_device(3, 1)
    (1, 0)
    """
    if device_count < 1:
        raise BackendUnavailableError("distributed: no CUDA device is visible to this process")
    if local_rank < device_count:
        return local_rank
    if device_count == 1:  # one GPU per process (CUDA_VISIBLE_DEVICES set per rank)
        return 0
    raise ConfigError(
        f"local rank {local_rank}: no GPU of its own ({device_count} visible on this host); "
        f"start at most {device_count} processes per host, one per GPU"
    )


class NcclCommunicator(Communicator):
    """Collectives over NCCL between one process per GPU.

    Parameters
    ----------
    rank, world_size, local_rank : int
        This process's place in the job (``local_rank`` picks the GPU).
    control : ControlPlane
        Shares the unique id and carries failure messages (MPI, TCP store or local).
    timeout : float, optional
        Seconds a collective may wait (default ``$LOOM_DIST_TIMEOUT`` or 300).
    """

    kind = "nccl"
    array_backend = "cupy"
    progresses_in_background = True  # collectives run on the communicator stream

    def __init__(
        self, rank: int, world_size: int, local_rank: int, control: ControlPlane, timeout: float | None = None
    ) -> None:
        os.environ["NCCL_NVLS_ENABLE"] = "0"  # before NCCL reads its environment; never multicast
        super().__init__(rank, world_size, local_rank, timeout, control)
        self._nccl: Any = None
        from loom.backend import resolve_backend

        cupy = resolve_backend("cupy").raw  # BackendUnavailableError without CuPy or a device
        from cupy.cuda import nccl

        if not getattr(nccl, "available", False):
            raise BackendUnavailableError(_NCCL_HINT)
        self._cupy, self._lib = cupy, nccl
        self.device_id = pick_device(self.local_rank, cupy.cuda.runtime.getDeviceCount())
        cupy.cuda.Device(self.device_id).use()
        self._dtypes = {
            "float32": nccl.NCCL_FLOAT32,
            "float64": nccl.NCCL_FLOAT64,
            "int32": nccl.NCCL_INT32,
            "int64": nccl.NCCL_INT64,
        }
        mine = bytes(int(v) & 0xFF for v in nccl.get_unique_id()) if self.rank == 0 else None
        shared = self._complete(control.begin_broadcast_bytes(mine, 0, UNIQUE_ID_BYTES), "init (NCCL unique id)")
        self._nccl = self._create(shared)
        self._stream = cupy.cuda.Stream(non_blocking=True)

    def _create(self, unique_id: bytes) -> Any:
        """``ncclCommInitRank`` in a helper thread, so a rank that never joins ends in a timeout, not a hang."""
        box: dict[str, Any] = {}
        signed = tuple(int(v) for v in np.frombuffer(unique_id, dtype=np.int8))  # C `char` is signed on x86-64
        unsigned = tuple(unique_id)  # ... and unsigned on Arm and POWER

        def run() -> None:
            try:
                self._cupy.cuda.Device(self.device_id).use()  # the current device is per thread
                try:
                    box["comm"] = self._lib.NcclCommunicator(self.world_size, signed, self.rank)
                except OverflowError:
                    box["comm"] = self._lib.NcclCommunicator(self.world_size, unsigned, self.rank)
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=run, name="loom-nccl-init", daemon=True)
        thread.start()
        self._wait(Pending(lambda: not thread.is_alive()), "init (ncclCommInitRank)")
        if "error" in box:
            raise DistributedError(f"rank {self.rank}: NCCL initialisation failed: {box['error']}", rank=self.rank)
        return box["comm"]

    # ------------------------------------------------------------------ data plane
    def _is_native_array(self, buffer: Any) -> bool:
        return isinstance(buffer, self._cupy.ndarray) and buffer.device.id == self.device_id

    def _launch(self, call: Any, arrays: tuple[Any, ...], finish: Any = None) -> Pending:
        """Run ``call(stream_ptr)`` on the communicator stream after the caller's queued work."""
        cupy = self._cupy
        caller = cupy.cuda.get_current_stream()
        ready = cupy.cuda.Event(disable_timing=True)
        ready.record(caller)
        self._stream.wait_event(ready)
        try:
            call(self._stream.ptr)
        except Exception as exc:  # cupy.cuda.nccl.NcclError
            raise DistributedError(f"rank {self.rank}: NCCL error: {exc}", rank=self.rank) from exc
        done = cupy.cuda.Event(disable_timing=True)
        done.record(self._stream)

        def complete() -> Any:
            caller.wait_event(done)
            _ = arrays  # keep the device buffers alive until the collective is done
            return None if finish is None else finish()

        return Pending(lambda: done.done, complete, self._abort)

    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        nccl, dtype, size = self._lib, self._dtypes[str(buffer.dtype)], buffer.size

        def call(stream: int) -> None:
            ptr = buffer.data.ptr
            self._nccl.allReduce(ptr, ptr, size, dtype, nccl.NCCL_SUM, stream)
            if op == "mean":
                with self._stream:
                    self._cupy.divide(buffer, self.world_size, out=buffer)

        return self._launch(call, (buffer,))

    def _start_broadcast(self, buffer: Any, root: int) -> Pending:
        dtype, size = self._dtypes[str(buffer.dtype)], buffer.size
        return self._launch(lambda stream: self._nccl.bcast(buffer.data.ptr, size, dtype, root, stream), (buffer,))

    def _start_barrier(self) -> Pending:
        token = self._cupy.zeros(1, dtype=self._cupy.int32)
        nccl = self._lib

        def call(stream: int) -> None:
            self._nccl.allReduce(token.data.ptr, token.data.ptr, 1, nccl.NCCL_INT32, nccl.NCCL_SUM, stream)

        return self._launch(call, (token,))

    def _start_scalar_reduce(self, values: np.ndarray, op: str) -> Pending:
        nccl = self._lib
        device = self._cupy.asarray(values, dtype=self._cupy.float64)
        nccl_op = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}[op]

        def call(stream: int) -> None:
            ptr = device.data.ptr
            self._nccl.allReduce(ptr, ptr, device.size, nccl.NCCL_FLOAT64, nccl_op, stream)

        return self._launch(call, (device,), lambda: self._cupy.asnumpy(device))

    def _data_plane_error(self) -> str | None:
        if self._nccl is None:
            return None
        try:
            self._nccl.check_async_error()
        except Exception as exc:
            return f"NCCL reports {exc}"
        return None

    def _abort(self) -> None:
        comm, self._nccl = self._nccl, None
        if comm is not None:
            comm.abort()

    def _release(self, clean: bool) -> None:
        if not clean:
            self._abort()
            return
        comm, self._nccl = self._nccl, None
        if comm is not None:
            self._stream.synchronize()
            comm.destroy()
