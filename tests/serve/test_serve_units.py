"""``loom serve`` pieces without a server: stop sequences, OpenAI request checks, lab sessions,
training in chunks, the diagram, presets, binding rules of the command."""

from __future__ import annotations

import json
import random
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import loom
from loom.cli import GRID_SCATTER_BATCHES, GRID_SCATTER_CONFIG, main
from loom.errors import ConfigError, ShapeError, TrainingDivergedError
from loom.serve.cli import bind_warning, is_loopback
from loom.serve.diagram import network_svg
from loom.serve.http import ServeError, loom_error
from loom.serve.lab import LabLimits, LabStore, parse_lab_data, predictions, training_config
from loom.serve.openai_schema import parse_chat_request, parse_completion_request
from loom.serve.presets import PRESETS, preset_payload
from loom.serve.stop import StopMatcher

SVG = "{http://www.w3.org/2000/svg}"


def run_async(factory):
    """``asyncio.run(factory())`` on a thread of its own (Playwright may own this thread's loop)."""
    import asyncio

    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(factory())
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(120)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ------------------------------------------------------------------------------------------ stop sequences
def _reference_cut(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


@pytest.mark.parametrize("seed", range(40))
def test_stop_matcher_equals_cutting_the_whole_text(seed: int) -> None:
    """Fed in random pieces, the released text is the full text cut before the earliest stop string."""
    rng = random.Random(seed)
    alphabet = "ab \n"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
    matcher, out, pos = StopMatcher(stops), [], 0
    while pos < len(text):
        step = rng.randint(1, 5)
        out.append(matcher.feed(text[pos : pos + step]))
        pos += step
    out.append(matcher.flush())
    expected, hit = _reference_cut(text, stops)
    assert "".join(out) == expected
    assert matcher.stopped == hit


def test_stop_matcher_holds_back_only_possible_starts() -> None:
    m = StopMatcher(["</end>"])
    assert m.feed("hello </") == "hello "
    assert m.feed("b>") == "</b>"  # not a stop after all: released
    assert m.feed(" x </en") == " x "
    assert m.feed("d> never") == ""
    assert m.stopped and m.flush() == ""


# ------------------------------------------------------------------------------------------ OpenAI checks
def _param_of(body: dict, parse=parse_completion_request) -> tuple[int, str | None, str]:
    with pytest.raises(ServeError) as info:
        parse(body)
    return info.value.status, info.value.param, info.value.message


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"prompt": "x"}, "model", "must provide a model"),
        ({"model": 3, "prompt": "x"}, "model", "expected a string"),
        ({"model": "m", "prompt": "x", "max_tokens": -5}, "max_tokens", ">= 1"),
        ({"model": "m", "prompt": "x", "max_tokens": 2.5}, "max_tokens", "expected an integer"),
        ({"model": "m", "prompt": "x", "max_tokens": True}, "max_tokens", "expected an integer"),
        ({"model": "m", "prompt": "x", "temperature": "hot"}, "temperature", "expected a number"),
        ({"model": "m", "prompt": "x", "temperature": 3}, "temperature", "from 0 to 2"),
        ({"model": "m", "prompt": "x", "top_p": 1.5}, "top_p", "from 0 to 1"),
        ({"model": "m", "prompt": "x", "seed": "1"}, "seed", "expected an integer"),
        ({"model": "m", "prompt": "x", "stop": 5}, "stop", "string or an array"),
        ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"model": "m", "prompt": "x", "stream": "yes"}, "stream", "expected a boolean"),
        ({"model": "m", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options", "only allowed"),
        ({"model": "m", "prompt": "x", "n": 2}, "n", "not supported"),
        ({"model": "m", "prompt": "x", "logprobs": 3}, "logprobs", "not supported"),
        ({"model": "m", "prompt": "x", "presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"model": "m"}, "prompt", "must provide a prompt"),
        ({"model": "m", "prompt": {"a": 1}}, "prompt", "expected a string"),
        ({"model": "m", "prompt": ["a", "b"]}, "prompt", "one prompt"),
    ],
)
def test_completion_request_errors_name_the_field(body: dict, param: str, needle: str) -> None:
    status, got_param, message = _param_of(body)
    assert status == 400
    assert got_param == param
    assert needle in message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
    ],
)
def test_chat_request_errors_name_the_field(body: dict, param: str) -> None:
    status, got_param, _ = _param_of(body, parse_chat_request)
    assert (status, got_param) == (400, param)


