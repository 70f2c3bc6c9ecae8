"""``Network.fit`` vs PyTorch CPU eager on the same training run: seconds and ratio in one process.

Workload (both sides, the same arithmetic): a 2-64-64-2 MLP (tanh, tanh, linear, softmax), two
moons of 10,000 samples (noise 0.1), batch 32, Adam (lr 1e-3, torch defaults), 10 epochs, a new
shuffle every epoch, the cross-entropy on the softmax probabilities (clamped to [1e-7, 1 - 1e-7],
mean over the batch), the loss fetched every step and the running accuracy counted, as ``fit``
reports them.

* **loom** — ``net.fit(x, labels, epochs=10, batch_size=32, optimizer="adam", verbose=0)``;
* **torch same math** — ``nn.Sequential`` + ``softmax`` + ``log(clamp(p))``, ``torch.optim.Adam``,
  indexing the shuffled tensors per step (no ``DataLoader``: the fastest eager loop);
* **torch idiomatic** (for information) — ``CrossEntropyLoss`` on the logits (fused log-softmax).

Ratios are ``torch_time / loom_time`` (> 1: loom is faster; target ≥ 1.0 against the same math).
Each side runs ``--repeats`` times, alternating, and the best time is kept; the range is printed.
PyTorch is optional (its rows print "skipped" without it).

Run::

    python bench/bench_fit.py [--repeats 3] [--epochs 10] [--samples 10000] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import loom
from loom.nn.datasets import make_moons

HIDDEN = 64
BATCH = 32
LR = 1e-3
TARGET = 1.0

NETWORK = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 4,
    "input_size": 2,
    "layers": [
        {"type": "dense", "output_size": HIDDEN, "activation": "tanh"},
        {"type": "dense", "output_size": HIDDEN, "activation": "tanh"},
        {"type": "dense", "output_size": 2, "activation": "linear"},
        {"type": "softmax"},
    ],
}


def loom_run(x: np.ndarray, y: np.ndarray, epochs: int, backend: str) -> tuple[float, float]:
    """Seconds of one ``fit`` and its final training accuracy."""
    net = loom.create_network_from_json(NETWORK, backend=backend, seed=0)
    start = time.perf_counter()
    history = net.fit(x, y, epochs=epochs, batch_size=BATCH, optimizer="adam", learning_rate=LR, seed=0, verbose=0)
    net.array_backend.synchronize()
    return time.perf_counter() - start, history.history["accuracy"][-1]


def torch_run(torch: Any, x: np.ndarray, y: np.ndarray, epochs: int, idiomatic: bool) -> tuple[float, float]:
    """Seconds of the same training loop in PyTorch eager mode and its final training accuracy."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, HIDDEN),
        torch.nn.Tanh(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.Tanh(),
        torch.nn.Linear(HIDDEN, 2),
    )
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xt, labels = torch.from_numpy(x), torch.from_numpy(y)
    one_hot = torch.nn.functional.one_hot(labels, 2).float()
    cross_entropy = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    n = xt.shape[0]
    start = time.perf_counter()
    accuracy = 0.0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        xs, ts, ls = xt[order], one_hot[order], labels[order]
        total, correct = 0.0, torch.zeros((), dtype=torch.int64)
        for i in range(0, n, BATCH):
            xb, tb, lb = xs[i : i + BATCH], ts[i : i + BATCH], ls[i : i + BATCH]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            if idiomatic:
                loss = cross_entropy(logits, lb)
            else:
                p = torch.softmax(logits, dim=1)
                loss = -(tb * torch.log(p.clamp(1e-7, 1 - 1e-7))).sum() / xb.shape[0]
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
            correct += (logits.detach().argmax(dim=1) == lb).sum()
        accuracy = correct.item() / n
    return time.perf_counter() - start, accuracy


def best_of(runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    times = [t for t, _ in runs]
    return min(times), max(times), runs[-1][1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    x, y = make_moons(args.samples, noise=0.1, seed=0)
    print(
        f"loom {loom.__version__} ({args.backend}), numpy {np.__version__}, "
        f"torch {torch.__version__ if torch is not None else 'not installed'}; os.cpu_count={os.cpu_count()}"
        + (f", torch threads={torch.get_num_threads()}" if torch is not None else "")
    )
    print(
        f"2-{HIDDEN}-{HIDDEN}-2 MLP, {args.samples} samples, batch {BATCH}, Adam lr {LR}, {args.epochs} epochs; "
        f"best of {args.repeats} alternating runs\n"
    )
    runs: dict[str, list[tuple[float, float]]] = {"loom": [], "torch same math": [], "torch idiomatic": []}
    sides: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("loom", lambda: loom_run(x, y, args.epochs, args.backend))
    ]
    if torch is not None:
        sides.append(("torch same math", lambda: torch_run(torch, x, y, args.epochs, idiomatic=False)))
        sides.append(("torch idiomatic", lambda: torch_run(torch, x, y, args.epochs, idiomatic=True)))
    for _, run in sides:  # warm-up (imports, compilation, allocator)
        run()
    for _ in range(args.repeats):
        for name, run in sides:
            runs[name].append(run())
    loom_best, loom_worst, loom_acc = best_of(runs["loom"])
    print(f"{'side':<18} {'seconds (best..worst)':>22} {'train acc':>10}  torch/loom")
    print(f"{'loom fit':<18} {loom_best:10.3f} .. {loom_worst:<8.3f} {loom_acc:10.4f}")
    for name in ("torch same math", "torch idiomatic"):
        if not runs[name]:
            print(f"{name:<18} {'skipped':>22}")
            continue
        best, worst, acc = best_of(runs[name])
        ratio = best / loom_best
        ratios = [t / loom_best for t, _ in runs[name]]
        verdict = f"(target ≥ {TARGET:.1f}x: {'ok' if ratio >= TARGET else 'BELOW'})" if name.endswith("math") else ""
        print(
            f"{name:<18} {best:10.3f} .. {worst:<8.3f} {acc:10.4f}  {ratio:5.2f}x "
            f"[{min(ratios):.2f}..{max(ratios):.2f}] {verdict}"
        )


if __name__ == "__main__":
    main()
