"""Deterministic sharding of global batches, and the weighted reductions that make it exact.

Data parallelism splits every *global* batch of ``B`` samples into contiguous shards,
one per rank (:func:`shard_range`: sizes differ by at most one, the first ``B % N``
ranks take the extra sample). The order of samples comes from :func:`epoch_permutation`,
which depends on ``(seed, epoch)`` only — never on the rank or the world size — so
``N`` ranks with per-rank batch ``b`` walk through exactly the global batches of one
process with batch ``N·b`` (:func:`global_batch_indices`, :func:`rank_batch_indices`).

**Why the reduction is weighted.** A loss that is a mean over the batch (Keras/PyTorch
``fit``, and LOOM's ``train``: MSE and cross-entropy divide by ``len(y)`` = samples ×
outputs, so the gradient of a TrainingBatch is a mean over its samples) gives rank ``r``
the gradient ``g_r`` of the mean over its ``b_r`` samples. The gradient of the global
batch is then ``g = Σ_r (b_r / B) · g_r`` — the plain mean of the ``g_r`` only when all
shards are equal. :func:`reduce_gradient` and :func:`reduce_loss` apply these weights
(a rank whose shard is empty contributes zeros), so any batch — the uneven last one
too — gives the single-process update up to float rounding. Clip the gradient *after*
the reduction (the global norm is the norm of ``g``) and every rank takes the same
step on bit-identical weights.

**LOOM's ``train``.** A ``TrainingBatch`` holds ``batch_size`` samples back to back in
one flat vector and is one SGD step. Distributed, each TrainingBatch stays one global
step: rank ``r`` trains on :meth:`Shard.take_flat` of its input and target (its
``shard_range(batch_size, r, N)`` samples), and the weighted reduction gives exactly the
step of the whole TrainingBatch, so LOOM's loss history and weights are those of one
process (batches of one sample leave the other ranks idle: group samples into larger
TrainingBatches to use them). The equivalence needs a forward pass that treats samples
independently: layers that mix the samples of a batch, or recurrent state carried from
batch to batch, see other samples when the batch is split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loom.errors import ConfigError, ShapeError

__all__ = [
    "Shard",
    "epoch_permutation",
    "global_batch_indices",
    "rank_batch_indices",
    "reduce_gradient",
    "reduce_loss",
    "shard_batch",
    "shard_range",
]


def _count(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _rank(rank: Any, world_size: Any) -> tuple[int, int]:
    world = _count(world_size, "world_size", 1)
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or not 0 <= rank < world:
        raise ConfigError(f"rank: expected an integer in [0, {world}), got {rank!r}")
    return int(rank), world


@dataclass(frozen=True)
class Shard:
    """One rank's contiguous part ``[start, stop)`` of a global batch of ``global_size`` samples.

    Examples
    --------
    >>> s = shard_range(5, 1, 2)
    >>> s.start, s.stop, s.size, s.weight
    (3, 5, 2, 0.4)
    """

    rank: int
    world_size: int
    start: int
    stop: int
    global_size: int

    @property
    def size(self) -> int:
        """Samples of this shard (0 when the global batch has fewer samples than ranks)."""
        return self.stop - self.start

    @property
    def weight(self) -> float:
        """``size / global_size``: this rank's share of a mean over the global batch."""
        return self.size / self.global_size if self.global_size else 0.0

    @property
    def even(self) -> bool:
        """True when every rank's shard of this global batch has the same size."""
        return self.global_size % self.world_size == 0

    def take(self, data: Any, axis: int = 0) -> Any:
        """This shard's samples of ``data`` (samples along ``axis``); a view for arrays."""
        if axis == 0:
            return data[self.start : self.stop]
        index = [slice(None)] * data.ndim
        index[axis] = slice(self.start, self.stop)
        return data[tuple(index)]

    def take_flat(self, flat: Any, sample_size: int) -> Any:
        """This shard of a LOOM flat vector holding ``global_size`` samples of ``sample_size`` values."""
        sample_size = _count(sample_size, "sample_size", 1)
        length = len(flat) if not hasattr(flat, "shape") else int(flat.shape[0])
        if length != self.global_size * sample_size:
            raise ShapeError(
                f"flat batch: expected {self.global_size} samples x {sample_size} values = "
                f"{self.global_size * sample_size}, got {length}"
            )
        return flat[self.start * sample_size : self.stop * sample_size]


