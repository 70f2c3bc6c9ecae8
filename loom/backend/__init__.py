"""Array backends: the only place in loom that knows NumPy from CuPy.

A :class:`Backend` bundles everything layer math needs from an array library:

* ``xp``  – the Python array-API namespace (via ``array_api_compat``);
* ``raw`` – the underlying module (``numpy`` / ``cupy``) for measured fast paths;
* an explicitly seeded random generator, ``asarray``, ``to_numpy``,
  ``synchronize`` and ``scatter_add`` (the array API has no scatter-add with
  repeated indices).

The current backend lives in a :class:`contextvars.ContextVar`; switch it with
:func:`set_backend` or temporarily with :func:`use_backend`. The initial value
comes from the ``LOOM_BACKEND`` environment variable (default ``"numpy"``).
``cupy`` is imported lazily here and nowhere else in loom.

One module per concern:

* :mod:`~loom.backend.array_backend` – the :class:`Backend` object;
* :mod:`~loom.backend.selection` – names, the current backend, CuPy discovery;
* :mod:`~loom.backend.graphs` – CUDA graphs recorded from Python steps;
* :mod:`~loom.backend.constants` – lookup tables copied to the device once;
* :mod:`~loom.backend.cuda_llm` – fused CUDA kernels for transformer inference
  (source in ``cuda/llm_kernels.cu``); callers fall back to the array-API ops
  of :mod:`loom.ops.transformer` where these do not apply;
* :mod:`~loom.backend.cuda_train` – fused CUDA kernels for training (bias +
  activation, loss, clipping, optimizer updates over the flat buffer; source in
  ``cuda/train_device.cuh`` and ``cuda/train_kernels.cu``), and the compiler of
  the generated whole-epoch kernels of tiny networks (:mod:`loom.nn.fused_cuda`).
"""

from __future__ import annotations

from loom.backend.array_backend import Backend, to_numpy
from loom.backend.constants import device_constant
from loom.backend.graphs import DeviceGraph
from loom.backend.selection import (
    _GPU_INSTALL_HINT,
    BACKEND_NAMES,
    _cupy_backend,
    _current,
    _initial_backend_name,
    _numpy_backend,
    backend_of,
    cupy_available,
    current_backend,
    get_backend,
    resolve_backend,
    set_backend,
    use_backend,
)

DEFAULT_DTYPE = "float32"

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "DeviceGraph",
    "backend_of",
    "cupy_available",
    "current_backend",
    "device_constant",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "to_numpy",
    "use_backend",
]

# private names other modules and tests reach for (kept importable from here)
_PRIVATE = (_GPU_INSTALL_HINT, _cupy_backend, _current, _initial_backend_name, _numpy_backend)
