"""The training sub-commands of ``loom``: ``train``, ``eval``, ``predict``, ``info`` and ``dataset``.

.. code-block:: console

    $ loom dataset moons moons.csv --samples 1000 --noise 0.1 --seed 0
    $ loom train moons-net.json moons.csv --epochs 50 --batch-size 32 --lr 0.01 --optimizer adam \\
          --val-split 0.2 --seed 0 --plot loss.png --save m.json
    $ loom eval m.json moons.csv
    $ loom predict m.json moons.csv --out predictions.csv
    $ loom info m.json
    $ loom train moons-net.json moons.csv --nproc 4 --batch-size 32 --save m.json   # 4 MPI processes
    $ mpiexec -n 4 loom train moons-net.json moons.csv --distributed --save m.json   # the same, by hand

``--nproc N`` starts N processes of one data-parallel job (NumPy: under ``mpiexec``; with ``--gpu``
one per GPU); ``--distributed`` makes this process one rank of a job started by ``mpiexec`` or
:func:`loom.distributed.launch`. Every rank reads the data and trains on its shard of each global
batch of N × ``--batch-size`` samples; rank 0 alone prints, writes ``--save`` and ``--plot``.

Data files (:mod:`loom.nn.data_files`): CSV with a header (targets: ``--target`` columns,
default the last column, a class label when the network has several outputs), ``.npz`` with
arrays ``x`` / ``y``, or a JSON list of LOOM batches. Training reports a tqdm bar when stderr is
a terminal, one line per epoch otherwise, nothing with ``--quiet``. Problems with files and
columns are :mod:`loom.errors` exceptions, printed by ``loom`` as one line with exit code 2.

:data:`INFO_SECTIONS` lists extra sections ``loom info`` prints after the layer table: each is
a function ``section(net) -> str | None`` (``None`` or ``""``: nothing to print).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from loom.nn.network import Network

__all__ = [
    "INFO_SECTIONS",
    "add_dataset_parser",
    "add_eval_parser",
    "add_info_parser",
    "add_predict_parser",
    "add_train_parser",
    "add_training_parsers",
]

EXIT_OK = 0


#: Rows per forward call in ``eval`` / ``predict``.
CHUNK = 1024


# ---------------------------------------------------------------------------------------------- helpers
def _backend(gpu: bool) -> str:
    from loom.backend import resolve_backend

    return resolve_backend("cupy" if gpu else "numpy").name  # BackendUnavailableError without CUDA


def _load_network_config(path: str, seed: int | None, backend: str) -> Any:
    import loom
    from loom.errors import ConfigError, ModelFormatError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the network config ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        return loom.create_network_from_json(text, backend=backend, seed=seed)
    except (ConfigError, ModelFormatError) as exc:  # a saved bundle continues training
        raise type(exc)(f"{path}: {exc}") from exc


def _load_model(path: str, model_id: str | None, backend: str) -> Any:
    import loom

    return loom.load_model(path, model_id, backend=backend)


def _shows_bar(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _input_size(net: Network) -> int | None:
    from loom.nn.summary import input_features

    return input_features(net)


def _read(net: Network, path: str, targets: list[str] | None, require_targets: bool = True) -> Any:
    from loom.nn.data_files import read_data

    return read_data(path, targets=targets, features=_input_size(net), require_targets=require_targets)


def _outputs(net: Network, features: int) -> int:
    from loom.nn.fit import output_size

    return output_size(net, features)


def _predict(net: Network, x: np.ndarray, batch_size: int, show_bar: bool) -> np.ndarray:
    """Outputs ``[N, outputs]`` on the host, ``batch_size`` rows per forward (a tqdm bar when long)."""
    from loom.backend import to_numpy

    chunks = range(0, x.shape[0], batch_size)
    if show_bar and len(chunks) > 4:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="evaluating", unit="batch", file=sys.stderr)
    return np.concatenate([to_numpy(net.predict(x[start : start + batch_size], batch_size)) for start in chunks])


# ---------------------------------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    """``loom train CONFIG DATA``: fit a network from a config (or a saved bundle) on a data file.

    ``--nproc N`` runs this command as N processes of a data-parallel job (each with
    ``--distributed``) and returns the job's exit code; ``--distributed`` joins the job first.
    """
    if args.distributed:
        import loom.distributed as dist

        comm = dist.init(_backend(args.gpu))  # first: a GPU rank is pinned to its device before the network exists
        with comm.guard():  # an error on this rank (a missing file ...) reaches every rank
            return _train(args, comm.rank == 0)
    if args.nproc is not None:
        import loom.distributed as dist

        argv = getattr(args, "argv", None)
        if argv is None:
            from loom.errors import ConfigError

            raise ConfigError("--nproc: the command line is unknown (run loom through loom.cli.main)")
        command = [sys.executable, "-m", "loom.cli", *argv, "--distributed"]
        return dist.launch(None if args.nproc == "auto" else args.nproc, command, gpu=args.gpu)
    return _train(args, True)


def _train(args: argparse.Namespace, main: bool) -> int:
    """Train as ``loom train`` asks; ``main``: this process prints and writes files (rank 0)."""
    from loom.nn.plots import plot_history

    net = _load_network_config(args.config, args.seed, _backend(args.gpu))
    data = _read(net, args.data, args.target)
    outputs = _outputs(net, data.x.shape[1])
    data.check_labels(outputs)
    options: dict[str, Any] = {}
    if args.momentum is not None:
        options["momentum"] = args.momentum
    if args.weight_decay is not None:
        options["weight_decay"] = args.weight_decay
    if args.lr_schedule is not None:
        options["lr_schedule"] = args.lr_schedule
    if args.warmup_epochs:
        options["warmup_epochs"] = args.warmup_epochs
    history = net.fit(
        data.x,
        data.y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        loss=args.loss,
        validation_split=args.val_split,
        seed=args.seed,
        gradient_clip=args.clip,
        verbose=0 if args.quiet else "auto",
        distributed=args.distributed,
        **options,
    )
    if not main:
        return EXIT_OK
    out = sys.stdout
    if history.history:
        final = " - ".join(f"{key}: {values[-1]:.4f}" for key, values in history.history.items())
        out.write(
            f"trained {len(history.epoch)} epochs on {history.params['samples']} samples "
            f"({history.params['loss']}, {history.params['optimizer']}): {final}\n"
        )
    if args.save:
        net.save_model(args.save, args.model_id)
        out.write(f"saved model to {args.save} (model id {args.model_id!r})\n")
    if args.plot:
        plot_history(
            history, args.plot, log_scale=args.log_scale, title=f"{Path(args.config).name} on {data.path.name}"
        )
        out.write(f"saved loss plot to {args.plot}\n")
    return EXIT_OK


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``loom train``."""
    parser = subparsers.add_parser(
        "train",
        help="train a network on a data file (CSV, .npz, LOOM batch JSON)",
        description="Train a network (a LOOM JSON config, or a saved bundle to continue) on a data file, "
        "Keras-style: mini-batches, shuffling, an optimizer, validation. Prints a bar on a terminal, "
        "one line per epoch otherwise.",
    )
    parser.add_argument("config", help="network JSON config (or a saved model bundle)")
    parser.add_argument("data", help="CSV with a header, .npz with arrays x and y, or a JSON list of LOOM batches")
    _add_target(parser)
    parser.add_argument("--epochs", type=int, default=10, help="passes over the data (default: 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step (default: 32)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's, as in torch)")
    parser.add_argument(
        "--optimizer", default="adam", help="sgd, adam, adamw or rmsprop (default: adam)", metavar="NAME"
    )
    parser.add_argument("--momentum", type=float, default=None, help="momentum (sgd, rmsprop)")
    parser.add_argument("--weight-decay", type=float, default=None, help="weight decay")
    parser.add_argument("--lr-schedule", default=None, help="constant, step, cosine or warmup", metavar="NAME")
    parser.add_argument("--warmup-epochs", type=int, default=0, help="epochs of linear learning-rate warm-up")
    parser.add_argument("--clip", type=float, default=0.0, help="clip the gradient to this global L2 norm (0: off)")
    parser.add_argument(
        "--loss",
        default=None,
        help="mse, cross_entropy or binary_cross_entropy (default: cross_entropy for class targets of a softmax "
        "output layer, else mse)",
    )
    parser.add_argument(
        "--val-split", type=float, default=0.0, help="fraction of the samples (the last ones) held out for validation"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the initial weights and the shuffling")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (CuPy backend)")
    parser.add_argument("--save", metavar="PATH", help="write the trained model (LOOM bundle JSON) here")
    parser.add_argument("--model-id", default="model", help="model id inside the saved bundle (default: model)")
    parser.add_argument("--plot", metavar="PATH", help="write the loss curves as a PNG here (needs matplotlib)")
    parser.add_argument("--log-scale", action="store_true", help="logarithmic loss axis in --plot")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--nproc",
        type=_process_count,
        default=None,
        metavar="N",
        help="data-parallel: start N processes that each train on their shard of every batch of N x --batch-size "
        "samples (CPU: MPI, needs the 'distributed' extra; with --gpu: one process per GPU; 'auto': one per GPU "
        "or CPU core)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="this process is one rank of a data-parallel job started by mpiexec (or by --nproc); rank 0 prints "
        "and writes --save / --plot. Collectives give up after $LOOM_DIST_TIMEOUT seconds (default 300)",
    )
    parser.set_defaults(func=run_train)
    return parser


