"""The OpenAI-compatible API against a real ``loom serve``, driven by the official ``openai`` client
(and raw HTTP where the client cannot send what is tested: malformed JSON, disconnects)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"
#: A prompt the model continues until max_tokens (greedy), for tests that need a long generation.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]


@pytest.fixture(scope="module")
def client(llm_server):
    return openai.OpenAI(base_url=llm_server.url + "v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def raw(llm_server):
    with httpx.Client(base_url=llm_server.url, timeout=600) as c:
        yield c


def wait_idle(server, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = server.status()["model"]
        if not model["busy"] and model["queued"] == 0:
            return model
        time.sleep(0.02)
    raise AssertionError(f"the model is still busy after {timeout} s: {server.status()['model']}")


def test_models_are_listed(client) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "loom")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_streamed_chat_completion(client) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), "the model answered nothing"
    assert "Paris" in text
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40, temperature=0)
    assert whole.choices[0].message.content == text and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == finals[0]
    assert whole.usage.model_dump() == chunks[-1].usage.model_dump()


def test_completion_usage_counts(client, tokenizer) -> None:
    prompt = "The three primary colors are"
    done = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    choice = done.choices[0]
    assert choice.finish_reason == "length" and choice.text
    assert done.usage.prompt_tokens == len(tokenizer.encode(prompt))
    assert done.usage.completion_tokens == 12
    assert done.usage.total_tokens == done.usage.prompt_tokens + 12


def test_echo_and_token_id_prompts(client, tokenizer) -> None:
    plain = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=4, temperature=0)
    echoed = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == "Hello there" + plain.choices[0].text
    ids = tokenizer.encode("Hello there")
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=4, temperature=0)
    assert by_ids.choices[0].text == plain.choices[0].text and by_ids.usage.prompt_tokens == len(ids)
    by_file = client.completions.create(model="SmolLM2-135M-Instruct.Q4_1.gguf", prompt="Hi", max_tokens=1)
    assert by_file.model == MODEL  # the GGUF file name is an alias of the served id


def test_the_page_stream_reports_tokens_and_rates(raw, tokenizer) -> None:
    body = {"prompt": "Say hello.", "max_tokens": 6, "temperature": 0, "chat": True}
    r = raw.post("/api/generate", json=body)
    assert r.status_code == 200
    names, payloads = [], []
    for block in r.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        names.append(lines["event"])
        payloads.append(json.loads(lines["data"]))
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"token"}
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True)
    assert payloads[0]["prompt_tokens"] == len(tokenizer.encode(rendered, add_special_tokens=False))
    tokens = [p for n, p in zip(names, payloads, strict=True) if n == "token"]
    assert [t["tokens"] for t in tokens] == list(range(1, len(tokens) + 1))
    assert all(t["tokens_per_second"] > 0 and t["elapsed"] > 0 for t in tokens)
    assert payloads[-1]["completion_tokens"] == len(tokens) <= 6
    bad = raw.post("/api/generate", json={"prompt": "x", "max_tokens": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"


def test_completion_tokens_count_the_end_of_text_token(client, tokenizer) -> None:
    """A chat answer that ends by itself: its k tokens are the text's k-1 tokens and the end-of-turn token."""
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=200, temperature=0)
    assert answer.choices[0].finish_reason == "stop"
    k = answer.usage.completion_tokens
    rendered = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert answer.usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))
    shorter = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=k - 1, temperature=0)
    assert shorter.choices[0].finish_reason == "length"
    assert shorter.choices[0].message.content == answer.choices[0].message.content
    assert shorter.usage.completion_tokens == k - 1


def test_stop_sequences_cut_the_text_and_are_never_emitted(client) -> None:
    prompt = "Once upon a time"
    full = client.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0).choices[0].text
    stop = full[12:16]
    assert len(stop) == 4 and full.find(stop) >= 0
    expected = full[: full.find(stop)]
    cut = client.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0, stop=[stop, "zzzz"])
    assert cut.choices[0].text == expected and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=30, temperature=0, stop=stop, stream=True
    )
    pieces = list(streamed)
    assert "".join(p.choices[0].text for p in pieces) == expected
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_seeds_make_sampling_reproducible(client) -> None:
    def sample(seed: int) -> str:
        c = client.completions.create(
            model=MODEL, prompt="My favourite animal is", max_tokens=8, temperature=1.0, top_p=0.95, seed=seed
        )
        return c.choices[0].text

    first = sample(5)
    assert sample(5) == first
    assert sample(6) != first or sample(7) != first


