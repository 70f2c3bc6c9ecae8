"""Network lab sessions: one network per browser page, trained in a worker thread, bounded in number.

Each lab page gets its own session (a random id) holding its network, its training data
and at most one running training. Two tabs therefore never share weights: each trains,
stops, saves and loads its own network, and both may train at the same time (up to
``max_concurrent_trainings``; later ones wait for a free slot and say so).

Memory is bounded: at most ``max_sessions`` sessions live at once; creating one more
evicts the least recently used session that is not training (a page whose session was
evicted is told so and starts a new one); sessions idle for ``idle_seconds`` are dropped;
networks above ``max_parameters`` and data above ``max_samples`` / ``max_values`` are refused
before any weight is allocated (samples are kept as float32 arrays), so the lab's memory stays
under roughly ``max_sessions`` x (3 x 4 bytes x ``max_parameters`` + 4 bytes x ``max_values``).

Training runs ``Network.train`` in chunks of epochs (sized to ~50 ms, at least 25 chunks
per run) so the loss streams to the page and Stop takes effect between chunks; with
LOOM's plain SGD, chunked training gives exactly the loss history of one call.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import loom
from loom.backend import to_numpy
from loom.errors import ConfigError, LoomError, ModelFormatError, ShapeError
from loom.nn.builder import parse_config_text
from loom.nn.training import TrainingConfig
from loom.nn.training_engine import Callback
from loom.serve.channel import EventChannel
from loom.serve.describe import layer_rows, method_list, probe_sizes
from loom.serve.diagram import network_svg
from loom.serve.http import ServeError

__all__ = [
    "OPTIMIZERS",
    "LabData",
    "LabLimits",
    "LabSession",
    "LabStore",
    "parse_lab_data",
    "predictions",
    "training_config",
]

#: Optimizers the page offers; the value goes to the training config as ``"Optimizer"``
#: (``momentum`` is SGD with momentum 0.9).
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "momentum")

#: Rows of the predictions table sent to the page (the accuracy counts every sample).
MAX_PREDICTION_ROWS = 200

#: Longest time between two progress events of a training.
CHUNK_SECONDS = 0.05


@dataclass(frozen=True)
class LabLimits:
    """Bounds on what the lab keeps and accepts."""

    max_sessions: int = 16
    idle_seconds: float = 3600.0
    max_samples: int = 10_000
    max_values: int = 4_000_000
    max_parameters: int = 5_000_000
    max_epochs: int = 1_000_000
    max_concurrent_trainings: int = 2


@dataclass
class LabData:
    """Training samples: ``[n, in]`` flat inputs and ``[n, out]`` targets (float32)."""

    inputs: np.ndarray
    targets: np.ndarray

    @property
    def expected(self) -> list[float]:
        """Class index (argmax of the target) per sample, or the target itself for one output."""
        if self.targets.shape[1] == 1:
            return [float(t) for t in self.targets[:, 0]]
        return [float(k) for k in np.argmax(self.targets, axis=1)]

    def batches(self) -> list[dict[str, np.ndarray]]:
        """LOOM's ``[{"Input", "Target"}]`` (one row each)."""
        return [{"Input": x, "Target": t} for x, t in zip(self.inputs, self.targets, strict=True)]


