"""Load a :class:`~loom.llm.tokenizer.Tokenizer` from a file, a model folder, bytes or a GGUF file.

:func:`load_tokenizer` reads a ``tokenizer.json`` (path, bytes or JSON text), a Hugging
Face model directory (``tokenizer.json`` + ``tokenizer_config.json`` +
``generation_config.json`` / ``config.json``) or a ``.gguf`` file, whose vocabulary,
merges, pre-tokenizer and special tokens are rebuilt by :mod:`loom.llm.gguf_vocab`
(through :func:`loom.llm.gguf_file.load_gguf_tokenizer`). Unreadable input raises
:class:`loom.errors.ModelFormatError` naming the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tokenizers

from loom import safe_json
from loom.errors import ModelFormatError
from loom.llm.gguf_file import load_gguf_tokenizer
from loom.llm.tokenizer import NAMED_SPECIAL_TOKENS, Tokenizer

__all__ = ["load_tokenizer", "load_tokenizer_from_bytes"]

GGUF_MAGIC = b"GGUF"


def _read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path}: expected UTF-8 text ({exc})") from exc


def _read_json_file(path: Path) -> Any:
    return safe_json.loads(_read_text_file(path), source=str(path), error=ModelFormatError)


def _backend_from_json_text(text: str, source: str) -> tokenizers.Tokenizer:
    document = safe_json.loads(text, source=source, error=ModelFormatError)
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        raise ModelFormatError(f"{source}: not a Hugging Face tokenizer.json (no top-level 'model' object)")
    try:
        return tokenizers.Tokenizer.from_str(text)
    except BaseException as exc:  # the Rust parser raises a bare Exception, or panics (a BaseException)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ModelFormatError(f"{source}: invalid tokenizer.json: {type(exc).__name__}: {exc}") from exc


def _token_content(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _id_list(value: Any) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _chat_templates_from_config(directory: Path, config: Mapping[str, Any]) -> dict[str, str]:
    templates: dict[str, str] = {}
    raw = config.get("chat_template")
    if isinstance(raw, str):
        templates["default"] = raw
    elif isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, Mapping) and isinstance(entry.get("template"), str):
                templates[str(entry.get("name", "default"))] = entry["template"]
    jinja_file = directory / "chat_template.jinja"
    json_file = directory / "chat_template.json"
    if jinja_file.is_file():
        templates["default"] = _read_text_file(jinja_file)
    elif json_file.is_file():
        loaded = _read_json_file(json_file)
        if isinstance(loaded, Mapping) and isinstance(loaded.get("chat_template"), str):
            templates["default"] = loaded["chat_template"]
    extra_dir = directory / "additional_chat_templates"
    if extra_dir.is_dir():
        for extra in sorted(extra_dir.glob("*.jinja")):
            templates.setdefault(extra.stem, _read_text_file(extra))
    return templates


def _load_model_directory(directory: Path) -> Tokenizer:
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.is_file():
        gguf_files = sorted(directory.glob("*.gguf"))
        if len(gguf_files) == 1:
            return _load_gguf(gguf_files[0])
        raise ModelFormatError(
            f"{directory}: missing tokenizer.json (loom reads Hugging Face fast-tokenizer files or a .gguf file)"
        )
    backend = _backend_from_json_text(_read_text_file(tokenizer_file), str(tokenizer_file))

    def optional_json(name: str) -> dict[str, Any]:
        path = directory / name
        if not path.is_file():
            return {}
        loaded = _read_json_file(path)
        if not isinstance(loaded, dict):
            raise ModelFormatError(f"{path}: expected a JSON object, got {type(loaded).__name__}")
        return loaded

    tokenizer_config = optional_json("tokenizer_config.json")
    generation_config = optional_json("generation_config.json")
    model_config = optional_json("config.json")
    named = {name: _token_content(tokenizer_config.get(name)) for name in NAMED_SPECIAL_TOKENS}
    config_eos = _id_list(model_config.get("eos_token_id"))
    generation_eos = _id_list(generation_config.get("eos_token_id"))
    bos_ids = _id_list(generation_config.get("bos_token_id")) or _id_list(model_config.get("bos_token_id"))
    return Tokenizer(
        backend,
        named_tokens=named,
        eos_token_ids=[*generation_eos, *config_eos],
        bos_token_id=bos_ids[0] if bos_ids else None,
        eos_token_id=(generation_eos or config_eos or [None])[0],
        chat_template=_chat_templates_from_config(directory, tokenizer_config) or None,
        add_bos_token=bool(tokenizer_config.get("add_bos_token", False)),
        add_eos_token=bool(tokenizer_config.get("add_eos_token", False)),
        source=str(directory),
    )


def _load_gguf(path: Path) -> Tokenizer:
    return load_gguf_tokenizer(path)  # imports the optional gguf package only now


def load_tokenizer_from_bytes(data: bytes | bytearray | memoryview | str) -> Tokenizer:
    """Load a tokenizer from the bytes of a ``tokenizer.json`` (or of a whole ``.gguf`` file).

    Parameters
    ----------
    data : bytes or str
        UTF-8 JSON of a Hugging Face ``tokenizer.json``, or GGUF file bytes.

    Returns
    -------
    Tokenizer
        Without chat template or EOS extras (``tokenizer.json`` carries neither), except
        for GGUF input, which carries both.

    Raises
    ------
    ModelFormatError
        When the bytes are neither valid tokenizer JSON nor GGUF.
    """
    if isinstance(data, str):
        return Tokenizer(_backend_from_json_text(data, "<tokenizer JSON>"), source="<tokenizer JSON>")
    raw = bytes(data)
    if raw[:4] == GGUF_MAGIC:
        # GGUFReader memory-maps a path, so spill the bytes to a temporary file.
        with tempfile.TemporaryDirectory(prefix="loom-gguf-") as tmp:
            path = Path(tmp) / "tokenizer.gguf"
            path.write_bytes(raw)
            tokenizer = _load_gguf(path)
            tokenizer.source = "<GGUF bytes>"
            return tokenizer
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"<tokenizer bytes>: expected UTF-8 tokenizer JSON or a GGUF file ({exc})") from exc
    return Tokenizer(_backend_from_json_text(text, "<tokenizer bytes>"), source="<tokenizer bytes>")


def load_tokenizer(source: str | os.PathLike[str] | bytes | bytearray) -> Tokenizer:
    """Load a tokenizer from a file, a model directory, a GGUF file or raw JSON.

    Parameters
    ----------
    source : str, path-like or bytes
        * a path to a ``tokenizer.json``;
        * a Hugging Face model directory: ``tokenizer.json`` plus, when present,
          ``tokenizer_config.json`` (chat template, BOS/EOS, ``add_bos_token``),
          ``chat_template.jinja``, ``generation_config.json`` and ``config.json``
          (EOS ids);
        * a ``.gguf`` file (vocabulary, merges, pre-tokenizer, special tokens and chat
          template rebuilt from its metadata);
        * the JSON text or bytes of a ``tokenizer.json``.

    Returns
    -------
    Tokenizer

    Raises
    ------
    ModelFormatError
        When the source does not exist or cannot be parsed; the message names the file.

    Examples
    --------
    >>> tok = load_tokenizer("fixtures/llm/tiny-llama")            # doctest: +SKIP
    >>> tok.encode("<|im_start|>user", add_special_tokens=False)   # doctest: +SKIP
    [1, 355]
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return load_tokenizer_from_bytes(source)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return load_tokenizer_from_bytes(source)
    path = Path(source)
    if path.is_dir():
        return _load_model_directory(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such tokenizer file or model directory")
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if head == GGUF_MAGIC or path.suffix.lower() == ".gguf":
        return _load_gguf(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path}: not a UTF-8 tokenizer.json ({exc})") from exc
    return Tokenizer(_backend_from_json_text(text, str(path)), source=str(path))
