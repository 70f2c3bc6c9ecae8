"""LOOM README, "Transformer Inference API" — the port with LOOM's names (``loom.compat``).

The README's JavaScript, with file reads for ``fetch``: ``LoadTokenizerFromBytes`` and
``LoadTransformerFromBytes`` return JSON text, ``GenerateText`` returns JSON text read
as ``.generated_text``; ``EncodeText`` / ``DecodeTokens`` / ``GenerateNextToken``
return ids / text / an id. Without ``--model-dir`` / ``--gguf`` nothing is loaded and
the functions use the embedded SmolLM2-135M-Instruct. Failures come back as
``{"success": false, "error": ...}`` text, as in LOOM's WASM build.

    python examples/transformer_compat.py [--prompt "Once upon a time"] [--max-tokens 50] [--temperature 0.7]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loom.compat import (
    DecodeTokens,
    EncodeText,
    GenerateNextToken,
    GenerateText,
    LoadTokenizerFromBytes,
    LoadTransformerFromBytes,
)


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
        # 1. Load tokenizer
        tokenizer_data = (args.model_dir / "tokenizer.json").read_bytes()
        tok_result = json.loads(LoadTokenizerFromBytes(tokenizer_data))
        # 2. Load transformer model
        config_data = (args.model_dir / "config.json").read_bytes()
        weights_data = (args.model_dir / "model.safetensors").read_bytes()
        model_result = json.loads(LoadTransformerFromBytes(config_data, weights_data))
    elif args.gguf is not None:
        gguf_data = args.gguf.read_bytes()
        tok_result = json.loads(LoadTokenizerFromBytes(gguf_data))
        model_result = json.loads(LoadTransformerFromBytes(gguf_data))
    else:
        tok_result = model_result = None  # the embedded SmolLM2 is loaded on first use
    if model_result is not None:
        assert tok_result["success"] and model_result["success"], (tok_result, model_result)
        print(f"Tokenizer: {tok_result['vocab_size']} tokens; model: {model_result['num_layers']} layers")

    ids = EncodeText(args.prompt, False)
    print("Token ids:", ids)
    print("Decoded:", DecodeTokens(ids, True))
    next_id = GenerateNextToken(ids, 0.0)
    print("Next token (greedy):", next_id, repr(DecodeTokens([next_id], True)))

    # 3. Generate text
    result = json.loads(GenerateText(args.prompt, args.max_tokens, args.temperature, seed=args.seed))
    print(result["generated_text"])
    assert result["success"] and result["generated_text"].startswith(args.prompt)
    return {
        "ids": ids,
        "decoded": DecodeTokens(ids, True),
        "next_id": next_id,
        "generated_text": result["generated_text"],
        "num_tokens": result["num_tokens"],
    }


if __name__ == "__main__":
    main()