def _process_count(text: str) -> int | str:
    """``--nproc``: a positive integer or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of processes or 'auto', got {text!r}")
    return value


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        nargs="+",
        metavar="COLUMN",
        help="CSV target column(s) (default: the last column; one column of a multi-output network holds class labels)",
    )


# ---------------------------------------------------------------------------------------------- eval
def _expected_for_loom_metrics(y: np.ndarray, outputs: int) -> np.ndarray | None:
    """LOOM's EvaluateNetwork expects one value per sample: the class (several outputs) or the target (one)."""
    if y.ndim == 1:
        return y
    if outputs > 1 and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1):
        return y.argmax(axis=1).astype(np.float64)
    if y.shape[1] == 1:
        return y[:, 0]
    return None


def run_eval(args: argparse.Namespace) -> int:
    """``loom eval MODEL DATA``: loss, accuracy and LOOM's deviation metrics of a saved model."""
    from loom.nn.evaluation import evaluate_predictions
    from loom.nn.fit import PREDICT_BATCH, prepare_targets

    net = _load_model(args.model, args.model_id, _backend(args.gpu))
    data = _read(net, args.data, args.target)
    outputs = _outputs(net, data.x.shape[1])
    data.check_labels(outputs)
    metrics = net.evaluate(data.x, data.y, batch_size=args.batch_size or PREDICT_BATCH, loss=args.loss)
    out = sys.stdout
    n = data.x.shape[0]
    out.write(f"samples: {n}\n")
    out.write(f"loss ({args.loss or _loss_name(net, data.y, outputs)}): {metrics['loss']:.6f}\n")
    if "accuracy" in metrics:
        targets = prepare_targets(net, data.y, n, outputs)
        per = n if targets.mode == "labels" else n * outputs
        correct = round(metrics["accuracy"] * per)
        out.write(f"accuracy: {metrics['accuracy'] * 100:.2f}% ({correct}/{per})\n")
    expected = _expected_for_loom_metrics(data.y, outputs)
    if expected is None:
        out.write("LOOM deviation metrics: skipped (they need one expected value per sample)\n")
    else:
        predicted = _predict(net, data.x, args.batch_size or CHUNK, _shows_bar(args.quiet))
        actual = predicted[:, 0] if outputs == 1 else predicted.argmax(axis=1).astype(np.float64)
        loom_metrics = evaluate_predictions(expected, actual)
        out.write(
            f"LOOM quality score: {loom_metrics.score:.2f}/100, avg deviation: {loom_metrics.avg_deviation:.2f}%, "
            f"failures: {loom_metrics.failures}/{loom_metrics.total_samples}\n"
        )
        if not args.quiet:
            out.write(loom_metrics.summary().split("\n", 1)[1] + "\n")
    return EXIT_OK


