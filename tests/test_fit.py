"""Keras-style workflows: ``fit`` / ``predict`` / ``evaluate``, History, callbacks, plots and ``summary``.

Numbers are checked against formulas (batch-mean losses computed here with NumPy), against
LOOM's ``train`` where the two conventions agree, and between equivalent spellings (labels vs
one-hot, ``validation_split`` vs ``validation_data``). The two-moons acceptance run (1000
points, Adam, lr 0.01, batch 32, 50 epochs) runs at full size: it takes a fraction of a second.
"""

from __future__ import annotations

import io
import re
import struct
import sys

import numpy as np
import pytest

import loom
from loom.backend.cuda_train import train_kernels
from loom.errors import ConfigError, MissingDependencyError, ShapeError
from loom.nn.datasets import make_moons
from loom.nn.summary import summary_text
from loom.nn.training_engine import Callback

MOONS_NET = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 4,
    "input_size": 2,
    "layers": [
        {"type": "dense", "output_size": 16, "activation": "tanh"},
        {"type": "dense", "output_size": 16, "activation": "tanh"},
        {"type": "dense", "output_size": 2, "activation": "linear"},
        {"type": "softmax"},
    ],
}


def mlp(backend, out: int = 2, activation: str = "sigmoid", n_in: int = 2, seed: int = 0) -> loom.Network:
    config = {
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 2,
        "layers": [
            {"type": "dense", "input_size": n_in, "output_size": 8, "activation": "tanh"},
            {"type": "dense", "output_size": out, "activation": activation},
        ],
    }
    return loom.create_network_from_json(config, backend=backend, seed=seed)


def data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2)).astype(np.float32)
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64)


def params(net: loom.Network) -> list[np.ndarray]:
    return [loom.to_numpy(a).copy() for _, a in net.named_parameters()]


# ---------------------------------------------------------------------------------------------- acceptance
def test_two_moons_reach_97_percent_validation_accuracy_with_adam(backend):
    x, y = make_moons(1000, noise=0.1, seed=0)
    net = loom.create_network_from_json(MOONS_NET, backend=backend, seed=0)
    history = net.fit(
        x, y, epochs=50, batch_size=32, learning_rate=0.01, optimizer="adam", validation_split=0.2, seed=0, verbose=0
    )
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert len(history.history["val_accuracy"]) == 50
    assert history.history["val_accuracy"][-1] >= 0.97
    assert history.params["loss"] == "cross_entropy"  # softmax output + class labels
    assert net.evaluate(x[800:], y[800:])["accuracy"] == pytest.approx(history.history["val_accuracy"][-1])


# ---------------------------------------------------------------------------------------------- conventions
def test_fit_loss_is_the_batch_mean_and_train_keeps_loom_convention(backend):
    """Cross-entropy: fit's number is the mean over samples, LOOM's train divides by the output length too."""
    x, labels = data(12)
    one_hot = np.eye(3, dtype=np.float32)[labels + (x[:, 0] > 1)]
    net = mlp(backend, out=3, activation="linear")
    net.layers.append(loom.LayerConfig(type="softmax"))
    net.layers_per_cell = 3
    p = loom.to_numpy(net.predict(x, batch_size=1)).astype(np.float64)
    per_sample = -(one_hot * np.log(np.clip(p, 1e-7, 1 - 1e-7))).sum(axis=1)
    history = net.fit(x, one_hot, epochs=1, batch_size=1, optimizer="sgd", learning_rate=0.0, verbose=0)
    assert history.history["loss"][0] == pytest.approx(per_sample.mean(), rel=1e-6)
    loom_loss = net.train([(x[i], one_hot[i]) for i in range(12)], {"Epochs": 1, "LearningRate": 0.0, "LossType": "ce"})
    assert loom_loss.final_loss == pytest.approx(per_sample.mean() / 3, rel=1e-6)


