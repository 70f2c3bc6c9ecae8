"""LOOM README, "Save/Load Models" and "Model Loading (The Easy Way)" — the Pythonic port.

Save a network as a LOOM bundle (JSON text: ``"type": "modelhost/bundle"``), store
it (the README uses the browser's ``localStorage``; here a file, written
atomically), load it back and check that the loaded network's output is the
original's **bit for bit**; then keep training the loaded model and save it
again. ``save_load_compat.py`` is the JSON-convention port.

    python examples/save_load.py [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import loom
from loom.demo_data import JSON_BLOCK_CONFIG as CONFIG  # the LOOM README's values, verbatim


def main(argv: list[str] | None = None) -> dict:
    """Save, load, compare, train the loaded model, save again; returns the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="where to write the model (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    network = loom.create_network_from_json(CONFIG, seed=args.seed)
    test_input = np.random.default_rng(args.seed).random(10)

    # Save model to JSON string
    model_json = network.save_model_to_string("my_model")
    model = json.loads(model_json)
    print("Model size:", len(model_json), "bytes")
    print("Layers:", len(model["models"][0]["cfg"]["layers"]))

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        path = folder / "loom_model.json"
        network.save_model(path, "my_model")  # the README's localStorage.setItem
        loaded_network = loom.load_model(path, "my_model")  # localStorage.getItem + LoadModelFromString

    # Use loaded network immediately
    output = loom.to_numpy(loaded_network.forward(test_input))
    original = loom.to_numpy(network.forward(test_input))
    identical = bool(np.array_equal(output, original))
    print("Loaded model output:", output.tolist(), "identical bit for bit:", identical)

    # Model Loading (The Easy Way): load from the string, use it, train it, save it
    easy = loom.load_model_from_string(model_json, "my_model")
    config = {"Epochs": 10, "LearningRate": 0.01, "LossType": "mse"}
    result = easy.train([loom.TrainingBatch(test_input, [1.0, 0.0])], config)
    saved_json = easy.save_model_to_string("model_id")
    print(f"Trained the loaded model: loss {result.loss_history[0]:.6f} -> {result.final_loss:.6f}; saved again")

    assert identical, "a saved and reloaded network gives the same output bit for bit"
    return {
        "identical": identical,
        "bytes": len(model_json),
        "layers": len(model["models"][0]["cfg"]["layers"]),
        "output": output.tolist(),
        "original": original.tolist(),
        "retrained_loss": result.loss_history,
        "resaved_id": json.loads(saved_json)["models"][0]["id"],
    }


if __name__ == "__main__":
    main()
