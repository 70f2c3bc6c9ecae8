"""Golden cases recorded from the reference Go LOOM (``fixtures/loom-go``), through the public API.

What must match (``docs/differences-from-go.md#kept-exactly-as-go-forward-semantics``): forward
outputs of the saved models (before and after training), bit-exact save/load round trips, evaluation
metrics, and — where Go's gradients are exact — the training loss history and
the trained weights. Elsewhere loom trains with exact gradients on purpose and
must lower the loss.
"""

from __future__ import annotations

import base64
import io
import json
import re
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import loom
from loom.errors import ConfigError
from tests.conftest import shared_root

FIXTURE_DIR = shared_root() / "fixtures" / "loom-go"
FIXTURES = sorted(p.stem for p in FIXTURE_DIR.glob("*.json")) if FIXTURE_DIR.is_dir() else []

#: Softmax variants whose Go backward (plain softmax Jacobian) is the exact derivative at T = 1.
_EXACT_SOFTMAX = {"standard", "temperature", "grid", "masked", "adaptive", "mixture", ""}


@cache
def load_fixture(name: str) -> dict:
    return json.loads((FIXTURE_DIR / f"{name}.json").read_text())


def _layers(cfg: dict) -> list[dict]:
    return cfg.get("layers", [])


def go_gradients_exact(fix: dict) -> bool:
    """True where Go LOOM's training uses exact gradients for every parameter (docs/differences-from-go.md)."""
    for layer in _layers(fix["network_config"]):
        kind = layer["type"]
        if kind == "dense":
            continue
        if kind == "softmax":
            if layer.get("softmax_variant", "standard") not in _EXACT_SOFTMAX:
                return False
            if layer.get("temperature", 0) not in (0, 1):
                return False
            continue
        if kind == "parallel":
            if any(b["type"] != "dense" for b in layer.get("branches", [])):
                return False
            continue
        return False
    return True


def _requires_layers(fix: dict) -> None:
    for type_name in fix["layer_types"]:
        try:
            loom.nn.layers.kind_for(type_name)
        except ConfigError:
            pytest.skip(f"layer type {type_name!r} not implemented")


def _close(actual, expected, atol=1e-6, rtol=1e-5, what="") -> None:
    actual = np.asarray(loom.to_numpy(actual), dtype=np.float64).reshape(-1)
    expected = np.asarray(expected, dtype=np.float32).astype(np.float64).reshape(-1)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=what)


def _decoded_weights(bundle_text: str) -> list:
    model = json.loads(bundle_text)["models"][0]
    return json.loads(base64.b64decode(model["weights"]["data"]))["layers"]


def _assert_weights_close(actual, expected, path="layers", atol=1e-5, rtol=1e-4) -> None:
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _assert_weights_close(actual[key], expected[key], f"{path}.{key}", atol, rtol)
    elif expected and isinstance(expected[0], dict | list) and not isinstance(expected[0], float | int):
        assert len(actual) == len(expected), f"{path}: {len(actual)} entries != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_weights_close(a, e, f"{path}[{i}]", atol, rtol)
    else:
        _close(actual, expected, atol=atol, rtol=rtol, what=path)


pytestmark = pytest.mark.skipif(not FIXTURES, reason=f"Go LOOM fixtures not found at {FIXTURE_DIR} (set LOOM_SHARED)")


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("stage", ["before", "after"])
def test_forward_matches_go(name, stage, backend):
    fix = load_fixture(name)
    _requires_layers(fix)
    net = loom.load_model_from_string(fix[f"model_{stage}"], fix["model_id"], backend=backend)
    for i, (x, expected) in enumerate(zip(fix["forward"]["inputs"], fix["forward"][f"outputs_{stage}"], strict=True)):
        y = loom.to_numpy(net.forward(x))
        if fix["deterministic"]:
            _close(y, expected, what=f"{name} {stage} forward[{i}]")
        else:
            assert y.shape == (len(expected),)
            assert np.all(y >= 0) and abs(float(y.sum()) - net.batch_size) < 1e-4


