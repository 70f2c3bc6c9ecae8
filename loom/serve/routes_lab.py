"""HTTP routes of the network lab (``/api/lab/...``), used by the page at ``/``.

==========================================  =================================================
``GET  /api/lab/presets``                   README networks, data, settings; losses, optimizers
``POST /api/lab/sessions``                  new session from ``{config, data, seed}`` → state
``GET  /api/lab/sessions/{id}``             the session's state
``POST /api/lab/sessions/{id}``             rebuild (``config`` given) and/or replace ``data``
``POST /api/lab/sessions/{id}/train``       ``{epochs, learning_rate, loss, optimizer,
                                            gradient_clip}`` → server-sent events
``POST /api/lab/sessions/{id}/stop``        stop the running training (server side)
``GET  /api/lab/sessions/{id}/bundle``      the LOOM bundle text of the current weights
``POST /api/lab/sessions/{id}/bundle``      load ``{bundle, data?}`` → state
``POST /api/lab/sessions/{id}/close``       forget the session (sent when the page closes)
==========================================  =================================================

The state (:meth:`loom.serve.lab.LabSession.state`) holds the summary, the config, the layer
table, the SVG diagram, the methods and the predictions computed from the weights in use.
Errors are ``{"error": {...}}`` objects whose ``type`` is the loom exception and ``param``
the JSON path its message names. Network work runs in worker threads, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loom.errors import LoomError
from loom.ops.losses import LOSS_TYPES
from loom.serve.channel import EventChannel
from loom.serve.http import SSE_HEADERS, ServeError, loom_error, read_json_object, sse_event
from loom.serve.lab import OPTIMIZERS, LabSession, LabStore, parse_lab_data, training_config
from loom.serve.presets import preset_payload

__all__ = ["LAB_BODY_LIMIT", "lab_routes"]

#: Largest lab request body (a bundle of a 784-392-10 network is about 5 MB).
LAB_BODY_LIMIT = 32 * 1024 * 1024


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    if seed is None or seed == "":
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ServeError(400, f"seed: expected a non-negative integer, got {seed!r}", type="ConfigError", param="seed")
    return seed


async def _in_thread(work: Any, *args: Any) -> Any:
    """Run blocking network work on a worker thread; loom errors become 400 error objects."""
    try:
        return await anyio.to_thread.run_sync(work, *args)
    except LoomError as exc:
        raise loom_error(exc) from None
    except RecursionError:
        raise ServeError(400, "config: the JSON is nested too deeply", type="ConfigError", param="config") from None


def lab_routes(store: LabStore) -> list[Route]:
    """The lab's routes, bound to ``store``."""

    async def presets(request: Request) -> Response:
        payload = preset_payload()
        payload["losses"] = list(LOSS_TYPES)
        payload["optimizers"] = list(OPTIMIZERS)
        payload["limits"] = {
            "max_epochs": store.limits.max_epochs,
            "max_samples": store.limits.max_samples,
            "max_sessions": store.limits.max_sessions,
        }
        return JSONResponse(payload)

    async def create(request: Request) -> Response:
        body = await read_json_object(request, LAB_BODY_LIMIT)
        seed = _seed(body)

        def build() -> dict[str, Any]:
            data = parse_lab_data(body.get("data"), store.limits.max_samples, store.limits.max_values)
            net = store.build_network(body.get("config"), seed)
            session = store.create(net, data)
            return session.run_idle(LabSession.state)

        return JSONResponse(await _in_thread(build), status_code=201)

    async def state(request: Request) -> Response:
        session = store.get(request.path_params["sid"])
        return JSONResponse(await _in_thread(session.run_idle, LabSession.state))

    async def update(request: Request) -> Response:
        session = store.get(request.path_params["sid"])
        body = await read_json_object(request, LAB_BODY_LIMIT)
        seed = _seed(body)

        def apply(s: LabSession) -> dict[str, Any]:
            data = (
                parse_lab_data(body["data"], store.limits.max_samples, store.limits.max_values)
                if "data" in body
                else s.data
            )
            net = store.build_network(body["config"], seed) if "config" in body else s.network
            s.network, s.data = net, data
            return s.state()

        return JSONResponse(await _in_thread(session.run_idle, apply))

    async def train(request: Request) -> Response:
        session = store.get(request.path_params["sid"])
        body = await read_json_object(request, LAB_BODY_LIMIT)
        try:
            epochs, config = training_config(
                body, max_epochs=store.limits.max_epochs, use_gpu=session.network.backend == "cupy"
            )
        except LoomError as exc:
            raise loom_error(exc) from None
        channel = EventChannel(asyncio.get_running_loop())
        run = store.start_training(session, epochs, config, channel)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for name, payload in channel:
                    yield sse_event(name, payload)
            finally:  # finished, or the page went away: either way the training must end
                run.stop()

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    async def stop(request: Request) -> Response:
        session = store.get(request.path_params["sid"])
        run = session.training
        if run is not None:
            run.stop()
        return JSONResponse({"stopping": run is not None})

    async def get_bundle(request: Request) -> Response:
        session = store.get(request.path_params["sid"])
        model_id = request.query_params.get("model_id") or "lab_model"
        text = await _in_thread(session.run_idle, lambda s: s.network.save_model_to_string(model_id))
        return JSONResponse({"model_id": model_id, "bundle": text})

    async def load_bundle(request: Request) -> Response:
        session = store.get(request.path_params["sid"])
        body = await read_json_object(request, LAB_BODY_LIMIT)

        def load(s: LabSession) -> dict[str, Any]:
            data = (
                parse_lab_data(body["data"], store.limits.max_samples, store.limits.max_values)
                if "data" in body
                else s.data
            )
            s.network, s.data = store.load_bundle(body.get("bundle")), data
            return s.state()

        return JSONResponse(await _in_thread(session.run_idle, load))

    async def close(request: Request) -> Response:
        store.close(request.path_params["sid"])
        return Response(status_code=204)

    return [
        Route("/api/lab/presets", presets, methods=["GET"]),
        Route("/api/lab/sessions", create, methods=["POST"]),
        Route("/api/lab/sessions/{sid}", state, methods=["GET"]),
        Route("/api/lab/sessions/{sid}", update, methods=["POST"]),
        Route("/api/lab/sessions/{sid}/train", train, methods=["POST"]),
        Route("/api/lab/sessions/{sid}/stop", stop, methods=["POST"]),
        Route("/api/lab/sessions/{sid}/bundle", get_bundle, methods=["GET"]),
        Route("/api/lab/sessions/{sid}/bundle", load_bundle, methods=["POST"]),
        Route("/api/lab/sessions/{sid}/close", close, methods=["POST"]),
    ]
