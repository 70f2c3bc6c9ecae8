"""Array workflows as Keras and PyTorch users know them: ``fit``, ``predict``, ``evaluate``.

``fit`` takes samples as rows (``x [N, features]``, NumPy / CuPy arrays or nested lists) and
targets ``y`` as

* class labels ``[N]`` (integers ``0 .. outputs - 1``) for a network with several outputs —
  turned into one-hot rows;
* one-hot or real-valued rows ``[N, outputs]`` (``[N]`` for a one-output network).

It makes the mini-batches itself (shuffled every epoch with ``seed``), trains with the engine
of :mod:`loom.nn.training_engine` (fused when possible, any optimizer of
:mod:`loom.nn.optimizers`, a schedule of :mod:`loom.nn.lr_schedules`) and reports, per epoch,
the **mean over the samples** of the loss (Keras' and PyTorch's convention; LOOM's ``train``
divides by the output length instead: see :mod:`loom.ops.losses`), the accuracy when the
targets are classes (labels, one-hot rows, or 0/1 targets of a one-output network: a 0.5
threshold), and the same on validation data.

Losses: ``"mse"``, ``"cross_entropy"`` (on probabilities: a softmax output layer) and
``"binary_cross_entropy"`` (on probabilities: a sigmoid output); Keras' names
(``"categorical_crossentropy"``, ``"binary_crossentropy"``, ``"mean_squared_error"``) work too.
The default is ``"cross_entropy"`` when the last layer is a softmax and the targets are
classes, else ``"mse"``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from loom.backend import backend_of, to_numpy
from loom.errors import ConfigError, ShapeError
from loom.nn.fused import fused_switch
from loom.nn.lr_schedules import LearningRateSchedule
from loom.nn.optimizers import OPTIMIZER_OPTIONS, make_optimizer
from loom.nn.summary import output_features
from loom.nn.training_callbacks import History
from loom.nn.training_engine import Callback, EpochStats, GradientHook, LossFunction, Stepper, run_epochs
from loom.nn.training_reporters import ProgressBar, fit_reporters
from loom.ops.losses import FIT_LOSS_TYPES, batch_loss_and_grad, normalize_loss_type

if TYPE_CHECKING:
    from loom.backend.distributed import Communicator
    from loom.nn.data_parallel import DataParallel
    from loom.nn.network import Network

__all__ = ["Targets", "evaluate_arrays", "fit_network", "predict_arrays", "prepare_targets"]

#: ``fit`` keywords that configure the learning-rate schedule.
SCHEDULE_OPTIONS = ("lr_schedule", "warmup_epochs", "lr_step_size", "lr_gamma", "lr_min")
#: Rows per forward call of ``predict`` / validation by default.
PREDICT_BATCH = 256


@dataclass
class Targets:
    """Targets of ``fit`` / ``evaluate`` as the network's outputs need them.

    Attributes
    ----------
    values : array ``[N, outputs]``
        One-hot or real-valued rows on the network's backend.
    classes : array ``[N]`` or None
        Integer labels (``"labels"`` mode), for accuracy.
    mode : str or None
        ``"labels"`` (argmax of the output vs the label), ``"binary"`` (one output thresholded
        at 0.5 vs a 0/1 target) or ``None`` (no accuracy).
    """

    values: Any
    classes: Any
    mode: str | None


def _host(net: Network, data: Any, name: str) -> np.ndarray | None:
    """``data`` as a NumPy array, unless it already is an array of the network's backend (then ``None``)."""
    if hasattr(data, "shape") and backend_of(data) is net.array_backend:
        return None
    if hasattr(data, "shape"):
        data = to_numpy(data)  # an array of another backend
    try:
        return np.asarray(data)
    except ValueError as exc:
        raise ShapeError(f"{name}: expected a rectangular array of numbers ({exc})") from exc


def prepare_samples(net: Network, x: Any, name: str = "x") -> Any:
    """``x`` as a finite float ``[N, features]`` array of the network's backend (``ShapeError`` otherwise)."""
    host = _host(net, x, name)
    if host is not None:
        if host.dtype.kind not in "biuf":
            raise ShapeError(f"{name}: expected numbers, got an array of {host.dtype}")
        x = host
    if x.ndim != 2:
        raise ShapeError(
            f"{name}: expected a 2-D [samples, features] array, got shape {tuple(x.shape)} "
            "(one sample: x.reshape(1, -1); LOOM's flat layout: forward())"
        )
    if x.shape[0] == 0:
        raise ShapeError(f"{name}: expected at least one sample, got none")
    backend = net.array_backend
    array = backend.asarray(x)
    if not bool(backend.xp.all(backend.xp.isfinite(array))):
        row = int(np.argmax(~np.isfinite(to_numpy(array)).all(axis=1)))
        raise ShapeError(f"{name}: row {row} holds NaN or Inf; expected finite numbers")
    return array


