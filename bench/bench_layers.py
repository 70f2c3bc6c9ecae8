"""Per-layer training-step benchmark: loom vs PyTorch (CPU), plus the seed README demo vs Go LOOM.

Measured (µs per step, best of ``--repeats`` timed runs after a warm-up):

1. **LSTM** (input 32, hidden 64, seq 16, batch 1) training step: forward, MSE loss gradient,
   backward and a plain SGD update. loom runs the manual loop
   ``y = net.forward(x); g = 2*(y-t)/n; net.backward(g); net.update_weights(lr)``
   (the per-step cost of ``Network.train``); PyTorch runs ``nn.LSTM(32, 64, batch_first=True)``
   with ``zero_grad / MSELoss / backward / SGD.step``.
2. **Conv2D** (1×28×28 input, 8 filters 3×3, stride 1, no padding, ScaledReLU — PyTorch ``1.1 * relu`` —
   then dense 5408 → 10 with sigmoid) training step, same loop as above.
3. **MHA** (seq 32, d_model 64, 4 heads) forward + backward with loss ``sum(y * r)`` (so the
   output gradient is ``r``); PyTorch uses ``nn.MultiheadAttention(64, 4, batch_first=True)``
   with a causal mask.
4. **Seed README demo**: 800 epochs of the grid-scatter network from
   ``$LOOM_SHARED/fixtures/loom-go/seed_grid_scatter_example.json`` (default ``../shared`` relative
   to the repository) through ``Network.train``, compared with Go LOOM's 0.102 s on the 2-core
   reference machine (target: loom within 2× of Go).

Ratios are ``torch_time / loom_time`` (> 1 means loom is faster; target ≥ 1.0×) and, for the demo,
``go_time / loom_time`` (target ≥ 0.5×, i.e. within 2×). PyTorch is optional: its side prints
"skipped" when it is not installed. Thread counts are left at their defaults and printed.

Run::

    python bench/bench_layers.py [--backend numpy|cupy] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import loom
from loom.backend import resolve_backend

LR = 0.01
GO_DEMO_SECONDS = 0.102
TORCH_TARGET = 1.0
GO_TARGET = 0.5  # go_time / loom_time >= 0.5  <=>  loom within 2x of Go

LSTM_IN, LSTM_HIDDEN, LSTM_SEQ = 32, 64, 16
CONV_H = CONV_W = 28
CONV_FILTERS, CONV_K = 8, 3
CONV_OUT_H, CONV_OUT_W = CONV_H - CONV_K + 1, CONV_W - CONV_K + 1
CONV_FLAT = CONV_FILTERS * CONV_OUT_H * CONV_OUT_W
CONV_CLASSES = 10
MHA_SEQ, MHA_D, MHA_HEADS = 32, 64, 4


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def best_us(step: Callable[[], None], iters: int, repeats: int, sync: Callable[[], None]) -> float:
    """Best-of-``repeats`` mean µs per call of ``step`` over ``iters`` calls (after a warm-up)."""
    for _ in range(max(3, iters // 10)):
        step()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        best = min(best, (time.perf_counter() - start) / iters)
    return best * 1e6


# ---------------------------------------------------------------------------------------------- loom
def loom_net(layers: list[dict[str, Any]], backend: str) -> loom.Network:
    return loom.create_network_from_json(
        {"batch_size": 1, "grid_rows": 1, "grid_cols": 1, "layers_per_cell": len(layers), "layers": layers},
        backend=backend,
        seed=1,
    )


def loom_train_step(net: loom.Network, x: np.ndarray, t: np.ndarray) -> Callable[[], None]:
    """Manual forward / MSE gradient / backward / SGD update step."""
    b = net._backend
    xb, tb = b.asarray(x), b.asarray(t)
    scale = np.float32(2.0 / t.size)

    def step() -> None:
        y = net.forward(xb)
        net.backward((y - tb) * scale)
        net.update_weights(LR)

    return step


def loom_lstm(backend: str) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    net = loom_net(
        [{"type": "lstm", "input_size": LSTM_IN, "hidden_size": LSTM_HIDDEN, "seq_length": LSTM_SEQ}], backend
    )
    x = rng.standard_normal(LSTM_SEQ * LSTM_IN).astype(np.float32)
    t = rng.standard_normal(LSTM_SEQ * LSTM_HIDDEN).astype(np.float32)
    return loom_train_step(net, x, t)


def loom_conv(backend: str) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    net = loom_net(
        [
            {
                "type": "conv2d",
                "input_channels": 1,
                "filters": CONV_FILTERS,
                "kernel_size": CONV_K,
                "stride": 1,
                "padding": 0,
                "input_height": CONV_H,
                "input_width": CONV_W,
                "output_height": CONV_OUT_H,
                "output_width": CONV_OUT_W,
                "activation": "relu",
            },
            {"type": "dense", "input_size": CONV_FLAT, "output_size": CONV_CLASSES, "activation": "sigmoid"},
        ],
        backend,
    )
    x = rng.random(CONV_H * CONV_W, dtype=np.float32)
    t = np.zeros(CONV_CLASSES, dtype=np.float32)
    t[3] = 1.0
    return loom_train_step(net, x, t)


def loom_mha(backend: str) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    net = loom_net(
        [{"type": "multi_head_attention", "d_model": MHA_D, "num_heads": MHA_HEADS, "seq_length": MHA_SEQ}], backend
    )
    b = net._backend
    x = b.asarray(rng.standard_normal(MHA_SEQ * MHA_D).astype(np.float32))
    r = b.asarray(rng.standard_normal(MHA_SEQ * MHA_D).astype(np.float32))

    def step() -> None:
        net.forward(x)
        net.backward(r)

    return step


# ---------------------------------------------------------------------------------------------- torch
def torch_lstm(torch: Any) -> Callable[[], None]:
    torch.manual_seed(1)
    model = torch.nn.LSTM(LSTM_IN, LSTM_HIDDEN, batch_first=True)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.MSELoss()
    x = torch.randn(1, LSTM_SEQ, LSTM_IN)
    t = torch.randn(1, LSTM_SEQ, LSTM_HIDDEN)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        y, _ = model(x)
        loss_fn(y, t).backward()
        opt.step()

    return step


def torch_conv(torch: Any) -> Callable[[], None]:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, CONV_FILTERS, CONV_K)
    fc = torch.nn.Linear(CONV_FLAT, CONV_CLASSES)
    opt = torch.optim.SGD([*conv.parameters(), *fc.parameters()], lr=LR)
    loss_fn = torch.nn.MSELoss()
    x = torch.rand(1, 1, CONV_H, CONV_W)
    t = torch.zeros(1, CONV_CLASSES)
    t[0, 3] = 1.0

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        h = 1.1 * torch.relu(conv(x))
        y = torch.sigmoid(fc(h.reshape(1, -1)))
        loss_fn(y, t).backward()
        opt.step()

    return step


def torch_mha(torch: Any) -> Callable[[], None]:
    torch.manual_seed(1)
    mha = torch.nn.MultiheadAttention(MHA_D, MHA_HEADS, batch_first=True)
    x = torch.randn(1, MHA_SEQ, MHA_D, requires_grad=True)
    r = torch.randn(1, MHA_SEQ, MHA_D)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(MHA_SEQ)

    def step() -> None:
        mha.zero_grad(set_to_none=True)
        x.grad = None
        y, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
        (y * r).sum().backward()

    return step


# ---------------------------------------------------------------------------------------------- demo
def fixture_path() -> Path:
    shared = os.environ.get("LOOM_SHARED") or str(Path(__file__).resolve().parent.parent.parent / "shared")
    return Path(shared) / "fixtures" / "loom-go" / "seed_grid_scatter_example.json"


def demo_seconds(backend: str, repeats: int, sync: Callable[[], None]) -> float | None:
    """Best wall time of the seed README demo (800 epochs of ``Network.train``), or None if no fixture."""
    path = fixture_path()
    if not path.exists():
        return None
    fix = json.loads(path.read_text())
    batches = fix["training"]["batches"]
    config = {**fix["training"]["config"], "UseGPU": backend == "cupy"}  # the fixture's UseGPU=false would move it
    warm = loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)
    warm.train(batches, {**config, "Epochs": 5})
    sync()
    best = float("inf")
    for _ in range(repeats):
        net = loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)
        start = time.perf_counter()
        net.train(batches, config)
        sync()
        best = min(best, time.perf_counter() - start)
    return best


# ---------------------------------------------------------------------------------------------- report
def verdict(ratio: float, target: float) -> str:
    return f"{ratio:6.2f}x  (target ≥ {target:.1f}x: {'ok' if ratio >= target else 'BELOW'})"


def thread_info(torch: Any) -> str:
    parts = [f"os.cpu_count={os.cpu_count()}"]
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{p.get('internal_api')}={p.get('num_threads')}" for p in threadpool_info()]
        parts.append("numpy BLAS: " + (", ".join(blas) or "n/a"))
    except ImportError:
        parts.append("numpy BLAS: threadpoolctl not installed")
    if torch is not None:
        parts.append(f"torch threads={torch.get_num_threads()} interop={torch.get_num_interop_threads()}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50, help="steps per timed run")
    args = ap.parse_args(argv)

    torch = _import_torch()
    sync = resolve_backend(args.backend).synchronize
    print(
        f"loom {loom.__version__} backend={args.backend}; numpy {np.__version__}; "
        f"torch {torch.__version__ if torch is not None else 'not installed'}"
    )
    print(f"threads: {thread_info(torch)}")
    print(f"best of {args.repeats} runs x {args.iters} steps, after warm-up\n")

    cases = [
        ("LSTM 32->64 seq16 b1 train step", loom_lstm, torch_lstm),
        ("Conv2D 1x28x28 8x3x3 + dense10 train step", loom_conv, torch_conv),
        ("MHA seq32 d64 h4 fwd+bwd", loom_mha, torch_mha),
    ]
    print(f"{'case':<44} {'loom µs':>10} {'torch µs':>10}  torch/loom")
    for name, make_loom, make_torch in cases:
        loom_us = best_us(make_loom(args.backend), args.iters, args.repeats, sync)
        if torch is None:
            print(f"{name:<44} {loom_us:10.1f} {'skipped':>10}  skipped")
            continue
        torch_us = best_us(make_torch(torch), args.iters, args.repeats, lambda: None)
        print(f"{name:<44} {loom_us:10.1f} {torch_us:10.1f}  {verdict(torch_us / loom_us, TORCH_TARGET)}")

    secs = demo_seconds(args.backend, args.repeats, sync)
    print()
    if secs is None:
        print(f"seed README demo: skipped (fixture not found: {fixture_path()})")
    else:
        print(
            f"seed README demo (800 epochs): loom {secs:.3f} s vs Go LOOM {GO_DEMO_SECONDS:.3f} s "
            f"-> go/loom {verdict(GO_DEMO_SECONDS / secs, GO_TARGET)}  [target: within 2x of Go]"
        )


if __name__ == "__main__":
    main()
