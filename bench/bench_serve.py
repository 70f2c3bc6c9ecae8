"""Load test of ``loom serve``: N completions from C concurrent OpenAI-API clients, vs the model in-process.

Workload (the suite's load test, repeatable): ``--requests`` (32) completions of ``--max-tokens``
(20) tokens from ``--clients`` (8) threads, each with its own HTTP connection; 8 distinct
requests (half greedy, half seeded sampling), half of them streamed. Reported per repeat:
wall time, requests/s, completion tokens/s, p50 / p95 latency; every answer is checked to be
identical to the same request generated in-process.

Peer, in the same run: the same requests generated one after another in this process with
:class:`loom.llm.TextGenerator` (no HTTP, no queue): the ratio served / in-process shows what
the server costs on top of the model (one model serves requests in order, so the best it can
do is about 1.0x).

Usage::

    python bench/bench_serve.py [--url http://127.0.0.1:8080/] [--requests 32] [--clients 8]
                                [--max-tokens 20] [--repeat 3] [--threads 1]

Without ``--url`` it starts ``loom serve --port 0 --threads N`` itself and stops it at the end;
the in-process peer uses the same number of BLAS threads (``--threads``, default 1 as the server).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

MODEL = "SmolLM2-135M-Instruct"
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


def request_body(i: int, max_tokens: int) -> dict:
    kind = i % len(PROMPTS)
    body = {"model": MODEL, "prompt": PROMPTS[kind], "max_tokens": max_tokens, "stream": i % 2 == 1}
    if kind % 2:
        body |= {"temperature": 0.9, "top_p": 0.95, "seed": 1000 + kind}
    else:
        body["temperature"] = 0
    return body


def complete(client: httpx.Client, body: dict) -> tuple[str, int, float]:
    """(text, completion tokens, seconds) of one request."""
    started = time.perf_counter()
    if not body["stream"]:
        r = client.post("/v1/completions", json=body)
        r.raise_for_status()
        data = r.json()
        return data["choices"][0]["text"], data["usage"]["completion_tokens"], time.perf_counter() - started
    text, tokens = [], 0
    with client.stream("POST", "/v1/completions", json=body | {"stream_options": {"include_usage": True}}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"]:
                text.append(chunk["choices"][0]["text"])
            else:
                tokens = chunk["usage"]["completion_tokens"]
    return "".join(text), tokens, time.perf_counter() - started


def run_load(url: str, requests: int, clients: int, max_tokens: int) -> dict:
    def worker(indices: list[int]) -> list[tuple[int, tuple[str, int, float]]]:
        with httpx.Client(base_url=url, timeout=600) as client:
            return [(i, complete(client, request_body(i, max_tokens))) for i in indices]

    shares = [list(range(c, requests, clients)) for c in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = dict(pair for share in pool.map(worker, shares) for pair in share)
    wall = time.perf_counter() - started
    latencies = sorted(r[2] for r in results.values())
    tokens = sum(r[1] for r in results.values())
    return {
        "results": results,
        "wall": wall,
        "rps": requests / wall,
        "tps": tokens / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * len(latencies)) - 1)],
    }


def load_generator():
    from loom.llm import TextGenerator, default_model_path, load_tokenizer, load_transformer

    path = default_model_path()
    generator = TextGenerator(load_transformer(path), load_tokenizer(path))
    generator.generate_text("Hello", 2, temperature=0)  # warm-up, as the server does
    return generator


def in_process(generator, requests: int, max_tokens: int) -> dict:
    """The same requests, one after another, in this process (no HTTP, no queue)."""
    texts, tokens = {}, 0
    started = time.perf_counter()
    for i in range(requests):
        body = request_body(i, max_tokens)
        texts[i] = generator.generate_text(
            body["prompt"], max_tokens, temperature=body["temperature"], top_p=body.get("top_p"), seed=body.get("seed")
        )
        tokens += generator.last_stats.new_tokens
    wall = time.perf_counter() - started
    return {"texts": texts, "wall": wall, "tps": tokens / wall}


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    loom = Path(sys.executable).parent / "loom"
    command = [str(loom)] if loom.exists() else [sys.executable, "-m", "loom.cli"]
    process = subprocess.Popen(
        [*command, "serve", "--port", "0", "--threads", str(threads)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    url = None
    for line in process.stdout:
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if match:
            url = match.group(0)
            break
    if url is None:
        raise SystemExit("loom serve did not start")
    with httpx.Client(base_url=url, timeout=10) as client:
        while not client.get("/api/status").json()["model"]["ready"]:
            time.sleep(0.1)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running loom serve (default: start one)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads of the server and of the in-process peer (default: 1)"
    )
    args = parser.parse_args()
    process, url = (None, args.url) if args.url else start_server(args.threads)
    import numpy  # noqa: F401  (load the BLAS library before limiting it)
    from threadpoolctl import threadpool_info, threadpool_limits

    if args.threads:
        threadpool_limits(limits=args.threads, user_api="blas")
    blas = {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
    with httpx.Client(base_url=url, timeout=30) as client:
        served_blas = client.get("/api/status").json().get("blas_threads")
    print(f"BLAS threads: in-process {blas}, server {served_blas}")
    try:
        generator = load_generator()
        print(
            f"{args.requests} completions of {args.max_tokens} tokens; loom serve with {args.clients} concurrent "
            "clients vs the same requests one after another in-process (each repeat runs both, back to back):"
        )
        rows = []
        for k in range(args.repeat):
            peer = in_process(generator, args.requests, args.max_tokens)
            run = run_load(url, args.requests, args.clients, args.max_tokens)
            run["ratio"] = run["tps"] / peer["tps"]
            same = all(run["results"][i][0] == peer["texts"][i] for i in range(args.requests))
            rows.append(run)
            print(
                f"  run {k + 1}: served {run['wall']:.2f} s, {run['rps']:.2f} requests/s, {run['tps']:.1f} tokens/s, "
                f"latency p50 {run['p50']:.2f} s, p95 {run['p95']:.2f} s | in-process {peer['wall']:.2f} s, "
                f"{peer['tps']:.1f} tokens/s | served/in-process {run['ratio']:.2f}x | answers "
                f"{'identical' if same else 'DIFFERENT'}"
            )

        def span(key: str) -> str:
            values = [r[key] for r in rows]
            return f"{min(values):.2f}-{max(values):.2f}"

        print(
            f"range over {args.repeat} runs: {span('rps')} requests/s, {span('tps')} tokens/s, "
            f"p50 {span('p50')} s, p95 {span('p95')} s, served/in-process {span('ratio')}x"
        )
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)
            process.wait(15)


if __name__ == "__main__":
    main()
