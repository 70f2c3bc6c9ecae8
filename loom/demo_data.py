"""The LOOM README's demo networks and data: used by ``loom demo``, the web lab's presets and the tests.

* :data:`GRID_SCATTER_CONFIG` / :data:`GRID_SCATTER_BATCHES` – the Grid Scatter multi-agent example;
* :data:`PATTERN_CONFIG` and :func:`pattern_samples` – the Pattern Recognition example;
* :data:`JSON_BLOCK_CONFIG` – the network of the README's "Creating Networks from JSON" block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "GRID_SCATTER_BATCHES",
    "GRID_SCATTER_CONFIG",
    "JSON_BLOCK_CONFIG",
    "PATTERN_CLASSES",
    "PATTERN_CONFIG",
    "pattern_samples",
]

#: The Grid Scatter network of the LOOM README, verbatim.
GRID_SCATTER_CONFIG: dict[str, Any] = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 3,
    "layers_per_cell": 1,
    "layers": [
        {"type": "dense", "input_size": 8, "output_size": 16, "activation": "relu"},
        {
            "type": "parallel",
            "combine_mode": "grid_scatter",
            "grid_output_rows": 3,
            "grid_output_cols": 1,
            "grid_output_layers": 1,
            "grid_positions": [
                {"branch_index": 0, "target_row": 0, "target_col": 0, "target_layer": 0},
                {"branch_index": 1, "target_row": 1, "target_col": 0, "target_layer": 0},
                {"branch_index": 2, "target_row": 2, "target_col": 0, "target_layer": 0},
            ],
            "branches": [
                {
                    "type": "parallel",
                    "combine_mode": "add",
                    "branches": [
                        {"type": "dense", "input_size": 16, "output_size": 8, "activation": "relu"},
                        {"type": "dense", "input_size": 16, "output_size": 8, "activation": "gelu"},
                    ],
                },
                {"type": "lstm", "input_size": 16, "hidden_size": 8, "seq_length": 1},
                {"type": "rnn", "input_size": 16, "hidden_size": 8, "seq_length": 1},
            ],
        },
        {"type": "dense", "input_size": 24, "output_size": 2, "activation": "sigmoid"},
    ],
}

#: The four training batches of the LOOM README's Grid Scatter example.
GRID_SCATTER_BATCHES: list[dict[str, list[float]]] = [
    {"Input": [0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8], "Target": [1.0, 0.0]},
    {"Input": [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1], "Target": [0.0, 1.0]},
    {"Input": [0.7, 0.7, 0.7, 0.7, 0.3, 0.3, 0.3, 0.3], "Target": [0.0, 1.0]},
    {"Input": [0.3, 0.3, 0.3, 0.3, 0.7, 0.7, 0.7, 0.7], "Target": [1.0, 0.0]},
]

#: The Pattern Recognition network: 8 inputs -> 16 -> 8 -> 2 (Dense layers).
PATTERN_CONFIG: dict[str, Any] = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 3,
    "input_size": 8,
    "layers": [
        {"type": "dense", "input_size": 8, "output_size": 16, "activation": "relu"},
        {"type": "dense", "input_size": 16, "output_size": 8, "activation": "relu"},
        {"type": "dense", "input_size": 8, "output_size": 2, "activation": "sigmoid"},
    ],
}

PATTERN_CLASSES = ("high first half", "high second half")

#: The LOOM README's "Creating Networks from JSON" network: 10 -> 8 -> 4 -> 2, Dense input sizes inferred.
JSON_BLOCK_CONFIG: dict[str, Any] = {
    "input_size": 10,
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 3,
    "layers": [
        {"type": "dense", "output_size": 8, "activation": "relu"},
        {"type": "dense", "output_size": 4, "activation": "relu"},
        {"type": "dense", "output_size": 2, "activation": "sigmoid"},
    ],
}


def pattern_samples(count: int, rng: np.random.Generator) -> tuple[list[list[float]], list[int]]:
    """Random 8-value patterns whose high values sit in the first (class 0) or second half (class 1).

    Parameters
    ----------
    count : int
        Number of samples (classes alternate, so they stay balanced).
    rng : numpy.random.Generator
        Source of randomness (seed it for a reproducible demo).

    Returns
    -------
    inputs : list of list of float
        ``count`` samples of 8 values in [0, 1]: one half in [0.6, 1.0], the other in [0.0, 0.4].
    labels : list of int
        0 when the first half is high, 1 when the second half is.
    """
    inputs: list[list[float]] = []
    labels: list[int] = []
    for i in range(count):
        label = i % 2
        high = rng.uniform(0.6, 1.0, size=4)
        low = rng.uniform(0.0, 0.4, size=4)
        halves = (high, low) if label == 0 else (low, high)
        inputs.append([round(float(v), 3) for v in np.concatenate(halves)])
        labels.append(label)
    return inputs, labels
