"""LOOM README, "Test 1: Grid Scatter" — port of ``grid_scatter_demo.js`` to ``loom.compat``.

Same steps as the browser demo: ``createLoomNetwork(JSON.stringify(agentConfig))``,
``Train`` with ``JSON.stringify([batches, config])``, ``ForwardCPU`` per sample,
``EvaluateNetwork`` with ``[inputs, expectedOutputs]``, and the same checks on the
returned text (an error string instead of JSON means the call failed).
``grid_scatter.py`` is the Pythonic port.

    python examples/grid_scatter_compat.py [--epochs 800] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from loom.compat import ErrorText, createLoomNetwork
from loom.demo_data import GRID_SCATTER_BATCHES as batches
from loom.demo_data import GRID_SCATTER_CONFIG as agent_config  # the LOOM README's values, verbatim

bucket_order = ["0-10%", "10-20%", "20-30%", "30-40%", "40-50%", "50-100%", "100%+"]


def main(argv: list[str] | None = None) -> dict:
    """Run the demo; returns the numbers it printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("LOOM_EXAMPLE_EPOCHS", 800)))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    print("🤖 Running Grid Scatter Multi-Agent Training...")
    agent_network = createLoomNetwork(json.dumps(agent_config), seed=args.seed)
    if isinstance(agent_network, str):
        raise SystemExit("❌ Error creating network: " + agent_network)
    print("✅ Agent network created!")

    config = {
        "Epochs": args.epochs,
        "LearningRate": 0.15,
        "UseGPU": False,
        "PrintEveryBatch": 0,
        "GradientClip": 1.0,
        "LossType": "mse",
        "Verbose": False,
    }
    print(f"\nTraining for {config['Epochs']} epochs with learning rate {config['LearningRate']:.3f}")
    start_time = time.perf_counter()
    train_result = agent_network.Train(json.dumps([batches, config]))
    end_time = time.perf_counter()
    if isinstance(train_result, ErrorText):
        raise SystemExit("❌ Training failed: " + train_result)
    result = json.loads(train_result)
    training_data = result[0]

    print("\n✅ Training complete!")
    print(f"Training time: {end_time - start_time:.2f} seconds")
    print(f"Initial Loss: {training_data['LossHistory'][0]:.6f}")
    print(f"Final Loss: {training_data['FinalLoss']:.6f}")
    improvement = (training_data["LossHistory"][0] - training_data["FinalLoss"]) / training_data["LossHistory"][0] * 100
    print(f"Improvement: {improvement:.2f}%")
    print(f"Total Epochs: {len(training_data['LossHistory'])}")

    print("\nFinal predictions:")
    correct = 0
    predictions = []
    for i in range(4):
        test_result = agent_network.ForwardCPU(json.dumps([batches[i]["Input"]]))
        test_parsed = json.loads(test_result)
        pred = test_parsed[0]
        predictions.append(pred)
        pred_class = 0 if pred[0] > pred[1] else 1
        expected_class = 0 if batches[i]["Target"][0] > batches[i]["Target"][1] else 1
        is_correct = pred_class == expected_class
        correct += is_correct
        mark = "✓" if is_correct else "✗"
        print(f"Sample {i}: [{pred[0]:.3f}, {pred[1]:.3f}] → Class {pred_class} (expected {expected_class}) {mark}")

    print("\n📊 Evaluating with EvaluateNetwork...")
    inputs = [b["Input"] for b in batches]
    expected_outputs = [0.0 if b["Target"][0] > b["Target"][1] else 1.0 for b in batches]
    eval_result = agent_network.EvaluateNetwork(json.dumps([inputs, expected_outputs]))
    if isinstance(eval_result, ErrorText):
        raise SystemExit("EvaluateNetwork error: " + eval_result)
    parsed = json.loads(eval_result)
    metrics = parsed[0]
    print("\n=== Evaluation Metrics ===")
    print(f"Total Samples: {metrics['total_samples']}")
    print(f"Quality Score: {metrics['score']:.2f}/100")
    print(f"Average Deviation: {metrics['avg_deviation']:.2f}%")
    print(f"Failures (>100% deviation): {metrics['failures']}")
    print("\nDeviation Distribution:")
    for bucket_name in bucket_order:
        bucket = metrics["buckets"].get(bucket_name)
        if bucket and bucket["count"] > 0:
            percentage = bucket["count"] / metrics["total_samples"] * 100
            bar = "█" * int(bucket["count"] / metrics["total_samples"] * 20)
            print(f"  {bucket_name:<8}: {bucket['count']} samples ({percentage:.1f}%) {bar}")

    assert training_data["FinalLoss"] < training_data["LossHistory"][0], "the loss must fall"
    print(f"\n✅ Multi-agent training complete! {correct}/4 correct")
    return {
        "initial_loss": training_data["LossHistory"][0],
        "final_loss": training_data["FinalLoss"],
        "improvement": improvement,
        "correct": int(correct),
        "score": metrics["score"],
        "predictions": predictions,
        "total_epochs": len(training_data["LossHistory"]),
    }


if __name__ == "__main__":
    main()
