"""A bounded load test: 32 completions of 20 tokens from 8 concurrent clients against one model.

Every answer must be well-formed and identical (text, finish reason, usage) to the same
request run alone: greedy requests and seeded sampled ones, streamed and not, so a lost,
duplicated or interleaved token would show. Throughput and latency percentiles are printed
(``pytest -s``) and written to ``serve-load.json`` among the test artifacts;
``bench/bench_serve.py`` measures the same workload with repeats and an in-process peer.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

MODEL = "SmolLM2-135M-Instruct"
REQUESTS, CLIENTS, TOKENS = 32, 8, 20
PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "1, 2, 3, 4, 5,",
    "def fibonacci(n):",
    "In the beginning",
    "The weather today is",
    "My favourite food is",
    "Python is a programming language that",
]


def request_body(i: int) -> dict:
    """8 distinct requests (half greedy, half seeded sampling), each sent 4 times; odd ones streamed."""
    kind = i % len(PROMPTS)
    body = {"model": MODEL, "prompt": PROMPTS[kind], "max_tokens": TOKENS, "stream": i % 2 == 1}
    if kind % 2:
        body |= {"temperature": 0.9, "top_p": 0.95, "seed": 1000 + kind}
    else:
        body["temperature"] = 0
    return body


def complete(client: httpx.Client, body: dict) -> dict:
    """One completion as ``{id, text, finish_reason, usage, seconds}``; streamed ones reassembled."""
    started = time.perf_counter()
    if not body["stream"]:
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["object"] == "text_completion" and data["model"] == MODEL and len(data["choices"]) == 1
        choice = data["choices"][0]
        return {
            "id": data["id"],
            "text": choice["text"],
            "finish_reason": choice["finish_reason"],
            "usage": data["usage"],
            "seconds": time.perf_counter() - started,
        }
    stream_body = body | {"stream_options": {"include_usage": True}}
    text, finish, usage, ids, done = [], None, None, set(), False
    with client.stream("POST", "/v1/completions", json=stream_body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            payload = line[6:]
            if payload == "[DONE]":
                done = True
                continue
            chunk = json.loads(payload)
            assert chunk["object"] == "text_completion" and "error" not in chunk
            ids.add(chunk["id"])
            if chunk["choices"]:
                text.append(chunk["choices"][0]["text"])
                finish = chunk["choices"][0]["finish_reason"] or finish
            else:
                usage = chunk["usage"]
    assert done and len(ids) == 1
    return {
        "id": ids.pop(),
        "text": "".join(text),
        "finish_reason": finish,
        "usage": usage,
        "seconds": time.perf_counter() - started,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def test_concurrent_clients_get_exactly_their_own_answers(llm_server, artifacts) -> None:
    before = llm_server.status()["model"]
    with httpx.Client(base_url=llm_server.url, timeout=600) as client:
        alone = {}
        for kind in range(len(PROMPTS)):
            alone[kind] = complete(client, request_body(kind) | {"stream": False})

    def worker(indices: list[int]) -> list[tuple[int, dict]]:
        with httpx.Client(base_url=llm_server.url, timeout=600) as client:
            return [(i, complete(client, request_body(i))) for i in indices]

    shares = [list(range(c, REQUESTS, CLIENTS)) for c in range(CLIENTS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = dict(pair for share in pool.map(worker, shares) for pair in share)
    wall = time.perf_counter() - started

    assert sorted(results) == list(range(REQUESTS))
    assert len({r["id"] for r in results.values()}) == REQUESTS
    for i, got in results.items():
        want = alone[i % len(PROMPTS)]
        assert (got["text"], got["finish_reason"], got["usage"]) == (
            want["text"],
            want["finish_reason"],
            want["usage"],
        ), i
        assert got["finish_reason"] in ("length", "stop")
        assert got["usage"]["completion_tokens"] == TOKENS or got["finish_reason"] == "stop"
    after = llm_server.status()["model"]
    assert after["completed"] - before["completed"] == REQUESTS + len(PROMPTS)
    assert after["queued"] == 0 and not after["busy"]

    latencies = [r["seconds"] for r in results.values()]
    tokens = sum(r["usage"]["completion_tokens"] for r in results.values())
    report = {
        "requests": REQUESTS,
        "clients": CLIENTS,
        "max_tokens": TOKENS,
        "wall_seconds": round(wall, 3),
        "requests_per_second": round(REQUESTS / wall, 3),
        "completion_tokens_per_second": round(tokens / wall, 2),
        "latency_p50_seconds": round(statistics.median(latencies), 3),
        "latency_p95_seconds": round(percentile(latencies, 95), 3),
    }
    (artifacts / "serve-load.json").write_text(json.dumps(report, indent=2))
    print(f"\nloom serve load test: {json.dumps(report)}")
