"""LOOM WASM's transformer functions, with the WASM build's results and error shapes.

Same functions as ``loom.LoadTokenizerFromBytes`` & co. (:mod:`loom.llm.api`: the
default model and tokenizer, the embedded SmolLM2 when none was loaded), but a
failure is *returned* as LOOM's ``inference.go`` returns it — the JSON text
``{"error": "<what failed>: <why>", "success": false}`` — instead of raised
(unless the error mode is ``"raise"``).

=================================================  ==============================================
call                                               success
=================================================  ==============================================
``LoadTokenizerFromBytes(data)``                   ``'{"message": ..., "success": true, "vocab_size": N}'``
``LoadTransformerFromBytes(config, weights)``      ``'{"embeddings_size", "hidden_size", "message",``
(or GGUF bytes alone)                              ``"num_layers", "success": true, "vocab_size"}'``
``EncodeText(text, addSpecialTokens)``             ``list[int]`` (WASM: a ``Uint32Array``)
``DecodeTokens(ids, skipSpecialTokens)``           ``str``
``GenerateText(prompt, maxTokens, temperature)``   ``'{"generated_text", "num_tokens", "success": true}'``
``GenerateNextToken(ids, temperature)``            ``int``
=================================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from loom.compat.bridge import ErrorText, fail
from loom.errors import LoomError
from loom.json_text import JSONText

__all__ = [
    "DecodeTokens",
    "EncodeText",
    "ErrorJSONText",
    "GenerateNextToken",
    "GenerateText",
    "LoadTokenizerFromBytes",
    "LoadTransformerFromBytes",
]

_T = TypeVar("_T")


class ErrorJSONText(JSONText, ErrorText):
    """``{"error": ..., "success": false}`` text (readable like :class:`~loom.json_text.JSONText`)."""

    __slots__ = ()


def _call(what: str, func: Callable[[], _T]) -> _T | ErrorJSONText:
    try:
        return func()
    except (LoomError, ValueError, TypeError) as exc:
        message = f"{what}: {exc}"
        text = JSONText.of({"error": message, "success": False})
        returned = fail(text, exc)
        return ErrorJSONText(str(returned), exc)


def _api() -> Any:
    from loom.llm import api

    return api


def LoadTokenizerFromBytes(tokenizer_data: bytes | bytearray | memoryview | str) -> JSONText | ErrorJSONText:
    """Load the default tokenizer from ``tokenizer.json`` or GGUF bytes; JSON text of the outcome."""
    return _call("Failed to load tokenizer", lambda: _api().LoadTokenizerFromBytes(tokenizer_data))


def LoadTransformerFromBytes(
    config_data: bytes | bytearray | memoryview | str | None,
    weights_data: bytes | bytearray | memoryview | None = None,
) -> JSONText | ErrorJSONText:
    """Load the default model from ``config.json`` + safetensors bytes, or GGUF bytes alone."""
    return _call("Failed to load transformer", lambda: _api().LoadTransformerFromBytes(config_data, weights_data))


def EncodeText(text: str, add_special_tokens: bool = True) -> list[int] | ErrorJSONText:
    """Token ids of ``text`` with the default tokenizer."""
    return _call("Failed to encode text", lambda: _api().EncodeText(text, add_special_tokens))


def DecodeTokens(token_ids: Sequence[int], skip_special_tokens: bool = True) -> str | ErrorJSONText:
    """Text of ``token_ids`` with the default tokenizer."""
    return _call("Failed to decode tokens", lambda: _api().DecodeTokens(token_ids, skip_special_tokens))


def GenerateText(
    prompt: str, max_tokens: int = 50, temperature: float = 0.7, *, seed: int | None = None
) -> JSONText | ErrorJSONText:
    """Prompt + completion with the default model: ``{"generated_text", "num_tokens", "success"}``."""
    return _call("Failed to generate text", lambda: _api().GenerateText(prompt, max_tokens, temperature, seed=seed))


def GenerateNextToken(
    token_ids: Sequence[int], temperature: float = 0.7, *, seed: int | None = None
) -> int | ErrorJSONText:
    """The next token id after ``token_ids`` with the default model."""
    return _call("Failed to generate token", lambda: _api().GenerateNextToken(token_ids, temperature, seed=seed))
