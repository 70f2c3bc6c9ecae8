"""Type aliases of loom's public signatures.

They make the annotations of :class:`~loom.nn.network.Network` concrete, so that
introspection (``get_methods_json``, ``get_method_signature``) and the JSON bridge
of :mod:`loom.compat` know what every parameter takes:

* :data:`Array` – a backend array (``numpy.ndarray``; on the CuPy backend a
  ``cupy.ndarray``, which has the same interface);
* :data:`ArrayLike` – what ``forward``, ``backward`` and ``train`` accept: a flat
  list of numbers, a list of rows, or an array;
* :data:`TrainingBatchLike` – one training sample in any accepted form;
* :data:`TrainingConfigDict` – a training config given as a dict (LOOM or snake_case keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import numpy as np

from loom.nn.training import TrainingBatch, TrainingConfig

__all__ = [
    "Array",
    "ArrayLike",
    "TrainingBatchLike",
    "TrainingConfigDict",
    "TrainingConfigLike",
]

#: A backend array (``numpy.ndarray``, or ``cupy.ndarray`` on the CuPy backend).
Array: TypeAlias = np.ndarray

#: Numbers as a flat list (``batch_size * features`` values), a list of rows, or an array.
ArrayLike: TypeAlias = Sequence[float] | Sequence[Sequence[float]] | np.ndarray

#: A training sample: a :class:`TrainingBatch`, ``{"Input": [...], "Target": [...]}`` or ``(input, target)``.
TrainingBatchLike: TypeAlias = TrainingBatch | Mapping[str, ArrayLike] | tuple[ArrayLike, ArrayLike]

#: A training config as a dict: LOOM keys (``"Epochs"``, ``"LearningRate"``, ...) or snake_case.
TrainingConfigDict: TypeAlias = Mapping[
    str, int | float | bool | str | Sequence[float] | Sequence[Sequence[float]] | None
]

#: Everything ``train`` accepts as its config.
TrainingConfigLike: TypeAlias = TrainingConfig | TrainingConfigDict
