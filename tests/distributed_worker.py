"""One rank of the multi-process tests (tests/test_distributed*.py); run by mpiexec or loom's launcher.

``python -m tests.distributed_worker SCENARIO OUT_DIR [--backend numpy|cupy] [--timeout S]``

Scenarios (each rank writes ``OUT_DIR/rank<r>.json``, plus ``weights<r>.npy`` for sgd):

* ``sgd`` — collectives checked on known values, then :func:`train_data_parallel`:
  SGD written directly with the communicator on a small loom network (weights broadcast
  from rank 0, seed-driven sharding with an uneven last batch, weighted gradient
  all-reduce, clipping after the reduction, loss reduced across ranks);
* ``raise`` — rank 1 raises (uncaught) at step 5; the others keep training;
* ``hang`` — rank 1 sleeps forever at step 5; the others must time out;
* ``leave`` — rank 1 returns at step 5 (closes its communicator normally);
* ``store-*`` — the store control plane without MPI or NCCL, for jobs of
  :func:`loom.backend.distributed.launcher.spawn_with_store`: ``store-sgd`` (a test-only
  all-reduce through the store), ``store-raise`` and ``store-kill`` (rank 1 kills itself).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

import loom
import loom.distributed as dist
from loom.backend.distributed.base import Communicator, Pending
from loom.ops.losses import mse_grad, mse_loss

NET_CONFIG = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 2,
    "layers": [
        {"type": "dense", "input_size": 6, "output_size": 8, "activation": "tanh"},
        {"type": "dense", "input_size": 8, "output_size": 3, "activation": "sigmoid"},
    ],
}
NUM_SAMPLES = 61  # per-rank batch 4 on 2 ranks: 7 global batches of 8, then 5 samples split 3 / 2
PER_RANK_BATCH = 4
STEPS = 20
LEARNING_RATE = 2.0
GRADIENT_CLIP = 0.05
DATA_SEED, SHUFFLE_SEED, WEIGHT_SEED = 11, 5, 1000
FAIL_STEP = 5


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """A fixed regression set: 61 samples of 6 features -> 3 targets in (0, 1)."""
    rng = np.random.default_rng(DATA_SEED)
    x = rng.normal(size=(NUM_SAMPLES, 6)).astype(np.float32)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    y = (1.0 / (1.0 + np.exp(-(x @ w)))).astype(np.float32)
    return x, y


def parameters(net: Any) -> list[tuple[Any, str]]:
    """Every (layer config, parameter name), in a fixed order."""
    return [(cfg, name) for cfg in net.iter_all_layers() for name in cfg.params]


def pack(arrays: list[Any], raw: Any) -> Any:
    """One flat copy of ``arrays`` (``raw``: numpy or cupy)."""
    return raw.concatenate([a.reshape(-1) for a in arrays])


def unpack(flat: Any, arrays: list[Any]) -> None:
    start = 0
    for a in arrays:
        size = int(np.prod(a.shape))
        a[...] = flat[start : start + size].reshape(a.shape)
        start += size


def train_data_parallel(
    comm: Communicator, net: Any, *, per_rank_batch: int, steps: int = STEPS, fail: str | None = None
) -> list[float]:
    """SGD with the communicator through loom's public network API; returns the per-step global losses.

    Per step: this rank's shard of the global batch (seed-driven order, identical for any
    world size) -> forward -> mean-squared-error gradient -> backward -> flat gradient ->
    weighted all-reduce -> global-norm clipping -> ``update_weights``.
    """
    xp, raw = net.xp, net._backend.raw
    x_all, y_all = make_data()
    pairs = parameters(net)
    comm.agree("parameter count", sum(int(np.prod(cfg.params[n].shape)) for cfg, n in pairs))
    flat = pack([cfg.params[n] for cfg, n in pairs], raw)
    comm.broadcast(flat, root=0)  # every rank starts from rank 0's weights
    unpack(flat, [cfg.params[n] for cfg, n in pairs])
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        batches = dist.rank_batch_indices(
            NUM_SAMPLES, per_rank_batch, comm.rank, comm.world_size, seed=SHUFFLE_SEED, epoch=epoch
        )
        for indices, shard in batches:
            if len(losses) == steps:
                break
            if fail is not None and comm.rank == 1 and len(losses) == FAIL_STEP:
                if fail == "raise":
                    raise ValueError(f"rank 1 gave up at step {FAIL_STEP}")
                if fail == "hang":
                    time.sleep(3600)
                if fail == "leave":
                    return losses
            if shard.size:
                x, t = net._backend.asarray(x_all[indices]), net._backend.asarray(y_all[indices])
                y = net.forward(x)  # [b, 3]
                loss = mse_loss(y.reshape(-1), t.reshape(-1), xp)
                net.backward(mse_grad(y.reshape(-1), t.reshape(-1), xp).reshape(y.shape))
                grad = pack([cfg.grads[n] for cfg, n in pairs], raw)
            else:  # an empty shard (fewer samples than ranks): contributes zeros
                loss, grad = 0.0, raw.zeros(flat.shape, dtype=flat.dtype)
            dist.reduce_gradient(comm, grad, shard)
            losses.append(dist.reduce_loss(comm, loss, shard))
            norm = float(raw.sqrt(raw.sum(grad * grad)))
            if norm > GRADIENT_CLIP:
                grad *= GRADIENT_CLIP / norm
            grads = [cfg.grads.setdefault(n, raw.zeros_like(cfg.params[n])) for cfg, n in pairs]
            unpack(grad, grads)
            net.update_weights(LEARNING_RATE)
        epoch += 1
    return losses


def final_weights(net: Any) -> np.ndarray:
    return np.concatenate([loom.to_numpy(cfg.params[n]).reshape(-1) for cfg, n in parameters(net)])


def single_process_reference(per_rank_batch: int, backend: str = "numpy") -> tuple[np.ndarray, list[float]]:
    """Final weights and losses of the same training in this process alone (world size 1)."""
    from loom.backend.distributed import SingleProcessCommunicator

    net = make_net(backend, 0)
    losses = train_data_parallel(SingleProcessCommunicator(backend), net, per_rank_batch=per_rank_batch)
    return final_weights(net), losses


def make_net(backend: str, rank: int) -> Any:
    """Each rank starts from different weights: the broadcast from rank 0 must fix that."""
    return loom.create_network_from_json(NET_CONFIG, backend=backend, seed=WEIGHT_SEED + rank)


def check_collectives(comm: Communicator, xp: Any) -> dict[str, Any]:
    """Known-value checks of every collective; returns what was seen (compared by the test)."""
    r, n = comm.rank, comm.world_size
    a = xp.asarray(np.arange(5, dtype=np.float32) * (r + 1))
    comm.all_reduce_mean(a)
    b = xp.asarray(np.full(3, r + 1.0))
    comm.all_reduce_sum(b)
    c = xp.asarray(np.full(4, float(r), dtype=np.float32))
    comm.broadcast(c, root=n - 1)
    comm.barrier()
    return {
        "mean": loom.to_numpy(a).tolist(),
        "sum": loom.to_numpy(b).tolist(),
        "broadcast": loom.to_numpy(c).tolist(),
        "scalars_max": list(comm.all_reduce_scalars([float(r), -float(r)], "max")),
        "scalars_mean": list(comm.all_reduce_scalars(float(r), "mean")),
    }


# ---------------------------------------------------------------------------------------------- store-only
class StoreTestCommunicator(Communicator):
    """Test-only collectives through the rendezvous store (slow, exact): exercises the control plane on CPU."""

    kind = "store-test"

    def __init__(self, timeout: float) -> None:
        from loom.backend.distributed.store import StoreClient, StoreControlPlane

        info = dist.detect_launch()
        assert info.store is not None
        self._client = StoreClient(*info.store, info.store_token, connect_timeout=timeout)
        control = StoreControlPlane(self._client, info.rank, info.world_size)
        super().__init__(info.rank, info.world_size, info.local_rank, timeout, control)
        self._calls = 0
        self._data = StoreClient(*info.store, info.store_token, connect_timeout=timeout)

    def _exchange(self, payload: bytes, combine: Any) -> Pending:
        call, self._calls = self._calls, self._calls + 1
        self._data.set(f"data/{call}/{self.rank}", payload)

        def test() -> bool:
            return len(self._data.items(f"data/{call}/")) == self.world_size

        return Pending(test, lambda: combine([v for _, v in self._data.items(f"data/{call}/")]))

    def _start_all_reduce(self, buffer: Any, op: str) -> Pending:
        def combine(parts: list[bytes]) -> None:
            total = np.sum([np.frombuffer(p, dtype=buffer.dtype) for p in parts], axis=0)
            buffer.reshape(-1)[...] = total / self.world_size if op == "mean" else total

        return self._exchange(buffer.tobytes(), combine)

    def _start_broadcast(self, buffer: Any, root: int) -> Pending:
        def combine(parts: list[bytes]) -> None:
            buffer.reshape(-1)[...] = np.frombuffer(parts[root], dtype=buffer.dtype)

        return self._exchange(buffer.tobytes(), combine)

    def _start_barrier(self) -> Pending:
        return self._exchange(b"", lambda parts: None)

    def _start_scalar_reduce(self, values: np.ndarray, op: str) -> Pending:
        reducer = {"sum": np.sum, "max": np.max, "min": np.min}[op]
        return self._exchange(values.tobytes(), lambda parts: reducer([np.frombuffer(p) for p in parts], axis=0))


# ---------------------------------------------------------------------------------------------- main
def run(scenario: str, out: Path, backend: str, timeout: float) -> None:
    store = scenario.startswith("store-")
    start = time.monotonic()
    if store:
        comm = dist.init("numpy", communicator=StoreTestCommunicator(timeout))
        backend = "numpy"
    else:
        comm = dist.init(backend, timeout=timeout)
    result: dict[str, Any] = {"rank": comm.rank, "world_size": comm.world_size, "kind": comm.kind}
    path = out / f"rank{comm.rank}.json"
    net = make_net(backend, comm.rank)
    try:
        if scenario in ("sgd", "store-sgd"):
            result["collectives"] = check_collectives(comm, net._backend.raw)
        if scenario == "store-kill":
            comm.barrier()
            if comm.rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        fail = {"raise": "raise", "hang": "hang", "leave": "leave", "store-raise": "raise"}.get(scenario)
        result["losses"] = train_data_parallel(comm, net, per_rank_batch=PER_RANK_BATCH, fail=fail)
        np.save(out / f"weights{comm.rank}.npy", final_weights(net), allow_pickle=False)
        result["outcome"] = "ok"
    except BaseException as exc:
        result["outcome"] = type(exc).__name__
        result["message"] = str(exc)
        result["failed_rank"] = getattr(exc, "failed_rank", None)
        result["traceback"] = traceback.format_exc()
        raise
    finally:
        result["elapsed"] = time.monotonic() - start
        path.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("out", type=Path)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    run(args.scenario, args.out, args.backend, args.timeout)


if __name__ == "__main__":
    main()