def _loss_name(net: Network, y: np.ndarray, outputs: int) -> str:
    from loom.nn.fit import default_loss, prepare_targets

    return default_loss(net, prepare_targets(net, y, y.shape[0], outputs))


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``loom eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="loss, accuracy and LOOM's deviation metrics of a saved model on a data file",
        description="Evaluate a saved model (LOOM bundle, Go LOOM's included) on a data file: the loss (mean "
        "over samples), the accuracy when the targets are classes, and LOOM's deviation score and buckets.",
    )
    parser.add_argument("model", help="saved model (LOOM bundle JSON)")
    parser.add_argument("data", help="CSV with a header, .npz with arrays x and y, or a JSON list of LOOM batches")
    _add_target(parser)
    parser.add_argument("--loss", default=None, help="loss to report (default: as `loom train` picks it)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"rows per forward call (default: {CHUNK})")
    parser.add_argument("--model-id", default=None, help="model id inside the bundle (default: the first)")
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy backend)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no bucket table")
    parser.set_defaults(func=run_eval)
    return parser


# ---------------------------------------------------------------------------------------------- predict
def run_predict(args: argparse.Namespace) -> int:
    """``loom predict MODEL DATA``: the outputs (and the class) of every sample, as CSV."""
    net = _load_model(args.model, args.model_id, _backend(args.gpu))
    data = _read(net, args.data, args.target, require_targets=False)
    predicted = _predict(net, data.x, args.batch_size or CHUNK, _shows_bar(args.out is None))
    outputs = predicted.shape[1]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f"output_{j}" for j in range(outputs)] + (["class"] if outputs > 1 else []))
    classes = predicted.argmax(axis=1)
    for row, cls in zip(predicted.tolist(), classes.tolist(), strict=True):
        writer.writerow([f"{v:.9g}" for v in row] + ([int(cls)] if outputs > 1 else []))
    if args.out:
        from loom.atomic_files import write_file_atomically

        write_file_atomically(Path(args.out), buffer.getvalue().encode("utf-8"))
        sys.stderr.write(f"wrote {predicted.shape[0]} predictions to {args.out}\n")
    else:
        sys.stdout.write(buffer.getvalue())
    return EXIT_OK


