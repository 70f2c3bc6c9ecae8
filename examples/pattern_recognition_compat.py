"""LOOM README, "Test 2: Pattern Recognition Training" — the JSON-convention port (``loom.compat``).

Same task and data as ``pattern_recognition.py``, written the way the browser demo
calls LOOM: the network from ``JSON.stringify(config)``, ``Train`` with
``JSON.stringify([batches, config])``, a ``ForwardCPU`` per validation sample.

    python examples/pattern_recognition_compat.py [--epochs 50] [--learning-rate 0.05] [--samples 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random

from loom.compat import createNetworkFromJSON
from loom.demo_data import JSON_BLOCK_CONFIG as config  # the LOOM README's values, verbatim

classes = ["high first half", "high second half"]


def make_samples(count: int, rng: random.Random) -> list[dict]:
    """``{"Input", "Target"}`` batches: one half of the 10 values in [0.6, 1.0], the other in [0.0, 0.4]."""
    batches = []
    for i in range(count):
        label = i % 2
        high = [round(rng.uniform(0.6, 1.0), 3) for _ in range(5)]
        low = [round(rng.uniform(0.0, 0.4), 3) for _ in range(5)]
        batches.append({"Input": high + low if label == 0 else low + high, "Target": [1.0 - label, float(label)]})
    return batches


def main(argv: list[str] | None = None) -> dict:
    """Train and validate; returns the loss history and the validation accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 50)))
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    batches, validation = make_samples(args.samples, rng), make_samples(8, rng)
    network = createNetworkFromJSON(json.dumps(config), seed=args.seed)
    training_config = {"Epochs": args.epochs, "LearningRate": args.learning_rate, "LossType": "mse"}
    result = json.loads(network.Train(json.dumps([batches, training_config])))[0]
    history = result["LossHistory"]
    for epoch in sorted({0, len(history) // 2, len(history) - 1}):
        print(f"Epoch {epoch + 1}/{args.epochs}: Loss = {history[epoch]:.4f}")

    print("\nValidation:")
    correct = 0
    for i, sample in enumerate(validation):
        output = json.loads(network.ForwardCPU(json.dumps([sample["Input"]])))[0]
        predicted = 0 if output[0] > output[1] else 1
        expected = 0 if sample["Target"][0] > sample["Target"][1] else 1
        correct += predicted == expected
        mark = "✓" if predicted == expected else "✗"
        print(f"Sample {i}: [{output[0]:.3f}, {output[1]:.3f}] → {classes[predicted]} ({classes[expected]}) {mark}")
    print(f"Validation accuracy: {correct}/{len(validation)}")
    assert history[-1] < history[0], "the loss must fall"
    return {"loss_history": history, "correct": int(correct), "total": len(validation)}


if __name__ == "__main__":
    main()
