"""The ``loom`` console script: demo output, help, version and error handling."""

from __future__ import annotations

import re

import pytest

from loom import cli
from loom.backend import cupy_available


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``loom ARGV...`` in-process; return (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_demo_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--epochs", "20", "--seed", "3")
    assert code == 0, err
    # Pattern Recognition Training: loss lines and validation with ✓/✗ marks.
    assert "Pattern Recognition Training" in out
    epoch_lines = re.findall(r"^Epoch (\d+)/20: Loss = (\d+\.\d+)$", out, flags=re.MULTILINE)
    assert len(epoch_lines) >= 3
    assert epoch_lines[0][0] == "1" and epoch_lines[-1][0] == "20"
    assert float(epoch_lines[-1][1]) < float(epoch_lines[0][1])
    assert "Validation:" in out
    assert re.search(r"^Sample 0: .* [✓✗]$", out, flags=re.MULTILINE)
    # Grid Scatter: the architecture block always; results once parallel/lstm/rnn exist.
    assert "Grid Scatter Multi-Agent Training" in out
    assert "Agent 1: Transformer (LSTM)" in out
    if cli.grid_scatter_available() is None:
        for section in (
            "Training time:",
            "Initial Loss:",
            "Final Loss:",
            "Improvement:",
            "Quality Score:",
            "Model saved (",
        ):
            assert section in out
        assert re.search(r"^Improvement: -?\d+\.\d\d%$", out, flags=re.MULTILINE)
        predictions = re.findall(
            r"^Sample \d: \[\d\.\d{3}, \d\.\d{3}\] → Class \d \(expected \d\) [✓✗]$", out, flags=re.MULTILINE
        )
        assert len(predictions) == 4
        assert "identical to the original" in out
    else:
        assert re.search(r"^skipped: .*parallel", out, flags=re.MULTILINE)


def test_demo_is_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for _ in range(2):
        code, out, _ = run_cli(capsys, "demo", "--part", "pattern", "--epochs", "3", "--seed", "11")
        assert code == 0
        outputs.append(re.sub(r"Training time: .*\n", "", out).split("Done in")[0])
    assert outputs[0] == outputs[1]


def test_pattern_samples_are_labelled_by_their_high_half() -> None:
    import numpy as np

    inputs, labels = cli.pattern_samples(20, np.random.default_rng(0))
    assert len(inputs) == len(labels) == 20 and set(labels) == {0, 1}
    for x, label in zip(inputs, labels, strict=True):
        assert len(x) == 8
        first, second = sum(x[:4]), sum(x[4:])
        assert (first > second) == (label == 0)


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "generate", "version"):
        assert command in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 0
    assert "usage: loom" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import loom

    code, out, _ = run_cli(capsys, "version")
    assert code == 0
    assert loom.__version__ in out


def test_negative_epochs_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--epochs", "-1"])
    assert exc.value.code == 2


@pytest.mark.skipif(cupy_available(), reason="CuPy and a CUDA device are present: --gpu would run")
def test_gpu_without_cupy_exits_2_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--gpu", "--epochs", "1")
    assert code == 2
    assert "Traceback" not in err
    assert "cupy" in err.lower()
    assert "pip install" in err
    assert "Pattern Recognition" not in out


def test_loom_errors_become_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from loom.errors import ConfigError

    def broken(*args: object, **kwargs: object) -> bool:
        raise ConfigError("layers[0].output_size: required")

    monkeypatch.setattr(cli, "pattern_demo", broken)
    code, _, err = run_cli(capsys, "demo", "--part", "pattern")
    assert code == 2
    assert err.strip() == "loom demo: error: layers[0].output_size: required"


def test_generate_unavailable_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "loom.llm.cli", None)  # makes `import loom.llm.cli` fail
    code, _, err = run_cli(capsys, "generate", "hello", "--max-tokens", "3")
    assert code == 2
    assert "loom.llm" in err and "pip install" in err
    assert "Traceback" not in err