@pytest.mark.parametrize(
    ("call", "error", "status", "param", "code"),
    [
        (
            lambda c: c.completions.create(model=MODEL, prompt="x", max_tokens=-1),
            "BadRequestError",
            400,
            "max_tokens",
            "integer_below_min_value",
        ),
        (lambda c: c.completions.create(model="gpt-4o", prompt="x"), "NotFoundError", 404, "model", "model_not_found"),
        (
            lambda c: c.completions.create(model=MODEL, prompt="x", temperature="hot"),
            "BadRequestError",
            400,
            "temperature",
            None,
        ),
        (
            lambda c: c.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "x"}]),
            "BadRequestError",
            400,
            "messages[0].role",
            None,
        ),
        (
            lambda c: c.completions.create(model=MODEL, prompt="hello " * 9000, max_tokens=5),
            "BadRequestError",
            400,
            "prompt",
            "context_length_exceeded",
        ),
        (
            lambda c: c.completions.create(model=MODEL, prompt="hi", max_tokens=9000),
            "BadRequestError",
            400,
            "prompt",
            "context_length_exceeded",
        ),
        (lambda c: c.completions.create(model=MODEL, prompt=[1, 2, 10**9]), "BadRequestError", 400, "prompt", None),
    ],
)
def test_bad_requests_get_openai_error_objects(client, call, error, status, param, code) -> None:
    with pytest.raises(getattr(openai, error)) as info:
        call(client)
    assert info.value.status_code == status
    body = info.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["type"] == "invalid_request_error"
    assert body["param"] == param and body["code"] == code and body["message"]


def test_malformed_and_oversized_bodies(raw) -> None:
    r = raw.post(
        "/v1/chat/completions", content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = raw.post("/v1/completions", content=json.dumps({"model": MODEL, "prompt": "a" * (5 * 1024 * 1024)}))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = raw.get("/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_a_client_that_disconnects_mid_stream_frees_the_model(raw, llm_server) -> None:
    before = wait_idle(llm_server)
    body = {
        "model": MODEL,
        "prompt": COUNTING,
        "max_tokens": 2000,
        "temperature": 0,
        "stream": True,
    }
    with raw.stream("POST", "/v1/completions", json=body) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: {"):
                seen += 1
                if seen == 3:
                    break
    closed = time.monotonic()
    after = wait_idle(llm_server, timeout=10)
    freed = time.monotonic() - closed
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 100  # stopped, not 2000 tokens later
    assert freed < 5.0  # ~20 ms on a quiet machine; 2000 tokens would take half a minute or more
    quick = raw.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 3, "temperature": 0})
    assert quick.status_code == 200 and quick.json()["usage"]["completion_tokens"] == 3


def test_a_non_streamed_request_whose_client_leaves_is_cancelled(llm_server) -> None:
    before = wait_idle(llm_server)
    body = {"model": MODEL, "prompt": COUNTING, "max_tokens": 2000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=llm_server.url, timeout=0.5) as impatient:
        impatient.post("/v1/completions", json=body)
    after = wait_idle(llm_server, timeout=10)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 300


def test_the_server_answers_while_the_model_generates(llm_server) -> None:
    wait_idle(llm_server)
    body = {"model": MODEL, "prompt": COUNTING, "max_tokens": 60, "temperature": 0}
    outcome: dict = {}

    def generate() -> None:
        with httpx.Client(base_url=llm_server.url, timeout=600) as c:
            outcome["status"] = c.post("/v1/completions", json=body).status_code

    worker = threading.Thread(target=generate)
    worker.start()
    deadline = time.monotonic() + 60
    while not llm_server.status()["model"]["busy"] and time.monotonic() < deadline:
        time.sleep(0.01)
    latencies = []
    with httpx.Client(base_url=llm_server.url, timeout=60) as probe:
        for _ in range(5):
            started = time.monotonic()
            assert probe.get("/v1/models").status_code == 200
            latencies.append(time.monotonic() - started)
    busy = llm_server.status()["model"]["busy"]
    worker.join(600)
    assert outcome.get("status") == 200
    assert busy, "the generation finished before the probes; make it longer"
    assert max(latencies) < 0.5, latencies
