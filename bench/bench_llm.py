"""Decode and prefill speed of loom vs Hugging Face transformers on SmolLM2-135M.

Measures, in one run and on the same float32 weights:

* **decode**: tokens/s at batch 1, greedy, 128 new tokens after a short prompt
  (KV cache; the rate counts the 128 steps after the first token);
* **prefill**: seconds for one forward over a 256-token prompt (logits of the
  last position only, as generation needs).

Weights come from the embedded SmolLM2-135M-Instruct GGUF (dequantized to
float32 by loom), or with ``--random-weights`` from a seeded SmolLM2-135M-shaped
random LLaMA (for machines without the GGUF, e.g. the GPU box). transformers and
torch are optional: missing → that column says "skipped". loom is timed first,
before torch is imported, so torch's OpenMP threads cannot steal its cores.

Usage::

    python bench/bench_llm.py [--backend numpy|cupy] [--random-weights] [--skip-hf]
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from loom.backend import resolve_backend
from loom.llm.config import TransformerConfig, load_config_file
from loom.llm.loader import default_model_path, transformer_from_tensors
from loom.llm.weights import open_safetensors_dir

SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
}


def random_smollm2(seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """SmolLM2-135M-shaped config and seeded random Hugging Face-named float32 tensors."""
    c = SMOLLM2_135M
    rng = np.random.default_rng(seed)
    d, di, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    tensors = {"model.embed_tokens.weight": normal(c["vocab_size"], d), "model.norm.weight": np.ones(d, np.float32)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": 1 + normal(d),
            p + "post_attention_layernorm.weight": 1 + normal(d),
            p + "self_attn.q_proj.weight": normal(q, d),
            p + "self_attn.k_proj.weight": normal(kv, d),
            p + "self_attn.v_proj.weight": normal(kv, d),
            p + "self_attn.o_proj.weight": normal(d, q),
            p + "mlp.gate_proj.weight": normal(di, d),
            p + "mlp.up_proj.weight": normal(di, d),
            p + "mlp.down_proj.weight": normal(d, di),
        }
    return dict(c), tensors


def model_weights(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], list[int]]:
    """Config, float32 tensors and an encoded prompt of a ``.gguf`` file or a model folder."""
    from loom.llm import load_tokenizer

    if path.suffix.lower() == ".gguf":
        from loom.llm.gguf_file import load_gguf

        model = load_gguf(path)
        config, tensors, tokenizer = dict(model.config), dict(model.tensors), model.tokenizer
    else:
        config = load_config_file(path / "config.json")
        tensors = {name: np.array(t) for name, t in open_safetensors_dir(path).items()}
        tokenizer = load_tokenizer(path)
    prompt = tokenizer.encode("Once upon a time, in a small village,", add_special_tokens=False)
    return config, tensors, list(prompt)


def best(times: list[float]) -> float:
    return min(times)


def time_loom(model: Any, short: list[int], long: list[int], new_tokens: int, repeats: int) -> dict[str, Any]:
    """Decode tokens/s and prefill seconds of a loom Transformer."""
    be = model.backend
    decode_rates = []
    for _ in range(repeats):
        stamps = []
        be.synchronize()
        for _token in model.stream(short, new_tokens + 1, stop_ids=[]):
            stamps.append(time.perf_counter())
        decode_rates.append(new_tokens / (stamps[-1] - stamps[0]))
    greedy = model.generate(short, 8, stop_ids=[])
    prefill = []
    for _ in range(repeats):
        state = model.new_state(len(long) + 1)
        be.synchronize()
        t0 = time.perf_counter()
        logits = model.forward(long, state, last_only=True)
        int(be.xp.argmax(logits[0]))
        be.synchronize()
        prefill.append(time.perf_counter() - t0)
    last_logits = be.to_numpy(model.forward(long))[-1]
    return {"decode": max(decode_rates), "prefill": best(prefill), "greedy": greedy, "last_logits": last_logits}


def time_hf(
    config: dict[str, Any],
    tensors: dict[str, np.ndarray],
    short: list[int],
    long: list[int],
    new_tokens: int,
    repeats: int,
    device: str = "cpu",
) -> dict[str, Any] | str:
    """Same measurements with transformers ``LlamaForCausalLM`` (or why it was skipped)."""
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as exc:
        return f"skipped ({exc.name} not installed)"
    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
    )
    hf_config = LlamaConfig(**{k: config[k] for k in keys if k in config}, torch_dtype=torch.float32)
    model = LlamaForCausalLM(hf_config).eval()
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and hf_config.tie_word_embeddings)]
    if missing or unexpected:
        return f"skipped (weights did not match: missing {missing[:3]}, unexpected {unexpected[:3]})"
    model.tie_weights()
    if device != "cpu" and not torch.cuda.is_available():
        return f"skipped (torch sees no {device} device)"
    model = model.to(device)
    short_t = torch.tensor([short], device=device)
    long_t = torch.tensor([long], device=device)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    kwargs = dict(do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
    with torch.inference_mode():
        model.generate(short_t, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
        decode_rates = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            model.generate(short_t, max_new_tokens=1, min_new_tokens=1, **kwargs)
            sync()
            t1 = time.perf_counter()
            out = model.generate(short_t, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, **kwargs)
            sync()
            t2 = time.perf_counter()
            decode_rates.append(new_tokens / ((t2 - t1) - (t1 - t0)))
        greedy = out[0, len(short) : len(short) + 8].tolist()
        prefill = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            logits = model(long_t, use_cache=True, logits_to_keep=1).logits
            int(logits[0, -1].argmax())
            prefill.append(time.perf_counter() - t0)
        last_logits = model(long_t).logits[0, -1].cpu().numpy()
    where = f"{device}, {torch.get_num_threads()} threads" if device == "cpu" else device
    return {
        "decode": max(decode_rates),
        "prefill": best(prefill),
        "greedy": greedy,
        "last_logits": last_logits,
        "where": where,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument(
        "--random-weights", action="store_true", help="seeded random SmolLM2-135M-shaped weights instead of the GGUF"
    )
    parser.add_argument(
        "--model", default=None, help="a .gguf file or model folder (default: the embedded SmolLM2 GGUF)"
    )
    parser.add_argument("--skip-hf", action="store_true", help="do not run transformers")
    parser.add_argument("--hf-device", default="cpu", help="torch device for transformers: cpu (default) or cuda")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    backend = resolve_backend(args.backend)
    if args.random_weights:
        config_dict, tensors = random_smollm2()
        short = [1, 9690, 2115, 253, 655, 28, 281, 253]
        source = "random SmolLM2-135M-shaped weights (seed 0)"
    else:
        path = Path(args.model) if args.model else default_model_path()
        config_dict, tensors, short = model_weights(path)
        source = f"{path.name} as float32"
    long = (np.random.default_rng(1).integers(3, config_dict["vocab_size"], args.prefill_tokens)).tolist()
    config = TransformerConfig.from_dict(config_dict)
    model = transformer_from_tensors(config, tensors, backend=backend)
    nbytes = model.weights.nbytes
    print(
        f"model: {config_dict.get('model_type', '?')}, {config.num_layers} layers, {source}; "
        f"float32 weights {nbytes / 1e6:.0f} MB; "
        f"prompt {len(short)} tokens, {args.new_tokens} new tokens; prefill "
        f"{args.prefill_tokens} tokens; best of {args.repeats}"
    )
    loom_res = time_loom(model, short, long, args.new_tokens, args.repeats)
    print(
        f"loom ({backend.name}):   decode {loom_res['decode']:6.1f} tokens/s "
        f"({nbytes / 1e9 * loom_res['decode']:.1f} GB/s of weights)   "
        f"prefill {loom_res['prefill']:.3f} s ({args.prefill_tokens / loom_res['prefill']:.0f} "
        "tokens/s)"
    )
    if args.skip_hf:
        print("transformers: skipped (--skip-hf)")
        return 0
    del model
    gc.collect()
    hf_res = time_hf(config_dict, tensors, short, long, args.new_tokens, args.repeats, args.hf_device)
    if isinstance(hf_res, str):
        print(f"transformers: {hf_res}")
        return 0
    print(
        f"transformers (torch {hf_res['where']}): decode "
        f"{hf_res['decode']:6.1f} tokens/s   prefill {hf_res['prefill']:.3f} s"
    )
    print(
        f"ratio loom/transformers: decode {loom_res['decode'] / hf_res['decode']:.2f}x   "
        f"prefill {hf_res['prefill'] / loom_res['prefill']:.2f}x (speed-up, >1 = loom faster)"
    )
    diff = float(np.abs(loom_res["last_logits"] - hf_res["last_logits"]).max())
    print(
        f"check: max |logit diff| at the last prefill position {diff:.2e}; greedy ids "
        f"{'agree' if loom_res['greedy'] == hf_res['greedy'] else 'DIFFER'} "
        f"(loom {loom_res['greedy']}, hf {hf_res['greedy']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