def shard_range(global_size: int, rank: int, world_size: int) -> Shard:
    """The :class:`Shard` of ``rank`` in a global batch of ``global_size`` samples split ``world_size`` ways.

    Parameters
    ----------
    global_size : int
        Samples in the global batch (>= 0).
    rank, world_size : int
        This process and the number of processes.

    Returns
    -------
    Shard
        Contiguous; sizes differ by at most one (the first ``global_size % world_size``
        ranks hold one more sample), like ``numpy.array_split``.

    Examples
    --------
    >>> [shard_range(7, r, 3).size for r in range(3)]
    [3, 2, 2]
    """
    total = _count(global_size, "global_size")
    rank, world = _rank(rank, world_size)
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return Shard(rank, world, start, start + base + (1 if rank < extra else 0), total)


def shard_batch(batch: Any, rank: int, world_size: int, *, axis: int = 0) -> tuple[Any, Shard]:
    """``rank``'s shard of ``batch`` (samples along ``axis``) and its :class:`Shard`.

    Examples
    --------
    >>> part, s = shard_batch(np.arange(10).reshape(5, 2), 0, 2)
    >>> part.tolist(), s.weight
    ([[0, 1], [2, 3], [4, 5]], 0.6)
    """
    if not hasattr(batch, "shape") or len(batch.shape) == 0:
        raise ShapeError("batch: expected an array with a sample axis")
    shard = shard_range(int(batch.shape[axis]), rank, world_size)
    return shard.take(batch, axis), shard


def epoch_permutation(num_samples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order of the samples in ``epoch``: the same on every rank, for any world size.

    A permutation of ``range(num_samples)`` from ``numpy.random.default_rng([seed, epoch])``.

    Examples
    --------
    >>> bool((epoch_permutation(5, seed=1, epoch=0) == epoch_permutation(5, seed=1, epoch=0)).all())
    True
    """
    num = _count(num_samples, "num_samples")
    seed = _count(seed, "seed")
    epoch = _count(epoch, "epoch")
    return np.random.default_rng([seed, epoch]).permutation(num)


def global_batch_indices(
    num_samples: int,
    global_batch_size: int,
    *,
    seed: int | None = None,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Sample indices of every global batch of an epoch (the last one may be smaller).

    With ``shuffle`` the order is :func:`epoch_permutation` (``seed`` required), else
    ``0 .. num_samples - 1``. ``drop_last`` drops a smaller last batch.
    """
    num = _count(num_samples, "num_samples")
    size = _count(global_batch_size, "global_batch_size", 1)
    if shuffle:
        if seed is None:
            raise ConfigError("seed: shuffled sharding needs a seed shared by every rank")
        order = epoch_permutation(num, seed=seed, epoch=epoch)
    else:
        order = np.arange(num)
    batches = [order[i : i + size] for i in range(0, num, size)]
    if drop_last and batches and len(batches[-1]) < size:
        batches.pop()
    return batches


def rank_batch_indices(
    num_samples: int,
    per_rank_batch: int,
    rank: int,
    world_size: int,
    *,
    seed: int | None = None,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[tuple[np.ndarray, Shard]]:
    """This rank's sample indices and :class:`Shard` for every global batch of ``world_size · per_rank_batch``.

    Concatenating the shards of all ranks, batch by batch, gives
    ``global_batch_indices(num_samples, world_size * per_rank_batch, ...)``: the batches
    of one process with the larger batch.

    Examples
    --------
    >>> [(idx.tolist(), s.weight) for idx, s in rank_batch_indices(5, 2, 1, 2, shuffle=False)]
    [([2, 3], 0.5), ([], 0.0)]
    """
    rank, world = _rank(rank, world_size)
    size = _count(per_rank_batch, "per_rank_batch", 1) * world
    out = []
    for batch in global_batch_indices(num_samples, size, seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last):
        shard = shard_range(len(batch), rank, world)
        out.append((shard.take(batch), shard))
    return out


def reduce_gradient(comm: Any, gradient: Any, shard: Shard) -> Any:
    """Turn this rank's mean-over-its-shard ``gradient`` into the global batch's mean gradient, in place.

    Equal shards: ``all_reduce_mean``. Otherwise each rank scales by ``shard.weight``
    (an empty shard contributes zeros, whatever ``gradient`` held) and the ranks sum.

    Parameters
    ----------
    comm : Communicator
    gradient : array
        The flat gradient buffer (the communicator's array type), ``[P]``.
    shard : Shard
        This rank's shard of the global batch the gradient was computed on.

    Returns
    -------
    array
        ``gradient``, now identical on every rank.
    """
    if shard.even:
        return comm.all_reduce_mean(gradient)
    if shard.size == 0:
        gradient[...] = 0
    else:
        gradient *= shard.weight
    return comm.all_reduce_sum(gradient)


def reduce_loss(comm: Any, loss: float, shard: Shard) -> float:
    """The global batch's mean loss from this rank's mean ``loss`` over its shard (same on every rank)."""
    return comm.all_reduce_scalars([float(loss) * shard.weight if shard.size else 0.0], "sum")[0]
