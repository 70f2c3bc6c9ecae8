"""Tokenizers for ``loom.llm``: a thin layer over the Hugging Face ``tokenizers`` library.

:class:`Tokenizer` wraps a :class:`tokenizers.Tokenizer` (so ids are identical to Hugging
Face for the same ``tokenizer.json``) and adds what a text generator needs around it: the
BOS/EOS tokens and the set of ids that end generation, the model's chat template
(rendered like transformers, see :mod:`loom.llm.chat_template`) and an incremental
decoder that only ever yields complete UTF-8 text.

:func:`load_tokenizer` reads a ``tokenizer.json`` (path, bytes or JSON text), a Hugging
Face model directory (``tokenizer.json`` + ``tokenizer_config.json`` +
``generation_config.json`` / ``config.json``) or a ``.gguf`` file, whose vocabulary,
merges, pre-tokenizer and special tokens are rebuilt by :mod:`loom.llm.gguf_vocab`.
Unreadable input raises :class:`loom.errors.ModelFormatError` naming the file.
Host-side only: no array backend is involved.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from loom import safe_json
from loom.errors import ModelFormatError
from loom.llm.chat_template import render_chat_template

__all__ = ["StreamDecoder", "Tokenizer", "load_tokenizer", "load_tokenizer_from_bytes"]

GGUF_MAGIC = b"GGUF"
# Named special tokens transformers exposes to chat templates (``special_tokens_map``).
NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_REPLACEMENT_CHAR = "\ufffd"
_STREAM_TRIM_AT = 256  # drop already-emitted ids from a stream decoder beyond this many


class Tokenizer:
    """A text ↔ token-id codec with the model's special tokens and chat template.

    Build one with :func:`load_tokenizer`; the constructor takes an already built
    :class:`tokenizers.Tokenizer`.

    Parameters
    ----------
    backend : tokenizers.Tokenizer
        The Hugging Face tokenizer doing the actual work.
    named_tokens : dict of str to str, optional
        Named special tokens such as ``{"bos_token": "<s>", "eos_token": "</s>"}``.
    eos_token_ids : sequence of int, optional
        Extra ids that end generation (from ``generation_config.json``, ``config.json``).
        The id of ``eos_token`` is always included.
    bos_token_id, eos_token_id : int, optional
        Used when ``named_tokens`` does not name the token (e.g. only ``config.json`` knew).
    chat_template : str or dict of str to str, optional
        The Jinja chat template, or several named ones (``"default"`` is used by default).
    add_bos_token, add_eos_token : bool
        Whether :meth:`encode` with ``add_special_tokens=True`` adds BOS / EOS when the
        backend's post-processor does not already do so.
    source : str
        Where the tokenizer came from, for messages.

    Examples
    --------
    >>> tok = load_tokenizer("fixtures/llm/tiny-llama")          # doctest: +SKIP
    >>> tok.decode(tok.encode("Hello world"))                    # doctest: +SKIP
    'Hello world'
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        named_tokens: Mapping[str, str | None] | None = None,
        eos_token_ids: Iterable[int] = (),
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        chat_template: str | Mapping[str, str] | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        source: str = "<memory>",
    ) -> None:
        self._backend = backend
        self.source = source
        self._named_tokens = {k: v for k, v in dict(named_tokens or {}).items() if v is not None}
        if bos_token_id is not None and "bos_token" not in self._named_tokens:
            self._set_named_from_id("bos_token", bos_token_id)
        if eos_token_id is not None and "eos_token" not in self._named_tokens:
            self._set_named_from_id("eos_token", eos_token_id)
        self._bos_token_id = self._named_id("bos_token", fallback=bos_token_id)
        self._eos_token_id = self._named_id("eos_token", fallback=eos_token_id)
        eos_ids: list[int] = [] if self._eos_token_id is None else [self._eos_token_id]
        for token_id in eos_token_ids:
            if int(token_id) not in eos_ids:
                eos_ids.append(int(token_id))
        if self._eos_token_id is None and eos_ids:
            self._eos_token_id = eos_ids[0]
        self._eos_token_ids = eos_ids
        if isinstance(chat_template, Mapping):
            self._chat_templates = dict(chat_template)
        else:
            self._chat_templates = {} if chat_template is None else {"default": chat_template}
        try:
            probe = backend.encode("", add_special_tokens=True).ids
        except Exception as exc:  # the Rust library raises bare Exceptions for inconsistent files
            raise ModelFormatError(f"{source}: the tokenizer cannot encode text: {exc}") from exc
        self._prepend_bos = bool(add_bos_token and self._bos_token_id is not None and self._bos_token_id not in probe)
        self._append_eos = bool(add_eos_token and self._eos_token_id is not None and self._eos_token_id not in probe)

    def _set_named_from_id(self, name: str, token_id: int) -> None:
        if not 0 <= int(token_id) < self.vocab_size:
            return
        token = self._backend.id_to_token(int(token_id))
        if token is not None:
            self._named_tokens[name] = token

    def _named_id(self, name: str, fallback: int | None) -> int | None:
        token = self._named_tokens.get(name)
        token_id = None if token is None else self._backend.token_to_id(token)
        return fallback if token_id is None else int(token_id)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, "
            f"eos={self.eos_token!r}, source={self.source!r})"
        )

    def __len__(self) -> int:
        return self.vocab_size

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The wrapped :class:`tokenizers.Tokenizer`."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (ids are ``0 .. vocab_size-1``)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token(self) -> str | None:
        """The beginning-of-sequence token string, if the model has one."""
        return self._named_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        """The end-of-sequence token string, if the model has one."""
        return self._named_tokens.get("eos_token")

    @property
    def bos_token_id(self) -> int | None:
        """Id of the beginning-of-sequence token, or ``None``."""
        return self._bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        """Id of the tokenizer's end-of-sequence token, or ``None``."""
        return self._eos_token_id

    @property
    def eos_token_ids(self) -> list[int]:
        """Every id that ends generation (EOS plus generation-config extras such as ``<|im_end|>``)."""
        return list(self._eos_token_ids)

    @property
    def chat_template(self) -> str | None:
        """The default Jinja chat template, or ``None`` when the model ships none."""
        return self._chat_templates.get("default")

    @property
    def chat_templates(self) -> dict[str, str]:
        """All named chat templates (``"default"``, ``"tool_use"``, ...)."""
        return dict(self._chat_templates)

    @property
    def named_special_tokens(self) -> dict[str, str]:
        """Named special tokens (``bos_token``, ``eos_token``, ``pad_token``, ...) as strings."""
        return {k: v for k, v in self._named_tokens.items() if k in NAMED_SPECIAL_TOKENS}

    @property
    def special_tokens(self) -> dict[str, int]:
        """Every special token (added with ``special=True``): content → id."""
        decoder = self._backend.get_added_tokens_decoder()
        return {tok.content: int(i) for i, tok in sorted(decoder.items()) if tok.special}

    # ------------------------------------------------------------------ codec
    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (vocabulary form, e.g. ``"Ġthe"``), or ``None``."""
        token_id = self._backend.token_to_id(token)
        return None if token_id is None else int(token_id)

    def id_to_token(self, token_id: int) -> str | None:
        """Token string of an id (vocabulary form), or ``None`` when out of range."""
        if int(token_id) < 0:
            return None
        return self._backend.id_to_token(int(token_id))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` — identical to Hugging Face ``tokenizers``.

        Parameters
        ----------
        text : str
            Input text. Special tokens written in it (``<|im_start|>``) map to their ids.
        add_special_tokens : bool
            Apply the post-processor (and the model's ``add_bos_token`` / ``add_eos_token``).

        Returns
        -------
        list of int
            Token ids, ``[n_tokens]``.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        ids = self._backend.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens:
            if self._prepend_bos and (not ids or ids[0] != self._bos_token_id):
                ids = [self._bos_token_id, *ids]
            if self._append_eos:
                ids = [*ids, self._eos_token_id]
        return list(ids)

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """:meth:`encode` for several texts (parallel in the Rust backend)."""
        if not (self._prepend_bos or self._append_eos):
            encodings = self._backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
            return [list(e.ids) for e in encodings]
        return [self.encode(text, add_special_tokens) for text in texts]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of a sequence of token ids.

        Parameters
        ----------
        ids : iterable of int
            Token ids (Python or NumPy integers). Ids beyond the vocabulary are skipped, as
            Hugging Face does.
        skip_special_tokens : bool
            Leave out special tokens (``<|endoftext|>``, ``<|im_start|>``, ...).

        Returns
        -------
        str
            The decoded text; an incomplete UTF-8 sequence at the end shows as U+FFFD.
        """
        id_list = [int(i) for i in ids]
        if any(i < 0 for i in id_list):
            raise ValueError(f"token ids must be >= 0, got {min(id_list)}")
        return self._backend.decode(id_list, skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, skip_special_tokens: bool = True) -> StreamDecoder:
        """An incremental decoder: feed ids one by one, get complete text pieces back.

        Examples
        --------
        >>> dec = tok.stream_decoder()                              # doctest: +SKIP
        >>> "".join(dec.step(i) for i in tok.encode("café 😀")) + dec.flush()   # doctest: +SKIP
        'café 😀'
        """
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ chat
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        chat_template: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        continue_final_message: bool | str = False,
        **kwargs: Any,
    ) -> str:
        """Render a conversation with the model's own chat template (same text as transformers).

        Parameters
        ----------
        messages : sequence of dict
            ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
        add_generation_prompt : bool
            Open an assistant turn at the end (what you want before generating).
        chat_template : str, optional
            A template name (``"tool_use"``) or Jinja source overriding the model's template.
        tools, documents : sequence of dict, optional
            Passed to the template (tool JSON schemas, RAG documents).
        continue_final_message : bool or str
            Leave the last message open for the model to continue.
        **kwargs
            Extra template variables; the named special tokens (``bos_token``,
            ``eos_token``, ...) are provided by default.

        Returns
        -------
        str
            The prompt text; encode it with ``add_special_tokens=False``.

        Raises
        ------
        ModelFormatError
            When the model ships no chat template and none is given.
        """
        template = self._select_template(chat_template, tools)
        return render_chat_template(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tools=tools,
            documents=documents,
            special_tokens=self.named_special_tokens,
            **kwargs,
        )

    def _select_template(self, name_or_source: str | None, tools: Any) -> str:
        if name_or_source is not None:
            return self._chat_templates.get(name_or_source, name_or_source)
        if tools is not None and "tool_use" in self._chat_templates:
            return self._chat_templates["tool_use"]
        if "default" in self._chat_templates:
            return self._chat_templates["default"]
        if len(self._chat_templates) == 1:
            return next(iter(self._chat_templates.values()))
        raise ModelFormatError(
            f"{self.source}: missing chat template (expected one in tokenizer_config.json "
            "'chat_template', chat_template.jinja or GGUF tokenizer.chat_template); pass "
            "chat_template=... explicitly"
        )


