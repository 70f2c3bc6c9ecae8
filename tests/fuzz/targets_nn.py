"""Fuzz targets of ``loom.nn``: network configs, bundles, training inputs, forward inputs.

Corpus-based targets mutate the Go LOOM fixtures (their ``network_config`` and saved
``model_before`` bundles); hypothesis-based targets build layer stacks and hostile data.
"""

from __future__ import annotations

import base64
import json
import random
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import loom
from loom.errors import ConfigError, ModelFormatError, ShapeError, TrainingDivergedError
from loom.nn.builder import LAYER_KEYS, TOP_LEVEL_KEYS
from tests.conftest import shared_root
from tests.fuzz import strategies
from tests.fuzz.harness import Expect, Outcome, Target
from tests.fuzz.mutate import dumps_lenient, free_of_extremes, mutate_json, mutate_text

FIXTURE_DIR = shared_root() / "fixtures" / "loom-go"
_WEIGHT_KEYS = (
    "kernel",
    "biases",
    "conv_bias",
    "weight_ih",
    "weight_hh",
    "gamma",
    "beta",
    "branch_weights",
    "q_weights",
    "output_bias",
    "weight_ii",
    "bias_i",
    "gate_weights",
    "down_bias",
)


@cache
def go_fixtures() -> list[dict[str, Any]]:
    """The Go fixtures (deterministic ones), loaded once before the workers fork."""
    out = []
    for path in sorted(Path(FIXTURE_DIR).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != "loom-go-fixture/1":
            continue
        x = data["forward"]["inputs"][0]
        bundle = json.loads(data["model_before"])
        weights = json.loads(base64.b64decode(bundle["models"][0]["weights"]["data"]))
        out.append(
            {
                "name": data["name"],
                "config": data["network_config"],
                "x": x,
                "bundle": bundle,
                "weights": weights,
                "model_id": data["model_id"],
            }
        )
    return out


def _forward_outcome(net: loom.Network, x: Any, moderate: bool) -> Outcome:
    y = net.forward(x)
    grad = net.backward(np.ones(y.shape, np.float32))
    return Outcome([y, grad], moderate and free_of_extremes(np.asarray(x, dtype=np.float64)))


# ------------------------------------------------------------------ network configs
def config_cases(seed: int, count: int):
    rng = random.Random(seed)
    fixtures = go_fixtures()
    for _ in range(count):
        fix = rng.choice(fixtures)
        config = mutate_json(fix["config"], rng, keys=LAYER_KEYS + TOP_LEVEL_KEYS)
        yield ("dict" if rng.random() < 0.6 else "text", config, fix["x"])


def run_config(payload: Any) -> Outcome:
    form, config, x = payload
    net = loom.create_network_from_json(config if form == "dict" else dumps_lenient(config), seed=1)
    return _forward_outcome(net, x, free_of_extremes(config))


def config_text_cases(seed: int, count: int):
    rng = random.Random(seed)
    fixtures = go_fixtures()
    for _ in range(count):
        fix = rng.choice(fixtures)
        yield mutate_text(json.dumps(fix["config"]), rng), fix["x"]


def run_config_text(payload: Any) -> Outcome:
    text, x = payload
    net = loom.create_network_from_json(text, seed=1)
    return _forward_outcome(net, x, free_of_extremes(json.loads(text)))


def stack_cases(seed: int, count: int):
    return iter(strategies.draw_examples(strategies.layer_stacks(), seed, count))


def run_stack(case: dict[str, Any]) -> Outcome:
    net = loom.create_network_from_json(case["config"], seed=case["x_seed"])
    rng = np.random.default_rng(case["x_seed"])
    x = rng.uniform(-2, 2, (case["batch"], case["in"])).astype(np.float32)
    outcome = _forward_outcome(net, x, free_of_extremes(case["config"]))
    y = outcome.arrays[0]
    target = rng.uniform(0, 1, y.shape).astype(np.float32)
    result = net.train([(x, target)], {"epochs": 2, "learning_rate": 0.01, "gradient_clip": 1.0})
    outcome.arrays += [np.asarray(result.loss_history), net.forward(x)]
    return outcome


CONFIG_EXPECT = Expect(
    (ConfigError, ShapeError, TrainingDivergedError), r"(config|layers\[\d+\]|input|training diverged)"
)


# ------------------------------------------------------------------ bundles
def bundle_cases(seed: int, count: int):
    rng = random.Random(seed)
    fixtures = go_fixtures()
    for _ in range(count):
        fix = rng.choice(fixtures)
        bundle, weights, how = json.loads(json.dumps(fix["bundle"])), fix["weights"], rng.random()
        if how < 0.3:
            bundle["models"][0]["cfg"] = mutate_json(bundle["models"][0]["cfg"], rng, keys=LAYER_KEYS)
        elif how < 0.7:
            weights = mutate_json(weights, rng, keys=_WEIGHT_KEYS)
        elif how < 0.8:
            bundle = mutate_json(bundle, rng, keys=("type", "models", "cfg", "weights", "fmt", "data", "id"))
        text = None
        if how >= 0.8 and how < 0.9:
            text = mutate_text(json.dumps(weights), rng)
        if isinstance(bundle, dict) and isinstance(bundle.get("models"), list) and bundle["models"]:
            model = bundle["models"][0]
            if isinstance(model, dict) and isinstance(model.get("weights"), dict) and how >= 0.3 and how < 0.9:
                blob = text if text is not None else dumps_lenient(weights)
                model["weights"]["data"] = base64.b64encode(blob.encode()).decode()
        bundle_text = dumps_lenient(bundle)
        if how >= 0.9:
            bundle_text = mutate_text(bundle_text, rng)
        yield bundle_text, fix["model_id"] if rng.random() < 0.9 else "other", fix["x"], free_of_extremes(weights)


def run_bundle(payload: Any) -> Outcome:
    text, model_id, x, moderate = payload
    net = loom.load_model_from_string(text, model_id)
    outcome = _forward_outcome(net, x, moderate)
    reloaded = loom.load_model_from_string(net.save_model_to_string("again"), "again")
    outcome.arrays.append(reloaded.forward(x))
    return outcome


BUNDLE_EXPECT = Expect(
    (ModelFormatError, ConfigError, ShapeError), r"(bundle|models\[\d+\]|model |layers\[\d+\]|input)"
)


# ------------------------------------------------------------------ training inputs
_TRAIN_NETS = {
    "dense": {
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 2,
        "layers": [
            {"type": "dense", "input_size": 3, "output_size": 4},
            {"type": "dense", "output_size": 2, "activation": "sigmoid"},
        ],
    },
    "softmax": {
        "batch_size": 2,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 2,
        "layers": [{"type": "dense", "input_size": 3, "output_size": 2}, {"type": "softmax"}],
    },
    "rnn": {
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 1,
        "layers": [{"type": "rnn", "input_size": 3, "hidden_size": 2, "seq_length": 1}],
    },
}


def training_cases(seed: int, count: int):
    rng = random.Random(seed)
    cases = strategies.draw_examples(strategies.hostile_batches(3, 2), seed, count)
    return ((rng.choice(sorted(_TRAIN_NETS)), case) for case in cases)


def run_training(payload: Any) -> Outcome:
    name, case = payload
    net = loom.create_network_from_json(_TRAIN_NETS[name], seed=3)
    result = net.train(case["batches"], case["config"])
    moderate = free_of_extremes(case["config"]) and case["config"].get("raise_on_divergence", True) is not False
    return Outcome([np.asarray(result.loss_history)], moderate)


TRAINING_EXPECT = Expect(
    (ShapeError, ConfigError, TrainingDivergedError),
    r"(batches|training config|config|layers\[\d+\]|target|training diverged|epochs|learning_rate|gradient_clip|"
    r"print_every_batch|evaluate_every_n|loss_type|raise_on_divergence|verbose)",
)


# ------------------------------------------------------------------ forward inputs
_FORWARD_NETS = {
    "dense": (_TRAIN_NETS["dense"], 3),
    "softmax_b2": (_TRAIN_NETS["softmax"], 3),
    "conv": (
        {
            "batch_size": 1,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [
                {
                    "type": "conv2d",
                    "input_channels": 1,
                    "input_height": 3,
                    "input_width": 3,
                    "kernel_size": 2,
                    "stride": 1,
                    "padding": 0,
                    "filters": 2,
                }
            ],
        },
        9,
    ),
    "mha": (
        {
            "batch_size": 1,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [{"type": "mha", "d_model": 4, "num_heads": 2}],
        },
        8,
    ),
    "lstm": (
        {
            "batch_size": 1,
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [{"type": "lstm", "input_size": 2, "hidden_size": 3, "seq_length": 2}],
        },
        4,
    ),
}


@cache
def _forward_net(name: str) -> loom.Network:
    return loom.create_network_from_json(_FORWARD_NETS[name][0], seed=4)


def forward_cases(seed: int, count: int):
    rng = random.Random(seed)
    names = sorted(_FORWARD_NETS)
    share = count // len(names) + 1
    per_net = {
        name: iter(strategies.draw_examples(strategies.hostile_inputs(_FORWARD_NETS[name][1]), seed, share))
        for name in names
    }
    for _ in range(count):
        name = rng.choice(names)
        yield name, next(per_net[name], [0.0])


def run_forward(payload: Any) -> Outcome:
    name, x = payload
    net = _forward_net(name)
    try:
        y = net.forward(x)
    except ShapeError as exc:
        _check_position(exc, x, net.batch_size)
        raise
    return Outcome([y], free_of_extremes(np.asarray(x, dtype=np.float64)) if _numeric(x) else True)


def _numeric(x: Any) -> bool:
    try:
        return np.asarray(x).dtype.kind in "fiub"
    except (ValueError, TypeError, OverflowError):
        return False


def _check_position(exc: ShapeError, x: Any, batch: int) -> None:
    """A non-finite input must be reported at its sample and position."""
    match = re.search(r"at sample (\d+), position (\d+)", str(exc))
    if not match:
        return
    values = np.asarray(x, dtype=np.float32)
    flat = values.reshape(-1)
    bad = int(np.argmin(np.isfinite(flat)))
    per = values.shape[1] if values.ndim == 2 else flat.size // batch if flat.size % batch == 0 else flat.size
    assert (int(match.group(1)), int(match.group(2))) == divmod(bad, per), (str(exc), bad, per)


FORWARD_EXPECT = Expect((ShapeError,), r"(input|layers\[\d+\])")


TARGETS = [
    Target("config mutations", "network configs", config_cases, run_config, CONFIG_EXPECT, 2000),
    Target("config text", "network configs", config_text_cases, run_config_text, CONFIG_EXPECT, 600),
    Target("layer stacks (hypothesis)", "network configs", stack_cases, run_stack, CONFIG_EXPECT, 1500),
    Target("bundle mutations", "bundles", bundle_cases, run_bundle, BUNDLE_EXPECT, 2800),
    Target("training inputs (hypothesis)", "training", training_cases, run_training, TRAINING_EXPECT, 1200),
    Target("forward inputs (hypothesis)", "forward inputs", forward_cases, run_forward, FORWARD_EXPECT, 800),
]
