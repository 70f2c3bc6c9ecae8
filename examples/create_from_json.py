"""LOOM README, "Creating Networks from JSON", "Training Networks" and "Forward Pass" — Pythonic port.

The README's config gives only ``output_size`` per Dense layer and a top-level
``input_size``: loom infers every input size (10 -> 8 -> 4 -> 2). Go LOOM does
not infer sizes and panics on this config (docs/differences-from-go.md#fixed-on-purpose); loom does what
the README promises. ``create_from_json_compat.py`` is the JSON-convention port.

    python examples/create_from_json.py [--epochs 100]
"""

from __future__ import annotations

import argparse
import os

import loom
from loom.demo_data import JSON_BLOCK_CONFIG as CONFIG  # the LOOM README's values, verbatim


def main(argv: list[str] | None = None) -> dict:
    """Create, train, run; returns the inferred sizes, the losses and the output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 100)))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    # Create network (sizes inferred from input_size and each output_size)
    network = loom.create_network_from_json(CONFIG, seed=args.seed)
    sizes = [(layer.input_size, layer.output_size) for layer in network.layers]
    print("Layer sizes:", sizes)

    # Prepare training data
    batches = [
        loom.TrainingBatch([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [1.0, 0.0]),
        loom.TrainingBatch([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], [0.0, 1.0]),  # ... more samples
    ]
    # Training configuration
    config = loom.TrainingConfig(epochs=args.epochs, learning_rate=0.01, gradient_clip=1.0, loss_type="mse")
    # Train the network
    result = network.train(batches, config)
    print("Initial Loss:", result.loss_history[0])
    print("Final Loss:", result.final_loss)
    improvement = (result.loss_history[0] - result.final_loss) / result.loss_history[0] * 100
    print(f"Improvement: {improvement:.2f}%")

    # Forward pass: the LOOM name gives (output list, duration in ns)
    input_values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    output, duration_ns = network.ForwardCPU(input_values)
    print("Predictions:", output, f"({duration_ns / 1e6:.3f} ms)")
    assert result.final_loss < result.loss_history[0], "the loss must fall"
    return {"sizes": sizes, "loss_history": result.loss_history, "output": output, "duration_ns": duration_ns}


if __name__ == "__main__":
    main()