class StreamDecoder:
    """Turns a stream of token ids into text pieces that are always complete UTF-8.

    Byte-level tokens can end in the middle of a multi-byte character (an emoji is often
    split over 2-4 tokens). :meth:`step` holds such bytes back until the character is
    complete, and decodes with the previous tokens as context so that word-initial spaces
    (``Ġ`` / ``▁``) come out right. Concatenating every :meth:`step` result and the final
    :meth:`flush` gives ``tokenizer.decode(all_ids)``.

    Parameters
    ----------
    tokenizer : Tokenizer
        The tokenizer whose ids are streamed.
    skip_special_tokens : bool
        Leave out special tokens, as in :meth:`Tokenizer.decode`.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the context window already emitted
        self._read_offset = 0  # end of what has been emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)

    def step(self, token_id: int) -> str:
        """Add one token id; return the newly completed text (possibly ``""``)."""
        self._ids.append(int(token_id))
        emitted = self._decode(self._ids[self._prefix_offset : self._read_offset])
        current = self._decode(self._ids[self._prefix_offset :])
        if len(current) <= len(emitted) or current.endswith(_REPLACEMENT_CHAR):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        if self._prefix_offset > _STREAM_TRIM_AT:
            del self._ids[: self._prefix_offset]
            self._read_offset -= self._prefix_offset
            self._prefix_offset = 0
        return current[len(emitted) :]

    def flush(self) -> str:
        """Return whatever is still held back (an incomplete sequence shows as U+FFFD) and reset."""
        emitted = self._decode(self._ids[self._prefix_offset : self._read_offset])
        current = self._decode(self._ids[self._prefix_offset :])
        self._ids.clear()
        self._prefix_offset = self._read_offset = 0
        return current[len(emitted) :] if len(current) > len(emitted) else ""


# ---------------------------------------------------------------------- loading
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
    from loom.llm.gguf_file import load_gguf_tokenizer  # gguf is an optional dependency

    return load_gguf_tokenizer(path)


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
