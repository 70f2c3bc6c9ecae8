"""Dense 784 → 392 → 10 benchmark: loom vs PyTorch (CPU) vs the reference Go LOOM numbers.

Both frameworks train the same network (ScaledReLU hidden layer — PyTorch
``1.1 * relu`` — and a sigmoid output) with plain SGD on MSE, at batch size 1
and 32. Measured:

* **train** – samples/s through ``Network.train`` (what users call) for loom
  and a standard ``zero_grad / loss.backward / step`` loop for PyTorch;
* **raw loop** – loom's ``forward`` / ``backward`` / ``update_weights`` called by hand;
* **forward** – latency of one forward pass (PyTorch under ``torch.inference_mode``).

Every measurement is repeated and the best run is kept (the machine is shared).
Go LOOM's reference: 1000 samples trained in 1.88 s at batch 1 (≈ 530 samples/s)
and a 0.44 ms forward pass.

Run::

    python bench/bench_dense.py [--samples 1000] [--repeats 5] [--profile]

PyTorch is optional (its columns print "skipped" when it is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import loom

N_IN, N_HIDDEN, N_OUT = 784, 392, 10
LEARNING_RATE = 0.01
GO_TRAIN_SAMPLES_PER_S = 1000 / 1.88
GO_FORWARD_MS = 0.44
TARGETS = {"torch_b1": 1.0, "torch_b32": 0.8, "go": 4.0}


def make_data(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs in [0, 1) and one-hot targets, float32."""
    rng = np.random.default_rng(seed)
    x = rng.random((samples, N_IN), dtype=np.float32)
    t = np.zeros((samples, N_OUT), dtype=np.float32)
    t[np.arange(samples), rng.integers(0, N_OUT, samples)] = 1.0
    return x, t


# ---------------------------------------------------------------------------------------------- loom
def loom_network(batch_size: int) -> loom.Network:
    """The benchmark network in loom (ScaledReLU hidden, sigmoid output)."""
    return loom.create_network_from_json(
        {
            "batch_size": batch_size,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 2,
            "layers": [
                {"type": "dense", "input_size": N_IN, "output_size": N_HIDDEN, "activation": "relu"},
                {"type": "dense", "input_size": N_HIDDEN, "output_size": N_OUT, "activation": "sigmoid"},
            ],
        },
        seed=1,
    )


def loom_batches(x: np.ndarray, t: np.ndarray, batch: int) -> list[loom.TrainingBatch]:
    """Flat LOOM-layout batches (``batch`` samples back to back)."""
    return [
        loom.TrainingBatch(x[i : i + batch].reshape(-1), t[i : i + batch].reshape(-1))
        for i in range(0, len(x) - batch + 1, batch)
    ]


def loom_train_time(x: np.ndarray, t: np.ndarray, batch: int) -> float:
    """Seconds for one epoch of ``Network.train`` over ``x``."""
    net = loom_network(batch)
    batches = loom_batches(x, t, batch)
    config = loom.TrainingConfig(epochs=1, learning_rate=LEARNING_RATE, loss_type="mse")
    net.train(batches[:2], config)  # warm-up
    start = time.perf_counter()
    net.train(batches, config)
    return time.perf_counter() - start


def loom_raw_time(x: np.ndarray, t: np.ndarray, batch: int) -> float:
    """Seconds for one epoch of hand-written forward / backward / update_weights."""
    net = loom_network(batch)
    backend = net._backend
    data = [(backend.asarray(b.input), backend.asarray(b.target)) for b in loom_batches(x, t, batch)]
    scale = np.float32(2.0 / (batch * N_OUT))
    start = time.perf_counter()
    for xb, tb in data:
        y = net.forward(xb)
        net.backward((y - tb) * scale)
        net.update_weights(LEARNING_RATE)
    return time.perf_counter() - start


def loom_forward_time(x: np.ndarray, reps: int) -> float:
    """Mean seconds of one batch-1 forward pass (flat input already on the backend)."""
    net = loom_network(1)
    xs = [net._backend.asarray(row) for row in x[:reps]]
    for row in xs[:10]:
        net.forward(row)
    start = time.perf_counter()
    for row in xs:
        net.forward(row)
    return (time.perf_counter() - start) / len(xs)


# ---------------------------------------------------------------------------------------------- torch
def torch_model() -> Any:
    """The benchmark network in PyTorch, or None when torch is missing."""
    try:
        import torch
    except ImportError:
        return None

    class ScaledReLU(torch.nn.Module):
        def forward(self, v: Any) -> Any:
            return torch.relu(v) * 1.1

    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(N_IN, N_HIDDEN), ScaledReLU(), torch.nn.Linear(N_HIDDEN, N_OUT), torch.nn.Sigmoid()
    )


def torch_train_time(x: np.ndarray, t: np.ndarray, batch: int) -> float:
    """Seconds for one epoch of a standard PyTorch SGD loop."""
    import torch

    model = torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.MSELoss()
    n = len(x) - len(x) % batch
    xb = list(torch.from_numpy(x[:n]).split(batch))
    tb = list(torch.from_numpy(t[:n]).split(batch))

    def step(xi: Any, ti: Any) -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xi), ti)
        loss.backward()
        opt.step()

    for xi, ti in zip(xb[:2], tb[:2], strict=True):
        step(xi, ti)
    start = time.perf_counter()
    for xi, ti in zip(xb, tb, strict=True):
        step(xi, ti)
    return time.perf_counter() - start


def torch_forward_time(x: np.ndarray, reps: int) -> float:
    """Mean seconds of one batch-1 forward pass under ``torch.inference_mode``."""
    import torch

    model = torch_model()
    xs = [torch.from_numpy(row).reshape(1, -1) for row in x[:reps]]
    with torch.inference_mode():
        for row in xs[:10]:
            model(row)
        start = time.perf_counter()
        for row in xs:
            model(row)
    return (time.perf_counter() - start) / len(xs)


