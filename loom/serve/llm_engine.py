"""One language model served to many requests: a FIFO queue drained by one worker thread.

Every generation request (``/api/generate``, ``/v1/completions``, ``/v1/chat/completions``)
becomes a job in one queue; a single worker thread runs the jobs in arrival order and
sends each job's tokens back through its :class:`~loom.serve.channel.EventChannel`.

Why a queue and one worker thread, not a lock around the model:

* requests are served strictly in arrival order; a ``threading.Lock`` promises no
  fairness, so under load a request could wait behind later ones indefinitely;
* only one thread ever touches the model, its KV cache and its prefill thread pool
  (and, on the GPU, the CUDA graphs recorded for decoding stay with the thread that
  recorded them), so concurrent requests cannot corrupt each other's state;
* the number of waiting jobs is known: a full queue is refused at once (HTTP 503)
  instead of piling up blocked threads, and a page can show its place in line;
* a job whose client has gone is dropped before it starts, and a running one stops
  after its current token, so a disconnected client frees the model at once.

Generation runs on the worker thread, never on the event loop, so the server keeps
answering (pages, the lab, ``/v1/models``) while a long completion is being written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loom.serve.channel import EventChannel
from loom.serve.stop import StopMatcher

__all__ = [
    "EngineStats",
    "Failed",
    "Finished",
    "GenerationEngine",
    "GenerationRequest",
    "Queued",
    "Started",
    "TextDelta",
]

log = logging.getLogger("loom.serve")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: prompt ids and sampling settings.

    Attributes
    ----------
    prompt_ids : tuple of int
        ``[T]`` prompt token ids (chat template already applied).
    max_tokens : int
        Upper bound on new tokens (>= 1).
    temperature : float
        0 = greedy argmax; > 0 samples.
    top_p, top_k : optional
        Nucleus / top-k filters.
    seed : int, optional
        Seed of this request's own sampling RNG (reproducible output).
    stop : tuple of str
        Text-level stop sequences (never emitted).
    """

    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Queued:
    """The job waits behind ``ahead`` others."""

    ahead: int


@dataclass(frozen=True)
class Started:
    """The worker took the job after waiting ``waited`` seconds."""

    prompt_tokens: int
    waited: float


@dataclass(frozen=True)
class TextDelta:
    """New text after ``tokens`` generated tokens (``text`` may be empty: held back or special)."""

    text: str
    tokens: int
    elapsed: float
    tokens_per_second: float


@dataclass(frozen=True)
class Finished:
    """The job ended: ``reason`` is ``stop`` (EOS / stop string), ``length`` or ``cancelled``."""

    reason: str
    prompt_tokens: int
    completion_tokens: int
    elapsed: float
    prefill_seconds: float
    tokens_per_second: float


@dataclass(frozen=True)
class Failed:
    """The job could not run (model failed to load, bad ids, ...)."""

    message: str
    type: str


@dataclass
class EngineStats:
    """Counters of the engine since start (``/api/status``)."""

    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    tokens_generated: int = 0
    queued: int = 0
    busy: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "cancelled": self.cancelled,
            "failed": self.failed,
            "tokens_generated": self.tokens_generated,
            "queued": self.queued,
            "busy": self.busy,
        }


class EngineBusy(Exception):
    """The queue is full."""


