"""Validation of run-time data: forward inputs, training batches and their targets.

One job: turn hostile data into a :class:`~loom.errors.ShapeError` that names the batch,
the sample and the position, before any arithmetic runs on it.

* :func:`check_finite` - a NaN or infinite value in an input or a target: one element-wise
  test and one reduction per forward pass (``forward(x, check_finite=False)`` skips it).
* :func:`training_items` - ``train(None)``, ``train(5)``, ``train("abc")``, a single dict:
  the batches argument must be an iterable of batches.
* :func:`prepare_batch` - one batch (a ``TrainingBatch``, a ``{"Input", "Target"}`` dict or
  an ``(input, target)`` pair) as flat backend arrays, ragged or non-numeric data,
  non-finite values and empty arrays rejected, naming ``batches[i].input`` / ``.target``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from loom.backend import to_numpy
from loom.errors import ShapeError

__all__ = ["all_finite", "check_finite", "prepare_batch", "training_items"]


def check_finite(x: Any, batch: int, what: str, raw: Any) -> None:
    """Raise ``ShapeError`` naming the sample and position of the first NaN / infinite value.

    Parameters
    ----------
    x : array, shape [n]
        Flat data of ``batch`` samples back to back (LOOM's layout).
    batch : int
        Samples in ``x`` (positions are counted within a sample).
    what : str
        Name of the data in the message (``"input"``, ``"batches[3].target"``).
    raw : module
        ``numpy`` or ``cupy`` (the backend's raw module): one element-wise test, one reduction.
    """
    if bool(raw.isfinite(x).all()):
        return
    values = to_numpy(x).reshape(-1)
    index = int(np.isfinite(values).argmin())
    per_sample = values.shape[0] // batch if batch > 0 and values.shape[0] % batch == 0 else values.shape[0]
    sample, position = divmod(index, per_sample)
    raise ShapeError(
        f"{what}: expected finite numbers, got {values[index]} at sample {sample}, position {position} "
        f"(flat index {index})"
    )


def training_items(batches: Any) -> list[Any]:
    """The batches argument of ``train`` as a list; ``ShapeError`` unless it is an iterable of batches."""
    if isinstance(batches, str | bytes | bytearray | Mapping) or not isinstance(batches, Iterable):
        raise ShapeError(
            "batches: expected a list of (input, target) pairs, {'Input': ..., 'Target': ...} dicts or "
            f"TrainingBatch objects, got {type(batches).__name__}"
        )
    return list(batches)


def prepare_batch(net: Any, batch: Any, index: int, *, finite: bool = True) -> tuple[Any, Any, int]:
    """One coerced batch as ``(flat input, flat target, batch size)`` on ``net``'s backend, validated.

    ``batch`` has ``.input`` and ``.target`` (a :class:`~loom.nn.training.TrainingBatch`).
    ``finite=False`` leaves the NaN / Inf check to the caller (:func:`all_finite` over many batches).
    """
    where = f"batches[{index}]"
    x, batch_size, _ = net.prepare_input(batch.input, f"{where}.input", check_finite=finite)
    target, target_batch, target_2d = net.prepare_input(batch.target, f"{where}.target", check_finite=finite)
    if target_2d and target_batch != batch_size:
        raise ShapeError(f"{where}.target: expected {batch_size} rows (one per input sample), got {target_batch}")
    if target.shape[0] == 0:
        raise ShapeError(f"{where}.target: expected a non-empty target, got 0 values")
    return x, target, batch_size


def all_finite(arrays: list[Any], raw: Any) -> bool:
    """True when no array holds a NaN or an infinite value: one reduction each, one host read for all.

    On a GPU this replaces a device round trip per array (:func:`check_finite`) by one for the
    whole list; on a failure the caller runs :func:`check_finite` per array for the message.
    """
    if not arrays:
        return True
    flags = [raw.isfinite(a).all() for a in arrays]
    return bool(to_numpy(raw.stack(flags)).all())
