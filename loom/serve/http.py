"""HTTP plumbing shared by every route: error objects, bounded JSON bodies, server-sent events.

Every error the server answers with is one JSON envelope, OpenAI's::

    {"error": {"message": "...", "type": "...", "param": "...", "code": "..."}}

For the OpenAI routes ``type`` is OpenAI's (``invalid_request_error``, ``server_error``);
for the lab it is the loom exception class (``ConfigError``, ``ShapeError``) and
``param`` the JSON path the message names (``layers[1].combine_mode``). No route ever
answers with a stack trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from loom.errors import LoomError

__all__ = [
    "SSE_HEADERS",
    "ServeError",
    "error_body",
    "error_response",
    "loom_error",
    "read_json_object",
    "sse_data",
    "sse_event",
]

#: Headers of every event stream: no caching, no proxy buffering.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}

#: A loom message starts with the JSON path of the field it is about: ``layers[1].combine_mode: ...``.
_PATH_PREFIX = re.compile(r"^((?:[A-Za-z_][\w ]*|\[\d+\])(?:\.?[A-Za-z_]\w*|\[\d+\])*): ")


class ServeError(Exception):
    """An error answered as an OpenAI-style error object.

    Parameters
    ----------
    status : int
        HTTP status (4xx for the client's mistakes, 5xx for the server's).
    message : str
        What went wrong and what was expected.
    type : str
        Error family (``invalid_request_error``, ``ConfigError``, ...).
    param : str, optional
        The request field (or JSON path) the error is about.
    code : str, optional
        Machine-readable code (``model_not_found``, ``context_length_exceeded``, ...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` envelope."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: ServeError) -> JSONResponse:
    """A JSON response carrying ``error``'s envelope and status."""
    return JSONResponse(error.body(), status_code=error.status)


def loom_error(exc: LoomError, status: int = 400) -> ServeError:
    """A :class:`ServeError` from a loom exception: its class as ``type``, its JSON path as ``param``.

    Examples
    --------
    >>> from loom.errors import ConfigError
    >>> err = loom_error(ConfigError("layers[1].combine_mode: unknown combine mode 'x'"))
    >>> err.type, err.param
    ('ConfigError', 'layers[1].combine_mode')
    """
    message = str(exc)
    match = _PATH_PREFIX.match(message)
    return ServeError(status, message, type=type(exc).__name__, param=match.group(1) if match else None)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, read up to ``limit`` bytes.

    Raises
    ------
    ServeError
        413 when the body is larger than ``limit``; 400 when it is not JSON or not an object.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ServeError(400, "the client disconnected while sending the request body") from None
    raw = b"".join(chunks)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ServeError(400, "the JSON body is nested too deeply", code="invalid_json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(
            400,
            f"We could not parse the JSON body of your request ({exc}). The body must be a JSON object; "
            "check that it is valid JSON and that the Content-Type is application/json.",
            code="invalid_json",
        ) from None
    if not isinstance(data, Mapping):
        raise ServeError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    return dict(data)


def _too_large(size: int, limit: int) -> ServeError:
    return ServeError(
        413,
        f"the request body is {'at least ' if size > limit else ''}{size} bytes; this server accepts at most {limit}",
        code="request_too_large",
    )


def sse_event(event: str, data: Any) -> bytes:
    """One named server-sent event with a JSON payload (``event: NAME`` / ``data: JSON``)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n".encode()


def sse_data(data: Any) -> bytes:
    """One unnamed server-sent event: ``data: JSON`` (OpenAI's chunks), or the text as is (``[DONE]``)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"data: {text}\n\n".encode()
