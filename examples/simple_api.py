"""LOOM README, "NEW: Simple API" — the Pythonic port.

The README's block builds the grid-scatter network from JSON, trains it 800 epochs,
runs a forward pass, evaluates it, saves it and loads it back with a bit-identical
output. Here the same steps use loom's Pythonic API (Python values in and out);
``simple_api_compat.py`` beside it is the line-by-line JSON-convention port.

    python examples/simple_api.py [--epochs 800] [--seed 42]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import loom
from loom.demo_data import GRID_SCATTER_BATCHES as BATCHES
from loom.demo_data import GRID_SCATTER_CONFIG as CONFIG  # the LOOM README's values, verbatim


def main(argv: list[str] | None = None) -> dict:
    """Run the block; returns what it printed as numbers (the test suite checks them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 800)))
    parser.add_argument("--seed", type=int, default=42, help="seed of the initial weights")
    args = parser.parse_args(argv)

    # Create network from JSON
    network = loom.create_network_from_json(CONFIG, seed=args.seed)

    # Training
    training_config = loom.TrainingConfig(
        epochs=args.epochs, learning_rate=0.15, use_gpu=False, print_every_batch=0, gradient_clip=1.0, loss_type="mse"
    )
    result = network.train(BATCHES, training_config)
    print("Training complete! Final loss:", result.final_loss)

    # Forward pass
    output = loom.to_numpy(network.forward([0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8]))
    print("Output:", output.tolist())  # README: [0.950, 0.050]

    # Evaluate network
    inputs = [b["Input"] for b in BATCHES]
    expected = [0, 1, 1, 0]
    metrics = network.evaluate_network(inputs, expected)
    print(f"Quality Score: {metrics.score}/100, Avg Deviation: {metrics.avg_deviation}%")

    # Save/Load
    model_json = network.save_model_to_string("my_model")
    print(f"Model saved ({len(model_json)} bytes)")

    # Load model
    loaded_network = loom.load_loom_network(model_json, "my_model")
    output2 = loom.to_numpy(loaded_network.forward([0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8]))
    identical = np.array_equal(output2, output)  # output2 === output (bit-for-bit identical!)
    print("Loaded output identical bit for bit:", identical)
    assert identical, "the reloaded network must give the same output bit for bit"
    assert result.loss_history[-1] < result.loss_history[0], "the loss must fall"
    return {
        "loss_history": result.loss_history,
        "final_loss": result.final_loss,
        "output": output.tolist(),
        "output2": output2.tolist(),
        "score": metrics.score,
        "avg_deviation": metrics.avg_deviation,
        "model_bytes": len(model_json),
    }


if __name__ == "__main__":
    main()
