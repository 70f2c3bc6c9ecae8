"""config.json parsing: architecture detection, RoPE in both config styles, EOS ids, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llm_test_utils import DATA

from loom.errors import ModelFormatError
from loom.llm.config import TransformerConfig
from loom.llm.rope import rope_inv_freq

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def test_fixture_configs_both_rope_styles(llm_fixtures: Path) -> None:
    new_style = TransformerConfig.from_dir(llm_fixtures / "tiny-llama")
    assert new_style.rope.theta == 10000.0 and new_style.rope.rope_type == "default"
    assert (new_style.num_kv_heads, new_style.num_kv_groups, new_style.norm_eps) == (2, 2, 1e-5)
    assert new_style.tie_word_embeddings
    old_style = TransformerConfig.from_dir(llm_fixtures / "tiny-llama-bf16")
    assert old_style.rope.theta == 500000.0
    assert (old_style.num_kv_heads, old_style.intermediate_size) == (1, 96)
    assert not old_style.tie_word_embeddings
    gpt2 = TransformerConfig.from_dir(llm_fixtures / "tiny-gpt2")
    assert (gpt2.architecture, gpt2.rope, gpt2.intermediate_size, gpt2.max_position_embeddings) == (
        "gpt2",
        None,
        256,
        128,
    )


REFERENCE = json.loads((DATA / "rope_reference.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_rope_inv_freq_equals_transformers(name: str) -> None:
    case = REFERENCE[name]
    config = TransformerConfig.from_dict(case["config"])
    inv_freq, scaling = rope_inv_freq(config.rope)
    assert inv_freq.dtype == np.float32
    # float32 pow as torch does it: equal here, within an ulp across NumPy builds
    np.testing.assert_allclose(inv_freq, np.asarray(case["inv_freq"], dtype=np.float32), rtol=3e-7, atol=0)
    assert scaling == pytest.approx(case["attention_scaling"], rel=1e-12)


def test_rope_parameters_win_over_defaults_and_head_dim_is_read() -> None:
    cfg = TransformerConfig.from_dict(
        {**LLAMA, "head_dim": 8, "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}}
    )
    assert (cfg.head_dim, cfg.rope.theta, cfg.rope.rope_type) == (8, 1000.0, "linear")
    assert cfg.qkv_size == (4 + 2 * 2) * 8
    default = TransformerConfig.from_dict(LLAMA)
    assert (default.head_dim, default.rope.theta, default.num_kv_heads) == (4, 10000.0, 2)


@pytest.mark.parametrize("model_type", ["smollm", "mistral", "qwen2"])
def test_llama_family_model_types(model_type: str) -> None:
    raw = {k: v for k, v in LLAMA.items() if k != "architectures"}
    cfg = TransformerConfig.from_dict({**raw, "model_type": model_type})
    assert cfg.architecture == "llama"
    assert cfg.attention_bias == (model_type == "qwen2")


def test_eos_ids_from_config_and_generation_config() -> None:
    cfg = TransformerConfig.from_dict({**LLAMA, "eos_token_id": 2, "bos_token_id": 1}, {"eos_token_id": [2, 7]})
    assert cfg.eos_token_ids == (2, 7)
    assert cfg.bos_token_id == 1
    assert TransformerConfig.from_dict(LLAMA).eos_token_ids == ()


def test_unsupported_architecture_names_it_and_the_supported_ones() -> None:
    with pytest.raises(ModelFormatError) as info:
        TransformerConfig.from_dict({"architectures": ["BertForMaskedLM"], "model_type": "bert"})
    message = str(info.value)
    assert "BertForMaskedLM" in message and "'bert'" in message
    assert "LlamaForCausalLM" in message and "GPT2LMHeadModel" in message


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"hidden_size": None}, "missing required field 'hidden_size'"),
        ({"num_attention_heads": 0}, "'num_attention_heads' must be a positive integer"),
        ({"num_key_value_heads": 3}, r"num_attention_heads \(4\) must be a multiple of"),
        ({"rope_scaling": {"rope_type": "longrope"}}, "rope_type 'longrope' is not supported"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs 'low_freq_factor'"),
        ({"rope_theta": -1}, r"rope_theta must be a finite number > 1, got -1"),
        ({"rope_theta": float("nan")}, r"rope_theta must be a finite number > 1, got nan"),
        ({"rms_norm_eps": -1e-6}, r"'rms_norm_eps' must be a finite number > 0, got -1e-06"),
        ({"rms_norm_eps": 0}, r"'rms_norm_eps' must be a finite number > 0, got 0"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 0}}, r"rope_scaling 'factor' must be a finite number > 0"),
        (
            {"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4}},
            r"'high_freq_factor' must be greater than 'low_freq_factor', got 4.0 and 4.0",
        ),
        ({"partial_rotary_factor": 1.5}, r"partial_rotary_factor must be in \(0, 1\], got 1.5"),
        ({"vocab_size": 2**40}, r"'vocab_size' must be a positive integer \(at most 2147483647\)"),
        ({"architectures": [{"x": 1}], "model_type": None}, "unsupported architecture"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
        ({"rms_norm_eps": "small"}, "'rms_norm_eps' must be a number"),
        ({"eos_token_id": "x"}, "'eos_token_id' must be an int or a list of ints"),
    ],
)
def test_invalid_fields_are_named(change: dict, pattern: str) -> None:
    raw = {**LLAMA, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ModelFormatError, match=pattern):
        TransformerConfig.from_dict(raw)


def test_mistral_sliding_window_is_rejected() -> None:
    raw = {**LLAMA, "architectures": ["MistralForCausalLM"], "sliding_window": 4}
    with pytest.raises(ModelFormatError, match="sliding_window=4 is not supported"):
        TransformerConfig.from_dict(raw)
    ok = TransformerConfig.from_dict({**raw, "sliding_window": None})
    assert ok.model_type == "mistral"


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"config\.json: file not found"):
        TransformerConfig.from_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="invalid JSON"):
        TransformerConfig.from_dir(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="expected a JSON object"):
        TransformerConfig.from_dir(tmp_path)
