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
from loom.demo_data import GRID_SCATTER_BATCHES as batches
from loom.demo_data import GRID_SCATTER_CONFIG as config  # the LOOM README's values, verbatim


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
