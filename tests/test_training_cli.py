"""``loom train / eval / predict / info / dataset``: the README workflow, data formats and one-line errors.

The two-moons workflow runs at the acceptance size (1000 samples, Adam, lr 0.01, batch 32,
50 epochs): ``loom eval`` must print the ≥ 97% accuracy and the PNG must be a 640 x 480 plot.
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import loom
from loom import cli
from tests.conftest import REPO_ROOT, shared_root
from tests.test_fit import MOONS_NET  # the README's two-moons network

# The README's "Training workflows" commands (test_training_engine checks that the README holds them).
TRAIN_ARGS = "--epochs 50 --batch-size 32 --lr 0.01 --optimizer adam --val-split 0.2 --seed 0"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "moons-net.json").write_text(json.dumps(MOONS_NET))
    return tmp_path


def one_line_error(code: int, err: str, command: str) -> str:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"loom {command}: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------------------------- README workflow
def test_readme_two_moons_workflow(workdir, capsys):
    code, out, _ = run(capsys, "dataset", "moons", "moons.csv", "--samples", "1000", "--noise", "0.1", "--seed", "0")
    assert code == 0 and "wrote 1000 samples (x1, x2, label) to moons.csv" in out
    rows = list(csv.reader((workdir / "moons.csv").read_text().splitlines()))
    assert rows[0] == ["x1", "x2", "label"] and len(rows) == 1001

    argv = ["train", "moons-net.json", "moons.csv", *TRAIN_ARGS.split(), "--plot", "loss.png", "--save", "m.json"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    epochs = re.findall(
        r"^Epoch (\d+)/50 - loss: [\d.]+ - accuracy: [\d.]+ - val_loss: [\d.]+ - val_accuracy: ([\d.]+)", out, re.M
    )
    assert len(epochs) == 50  # not a terminal: one line per epoch
    val_accuracy = float(epochs[-1][1])
    assert val_accuracy >= 0.97
    assert "saved model to m.json" in out and "saved loss plot to loss.png" in out

    header = (workdir / "loss.png").read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (640, 480)

    code, out, err = run(capsys, "eval", "m.json", "moons.csv")
    assert code == 0, err
    match = re.search(r"^accuracy: ([\d.]+)% \((\d+)/1000\)$", out, re.M)
    assert match and float(match.group(1)) >= 97.0
    assert re.search(r"^loss \(cross_entropy\): [\d.]+$", out, re.M)
    assert re.search(r"^LOOM quality score: [\d.]+/100, avg deviation: [\d.]+%, failures: \d+/1000$", out, re.M)
    net = loom.load_model("m.json")
    x = np.loadtxt(workdir / "moons.csv", delimiter=",", skiprows=1, dtype=np.float32)
    predicted = loom.to_numpy(net.predict(x[:, :2])).argmax(axis=1)
    assert int(match.group(2)) == int((predicted == x[:, 2]).sum())

    code, out, _ = run(capsys, "predict", "m.json", "moons.csv", "--out", "pred.csv")
    rows = list(csv.reader((workdir / "pred.csv").read_text().splitlines()))
    assert code == 0 and rows[0] == ["output_0", "output_1", "class"] and len(rows) == 1001
    assert [int(r[2]) for r in rows[1:]] == predicted.tolist()


def test_train_quiet_prints_no_progress_and_json_batches_train(workdir, capsys):
    batches = [{"Input": [0.1, 0.9, 0.8, 0.2], "Target": [1, 0, 0, 1]}, {"input": [0.7, 0.3], "target": [0, 1]}]
    (workdir / "batches.json").write_text(json.dumps(batches))
    code, out, err = run(capsys, "train", "moons-net.json", "batches.json", "--epochs", "3", "--quiet", "--seed", "1")
    assert code == 0, err
    assert "Epoch" not in out and err == ""
    assert re.match(r"trained 3 epochs on 3 samples \(cross_entropy, Adam\(", out)


def test_npz_data_and_continuing_from_a_saved_bundle(workdir, capsys):
    x, y = loom.nn.datasets.make_moons(200, seed=1)
    np.savez(workdir / "moons.npz", x=x, y=y)
    code, _, err = run(capsys, "train", "moons-net.json", "moons.npz", "--epochs", "2", "--quiet", "--save", "a.json")
    assert code == 0, err
    code, out, err = run(capsys, "train", "a.json", "moons.npz", "--epochs", "1", "--optimizer", "sgd", "--quiet")
    assert code == 0 and "trained 1 epochs on 200 samples (cross_entropy, SGD(" in out, err
    code, out, _ = run(capsys, "eval", "a.json", "moons.npz", "--quiet")
    assert code == 0 and "samples: 200" in out and "accuracy:" in out


def test_predict_on_feature_columns_only_writes_to_stdout(workdir, capsys):
    net = loom.create_network_from_json(MOONS_NET, seed=0)
    net.save_model(workdir / "m.json")
    (workdir / "features.csv").write_text("a,b\n0.5,0.25\n-1,2\n")
    code, out, _ = run(capsys, "predict", "m.json", "features.csv")
    rows = list(csv.reader(out.splitlines()))
    assert code == 0 and rows[0] == ["output_0", "output_1", "class"] and len(rows) == 3
    want = loom.to_numpy(net.predict(np.array([[0.5, 0.25], [-1, 2]], np.float32)))
    np.testing.assert_allclose(np.array(rows[1:], dtype=float)[:, :2], want, rtol=1e-6)


def test_the_readme_command_block_runs_as_written(tmp_path):
    """The README's shell block, run by bash in an empty folder with this environment's ``loom``."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("The same from the command line", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"^accuracy: ([\d.]+)% \(\d+/1000\)$", done.stdout, re.M)
    assert match and float(match.group(1)) >= 97.0, done.stdout
    assert (tmp_path / "loss.png").stat().st_size > 10_000 and (tmp_path / "predictions.csv").is_file()
    assert "Total params: 354" in done.stdout


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("content", "argv", "message"),
    [
        (None, [], r"missing\.csv: data file not found"),
        (
            "x1,x2,label\n0.1,0.2,0\n",
            ["--target", "lable"],
            r"no column 'lable' \(did you mean 'label'\?\); columns: x1",
        ),
        ("x1,x2,label\n0.1,0.2,0\n0.3,abc,1\n", [], r"data\.csv: line 3, column 'x2': expected a number, got 'abc'"),
        (
            "x1,x2,label\n0.1,0.2,0\n0.3,0.4,2\n",
            [],
            r"column 'label', line 3: expected a class label 0\.\.1 \(the network",
        ),
        ("x1,x2,label\n0.1,0.2\n", [], r"data\.csv: line 2: expected 3 values \(as the header\), got 2"),
        ("0.1,0.2,0\n", [], r"data\.csv: line 1: expected a header row of column names, got the number '0.1'"),
        ("x1,label\n0.1,0\n", [], r"data\.csv: expected 2 feature values per sample .*, got 1 \(x1\)"),
        ("x1,x2,label\n", [], r"data\.csv: no data rows after the header"),
        ("x1,x2,label\n0.1,inf,0\n", [], r"data\.csv: line 2, column 'x2': expected a finite number, got inf"),
    ],
)
def test_bad_data_files_are_one_line_errors(workdir, capsys, content, argv, message):
    name = "missing.csv" if content is None else "data.csv"
    if content is not None:
        (workdir / name).write_text(content)
    code, _, err = run(capsys, "train", "moons-net.json", name, "--epochs", "1", "--quiet", *argv)
    assert re.search(message, one_line_error(code, err, "train"))


