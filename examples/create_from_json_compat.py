"""LOOM README, "Creating Networks from JSON", "Training Networks" and "Forward Pass" — ``loom.compat`` port.

The README's JavaScript as written (``JSON.stringify`` -> ``json.dumps``,
``JSON.parse`` -> ``json.loads``): ``createLoomNetwork(JSON.stringify(config))``,
``JSON.parse(network.Train(JSON.stringify([batches, config])))`` read as
``result[0].LossHistory``, ``JSON.parse(network.ForwardCPU(JSON.stringify([input])))``
read as ``[output, duration]``.

    python examples/create_from_json_compat.py [--epochs 100]
"""

from __future__ import annotations

import argparse
import json
import os

from loom.compat import createLoomNetwork
from loom.demo_data import JSON_BLOCK_CONFIG as config  # the LOOM README's values, verbatim


def main(argv: list[str] | None = None) -> dict:
    """Create, train, run; returns the layer sizes, the losses and the output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 100)))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    # Create network (returns object with ALL methods)
    network = createLoomNetwork(json.dumps(config), seed=args.seed)
    layers = [json.loads(network.GetLayer(json.dumps([0, 0, i])))[0] for i in range(3)]
    sizes = [(layer["InputHeight"], layer["OutputHeight"]) for layer in layers]
    print("Layer sizes:", sizes)

    # Prepare training data
    batches = [
        {"Input": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "Target": [1.0, 0.0]},
        {"Input": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], "Target": [0.0, 1.0]},  # ... more samples
    ]
    # Training configuration
    train_config = {
        "Epochs": args.epochs,
        "LearningRate": 0.01,
        "UseGPU": False,
        "PrintEveryBatch": 0,
        "GradientClip": 1.0,
        "LossType": "mse",
        "Verbose": False,
    }
    # Train the network
    result = json.loads(network.Train(json.dumps([batches, train_config])))
    print("Initial Loss:", result[0]["LossHistory"][0])
    print("Final Loss:", result[0]["FinalLoss"])
    improvement = (result[0]["LossHistory"][0] - result[0]["FinalLoss"]) / result[0]["LossHistory"][0] * 100
    print(f"Improvement: {improvement:.2f}%")

    # Run inference
    input_values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    forward = json.loads(network.ForwardCPU(json.dumps([input_values])))
    output = forward[0]  # Output array
    duration = forward[1]  # Execution time (nanoseconds)
    print("Predictions:", output, f"({duration / 1e6:.3f} ms)")
    assert result[0]["FinalLoss"] < result[0]["LossHistory"][0], "the loss must fall"
    return {"sizes": sizes, "loss_history": result[0]["LossHistory"], "output": output, "duration_ns": duration}


if __name__ == "__main__":
    main()