def test_binary_cross_entropy_and_binary_accuracy(backend):
    x, y = data(40)
    net = mlp(backend, out=1)
    p = loom.to_numpy(net.predict(x)).reshape(-1).astype(np.float64)
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    history = net.fit(x, y, epochs=1, batch_size=40, optimizer="sgd", learning_rate=0.0, loss="bce", verbose=0)
    assert history.history["loss"][0] == pytest.approx(want, rel=1e-5)
    assert history.history["accuracy"][0] == pytest.approx(np.mean((p > 0.5) == y))


def test_fit_with_mse_and_plain_sgd_equals_train_on_the_same_batches(backend):
    x, y = data(24)
    targets = np.stack([y, 1 - y], axis=1).astype(np.float32) * 0.8 + 0.1  # real-valued: no accuracy
    fitted, trained = mlp(backend), mlp(backend)
    history = fitted.fit(
        x, targets, epochs=3, batch_size=6, optimizer="sgd", learning_rate=0.3, shuffle=False, verbose=0
    )
    batches = [(x[i : i + 6], targets[i : i + 6]) for i in range(0, 24, 6)]
    result = trained.train(batches, {"Epochs": 3, "LearningRate": 0.3})
    assert sorted(history.history) == ["loss"]
    np.testing.assert_allclose(history.history["loss"], result.loss_history, rtol=1e-6)
    for a, b in zip(params(fitted), params(trained), strict=True):
        if train_kernels(backend) is None:
            np.testing.assert_array_equal(a, b)
        else:  # on the GPU train runs this tiny network through the epoch kernel, fit step by step
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_labels_and_one_hot_targets_train_identically(backend):
    x, y = data(50)
    a, b = mlp(backend), mlp(backend)
    ha = a.fit(x, y, epochs=3, batch_size=8, seed=3, verbose=0)
    hb = b.fit(x, np.eye(2, dtype=np.float32)[y], epochs=3, batch_size=8, seed=3, verbose=0)
    assert ha.history == hb.history
    assert sorted(ha.history) == ["accuracy", "loss"]


def test_shuffle_is_seeded(backend):
    x, y = data(64)
    runs = [mlp(backend).fit(x, y, epochs=2, batch_size=8, seed=s, verbose=0).history["loss"] for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    unshuffled = [mlp(backend).fit(x, y, epochs=2, batch_size=8, shuffle=False, seed=s, verbose=0) for s in (1, 2)]
    assert unshuffled[0].history == unshuffled[1].history


def test_validation_split_takes_the_last_rows_like_validation_data(backend):
    x, y = data(40)
    split, explicit = mlp(backend), mlp(backend)
    h1 = split.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, seed=0, verbose=0)
    h2 = explicit.fit(x[:30], y[:30], epochs=2, batch_size=8, validation_data=(x[30:], y[30:]), seed=0, verbose=0)
    assert h1.history == h2.history
    assert h1.params["samples"] == 30 and h1.params["steps"] == 4


def test_predict_and_evaluate(backend):
    x, y = data(300)
    net = mlp(backend)
    full = loom.to_numpy(net.forward(x))
    np.testing.assert_allclose(loom.to_numpy(net.predict(x, batch_size=7)), full, rtol=1e-6, atol=1e-7)
    assert loom.to_numpy(net.predict(x.tolist())).shape == (300, 2)
    result = net.evaluate(x, y)
    p = full.astype(np.float64)
    t = np.eye(2)[y]
    assert result["loss"] == pytest.approx(((p - t) ** 2).mean(), rel=1e-5)  # sigmoid outputs: mse by default
    assert result["accuracy"] == pytest.approx(np.mean(p.argmax(axis=1) == y))


