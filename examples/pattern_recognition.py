"""LOOM README, "Test 2: Pattern Recognition Training" — the Pythonic port.

The network learns to tell patterns whose high values sit in the first half of the
input from patterns whose high values sit in the second half. Epochs, learning
rate and sample count are configurable, the loss is shown while training, and a
fresh validation set is classified afterwards. The network is the README's
"Creating Networks from JSON" one (10 inputs -> 8 -> 4 -> 2, sizes inferred).
``pattern_recognition_compat.py`` is the JSON-convention port.

    python examples/pattern_recognition.py [--epochs 50] [--learning-rate 0.05] [--samples 100]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import loom
from loom.demo_data import JSON_BLOCK_CONFIG as CONFIG  # the LOOM README's values, verbatim

CLASSES = ("high first half", "high second half")


def make_samples(count: int, rng: np.random.Generator) -> list[loom.TrainingBatch]:
    """``count`` patterns (classes alternate): one half in [0.6, 1.0], the other in [0.0, 0.4]."""
    samples = []
    for i in range(count):
        label = i % 2
        high, low = rng.uniform(0.6, 1.0, 5), rng.uniform(0.0, 0.4, 5)
        values = np.concatenate([high, low] if label == 0 else [low, high])
        samples.append(loom.TrainingBatch(values.round(3).tolist(), [1.0, 0.0] if label == 0 else [0.0, 1.0]))
    return samples


def main(argv: list[str] | None = None) -> dict:
    """Train and validate; returns the loss history and the validation accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 50)))
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train_set, validation = make_samples(args.samples, rng), make_samples(8, rng)
    network = loom.create_network_from_json(CONFIG, seed=args.seed)
    print(f"🧠 Pattern recognition: {args.samples} samples, {args.epochs} epochs, learning rate {args.learning_rate}")
    result = network.train(train_set, loom.TrainingConfig(epochs=args.epochs, learning_rate=args.learning_rate))
    for epoch in sorted({0, len(result.loss_history) // 2, len(result.loss_history) - 1}):
        print(f"Epoch {epoch + 1}/{args.epochs}: Loss = {result.loss_history[epoch]:.4f}")

    print("\nValidation:")
    outputs = loom.to_numpy(network.forward(np.asarray([s.input for s in validation], dtype=np.float32)))
    correct = 0
    for i, (sample, output) in enumerate(zip(validation, outputs, strict=True)):
        predicted, expected = int(np.argmax(output)), int(np.argmax(sample.target))
        correct += predicted == expected
        mark = "✓" if predicted == expected else "✗"
        print(f"Sample {i}: [{output[0]:.3f}, {output[1]:.3f}] → {CLASSES[predicted]} ({CLASSES[expected]}) {mark}")
    print(f"Validation accuracy: {correct}/{len(validation)}")
    assert result.loss_history[-1] < result.loss_history[0], "the loss must fall"
    return {"loss_history": result.loss_history, "correct": int(correct), "total": len(validation)}


if __name__ == "__main__":
    main()
