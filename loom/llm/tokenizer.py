"""Tokenizers for ``loom.llm``: a thin layer over the Hugging Face ``tokenizers`` library.

:class:`Tokenizer` wraps a :class:`tokenizers.Tokenizer` (so ids are identical to Hugging
Face for the same ``tokenizer.json``) and adds what a text generator needs around it: the
BOS/EOS tokens and the set of ids that end generation, the model's chat template
(rendered like transformers, see :mod:`loom.llm.chat_template`) and an incremental
decoder that only ever yields complete UTF-8 text.

Reading tokenizers from files, folders, bytes and GGUF files is
:mod:`loom.llm.tokenizer_loader`'s job (:func:`~loom.llm.tokenizer_loader.load_tokenizer`).
Host-side only: no array backend is involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tokenizers

from loom.errors import ModelFormatError
from loom.llm.chat_template import render_chat_template

__all__ = ["NAMED_SPECIAL_TOKENS", "StreamDecoder", "Tokenizer"]

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
