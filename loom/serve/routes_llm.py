"""HTTP routes of the language model: the OpenAI-compatible API and the ``/generate`` page's stream.

==================================  ====================================================
``GET  /v1/models``                 the served model (OpenAI ``list`` of ``model``)
``GET  /v1/models/{id}``            one model, or a 404 error object
``POST /v1/completions``            OpenAI completions, ``stream`` true or false
``POST /v1/chat/completions``       OpenAI chat completions, ``stream`` true or false
``POST /api/generate``              the page's stream: ``queued``, ``start``, ``token``
                                    (text, count, elapsed, tokens/s), ``done``, ``error``
==================================  ====================================================

Every request is checked (:mod:`loom.serve.openai_schema`), tokenized on a worker
thread, checked against the context length, then queued on the
:class:`~loom.serve.llm_engine.GenerationEngine`. A streamed request ends its job when
the client disconnects (Starlette cancels the response; ``finally`` cancels the job); a
non-streamed one watches for the disconnect while it waits.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loom.errors import LoomError
from loom.serve.channel import EventChannel
from loom.serve.http import SSE_HEADERS, ServeError, error_body, read_json_object, sse_data, sse_event
from loom.serve.llm_engine import (
    EngineBusy,
    Failed,
    Finished,
    GenerationEngine,
    GenerationRequest,
    Queued,
    Started,
    TextDelta,
)
from loom.serve.openai_schema import (
    SamplingParams,
    bool_field,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    int_field,
    new_id,
    number_field,
    parse_chat_request,
    parse_completion_request,
    usage,
)

__all__ = ["API_BODY_LIMIT", "llm_routes"]

#: Largest request body of the generation routes (a prompt filling SmolLM2's context is ~40 kB).
API_BODY_LIMIT = 4 * 1024 * 1024
#: ``max_tokens`` when neither the request nor the model's context bounds it.
FALLBACK_MAX_TOKENS = 512


class LLMService:
    """The generation routes' shared steps, bound to one engine (or to none: ``--no-model``).

    Parameters
    ----------
    engine : GenerationEngine or None
    model_names : set of str
        Names accepted in a request's ``model`` (the id and its file name).
    """

    def __init__(self, engine: GenerationEngine | None, model_names: set[str]) -> None:
        self.engine = engine
        self.model_names = model_names

    async def ready_engine(self) -> GenerationEngine:
        """The engine once its model has loaded; 503 without a model or when loading failed."""
        engine = self.engine
        if engine is None:
            raise ServeError(
                503,
                "this server runs without a language model (it was started with --no-model)",
                type="server_error",
                code="model_not_loaded",
            )
        while not engine.ready:
            await asyncio.sleep(0.05)
        if engine.load_error is not None:
            raise ServeError(503, engine.load_error, type="server_error", code="model_not_loaded")
        return engine

    def check_model(self, name: str) -> None:
        """404 ``model_not_found`` for a model this server does not serve."""
        if name not in self.model_names:
            served = self.engine.model_id if self.engine is not None else "no model"
            raise ServeError(
                404,
                f"The model '{name}' does not exist or you do not have access to it (this server serves '{served}').",
                param="model",
                code="model_not_found",
            )

    async def tokenize(self, work: Callable[..., list[int]], *args: Any, param: str) -> list[int]:
        """Run ``work`` (prompt encoding, chat template) on a worker thread; errors become 400s."""
        try:
            return await anyio.to_thread.run_sync(work, *args)
        except LoomError as exc:
            raise ServeError(400, str(exc), param=param) from None
        except Exception as exc:  # a chat template's raise_exception ("roles must alternate"), jinja errors
            raise ServeError(400, f"could not build the prompt: {exc}", param=param) from None

    def budget(self, engine: GenerationEngine, prompt_tokens: int, requested: int | None, param: str) -> int:
        """The ``max_tokens`` to run: 400 for an empty or too long prompt, or too many tokens asked."""
        if prompt_tokens == 0:
            raise ServeError(400, "the prompt is empty after tokenization", param=param)
        context = engine.context_length
        if context is None:
            return requested if requested is not None else FALLBACK_MAX_TOKENS
        if requested is None:
            if prompt_tokens >= context:
                raise self._too_long(context, prompt_tokens, 0, param)
            return context - prompt_tokens
        if prompt_tokens + requested > context:
            raise self._too_long(context, prompt_tokens, requested, param)
        return requested

    @staticmethod
    def _too_long(context: int, prompt: int, completion: int, param: str) -> ServeError:
        return ServeError(
            400,
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt + completion} tokens ({prompt} in the prompt, {completion} for the completion). "
            "Please reduce the length of the prompt or of the completion (max_tokens).",
            param=param,
            code="context_length_exceeded",
        )

    def submit(self, engine: GenerationEngine, request: GenerationRequest) -> EventChannel:
        """Queue ``request``; 503 when the queue is full."""
        channel = EventChannel(asyncio.get_running_loop())
        try:
            engine.submit(request, channel)
        except EngineBusy as exc:
            raise ServeError(503, str(exc), type="server_error", code="queue_full") from None
        return channel


def _request(ids: list[int], params: SamplingParams, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        prompt_ids=tuple(ids),
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        seed=params.seed,
        stop=params.stop,
    )


async def _cancel_on_disconnect(request: Request, channel: EventChannel) -> None:
    while True:
        if await request.is_disconnected():
            channel.cancel()
            return
        await asyncio.sleep(0.2)


async def _collect(request: Request, channel: EventChannel) -> tuple[str, Finished]:
    """Gather a whole (non-streamed) generation; the job is cancelled if the client goes away."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, channel))
    parts: list[str] = []
    end: Finished | Failed | None = None
    try:
        async for event in channel:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Finished | Failed):
                end = event
    finally:
        watcher.cancel()
        channel.cancel()
    if isinstance(end, Failed):
        raise ServeError(500, end.message, type=end.type)
    if end is None:
        raise ServeError(500, "the generation ended without a result", type="server_error")
    return "".join(parts), end