def test_bad_npz_and_config_files_are_one_line_errors(workdir, capsys):
    np.savez(workdir / "only_x.npz", x=np.zeros((3, 2)))
    code, _, err = run(capsys, "train", "moons-net.json", "only_x.npz")
    assert "only_x.npz: expected arrays 'x' and 'y', found ['x']" in one_line_error(code, err, "train")
    (workdir / "bad.npz").write_bytes(b"not a zip")
    code, _, err = run(capsys, "eval", "moons-net.json", "bad.npz")
    assert one_line_error(code, err, "eval")
    code, _, err = run(capsys, "train", "nope.json", "bad.npz")
    assert "nope.json: cannot read the network config" in one_line_error(code, err, "train")
    (workdir / "broken.json").write_text('{"layers": [')
    code, _, err = run(capsys, "train", "broken.json", "bad.npz")
    assert "broken.json: config: invalid JSON" in one_line_error(code, err, "train")
    code, _, err = run(capsys, "info", "missing-model.json")
    assert "missing-model.json: cannot read model file" in one_line_error(code, err, "info")


# ---------------------------------------------------------------------------------------------- info
def test_info_on_a_go_bundle_prints_every_layer_and_the_total(capsys, tmp_path):
    path = shared_root() / "fixtures" / "loom-go" / "seed_grid_scatter_example.json"
    if not path.is_file():
        pytest.skip(f"Go LOOM fixture not found at {path}")
    tmp = tmp_path / "go-bundle.json"
    tmp.write_text(json.loads(path.read_text())["model_before"])  # the bundle Go LOOM saved
    code, out, err = run(capsys, "info", str(tmp))
    assert code == 0, err
    net = loom.load_model(tmp)
    lines = out.splitlines()
    rows = [line for line in lines if line[:1].isdigit()]
    assert len(rows) == net.total_layers() == 3
    for row, cfg in zip(rows, net.layers, strict=True):
        assert row.split()[-1] == f"{cfg.num_parameters():,}"
    assert sum(1 for line in lines if "└ branch" in line) == 5  # 3 agents, 2 nested dense
    assert f"Total params: {net.num_parameters():,}" in lines
    assert lines[0].startswith(f"{tmp}: model ")
    assert lines[-1].startswith("Go LOOM: compatible")  # Go wrote it, and nothing in it is loom-only


def test_info_lists_what_go_loom_would_run_differently(workdir, capsys):
    config = json.loads(json.dumps(MOONS_NET))
    config["layers"][1]["activation"] = "gelu"  # loom-only activation id 6
    loom.create_network_from_json(config, seed=0).save_model(workdir / "m.json")
    code, out, _ = run(capsys, "info", "m.json")
    tail = out.rstrip().splitlines()
    assert code == 0
    assert tail[-3] == "Go LOOM: 2 feature(s) Go LOOM would run differently or not at all:"
    assert tail[-2].startswith("  - layers[1]: activation 'gelu' (id 6)") and "ScaledReLU" in tail[-2]
    assert tail[-1].startswith("  - layers[2]: activation 'linear' (id 5)")


def test_help_lists_the_training_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "eval", "predict", "info", "dataset"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command
