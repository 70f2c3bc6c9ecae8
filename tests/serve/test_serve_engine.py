"""The generation engine with a scripted model: FIFO order, cancellation (queued and running),
a full queue, a model that fails to load, stop strings and end-of-text ids."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from loom.serve.channel import EventChannel
from loom.serve.llm_engine import (
    EngineBusy,
    Failed,
    Finished,
    GenerationEngine,
    GenerationRequest,
    Started,
    TextDelta,
)

EOS = 0


class ScriptedModel:
    """Yields ids ``1, 2, 3, ...`` (or a script) with a delay per token; records every call."""

    def __init__(self, delay: float = 0.005, script: list[int] | None = None) -> None:
        self.config = SimpleNamespace(eos_token_ids=[EOS], max_position_embeddings=64, vocab_size=100)
        self.delay = delay
        self.script = script
        self.calls: list[tuple[int, ...]] = []
        self.yielded = 0

    def stream(self, ids, max_new_tokens, *, temperature=0.0, top_k=None, top_p=None, rng=None, stop_ids=(), seed=None):
        self.calls.append(tuple(ids))
        script = self.script or list(range(1, max_new_tokens + 1))
        for token in script[:max_new_tokens]:
            time.sleep(self.delay)
            self.yielded += 1
            yield token
            if token in stop_ids:
                return


class LetterDecoder:
    def __init__(self) -> None:
        self.ids: list[int] = []

    def step(self, token: int) -> str:
        return "" if token == EOS else chr(ord("a") + (token - 1) % 26)

    def flush(self) -> str:
        return ""


class LetterTokenizer:
    """id k >= 1 is the letter ``chr(ord('a') + k - 1)``; 0 is the end-of-text token."""

    def __init__(self) -> None:
        self.eos_token_ids = [EOS]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) - ord("a") + 1 for c in text]

    def token_to_id(self, token: str) -> int | None:
        return None

    def stream_decoder(self, skip_special_tokens: bool = True) -> LetterDecoder:
        return LetterDecoder()


def engine_with(model, *, max_queue: int = 8, fail: str | None = None) -> GenerationEngine:
    def load():
        if fail:
            raise RuntimeError(fail)
        return model, LetterTokenizer()

    engine = GenerationEngine(load, "scripted", max_queue=max_queue)
    engine.start()
    assert engine.wait_ready(5)
    model.calls.clear()  # forget the warm-up
    model.yielded = 0
    return engine


def run(factory):
    """Run an async test body on a fresh loop in its own thread (Playwright may own this one's)."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(factory())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def collect(channel: EventChannel) -> list:
    return [event async for event in channel]


def request(prompt: tuple[int, ...], tokens: int = 5, stop: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest(prompt, tokens, temperature=0.0, stop=stop)


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_requests_run_one_at_a_time_in_arrival_order() -> None:
    model = ScriptedModel(delay=0.01)
    engine = engine_with(model)

    async def body():
        loop = asyncio.get_running_loop()
        channels = [EventChannel(loop) for _ in range(4)]
        ahead = [engine.submit(request((k + 1,)), ch) for k, ch in enumerate(channels)]
        results = await asyncio.gather(*(collect(ch) for ch in channels))
        return ahead, results

    ahead, results = run(body)
    engine.shutdown()
    assert model.calls == [(1,), (2,), (3,), (4,)]
    assert ahead == [0, 1, 2, 3]
    for events in results:
        finished = events[-1]
        assert isinstance(finished, Finished) and finished.reason == "length" and finished.completion_tokens == 5
        assert text_of(events) == "abcde"
        assert [e.tokens for e in events if isinstance(e, TextDelta)] == [1, 2, 3, 4, 5]
    stats = engine.stats()
    assert (stats["completed"], stats["tokens_generated"], stats["queued"], stats["busy"]) == (4, 20, 0, False)


def test_cancelled_jobs_free_the_model() -> None:
    model = ScriptedModel(delay=0.02)
    engine = engine_with(model)

    async def body():
        loop = asyncio.get_running_loop()
        running, waiting, after = EventChannel(loop), EventChannel(loop), EventChannel(loop)
        engine.submit(request((1,), tokens=1000), running)
        engine.submit(request((2,), tokens=1000), waiting)
        engine.submit(request((3,), tokens=3), after)
        waiting.cancel()  # gone before it started: never reaches the model
        seen = []
        async for event in running:
            seen.append(event)
            if isinstance(event, TextDelta) and event.tokens == 3:
                running.cancel()
        return seen, await collect(after)

    seen, after = run(body)
    engine.shutdown()
    assert model.calls == [(1,), (3,)]
    finished = seen[-1]
    assert isinstance(finished, Finished) and finished.reason == "cancelled"
    # cancelling is asynchronous: the worker may have made a token or two more, never the 1000 asked
    assert 3 <= finished.completion_tokens < 50
    assert model.yielded == finished.completion_tokens + 3
    assert text_of(after) == "abc"
    stats = engine.stats()
    assert (stats["cancelled"], stats["completed"]) == (2, 1)


def test_a_full_queue_is_refused() -> None:
    model = ScriptedModel(delay=0.05)
    engine = engine_with(model, max_queue=1)

    async def body():
        loop = asyncio.get_running_loop()
        first, second = EventChannel(loop), EventChannel(loop)
        engine.submit(request((1,), tokens=4), first)
        async for event in first:  # wait until the worker took it: the queue is empty again
            if isinstance(event, Started):
                break
        engine.submit(request((2,), tokens=1), second)
        with pytest.raises(EngineBusy, match="queue is full"):
            engine.submit(request((3,)), EventChannel(loop))
        first.cancel()
        await collect(second)

    run(body)
    engine.shutdown()


def test_a_model_that_fails_to_load_answers_every_job_with_the_reason() -> None:
    engine = engine_with(ScriptedModel(), fail="no such file: model.gguf")
    assert engine.load_error == "the language model could not be loaded: no such file: model.gguf"

    async def body():
        channel = EventChannel(asyncio.get_running_loop())
        engine.submit(request((1,)), channel)
        return await collect(channel)

    events = run(body)
    engine.shutdown()
    assert len(events) == 1 and isinstance(events[0], Failed) and "no such file" in events[0].message
    assert engine.stats()["failed"] == 1


def test_stop_strings_and_end_of_text() -> None:
    # letters a..j then EOS; "def" is a stop string split over three tokens
    engine = engine_with(ScriptedModel(script=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, EOS]))

    async def generate(stop: tuple[str, ...], tokens: int) -> list:
        channel = EventChannel(asyncio.get_running_loop())
        engine.submit(request((1,), tokens=tokens, stop=stop), channel)
        return await collect(channel)

    cut = run(lambda: generate(("def", "zz"), 50))
    assert text_of(cut) == "abc" and cut[-1].reason == "stop" and cut[-1].completion_tokens == 6
    ended = run(lambda: generate((), 50))
    assert text_of(ended) == "abcdefghij" and ended[-1].reason == "stop" and ended[-1].completion_tokens == 11
    held = run(lambda: generate(("jz",), 50))  # "j" was held back as a possible start, then released
    assert text_of(held) == "abcdefghij" and held[-1].reason == "stop"
    short = run(lambda: generate(("j",), 4))
    assert text_of(short) == "abcd" and short[-1].reason == "length"
    engine.shutdown()
