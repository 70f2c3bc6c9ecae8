"""LOOM's training loop: ``TrainingConfig``, ``TrainingBatch``, ``TrainingResult``, ``train_network``.

For each epoch, for each batch in the given order (or shuffled with ``shuffle``): forward,
loss (recorded before the update, LOOM's convention: see :mod:`loom.ops.losses`), loss
gradient, backward, optional global-norm clipping, optimizer step (LOOM's plain SGD by
default; momentum SGD, Adam, AdamW, RMSprop with their options, and a learning-rate schedule
per epoch, from :mod:`loom.nn.optimizers` / :mod:`loom.nn.lr_schedules`).
``LossHistory[e]`` is the mean of the epoch's batch losses. The steps run on the training
engine (:mod:`loom.nn.training_engine`), fused when the network allows it.
"""

from __future__ import annotations

import difflib
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from loom.backend import resolve_backend
from loom.errors import ConfigError, ShapeError
from loom.nn import batch_validation
from loom.nn.fused import fused_switch
from loom.nn.lr_schedules import LearningRateSchedule
from loom.nn.optimizers import OPTIMIZER_OPTIONS, Optimizer, make_optimizer
from loom.nn.training_engine import Callback, EpochStats, LossFunction, Stepper, run_epochs
from loom.nn.training_reporters import LoomVerboseReporter, ProgressBar, go_duration
from loom.ops.losses import normalize_loss_type

if TYPE_CHECKING:
    from loom.backend.distributed import Communicator
    from loom.nn.data_parallel import DataParallel
    from loom.nn.network import Network

__all__ = ["TrainingBatch", "TrainingConfig", "TrainingResult", "go_duration", "train_network"]

#: LOOM's ten ``TrainingConfig`` keys (JSON / Go field names).
LOOM_FIELDS = (
    ("Epochs", "epochs"),
    ("LearningRate", "learning_rate"),
    ("UseGPU", "use_gpu"),
    ("PrintEveryBatch", "print_every_batch"),
    ("GradientClip", "gradient_clip"),
    ("LossType", "loss_type"),
    ("Verbose", "verbose"),
    ("EvaluateEveryN", "evaluate_every_n"),
    ("ValidationInputs", "validation_inputs"),
    ("ValidationTargets", "validation_targets"),
)


