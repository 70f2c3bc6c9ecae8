"""Fuzz targets of ``loom.llm``: safetensors, config.json, GGUF, tokenizer files and chat templates.

The corpus is the tiny Hugging Face models of ``fixtures/llm`` and a GGUF written from
tiny-llama with the ``gguf`` package (as tests/llm/test_gguf.py does); mutations hit the
structure (header lengths, counts, offsets, dimensions, dtypes), the values (NaN / inf
weights, zero heads, negative epsilons, zero RoPE factors) and the text.
"""

from __future__ import annotations

import json
import os
import random
import struct
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.array_utils import byte_bounds

import loom.errors
from loom.errors import ConfigError, ModelFormatError, ShapeError
from loom.llm.chat_template import render_chat_template
from loom.llm.config import TransformerConfig
from loom.llm.loader import transformer_from_tensors
from loom.llm.tokenizer_loader import load_tokenizer_from_bytes
from loom.llm.weights import SafetensorsFile
from tests.conftest import shared_root
from tests.fuzz import strategies
from tests.fuzz.harness import Expect, Outcome, Target
from tests.fuzz.mutate import dumps_lenient, free_of_extremes, mutate_bytes, mutate_json, mutate_text, write_float32

LLM_DIR = shared_root() / "fixtures" / "llm"
MODELS = ("tiny-llama", "tiny-gpt2", "tiny-llama-bf16")
PROMPT_IDS = [1, 46, 208, 2]
HF_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "num_hidden_layers",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "n_embd",
    "n_head",
    "n_layer",
    "n_positions",
    "n_inner",
    "layer_norm_epsilon",
    "model_type",
    "architectures",
    "hidden_act",
    "partial_rotary_factor",
    "eos_token_id",
    "bos_token_id",
    "sliding_window",
)
ROPE_SCALINGS = [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 32, "beta_slow": 1},
]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@cache
def fixture(name: str) -> dict[str, Any]:
    """Config dict, safetensors bytes and tensors of one fixture model (loaded once, before the fork)."""
    folder = LLM_DIR / name
    blob = (folder / "model.safetensors").read_bytes()
    return {
        "config": json.loads((folder / "config.json").read_text(encoding="utf-8")),
        "blob": blob,
        "tensors": {k: np.array(v) for k, v in SafetensorsFile(blob).items()},
    }


def _logits(config: TransformerConfig, tensors: Any, source: str) -> Outcome:
    model = transformer_from_tensors(config, tensors, source=source)
    ids = [i % config.vocab_size for i in PROMPT_IDS]
    logits = model.logits(ids)
    tokens = model.generate(ids[:2], 2, stop_ids=[])
    moderate = all(free_of_extremes(np.asarray(tensors[k])) for k in tensors)
    return Outcome([logits, np.asarray(tokens, dtype=np.float64)], moderate)


# ------------------------------------------------------------------ safetensors
def _header(blob: bytes) -> tuple[dict[str, Any], int]:
    size = struct.unpack_from("<Q", blob)[0]
    return json.loads(blob[8 : 8 + size]), 8 + size


