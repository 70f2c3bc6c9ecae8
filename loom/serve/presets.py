"""The lab's presets: the networks of the LOOM README, each with training data and settings.

* ``grid-scatter`` – the README's Grid Scatter multi-agent network and its four samples
  (``test.html`` Test 1; the lab opens with it);
* ``pattern`` – Pattern Recognition (``test.html`` Test 2): high values in the first or the
  second half of 8 inputs;
* ``dense-10`` – the 10 → 8 → 4 → 2 Dense network of "Creating Networks from JSON",
  learning rising from falling ramps;
* ``mnist-sized`` – the 784 → 392 → 10 network of "Creating Networks from Scratch" on ten
  synthetic 28×28 images (class k: a bright band at height k).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from loom.demo_data import (
    GRID_SCATTER_BATCHES,
    GRID_SCATTER_CONFIG,
    JSON_BLOCK_CONFIG,
    PATTERN_CONFIG,
    pattern_samples,
)

__all__ = ["DEFAULT_PRESET", "PRESETS", "preset_payload"]

DEFAULT_PRESET = "grid-scatter"


def _one_hot(k: int, n: int) -> list[float]:
    return [1.0 if i == k else 0.0 for i in range(n)]


def _pattern_batches() -> list[dict[str, list[float]]]:
    inputs, labels = pattern_samples(16, np.random.default_rng(42))
    return [{"Input": x, "Target": _one_hot(y, 2)} for x, y in zip(inputs, labels, strict=True)]


def _ramp_batches() -> list[dict[str, list[float]]]:
    rng = np.random.default_rng(7)
    batches = []
    for i in range(8):
        rising = i % 2 == 0
        base = np.linspace(0.1, 1.0, 10) if rising else np.linspace(1.0, 0.1, 10)
        x = np.clip(base + rng.normal(0.0, 0.05, 10), 0.0, 1.0).round(2)
        batches.append({"Input": [float(v) for v in x], "Target": _one_hot(0 if rising else 1, 2)})
    return batches


def _band_batches() -> list[dict[str, list[float]]]:
    batches = []
    for k in range(10):
        image = np.zeros((28, 28), dtype=np.int64)
        top = int(k * 2.8)
        image[top : top + 3, 4:24] = 1
        batches.append({"Input": [int(v) for v in image.reshape(-1)], "Target": _one_hot(k, 10)})
    return batches


MNIST_SIZED_CONFIG: dict[str, Any] = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 2,
    "input_size": 784,
    "layers": [
        {"type": "dense", "input_size": 784, "output_size": 392, "activation": "relu"},
        {"type": "dense", "input_size": 392, "output_size": 10, "activation": "sigmoid"},
    ],
}

#: name -> title, network config, training data, training settings.
PRESETS: dict[str, dict[str, Any]] = {
    "grid-scatter": {
        "title": "Grid Scatter multi-agent (README)",
        "config": GRID_SCATTER_CONFIG,
        "data": GRID_SCATTER_BATCHES,
        "training": {"epochs": 800, "learning_rate": 0.15, "loss": "mse", "optimizer": "sgd", "gradient_clip": 1.0},
    },
    "pattern": {
        "title": "Pattern recognition 8 → 16 → 8 → 2",
        "config": PATTERN_CONFIG,
        "data": _pattern_batches(),
        "training": {"epochs": 100, "learning_rate": 0.05, "loss": "mse", "optimizer": "sgd", "gradient_clip": 0.0},
    },
    "dense-10": {
        "title": "Dense 10 → 8 → 4 → 2 (JSON example)",
        "config": JSON_BLOCK_CONFIG,
        "data": _ramp_batches(),
        "training": {"epochs": 300, "learning_rate": 0.1, "loss": "mse", "optimizer": "sgd", "gradient_clip": 1.0},
    },
    "mnist-sized": {
        "title": "784 → 392 → 10 (from-scratch example)",
        "config": MNIST_SIZED_CONFIG,
        "data": _band_batches(),
        "training": {"epochs": 300, "learning_rate": 0.1, "loss": "mse", "optimizer": "sgd", "gradient_clip": 1.0},
    },
}


def _data_text(batches: list[dict[str, list[float]]]) -> str:
    """One sample per line, so the data editor stays readable."""
    lines = [json.dumps(b, separators=(", ", ": ")) for b in batches]
    return "[\n  " + ",\n  ".join(lines) + "\n]"


def preset_payload() -> dict[str, Any]:
    """Every preset as the page needs it: config and data as editor text, training settings."""
    return {
        "default": DEFAULT_PRESET,
        "presets": [
            {
                "name": name,
                "title": p["title"],
                "config": json.dumps(p["config"], indent=2),
                "data": _data_text(p["data"]),
                "training": p["training"],
            }
            for name, p in PRESETS.items()
        ],
    }
