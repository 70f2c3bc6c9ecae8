"""What LOOM's JSON calling convention (``loom.compat``) costs over the native API, in one process.

Peers, measured in the same run on the same network and inputs:

* ``net.forward(x)`` (Pythonic), ``net.ForwardCPU(x)`` (LOOM name, Python values) and
  ``jnet.ForwardCPU(json.dumps([x]))`` + ``json.loads`` (``loom.compat``, as ported JS code calls it)
  — on the LOOM README's grid-scatter network (8 inputs) and on the 784 -> 392 -> 10 network;
* ``net.train`` vs ``jnet.Train(json.dumps([batches, config]))`` for 800 epochs of the README demo.

Each measurement is repeated and the best is kept (the machine is shared); ratios are to the
Pythonic call.

    python bench/bench_compat.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

import loom
from loom import compat
from loom.cli import GRID_SCATTER_BATCHES, GRID_SCATTER_CONFIG

TRAINING = {"Epochs": 800, "LearningRate": 0.15, "GradientClip": 1.0, "LossType": "mse"}


def best_time(fn: Callable[[], object], number: int, repeats: int) -> float:
    """Best seconds per call over ``repeats`` runs of ``number`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def forward_peers(name: str, net: loom.Network, x: list[float], repeats: int) -> None:
    jnet = compat.wrap(net)

    def via_json() -> object:
        return json.loads(jnet.ForwardCPU(json.dumps([x])))

    assert via_json()[0] == net.ForwardCPU(x)[0]
    number = 2000 if len(x) < 100 else 200
    pythonic = best_time(lambda: net.forward(x), number, repeats)
    native = best_time(lambda: net.ForwardCPU(x), number, repeats)
    compat_t = best_time(via_json, number, repeats)
    text = jnet.ForwardCPU(json.dumps([x]))
    caller = best_time(lambda: json.loads(text) and json.dumps([x]), number, repeats)  # the caller's own JSON work
    print(
        f"{name:<28} forward {pythonic * 1e6:8.1f} µs | ForwardCPU {native * 1e6:8.1f} µs "
        f"({native / pythonic:4.2f}x) | compat ForwardCPU {compat_t * 1e6:8.1f} µs ({compat_t / pythonic:4.2f}x; "
        f"{caller * 1e6:.1f} µs of it is the caller's json.dumps + json.loads)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    demo = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=0)
    forward_peers("README grid scatter (8 in)", demo, [0.2] * 4 + [0.8] * 4, args.repeats)
    mnist = loom.new_network(784, 1, 1, 2)
    mnist.set_layer(0, 0, 0, loom.init_dense_layer(784, 392, 0, seed=0))
    mnist.set_layer(0, 0, 1, loom.init_dense_layer(392, 10, 1, seed=1))
    forward_peers("784 -> 392 -> 10", mnist, rng.random(784).tolist(), args.repeats)

    def native_train() -> None:
        loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=0).train(GRID_SCATTER_BATCHES, TRAINING)

    def compat_train() -> None:
        jnet = compat.createNetworkFromJSON(json.dumps(GRID_SCATTER_CONFIG), seed=0)
        json.loads(jnet.Train(json.dumps([GRID_SCATTER_BATCHES, TRAINING])))

    native = best_time(native_train, 1, args.repeats)
    via_json = best_time(compat_train, 1, args.repeats)
    print(
        f"{'train 800 epochs (README)':<28} train {native:8.3f} s | "
        f"compat Train {via_json:8.3f} s ({via_json / native:4.2f}x)"
    )


if __name__ == "__main__":
    main()