def safetensors_cases(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        name = rng.choice(MODELS)
        blob = fixture(name)["blob"]
        header, start = _header(blob)
        how = rng.random()
        if how < 0.45:
            text = dumps_lenient(mutate_json(header, rng, keys=("dtype", "shape", "data_offsets", "__metadata__")))
            encoded = text.encode()
            if rng.random() < 0.1:
                encoded = mutate_text(text, rng).encode()
            blob = struct.pack("<Q", len(encoded)) + encoded + blob[start:]
        elif how < 0.7:
            tensor = rng.choice(sorted(k for k in header if k != "__metadata__"))
            begin, end = header[tensor]["data_offsets"]
            width = 4 if header[tensor]["dtype"] == "F32" else 2
            blob = write_float32(blob, rng, start + begin, max((end - begin) // width - 1, 1))
        else:
            blob = mutate_bytes(blob, rng, [(0, 8)] if rng.random() < 0.5 else None)
        yield name, blob


def run_safetensors(payload: Any) -> Outcome:
    name, blob = payload
    config = TransformerConfig.from_dict(fixture(name)["config"], source="config.json")
    return _logits(config, SafetensorsFile(blob, name="model.safetensors"), "model.safetensors")


SAFETENSORS_EXPECT = Expect((ModelFormatError, ShapeError), r"(model\.safetensors|token ids)")


# ------------------------------------------------------------------ config.json
def llm_config_cases(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        name = rng.choice(MODELS)
        config = dict(fixture(name)["config"])
        if name != "tiny-gpt2" and rng.random() < 0.4:
            config["rope_scaling"] = json.loads(json.dumps(rng.choice(ROPE_SCALINGS)))
            config.pop("rope_parameters", None)
        yield name, mutate_json(config, rng, keys=HF_KEYS)


def run_llm_config(payload: Any) -> Outcome:
    name, config = payload
    parsed = TransformerConfig.from_dict(config, source="config.json")
    outcome = _logits(parsed, fixture(name)["tensors"], "weights")
    outcome.moderate = outcome.moderate and free_of_extremes(config)
    return outcome


LLM_CONFIG_EXPECT = Expect((ModelFormatError, ShapeError, ConfigError), r"(config\.json|weights|token ids|sequence of)")


# ------------------------------------------------------------------ GGUF
@cache
def gguf_base() -> dict[str, Any]:
    """A tiny-llama GGUF (F32, tokenizer metadata, chat template) and its structural fields."""
    import gguf

    from tests.llm.test_gguf import write_llama_gguf

    folder = Path(tempfile.mkdtemp(prefix="loom-fuzz-gguf-"))
    path = write_llama_gguf(LLM_DIR / "tiny-llama", folder / "base.gguf", gguf.GGMLQuantizationType.Q8_0)
    blob = path.read_bytes()
    reader = gguf.GGUFReader(path)
    base = byte_bounds(reader.data)[0]
    fields, vocab, floats = [], [], []
    vocab_keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    for field in [*reader.fields.values(), *(t.field for t in reader.tensors)]:
        for part in field.parts:
            if part.size == 1 and part.nbytes in (4, 8):
                offset = byte_bounds(part)[0] - base
                (vocab if field.name in vocab_keys else fields).append((offset, part.nbytes))
                if part.dtype == np.float32:
                    floats.append(offset)
    del reader
    return {"blob": blob, "fields": fields, "vocab": vocab, "floats": floats}


def gguf_cases(seed: int, count: int):
    rng = random.Random(seed)
    base = gguf_base()
    for _ in range(count):
        blob, how = base["blob"], rng.random()
        if how < 0.25 and base["floats"]:
            offset = rng.choice(base["floats"])
            value = rng.choice([float("nan"), float("inf"), 0.0, -1.0, 1e-45, 1e30, -0.0])
            blob = blob[:offset] + struct.pack("<f", value) + blob[offset + 4 :]
        else:  # header, key/value and tensor-info fields 4 times in 5; the vocabulary's lengths and types else
            blob = mutate_bytes(blob, rng, base["fields"] if rng.random() < 0.8 else base["vocab"])
        yield blob


def run_gguf(blob: bytes) -> Outcome:
    from loom.llm.gguf_file import load_gguf

    folder = _worker_dir()
    path = folder / "case.gguf"
    path.write_bytes(blob)
    model = load_gguf(path)
    config = TransformerConfig.from_dict(model.config, source=f"{path} (metadata)")
    outcome = _logits(config, model.tensors, str(path))
    text = model.tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}])
    outcome.arrays.append(np.asarray(model.tokenizer.encode(text), dtype=np.float64))
    outcome.moderate = outcome.moderate and free_of_extremes(model.config)
    return outcome


@cache
def _worker_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix=f"loom-fuzz-{os.getpid()}-"))


GGUF_EXPECT = Expect((ModelFormatError, ShapeError), r"(/|token ids|chat template)")


# ------------------------------------------------------------------ tokenizer files
@cache
def tokenizer_document() -> dict[str, Any]:
    return json.loads((LLM_DIR / "tiny-llama" / "tokenizer.json").read_text(encoding="utf-8"))


_TOKENIZER_KEYS = (
    "model",
    "vocab",
    "merges",
    "added_tokens",
    "pre_tokenizer",
    "normalizer",
    "decoder",
    "post_processor",
    "type",
    "content",
    "id",
    "special",
    "pattern",
    "behavior",
    "dropout",
    "unk_token",
    "byte_fallback",
    "ignore_merges",
)


