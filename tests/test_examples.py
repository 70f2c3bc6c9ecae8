"""Every script in ``examples/`` runs and shows what the LOOM README claims for its block."""

from __future__ import annotations

import importlib.util
import io
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.embedded_model import use_embedded_defaults

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str, *argv: str) -> tuple[dict, str]:
    """Import ``examples/<name>.py`` as a fresh module and call its ``main(argv)``; returns (result, stdout)."""
    spec = importlib.util.spec_from_file_location(f"loom_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with redirect_stdout(out):
        result = module.main(list(argv))
    return result, out.getvalue()


def test_every_example_has_a_compat_twin_and_a_test():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    pythonic = {s for s in scripts if not s.endswith("_compat")}
    assert {f"{s}_compat" for s in pythonic} == scripts - pythonic
    tested = {"simple_api", "grid_scatter", "pattern_recognition", "create_from_json", "create_from_scratch"}
    tested |= {"introspection", "save_load", "transformer"}
    assert pythonic == tested


@pytest.mark.parametrize("name", ["simple_api", "simple_api_compat"])
def test_simple_api(name):
    result, out = run(name, "--seed", "3")
    assert result["output2"] == result["output"]  # bit for bit after save/load
    assert result["loss_history"][-1] < result["loss_history"][0] / 50
    assert result["output"][0] > 0.9 and result["output"][1] < 0.1  # README: [0.950, 0.050]
    assert result["score"] == 100.0 and result["avg_deviation"] == 0.0
    assert 20_000 < result["model_bytes"] < 40_000  # welvet: "~26 KB"
    assert "Training complete! Final loss:" in out and "Quality Score: 100.0/100" in out


def test_simple_api_twins_print_the_same_numbers():
    pythonic, _ = run("simple_api", "--epochs", "60", "--seed", "9")
    compat, _ = run("simple_api_compat", "--epochs", "60", "--seed", "9")
    for key in ("loss_history", "output", "score", "avg_deviation", "model_bytes"):
        assert pythonic[key] == compat[key], key


@pytest.mark.parametrize("name", ["grid_scatter", "grid_scatter_compat"])
def test_grid_scatter(name):
    result, out = run(name)
    assert result["correct"] == 4 and out.count("✓") == 4  # README: 4/4, 100% classification accuracy
    assert 0.24 < result["initial_loss"] < 0.27  # README: 0.252357
    assert result["improvement"] > 99.0  # README: 99.53%
    assert result["score"] == 100.0 and result["total_epochs"] == 800


@pytest.mark.parametrize("name", ["pattern_recognition", "pattern_recognition_compat"])
def test_pattern_recognition(name):
    result, _ = run(name, "--epochs", "30", "--samples", "40", "--learning-rate", "0.1")
    assert result["loss_history"][-1] < result["loss_history"][0] / 5
    assert result["correct"] == result["total"] == 8


@pytest.mark.parametrize("name", ["create_from_json", "create_from_json_compat"])
def test_create_from_json(name):
    result, out = run(name, "--epochs", "100")
    assert [tuple(s) for s in result["sizes"]] == [(10, 8), (8, 4), (4, 2)]  # inferred from input_size
    assert result["loss_history"][-1] < result["loss_history"][0]
    assert len(result["output"]) == 2 and isinstance(result["duration_ns"], int)
    assert "Improvement:" in out


def test_create_from_json_twins_agree():
    assert (
        run("create_from_json", "--epochs", "5")[0]["output"]
        == run("create_from_json_compat", "--epochs", "5")[0]["output"]
    )


@pytest.mark.parametrize("name", ["create_from_scratch", "create_from_scratch_compat"])
def test_create_from_scratch(name):
    result, out = run(name, "--epochs", "3", "--samples", "20")
    assert result["weights"] == [307_328, 3_920]  # README Demo Results
    assert len(result["output"]) == 10 and all(0 < v < 1 for v in result["output"])
    assert result["epoch_losses"][-1] < result["epoch_losses"][0]
    assert result["dense_helper"] == (784, 128, 0)
    assert result["mha_helper"] == (512, 8, 64, 256)
    assert "Layer 0: 307,328 weights initialized" in out


@pytest.mark.parametrize("name", ["introspection", "introspection_compat"])
def test_introspection(name):
    result, _ = run(name)
    assert {"ForwardCPU", "Train", "SaveModelToString", "GetMethodsJSON", "forward"} <= set(result["methods"])
    assert result["signature"] == "ForwardCPU(x: ArrayLike) -> tuple[list[float], int]"
    for method in result["details"]:
        assert all(p["name"] and p["type"] not in ("", "Any") for p in method["parameters"]), method


@pytest.mark.parametrize("name", ["save_load", "save_load_compat"])
def test_save_load(name):
    result, _ = run(name)
    assert result["identical"] and result["output"] == result["original"]
    assert result["layers"] == 3 and 1_000 < result["bytes"] < 5_000  # README: "Saved: 1,486 bytes"
    assert result["retrained_loss"][-1] < result["retrained_loss"][0]
    assert result["resaved_id"] == "model_id"


@pytest.mark.parametrize("name", ["transformer", "transformer_compat"])
def test_transformer_readme_flow_on_model_bytes(name, llm_fixtures):
    result, _ = run(name, "--model-dir", str(llm_fixtures / "tiny-llama"), "--max-tokens", "4", "--temperature", "0")
    assert result["decoded"] == "Once upon a time" and result["generated_text"].startswith("Once upon a time")


@pytest.mark.parametrize("name", ["transformer", "transformer_compat"])
def test_transformer_on_the_embedded_model(name):
    use_embedded_defaults()
    result, out = run(name, "--max-tokens", "3", "--temperature", "0")
    assert result["ids"] == [6403, 1980, 253, 655]  # SmolLM2's tokens for "Once upon a time"
    assert result["generated_text"].startswith("Once upon a time") and len(result["generated_text"]) > 16
    assert result["next_id"] == 28 and "','" in out  # greedy: "Once upon a time,"


def test_examples_run_as_scripts(tmp_path):
    import subprocess

    script = EXAMPLES / "save_load_compat.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "identical: True" in done.stdout