class GenerationEngine:
    """Serve one model to many requests in order.

    Parameters
    ----------
    load : callable
        Returns ``(model, tokenizer)``; called once on the worker thread, so the server
        is up (the lab usable) while a large model loads.
    model_id : str
        The name clients use (``/v1/models``).
    max_queue : int
        Jobs allowed to wait; more are refused with :class:`EngineBusy`.
    """

    def __init__(self, load: Callable[[], tuple[Any, Any]], model_id: str, *, max_queue: int = 64) -> None:
        self.model_id = model_id
        self.max_queue = int(max_queue)
        self.created = int(time.time())
        self._load = load
        self._jobs: queue.Queue[tuple[GenerationRequest, EventChannel, float] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stats = EngineStats()
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: frozenset[int] = frozenset()
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._thread = threading.Thread(target=self._work, name="loom-serve-llm", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread (it loads the model first)."""
        self._thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let the worker finish its current token and exit."""
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        """True once loading ended (successfully or not: see :attr:`load_error`)."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loading ended; False on timeout."""
        return self._ready.wait(timeout)

    @property
    def model(self) -> Any:
        """The loaded model (None before loading ends or when it failed)."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer."""
        return self._tokenizer

    @property
    def context_length(self) -> int | None:
        """Positions the model was trained for (``max_position_embeddings``), if known."""
        if self._model is None:
            return None
        return int(getattr(self._model.config, "max_position_embeddings", 0) or 0) or None

    def stats(self) -> dict[str, Any]:
        """A snapshot of :class:`EngineStats` plus the model state."""
        with self._lock:
            data = self._stats.to_dict()
        data.update(
            model=self.model_id,
            ready=self.ready,
            load_error=self.load_error,
            load_seconds=self.load_seconds,
            backend=getattr(getattr(self._model, "backend", None), "name", None),
        )
        return data

    # ------------------------------------------------------------------ prompts
    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a plain completion prompt (with the tokenizer's special tokens, like ``loom generate``)."""
        return list(self._tokenizer.encode(text, add_special_tokens=True))

    def encode_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        """Token ids of a conversation rendered with the model's chat template, assistant turn opened."""
        text = self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    # ------------------------------------------------------------------ jobs
    def submit(self, request: GenerationRequest, channel: EventChannel) -> int:
        """Queue ``request``; its events go to ``channel``. Returns how many jobs are ahead.

        Raises
        ------
        EngineBusy
            ``max_queue`` jobs are already waiting.
        """
        with self._lock:
            if self._stats.queued >= self.max_queue:
                raise EngineBusy(f"the model queue is full ({self.max_queue} requests waiting); retry later")
            ahead = self._stats.queued + int(self._stats.busy)
            self._stats.queued += 1
        if ahead:
            channel.put(Queued(ahead))
        self._jobs.put((request, channel, time.perf_counter()))
        return ahead

    def _work(self) -> None:
        started = time.perf_counter()
        try:
            self._model, self._tokenizer = self._load()
            from loom.llm.generation import TextGenerator

            self._stop_ids = frozenset(TextGenerator(self._model, self._tokenizer).stop_ids())
            self._warm_up()
            self.load_seconds = time.perf_counter() - started
        except Exception as exc:  # reported to every request and on /api/status, never raised
            self.load_error = f"the language model could not be loaded: {exc}"
            log.error("%s", self.load_error)
        finally:
            self._ready.set()
        while True:
            item = self._jobs.get()
            if item is None:
                return
            request, channel, queued_at = item
            with self._lock:
                self._stats.queued -= 1
                self._stats.busy = True
            outcome = "cancelled"
            try:
                if channel.cancelled:
                    continue
                if self.load_error is not None:
                    channel.put(Failed(self.load_error, "server_error"))
                    outcome = "failed"
                    continue
                outcome = self._generate(request, channel, time.perf_counter() - queued_at)
            except Exception as exc:  # a bad job must not kill the worker
                log.exception("generation failed")
                channel.put(Failed(f"generation failed: {type(exc).__name__}: {exc}", "server_error"))
                outcome = "failed"
            finally:
                with self._lock:  # counted before the client sees the end, so /api/status agrees with it
                    self._stats.busy = False
                    if outcome == "cancelled":
                        self._stats.cancelled += 1
                    elif outcome == "failed":
                        self._stats.failed += 1
                    else:
                        self._stats.completed += 1
                channel.close()

    def _warm_up(self) -> None:
        """A 2-token generation, so the first request does not pay for first-call set-up (best effort)."""
        try:
            ids = self._tokenizer.encode("Hello", add_special_tokens=True) or [0]
            for _ in self._model.stream(ids, 2, temperature=0.0, stop_ids=[]):
                pass
        except Exception as exc:  # the first real request will show what is wrong
            log.warning("model warm-up failed: %s", exc)

    def _generate(self, request: GenerationRequest, channel: EventChannel, waited: float) -> str:
        """Run one job on this (the worker) thread; returns ``stop``, ``length`` or ``cancelled``."""
        ids = list(request.prompt_ids)
        channel.put(Started(len(ids), waited))
        decoder = self._tokenizer.stream_decoder(skip_special_tokens=True)
        matcher = StopMatcher(request.stop)
        start = time.perf_counter()
        first_at = start
        count = 0
        reason = "length"
        rate = 0.0
        tokens = self._model.stream(
            ids,
            request.max_tokens,
            temperature=request.temperature,
            top_k=request.top_k,
            top_p=request.top_p,
            rng=np.random.default_rng(request.seed),
            stop_ids=sorted(self._stop_ids),
        )
        try:
            for token in tokens:
                now = time.perf_counter()
                count += 1
                if count == 1:
                    first_at = now
                if count > 1 and now > first_at:  # decode rate after the first token, as `loom generate`
                    rate = (count - 1) / (now - first_at)
                else:
                    rate = count / max(now - start, 1e-9)
                text = matcher.feed(decoder.step(token))
                if int(token) in self._stop_ids:
                    reason = "stop"
                if matcher.stopped:
                    reason = "stop"
                with self._lock:
                    self._stats.tokens_generated += 1
                channel.put(TextDelta(text, count, now - start, rate))
                if matcher.stopped:
                    break
                if channel.cancelled:  # checked before the next token is computed
                    reason = "cancelled"
                    break
        finally:
            tokens.close()
        if reason != "cancelled":
            tail = matcher.feed(decoder.flush()) if not matcher.stopped else ""
            tail += matcher.flush()
            if tail:
                channel.put(TextDelta(tail, count, time.perf_counter() - start, rate))
        elapsed = time.perf_counter() - start
        channel.put(Finished(reason, len(ids), count, elapsed, first_at - start if count else elapsed, rate))
        return reason