def test_requests_parse_with_openai_semantics() -> None:
    req = parse_completion_request(
        {"model": "m", "prompt": ["hello"], "max_tokens": 7, "stop": "\n", "seed": 3, "top_p": 1.0, "user": "u"}
    )
    assert req.prompt == "hello" and req.params.max_tokens == 7 and req.params.stop == ("\n",)
    assert req.params.top_p is None and req.params.temperature == 1.0 and req.params.seed == 3
    assert parse_completion_request({"model": "m", "prompt": "x"}).params.max_tokens == 16  # OpenAI's default
    assert parse_completion_request({"model": "m", "prompt": [1, 2, 3]}).prompt == (1, 2, 3)
    greedy = parse_completion_request({"model": "m", "prompt": "x", "top_p": 0, "temperature": 1})
    assert greedy.params.temperature == 0.0 and greedy.params.top_p is None
    chat = parse_chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ],
            "max_completion_tokens": 9,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert chat.messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"})
    assert chat.params.max_tokens == 9 and chat.params.stream and chat.params.include_usage


def test_loom_errors_keep_their_class_and_json_path() -> None:
    err = loom_error(ConfigError("layers[1].branches[0].combine_mode: unknown combine mode 'x'"))
    assert (err.status, err.type, err.param) == (400, "ConfigError", "layers[1].branches[0].combine_mode")
    assert loom_error(ShapeError("data[2].Input: expected 8 values")).param == "data[2].Input"
    assert loom_error(ConfigError("training config.Optimizer: unknown key")).param == "training config.Optimizer"
    assert loom_error(ConfigError("no path here, just words")).param is None


# ------------------------------------------------------------------------------------------ lab
def test_train_callbacks_stop_after_the_epoch_that_asks() -> None:
    """The lab streams and stops through ``train(callbacks=...)``: Stop ends training after that epoch."""

    class StopAt(loom.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:
                self.model.stop_training = True

    config = {"LearningRate": 0.15, "GradientClip": 1.0, "LossType": "mse", "Optimizer": "adam"}
    stopped = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=5)
    result = stopped.train(GRID_SCATTER_BATCHES, {**config, "Epochs": 60}, callbacks=[StopAt()])
    four = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=5)
    expected = four.train(GRID_SCATTER_BATCHES, {**config, "Epochs": 4})
    assert result.loss_history == expected.loss_history and result.final_loss == expected.final_loss
    x = GRID_SCATTER_BATCHES[0]["Input"]
    assert np.array_equal(loom.to_numpy(stopped.forward(x)), loom.to_numpy(four.forward(x)))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_learns_its_data(name: str) -> None:
    preset = PRESETS[name]
    payload = {p["name"]: p for p in preset_payload()["presets"]}[name]
    store = LabStore(LabLimits())
    net = store.build_network(payload["config"], seed=1)
    data = parse_lab_data(payload["data"], 10_000)
    epochs, config = training_config(preset["training"], max_epochs=10**6)
    net.train(data.batches(), {**config, "Epochs": epochs})
    result = predictions(net, data)
    assert result["correct"] == result["total"] == len(preset["data"])