def add_predict_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``loom predict``."""
    parser = subparsers.add_parser(
        "predict",
        help="outputs of a saved model for every sample of a data file, as CSV",
        description="Run a saved model on every sample of a data file and write its outputs (and, for several "
        "outputs, the predicted class) as CSV. Target columns in the file are left out.",
    )
    parser.add_argument("model", help="saved model (LOOM bundle JSON)")
    parser.add_argument("data", help="CSV with a header (features, optionally targets), .npz or LOOM batch JSON")
    _add_target(parser)
    parser.add_argument("--out", metavar="CSV", help="write here (atomically) instead of stdout")
    parser.add_argument("--batch-size", type=int, default=None, help=f"rows per forward call (default: {CHUNK})")
    parser.add_argument("--model-id", default=None, help="model id inside the bundle (default: the first)")
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy backend)")
    parser.set_defaults(func=run_predict)
    return parser


# ---------------------------------------------------------------------------------------------- info
def go_compatibility_section(net: Any) -> str:
    """``loom info``'s Go LOOM section: what Go LOOM would run differently or not at all."""
    from loom.nn.go_compat import go_compatibility_report

    findings = go_compatibility_report(net)
    if not findings:
        return "Go LOOM: compatible (Go LOOM loads this model and computes the same outputs)"
    lines = [f"Go LOOM: {len(findings)} feature(s) Go LOOM would run differently or not at all:"]
    lines += [f"  - {finding}" for finding in findings]
    return "\n".join(lines)