def output_size(net: Network, features: int) -> int:
    """Outputs per sample for inputs of ``features`` values: from the configs, else one forward of zeros."""
    known = output_features(net, features)
    if known:
        return known
    with net.tape_preserved():
        return int(net.forward_tape(net.array_backend.zeros(features), 1).shape[0])


def prepare_targets(net: Network, y: Any, samples: int, outputs: int, name: str = "y") -> Targets:
    """Targets for ``samples`` rows of a network with ``outputs`` outputs (see the module docstring)."""
    backend = net.array_backend
    host = _host(net, y, name)
    array = host if host is not None else y
    if host is not None and host.dtype.kind not in "biuf":
        raise ShapeError(f"{name}: expected numbers, got an array of {host.dtype}")
    if array.ndim == 2 and array.shape[1] == 1 and outputs > 1:
        array = array.reshape(-1)
    if array.shape[0] != samples:
        raise ShapeError(f"{name}: expected {samples} rows (one per sample of x), got {array.shape[0]}")
    if array.ndim == 1 and outputs > 1:
        labels = to_numpy(array)
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            bad = int(np.argmax(~np.isfinite(labels) | (labels != np.round(labels))))
            raise ShapeError(
                f"{name}: a 1-D target for a network with {outputs} outputs holds class labels: expected integers "
                f"0..{outputs - 1}, got {labels[bad]:g} at row {bad}"
            )
        labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= outputs:
            bad = int(np.argmax((labels < 0) | (labels >= outputs)))
            raise ShapeError(
                f"{name}: class label {labels[bad]} at row {bad} is outside 0..{outputs - 1} "
                f"(the network has {outputs} outputs)"
            )
        one_hot = np.zeros((samples, outputs), dtype=np.float32)
        one_hot[np.arange(samples), labels] = 1.0
        return Targets(backend.asarray(one_hot), backend.asarray(labels, dtype=np.int64), "labels")
    values = array.reshape(-1, 1) if array.ndim == 1 else array
    if values.ndim != 2 or values.shape[1] != outputs:
        raise ShapeError(
            f"{name}: expected {outputs} target values per sample (the network's output size), "
            f"got shape {tuple(array.shape)}"
        )
    values = backend.asarray(values)
    xp = backend.xp
    if not bool(xp.all(xp.isfinite(values))):
        raise ShapeError(f"{name}: holds NaN or Inf; expected finite numbers")
    binary = bool(xp.all((values == 0) | (values == 1)))
    if binary and outputs > 1 and bool(xp.all(xp.sum(values, axis=1) == 1)):
        return Targets(values, xp.argmax(values, axis=1), "labels")
    if binary and outputs == 1:
        return Targets(values, None, "binary")
    return Targets(values, None, None)


def default_loss(net: Network, targets: Targets) -> str:
    """``"cross_entropy"`` for class targets of a softmax output layer, else ``"mse"``."""
    if targets.mode == "labels" and net.layers and net.layers[-1].type == "softmax":
        return "cross_entropy"
    return "mse"


def _hits_function(xp: Any, mode: str | None, outputs: int) -> Any:
    if mode == "labels":
        return lambda y, labels: xp.sum(xp.argmax(y.reshape(-1, outputs), axis=1) == labels)
    if mode == "binary":
        return lambda y, target: xp.sum((y > 0.5) == (target > 0.5))
    return None


def predict_arrays(net: Network, x: Any, batch_size: int | None = None) -> Any:
    """The network's outputs ``[N, outputs]`` for samples ``x [N, features]`` (backend array).

    Runs ``batch_size`` rows per forward call (default 256) and leaves the recorded tape alone.
    """
    samples = prepare_samples(net, x)
    step = _positive_int(PREDICT_BATCH if batch_size is None else batch_size, "predict.batch_size")
    xp = net.array_backend.xp
    outputs = []
    with net.tape_preserved():
        for start in range(0, samples.shape[0], step):
            chunk = samples[start : start + step]
            outputs.append(net.forward_tape(chunk.reshape(-1), chunk.shape[0]).reshape(chunk.shape[0], -1))
    return outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)