def test_training_config_errors_are_loom_config_errors() -> None:
    with pytest.raises(ConfigError, match="LossType: unknown loss type 'hinge'"):
        training_config({"epochs": 5, "loss": "hinge"}, max_epochs=100)
    with pytest.raises(ConfigError, match=r"epochs: expected 1 to 100, got 101"):
        training_config({"epochs": 101}, max_epochs=100)
    with pytest.raises(ConfigError, match="learning_rate"):
        training_config({"epochs": 5, "learning_rate": "fast"}, max_epochs=100)
    epochs, config = training_config({"epochs": 5, "optimizer": "sgd"}, max_epochs=100)
    assert epochs == 5 and config["Optimizer"] == "sgd"
    assert training_config({"epochs": 5, "optimizer": "adam"}, max_epochs=100)[1]["Optimizer"] == "adam"
    momentum = training_config({"epochs": 5, "optimizer": "momentum"}, max_epochs=100)[1]
    assert (momentum["Optimizer"], momentum["Momentum"]) == ("sgd", 0.9)
    with pytest.raises(ConfigError, match="optimizer"):
        training_config({"epochs": 5, "optimizer": "nadam"}, max_epochs=100)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ("[{", ConfigError, "data: invalid JSON"),
        ("[]", ConfigError, "non-empty list"),
        ('[{"Input": [1]}]', ShapeError, r"data\[0\]: expected keys 'Input' and 'Target'"),
        ('[{"Input": [], "Target": [1]}]', ShapeError, r"data\[0\].Input: expected a non-empty list"),
        ('[{"Input": [1, "a"], "Target": [1]}]', ShapeError, r"data\[0\].Input\[1\]: expected a finite number"),
        ('[{"Input": [1, 2], "Target": [1]}, {"Input": [1], "Target": [1]}]', ShapeError, r"data\[1\].Input: .*2"),
        ('[{"input": [1], "target": [1]}, {"Input": [1], "Target": [1]}, {"i": 1}]', ShapeError, r"data\[2\]"),
    ],
)
def test_lab_data_errors_name_the_sample(data: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_lab_data(data, 10)


def test_predictions_survive_non_finite_outputs() -> None:
    config = {
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 1,
        "layers": [{"type": "dense", "input_size": 2, "output_size": 1, "activation": "linear"}],
    }
    net = loom.create_network_from_json(config, seed=0)
    net.layers[0].params["kernel"][...] = np.nan
    result = predictions(net, parse_lab_data([{"Input": [1, 2], "Target": [1]}], 10))
    row = result["rows"][0]
    assert result["correct"] == 0 and (row["predicted"], row["output"], row["correct"]) == (None, [None], False)
    json.dumps(result, allow_nan=False)  # what the server sends: no NaN in the JSON


def test_lab_refuses_oversized_networks_and_data_before_allocating() -> None:
    store = LabStore(LabLimits(max_parameters=1000, max_samples=3))
    big = {
        "batch_size": 1,
        "grid_rows": 1,
        "grid_cols": 1,
        "layers_per_cell": 1,
        "layers": [{"type": "dense", "input_size": 100_000, "output_size": 100_000}],
    }
    with pytest.raises(
        ConfigError, match=r"needs 10,000,100,000 parameters up to this layer, more than the limit of 1,000"
    ):
        store.build_network(json.dumps(big), seed=0)
    with pytest.raises(ConfigError, match="4 samples; the lab accepts at most 3"):
        parse_lab_data([{"Input": [1], "Target": [1]}] * 4, 3)
    with pytest.raises(ConfigError, match="more than 10 numbers"):
        parse_lab_data([{"Input": [1, 2, 3, 4], "Target": [1]}] * 3, 10, max_values=10)
    kept = parse_lab_data([{"Input": [1, 2, 3, 4], "Target": [1]}] * 2, 10, max_values=10)
    assert kept.inputs.dtype == np.float32 and kept.inputs.shape == (2, 4) and kept.targets.shape == (2, 1)


def test_lab_store_evicts_least_recently_used_idle_sessions() -> None:
    store = LabStore(LabLimits(max_sessions=2))
    data = parse_lab_data(GRID_SCATTER_BATCHES, 10)
    net = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=0)
    a, b = store.create(net, data), store.create(net, data)
    store.get(a.id)  # a is now the most recently used
    c = store.create(net, data)
    assert len(store) == 2
    assert store.get(a.id) is a and store.get(c.id) is c
    with pytest.raises(ServeError) as info:
        store.get(b.id)
    assert (info.value.status, info.value.code) == (404, "session_not_found")
    # a session that trains is never evicted; when all of them train, a new one is refused
    a.training = c.training = object()  # type: ignore[assignment]
    with pytest.raises(ServeError) as info:
        store.create(net, data)
    assert (info.value.status, info.value.code) == (503, "lab_full")


def test_lab_store_drops_idle_sessions() -> None:
    store = LabStore(LabLimits(idle_seconds=0.05))
    data = parse_lab_data(GRID_SCATTER_BATCHES, 10)
    net = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=0)
    old = store.create(net, data)
    time.sleep(0.1)
    store.create(net, data)
    with pytest.raises(ServeError):
        store.get(old.id)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the diverging run overflows on purpose
