"""LOOM README, "NEW: Simple API" — the JSON-convention port (``loom.compat``).

The README's JavaScript block, line by line: ``JSON.stringify`` is ``json.dumps``,
``JSON.parse`` is ``json.loads``, and every network method takes the JSON text of
its argument list and returns the JSON text of its result list. (The README
destructures the returned text as if it were an array, ``const [output] = ...``;
the text is the JSON of the result list, so the port parses it first.)
``simple_api.py`` beside it is the Pythonic port; with the same seed both print
the same numbers.

    python examples/simple_api_compat.py [--epochs 800] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os

from loom.compat import createNetworkFromJSON, loadLoomNetwork

# Create network from JSON
config = {
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

batches = [
    {"Input": [0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8], "Target": [1.0, 0.0]},
    {"Input": [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1], "Target": [0.0, 1.0]},
    {"Input": [0.7, 0.7, 0.7, 0.7, 0.3, 0.3, 0.3, 0.3], "Target": [0.0, 1.0]},
    {"Input": [0.3, 0.3, 0.3, 0.3, 0.7, 0.7, 0.7, 0.7], "Target": [1.0, 0.0]},
]


def main(argv: list[str] | None = None) -> dict:
    """Run the block; returns what it printed as numbers (the test suite checks them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 800)))
    parser.add_argument("--seed", type=int, default=42, help="seed of the initial weights")
    args = parser.parse_args(argv)

    network = createNetworkFromJSON(json.dumps(config), seed=args.seed)

    # Training
    training_config = {
        "Epochs": args.epochs,
        "LearningRate": 0.15,
        "UseGPU": False,
        "PrintEveryBatch": 0,
        "GradientClip": 1.0,
        "LossType": "mse",
        "Verbose": False,
    }

    [result] = json.loads(network.Train(json.dumps([batches, training_config])))
    print("Training complete! Final loss:", result["FinalLoss"])

    # Forward pass
    output, duration_ns = json.loads(network.ForwardCPU(json.dumps([[0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8]])))
    print("Output:", output)  # README: [0.950, 0.050]

    # Evaluate network
    inputs = [b["Input"] for b in batches]
    expected = [0, 1, 1, 0]
    [metrics_data] = json.loads(network.EvaluateNetwork(json.dumps([inputs, expected])))
    print(f"Quality Score: {metrics_data['score']}/100, Avg Deviation: {metrics_data['avg_deviation']}%")

    # Save/Load
    [model_json] = json.loads(network.SaveModelToString(json.dumps(["my_model"])))
    print(f"Model saved ({len(model_json)} bytes)")

    # Load model
    loaded_network = loadLoomNetwork(model_json, "my_model")
    output2, _ = json.loads(loaded_network.ForwardCPU(json.dumps([[0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8]])))
    print("Loaded output identical bit for bit:", output2 == output)  # output2 === output
    assert output2 == output, "the reloaded network must give the same output bit for bit"
    assert result["LossHistory"][-1] < result["LossHistory"][0], "the loss must fall"
    return {
        "loss_history": result["LossHistory"],
        "final_loss": result["FinalLoss"],
        "output": output,
        "output2": output2,
        "duration_ns": duration_ns,
        "score": metrics_data["score"],
        "avg_deviation": metrics_data["avg_deviation"],
        "model_bytes": len(model_json),
    }


if __name__ == "__main__":
    main()
