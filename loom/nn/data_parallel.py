"""Data-parallel training in loom's engine: ``fit(..., distributed=True)`` and ``train`` with ``"Distributed": true``.

Every rank (process) makes the same training call on the same data. :class:`DataParallel`
wires the run's :class:`~loom.backend.distributed.Communicator` into the engine
(:mod:`loom.nn.training_engine`), so that N ranks take the steps of one process:

* **start** — the ranks agree on the parameter count and the data size, and rank 0's flat
  parameter buffer is broadcast (optimizer state starts equal on every rank);
* **batches** — every global batch is split into contiguous shards, one per rank
  (:func:`~loom.backend.distributed.shard_range`: sizes differ by at most one). ``fit``: global
  batches of ``world_size × batch_size`` samples in ``fit``'s own shuffled order, which every
  rank draws from one seed (rank 0's when none is given), so it equals ``fit`` in one process
  with the larger batch; ``train``: each TrainingBatch stays one global step, split by samples;
* **steps** — the reduction of the batch loss starts when it is computed and is waited for
  after the backward pass (one point where the ranks wait for each other, not two); the
  divergence check reads the reduced loss. The flat gradient is reduced before the user's
  gradient hooks, clipping and the optimizer update (:meth:`DataParallel.reduce_gradient`).
  Both are weighted by the shard sizes, so uneven shards are exact. A rank whose shard is
  empty contributes zeros (:meth:`~loom.nn.training_engine.Stepper.skip_step`). With NCCL (whose
  collectives progress in the background) on the fused path, each layer's gradient is reduced
  as soon as its backward pass is done, overlapping the rest of the backward pass;
* **epochs** — accuracy counts and validation sums are reduced in one call: every rank logs
  the same numbers, so callbacks (``EarlyStopping`` ...) decide alike everywhere; callbacks
  with ``main_process_only`` (``ModelCheckpoint``, progress bars, epoch lines) and LOOM's
  verbose output run on rank 0 only;
* **failures** — an exception on one rank is reported to the others, which raise
  :class:`~loom.errors.RankFailedError` with its message instead of waiting.
  :class:`~loom.errors.TrainingDivergedError` is no failure of one rank: every rank raises it
  at the same batch (the loss it checks is the reduced one), and the job can go on.

This module is imported only when distributed training is asked for.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from loom.backend.distributed import Communicator, Shard, reduce_gradient, shard_range
from loom.errors import ConfigError, ShapeError, TrainingDivergedError

if TYPE_CHECKING:
    from loom.backend.distributed.base import PendingReduce
    from loom.nn.flat_parameters import FlatParameters
    from loom.nn.network import Network
    from loom.nn.training_engine import Callback, Stepper

__all__ = ["DataParallel", "start_data_parallel"]


def start_data_parallel(net: Network, distributed: Any, name: str) -> DataParallel:
    """The data-parallel run of ``net`` for a ``distributed`` switch that is not ``False``.

    Parameters
    ----------
    net : Network
    distributed : True or Communicator
        ``True``: join the job this process was started in (:func:`loom.distributed.init` for
        the network's backend); a :class:`~loom.backend.distributed.Communicator`: use it.
    name : str
        The switch's name, for messages (``"fit.distributed"``).
    """
    if distributed is True:
        import loom.distributed as dist

        comm = dist.init(net.backend)
    elif isinstance(distributed, Communicator):
        comm = distributed
    else:
        raise ConfigError(f"{name}: expected True, False or a loom.distributed Communicator, got {distributed!r}")
    return DataParallel(comm, net, name)


class DataParallel:
    """The data-parallel side of one training run (see the module docstring); a ``ParallelStep``.

    Parameters
    ----------
    comm : Communicator
        The job's communicator; it must take the network's arrays (library and GPU).
    net : Network
        Moved to this rank's GPU when its arrays live on another one (CuPy).
    name : str
        The switch's name, for messages.

    Attributes
    ----------
    rank, world_size : int
    is_main : bool
        Rank 0: the rank that writes files and prints.
    overlap : bool
        Reduce each stage's gradient during the backward pass (fused path), because the
        communicator's collectives progress in the background (NCCL).
    shard : Shard
        This rank's part of the global batch being trained on.
    """

    def __init__(self, comm: Communicator, net: Network, name: str = "distributed") -> None:
        _place_on_device(comm, net, name)
        self.comm = comm
        self.rank, self.world_size = comm.rank, comm.world_size
        self.is_main = comm.rank == 0
        self.overlap = comm.progresses_in_background
        self.shard: Shard = shard_range(0, comm.rank, comm.world_size)
        self._grads: Any = None
        self._ranges: list[tuple[tuple[int, int], ...]] = []
        self._pending: list[PendingReduce] = []  # stage reductions started in this step
        self._loss: Any = None  # [1] float64 of the network's array library: the loss being reduced
        self._loss_pending: PendingReduce | None = None

    # ------------------------------------------------------------------ setup
    @contextlib.contextmanager
    def guard(self) -> Iterator[DataParallel]:
        """Context manager around a training call: an exception inside is reported to every rank, then re-raised.

        ``TrainingDivergedError`` is not reported (every rank raises it at the same batch).
        """
        try:
            yield self
        except TrainingDivergedError:
            raise
        except SystemExit as exc:
            if exc.code not in (None, 0):
                self.comm.report_failure(f"SystemExit: exit code {exc.code}")
            raise
        except BaseException as exc:
            self.comm.report_failure(exc)
            raise

    def agree(self, what: str, value: int) -> None:
        """``ConfigError`` on every rank unless every rank passes the same ``value`` (data sizes)."""
        self.comm.agree(what, value)

    def shared_seed(self, seed: int | None) -> int | None:
        """The shuffling seed every rank uses: ``seed`` (checked equal on all ranks), else one drawn by rank 0."""
        if seed is None:
            drawn = secrets.randbits(52) if self.is_main else 0  # exact in the float64 of the reduction
            return int(self.comm.all_reduce_scalars([float(drawn)], "sum")[0])
        if isinstance(seed, int) and not isinstance(seed, bool):
            self.comm.agree("seed", seed)
        return seed

    def attach(self, flat: FlatParameters) -> None:
        """Check the parameter count on every rank and give every rank rank 0's parameters."""
        self.comm.agree("parameter count", flat.size)
        self.comm.broadcast(flat.params, root=0)
        self._grads, self._ranges = flat.grads, flat.stage_ranges
        self._loss = flat.raw.zeros(1, dtype="float64")

    def wrap(self, stepper: Stepper) -> None:
        """Make ``stepper.step`` train on this rank's shard: ``step(x, t, global_batch_size, lr)``.

        ``x`` and ``t`` hold the shard's samples (:attr:`shard`, set by :meth:`next_batch`); an
        empty shard takes part in the reductions with a zero gradient.
        """
        inner, skip = stepper.step, stepper.skip_step

        def step(x: Any, target: Any, batch: int, lr: float) -> float:
            size = self.shard.size
            return inner(x, target, size, lr) if size else skip(lr)

        stepper.step = step  # type: ignore[method-assign]

    # ------------------------------------------------------------------ batches
    def next_batch(self, global_size: int) -> Shard:
        """This rank's shard of the next global batch of ``global_size`` samples (becomes :attr:`shard`)."""
        self.shard = shard = shard_range(global_size, self.rank, self.world_size)
        return shard

    def rows(self, count: int) -> tuple[int, int]:
        """``[start, stop)`` of this rank's contiguous part of ``count`` samples (validation data)."""
        part = shard_range(count, self.rank, self.world_size)
        return part.start, part.stop

    def batches(self, items: Iterable[tuple[Any, Any, int, Any]]) -> Iterator[tuple[Any, Any, int, Any]]:
        """Yield ``(x_shard, t_shard, global_size, extra)`` items, setting :attr:`shard` before each."""
        for item in items:
            self.next_batch(item[2])
            yield item

    def shard_training_batches(self, data: Sequence[tuple[Any, Any, int]]) -> list[tuple[Any, Any, int]]:
        """LOOM's TrainingBatches ``(x, target, samples)`` cut to this rank's samples (the sizes stay global)."""
        self.agree("training batches", len(data))
        self.agree("samples per epoch", sum(b for _, _, b in data))
        out = []
        for i, (x, target, samples) in enumerate(data):
            shard = shard_range(samples, self.rank, self.world_size)
            out.append((_take(x, shard, i, "Input"), _take(target, shard, i, "Target"), samples))
        return out

    # ------------------------------------------------------------------ steps (ParallelStep)
    def start_loss(self, loss: float) -> None:
        """Start reducing this rank's mean loss over its shard into the global batch's (weighted by shard sizes)."""
        shard = self.shard
        self._loss.fill(loss * shard.weight if shard.size else 0.0)
        self._loss_pending = self.comm.start_all_reduce(self._loss, "sum")

    def global_loss(self) -> float:
        """The global batch's loss (identical on every rank): waits for :meth:`start_loss`."""
        pending, self._loss_pending = self._loss_pending, None
        if pending is not None:
            pending.wait()
        return float(self._loss[0])

    def abandon(self) -> None:
        """A halted step: wait for the stage reductions already started (every rank started them)."""
        pending, self._pending = self._pending, []
        for handle in pending:
            handle.wait()

    def stage_done(self, stage: int) -> None:
        """Start reducing the gradient of top-level layer ``stage`` (its backward pass is done)."""
        shard, grads, comm = self.shard, self._grads, self.comm
        for start, stop in self._ranges[stage]:
            part = grads[start:stop]
            if shard.even:
                self._pending.append(comm.start_all_reduce(part, "mean"))
                continue
            if shard.size:  # an empty shard's gradient is zero already (Stepper.skip_step)
                part *= shard.weight
            self._pending.append(comm.start_all_reduce(part, "sum"))

    def reduce_gradient(self, grads: Any) -> None:
        """The first gradient hook: the global batch's gradient on every rank, before clipping."""
        pending = self._pending
        if pending:
            self._pending = []
            for handle in pending:
                handle.wait()
        else:
            reduce_gradient(self.comm, grads, self.shard)

    # ------------------------------------------------------------------ epochs and output
    def sum(self, values: Sequence[float]) -> tuple[float, ...]:
        """Each value summed over the ranks (one collective)."""
        return self.comm.all_reduce_scalars(values, "sum") if values else ()

    def callbacks(self, callbacks: Iterable[Callback]) -> list[Callback]:
        """``callbacks`` that run on this rank (``main_process_only`` ones on rank 0 only)."""
        return [cb for cb in callbacks if self.is_main or not getattr(cb, "main_process_only", False)]

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, world_size={self.world_size}, kind={self.comm.kind!r})"


