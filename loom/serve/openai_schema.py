"""OpenAI-compatible request checking and response shapes (pure functions, no I/O).

Requests are checked field by field; a wrong type or value is a 400 error naming the
field (``param``), as OpenAI answers. Fields this server cannot honour (``logprobs``,
``tools``, penalties, ``n`` > 1, ...) are refused with a 400 when set to anything but
their neutral value, rather than silently ignored; fields that do not change the output
(``user``, ``metadata``, ``store``, ...) are accepted and ignored.

Responses follow the OpenAI API reference: ``text_completion`` objects for
``/v1/completions`` (streamed chunks have the same shape), ``chat.completion`` and
``chat.completion.chunk`` for ``/v1/chat/completions`` (first chunk carries the role, the
last one an empty delta and the ``finish_reason``; with ``stream_options.include_usage`` a
final chunk with empty ``choices`` carries ``usage``).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loom.serve.http import ServeError

__all__ = [
    "MAX_STOP_SEQUENCES",
    "ChatRequest",
    "CompletionRequest",
    "SamplingParams",
    "bool_field",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "int_field",
    "new_id",
    "number_field",
    "parse_chat_request",
    "parse_completion_request",
    "parse_sampling",
    "usage",
]

MAX_STOP_SEQUENCES = 4
#: OpenAI's default ``max_tokens`` of the legacy completions endpoint.
DEFAULT_COMPLETION_TOKENS = 16
_ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class SamplingParams:
    """The generation settings shared by both endpoints."""

    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: tuple[str, ...]


@dataclass(frozen=True)
class CompletionRequest:
    """``/v1/completions``: a text prompt or a list of token ids."""

    params: SamplingParams
    prompt: str | tuple[int, ...]
    echo: bool


@dataclass(frozen=True)
class ChatRequest:
    """``/v1/chat/completions``: messages with text content (roles as the template knows them)."""

    params: SamplingParams
    messages: tuple[dict[str, str], ...]


def _bad(message: str, param: str, code: str | None = None) -> ServeError:
    return ServeError(400, message, param=param, code=code)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _type_name(value: Any) -> str:
    return {bool: "boolean", str: "string", list: "array", dict: "object", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def int_field(body: Mapping[str, Any], name: str, minimum: int | None = None) -> int | None:
    """``body[name]`` as an integer >= ``minimum`` (None when absent); 400 naming the field otherwise."""
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise _bad(f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.", name)
    if minimum is not None and value < minimum:
        raise _bad(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    return value


def number_field(body: Mapping[str, Any], name: str, low: float, high: float, default: float | None) -> float | None:
    """``body[name]`` as a finite number in [low, high] (``default`` when absent)."""
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise _bad(f"Invalid type for '{name}': expected a number, but got {_type_name(value)} instead.", name)
    if not low <= value <= high:
        raise _bad(f"Invalid '{name}': expected a number from {low:g} to {high:g}, but got {value} instead.", name)
    return float(value)


def bool_field(body: Mapping[str, Any], name: str) -> bool:
    """``body[name]`` as a boolean (False when absent)."""
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"Invalid type for '{name}': expected a boolean, but got {_type_name(value)} instead.", name)
    return value


def _get_stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _bad("Invalid type for 'stop': expected a string or an array of strings.", "stop")
    if len(value) > MAX_STOP_SEQUENCES:
        raise _bad(f"Invalid 'stop': expected at most {MAX_STOP_SEQUENCES} sequences, got {len(value)}.", "stop")
    return tuple(s for s in value if s)


def _refuse_unsupported(body: Mapping[str, Any], neutral: Mapping[str, Any]) -> None:
    """400 for a field set to anything other than its neutral value(s)."""
    for name, allowed in neutral.items():
        if name in body and body[name] not in allowed:
            raise _bad(f"'{name}' is not supported by this server (loom serve).", name, "unsupported_parameter")


_NEUTRAL_COMMON: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
}


def parse_sampling(body: Mapping[str, Any], default_max_tokens: int | None) -> SamplingParams:
    """Check the fields both endpoints share.

    Parameters
    ----------
    body : mapping
        The request's JSON object.
    default_max_tokens : int, optional
        ``max_tokens`` when the request has none (None: up to the context length).
    """
    model = body.get("model")
    if model is None:
        raise _bad("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str):
        raise _bad(f"Invalid type for 'model': expected a string, but got {_type_name(model)} instead.", "model")
    stream = bool_field(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, Mapping):
            raise _bad("Invalid type for 'stream_options': expected an object.", "stream_options")
        if not stream:
            raise _bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
        include_usage = bool_field(options, "include_usage")
    max_tokens = int_field(body, "max_tokens", minimum=1)
    max_completion = int_field(body, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = max_completion if max_completion is not None else default_max_tokens
    temperature = number_field(body, "temperature", 0.0, 2.0, 1.0)
    top_p = number_field(body, "top_p", 0.0, 1.0, None)
    top_k = int_field(body, "top_k")
    if top_k is not None and top_k <= 0:  # vLLM's convention: 0 or -1 disable the filter
        top_k = None
    seed = int_field(body, "seed")
    if top_p is not None and top_p == 0.0:  # keep only the most likely token: greedy
        temperature, top_p = 0.0, None
    elif top_p is not None and top_p >= 1.0:
        top_p = None
    assert temperature is not None
    return SamplingParams(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=_get_stop(body),
    )


def parse_completion_request(body: Mapping[str, Any]) -> CompletionRequest:
    """Check a ``/v1/completions`` body (one prompt: a string, ``[string]`` or token ids)."""
    _refuse_unsupported(body, {**_NEUTRAL_COMMON, "logprobs": (None, 0), "best_of": (None, 1), "suffix": (None, "")})
    params = parse_sampling(body, DEFAULT_COMPLETION_TOKENS)
    prompt = body.get("prompt")
    if prompt is None:
        raise _bad("you must provide a prompt parameter", "prompt", "missing_required_parameter")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        parsed: str | tuple[int, ...] = prompt
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        parsed = tuple(prompt)
    elif isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str | list) for p in prompt):
        raise _bad("only one prompt per request is supported by this server (loom serve)", "prompt")
    else:
        raise _bad(
            "Invalid type for 'prompt': expected a string, an array with one string, or an array of token ids.",
            "prompt",
        )
    return CompletionRequest(params, parsed, bool_field(body, "echo"))


def _message_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(
                    f"Invalid '{where}.content[{k}]': only text parts ({{'type': 'text', 'text': ...}}) are supported.",
                    f"{where}.content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"Invalid type for '{where}.content': expected a string or an array of text parts.", f"{where}.content")


def parse_chat_request(body: Mapping[str, Any]) -> ChatRequest:
    """Check a ``/v1/chat/completions`` body."""
    _refuse_unsupported(
        body,
        {
            **_NEUTRAL_COMMON,
            "logprobs": (None, False),
            "top_logprobs": (None, 0),
            "tools": (None, []),
            "functions": (None, []),
            "tool_choice": (None, "none", "auto"),
            "response_format": (None, {"type": "text"}),
        },
    )
    params = parse_sampling(body, None)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("Invalid 'messages': expected a non-empty array of messages.", "messages")
    parsed = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _bad(f"Invalid type for '{where}': expected an object.", where)
        role = message.get("role")
        if role not in _ROLES:
            raise _bad(f"Invalid '{where}.role': expected one of {', '.join(_ROLES)}, got {role!r}.", f"{where}.role")
        content = message.get("content")
        text = "" if content is None and role == "assistant" else _message_text(content, where)
        parsed.append({"role": "system" if role == "developer" else role, "content": text})
    return ChatRequest(params, tuple(parsed))


# ---------------------------------------------------------------------------------------- responses
def new_id(prefix: str) -> str:
    """``cmpl-...`` / ``chatcmpl-...``: a unique response id."""
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_response(
    rid: str, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A non-streamed ``text_completion``."""
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(
    rid: str,
    created: int,
    model: str,
    text: str | None,
    finish_reason: str | None,
    usage_: dict[str, int] | None = None,
    *,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    """One streamed ``text_completion`` chunk; ``text=None`` makes the usage-only chunk (``choices: []``)."""
    chunk: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created, "model": model}
    chunk["choices"] = (
        [] if text is None else [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]
    )
    if with_usage_field or usage_ is not None:
        chunk["usage"] = usage_
    return chunk


def chat_response(
    rid: str, model: str, content: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A non-streamed ``chat.completion``."""
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(
    rid: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None,
    usage_: dict[str, int] | None = None,
    *,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the usage-only chunk (``choices: []``).

    With ``stream_options.include_usage`` every chunk carries ``"usage": null`` except the last.
    """
    chunk: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
    chunk["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    if with_usage_field or usage_ is not None:
        chunk["usage"] = usage_
    return chunk
