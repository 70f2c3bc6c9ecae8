"""Regenerate ``hf_extra_reference.json``: logits of tiny transformers models with numpy weights.

Covers what the shared fixtures do not: LLaMA with attention/MLP biases and
llama3 RoPE (untied head), YaRN with an explicit head_dim, Qwen2 (q/k/v bias),
Mistral without a sliding window, GPT-2 with an untied head and
``scale_attn_by_inverse_layer_idx``. Weights are ``0.1 * N(0, 1)`` from
``numpy.random.default_rng(seed)`` in sorted-name order (``+1`` for norm
gains), so the test rebuilds them without torch. Run with a Python that has
torch and transformers::

    /work/hfvenv/bin/python tests/llm/data/make_hf_extra_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers

COMMON = {
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
CASES = {
    "llama3-bias": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            **COMMON,
            "attention_bias": True,
            "mlp_bias": True,
            "tie_word_embeddings": False,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    "llama-yarn-hd32": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            **COMMON,
            "head_dim": 32,
            "tie_word_embeddings": True,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
        },
    ),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**COMMON, "tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**COMMON, "sliding_window": None}),
    "gpt2-untied": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {
            "vocab_size": 100,
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 64,
            "scale_attn_by_inverse_layer_idx": True,
            "tie_word_embeddings": False,
            "bos_token_id": 0,
            "eos_token_id": 0,
        },
    ),
}


def numpy_weights(shapes: dict[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    """The weights the test rebuilds: 0.1·N(0,1) in sorted-name order, +1 on norm gains."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(shapes):
        value = (0.1 * rng.standard_normal(shapes[name])).astype(np.float32)
        if name.endswith("norm.weight") or (".ln_" in name and name.endswith("weight")):
            value += 1
        out[name] = value
    return out


def main() -> None:
    cases = {}
    for seed, (name, (config_cls, model_cls, kwargs)) in enumerate(CASES.items()):
        config = getattr(transformers, config_cls)(**kwargs)
        model = getattr(transformers, model_cls)(config).eval()
        shapes = {
            k: list(v.shape)
            for k, v in model.state_dict().items()
            if not (k == "lm_head.weight" and config.tie_word_embeddings)
            and not k.endswith(".attn.bias")
            and not k.endswith(".attn.masked_bias")
        }
        weights = numpy_weights(shapes, seed)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
        model.tie_weights()
        ids = np.random.default_rng(100 + seed).integers(0, 100, 12).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy()
        cases[name] = {
            "config": config.to_dict(),
            "seed": seed,
            "shapes": shapes,
            "ids": ids,
            "logits": np.round(logits.astype(np.float64), 6).tolist(),
        }
    out = Path(__file__).with_name("hf_extra_reference.json")
    payload = {
        "note": f"transformers {transformers.__version__}, torch {torch.__version__}; see make_hf_extra_reference.py",
        "cases": cases,
    }
    out.write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
