"""LOOM README, "Save/Load Models" (both blocks) and "Model Loading (The Easy Way)" — ``loom.compat`` port.

The README's JavaScript, with a dict standing in for the browser's ``localStorage``:
``JSON.parse(network.SaveModelToString(JSON.stringify(["my_model"])))[0]`` is the
bundle text; ``createLoomNetwork(savedModel)`` and ``LoadModelFromString(json, id)``
load it; the loaded network's ``ForwardCPU`` output equals the original's bit for bit.

    python examples/save_load_compat.py
"""

from __future__ import annotations

import argparse
import json
import random

from loom.compat import LoadModelFromString, createLoomNetwork
from loom.demo_data import JSON_BLOCK_CONFIG as config  # the LOOM README's values, verbatim

local_storage: dict[str, str] = {}  # the browser's localStorage


def main(argv: list[str] | None = None) -> dict:
    """Save, load, compare, train the loaded model, save again; returns the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    network = createLoomNetwork(json.dumps(config), seed=args.seed)
    rng = random.Random(args.seed)
    input_data = [rng.random() for _ in range(10)]
    original = json.loads(network.ForwardCPU(json.dumps([input_data])))[0]

    # --- Save/Load Models (first block)
    # Save model to JSON string
    model_json = json.loads(network.SaveModelToString(json.dumps(["my_model"])))[0]
    # Store in localStorage
    local_storage["loom_model"] = model_json
    # Load model later
    saved_model = local_storage["loom_model"]
    loaded_network = createLoomNetwork(saved_model)
    # Use loaded network immediately
    output = json.loads(loaded_network.ForwardCPU(json.dumps([input_data])))[0]
    print("Loaded model output:", output, "identical:", output == original)

    # --- Save/Load Models (second block)
    model_json_text = network.SaveModelToString(json.dumps(["my_model"]))
    model = json.loads(json.loads(model_json_text)[0])
    print("Model size:", len(json.dumps(model)), "bytes")
    print("Layers:", len(model["models"][0]["cfg"]["layers"]))
    local_storage["loom_model"] = json.dumps(model)
    saved = json.loads(local_storage["loom_model"])
    loaded_again = LoadModelFromString(json.dumps(saved), "my_model")
    output2 = json.loads(loaded_again.ForwardCPU(json.dumps([input_data])))[0]
    print("Loaded model output:", output2)

    # --- Model Loading (The Easy Way)
    easy = LoadModelFromString(model_json, "my_model")
    easy_output = json.loads(easy.ForwardCPU(json.dumps([input_data])))[0]
    batches = [{"Input": input_data, "Target": [1.0, 0.0]}]
    train_config = {"Epochs": 10, "LearningRate": 0.01, "LossType": "mse"}
    [result] = json.loads(easy.Train(json.dumps([batches, train_config])))
    saved_json = json.loads(easy.SaveModelToString(json.dumps(["model_id"])))[0]
    print(f"Trained the loaded model: loss {result['LossHistory'][0]:.6f} -> {result['FinalLoss']:.6f}; saved again")

    identical = output == original and output2 == original and easy_output == original
    assert identical, "a saved and reloaded network gives the same output bit for bit"
    return {
        "identical": identical,
        "bytes": len(model_json),
        "layers": len(model["models"][0]["cfg"]["layers"]),
        "output": output,
        "original": original,
        "retrained_loss": result["LossHistory"],
        "resaved_id": json.loads(saved_json)["models"][0]["id"],
    }


if __name__ == "__main__":
    main()