#: Extra sections of ``loom info``: ``section(net) -> text or None``, printed in order after the table.
INFO_SECTIONS: tuple[Callable[[Any], str | None], ...] = (go_compatibility_section,)


def run_info(args: argparse.Namespace) -> int:
    """``loom info MODEL``: the layer table of a saved bundle (Go LOOM's included), then :data:`INFO_SECTIONS`."""
    import json

    from loom.errors import ModelFormatError
    from loom.nn.summary import summary_text

    net = _load_model(args.model, args.model_id, "numpy")
    try:
        ids = [m.get("id") for m in json.loads(Path(args.model).read_text(encoding="utf-8")).get("models", [])]
    except (OSError, ValueError, AttributeError) as exc:  # load_model succeeded, so this is unexpected
        raise ModelFormatError(f"{args.model}: cannot list the models of the bundle ({exc})") from exc
    shown = args.model_id or (ids[0] if ids else None)
    title = (
        f"{args.model}: model {shown!r}"
        + (f" (bundle holds {len(ids)} models: {', '.join(map(repr, ids))})" if len(ids) > 1 else "")
        + f"; grid {net.grid_rows}x{net.grid_cols}x{net.layers_per_cell}, batch_size {net.batch_size}"
    )
    out = sys.stdout
    out.write(summary_text(net, title) + "\n")
    for section in INFO_SECTIONS:
        text = section(net)
        if text:
            out.write("\n" + text.rstrip("\n") + "\n")
    return EXIT_OK


def add_info_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``loom info``."""
    parser = subparsers.add_parser(
        "info",
        help="layer table of a saved model (grid position, type, activation, sizes, parameters)",
        description="Print the layers of a saved LOOM bundle (written by loom or by Go LOOM): grid position, "
        "type, activation, input and output sizes, parameter counts and the total.",
    )
    parser.add_argument("model", help="saved model (LOOM bundle JSON)")
    parser.add_argument("--model-id", default=None, help="model id inside the bundle (default: the first)")
    parser.set_defaults(func=run_info)
    return parser


# ---------------------------------------------------------------------------------------------- dataset
def run_dataset(args: argparse.Namespace) -> int:
    """``loom dataset NAME OUT.csv``: write a synthetic data set."""
    from loom.nn.datasets import DATASETS, write_csv

    make, columns = DATASETS[args.name]
    x, y = make(args.samples, noise=args.noise, seed=args.seed)
    write_csv(args.out, x, y, columns)
    sys.stdout.write(f"wrote {len(y)} samples ({', '.join(columns)}) to {args.out}\n")
    return EXIT_OK


def add_dataset_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``loom dataset``."""
    from loom.nn.datasets import DATASETS

    parser = subparsers.add_parser(
        "dataset",
        help="write a small synthetic data set as CSV (two moons)",
        description="Write a synthetic data set made with NumPy as CSV with a header (features, then the class "
        "label), e.g. scikit-learn's two moons.",
    )
    parser.add_argument("name", choices=sorted(DATASETS), help="which data set")
    parser.add_argument("out", help="CSV file to write")
    parser.add_argument("--samples", type=int, default=1000, help="number of samples (default: 1000)")
    parser.add_argument("--noise", type=float, default=0.1, help="Gaussian noise (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.set_defaults(func=run_dataset)
    return parser


def add_training_parsers(subparsers: Any) -> None:
    """Register ``train``, ``eval``, ``predict``, ``info`` and ``dataset`` (one call from :mod:`loom.cli`)."""
    for add in (add_train_parser, add_eval_parser, add_predict_parser, add_info_parser, add_dataset_parser):
        add(subparsers)
