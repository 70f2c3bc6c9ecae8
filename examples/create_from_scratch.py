"""LOOM README, "Creating Networks from Scratch" and the blocks that use it — the Pythonic port.

A 784 -> 392 -> 10 network from an empty grid and the layer-init registry
("Creating Networks from Scratch"), a forward pass on 784 random values
("Forward Pass"), the forward-only "Training Loop", the forward / backward
"Training Example" (with the weight update the README leaves as step 3), the
"Helper Functions" and the "Demo Results" checks (307,328 and 3,920 weights, 10
outputs in (0, 1)). ``create_from_scratch_compat.py`` is the JSON-convention port.

    python examples/create_from_scratch.py [--epochs 5] [--samples 64]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import loom


def training_data(count: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``generateTrainingData()``: random 784-value inputs whose block ``i % 10`` is bright, one-hot targets."""
    data = []
    for i in range(count):
        x = rng.random(784, dtype=np.float32) * 0.5
        x[(i % 10) * 78 : (i % 10 + 1) * 78] += 0.5
        data.append((x, np.eye(10, dtype=np.float32)[i % 10]))
    return data


def main(argv: list[str] | None = None) -> dict:
    """Build, run and train the network; returns what the README's "Demo Results" report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 5)))
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    # Create a network: 784 input → 392 hidden → 10 output
    network = loom.new_network(784, 1, 1, 2)
    # Use registry-based initialization for all layer types
    layer0 = loom.call_layer_init("InitDenseLayer", 784, 392, loom.Activation.SCALED_RELU)  # ReLU (0)
    layer1 = loom.call_layer_init("InitDenseLayer", 392, 10, loom.Activation.SIGMOID)  # Sigmoid (1)
    network.set_layer(0, 0, 0, layer0)
    network.set_layer(0, 0, 1, layer1)
    weights = [layer.params["kernel"].size for layer in network.layers]
    print(f"Network: 784 → 392 → 10\nLayer 0: {weights[0]:,} weights initialized\nLayer 1: {weights[1]:,} weights")

    # Forward pass on 784 random values
    input_values = rng.random(784)
    output, duration_ns = network.ForwardCPU(input_values)
    print(f"Output: {np.round(output, 4).tolist()}\nTime: {duration_ns / 1e6:.3f} ms")
    print(f"Range: [{min(output):.4f}, {max(output):.4f}]\nMean: {np.mean(output):.4f}")

    # Training loop (forward passes only): MSE against zero
    for epoch in range(5):
        y = loom.to_numpy(network.forward(rng.random(784)))
        print(f"Epoch {epoch + 1}: Loss = {float(np.mean(y * y)):.6f}")

    # Training example: forward, loss, gradient, backward, update
    data = training_data(args.samples, rng)
    epoch_losses = []
    for epoch in range(args.epochs):
        total = 0.0
        for x, target in data:
            y = loom.to_numpy(network.forward(x))
            total += float(np.mean((y - target) ** 2))
            network.backward(2 * (y - target) / y.size)
            network.update_weights(args.learning_rate)
        epoch_losses.append(total / len(data))
        print(f"Epoch {epoch + 1}: Loss = {epoch_losses[-1]:.6f}")

    # Helper functions
    dense = loom.init_dense_layer(784, 128, 0)  # 0 = ScaledReLU
    mha = loom.InitMultiHeadAttentionLayer(512, 8, 32, 256)  # dModel, numHeads, batchSize, seqLength
    print(f"Dense helper: {dense.input_size}→{dense.output_size}; MHA: d_model {mha.d_model}, {mha.num_heads} heads")

    assert weights == [307_328, 3_920], "Demo Results: 307,328 and 3,920 weights"
    assert len(output) == 10 and all(0.0 < v < 1.0 for v in output), "10 sigmoid outputs"
    assert len(epoch_losses) < 2 or epoch_losses[-1] < epoch_losses[0], "the loss must fall"
    return {
        "weights": weights,
        "output": output,
        "epoch_losses": epoch_losses,
        "dense_helper": (dense.input_size, dense.output_size, int(dense.activation)),
        "mha_helper": (mha.d_model, mha.num_heads, mha.head_dim, mha.seq_length),
    }


if __name__ == "__main__":
    main()