# ---------------------------------------------------------------------------------------------- report
def ratio_line(name: str, value: float, reference: float | None, target: float | None) -> str:
    """``name: value x (target >= t: ok/BELOW)``."""
    if reference is None:
        return f"  {name:<34} skipped"
    ratio = value / reference
    verdict = "" if target is None else f"  (target ≥ {target:.1f}x: {'ok' if ratio >= target else 'BELOW'})"
    return f"  {name:<34} {ratio:6.2f}x{verdict}"


def profile_train(x: np.ndarray, t: np.ndarray) -> None:
    """pyinstrument profile of loom's batch-1 ``Network.train``."""
    from pyinstrument import Profiler

    net = loom_network(1)
    batches = loom_batches(x, t, 1)
    config = loom.TrainingConfig(epochs=3, learning_rate=LEARNING_RATE)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    net.train(batches, config)
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=False))


@contextlib.contextmanager
def _thread_limit(threads: int | None, torch: Any) -> Iterator[None]:
    """Limit BLAS (via threadpoolctl, if installed) and torch to ``threads`` threads."""
    if threads is None:
        yield
        return
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(threads):
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table of throughputs and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024, help="training samples per epoch (default 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per measurement; the best is kept")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit BLAS and torch to N threads (default: the libraries' own choice)",
    )
    parser.add_argument("--profile", action="store_true", help="also profile loom's batch-1 training (pyinstrument)")
    args = parser.parse_args(argv)

    x, t = make_data(args.samples)
    try:
        import torch

        torch_info = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch = None
        torch_info = "torch not installed (skipped)"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} ({i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:
        blas = "threadpoolctl not installed"
    print(f"loom {loom.__version__} on {loom.get_backend()} (numpy {np.__version__}; BLAS: {blas}); {torch_info}")
    print(f"cpus: {os.cpu_count()}; samples/epoch: {args.samples}; best of {args.repeats}\n")

    # Every round runs each measurement once (interleaved, so loom and torch see the same machine
    # load); the best round of each is kept.
    reps = min(args.samples, 1000)
    measurements: dict[str, Callable[[], float]] = {}
    for batch in (1, 32):
        measurements[f"loom_train_b{batch}"] = lambda b=batch: loom_train_time(x, t, b)
        measurements[f"loom_raw_b{batch}"] = lambda b=batch: loom_raw_time(x, t, b)
        if torch is not None:
            measurements[f"torch_train_b{batch}"] = lambda b=batch: torch_train_time(x, t, b)
    measurements["loom_fwd"] = lambda: loom_forward_time(x, reps)
    if torch is not None:
        measurements["torch_fwd"] = lambda: torch_forward_time(x, reps)
    best: dict[str, float] = {}
    with _thread_limit(args.threads, torch):
        for _ in range(args.repeats):
            for name, fn in measurements.items():
                best[name] = min(best.get(name, float("inf")), fn())
    results: dict[str, float | None] = {}
    for batch in (1, 32):
        for who in ("loom_train", "loom_raw", "torch_train"):
            key = f"{who}_b{batch}"
            results[key] = args.samples / best[key] if key in best else None
    results["loom_fwd_ms"] = best["loom_fwd"] * 1e3
    results["torch_fwd_ms"] = best["torch_fwd"] * 1e3 if "torch_fwd" in best else None

    def fmt(v: float | None, unit: str) -> str:
        return "skipped" if v is None else f"{v:10.1f} {unit}" if unit != "ms" else f"{v:10.4f} ms"

    print("training throughput (samples/s)")
    for batch in (1, 32):
        print(f"  batch {batch:<2}  loom Network.train   {fmt(results[f'loom_train_b{batch}'], 'samples/s')}")
        print(f"            loom raw fwd/bwd/upd {fmt(results[f'loom_raw_b{batch}'], 'samples/s')}")
        print(f"            torch SGD loop       {fmt(results[f'torch_train_b{batch}'], 'samples/s')}")
    print("forward latency, batch 1")
    print(f"  loom  {fmt(results['loom_fwd_ms'], 'ms')}")
    print(f"  torch {fmt(results['torch_fwd_ms'], 'ms')}")
    print(f"  Go LOOM reference: train {GO_TRAIN_SAMPLES_PER_S:.0f} samples/s (batch 1), forward {GO_FORWARD_MS} ms\n")

    print("ratios (higher is better for loom)")
    print(ratio_line("train b1  loom/torch", results["loom_train_b1"], results["torch_train_b1"], TARGETS["torch_b1"]))
    print(
        ratio_line("train b32 loom/torch", results["loom_train_b32"], results["torch_train_b32"], TARGETS["torch_b32"])
    )
    print(ratio_line("raw b1    loom/torch", results["loom_raw_b1"], results["torch_train_b1"], None))
    print(ratio_line("raw b32   loom/torch", results["loom_raw_b32"], results["torch_train_b32"], None))
    print(ratio_line("train b1  loom/Go", results["loom_train_b1"], GO_TRAIN_SAMPLES_PER_S, TARGETS["go"]))
    torch_fwd = results["torch_fwd_ms"]
    print(
        ratio_line(
            "forward   torch time/loom time",
            torch_fwd if torch_fwd is not None else 0.0,
            results["loom_fwd_ms"] if torch_fwd is not None else None,
            None,
        )
    )
    print(ratio_line("forward   Go time/loom time", GO_FORWARD_MS, results["loom_fwd_ms"], TARGETS["go"]))
    if args.profile:
        print("\nprofile of loom Network.train, batch 1:")
        profile_train(x, t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
