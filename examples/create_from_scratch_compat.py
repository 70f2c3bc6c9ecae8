"""LOOM README, "Creating Networks from Scratch" and the blocks that use it — the ``loom.compat`` port.

As the README writes it: ``NewNetwork(784, 1, 1, 2)``, ``CallLayerInit("InitDenseLayer",
JSON.stringify([784, 392, 0]))``, ``network.SetLayer(JSON.stringify([0, 0, 0,
JSON.parse(layer0Config)]))``, then ``ForwardCPU`` / ``BackwardCPU`` with JSON text,
``InitDenseLayer(784, 128, 0)`` and ``InitMultiHeadAttentionLayer(512, 8, 32, 256)``
returning JSON text. ``create_from_scratch.py`` is the Pythonic port.

    python examples/create_from_scratch_compat.py [--epochs 5] [--samples 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random

from loom.compat import CallLayerInit, InitDenseLayer, InitMultiHeadAttentionLayer, NewNetwork


def generate_training_data(count: int, rng: random.Random) -> list[dict]:
    """Random 784-value inputs whose block ``i % 10`` is bright, one-hot targets."""
    data = []
    for i in range(count):
        values = [rng.random() * 0.5 for _ in range(784)]
        for j in range((i % 10) * 78, (i % 10 + 1) * 78):
            values[j] += 0.5
        data.append({"input": values, "target": [1.0 if k == i % 10 else 0.0 for k in range(10)]})
    return data


def main(argv: list[str] | None = None) -> dict:
    """Build, run and train the network; returns what the README's "Demo Results" report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 5)))
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    # Create a network: 784 input → 392 hidden → 10 output
    network = NewNetwork(784, 1, 1, 2)

    # Use registry-based initialization for all layer types
    layer0_config = CallLayerInit("InitDenseLayer", json.dumps([784, 392, 0]))  # ReLU activation
    layer1_config = CallLayerInit("InitDenseLayer", json.dumps([392, 10, 1]))  # Sigmoid activation

    # Apply configurations to network
    network.SetLayer(json.dumps([0, 0, 0, json.loads(layer0_config)]))
    network.SetLayer(json.dumps([0, 0, 1, json.loads(layer1_config)]))
    weights = [len(json.loads(network.GetLayer(json.dumps([0, 0, i])))[0]["Kernel"]) for i in range(2)]
    print(f"Network: 784 → 392 → 10\nLayer 0: {weights[0]:,} weights initialized\nLayer 1: {weights[1]:,} weights")

    # Create input (784 values for MNIST-sized input)
    input_values = [rng.random() for _ in range(784)]
    # Run forward pass
    result_json = network.ForwardCPU(json.dumps([input_values]))
    result = json.loads(result_json)
    output = result[0]  # Output array (10 values)
    duration = result[1]  # Execution time (nanoseconds)
    print("Output:", [round(v, 4) for v in output])
    print("Time:", duration / 1e6, "ms")
    print("Mean:", sum(output) / len(output))

    # Manual training (forward passes only)
    for epoch in range(5):
        values = [rng.random() for _ in range(784)]
        out = json.loads(network.ForwardCPU(json.dumps([values])))[0]
        loss = sum(v * v for v in out) / len(out)  # MSE against zero
        print(f"Epoch {epoch + 1}: Loss = {loss:.6f}")

    # Training example: forward, loss, gradient, BackwardCPU, and the weight update (step 3)
    train_data = generate_training_data(args.samples, rng)
    epoch_losses = []
    for epoch in range(args.epochs):
        total_loss = 0.0
        for sample in train_data:
            out = json.loads(network.ForwardCPU(json.dumps([sample["input"]])))[0]
            target = sample["target"]
            total_loss += sum((v - target[i]) ** 2 for i, v in enumerate(out)) / len(out)
            grad_output = [2 * (v - target[i]) / len(out) for i, v in enumerate(out)]
            network.BackwardCPU(json.dumps([grad_output]))
            network.UpdateWeights(json.dumps([args.learning_rate]))
        epoch_losses.append(total_loss / len(train_data))
        print(f"Epoch {epoch + 1}: Loss = {epoch_losses[-1]}")

    # Create layer configurations
    dense_config = json.loads(InitDenseLayer(784, 128, 0))  # 0 = ScaledReLU
    # Create a multi-head attention layer
    mha_config = json.loads(InitMultiHeadAttentionLayer(512, 8, 32, 256))  # dModel, numHeads, batchSize, seqLength
    print(f"Dense helper: {dense_config['InputHeight']}→{dense_config['OutputHeight']}; MHA helper: d_model "
          f"{mha_config['DModel']}, {mha_config['NumHeads']} heads")  # fmt: skip

    assert weights == [307_328, 3_920], "Demo Results: 307,328 and 3,920 weights"
    assert len(output) == 10 and all(0.0 < v < 1.0 for v in output), "10 sigmoid outputs"
    assert len(epoch_losses) < 2 or epoch_losses[-1] < epoch_losses[0], "the loss must fall"
    return {
        "weights": weights,
        "output": output,
        "epoch_losses": epoch_losses,
        "dense_helper": (dense_config["InputHeight"], dense_config["OutputHeight"], dense_config["Activation"]),
        "mha_helper": (mha_config["DModel"], mha_config["NumHeads"], mha_config["HeadDim"], mha_config["SeqLength"]),
    }


if __name__ == "__main__":
    main()