def _metric_sums(
    net: Network, samples: Any, targets: Targets, loss: LossFunction, batch_size: int
) -> tuple[float, float | None]:
    """Sum over ``samples`` of the per-sample loss, and the correct predictions (``None``: no accuracy)."""
    backend = net.array_backend
    xp = backend.xp
    n = samples.shape[0]
    total, hits = 0.0, 0
    count = _hits_function(xp, targets.mode, targets.values.shape[1])
    with net.tape_preserved():
        for start in range(0, n, batch_size):
            chunk = samples[start : start + batch_size]
            rows = chunk.shape[0]
            y = net.forward_tape(chunk.reshape(-1), rows)
            target = targets.values[start : start + batch_size].reshape(-1)
            value, _ = batch_loss_and_grad(loss.name, y, target, rows, xp)
            total += value * rows
            if count is not None:
                extra = targets.classes[start : start + batch_size] if targets.mode == "labels" else target
                hits = hits + count(y, extra)
    return total, (None if count is None else float(hits))


def _metric_logs(total: float, hits: float | None, n: int, targets: Targets) -> dict[str, float]:
    """``{"loss", "accuracy"}`` of ``n`` samples from :func:`_metric_sums`' sums."""
    out = {"loss": total / n}
    if hits is not None:
        out["accuracy"] = hits / (n if targets.mode == "labels" else n * targets.values.shape[1])
    return out


def _metrics(net: Network, samples: Any, targets: Targets, loss: LossFunction, batch_size: int) -> dict[str, float]:
    """Batch-mean loss and accuracy of ``samples`` against ``targets`` (weights unchanged)."""
    total, hits = _metric_sums(net, samples, targets, loss, batch_size)
    return _metric_logs(total, hits, samples.shape[0], targets)


def evaluate_arrays(
    net: Network, x: Any, y: Any, *, batch_size: int | None = None, loss: str | None = None
) -> dict[str, float]:
    """``{"loss": ..., "accuracy": ...}`` of ``net`` on ``x``, ``y`` with ``fit``'s conventions.

    ``accuracy`` only when the targets are classes.
    """
    samples = prepare_samples(net, x)
    targets = prepare_targets(net, y, samples.shape[0], output_size(net, samples.shape[1]))
    name = normalize_loss_type(default_loss(net, targets) if loss is None else loss, "evaluate.loss", FIT_LOSS_TYPES)
    step = _positive_int(PREDICT_BATCH if batch_size is None else batch_size, "evaluate.batch_size")
    return _metrics(net, samples, targets, LossFunction(name, "batch_mean"), step)


