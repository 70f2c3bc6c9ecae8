"""The ``loom`` console script.

Sub-commands:

* ``loom demo`` – the two training demos of the LOOM README: *Pattern
  Recognition Training* (Dense layers learn whether the high values sit in the
  first or the second half of an 8-value input) and the *Grid Scatter
  multi-agent* network (a shared Dense layer, three heterogeneous agents placed
  on a grid, a Dense decision layer), with evaluation and a save/load round trip;
* ``loom generate`` – text generation with a language model (from
  :mod:`loom.llm.cli`, imported lazily so the other commands work without it);
* ``loom train`` / ``eval`` / ``predict`` / ``info`` / ``dataset`` – training workflows on data
  files and saved models (from :mod:`loom.nn.cli`);
* ``loom serve`` – the web app: network lab, text generation, OpenAI-compatible API
  (from :mod:`loom.serve.cli`);
* ``loom version``.

Errors raised by loom (:class:`loom.errors.LoomError`) are printed as one line
on stderr with exit code 2, never as a traceback.

Examples
--------
.. code-block:: console

    $ loom demo --seed 7 --epochs 200
    $ loom demo --gpu            # CuPy backend; exit 2 with a message when CUDA is missing
    $ loom generate "Once upon a time" --max-tokens 30
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from loom.demo_data import (  # the demo data lives in its own module (the web lab's presets use it too)
    GRID_SCATTER_BATCHES,
    GRID_SCATTER_CONFIG,
    PATTERN_CLASSES,
    PATTERN_CONFIG,
    pattern_samples,
)

__all__ = ["build_parser", "main", "run_demo"]

EXIT_OK = 0
EXIT_ERROR = 2
DEFAULT_SEED = 42


def _one_hot(label: int) -> list[float]:
    return [1.0, 0.0] if label == 0 else [0.0, 1.0]


def _fmt_pair(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def _epoch_marks(epochs: int, lines: int = 6) -> list[int]:
    """0-based epoch indices to print: the first, the last and evenly spaced ones between."""
    if epochs <= lines:
        return list(range(epochs))
    return sorted({round(i * (epochs - 1) / (lines - 1)) for i in range(lines)})


# ---------------------------------------------------------------------------------------------- demos
def pattern_demo(
    out: TextIO, *, seed: int, epochs: int, backend: str, samples: int = 100, learning_rate: float = 0.05
) -> bool:
    """Pattern Recognition Training: Dense layers learn where the high half of the input is.

    Parameters
    ----------
    out : text stream
        Where the report goes.
    seed : int
        Seeds the data and the initial weights.
    epochs : int
        Passes over the training samples.
    backend : str
        ``"numpy"`` or ``"cupy"``.
    samples : int
        Training samples (the validation set is 8 fresh samples).
    learning_rate : float
        SGD step size.

    Returns
    -------
    bool
        True when every validation sample was classified correctly.
    """
    import loom

    rng = np.random.default_rng(seed)
    inputs, labels = pattern_samples(samples, rng)
    val_inputs, val_labels = pattern_samples(8, rng)
    out.write("🧠 Running Pattern Recognition Training...\n")
    out.write("Task: tell high values in the first half of 8 inputs from high values in the second half\n")
    out.write(
        f"Network: Dense 8 → 16 (relu) → 8 (relu) → 2 (sigmoid); {samples} samples, "
        f"{epochs} epochs, learning rate {learning_rate}\n\n"
    )
    net = loom.create_network_from_json(PATTERN_CONFIG, backend=backend, seed=seed)
    batches = [loom.TrainingBatch(x, _one_hot(y)) for x, y in zip(inputs, labels, strict=True)]
    config = loom.TrainingConfig(epochs=epochs, learning_rate=learning_rate, use_gpu=backend == "cupy", loss_type="mse")
    result = net.train(batches, config)
    history = result.loss_history
    for e in _epoch_marks(len(history)):
        out.write(f"Epoch {e + 1}/{epochs}: Loss = {history[e]:.4f}\n")
    if history:
        out.write(f"Training time: {result.total_time:.2f} seconds ({result.avg_throughput:.0f} samples/sec)\n")
    out.write("\nValidation:\n")
    outputs = loom.to_numpy(net.forward(np.asarray(val_inputs, dtype=np.float32)))
    correct = 0
    for i, (x, y, label) in enumerate(zip(val_inputs, outputs, val_labels, strict=True)):
        predicted = int(np.argmax(y))
        ok = predicted == label
        correct += ok
        out.write(
            f"Sample {i}: {_fmt_pair(x[:2])}…{_fmt_pair(x[-2:])} → {_fmt_pair(y)} → "
            f"{PATTERN_CLASSES[predicted]} (expected {PATTERN_CLASSES[label]}) {'✓' if ok else '✗'}\n"
        )
    out.write(f"Validation accuracy: {correct}/{len(val_labels)}\n")
    return correct == len(val_labels)


def grid_scatter_available() -> str | None:
    """None when the layer kinds of the Grid Scatter demo exist, else why not."""
    from loom.errors import LoomError
    from loom.nn.layers import kind_for

    missing = []
    for name in ("parallel", "lstm", "rnn"):
        try:
            kind_for(name)
        except LoomError:
            missing.append(name)
    if missing:
        return f"layer type(s) {', '.join(missing)} not available in this build of loom"
    return None


def grid_scatter_demo(out: TextIO, *, seed: int, epochs: int, backend: str) -> bool:
    """The LOOM README's Grid Scatter multi-agent training, evaluation and save/load round trip.

    Parameters
    ----------
    out : text stream
        Where the report goes.
    seed : int
        Seeds the initial weights.
    epochs : int
        Training epochs (the README uses 800).
    backend : str
        ``"numpy"`` or ``"cupy"``.

    Returns
    -------
    bool
        True when all four samples are classified correctly and the reloaded
        model gives identical outputs.
    """
    import loom

    out.write("🤖 Running Grid Scatter Multi-Agent Training...\n")
    out.write("Task: 3 agents learn to collaborate for binary classification\n\n")
    out.write(
        "Architecture:\n"
        "  Shared Layer → Grid Scatter (3 agents) → Decision\n"
        "  Agent 0: Feature Extractor (ensemble of 2 dense)\n"
        "  Agent 1: Transformer (LSTM)\n"
        "  Agent 2: Integrator (RNN)\n\n"
    )
    why_not = grid_scatter_available()
    if why_not is not None:
        out.write(f"skipped: Grid Scatter demo needs parallel/lstm/rnn layers ({why_not})\n")
        return True
    net = loom.create_network_from_json(GRID_SCATTER_CONFIG, backend=backend, seed=seed)
    config = {
        "Epochs": epochs,
        "LearningRate": 0.15,
        "UseGPU": backend == "cupy",
        "PrintEveryBatch": 0,
        "GradientClip": 1.0,
        "LossType": "mse",
        "Verbose": False,
    }
    result = net.train(GRID_SCATTER_BATCHES, config)
    out.write("✅ Training complete!\n")
    out.write(f"Training time: {result.total_time:.2f} seconds\n")
    if result.loss_history:
        initial = result.loss_history[0]
        out.write(f"Initial Loss: {initial:.6f}\n")
        out.write(f"Final Loss: {result.final_loss:.6f}\n")
        improvement = (initial - result.final_loss) / initial * 100 if initial else 0.0
        out.write(f"Improvement: {improvement:.2f}%\n")

    expected = [0, 1, 1, 0]
    inputs = [b["Input"] for b in GRID_SCATTER_BATCHES]
    out.write("\nFinal predictions:\n")
    all_ok = True
    for i, (x, want) in enumerate(zip(inputs, expected, strict=True)):
        y = loom.to_numpy(net.forward(x))
        got = int(np.argmax(y))
        ok = got == want
        all_ok &= ok
        out.write(f"Sample {i}: {_fmt_pair(y)} → Class {got} (expected {want}) {'✓' if ok else '✗'}\n")

    metrics = net.evaluate_network(inputs, expected)
    out.write(
        f"\nQuality Score: {metrics.score:.2f}/100, Avg Deviation: {metrics.avg_deviation:.2f}%, "
        f"Failures: {metrics.failures}/{metrics.total_samples}\n"
    )

    model_json = net.save_model_to_string("my_model")
    out.write(f"Model saved ({len(model_json.encode('utf-8'))} bytes)\n")
    loaded = loom.load_model_from_string(model_json, "my_model")
    if loaded.backend != net.backend:
        loaded.to_backend(net.backend)
    before = loom.to_numpy(net.forward(inputs[0]))
    after = loom.to_numpy(loaded.forward(inputs[0]))
    identical = bool(np.array_equal(before, after))
    out.write(
        f"Model loaded: output {_fmt_pair(after)} "
        f"{'identical to the original (bit for bit) ✓' if identical else 'DIFFERS from the original ✗'}\n"
    )
    return all_ok and identical


def run_demo(args: argparse.Namespace) -> int:
    """Run ``loom demo`` with parsed arguments; returns the exit code."""
    from loom.backend import resolve_backend

    backend = resolve_backend("cupy" if args.gpu else "numpy").name  # BackendUnavailableError without CUDA
    out = sys.stdout
    out.write(f"loom demo (backend: {backend}, seed: {args.seed})\n\n")
    parts: list[tuple[str, Callable[..., bool], int]] = []
    if args.part in ("all", "pattern"):
        parts.append(("pattern", pattern_demo, args.epochs if args.epochs is not None else 50))
    if args.part in ("all", "grid-scatter"):
        parts.append(("grid-scatter", grid_scatter_demo, args.epochs if args.epochs is not None else 800))
    start = time.perf_counter()
    for i, (_, demo, epochs) in enumerate(parts):
        if i:
            out.write("\n" + "-" * 72 + "\n\n")
        demo(out, seed=args.seed, epochs=epochs, backend=backend)
        out.flush()
    out.write(f"\nDone in {time.perf_counter() - start:.2f} s.\n")
    return EXIT_OK


def run_version(args: argparse.Namespace) -> int:
    """Print loom's version and the versions of the array libraries it sees."""
    import loom
    from loom.backend import cupy_available

    gpu = "available" if cupy_available() else "not available"
    print(
        f"loom-nn {loom.__version__} (Python {platform.python_version()}, NumPy {np.__version__}, CuPy backend {gpu})"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parser
def _add_generate(subparsers: Any) -> None:
    """Register ``generate`` from :mod:`loom.llm.cli`, or a stub that explains why it is missing."""
    try:
        from loom.llm.cli import add_generate_parser, run_generate

        parser = add_generate_parser(subparsers)
        parser.set_defaults(func=run_generate)
    except Exception as exc:  # loom.llm missing or broken: keep the rest of the CLI working
        reason = f"{type(exc).__name__}: {exc}"
        stub = subparsers.add_parser(
            "generate", help="generate text with a language model (unavailable)", add_help=False
        )
        stub.add_argument("rest", nargs=argparse.REMAINDER)

        def unavailable(_: argparse.Namespace) -> int:
            print(
                f"loom generate: error: the loom.llm package could not be loaded ({reason}); "
                "install the extra with: pip install 'loom-nn[llm]'",
                file=sys.stderr,
            )
            return EXIT_ERROR

        stub.set_defaults(func=unavailable)


def build_parser() -> argparse.ArgumentParser:
    """The ``loom`` argument parser with all sub-commands."""
    import loom
    from loom.nn.cli import add_training_parsers
    from loom.serve.cli import add_serve_parser

    parser = argparse.ArgumentParser(
        prog="loom",
        description="LOOM grid neural networks and transformer inference on NumPy / CuPy.",
        epilog="Run 'loom COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"loom-nn {loom.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = subparsers.add_parser(
        "demo",
        help="run the LOOM README demos (pattern recognition, grid scatter)",
        description="Train the LOOM README's demo networks and print their progress and predictions.",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed for data and initial weights (default: {DEFAULT_SEED}, reproducible)",
    )
    demo.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs for every demo (default: 50 pattern, 800 grid scatter)",
    )
    demo.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy backend)")
    demo.add_argument(
        "--part", choices=("all", "pattern", "grid-scatter"), default="all", help="which demo to run (default: all)"
    )
    demo.set_defaults(func=run_demo)

    _add_generate(subparsers)
    add_training_parsers(subparsers)  # train, eval, predict, info, dataset (loom/nn/cli.py)
    add_serve_parser(subparsers)  # `loom serve` (loom/serve/cli.py; needs the serve extra only when run)

    version = subparsers.add_parser("version", help="print the version of loom and its array libraries")
    version.set_defaults(func=run_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loom`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a usage error or a :class:`loom.errors.LoomError`.
    """
    from loom.errors import LoomError

    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    args.argv = list(sys.argv[1:] if argv is None else argv)  # e.g. `loom train --nproc` starts it again
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_OK
    if getattr(args, "epochs", None) is not None and args.epochs < 0:
        parser.error(f"--epochs must be >= 0, got {args.epochs}")
    try:
        return int(args.func(args))
    except LoomError as exc:
        print(f"loom {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which has exited
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