def _take(flat: Any, shard: Shard, index: int, what: str) -> Any:
    """``shard``'s samples of a LOOM flat vector holding ``shard.global_size`` samples."""
    length = int(flat.shape[0])
    if length % shard.global_size:
        raise ShapeError(
            f"batches[{index}].{what}: {length} values do not split into {shard.global_size} samples "
            "(distributed training splits every TrainingBatch by samples)"
        )
    return shard.take_flat(flat, length // shard.global_size)


def _place_on_device(comm: Communicator, net: Network, name: str) -> None:
    """Check that ``comm`` reduces ``net``'s arrays; move them to this rank's GPU when they live on another one.

    ``init`` pins a CuPy process to its GPU; a network built before lives on GPU 0 and is copied
    over (its random generator for stochastic layers starts afresh).
    """
    first = next((p for _, p in net.named_parameters()), None)
    if first is None or comm.accepts(first):
        return
    if comm.array_backend == net.backend:  # the right library on another GPU
        net.to_backend(net.backend)  # copies every array to the current device: this rank's GPU
        first = next(p for _, p in net.named_parameters())
        if comm.accepts(first):
            return
        raise ConfigError(
            f"{name}: the network's arrays are not on this rank's GPU; call loom.distributed.init() "
            "before building the network"
        )
    raise ConfigError(
        f"{name}: the communicator reduces {comm.array_backend} arrays but the network lives on "
        f"{net.backend}; call loom.distributed.init({net.backend!r}) or move the network"
    )