def _numbers(value: Any, path: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ShapeError(f"{path}: expected a non-empty list of numbers")
    out = []
    for k, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ShapeError(f"{path}[{k}]: expected a finite number, got {v!r}")
        out.append(float(v))
    return out


def parse_lab_data(data: Any, max_samples: int, max_values: int = 4_000_000) -> LabData:
    """Validate training data: JSON text or a list of ``{"Input": [...], "Target": [...]}`` (any key case).

    Raises
    ------
    ConfigError
        Not JSON / not a list (path ``data``).
    ShapeError
        A sample without numbers, or inputs / targets of different lengths (path ``data[i].Input``).
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"data: invalid JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise ConfigError('data: expected a non-empty list of {"Input": [...], "Target": [...]} samples')
    if len(data) > max_samples:
        raise ConfigError(f"data: {len(data)} samples; the lab accepts at most {max_samples}")
    inputs, targets = [], []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise ShapeError(f'data[{i}]: expected an object {{"Input": [...], "Target": [...]}}')
        low = {str(k).lower(): v for k, v in item.items()}
        if "input" not in low or "target" not in low:
            raise ShapeError(f"data[{i}]: expected keys 'Input' and 'Target', got {sorted(map(str, item))}")
        inputs.append(_numbers(low["input"], f"data[{i}].Input"))
        targets.append(_numbers(low["target"], f"data[{i}].Target"))
        for name, rows in (("Input", inputs), ("Target", targets)):
            if len(rows[-1]) != len(rows[0]):
                raise ShapeError(f"data[{i}].{name}: expected {len(rows[0])} values like data[0], got {len(rows[-1])}")
        if (i + 1) * (len(inputs[0]) + len(targets[0])) > max_values:
            raise ConfigError(f"data: more than {max_values:,} numbers; the lab accepts at most that many")
    return LabData(np.asarray(inputs, dtype=np.float32), np.asarray(targets, dtype=np.float32))


def training_config(fields: Mapping[str, Any], *, max_epochs: int, use_gpu: bool = False) -> tuple[int, dict[str, Any]]:
    """The page's training fields as ``(epochs, LOOM training config without Epochs)``.

    The config is checked with :class:`loom.nn.training.TrainingConfig`, so a bad value
    (an unknown loss, an optimizer this loom does not have) raises loom's ``ConfigError``.
    """
    epochs = fields.get("epochs", 100)
    if isinstance(epochs, bool) or not isinstance(epochs, int | float) or not float(epochs).is_integer():
        raise ConfigError(f"epochs: expected a whole number, got {epochs!r}")
    epochs = int(epochs)
    if not 1 <= epochs <= max_epochs:
        raise ConfigError(f"epochs: expected 1 to {max_epochs}, got {epochs}")
    config: dict[str, Any] = {
        "LearningRate": fields.get("learning_rate", 0.01),
        "LossType": fields.get("loss", "mse"),
        "GradientClip": fields.get("gradient_clip", 0.0),
    }
    optimizer = fields.get("optimizer", "sgd")
    if not isinstance(optimizer, str):
        raise ConfigError(f"optimizer: expected a name, got {optimizer!r}")
    if optimizer.lower() == "momentum":  # the page's name for SGD with torch's usual momentum
        config.update({"Optimizer": "sgd", "Momentum": 0.9})
    else:
        config["Optimizer"] = optimizer
    if use_gpu:
        config["UseGPU"] = True
    TrainingConfig.from_dict({**config, "Epochs": epochs})
    return epochs, config


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _classes(values: list[float], chunks: int) -> list[int]:
    step = len(values) // chunks
    return [int(np.argmax(values[k * step : (k + 1) * step])) for k in range(chunks)]


def predictions(net: Any, data: LabData) -> dict[str, Any]:
    """Outputs of the network on every sample, with ✓ / ✗ against the targets.

    A sample counts as correct when the predicted class (argmax) matches the target's
    for every one of the ``batch_size`` samples a flat input holds; for one-output
    networks, when output and target round to the same value.
    """
    rows, correct = [], 0
    batch = max(int(net.batch_size), 1)
    for i, (x_row, t_row) in enumerate(zip(data.inputs, data.targets, strict=True)):
        x, t = x_row.tolist(), t_row.tolist()
        y = [float(v) for v in to_numpy(net.forward(x_row)).reshape(-1)]
        if len(y) != len(t):
            raise ShapeError(f"data[{i}].Target: the network outputs {len(y)} values, the target has {len(t)}")
        if len(t) == 1:
            ok = math.isfinite(y[0]) and round(y[0]) == round(t[0])
            predicted, expected = _finite(y[0]), t[0]
        else:
            chunks = batch if len(t) % batch == 0 and len(t) // batch > 1 else 1
            predicted_c, expected_c = _classes(y, chunks), _classes(t, chunks)
            ok = predicted_c == expected_c
            predicted = predicted_c[0] if chunks == 1 else predicted_c
            expected = expected_c[0] if chunks == 1 else expected_c
        correct += ok
        if i < MAX_PREDICTION_ROWS:
            rows.append(
                {
                    "index": i,
                    "input": [round(v, 6) for v in x[:8]],  # float32 values, shown as typed
                    "input_size": len(x),
                    "output": [_finite(v) for v in y[:10]],
                    "output_size": len(y),
                    "predicted": predicted,
                    "expected": expected,
                    "correct": bool(ok),
                }
            )
    return {"rows": rows, "correct": correct, "total": len(data.inputs)}


def quality(net: Any, data: LabData) -> dict[str, Any]:
    """LOOM's ``EvaluateNetwork`` score (0-100) and average deviation on the samples."""
    if net.batch_size != 1:
        return {"score": None, "reason": "LOOM's evaluation runs one sample at a time (batch_size 1 networks)"}
    try:
        metrics = net.evaluate_network(list(data.inputs), data.expected)
    except LoomError as exc:
        return {"score": None, "reason": str(exc)}
    return {
        "score": _finite(metrics.score),
        "avg_deviation": _finite(metrics.avg_deviation),
        "failures": metrics.failures,
        "total": metrics.total_samples,
    }


class LabSession:
    """One page's network, data and training.

    Attributes
    ----------
    id : str
        Random, unguessable session id.
    network : Network
    data : LabData
    """

    def __init__(self, session_id: str, network: Any, data: LabData) -> None:
        self.id = session_id
        self.network = network
        self.data = data
        self.last_used = time.monotonic()
        self.training: TrainingRun | None = None
        self.lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """True while a training runs (or waits for a slot)."""
        return self.training is not None

    def check_idle(self) -> None:
        """Refuse to read or replace the network while it trains (409)."""
        if self.busy:
            raise ServeError(409, "the network is training; press Stop or wait for it to finish", code="training")

    def run_idle(self, work: Callable[[LabSession], Any]) -> Any:
        """Run ``work(self)`` holding the session's lock; 409 while a training holds it."""
        self.check_idle()
        if not self.lock.acquire(timeout=1.0):
            raise ServeError(409, "the network is training; press Stop or wait for it to finish", code="training")
        try:
            self.last_used = time.monotonic()
            return work(self)
        finally:
            self.lock.release()

    def state(self) -> dict[str, Any]:
        """Everything the page shows about the network: summary, layers, diagram, methods, predictions."""
        net = self.network
        sizes = probe_sizes(net, self.data.inputs[0])
        try:
            preds: dict[str, Any] | None = predictions(net, self.data)
            preds_error = None
        except LoomError as exc:
            preds, preds_error = None, str(exc)
        return {
            "session_id": self.id,
            "summary": {
                "grid": [net.grid_rows, net.grid_cols, net.layers_per_cell],
                "batch_size": net.batch_size,
                "layers": net.total_layers(),
                "parameters": net.num_parameters(),
                "backend": net.backend,
            },
            "config": net_config_text(net),
            "layers": layer_rows(net, sizes),
            "diagram": network_svg(net, sizes),
            "methods": method_list(net),
            "predictions": preds,
            "predictions_error": preds_error,
            "quality": quality(net, self.data) if preds is not None else None,
        }


def net_config_text(net: Any) -> str:
    """The network's config (no weights) as indented JSON, as the bundle stores it."""
    bundle = json.loads(net.save_model_to_string("lab"))
    cfg = dict(bundle["models"][0]["cfg"])
    cfg.pop("id", None)
    return json.dumps(cfg, indent=2)


class _LossStreamer(Callback):
    """Sends the epochs' losses to the page (at least 25 times a run, and every ``CHUNK_SECONDS``).

    A cancelled channel (Stop, or the page went away) ends training after the current epoch.
    """

    def __init__(self, channel: EventChannel, epochs: int, start: float) -> None:
        self.channel, self.epochs, self.start = channel, epochs, start
        self.every = max(1, math.ceil(epochs / 25))
        self.pending: list[float | None] = []
        self.last_sent = start

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.pending.append(_finite((logs or {}).get("loss", math.nan)))
        now = time.perf_counter()
        last = epoch + 1 == self.epochs
        if self.channel.cancelled and self.model is not None:
            self.model.stop_training = True
        due = (epoch + 1) % self.every == 0 or now - self.last_sent >= CHUNK_SECONDS
        if last or due or self.channel.cancelled:
            progress = {"epoch": epoch + 1, "epochs": self.epochs, "losses": self.pending, "elapsed": now - self.start}
            self.channel.put(("progress", progress))
            self.pending, self.last_sent = [], now


class TrainingRun:
    """One training of one session, run on its own thread, streaming to a channel."""

    def __init__(
        self, session: LabSession, epochs: int, config: dict[str, Any], channel: EventChannel, store: LabStore
    ) -> None:
        self.session = session
        self.epochs = epochs
        self.config = config
        self.channel = channel
        self.store = store
        self.thread = threading.Thread(target=self._run, name=f"loom-lab-{session.id[:6]}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the training to stop after its current chunk."""
        self.channel.cancel()

    def _wait_for_slot(self) -> bool:
        slots = self.store.training_slots
        if slots.acquire(blocking=False):
            return True
        self.channel.put(("queued", {"message": "waiting for another page's training to finish"}))
        while not self.channel.cancelled:
            if slots.acquire(timeout=0.1):
                return True
        return False

    def _run(self) -> None:
        session, channel = self.session, self.channel
        got_slot = False
        try:
            got_slot = self._wait_for_slot()
            if got_slot:
                with session.lock:
                    self._train()
            else:
                channel.put(("done", {"stopped": True, "epochs_run": 0}))
        except LoomError as exc:
            channel.put(("error", {"message": str(exc), "type": type(exc).__name__}))
        except Exception as exc:  # never a traceback to the page; the server log keeps it
            import logging

            logging.getLogger("loom.serve").exception("lab training failed")
            channel.put(("error", {"message": f"training failed: {type(exc).__name__}: {exc}", "type": "error"}))
        finally:
            if got_slot:
                self.store.training_slots.release()
            session.training = None
            session.last_used = time.monotonic()
            channel.close()

    def _train(self) -> None:
        net, channel, epochs = self.session.network, self.channel, self.epochs
        start = time.perf_counter()
        channel.put(("start", {"epochs": epochs}))
        streamer = _LossStreamer(channel, epochs, start)
        # one call: optimizer state and schedules run across all epochs; Stop ends it after an epoch
        result = net.train(self.session.data.batches(), {**self.config, "Epochs": epochs}, callbacks=[streamer])
        history, done = result.loss_history, len(result.loss_history)
        elapsed = time.perf_counter() - start
        state = self.session.data
        try:
            preds: dict[str, Any] | None = predictions(net, state)
        except LoomError:
            preds = None
        channel.put(
            (
                "done",
                {
                    "stopped": done < epochs,
                    "epochs_run": done,
                    "final_loss": _finite(history[-1]) if history else None,
                    "best_loss": _finite(min(history)) if history else None,
                    "initial_loss": _finite(history[0]) if history else None,
                    "elapsed": elapsed,
                    "predictions": preds,
                    "quality": quality(net, state) if preds is not None else None,
                },
            )
        )


class LabStore:
    """The live sessions, least recently used first.

    Parameters
    ----------
    limits : LabLimits
    backend : str
        Array backend of new networks (``"numpy"`` or ``"cupy"``).
    """

    def __init__(self, limits: LabLimits | None = None, backend: str = "numpy") -> None:
        self.limits = limits or LabLimits()
        self.backend = backend
        self._sessions: OrderedDict[str, LabSession] = OrderedDict()
        self._lock = threading.Lock()
        self.training_slots = threading.BoundedSemaphore(self.limits.max_concurrent_trainings)

    def __len__(self) -> int:
        return len(self._sessions)

    # ------------------------------------------------------------------ building
    def build_network(self, config_text: Any, seed: int | None) -> Any:
        """A network from a config (JSON text or object) or a bundle, its size checked first."""
        data = parse_config_text(config_text)
        if data.get("type") == "modelhost/bundle":
            return self.load_bundle(config_text if isinstance(config_text, str) else json.dumps(data))
        # the builder checks the parameter budget before allocating anything
        with loom.limits.limited(max_parameters=self.limits.max_parameters):
            return loom.create_network_from_json(data, backend=self.backend, seed=seed)

    def load_bundle(self, text: str) -> Any:
        """A network from LOOM bundle text (the first model in it)."""
        if not isinstance(text, str) or not text.strip():
            raise ModelFormatError("bundle: expected the text of a LOOM model bundle")
        with loom.limits.limited(max_parameters=self.limits.max_parameters):
            return loom.load_model_from_string(text, None, backend=self.backend)

    # ------------------------------------------------------------------ sessions
    def create(self, network: Any, data: LabData) -> LabSession:
        """Register a new session, evicting idle or least recently used ones beyond the limit."""
        with self._lock:
            self._evict_locked()
            session = LabSession(secrets.token_urlsafe(16), network, data)
            self._sessions[session.id] = session
            return session

    def get(self, session_id: str) -> LabSession:
        """The session (marked as just used).

        Raises
        ------
        ServeError
            404 ``session_not_found`` when it expired, was evicted or never existed.
        """
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise ServeError(
                    404,
                    "this page's lab session is gone (evicted to bound memory, idle too long, or the server "
                    "restarted); the page starts a new one",
                    type="SessionNotFound",
                    code="session_not_found",
                )
            self._sessions.move_to_end(session_id)
            session.last_used = time.monotonic()
            return session

    def _evict_locked(self) -> None:
        now = time.monotonic()
        for sid, s in list(self._sessions.items()):
            if not s.busy and now - s.last_used > self.limits.idle_seconds:
                del self._sessions[sid]
        while len(self._sessions) >= self.limits.max_sessions:
            victim = next((sid for sid, s in self._sessions.items() if not s.busy), None)
            if victim is None:
                raise ServeError(
                    503,
                    f"all {self.limits.max_sessions} lab sessions are training; try again when one finishes",
                    type="server_error",
                    code="lab_full",
                )
            del self._sessions[victim]

    def start_training(
        self, session: LabSession, epochs: int, config: dict[str, Any], channel: EventChannel
    ) -> TrainingRun:
        """Start a training of ``session`` on its own thread (409 if it already trains)."""
        with self._lock:
            session.check_idle()
            run = TrainingRun(session, epochs, config, channel, self)
            session.training = run
        run.start()
        return run

    def training_sessions(self) -> list[LabSession]:
        """Sessions whose network is training now."""
        with self._lock:
            return [s for s in self._sessions.values() if s.busy]

    def close(self, session_id: str) -> None:
        """Forget a session (its page closed); a running training is stopped."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is not None and session.training is not None:
            session.training.stop()

    def shutdown(self) -> None:
        """Stop every training (server shutdown)."""
        with self._lock:
            runs = [s.training for s in self._sessions.values() if s.training is not None]
        for run in runs:
            run.stop()