@pytest.mark.parametrize("name", FIXTURES)
def test_save_load_round_trip_is_exact(name, backend):
    fix = load_fixture(name)
    _requires_layers(fix)
    for stage in ("before", "after"):
        text = fix[f"model_{stage}"]
        net = loom.load_model_from_string(text, fix["model_id"], backend=backend)
        saved = net.save_model_to_string(fix["model_id"])
        ours, go = json.loads(saved), json.loads(text)
        assert ours["models"][0]["cfg"] == go["models"][0]["cfg"], f"{name}: saved cfg differs from Go's"
        assert _decoded_weights(saved) == _decoded_weights(text), f"{name}: weights changed in a round trip"
        assert saved == text, f"{name}: bundle text is not byte-identical to Go's"
        again = loom.load_model_from_string(saved, fix["model_id"], backend=backend)
        x = fix["forward"]["inputs"][0]
        if fix["deterministic"]:
            np.testing.assert_array_equal(loom.to_numpy(again.forward(x)), loom.to_numpy(net.forward(x)))


def _train_config(fix: dict) -> dict:
    return dict(fix["training"]["config"])


@pytest.mark.parametrize("name", FIXTURES)
def test_training_matches_go_where_gradients_are_exact(name, backend):
    fix = load_fixture(name)
    _requires_layers(fix)
    config = _train_config(fix)
    if config.get("LossType") not in ("mse", "cross_entropy", "", None):
        with pytest.raises(ConfigError, match="unknown loss type"):
            loom.TrainingConfig.from_dict(config)
        return
    if not fix["deterministic"]:
        pytest.skip("Gumbel noise: covered by the statistical test")
    net = loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)
    with redirect_stdout(io.StringIO()):
        result = net.train(fix["training"]["batches"], config)
    go = fix["training"]["result"]
    assert len(result.loss_history) == len(go["LossHistory"])
    if go_gradients_exact(fix):
        _close(result.loss_history, go["LossHistory"], atol=1e-7, rtol=1e-4, what=f"{name} loss history")
        assert result.final_loss == pytest.approx(go["FinalLoss"], rel=1e-4, abs=1e-7)
        assert result.best_loss == pytest.approx(go["BestLoss"], rel=1e-4, abs=1e-7)
        _assert_weights_close(
            _decoded_weights(net.save_model_to_string(fix["model_id"])), fix["weights_after"]["layers"]
        )
        for x, expected in zip(fix["forward"]["inputs"], fix["forward"]["outputs_after"], strict=True):
            _close(net.forward(x), expected, atol=1e-5, rtol=1e-4, what=f"{name} outputs after training")
    else:
        # loom trains every parameter with exact gradients: the loss must go down.
        assert result.loss_history[-1] < result.loss_history[0], f"{name}: loss did not decrease"
        assert np.isfinite(result.loss_history).all()


def test_training_no_worse_than_go_in_most_cases(backend):
    """Where Go trains with wrong or missing gradients, loom's exact training should end as low or lower."""
    better, compared = [], []
    for name in FIXTURES:
        fix = load_fixture(name)
        try:
            _requires_layers(fix)
        except pytest.skip.Exception:
            continue
        if go_gradients_exact(fix) or not fix["deterministic"] or _train_config(fix).get("LossType") == "huber":
            continue
        net = loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)
        with redirect_stdout(io.StringIO()):
            result = net.train(fix["training"]["batches"], _train_config(fix))
        compared.append(name)
        if result.final_loss <= fix["training"]["result"]["FinalLoss"] * (1 + 1e-4):
            better.append(name)
    if not compared:
        pytest.skip("no inexact-gradient fixture with implemented layers")
    print(
        f"loom final loss <= Go's on {len(better)}/{len(compared)} fixtures: "
        f"missing {sorted(set(compared) - set(better))}"
    )
    assert len(better) * 2 > len(compared), f"only {len(better)}/{len(compared)}: {sorted(set(compared) - set(better))}"