def test_training_run_streams_and_stops_between_chunks() -> None:
    """A training on its thread: progress events, Stop honoured, session freed; divergence reported."""
    import asyncio

    from loom.serve.channel import EventChannel

    async def run(epochs: int, config: dict, stop_after: int | None) -> list[tuple[str, dict]]:
        store = LabStore(LabLimits())
        session = store.create(
            loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=3), parse_lab_data(GRID_SCATTER_BATCHES, 10)
        )
        channel = EventChannel(asyncio.get_running_loop())
        run_ = store.start_training(session, epochs, config, channel)
        events = []
        async for name, payload in channel:
            events.append((name, payload))
            if stop_after is not None and name == "progress" and len(events) >= stop_after:
                run_.stop()
        run_.thread.join(5)
        assert not session.busy
        return events

    config = {"LearningRate": 0.15, "GradientClip": 1.0, "LossType": "mse", "Optimizer": "adam"}
    events = run_async(lambda: run(200, config, None))  # Adam: one train call keeps its moments
    names = [n for n, _ in events]
    assert names[0] == "start" and names[-1] == "done" and names.count("progress") >= 8
    losses = [v for n, p in events if n == "progress" for v in p["losses"]]
    reference = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=3).train(
        GRID_SCATTER_BATCHES, {**config, "Epochs": 200}
    )
    assert losses == reference.loss_history
    done = events[-1][1]
    assert done["final_loss"] == reference.final_loss and not done["stopped"]
    assert done["predictions"]["correct"] == 4

    stopped = run_async(lambda: run(10**6, config, 3))
    done = stopped[-1][1]
    assert stopped[-1][0] == "done" and done["stopped"] and done["epochs_run"] < 10**6

    diverged = run_async(lambda: run(50, {"LearningRate": 1e30, "LossType": "mse"}, None))
    assert diverged[-1][0] == "error" and diverged[-1][1]["type"] == TrainingDivergedError.__name__


def test_two_sessions_train_at_once_without_touching_each_other() -> None:
    import asyncio

    from loom.serve.channel import EventChannel

    config = {"LearningRate": 0.15, "GradientClip": 1.0, "LossType": "mse"}

    async def both() -> list[list[float]]:
        store = LabStore(LabLimits())
        data = parse_lab_data(GRID_SCATTER_BATCHES, 10)
        sessions = [store.create(loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=s), data) for s in (1, 2)]
        channels = [EventChannel(asyncio.get_running_loop()) for _ in sessions]
        for s, ch in zip(sessions, channels, strict=True):
            store.start_training(s, 300, config, ch)

        async def losses(ch: EventChannel) -> list[float]:
            return [v async for n, p in ch if n == "progress" for v in p["losses"]]

        return await asyncio.gather(*(losses(ch) for ch in channels))

    got = run_async(both)
    for seed, history in zip((1, 2), got, strict=True):
        alone = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=seed).train(
            GRID_SCATTER_BATCHES, {**config, "Epochs": 300}
        )
        assert history == alone.loss_history
    assert got[0] != got[1]


def test_session_refuses_reads_while_training() -> None:
    store = LabStore(LabLimits())
    session = store.create(
        loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=0), parse_lab_data(GRID_SCATTER_BATCHES, 10)
    )
    session.lock.acquire()
    session.training = object()  # type: ignore[assignment]
    try:
        with pytest.raises(ServeError) as info:
            session.run_idle(lambda s: s.state())
        assert (info.value.status, info.value.code) == (409, "training")
    finally:
        session.lock.release()


# ------------------------------------------------------------------------------------------ diagram
def test_diagram_draws_grid_branches_and_scatter_placement() -> None:
    net = loom.create_network_from_json(GRID_SCATTER_CONFIG, seed=0)
    root = ET.fromstring(network_svg(net, [(8, 16), (16, 24), (24, 2)]))
    assert root.tag == f"{SVG}svg"
    layers = {g.get("data-path"): g.get("data-type") for g in root.iter(f"{SVG}g") if g.get("class") == "layer"}
    assert layers == {
        "layers[0]": "dense",
        "layers[1]": "parallel",
        "layers[1].branches[0]": "parallel",
        "layers[1].branches[0].branches[0]": "dense",
        "layers[1].branches[0].branches[1]": "dense",
        "layers[1].branches[1]": "lstm",
        "layers[1].branches[2]": "rnn",
        "layers[2]": "dense",
    }
    cells = {g.get("data-cell"): g.get("data-branches") for g in root.iter(f"{SVG}g") if g.get("class") == "grid-cell"}
    assert set(cells) == {"0,0", "0,1", "0,2"}
    scatter = {
        g.get("data-cell"): g.get("data-branches") for g in root.iter(f"{SVG}g") if g.get("class") == "scatter-cell"
    }
    assert scatter == {"0,0,0": "0", "1,0,0": "1", "2,0,0": "2"}
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "input (8)" in text and "output (2)" in text and "parallel · grid_scatter" in text


