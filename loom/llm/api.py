"""LOOM-compatible module functions acting on a default model and tokenizer.

LOOM's C-ABI / WASM / Python bindings keep one global tokenizer and one global
transformer: ``LoadTokenizerFromBytes``, ``LoadTransformerFromBytes``,
``EncodeText``, ``DecodeTokens``, ``GenerateText``, ``GenerateNextToken``. These
functions keep that workflow (and the welvet return values) but follow Hugging
Face semantics (see spec ``decisions.md`` Q28–Q33): the tokenizer is the
``tokenizers`` one, the model uses a KV cache, ``temperature`` really samples
(0 = greedy), and errors are :mod:`loom.errors` exceptions instead of
``{"error": ...}`` dicts.

Example (as in the LOOM README)::

    from loom import llm
    llm.load_tokenizer_from_bytes(open("tokenizer.json", "rb").read())
    llm.load_transformer_from_bytes(open("config.json", "rb").read(),
                                    open("model.safetensors", "rb").read())
    print(llm.generate_text("Once upon a time", max_tokens=50, temperature=0.7))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loom.errors import LoomError
from loom.llm.generation import TextGenerator
from loom.llm.loader import load_transformer_bytes
from loom.llm.model import Transformer
from loom.llm.tokenizer import Tokenizer
from loom.llm.tokenizer import load_tokenizer_from_bytes as _tokenizer_from_bytes

__all__ = [
    "decode_tokens",
    "encode_text",
    "generate_next_token",
    "generate_stream",
    "generate_text",
    "get_default_model",
    "get_default_tokenizer",
    "load_tokenizer_from_bytes",
    "load_transformer_from_bytes",
    "set_default_model",
    "set_default_tokenizer",
]


@dataclass
class _Defaults:
    model: Transformer | None = None
    tokenizer: Tokenizer | None = None
    rng: np.random.Generator | None = None


_defaults = _Defaults()


def set_default_model(model: Transformer | None) -> None:
    """Make ``model`` the transformer the module functions use."""
    _defaults.model = model


def set_default_tokenizer(tokenizer: Tokenizer | None) -> None:
    """Make ``tokenizer`` the tokenizer the module functions use."""
    _defaults.tokenizer = tokenizer


def get_default_model() -> Transformer:
    """The default transformer; :class:`~loom.errors.LoomError` when none is loaded."""
    if _defaults.model is None:
        raise LoomError("transformer not loaded: call load_transformer_from_bytes(...) first")
    return _defaults.model


def get_default_tokenizer() -> Tokenizer:
    """The default tokenizer; :class:`~loom.errors.LoomError` when none is loaded."""
    if _defaults.tokenizer is None:
        raise LoomError("tokenizer not loaded: call load_tokenizer_from_bytes(...) first")
    return _defaults.tokenizer


def _rng(seed: int | None) -> np.random.Generator:
    if seed is not None:
        return np.random.default_rng(seed)
    if _defaults.rng is None:
        _defaults.rng = np.random.default_rng()
    return _defaults.rng


def load_tokenizer_from_bytes(data: bytes) -> dict[str, Any]:
    """Load the default tokenizer from ``tokenizer.json`` bytes (LOOM ``LoadTokenizerFromBytes``).

    Parameters
    ----------
    data : bytes
        Contents of a Hugging Face ``tokenizer.json`` (or of a ``.gguf`` file).

    Returns
    -------
    dict
        ``{"success": True, "vocab_size": N, "message": "Tokenizer loaded successfully"}``.
    """
    tokenizer = _tokenizer_from_bytes(data)
    set_default_tokenizer(tokenizer)
    return {"success": True, "vocab_size": tokenizer.vocab_size, "message": "Tokenizer loaded successfully"}


def load_transformer_from_bytes(config_bytes: bytes, weights_bytes: bytes) -> dict[str, Any]:
    """Load the default model from ``config.json`` and ``model.safetensors`` bytes.

    Parameters
    ----------
    config_bytes : bytes
        Contents of ``config.json``.
    weights_bytes : bytes
        Contents of a single safetensors file.

    Returns
    -------
    dict
        ``{"success", "vocab_size", "hidden_size", "num_layers", "message"}`` as in LOOM.
    """
    model = load_transformer_bytes(config_bytes, weights_bytes)
    set_default_model(model)
    cfg = model.config
    return {
        "success": True,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "message": "Transformer loaded successfully",
    }


def encode_text(text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of ``text`` with the default tokenizer."""
    return list(get_default_tokenizer().encode(text, add_special_tokens=add_special_tokens))


def decode_tokens(ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Text of ``ids`` with the default tokenizer."""
    return get_default_tokenizer().decode(list(ids), skip_special_tokens=skip_special_tokens)


def generate_next_token(ids: Sequence[int], temperature: float = 0.7, *, seed: int | None = None) -> int:
    """One next-token id after ``ids`` with the default model (LOOM ``GenerateNextToken``).

    Parameters
    ----------
    ids : sequence of int
        ``[T]`` context ids.
    temperature : float
        0 = greedy, > 0 samples (from the module RNG, or a fresh one seeded by ``seed``).

    Returns
    -------
    int
    """
    model = get_default_model()
    return next(model.stream(ids, 1, temperature=temperature, stop_ids=[], rng=_rng(seed)))


def generate_stream(
    prompt: str, max_tokens: int = 50, temperature: float = 0.7, *, seed: int | None = None
) -> Iterator[str]:
    """Yield the completion of ``prompt`` piece by piece (welvet ``generate_stream``)."""
    generator = TextGenerator(get_default_model(), get_default_tokenizer())
    decoder = generator.tokenizer.stream_decoder(skip_special_tokens=True)
    ids = generator.tokenizer.encode(prompt, add_special_tokens=False)
    for token in generator.model.stream(
        ids, max_tokens, temperature=temperature, rng=_rng(seed), stop_ids=generator.stop_ids()
    ):
        piece = decoder.step(token)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


def generate_text(prompt: str, max_tokens: int = 50, temperature: float = 0.7, *, seed: int | None = None) -> str:
    """Prompt **plus** completion, as LOOM's ``GenerateText`` returns it.

    The prompt is encoded without special tokens; generation stops after an
    EOS / end-of-turn token; the whole sequence is decoded skipping special
    tokens.

    Parameters
    ----------
    prompt : str
        Input text.
    max_tokens : int
        Maximum new tokens.
    temperature : float
        0 = greedy, > 0 samples.
    seed : int, optional
        Seed for reproducible sampling.

    Returns
    -------
    str
    """
    model, tokenizer = get_default_model(), get_default_tokenizer()
    ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    if not ids:
        raise LoomError("empty input after tokenization")
    stops = TextGenerator(model, tokenizer).stop_ids()
    new = list(model.stream(ids, max_tokens, temperature=temperature, rng=_rng(seed), stop_ids=stops))
    return tokenizer.decode(ids + new, skip_special_tokens=True)