@pytest.mark.parametrize("name", FIXTURES)
def test_evaluation_matches_go(name, backend):
    fix = load_fixture(name)
    _requires_layers(fix)
    if not fix["deterministic"]:
        pytest.skip("Gumbel noise: evaluation is random")
    net = loom.load_model_from_string(fix["model_after"], fix["model_id"], backend=backend)
    ev = fix["evaluation"]
    metrics = net.evaluate_network(ev["inputs"], ev["expected_outputs"]).to_dict()
    go = ev["metrics"]
    assert metrics["total_samples"] == go["total_samples"] and metrics["failures"] == go["failures"]
    assert metrics["score"] == pytest.approx(go["score"], rel=1e-6, abs=1e-9)
    assert metrics["avg_deviation"] == pytest.approx(go["avg_deviation"], rel=1e-6, abs=1e-9)
    assert list(metrics["buckets"]) == list(go["buckets"])
    for key, bucket in go["buckets"].items():
        assert metrics["buckets"][key] == bucket, f"bucket {key}"
    for ours, theirs in zip(metrics["results"], go["results"], strict=True):
        assert ours["bucket"] == theirs["bucket"] and ours["sample_index"] == theirs["sample_index"]
        assert ours["actual"] == pytest.approx(theirs["actual"], rel=1e-6)
        assert ours["deviation"] == pytest.approx(theirs["deviation"], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", FIXTURES)
def test_manual_sgd_step(name, backend):
    fix = load_fixture(name)
    _requires_layers(fix)
    if not fix["deterministic"]:
        pytest.skip("Gumbel noise")
    if "sgd_step" in fix.get("errors", {}):
        pytest.skip(f"Go could not run this step: {fix['errors']['sgd_step']}")
    step = fix["sgd_step"]
    net = loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)
    y = net.forward(step["input"])
    if fix["load_check"].get("reproduces_before", True):  # else Go's step ran on its degraded reload
        _close(y, step["output"], what=f"{name} sgd_step output")
    dx = net.backward(step["grad_output"])
    assert loom.to_numpy(dx).shape == (len(step["input"]),)
    net.update_weights(step["learning_rate"])
    if go_gradients_exact(fix):
        _assert_weights_close(
            _decoded_weights(net.save_model_to_string(fix["model_id"])), step["weights_after_step"]["layers"]
        )
        _close(net.forward(step["input"]), step["output_after_step"], atol=1e-5, rtol=1e-4, what="output after step")


def test_verbose_training_prints_loom_lines_and_validation(backend):
    fix = load_fixture("train_verbose_validation")
    net = loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)
    out = io.StringIO()
    with redirect_stdout(out):
        result = net.train(fix["training"]["batches"], _train_config(fix))
    go_metrics = fix["training"]["result"]["EvalMetrics"]
    assert result.eval_metrics is not None
    assert result.eval_metrics.to_dict()["score"] == pytest.approx(go_metrics["score"])
    assert result.to_dict()["EvalMetrics"]["buckets"] == go_metrics["buckets"]

    def without_timings(text: str) -> str:
        return re.sub(r"Time: \S+|Throughput: \d+", "<t>", text)

    # Identical to Go's verbose output except for wall-clock numbers.
    assert without_timings(out.getvalue()) == without_timings(fix["training"]["stdout"])


def test_unknown_loss_type_is_a_config_error():
    with pytest.raises(ConfigError, match=r"config.LossType: unknown loss type 'huber'"):
        loom.TrainingConfig.from_dict({"LossType": "huber"})


def test_fixture_folder_is_complete():
    assert len(FIXTURES) >= 45, f"expected the 45 recorded cases, found {len(FIXTURES)} in {Path(FIXTURE_DIR)}"


def test_gumbel_softmax_statistics(backend):
    """Gumbel-max trick: argmax of the noisy softmax is distributed as softmax(logits / 1)."""
    fix = load_fixture("softmax_gumbel")
    net = loom.load_model_from_string(fix["model_before"], fix["model_id"], backend=backend)
    net.seed(1234)
    x = fix["forward"]["inputs"][0]
    draws = 3000
    counts = None
    for _ in range(draws):
        y = loom.to_numpy(net.forward(x))
        assert abs(float(y.sum()) - 1.0) < 1e-5 and np.all(y >= 0)
        counts = np.zeros(y.size) if counts is None else counts
        counts[int(np.argmax(y))] += 1
    logits = loom.to_numpy(net.activations()[-2]).astype(np.float64)
    temperature = net.layers[-1].temperature or 1.0
    p = np.exp((logits - logits.max()) / temperature)
    p /= p.sum()
    sigma = np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(counts / draws - p) <= 4 * sigma + 1e-3), (counts / draws, p)
    # seeded: the same seed gives the same noisy outputs
    net.seed(7)
    first = loom.to_numpy(net.forward(x))
    net.seed(7)
    np.testing.assert_array_equal(loom.to_numpy(net.forward(x)), first)