def _sum_over_ranks(
    parallel: DataParallel, train_hits: float | None, val_sums: tuple[float, float | None] | None
) -> tuple[float | None, tuple[float, float | None] | None]:
    """Training hits and validation sums added up over the ranks in one collective."""
    values = [] if train_hits is None else [train_hits]
    if val_sums is not None:
        values += [val_sums[0]] + ([] if val_sums[1] is None else [val_sums[1]])
    summed = list(parallel.sum(values))
    if train_hits is not None:
        train_hits = summed.pop(0)
    if val_sums is not None:
        val_sums = (summed[0], None if val_sums[1] is None else summed[1])
    return train_hits, val_sums


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _split(
    net: Network, samples: Any, targets: Targets, validation_data: Any, validation_split: float
) -> tuple[Any, Targets, Any, Targets | None]:
    """Training part and validation part (Keras: ``validation_data`` wins; a split takes the last rows)."""
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
            raise ConfigError("fit.validation_data: expected an (x_val, y_val) pair")
        x_val = prepare_samples(net, validation_data[0], "validation_data[0]")
        if x_val.shape[1] != samples.shape[1]:
            raise ShapeError(
                f"validation_data[0]: expected {samples.shape[1]} features per sample (as x), got {x_val.shape[1]}"
            )
        t_val = prepare_targets(net, validation_data[1], x_val.shape[0], targets.values.shape[1], "validation_data[1]")
        return samples, targets, x_val, t_val
    if isinstance(validation_split, bool) or not isinstance(validation_split, int | float):
        raise ConfigError(f"fit.validation_split: expected a number in [0, 1), got {validation_split!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ConfigError(f"fit.validation_split: expected a number in [0, 1), got {validation_split}")
    if validation_split == 0.0:
        return samples, targets, None, None
    n = samples.shape[0]
    split_at = math.floor(n * (1.0 - validation_split))
    if split_at == 0 or split_at == n:
        raise ConfigError(
            f"fit.validation_split: {validation_split} of {n} samples leaves "
            f"{'no training' if split_at == 0 else 'no validation'} samples"
        )

    head, tail = slice(0, split_at), slice(split_at, n)
    return samples[head], _rows(targets, head), samples[tail], _rows(targets, tail)


def _rows(targets: Targets, rows: slice) -> Targets:
    """The targets of the samples ``rows``."""
    return Targets(targets.values[rows], None if targets.classes is None else targets.classes[rows], targets.mode)


def fit_network(
    net: Network,
    x: Any,
    y: Any,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float | None = None,
    optimizer: Any = "adam",
    loss: str | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    validation_data: Any = None,
    validation_split: float = 0.0,
    callbacks: Sequence[Callback] = (),
    verbose: Any = "auto",
    gradient_clip: float = 0.0,
    fused: bool = True,
    raise_on_divergence: bool = True,
    gradient_hooks: Sequence[GradientHook] = (),
    distributed: bool | Communicator = False,
    **options: Any,
) -> History:
    """Train ``net`` on samples ``x`` and targets ``y``; see :meth:`loom.nn.network.Network.fit`.

    ``distributed`` (``True`` or a :class:`~loom.backend.distributed.Communicator`): every rank
    of the job makes this call on the same data and trains on its shard of each global batch of
    ``world_size × batch_size`` samples (:mod:`loom.nn.data_parallel`).
    """
    arguments = dict(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        loss=loss,
        shuffle=shuffle,
        seed=seed,
        validation_data=validation_data,
        validation_split=validation_split,
        callbacks=callbacks,
        verbose=verbose,
        gradient_clip=gradient_clip,
        fused=fused,
        raise_on_divergence=raise_on_divergence,
        gradient_hooks=gradient_hooks,
    )
    if distributed is False:
        return _fit(net, x, y, None, **arguments, **options)
    from loom.nn.data_parallel import start_data_parallel

    parallel = start_data_parallel(net, distributed, "fit.distributed")
    with parallel.guard():
        return _fit(net, x, y, parallel, **arguments, **options)


def _fit(
    net: Network,
    x: Any,
    y: Any,
    parallel: DataParallel | None,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float | None,
    optimizer: Any,
    loss: str | None,
    shuffle: bool,
    seed: int | None,
    validation_data: Any,
    validation_split: float,
    callbacks: Sequence[Callback],
    verbose: Any,
    gradient_clip: float,
    fused: bool,
    raise_on_divergence: bool,
    gradient_hooks: Sequence[GradientHook],
    **options: Any,
) -> History:
    """:func:`fit_network` once the data-parallel run (``parallel``), if any, has started."""
    for key in options:
        if key not in OPTIMIZER_OPTIONS and key not in SCHEDULE_OPTIONS:
            choices = [*OPTIMIZER_OPTIONS, *SCHEDULE_OPTIONS, "validation_split", "validation_data", "callbacks"]
            hint = difflib.get_close_matches(key, choices, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"fit.{key}: unknown option{did_you_mean}")
    epochs = _positive_int(epochs, "fit.epochs") if epochs != 0 else 0
    batch_size = _positive_int(batch_size, "fit.batch_size")
    for name, value in (("shuffle", shuffle), ("fused", fused), ("raise_on_divergence", raise_on_divergence)):
        if not isinstance(value, bool):
            raise ConfigError(f"fit.{name}: expected True or False, got {value!r}")
    if isinstance(gradient_clip, bool) or not isinstance(gradient_clip, int | float) or not gradient_clip >= 0:
        raise ConfigError(f"fit.gradient_clip: expected a number >= 0 (0 disables clipping), got {gradient_clip!r}")
    opt = make_optimizer(
        optimizer, learning_rate, path="fit", **{k: v for k, v in options.items() if k in OPTIMIZER_OPTIONS}
    )
    schedule = LearningRateSchedule(
        options.get("lr_schedule"),
        opt.learning_rate,
        epochs,
        warmup_epochs=options.get("warmup_epochs", 0),
        step_size=options.get("lr_step_size", 10),
        gamma=options.get("lr_gamma", 0.1),
        min_lr=options.get("lr_min", 0.0),
        path="fit",
    )
    reporters = fit_reporters(verbose, epochs)
    if parallel is not None and not parallel.is_main:
        reporters = []

    samples = prepare_samples(net, x)
    outputs = output_size(net, samples.shape[1])
    targets = prepare_targets(net, y, samples.shape[0], outputs)
    x_train, t_train, x_val, t_val = _split(net, samples, targets, validation_data, validation_split)
    loss_name = normalize_loss_type(default_loss(net, targets) if loss is None else loss, "fit.loss", FIT_LOSS_TYPES)
    loss_fn = LossFunction(loss_name, "batch_mean")

    backend = net.array_backend
    xp = backend.xp
    n = x_train.shape[0]
    step_size = batch_size  # samples per step, all ranks together
    if parallel is not None:
        parallel.agree("training samples", n)
        step_size = batch_size * parallel.world_size
        if shuffle:
            seed = parallel.shared_seed(seed)
    rng = np.random.default_rng(seed)
    labels_mode = t_train.mode == "labels"
    hits = _hits_function(xp, t_train.mode, outputs)

    def epoch_batches(epoch: int):
        xs, ts, cs = x_train, t_train.values, t_train.classes
        if shuffle:
            order = backend.asarray(rng.permutation(n), dtype=np.int64)
            xs, ts = xp.take(xs, order, axis=0), xp.take(ts, order, axis=0)
            cs = None if cs is None else xp.take(cs, order, axis=0)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            target = ts[start:stop].reshape(-1)
            extra = cs[start:stop] if labels_mode else target
            yield xs[start:stop].reshape(-1), target, stop - start, extra

    def shard_batches(epoch: int):
        """Data-parallel: this rank's rows of every global batch of ``step_size`` samples."""
        assert parallel is not None
        order = rng.permutation(n) if shuffle else None  # the order of one process: same draws
        for start in range(0, n, step_size):
            stop = min(start + step_size, n)
            shard = parallel.next_batch(stop - start)
            lo, hi = start + shard.start, start + shard.stop
            if order is None:
                xs, ts = x_train[lo:hi], t_train.values[lo:hi]
                cs = None if t_train.classes is None else t_train.classes[lo:hi]
            else:
                rows = backend.asarray(order[lo:hi], dtype=np.int64)
                xs, ts = xp.take(x_train, rows, axis=0), xp.take(t_train.values, rows, axis=0)
                cs = None if t_train.classes is None else xp.take(t_train.classes, rows, axis=0)
            target = ts.reshape(-1)
            yield xs.reshape(-1), target, stop - start, cs if labels_mode else target

    x_val_here, t_val_here = x_val, t_val  # the validation samples this rank evaluates
    if parallel is not None and x_val is not None and t_val is not None:
        lo, hi = parallel.rows(x_val.shape[0])
        x_val_here, t_val_here = x_val[lo:hi], _rows(t_val, slice(lo, hi))

    def summarize(stats: EpochStats) -> dict[str, Any]:
        logs: dict[str, Any] = {"loss": stats.weighted_loss_sum / stats.samples}
        train_hits = None if hits is None else float(stats.hits)
        val_sums = None
        if x_val_here is not None and t_val_here is not None:
            val_sums = _metric_sums(net, x_val_here, t_val_here, loss_fn, PREDICT_BATCH)
        if parallel is not None:  # this rank's counts and sums -> the job's, one collective
            train_hits, val_sums = _sum_over_ranks(parallel, train_hits, val_sums)
        if train_hits is not None:
            logs["accuracy"] = train_hits / (stats.samples * (1 if labels_mode else outputs))
        if val_sums is not None and x_val is not None and t_val is not None:
            val = _metric_logs(*val_sums, x_val.shape[0], t_val)
            logs.update({f"val_{key}": value for key, value in val.items()})
        logs["learning_rate"] = stats.learning_rate
        return logs

    history = History()
    history.params = {
        "epochs": epochs,
        "steps": math.ceil(n / step_size),
        "samples": n,
        "batch_size": batch_size,
        "optimizer": repr(opt),
        "loss": loss_name,
    }
    if parallel is not None:
        history.params.update(world_size=parallel.world_size, global_batch_size=step_size)
        callbacks = parallel.callbacks(callbacks)
    every = [history, *callbacks, *reporters]
    if epochs == 0:
        return history
    with net.training_parameters() as flat:
        if parallel is not None:
            parallel.attach(flat)  # rank 0's weights on every rank
        stepper = Stepper(
            net,
            flat,
            loss_fn,
            opt,
            gradient_clip=float(gradient_clip),
            fused=fused_switch(fused),
            guard=raise_on_divergence,
            gradient_hooks=gradient_hooks,
            parallel=parallel,
        )
        if parallel is not None:
            parallel.wrap(stepper)
        try:
            run_epochs(
                net,
                stepper,
                epochs=epochs,
                epoch_batches=epoch_batches if parallel is None else shard_batches,
                learning_rate=schedule,
                callbacks=every,
                summarize=summarize,
                hits=hits,
            )
        finally:
            stepper.export_gradients()
            for reporter in reporters:
                if isinstance(reporter, ProgressBar):
                    reporter.close()
    return history