def tokenizer_cases(seed: int, count: int):
    rng = random.Random(seed)
    document = tokenizer_document()
    for _ in range(count):
        doc = dict(document)
        section = rng.choice(["model", "added_tokens", "pre_tokenizer", "decoder", "post_processor", None])
        if section is None:
            text = mutate_text(json.dumps(doc), rng)
        else:
            mutated = mutate_json({"v": doc.get(section)}, rng, keys=_TOKENIZER_KEYS)
            doc[section] = mutated.get("v") if isinstance(mutated, dict) else mutated
            text = dumps_lenient(doc)
        yield text


def run_tokenizer(text: str) -> Outcome:
    tokenizer = load_tokenizer_from_bytes(text.encode("utf-8"))
    ids = tokenizer.encode("Hello world, <|im_start|>user 123 café 😀")
    decoded = tokenizer.decode(ids)
    stream = tokenizer.stream_decoder()
    pieces = "".join(stream.step(i) for i in ids) + stream.flush()
    assert pieces == decoded, (pieces, decoded)
    return Outcome([np.asarray(ids, dtype=np.float64)])


TOKENIZER_EXPECT = Expect((ModelFormatError,), r"(<tokenizer bytes>|<tokenizer JSON>)")


# ------------------------------------------------------------------ chat templates
HOSTILE_TEMPLATES = [
    "{{ 'a'*3000000000 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set s='x'*100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{% set x = 'ab' %}" + "{% set x %}{{x}}{{x}}{% endset %}" * 40 + "{{ x|length }}",
    "{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ns.x}}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% else %}xxxxxxxx{% endif %}{% endmacro %}{{ f(40) }}",
    "{% set s = '\\n'*100000 %}{{ s|indent('x'*100000)|length }}",
    "{{ 'a'|center(1000000000) }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ '%*d' % (1000000000, 1) }}",
    "{% set s='a'*100000 %}{{ s.replace('a', s)|length }}",
    "{{ 2**(2**40) }}",
    "{{ range(10**9)|list|length }}",
    "{{ lipsum(n=100000000)|length }}",
    "{{ ('<!--' * 100000)|striptags|length }}",
    "{{ ([['a']*100000]*1000)|sum(start=[])|length }}",
    "{{ messages|tojson(indent='x'*100000)|length }}",
    "{{ 'abc'.translate({97: 'x'*100000}) }}",
    "{% for %}",
    "{{ 'a' + 1 }}",
    "{{ 1/0 }}",
    "{{ ''.__class__.__mro__ }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ raise_exception('nope') }}",
    "{% include 'x' %}",
    CHATML,
    "{{ messages[0]['content'] * 10 }}{{ tools|tojson }}",
]


def template_cases(seed: int, count: int):
    rng = random.Random(seed)
    generated = iter(strategies.draw_examples(strategies.templates(), seed, count))
    for i in range(count):
        source = HOSTILE_TEMPLATES[i % len(HOSTILE_TEMPLATES)] if rng.random() < 0.3 else next(generated, CHATML)
        messages = [{"role": "user", "content": "Hi"}] if rng.random() < 0.95 else []
        yield source, messages


def run_template(payload: Any) -> Outcome:
    source, messages = payload
    text = render_chat_template(source, messages, tools=[{"name": "t"}], special_tokens={"bos_token": "<s>"})
    assert isinstance(text, str)
    return Outcome()


TEMPLATE_EXPECT = Expect(
    (getattr(loom.errors, "ChatTemplateError", ModelFormatError),),
    r"(chat template|cannot apply|continue_final_message)",
)


def targets() -> list[Target]:
    """The LLM targets (empty when the fixtures are missing)."""
    if not LLM_DIR.is_dir():
        return []
    for name in MODELS:  # load before the workers fork
        fixture(name)
    gguf_base()
    tokenizer_document()
    return [
        Target("safetensors mutations", "LLM files", safetensors_cases, run_safetensors, SAFETENSORS_EXPECT, 500),
        Target("config.json mutations", "LLM files", llm_config_cases, run_llm_config, LLM_CONFIG_EXPECT, 400),
        Target("GGUF mutations", "LLM files", gguf_cases, run_gguf, GGUF_EXPECT, 400),
        Target("tokenizer.json mutations", "LLM files", tokenizer_cases, run_tokenizer, TOKENIZER_EXPECT, 300),
        Target("chat templates (hypothesis)", "chat templates", template_cases, run_template, TEMPLATE_EXPECT, 300),
    ]