def test_diagram_places_branches_where_grid_positions_say() -> None:
    config = {
        "batch_size": 1,
        "grid_rows": 2,
        "grid_cols": 1,
        "layers_per_cell": 1,
        "layers": [
            {
                "type": "parallel",
                "combine_mode": "grid_scatter",
                "grid_output_rows": 1,
                "grid_output_cols": 2,
                "grid_output_layers": 2,
                "grid_positions": [
                    {"branch_index": 0, "target_row": 0, "target_col": 1, "target_layer": 1},
                    {"branch_index": 1, "target_row": 0, "target_col": 0, "target_layer": 0},
                ],
                "branches": [
                    {"type": "dense", "input_size": 4, "output_size": 3},
                    {"type": "dense", "input_size": 4, "output_size": 3},
                ],
            },
            {"type": "dense", "input_size": 6, "output_size": 1, "activation": "sigmoid"},
        ],
    }
    root = ET.fromstring(network_svg(loom.create_network_from_json(config, seed=0)))
    scatter = {
        g.get("data-cell"): g.get("data-branches") for g in root.iter(f"{SVG}g") if g.get("class") == "scatter-cell"
    }
    assert scatter == {"0,0,0": "1", "0,0,1": "", "0,1,0": "", "0,1,1": "0"}
    cells = [g.get("data-cell") for g in root.iter(f"{SVG}g") if g.get("class") == "grid-cell"]
    assert cells == ["0,0", "1,0"]


# ------------------------------------------------------------------------------------------ command
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.2", False),
        ("example.com", False),
        ("::", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_other_addresses_need_allow_remote_and_warn() -> None:
    assert bind_warning("127.0.0.1", False) is None
    with pytest.raises(ValueError, match="--allow-remote"):
        bind_warning("0.0.0.0", False)
    assert "no authentication" in bind_warning("0.0.0.0", True)


def test_serve_refuses_a_public_address_without_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--no-model"]) == 2
    err = capsys.readouterr().err
    assert "loom serve: error: --host 0.0.0.0 is not a loopback address" in err and "--allow-remote" in err


def test_serve_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--no-model"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_serve_without_cuda_refuses_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    from loom.backend import cupy_available

    if cupy_available():
        pytest.skip("CuPy and a CUDA device are available here")
    assert main(["serve", "--port", "0", "--gpu", "--no-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loom serve: error: ") and "CuPy" in err


def test_serve_checks_its_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "70000", "--no-model"]) == 2
    assert "--port must be 0..65535, got 70000" in capsys.readouterr().err
    assert main(["serve", "--port", "0", "--threads", "-1", "--no-model"]) == 2
    assert "--threads must be >= 0, got -1" in capsys.readouterr().err
    assert main(["serve", "--port", "0", "--max-sessions", "0", "--no-model"]) == 2
    assert "--max-sessions must be >= 1, got 0" in capsys.readouterr().err


def test_serve_reports_a_missing_model(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["serve", "--port", "0", "--model", str(tmp_path / "nope.gguf")]) == 2
    assert "nope.gguf: no such file or folder" in capsys.readouterr().err


def test_channel_close_and_cancel_are_thread_safe() -> None:
    import asyncio

    from loom.serve.channel import EventChannel

    async def go() -> list[int]:
        channel = EventChannel(asyncio.get_running_loop())

        def worker() -> None:
            for i in range(100):
                if channel.cancelled:
                    break
                channel.put(i)
            channel.close()

        threading.Thread(target=worker).start()
        return [i async for i in channel]

    assert run_async(go) == list(range(100))
