"""Rebuild a Hugging Face tokenizer from GGUF tokenizer metadata.

A GGUF file has no ``tokenizer.json``; llama.cpp stores the vocabulary as metadata:
``tokenizer.ggml.model`` (``"gpt2"`` = byte-level BPE, ``"llama"`` = SentencePiece-style
BPE with ``▁`` and ``<0xHH>`` byte fallback), ``tokens``, ``merges``, ``scores``,
``token_type``, the special token ids, ``add_bos_token`` and ``tokenizer.ggml.pre``, the
name of the pre-tokenizer (the regex split applied before BPE). This module turns that
into a :class:`tokenizers.Tokenizer`, so a single ``.gguf`` is enough to tokenize.

Pre-tokenizers follow llama.cpp's ``llama-vocab.cpp``: each ``pre`` name maps to the list
of regexes llama.cpp applies one after another (written here in the original
``tokenizer.json`` form, which the Oniguruma engine of ``tokenizers`` understands), then
the GPT-2 byte-to-unicode mapping. ``smollm`` (also starcoder, refact, command-r, ...) first
isolates every digit, then applies the GPT-2 regex — exactly the original SmolLM2
``tokenizer.json`` (``Digits(individual_digits=True)`` + ``ByteLevel``). Unknown names fall
back to the GPT-2 regex with a warning.

Token types: 3 (control) become special added tokens, so ``<|im_start|>`` is one id and is
skipped by ``decode(skip_special_tokens=True)``; 4 (user-defined) become non-special added
tokens (matched whole, always decoded), as llama.cpp treats them.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from loom.errors import ModelFormatError
from loom.llm.tokenizer import Tokenizer

__all__ = ["GGUF_PRE_TOKENIZERS", "PreTokenizerSpec", "build_gguf_backend", "tokenizer_from_gguf"]

# llama.cpp token types (``llama_token_type``).
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5
TOKEN_TYPE_BYTE = 6

#: Longest token whose merges are recovered from SentencePiece scores.
_MAX_MERGED_TOKEN = 256
_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
GPT2_SPLIT = _CONTRACTIONS + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SEED_CODER_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}"
    r"| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BLOOM_SPLIT = r" ?[^(\s|.,!?…。，、।۔،)]+"
SINGLE_DIGIT = r"\p{N}"


@dataclass(frozen=True)
class PreTokenizerSpec:
    """How llama.cpp splits text for one ``tokenizer.ggml.pre`` name.

    Parameters
    ----------
    regexes : tuple of str
        Applied in order; each splits every piece left by the previous one, keeping both
        the matches and the text between them ("isolated").
    ignore_merges : bool
        A whole piece that is a vocabulary token is emitted as is (Llama-3 style).
    add_bos : bool
        llama.cpp's default for ``add_bos_token`` when the file does not say.
    """

    regexes: tuple[str, ...]
    ignore_merges: bool = False
    add_bos: bool = False


_GPT2 = PreTokenizerSpec((GPT2_SPLIT,))
_DIGITS_THEN_GPT2 = PreTokenizerSpec((SINGLE_DIGIT, GPT2_SPLIT))
_LLAMA3 = PreTokenizerSpec((LLAMA3_SPLIT,), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizerSpec((QWEN2_SPLIT,))


def _spec_table() -> dict[str, PreTokenizerSpec]:
    table: dict[str, PreTokenizerSpec] = {
        "default": PreTokenizerSpec(
            (
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_SPLIT,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            )
        ),
        "falcon": PreTokenizerSpec((r"[\p{P}\$\+<=>\^~\|`]+", GPT2_SPLIT, r"[0-9][0-9][0-9]")),
        "deepseek-coder": PreTokenizerSpec((r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", SINGLE_DIGIT)),
        "tekken": PreTokenizerSpec((TEKKEN_SPLIT,), ignore_merges=True, add_bos=True),
        "seed-coder": PreTokenizerSpec((SEED_CODER_SPLIT,)),
        "chatglm-bpe": PreTokenizerSpec((LLAMA3_SPLIT,)),
        "glm4": PreTokenizerSpec((LLAMA3_SPLIT,)),
        "viking": PreTokenizerSpec((BLOOM_SPLIT, SINGLE_DIGIT)),
    }
    families = {
        _LLAMA3: (
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ),
        PreTokenizerSpec((LLAMA3_SPLIT,)): ("dbrx", "smaug-bpe"),
        _GPT2: (
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
            "exaone4",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
        ),
        _DIGITS_THEN_GPT2: (
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ),
        _QWEN2: (
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "solar-open",
        ),
        PreTokenizerSpec((GPT4O_SPLIT,)): ("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"),
        PreTokenizerSpec((BLOOM_SPLIT,)): ("poro-chat", "bloom", "gpt3-finnish"),
    }
    for spec, names in families.items():
        for name in names:
            table[name] = spec
    return table


GGUF_PRE_TOKENIZERS: dict[str, PreTokenizerSpec] = _spec_table()


@functools.cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


@functools.cache
def _byte_alphabet() -> frozenset[str]:
    """The 256 characters of the GPT-2 byte-to-unicode mapping."""
    return frozenset(_byte_to_unicode().values())


def _byte_level_spelling(token: str) -> str:
    """A raw-UTF-8 token re-spelled in the byte-level alphabet (``" a"`` → ``"Ġa"``)."""
    table = _byte_to_unicode()
    return "".join(table[b] for b in token.encode("utf-8"))


def _parse_merges(merges: Sequence[str], source: str) -> list[tuple[str, str]]:
    pairs = []
    for index, merge in enumerate(merges):
        left, sep, right = merge.partition(" ")
        if not sep or not left or not right:
            raise ModelFormatError(
                f"{source}: tokenizer.ggml.merges[{index}]: expected two tokens separated by one space, got {merge!r}"
            )
        pairs.append((left, right))
    return pairs


def _merges_from_scores(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """SentencePiece merges recovered from token scores (transformers' ``generate_merges``)."""
    vocab = {token: index for index, token in enumerate(tokens)}
    vocab_scores = dict(zip(tokens, scores, strict=False))
    merges: list[tuple[str, str, float]] = []
    for merged, score in vocab_scores.items():
        if len(merged) > _MAX_MERGED_TOKEN:
            continue  # bounds the work on hostile vocabularies (SentencePiece pieces are <= 16 chars by default)
        local = [
            (merged[:cut], merged[cut:], score)
            for cut in range(1, len(merged))
            if merged[:cut] in vocab and merged[cut:] in vocab
        ]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _pre_tokenizer_spec(name: str | None, source: str) -> PreTokenizerSpec:
    if name is None:
        return GGUF_PRE_TOKENIZERS["default"]
    if not isinstance(name, str):
        raise ModelFormatError(f"{source}: tokenizer.ggml.pre must be a string, got {name!r:.100}")
    spec = GGUF_PRE_TOKENIZERS.get(name)
    if spec is None:
        warnings.warn(
            f"{source}: unknown GGUF pre-tokenizer tokenizer.ggml.pre={name!r}; splitting "
            "text with the GPT-2 regex instead, token ids may differ from the original model",
            stacklevel=5,
        )
        return _GPT2
    return spec


def _byte_level_backend(
    tokens: Sequence[str],
    token_types: Sequence[int],
    merges: list[tuple[str, str]],
    spec: PreTokenizerSpec,
) -> tokenizers.Tokenizer:
    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        keep_raw = token_types[index] in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
        spelled = token if keep_raw or set(token) <= alphabet else _byte_level_spelling(token)
        vocab.setdefault(spelled, index)
    backend = tokenizers.Tokenizer(models.BPE(vocab, merges, ignore_merges=spec.ignore_merges, byte_fallback=False))
    splits = [pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False) for pattern in spec.regexes]
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_backend(
    tokens: Sequence[str],
    merges: list[tuple[str, str]],
    unk_token: str | None,
    add_space_prefix: bool,
) -> tokenizers.Tokenizer:
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    backend = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=unk_token, fuse_unk=True, byte_fallback=True))
    # Like llama.cpp (and Llama-2's tokenizer.json), every text fragment - also the one after
    # a special token - gets the "▁" prefix; spaces become "▁" and BPE runs on the whole text.
    steps_in = [normalizers.Prepend("▁")] if add_space_prefix else []
    backend.normalizer = normalizers.Sequence([*steps_in, normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _template_processor(bos: str | None, bos_id: int | None, eos: str | None, eos_id: int | None):
    specials = []
    first, second = "$A:0", "$B:1"
    if bos is not None and bos_id is not None:
        first, second = f"{bos}:0 {first}", f"{bos}:1 {second}"
        specials.append((bos, bos_id))
    if eos is not None and eos_id is not None:
        first, second = f"{first} {eos}:0", f"{second} {eos}:1"
        if (eos, eos_id) not in specials:
            specials.append((eos, eos_id))
    return processors.TemplateProcessing(single=first, pair=f"{first} {second}", special_tokens=specials)


def build_gguf_backend(metadata: Mapping[str, Any], source: str) -> tuple[tokenizers.Tokenizer, bool]:
    """Build the :class:`tokenizers.Tokenizer` a GGUF's tokenizer metadata describes.

    Parameters
    ----------
    metadata : mapping
        Decoded GGUF key/values (``tokenizer.ggml.tokens`` as a list of str, ...).
    source : str
        File name for messages.

    Returns
    -------
    backend : tokenizers.Tokenizer
        Vocabulary, merges, pre-tokenizer, decoder, special tokens and — when the model
        asks for it — a post-processor adding BOS/EOS.
    add_bos : bool
        Whether encoding with special tokens adds BOS (llama.cpp's rule).

    Raises
    ------
    ModelFormatError
        When the vocabulary is missing or inconsistent, or the tokenizer model is not
        ``gpt2`` / ``llama``.
    """
    model = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if model is None or not isinstance(tokens, list) or not tokens:
        raise ModelFormatError(
            f"{source}: the GGUF file has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens missing)"
        )
    n_tokens = len(tokens)
    _check_list(tokens, "tokens", str, "strings", source)
    token_types = metadata.get("tokenizer.ggml.token_type") or [TOKEN_TYPE_NORMAL] * n_tokens
    _check_list(token_types, "token_type", int, "integers", source)
    if len(token_types) != n_tokens:
        raise ModelFormatError(
            f"{source}: tokenizer.ggml.token_type: expected {n_tokens} entries (one per token), got {len(token_types)}"
        )

    def token_of(key: str) -> tuple[str | None, int | None]:
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        if token_id is None:
            return None, None
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < n_tokens:
            raise ModelFormatError(
                f"{source}: tokenizer.ggml.{key} = {token_id} is outside the vocabulary (0..{n_tokens - 1})"
            )
        return tokens[int(token_id)], int(token_id)

    bos, bos_id = token_of("bos_token_id")
    eos, eos_id = token_of("eos_token_id")
    unk, _ = token_of("unknown_token_id")
    raw_merges = metadata.get("tokenizer.ggml.merges")
    if raw_merges is not None:
        _check_list(raw_merges, "merges", str, "strings", source)
    try:
        backend, default_add_bos = _backend_for(model, metadata, tokens, token_types, raw_merges, unk, source)
        _add_special_tokens(backend, tokens, token_types)
    except ModelFormatError:
        raise
    except BaseException as exc:  # the Rust library raises bare Exceptions (and panics)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ModelFormatError(f"{source}: invalid GGUF tokenizer: {type(exc).__name__}: {exc}") from exc
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", default_add_bos))
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    if (add_bos and bos_id is not None) or (add_eos and eos_id is not None):
        backend.post_processor = _template_processor(bos if add_bos else None, bos_id, eos if add_eos else None, eos_id)
    return backend, add_bos


def _check_list(values: Any, key: str, kind: type, what: str, source: str) -> None:
    if not isinstance(values, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ModelFormatError(f"{source}: tokenizer.ggml.{key} must be a list of {what}")


def _backend_for(
    model: Any,
    metadata: Mapping[str, Any],
    tokens: list[str],
    token_types: list[int],
    raw_merges: list[str] | None,
    unk: str | None,
    source: str,
) -> tuple[tokenizers.Tokenizer, bool]:
    n_tokens = len(tokens)
    if model == "gpt2":
        if not isinstance(raw_merges, list):
            raise ModelFormatError(f"{source}: missing tokenizer.ggml.merges (required by a byte-level BPE vocabulary)")
        spec = _pre_tokenizer_spec(metadata.get("tokenizer.ggml.pre"), source)
        backend = _byte_level_backend(tokens, token_types, _parse_merges(raw_merges, source), spec)
        default_add_bos = spec.add_bos
    elif model == "llama":
        if isinstance(raw_merges, list):
            merges = _parse_merges(raw_merges, source)
        else:
            scores = metadata.get("tokenizer.ggml.scores")
            if (
                not isinstance(scores, list)
                or len(scores) != n_tokens
                or not all(isinstance(v, int | float) for v in scores)
            ):
                raise ModelFormatError(
                    f"{source}: SentencePiece vocabulary needs tokenizer.ggml.scores "
                    f"({n_tokens} floats) or tokenizer.ggml.merges"
                )
            merges = _merges_from_scores(tokens, scores)
        add_space_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
        backend = _sentencepiece_backend(tokens, merges, unk, add_space_prefix)
        default_add_bos = True
    else:
        raise ModelFormatError(
            f"{source}: unsupported GGUF tokenizer model tokenizer.ggml.model={model!r}; "
            "supported: 'gpt2' (byte-level BPE), 'llama' (SentencePiece BPE)"
        )
    return backend, default_add_bos


def _add_special_tokens(backend: tokenizers.Tokenizer, tokens: list[str], token_types: list[int]) -> None:
    special = [
        AddedToken(tokens[i], special=True, normalized=False)
        for i, kind in enumerate(token_types)
        if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN) and tokens[i]
    ]
    user_defined = [
        AddedToken(tokens[i], special=False, normalized=False)
        for i, kind in enumerate(token_types)
        if kind == TOKEN_TYPE_USER_DEFINED and tokens[i]
    ]
    if special:
        backend.add_special_tokens(special)
    if user_defined:
        backend.add_tokens(user_defined)


def chat_templates_from_gguf(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Chat templates stored in GGUF metadata: ``tokenizer.chat_template`` (+ named ones)."""
    templates: dict[str, str] = {}
    default = metadata.get("tokenizer.chat_template")
    if isinstance(default, str):
        templates["default"] = default
    prefix = "tokenizer.chat_template."
    for key, value in metadata.items():
        if key.startswith(prefix) and isinstance(value, str):
            templates[key[len(prefix) :]] = value
    return templates


def _is_token_id(value: Any, n_tokens: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n_tokens


def tokenizer_from_gguf(metadata: Mapping[str, Any], source: str):
    """A :class:`loom.llm.tokenizer.Tokenizer` for GGUF tokenizer metadata.

    Parameters
    ----------
    metadata : mapping
        Decoded GGUF key/values.
    source : str
        File name for messages.

    Returns
    -------
    Tokenizer
        With BOS/EOS tokens, EOS ids (EOS, EOT, EOM) and the chat template from the file.
    """
    backend, _ = build_gguf_backend(metadata, source)
    tokens = metadata["tokenizer.ggml.tokens"]
    named: dict[str, str | None] = {}
    for name, key in (
        ("bos_token", "bos_token_id"),
        ("eos_token", "eos_token_id"),
        ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"),
        ("sep_token", "seperator_token_id"),
    ):
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        if _is_token_id(token_id, len(tokens)):
            named[name] = tokens[token_id]
    end_ids = [
        metadata[f"tokenizer.ggml.{key}"]
        for key in ("eos_token_id", "eot_token_id", "eom_token_id")
        if _is_token_id(metadata.get(f"tokenizer.ggml.{key}"), len(tokens))
    ]
    return Tokenizer(
        backend,
        named_tokens=named,
        eos_token_ids=end_ids,
        chat_template=chat_templates_from_gguf(metadata) or None,
        add_bos_token=False,  # the post-processor already adds it when the file asks
        source=source,
    )
