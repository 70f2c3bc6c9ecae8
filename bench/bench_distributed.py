"""Data-parallel training throughput: samples/s for 1, 2, 4, ... processes and the scaling efficiency.

Every process trains the same MLP with SGD through loom's public engine —
``net.fit(x, y, distributed=True)``: weights broadcast from rank 0, each rank on its shard of
every global batch, the gradient all-reduced before each step, the loss reduced across ranks —
on one global batch per epoch (``world size × batch`` samples of random data), timed after the
warm-up epochs:

* CPU (default): an MLP sized for one core, 784 → 512 → 512 → 10, batch 256 per process,
  NumPy with one BLAS thread per process, MPI (``mpiexec`` from the mpich wheel) — process
  counts 1, 2, 4, ... up to the number of cores; one all-reduce after the backward pass (MPI
  advances only inside MPI calls);
* ``--gpu``: the 4096 → 4096 → 4096 → 10 MLP, batch 256 per GPU, CuPy + NCCL, one process per
  GPU (1 .. all visible GPUs); the engine all-reduces each layer's gradient as soon as its
  backward pass is done (NCCL progresses in the background). PyTorch DistributedDataParallel
  on the same MLP runs as the peer when torch is installed.

Scaling efficiency = samples/s with N processes / (N × samples/s with one). "Waiting" is rank
0's share of the timed wall time spent waiting in collectives (gradient and loss all-reduces).
Each configuration runs ``--repeats`` times (the machine may be shared): median, [min – max].

Run::

    python bench/bench_distributed.py [--procs 1,2] [--steps 30] [--repeats 3]
    python bench/bench_distributed.py --gpu [--gpus 1,2,4,8] [--steps 50]

Needs the ``distributed`` extra on CPU (``pip install -e ".[distributed]"``) and the
``gpu`` extra (CuPy with NCCL) for ``--gpu``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CPU_SIZES, CPU_BATCH = (784, 512, 512, 10), 256
GPU_SIZES, GPU_BATCH = (4096, 4096, 4096, 10), 256
LEARNING_RATE = 0.01
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------- loom worker
def loom_mlp(sizes: tuple[int, ...], backend: str) -> Any:
    import loom

    layers = [
        {"type": "dense", "input_size": a, "output_size": b, "activation": "relu" if i < len(sizes) - 2 else "sigmoid"}
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    ]
    config = {"batch_size": 1, "grid_rows": 1, "grid_cols": 1, "layers_per_cell": len(layers), "layers": layers}
    return loom.create_network_from_json(config, backend=backend, seed=0)


def loom_worker(args: argparse.Namespace) -> dict[str, Any] | None:
    """One rank: ``fit(..., distributed=True)``, one global batch per epoch; rank 0 returns the timing."""
    import loom
    import loom.distributed as dist

    backend = "cupy" if args.gpu else "numpy"
    comm = dist.init(backend)  # first: a GPU rank is pinned to its device before the network exists
    waited = [0.0]
    complete = comm._complete  # bench instrumentation: time spent waiting in collectives

    def timed_complete(pending: Any, operation: str) -> Any:
        started = time.perf_counter()
        try:
            return complete(pending, operation)
        finally:
            waited[0] += time.perf_counter() - started

    comm._complete = timed_complete  # type: ignore[method-assign]
    sizes, batch = (GPU_SIZES, GPU_BATCH) if args.gpu else (CPU_SIZES, CPU_BATCH)
    net = loom_mlp(sizes, backend)
    rng = np.random.default_rng(0)  # the same data on every rank; each trains on its shard
    x = rng.random((comm.world_size * batch, sizes[0]), dtype=np.float32)
    y = rng.random((comm.world_size * batch, sizes[-1]), dtype=np.float32)  # soft targets: no accuracy to count
    synchronize = net.array_backend.synchronize

    class Clock(loom.Callback):
        start = stop = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch == args.warmup:
                synchronize()
                waited[0] = 0.0
                self.start = time.perf_counter()

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            synchronize()
            self.stop = time.perf_counter()

    clock = Clock()
    net.fit(
        x,
        y,
        epochs=args.warmup + args.steps,
        batch_size=batch,
        optimizer="sgd",
        learning_rate=LEARNING_RATE,
        loss="mse",
        shuffle=False,
        verbose=0,
        callbacks=[clock],
        distributed=True,
    )
    seconds = clock.stop - clock.start
    result = {
        "samples_per_s": comm.world_size * batch * args.steps / seconds,
        "world_size": comm.world_size,
        "reduce_share": waited[0] / seconds,
    }
    dist.finalize()
    return result if comm.rank == 0 else None


# ---------------------------------------------------------------------------------------------- torch peer
def torch_worker(args: argparse.Namespace) -> dict[str, Any] | None:
    """The peer: PyTorch DistributedDataParallel (NCCL) on the same MLP, batch and SGD."""
    import torch
    import torch.distributed as tdist

    rank, world = int(os.environ["LOOM_RANK"]), int(os.environ["LOOM_WORLD_SIZE"])
    torch.cuda.set_device(rank)
    tdist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{args.torch_port}", rank=rank, world_size=world)
    sizes, batch = GPU_SIZES, GPU_BATCH
    layers: list[Any] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU() if i < len(sizes) - 2 else torch.nn.Sigmoid()]
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*layers).cuda(), device_ids=[rank])
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    x = torch.rand(batch, sizes[0], device="cuda")
    t = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (batch,), device="cuda"), sizes[-1]).float()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), t)
        loss.backward()
        optimizer.step()
        return float(loss)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    tdist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    tdist.barrier()
    seconds = time.perf_counter() - start
    tdist.destroy_process_group()
    return {"samples_per_s": world * batch * args.steps / seconds, "world_size": world} if rank == 0 else None


# ---------------------------------------------------------------------------------------------- driver
def run_job(nproc: int, args: argparse.Namespace, framework: str) -> tuple[float, float] | None:
    """Start ``nproc`` workers through loom.distributed.launch; rank 0's samples/s and share waiting for reduces."""
    from loom.distributed import launch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        argv = [sys.executable, __file__, "--worker", framework, "--result", str(out)]
        argv += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        argv += ["--gpu"] if args.gpu else []
        if framework == "torch":
            argv += ["--torch-port", str(_free_port())]
        env = dict(os.environ, **({} if args.gpu else SINGLE_THREAD))
        code = launch(nproc, argv, gpu=args.gpu, env=env, timeout=600)
        if code != 0 or not out.exists():
            print(f"  {framework} with {nproc} process(es) failed (exit code {code})", file=sys.stderr)
            return None
        result = json.loads(out.read_text())
        return float(result["samples_per_s"]), float(result.get("reduce_share", float("nan")))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarize(name: str, runs: dict[int, list[tuple[float, float]]]) -> None:
    """Median samples/s per process count, speedup and efficiency against the smallest count, time in reduces."""
    smallest = min(runs)
    base = statistics.median(v for v, _ in runs[smallest]) if runs[smallest] else float("nan")
    print(name)
    header = f"  {'procs':>5}  {'samples/s median [min - max]':>34}  {'speedup':>8}  {'efficiency':>10}"
    print(header + f"  {'waiting in collectives':>22}")
    for n, pairs in sorted(runs.items()):
        if not pairs:
            print(f"  {n:>5}  {'failed':>34}")
            continue
        values = [v for v, _ in pairs]
        median = statistics.median(values)
        spread = f"{median:,.0f} [{min(values):,.0f} - {max(values):,.0f}]"
        speedup = median / base
        efficiency = median / (n * base / smallest)
        share = statistics.median(s for _, s in pairs)
        print(f"  {n:>5}  {spread:>34}  {speedup:>7.2f}x  {efficiency:>9.0%}  {share:>21.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="GPUs with NCCL (4096-wide MLP) instead of CPU processes")
    parser.add_argument("--procs", default=None, help="CPU process counts, e.g. 1,2,4 (default: powers of 2 <= cores)")
    parser.add_argument("--gpus", default=None, help="GPU counts, e.g. 1,2,4,8 (default: 1, 2, 4, ... visible)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default: 30 CPU, 50 GPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch DDP peer (GPU)")
    parser.add_argument("--worker", choices=("loom", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--torch-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 50 if args.gpu else 30
    if args.worker is not None:
        result = (loom_worker if args.worker == "loom" else torch_worker)(args)
        if result is not None:
            args.result.write_text(json.dumps(result))
        return

    if args.gpu:
        from loom.backend.distributed.launcher import visible_gpu_count

        available = visible_gpu_count()
        counts = _counts(args.gpus, available)
        what = f"GPU: MLP {'-'.join(map(str, GPU_SIZES))}, batch {GPU_BATCH} per GPU, SGD, float32, NCCL"
        what += ", fit(distributed=True): per-layer all-reduce overlapped with backward"
    else:
        available = os.cpu_count() or 1
        counts = _counts(args.procs, available)
        what = f"CPU: MLP {'-'.join(map(str, CPU_SIZES))}, batch {CPU_BATCH} per process, SGD, float32, MPI"
        what += ", fit(distributed=True), 1 BLAS thread per process"
    print(f"bench_distributed — {what}; {args.steps} steps, {args.repeats} repeats, {available} available")
    frameworks = ["loom"]
    if args.gpu and args.torch:
        try:
            import torch  # noqa: F401

            frameworks.append("torch")
        except ImportError:
            print("  PyTorch peer: skipped (torch is not installed)")
    results: dict[str, dict[int, list[tuple[float, float]]]] = {f: {n: [] for n in counts} for f in frameworks}
    for _ in range(args.repeats):
        for n in counts:
            for framework in frameworks:  # peers alternate within each repeat: same machine state
                value = run_job(n, args, framework)
                if value is not None:
                    results[framework][n].append(value)
    for framework in frameworks:
        summarize("loom" if framework == "loom" else "PyTorch DDP (peer)", results[framework])
    if "torch" in results:
        for n in counts:
            mine, theirs = results["loom"][n], results["torch"][n]
            if mine and theirs:
                ratio = statistics.median(v for v, _ in mine) / statistics.median(v for v, _ in theirs)
                print(f"  loom / PyTorch with {n} GPU(s): {ratio:.2f}x")


def _counts(text: str | None, available: int) -> list[int]:
    if text:
        counts = sorted({int(v) for v in text.split(",") if v.strip()})
        if not counts or counts[0] < 1:
            raise SystemExit(f"expected positive counts, got {text!r}")
        return counts
    counts, n = [], 1
    while n <= available:
        counts.append(n)
        n *= 2
    if counts[-1] != available:
        counts.append(available)
    return counts


if __name__ == "__main__":
    main()
