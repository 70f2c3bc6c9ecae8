"""Data-parallel training through loom's public APIs: the scenarios, and one rank of the MPI job that runs them.

``python -m tests.distributed_engine_worker OUT_DIR [--backend cupy]`` under ``mpiexec -n 2`` (or,
for GPUs, :func:`loom.backend.distributed.launcher.spawn_with_store`) runs, in one program (one
job start for every check):

1. every :data:`SCENARIOS` entry — ``net.train(batches, {"Distributed": True, ...})`` or
   ``net.fit(..., distributed=True)``, fused and layer by layer, SGD and Adam, 20 steps with an
   uneven last global batch, each rank starting from different weights — writing
   ``weights<rank>-<scenario>.npy`` and the history; ``fit`` runs keep a ``ModelCheckpoint``;
2. ``diverge`` — a sample that overflows sits in rank 1's shard of batch 2: every rank must
   raise ``TrainingDivergedError`` at that batch, and the job goes on (a barrier follows);
3. ``raise`` (last) — rank 1 raises inside training (a gradient hook at its 5th step); every
   rank must end with that error, well before the collective timeout.

Each rank writes ``OUT_DIR/rank<r>.json`` after every part. The same scenario functions give
the single-process references (tests/test_distributed_mpi.py), run on thread ranks
(tests/test_data_parallel.py) and on NCCL (tests/test_distributed_nccl.py).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import loom
from loom.errors import TrainingDivergedError
from tests.distributed_worker import NET_CONFIG

NUM_SAMPLES = 75  # global batch 8: 9 full batches and one of 3 samples (2 / 1 on two ranks) per epoch
PER_RANK_BATCH = 4
EPOCHS = 2  # 2 x 10 = 20 steps
TRAINING_BATCH = 8  # LOOM train: TrainingBatches of 8 samples (the last of 3)
DATA_SEED, SHUFFLE_SEED, WEIGHT_SEED = 21, 5, 300
FAIL_STEP = 5
LINEAR_NET = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 2,
    "layers": [
        {"type": "dense", "input_size": 3, "output_size": 4, "activation": "linear"},
        {"type": "dense", "input_size": 4, "output_size": 1, "activation": "linear"},
    ],
}


@dataclass(frozen=True)
class Scenario:
    """One training call: ``api`` (``train`` / ``fit``), ``path`` (``fused`` / ``layer``), ``optimizer``."""

    api: str
    path: str
    optimizer: str

    @property
    def name(self) -> str:
        return f"{self.api}-{self.path}-{self.optimizer}"

    @property
    def learning_rate(self) -> float:
        return 0.5 if self.optimizer == "sgd" else 0.02


SCENARIOS = [
    Scenario(api, path, optimizer)
    for api in ("train", "fit")
    for path in ("fused", "layer")
    for optimizer in ("sgd", "adam")
]


def make_data(num_samples: int = NUM_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """A fixed regression set: ``num_samples`` samples of 6 features -> 3 targets in (0, 1)."""
    rng = np.random.default_rng(DATA_SEED)
    x = rng.normal(size=(num_samples + 15, 6)).astype(np.float32)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    y = (1.0 / (1.0 + np.exp(-(x @ w)))).astype(np.float32)
    return x, y


def training_batches(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """LOOM TrainingBatches of :data:`TRAINING_BATCH` samples as ``([b, 6], [b, 3])`` pairs."""
    return [(x[i : i + TRAINING_BATCH], y[i : i + TRAINING_BATCH]) for i in range(0, len(x), TRAINING_BATCH)]


def make_net(backend: str, rank: int) -> Any:
    """Each rank starts from different weights: the broadcast from rank 0 must make them equal."""
    return loom.create_network_from_json(NET_CONFIG, backend=backend, seed=WEIGHT_SEED + rank)


def weights(net: Any) -> np.ndarray:
    return np.concatenate([loom.to_numpy(p).reshape(-1) for _, p in net.named_parameters()])


def run_scenario(
    scenario: Scenario,
    *,
    backend: str = "numpy",
    distributed: Any = False,
    per_rank_batch: int = PER_RANK_BATCH,
    rank: int = 0,
    callbacks: list[Any] | None = None,
    gradient_hooks: tuple[Any, ...] = (),
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Train a fresh network as ``scenario`` says; returns its final weights and its history.

    ``train``: every TrainingBatch is one step (the batch is not split by ``per_rank_batch``).
    ``fit``: ``per_rank_batch`` samples per rank and step, shuffled, with validation data.
    """
    data_x, data_y = make_data()
    x, y, x_val, y_val = data_x[:NUM_SAMPLES], data_y[:NUM_SAMPLES], data_x[NUM_SAMPLES:], data_y[NUM_SAMPLES:]
    net = make_net(backend, rank)
    if scenario.api == "train":
        config = {
            "Epochs": EPOCHS,
            "LearningRate": scenario.learning_rate,
            "Optimizer": scenario.optimizer,
            "Fused": scenario.path == "fused",
            "GradientClip": 0.8,
            "Shuffle": True,
            "Seed": SHUFFLE_SEED,
            "Distributed": distributed,
        }
        result = net.train(training_batches(x, y), config)
        return weights(net), {"loss": list(result.loss_history)}
    history = net.fit(
        x,
        y,
        epochs=EPOCHS,
        batch_size=per_rank_batch,
        optimizer=scenario.optimizer,
        learning_rate=scenario.learning_rate,
        seed=SHUFFLE_SEED,
        validation_data=(x_val, y_val),
        gradient_clip=0.8,
        fused=scenario.path == "fused",
        verbose=0,
        callbacks=callbacks or [],
        gradient_hooks=gradient_hooks,
        distributed=distributed,
    )
    return weights(net), history.history