def _finish_reason(end: Finished) -> str:
    return "length" if end.reason == "length" else "stop"


def _openai_stream(
    channel: EventChannel,
    chunk: Callable[..., dict[str, Any]],
    first: Any,
    content: Callable[[str], Any],
    final: Any,
    include_usage: bool,
) -> StreamingResponse:
    """The SSE stream of an OpenAI completion or chat completion.

    ``chunk(payload, finish_reason, usage=None, *, with_usage_field)`` builds one chunk
    (:func:`completion_chunk` or :func:`chat_chunk` with the id, time and model bound). The stream
    sends ``first`` (when not ``None``), ``content(text)`` per piece of text, ``final`` with the
    finish reason, the usage-only chunk when ``include_usage``, then ``[DONE]``; a failure becomes an
    OpenAI error object. Leaving early (client gone) cancels the request.
    """

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield sse_data(chunk(first, None, with_usage_field=include_usage))
            async for event in channel:
                if isinstance(event, TextDelta) and event.text:
                    yield sse_data(chunk(content(event.text), None, with_usage_field=include_usage))
                elif isinstance(event, Finished):
                    yield sse_data(chunk(final, _finish_reason(event), with_usage_field=include_usage))
                    if include_usage:
                        yield sse_data(chunk(None, None, usage(event.prompt_tokens, event.completion_tokens)))
                elif isinstance(event, Failed):
                    yield sse_data(error_body(event.message, event.type))
            yield sse_data("[DONE]")
        finally:
            channel.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def llm_routes(service: LLMService) -> list[Route]:
    """The generation routes, bound to ``service``."""

    async def models(request: Request) -> Response:
        engine = service.engine
        data = [] if engine is None or engine.load_error is not None else [_model_object(engine)]
        return JSONResponse({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        name = request.path_params["model_id"]
        service.check_model(name)
        assert service.engine is not None
        return JSONResponse(_model_object(service.engine))

    async def completions(request: Request) -> Response:
        body = await read_json_object(request, API_BODY_LIMIT)
        parsed = parse_completion_request(body)
        params = parsed.params
        service.check_model(params.model)
        engine = await service.ready_engine()
        if isinstance(parsed.prompt, str):
            ids = await service.tokenize(engine.encode_prompt, parsed.prompt, param="prompt")
        else:
            ids = list(parsed.prompt)
            vocab = engine.model.config.vocab_size
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise ServeError(400, f"Invalid 'prompt': token id {bad[0]} is outside 0..{vocab - 1}.", param="prompt")
        max_tokens = service.budget(engine, len(ids), params.max_tokens, "prompt")
        channel = service.submit(engine, _request(ids, params, max_tokens))
        name = engine.model_id  # the id, also when the request used an alias (the file name)
        echo = ""
        if parsed.echo:
            echo = parsed.prompt if isinstance(parsed.prompt, str) else engine.tokenizer.decode(ids)
        rid = new_id("cmpl")
        if not params.stream:
            text, end = await _collect(request, channel)
            body_out = completion_response(
                rid, name, echo + text, _finish_reason(end), end.prompt_tokens, end.completion_tokens
            )
            return JSONResponse(body_out)
        chunk = functools.partial(completion_chunk, rid, int(time.time()), name)
        return _openai_stream(channel, chunk, echo or None, lambda text: text, "", params.include_usage)

    async def chat_completions(request: Request) -> Response:
        body = await read_json_object(request, API_BODY_LIMIT)
        parsed = parse_chat_request(body)
        params = parsed.params
        service.check_model(params.model)
        engine = await service.ready_engine()
        ids = await service.tokenize(engine.encode_chat, [dict(m) for m in parsed.messages], param="messages")
        max_tokens = service.budget(engine, len(ids), params.max_tokens, "messages")
        channel = service.submit(engine, _request(ids, params, max_tokens))
        name = engine.model_id
        rid = new_id("chatcmpl")
        if not params.stream:
            text, end = await _collect(request, channel)
            out = chat_response(rid, name, text, _finish_reason(end), end.prompt_tokens, end.completion_tokens)
            return JSONResponse(out)
        chunk = functools.partial(chat_chunk, rid, int(time.time()), name)
        first = {"role": "assistant", "content": ""}
        return _openai_stream(channel, chunk, first, lambda text: {"content": text}, {}, params.include_usage)

    async def generate(request: Request) -> Response:
        body = await read_json_object(request, API_BODY_LIMIT)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ServeError(400, "prompt: expected text", param="prompt")
        requested = int_field(body, "max_tokens", minimum=1)
        temperature = number_field(body, "temperature", 0.0, 2.0, 0.7)
        top_p = number_field(body, "top_p", 0.0, 1.0, None)
        seed = int_field(body, "seed")
        chat = bool_field(body, "chat")
        engine = await service.ready_engine()
        if chat:
            messages = [{"role": "user", "content": prompt}]
            ids = await service.tokenize(engine.encode_chat, messages, param="prompt")
        else:
            ids = await service.tokenize(engine.encode_prompt, prompt, param="prompt")
        max_tokens = service.budget(engine, len(ids), requested or 50, "prompt")
        if top_p is not None and top_p == 0.0:  # only the most likely token: greedy
            temperature, top_p = 0.0, None
        elif top_p is not None and top_p >= 1.0:
            top_p = None
        job = GenerationRequest(tuple(ids), max_tokens, temperature=temperature or 0.0, top_p=top_p, seed=seed)
        channel = service.submit(engine, job)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for event in channel:
                    if isinstance(event, Queued):
                        yield sse_event("queued", {"ahead": event.ahead})
                    elif isinstance(event, Started):
                        yield sse_event("start", {"prompt_tokens": event.prompt_tokens, "waited": event.waited})
                    elif isinstance(event, TextDelta):
                        yield sse_event(
                            "token",
                            {
                                "text": event.text,
                                "tokens": event.tokens,
                                "elapsed": event.elapsed,
                                "tokens_per_second": event.tokens_per_second,
                            },
                        )
                    elif isinstance(event, Finished):
                        yield sse_event(
                            "done",
                            {
                                "reason": event.reason,
                                "prompt_tokens": event.prompt_tokens,
                                "completion_tokens": event.completion_tokens,
                                "elapsed": event.elapsed,
                                "prefill_seconds": event.prefill_seconds,
                                "tokens_per_second": event.tokens_per_second,
                            },
                        )
                    elif isinstance(event, Failed):
                        yield sse_event("error", {"message": event.message})
            finally:
                channel.cancel()

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
    ]


def _model_object(engine: GenerationEngine) -> dict[str, Any]:
    return {"id": engine.model_id, "object": "model", "created": engine.created, "owned_by": "loom"}