def test_predict_leaves_the_recorded_forward_alone(backend):
    net = mlp(backend)
    net.forward(np.ones(2, np.float32))
    net.predict(np.zeros((5, 2), np.float32))
    assert net.backward(np.ones(2, np.float32)).shape == (2,)  # still the one-sample tape


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "message"),
    [
        (np.zeros((4, 2)), np.zeros(3), {}, ShapeError, r"y: expected 4 rows \(one per sample of x\), got 3"),
        (np.zeros((2, 2)), [0, 2], {}, ShapeError, r"y: class label 2 at row 1 is outside 0\.\.1"),
        (np.zeros((2, 2)), [0, 0.5], {}, ShapeError, r"y: a 1-D target .* expected integers 0\.\.1, got 0\.5 at row 1"),
        (np.zeros((2, 2)), np.zeros((2, 3)), {}, ShapeError, r"y: expected 2 target values per sample"),
        (np.zeros(4), [0], {}, ShapeError, r"x: expected a 2-D \[samples, features\] array, got shape \(4,\)"),
        ([[0, 1], [np.nan, 2]], [0, 1], {}, ShapeError, r"x: row 1 holds NaN or Inf"),
        (np.zeros((2, 2)), [0, 1], {"validation_split": 1.0}, ConfigError, r"fit\.validation_split: expected"),
        (np.zeros((3, 2)), [0, 1, 1], {"validation_split": 0.9}, ConfigError, r"0\.9 of 3 samples leaves no training"),
        (np.zeros((2, 2)), [0, 1], {"verbose": 3}, ConfigError, r"fit\.verbose: expected 0, 1, 2 or 'auto'"),
        (np.zeros((2, 2)), [0, 1], {"loss": "hinge"}, ConfigError, r"fit\.loss: unknown loss type 'hinge'"),
        (np.zeros((2, 2)), [0, 1], {"batch_size": 0}, ConfigError, r"fit\.batch_size: expected a positive integer"),
        (np.zeros((2, 2)), [0, 1], {"validation_data": ([[0, 0]], [5])}, ShapeError, r"validation_data\[1\]: class"),
    ],
)
def test_bad_fit_arguments_name_what_is_wrong(x, y, kwargs, error, message, backend):
    with pytest.raises(error, match=message):
        mlp(backend).fit(x, y, **{"epochs": 1, "verbose": 0, **kwargs})