def diverging_data() -> tuple[np.ndarray, np.ndarray]:
    """8 samples for :data:`LINEAR_NET`; sample 7 (rank 1's shard of global batch 2 at 2 x 2) overflows."""
    x = np.tile(np.array([[2.0, -3.0, 4.0]], dtype=np.float32), (8, 1))
    x[7] = 3e38
    return x, np.ones(8, dtype=np.float32)


def run_diverging(*, backend: str = "numpy", distributed: Any = False, per_rank_batch: int = 2) -> tuple[str, Any]:
    """``fit`` until the overflow; returns the ``TrainingDivergedError`` text and the network."""
    net = loom.create_network_from_json(LINEAR_NET, backend=backend, seed=1)
    net.layers[0].params["kernel"][...] = 1.0  # sample 7: 3 x 3e38 overflows float32 in the first layer
    x, y = diverging_data()
    try:
        net.fit(
            x,
            y,
            epochs=2,
            batch_size=per_rank_batch,
            optimizer="sgd",
            learning_rate=1e-3,
            shuffle=False,
            verbose=0,
            distributed=distributed,
        )
    except TrainingDivergedError as exc:
        return str(exc), net
    raise AssertionError("training did not diverge")


class FailAtStep:
    """A gradient hook that raises ``ValueError`` at its ``step``-th call."""

    def __init__(self, step: int, rank: int) -> None:
        self.step, self.rank, self.calls = step, rank, 0

    def __call__(self, grads: Any) -> None:
        self.calls += 1
        if self.calls == self.step:
            raise ValueError(f"rank {self.rank} gave up at step {self.step}")


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    import loom.distributed as dist

    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    args = parser.parse_args()
    backend = args.backend
    comm = dist.init(backend)  # the job (mpiexec's, or the GPU launcher's); fit / train find the same communicator
    path = args.out / f"rank{comm.rank}.json"
    result: dict[str, Any] = {"rank": comm.rank, "world_size": comm.world_size, "kind": comm.kind, "scenarios": {}}

    def save() -> None:
        path.write_text(json.dumps(result))

    for scenario in SCENARIOS:
        checkpoint = loom.ModelCheckpoint(args.out / f"{scenario.name}-{{epoch}}.json")  # fit only
        final, history = run_scenario(
            scenario, backend=backend, distributed=True, rank=comm.rank, callbacks=[checkpoint]
        )
        np.save(args.out / f"weights{comm.rank}-{scenario.name}.npy", final, allow_pickle=False)
        saved = [p.name for p in checkpoint.saved]
        result["scenarios"][scenario.name] = {"history": history, "checkpoints": saved}
        save()

    message, net = run_diverging(backend=backend, distributed=True)
    comm.barrier()  # the job goes on after a divergence
    result["diverge"] = {"message": message, "weights": weights(net).tolist()}
    save()

    start = time.monotonic()
    try:
        hook = FailAtStep(FAIL_STEP, comm.rank) if comm.rank == 1 else (lambda grads: None)
        run_scenario(SCENARIOS[-1], backend=backend, distributed=True, rank=comm.rank, gradient_hooks=(hook,))
        result["raise"] = {"outcome": "ok"}
    except BaseException as exc:
        result["raise"] = {
            "outcome": type(exc).__name__,
            "message": str(exc),
            "failed_rank": getattr(exc, "failed_rank", None),
            "traceback": traceback.format_exc(),
        }
        raise
    finally:
        result.setdefault("raise", {})["elapsed"] = time.monotonic() - start
        save()


if __name__ == "__main__":
    main()
