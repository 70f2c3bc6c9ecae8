"""``loom serve``: start the web app (network lab, text generation, OpenAI-compatible API).

Registered on the ``loom`` console script by :func:`add_serve_parser`. Nothing here imports
Starlette or uvicorn until the command runs, so ``loom`` works without the ``serve`` extra
and ``loom serve`` then says how to install it.

The server listens on the loopback address by default. It has no authentication, so
binding any other address needs ``--allow-remote`` and prints a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["add_serve_parser", "bind_warning", "is_loopback", "run_serve"]

EXIT_USAGE = 2
#: Connections served at once (pages, event streams and API calls together).
MAX_CONNECTIONS = 256
INSTALL_HINT = "pip install 'loom-nn[serve]'"


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``serve`` sub-command on an ``argparse`` sub-parsers object.

    Returns
    -------
    argparse.ArgumentParser
        The new sub-parser; its default ``func`` is :func:`run_serve`.
    """
    parser = subparsers.add_parser(
        "serve",
        help="start the web app: network lab, text generation, OpenAI-compatible API",
        description=(
            "Serve LOOM's browser demos as a local web app: the network lab at /, text generation at "
            "/generate and an OpenAI-compatible API under /v1 (models, completions, chat completions)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (there is no authentication: anyone who can reach it can use it)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="GGUF file or model folder (config.json + *.safetensors); default: the embedded SmolLM2-135M-Instruct",
    )
    parser.add_argument("--no-model", action="store_true", help="serve the network lab only (no language model)")
    parser.add_argument("--gpu", action="store_true", help="run the model and the lab's networks on the GPU (CuPy)")
    parser.add_argument("--open", action="store_true", help="open the lab in a web browser")
    parser.add_argument("--max-sessions", type=int, default=16, help="lab networks kept at once (default: 16)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads of the server (default: 1, steady when the machine is busy; 0: the BLAS default)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.set_defaults(func=run_serve)
    return parser


def is_loopback(host: str) -> bool:
    """True for ``127.0.0.0/8``, ``::1`` and ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, allow_remote: bool) -> str | None:
    """The warning to print for ``host``; raises ``ValueError`` when it needs ``--allow-remote``."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ValueError(
            f"--host {host} is not a loopback address; loom serve has no authentication, so anyone who can "
            "reach it could use the server (and its CPU/GPU). Pass --allow-remote to listen there anyway."
        )
    return (
        f"warning: listening on {host}, beyond this machine; loom serve has no authentication, so anyone who "
        "can reach this address can train networks and generate text on it."
    )


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _fail(message: str) -> int:
    print(f"loom serve: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_serve(args: argparse.Namespace) -> int:
    """Run ``loom serve`` with parsed arguments (blocks until Ctrl-C); returns the exit code."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        return _fail(f"the serve extra is not installed ({exc}); install it with: {INSTALL_HINT}")
    from loom.serve.app import ServeSettings, create_app, model_names
    from loom.serve.lab import LabLimits

    try:
        warning = bind_warning(args.host, args.allow_remote)
    except ValueError as exc:
        return _fail(str(exc))
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be 0..65535, got {args.port}")
    if args.max_sessions < 1:
        return _fail(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if args.threads < 0:
        return _fail(f"--threads must be >= 0, got {args.threads}")
    model_path = Path(args.model) if args.model else None
    if model_path is not None and not model_path.exists():
        return _fail(f"--model {args.model}: no such file or folder")
    if args.gpu:
        from loom.backend import resolve_backend
        from loom.errors import LoomError

        try:
            resolve_backend("cupy")
        except LoomError as exc:
            return _fail(str(exc))
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})")
    settings = ServeSettings(
        model_path=model_path,
        no_model=args.no_model,
        gpu=args.gpu,
        allow_remote=args.allow_remote,
        lab_limits=LabLimits(max_sessions=args.max_sessions),
    )
    if args.threads:
        _limit_blas_threads(args.threads)
    app = create_app(settings)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if warning:
        print(f"loom serve: {warning}", file=sys.stderr, flush=True)
    model = "none (--no-model)" if args.no_model else f"{model_names(model_path)[0]}, loading"
    print(
        f"loom serve: network lab at {url} · text generation at {url}generate · OpenAI API at {url}v1 "
        f"(model: {model}) · Ctrl-C stops",
        flush=True,
    )
    engine = app.state.engine
    if engine is not None:
        threading.Thread(target=_report_model, args=(engine,), daemon=True).start()
    if args.open:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(
        app,
        log_level="info" if args.access_log else "warning",
        access_log=args.access_log,
        timeout_graceful_shutdown=2,
        limit_concurrency=MAX_CONNECTIONS,  # more open connections are answered 503 at once
        lifespan="on",
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shut down cleanly, then re-raised Ctrl-C
        uvicorn.Server(config).run(sockets=[sock])
    print("loom serve: stopped", flush=True)
    return 0


def _limit_blas_threads(threads: int) -> None:
    """Use ``threads`` BLAS threads for the rest of the process.

    Batch-1 decoding is a chain of small matrix-vector products. With OpenBLAS's default
    (one thread per core), the helper threads spin-wait for each other, and as soon as
    anything else wants the CPU (the browser showing the page, the clients, other programs)
    decoding collapses: 32 completions from 8 clients on a 2-core machine took 29-108 s with
    2 threads and a steady 16-19 s with 1 (bench/bench_serve.py, same run). Long prompts are
    prefilled row-parallel by loom.llm's own workers either way.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def _report_model(engine: Any) -> None:
    started = time.perf_counter()
    engine.wait_ready()
    if engine.load_error:
        print(f"loom serve: {engine.load_error}; the lab still works", file=sys.stderr, flush=True)
    else:
        backend = engine.stats()["backend"]
        seconds = engine.load_seconds or time.perf_counter() - started
        print(f"loom serve: model {engine.model_id} ready ({backend}, loaded in {seconds:.1f} s)", flush=True)