# ---------------------------------------------------------------------------------------------- callbacks
class ScriptedMetric(Callback):
    """Puts a scripted number into the logs and records the weights at every epoch end."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.weights = values, []

    def on_epoch_end(self, epoch, logs=None):
        logs["scripted"] = self.values[epoch]
        self.weights.append(params(self.model))


def test_early_stopping_stops_and_restores_the_best_weights(backend):
    x, y = data(32)
    script = ScriptedMetric([1.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
    stop = loom.EarlyStopping(monitor="scripted", patience=2, restore_best_weights=True)
    net = mlp(backend)
    history = net.fit(x, y, epochs=7, batch_size=8, callbacks=[script, stop], verbose=0)
    assert history.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for a, b in zip(params(net), script.weights[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(params(net)[0], script.weights[3][0])


def test_early_stopping_on_a_missing_key_says_what_is_logged(backend):
    x, y = data(16)
    with pytest.raises(ConfigError, match=r"EarlyStopping\.monitor: 'val_loss' is not logged \(pass validation data"):
        mlp(backend).fit(x, y, epochs=2, callbacks=[loom.EarlyStopping()], verbose=0)


def test_model_checkpoint_saves_the_best_model_atomically(backend, tmp_path):
    x, y = data(32)
    script = ScriptedMetric([0.9, 0.4, 0.6, 0.3, 0.8])
    best = tmp_path / "best.json"
    checkpoint = loom.ModelCheckpoint(best, monitor="scripted", save_best_only=True, model_id="best")
    every = loom.ModelCheckpoint(tmp_path / "epoch-{epoch:02d}-{loss:.3f}.json", monitor="loss")
    mlp(backend).fit(x, y, epochs=5, batch_size=8, callbacks=[script, checkpoint, every], verbose=0)
    assert checkpoint.saved == [best] * 3  # epochs 1, 2 and 4 improved
    saved = loom.load_model(best, "best", backend=backend)
    for a, b in zip(params(saved), script.weights[3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(every.saved) == 5 and every.saved[0].name.startswith("epoch-01-")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left


def test_callbacks_see_keras_hooks_in_order(backend):
    events = []

    class Recorder(Callback):
        def on_train_begin(self, logs=None):
            events.append("begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch{epoch}")

        def on_train_batch_end(self, batch, logs=None):
            events.append(f"b{batch}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"end{epoch}:{sorted(logs)}")

        def on_train_end(self, logs=None):
            events.append("done")

    x, y = data(8)
    mlp(backend).fit(x, y, epochs=2, batch_size=4, callbacks=[Recorder()], verbose=0)
    logged = "['accuracy', 'learning_rate', 'loss']"
    assert events == ["begin", "epoch0", "b0", "b1", f"end0:{logged}", "epoch1", "b0", "b1", f"end1:{logged}", "done"]


def test_reporters_print_one_line_per_epoch_when_not_a_terminal(backend, capsys):
    x, y = data(16)
    mlp(backend).fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose="auto")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Epoch 1/3 - loss: ") and " - val_accuracy: " in lines[0] and lines[0].endswith("s")
    mlp(backend).fit(x, y, epochs=3, verbose=0)
    assert capsys.readouterr().out == ""


def test_a_terminal_gets_a_progress_bar_over_epochs(backend, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    x, y = data(16)
    mlp(backend).fit(x, y, epochs=3, batch_size=8)
    assert re.search(r"training: 100%.*\| 3/3 .*loss: \d\.\d{4} - accuracy: ", err.getvalue())
    assert capsys.readouterr().out == ""  # no epoch lines as well


# ---------------------------------------------------------------------------------------------- plots
def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", header[16:24])


def test_history_plot_writes_a_real_png(backend, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    x, y = data(40)
    history = mlp(backend).fit(x, y, epochs=4, batch_size=8, validation_split=0.25, verbose=0)
    path = history.plot(tmp_path / "plots" / "loss.png", log_scale=True, title="two moons")
    assert png_size(path) == (640, 480)
    pixels = image.imread(path)[..., :3]
    assert pixels.shape == (480, 640, 3)
    drawn = (pixels < 0.9).any(axis=2).mean()
    assert 0.01 < drawn < 0.5  # axes, labels and curves on a white background
    colours = {tuple(np.round(p, 1)) for p in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 5
    # a LOOM TrainingResult and a plain dict plot too, at the size asked for
    result = mlp(backend).train([(x[:4], np.eye(2, dtype=np.float32)[y[:4]])], {"Epochs": 3})
    assert png_size(loom.plot_history(result, tmp_path / "train.png", size=(4, 3), dpi=50)) == (200, 150)
    assert png_size(loom.plot_history({"loss": [3, 2, 1]}, tmp_path / "d.png")) == (640, 480)


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"plotting needs matplotlib.*pip install 'loom-nn\[plot\]'"):
        loom.plot_history({"loss": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="non-empty 'loss' list"):
        loom.plot_history({"accuracy": [1.0]}, tmp_path / "x.png")


# ---------------------------------------------------------------------------------------------- summary
def test_summary_lists_every_layer_with_sizes_and_parameters(backend):
    from loom.cli import GRID_SCATTER_CONFIG

    net = loom.create_network_from_json(GRID_SCATTER_CONFIG, backend=backend, seed=0)
    printed = []
    net.summary(print_fn=printed.append)
    text = printed[0]
    assert text == summary_text(net)
    lines = text.splitlines()
    assert lines[0] == f"Network: grid 1x3x1, batch_size 1, backend {net.backend}"
    rows = {line.split()[0]: line for line in lines if line[:1].isdigit()}
    assert set(rows) == {"0", "1", "2"}
    assert "(0, 0, 0)" in rows["0"] and "dense" in rows["0"] and "relu" in rows["0"] and "8 → 16" in rows["0"]
    assert rows["0"].endswith(" 144") and rows["2"].endswith(" 50")
    assert "parallel (grid_scatter, 3 branches)" in rows["1"] and "16 → 24" in rows["1"]
    assert "lstm (seq 1)" in text and "└ branch 2" in text and "16 → 8" in text
    assert lines[-1] == f"Total params: {net.num_parameters():,}" == "Total params: 1,466"