@dataclass
class TrainingConfig:
    """Training settings (LOOM's ``TrainingConfig`` and loom's additions).

    ``from_dict`` accepts every field as LOOM spells keys — CamelCase in any case,
    ``"LearningRate"``, ``"learningrate"``, ``"WeightDecay"`` — and in snake_case
    (``"learning_rate"``, ``"weight_decay"``); unknown keys are a ``ConfigError`` with a hint.

    LOOM's fields: ``epochs``, ``learning_rate``, ``use_gpu`` (CuPy; ``BackendUnavailableError``
    when CuPy or a CUDA device is missing), ``print_every_batch``, ``gradient_clip``,
    ``loss_type`` (``"mse"``, ``"cross_entropy"``), ``verbose``, ``evaluate_every_n``,
    ``validation_inputs``, ``validation_targets``.

    loom's additions:

    * ``optimizer``: ``"sgd"`` (LOOM's update; with ``momentum`` > 0 momentum SGD, ``nesterov``),
      ``"adam"``, ``"adamw"``, ``"rmsprop"``; options ``momentum``, ``nesterov``, ``beta1``,
      ``beta2``, ``epsilon``, ``weight_decay``, ``alpha`` — ``None`` means the optimizer's
      ``torch.optim`` default, and an option the optimizer does not take is an error. The
      learning rate is ``learning_rate`` (LOOM's default 0.001 for every optimizer).
    * ``lr_schedule`` (``"constant"``, ``"step"``, ``"cosine"``, ``"warmup"``), ``warmup_epochs``,
      ``lr_step_size``, ``lr_gamma``, ``lr_min``: see :mod:`loom.nn.lr_schedules`.
    * ``shuffle`` / ``seed``: visit the batches in a new random order every epoch.
    * ``raise_on_divergence``: stop with ``TrainingDivergedError`` on a non-finite loss,
      weights restored to the last finite step (``False``: keep going, as Go does).
    * ``progress_bar``: a tqdm bar over epochs (default: when verbose and stderr is a terminal).
    * ``fused``: use the fused training step when the network allows it (results are equal).
    * ``distributed`` (``"Distributed": true``): data-parallel training. Every process of the job
      (``mpiexec -n N``, :func:`loom.distributed.launch`) calls ``train`` with the same batches;
      each TrainingBatch stays one step, its samples split over the ranks, the gradients
      averaged (weighted by the shard sizes) before the update: the weights and the loss history
      are those of one process. Rank 0 alone prints. A
      :class:`~loom.backend.distributed.Communicator` instead of ``True`` is used as given.
      See ``docs/distributed.md``.
    """

    epochs: int = 10
    learning_rate: float = 0.001
    use_gpu: bool = False
    print_every_batch: int = 0
    gradient_clip: float = 0.0
    loss_type: str = "mse"
    verbose: bool = False
    evaluate_every_n: int = 0
    validation_inputs: Any = None
    validation_targets: Any = None
    optimizer: str = "sgd"
    momentum: float | None = None
    nesterov: bool | None = None
    beta1: float | None = None
    beta2: float | None = None
    epsilon: float | None = None
    weight_decay: float | None = None
    alpha: float | None = None
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    lr_step_size: int = 10
    lr_gamma: float = 0.1
    lr_min: float = 0.0
    shuffle: bool = False
    seed: int | None = None
    raise_on_divergence: bool = True
    progress_bar: bool | None = None
    fused: bool = True
    distributed: bool | Communicator = False

    def __post_init__(self) -> None:
        self.loss_type = normalize_loss_type(self.loss_type, "loss_type")
        for name in ("epochs", "print_every_batch", "evaluate_every_n"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < 0
                or not float(value).is_integer()
            ):
                raise ConfigError(f"{name}: expected a non-negative integer, got {value!r}")
            setattr(self, name, int(value))
        for name in ("learning_rate", "gradient_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name}: expected a finite number, got {value!r}")
            setattr(self, name, float(value))
        if self.gradient_clip < 0:
            raise ConfigError(f"gradient_clip: expected >= 0 (0 disables clipping), got {self.gradient_clip}")
        for name in ("use_gpu", "verbose", "shuffle", "raise_on_divergence", "fused"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if not isinstance(self.distributed, bool):
            from loom.backend.distributed.base import Communicator

            if not isinstance(self.distributed, Communicator):
                raise ConfigError(
                    f"distributed: expected true, false or a loom.distributed Communicator, got {self.distributed!r}"
                )
        if self.progress_bar is not None and not isinstance(self.progress_bar, bool):
            raise ConfigError(f"progress_bar: expected true, false or null, got {self.progress_bar!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError(f"seed: expected an integer or null, got {self.seed!r}")
        if not isinstance(self.optimizer, str):
            raise ConfigError(
                f"optimizer: expected a name (sgd, adam, adamw, rmsprop), got {type(self.optimizer).__name__}; "
                "optimizer objects go to fit(optimizer=...)"
            )
        self.make_optimizer()  # checks the optimizer, its options and the schedule
        self.make_schedule()

    def optimizer_options(self) -> dict[str, Any]:
        """The optimizer options that are set (``None`` ones left out)."""
        return {name: getattr(self, name) for name in OPTIMIZER_OPTIONS if getattr(self, name) is not None}

    def make_optimizer(self) -> Optimizer:
        """A fresh optimizer for these settings."""
        return make_optimizer(self.optimizer, self.learning_rate, path="training config", **self.optimizer_options())

    def make_schedule(self) -> LearningRateSchedule:
        """The learning-rate schedule of these settings."""
        return LearningRateSchedule(
            self.lr_schedule,
            self.learning_rate,
            self.epochs,
            warmup_epochs=self.warmup_epochs,
            step_size=self.lr_step_size,
            gamma=self.lr_gamma,
            min_lr=self.lr_min,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Build from LOOM-style keys (any case) or snake_case keys; unknown keys raise ``ConfigError``."""
        names = {f.name for f in fields(cls)}
        loom_keys = {name.replace("_", ""): name for name in names}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            low = str(key).lower()
            name = loom_keys.get(low) or (low if low in names else None)
            if name is None:
                choices = sorted(set(loom_keys) | names)
                hint = difflib.get_close_matches(low, choices, n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"training config.{key}: unknown key{did_you_mean}")
            if name == "loss_type":
                value = normalize_loss_type(value, f"training config.{key}")
            kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """LOOM's JSON keys; loom's additions follow in the same CamelCase style where they differ from the default."""
        out = {key: getattr(self, name) for key, name in LOOM_FIELDS}
        defaults = TrainingConfig()
        loom_names = {name for _, name in LOOM_FIELDS}
        for f in fields(self):
            if f.name not in loom_names and getattr(self, f.name) != getattr(defaults, f.name):
                value = getattr(self, f.name)
                if f.name == "distributed":  # a Communicator object: the switch is on
                    value = True
                out["".join(part.capitalize() for part in f.name.split("_"))] = value
        return out


@dataclass
class TrainingBatch:
    """One training step's data: a flat input (``batch_size`` samples) and its target."""

    input: Any
    target: Any

    @classmethod
    def coerce(cls, item: Any, index: int) -> TrainingBatch:
        """Accept a TrainingBatch, a ``{"Input", "Target"}`` dict (any case) or an (input, target) pair."""
        if isinstance(item, TrainingBatch):
            return item
        if isinstance(item, Mapping):
            low = {str(k).lower(): v for k, v in item.items()}
            if "input" not in low or "target" not in low:
                raise ShapeError(f"batches[{index}]: expected keys 'Input' and 'Target', got {sorted(item)}")
            return cls(low["input"], low["target"])
        if isinstance(item, tuple | list) and len(item) == 2:
            return cls(item[0], item[1])
        raise ShapeError(f"batches[{index}]: expected a TrainingBatch, a dict or an (input, target) pair")


@dataclass
class TrainingResult:
    """Outcome of :func:`train_network` (LOOM's ``TrainingResult``)."""

    final_loss: float = 0.0
    best_loss: float = math.inf
    total_time: float = 0.0
    avg_throughput: float = 0.0
    loss_history: list[float] = field(default_factory=list)
    eval_metrics: Any = None

    def to_dict(self) -> dict[str, Any]:
        """LOOM's JSON keys (``TotalTime`` in integer nanoseconds)."""
        return {
            "FinalLoss": self.final_loss,
            "BestLoss": self.best_loss,
            "TotalTime": round(self.total_time * 1e9),
            "AvgThroughput": self.avg_throughput,
            "LossHistory": list(self.loss_history),
            "EvalMetrics": None if self.eval_metrics is None else self.eval_metrics.to_dict(),
        }


def _coerce_config(config: Any) -> TrainingConfig:
    if config is None:
        return TrainingConfig()
    if isinstance(config, TrainingConfig):
        return config
    if isinstance(config, Mapping):
        return TrainingConfig.from_dict(config)
    raise ConfigError(f"config: expected a TrainingConfig or a dict, got {type(config).__name__}")


def _prepare_batches(net: Network, batches: Iterable[Any]) -> list[tuple[Any, Any, int]]:
    prepared = []
    for i, item in enumerate(batch_validation.training_items(batches)):
        prepared.append(batch_validation.prepare_batch(net, TrainingBatch.coerce(item, i), i))
    if not prepared:
        raise ShapeError("batches: expected at least one training batch, got none")
    return prepared


def _use_requested_backend(net: Network, cfg: TrainingConfig, config: Any) -> None:
    """Move ``net`` to CuPy for ``use_gpu``, back to NumPy when a dict says ``UseGPU: false``."""
    if cfg.use_gpu and net.backend != "cupy":
        net.to_backend(resolve_backend("cupy"))
    elif (
        not cfg.use_gpu
        and isinstance(config, Mapping)
        and net.backend != "numpy"
        and any(str(k).lower() in ("usegpu", "use_gpu") for k in config)
    ):
        net.to_backend("numpy")


class _EpochClock(Callback):
    """When the epoch started (for the verbose epoch line)."""

    start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start = time.perf_counter()


class _LoomEpochEnd(Callback):
    """LOOM's end of an epoch: loss history, best loss, verbose text, gradient statistics, validation."""

    def __init__(
        self, cfg: TrainingConfig, result: TrainingResult, reporter: LoomVerboseReporter | None, stepper: Stepper
    ) -> None:
        self.cfg, self.result, self.reporter, self.stepper = cfg, result, reporter, stepper
        self.samples = 0
        self.clock = _EpochClock()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        cfg, result, reporter = self.cfg, self.result, self.reporter
        average = logs["loss"] if logs else math.nan
        result.loss_history.append(average)
        result.best_loss = min(result.best_loss, average)
        if reporter is not None:
            reporter.epoch(epoch, average, result.best_loss, time.perf_counter() - self.clock.start, self.samples)
            if (epoch + 1) % 5 == 0:
                self.stepper.export_gradients()
                reporter.gradient_statistics(self.model)
        if (
            cfg.evaluate_every_n > 0
            and (epoch + 1) % cfg.evaluate_every_n == 0
            and cfg.validation_inputs is not None
            and cfg.validation_targets is not None
        ):
            if reporter is not None:
                reporter.validation_start()
            result.eval_metrics = self.model.evaluate_network(cfg.validation_inputs, cfg.validation_targets)
            if reporter is not None:
                reporter.validation(result.eval_metrics)


class _LoomBatchLines(Callback):
    """``\rEpoch e/E - Batch b/B - Loss`` every ``every`` batches."""

    def __init__(self, reporter: LoomVerboseReporter, batches: int, every: int) -> None:
        self.reporter, self.batches, self.every = reporter, batches, every

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if (batch + 1) % self.every == 0 and logs is not None:
            self.reporter.batch(logs["epoch"], batch, self.batches, logs["loss"])


def train_network(
    net: Network, batches: Iterable[Any], config: Any = None, *, callbacks: Sequence[Callback] = ()
) -> TrainingResult:
    """Train ``net`` with LOOM's loop.

    Parameters
    ----------
    net : Network
    batches : list
        ``TrainingBatch`` objects, ``{"Input": [...], "Target": [...]}`` dicts or
        ``(input, target)`` pairs, used in this order every epoch (unless ``shuffle``).
    config : TrainingConfig or dict, optional
    callbacks : sequence of Callback
        Keras-style hooks run after LOOM's own bookkeeping each epoch (``logs``: ``loss``,
        ``learning_rate``); setting ``net.stop_training = True`` in one ends training after
        that epoch, and the result then holds the epochs that ran.

    Returns
    -------
    TrainingResult

    Raises
    ------
    TrainingDivergedError
        On a non-finite loss (unless ``raise_on_divergence=False``); the network keeps the
        weights of its last finite step.
    """
    cfg = _coerce_config(config)
    _use_requested_backend(net, cfg, config)
    if cfg.distributed is False:
        return _train(net, batches, cfg, None, callbacks)
    from loom.nn.data_parallel import start_data_parallel

    parallel = start_data_parallel(net, cfg.distributed, "training config.distributed")
    with parallel.guard():
        return _train(net, batches, cfg, parallel, callbacks)


def _train(
    net: Network,
    batches: Iterable[Any],
    cfg: TrainingConfig,
    parallel: DataParallel | None,
    user_callbacks: Sequence[Callback],
) -> TrainingResult:
    data = _prepare_batches(net, batches)
    result = TrainingResult()
    if cfg.epochs == 0:
        return result
    samples_per_epoch = sum(b for _, _, b in data)
    main = parallel is None or parallel.is_main  # the process that prints
    reporter = LoomVerboseReporter(sys.stdout, cfg.epochs) if cfg.verbose and main else None
    if reporter is not None:
        reporter.configuration(
            learning_rate=cfg.learning_rate,
            batches=len(data),
            samples=samples_per_epoch,
            on_gpu=net.backend == "cupy",
            loss_type=cfg.loss_type,
        )
    seed = cfg.seed
    if parallel is not None:  # every TrainingBatch cut to this rank's samples; one shuffling seed
        data = parallel.shard_training_batches(data)
        if cfg.shuffle:
            seed = parallel.shared_seed(seed)
    batches_in_order = [(x, t, b, None) for x, t, b in data]
    order_rng = np.random.default_rng(seed) if cfg.shuffle else None

    def epoch_batches(epoch: int) -> Iterable[tuple[Any, Any, int, Any]]:
        items = batches_in_order
        if order_rng is not None:
            items = [batches_in_order[i] for i in order_rng.permutation(len(batches_in_order))]
        return items if parallel is None else parallel.batches(items)

    show_bar = cfg.progress_bar if cfg.progress_bar is not None else cfg.verbose and sys.stderr.isatty()
    progress = ProgressBar(cfg.epochs) if show_bar and main else None
    optimizer, schedule = cfg.make_optimizer(), cfg.make_schedule()
    start = time.perf_counter()
    with net.training_parameters() as flat:
        if parallel is not None:
            parallel.attach(flat)  # rank 0's weights on every rank
        stepper = Stepper(
            net,
            flat,
            LossFunction(cfg.loss_type, "loom"),
            optimizer,
            gradient_clip=cfg.gradient_clip,
            fused=fused_switch(cfg.fused),
            guard=cfg.raise_on_divergence,
            parallel=parallel,
        )
        if parallel is not None:
            parallel.wrap(stepper)
        epoch_end = _LoomEpochEnd(cfg, result, reporter, stepper)
        epoch_end.samples = samples_per_epoch
        callbacks: list[Callback] = [epoch_end.clock, epoch_end] if reporter is not None else [epoch_end]
        if main and (cfg.print_every_batch > 0 or (reporter is not None and cfg.verbose)):
            callbacks.append(
                _LoomBatchLines(
                    reporter or LoomVerboseReporter(sys.stdout, cfg.epochs), len(data), max(cfg.print_every_batch, 1)
                )
            )
        if progress is not None:
            callbacks.append(progress)
        callbacks += [c for c in user_callbacks if main or not c.main_process_only]

        def summarize(stats: EpochStats) -> dict[str, Any]:
            return {"loss": stats.loss_sum / stats.batches, "learning_rate": stats.learning_rate}

        try:
            run_epochs(
                net,
                stepper,
                epochs=cfg.epochs,
                epoch_batches=epoch_batches,
                learning_rate=schedule,
                callbacks=callbacks,
                summarize=summarize,
            )
        finally:
            stepper.export_gradients()
            if progress is not None:
                progress.close()
    net.array_backend.synchronize()
    result.total_time = time.perf_counter() - start
    result.final_loss = result.loss_history[-1]
    result.avg_throughput = samples_per_epoch * len(result.loss_history) / max(result.total_time, 1e-12)
    if reporter is not None:
        reporter.complete(result)
    return result
