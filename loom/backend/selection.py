"""Which backend is current: names, lazy CuPy import, the ``ContextVar`` and its switches; an array's backend."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from loom.backend.array_backend import Backend
from loom.errors import BackendUnavailableError, ConfigError

__all__ = [
    "BACKEND_NAMES",
    "backend_of",
    "cupy_available",
    "current_backend",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "use_backend",
]

BACKEND_NAMES = ("numpy", "cupy")

_GPU_INSTALL_HINT = (
    "install CuPy for your CUDA version: pip install 'loom-nn[gpu]' (CUDA 12) "
    "or pip install 'loom-nn[gpu-cuda13]' (CUDA 13)"
)


@functools.cache
def _numpy_backend() -> Backend:
    import array_api_compat.numpy as xp_numpy

    return Backend("numpy", np, xp_numpy, np.float32)


@functools.cache
def _cupy_backend() -> Backend:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising on import
        raise BackendUnavailableError(
            f"the 'cupy' backend needs CuPy, which could not be imported ({exc}); " + _GPU_INSTALL_HINT
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailableError(
            f"CuPy is installed but no CUDA device is usable ({exc}); check the NVIDIA "
            "driver and CUDA_VISIBLE_DEVICES, or " + _GPU_INSTALL_HINT
        ) from exc
    if count < 1:
        raise BackendUnavailableError(
            "CuPy is installed but no CUDA device was found (getDeviceCount() == 0); "
            "run on a machine with an NVIDIA GPU or use the 'numpy' backend"
        )
    import array_api_compat.cupy as xp_cupy

    return Backend("cupy", cupy, xp_cupy, cupy.float32)


def backend_of(array: Any) -> Backend:
    """The backend an array belongs to (NumPy for anything that is not a CuPy array)."""
    module = type(array).__module__
    if module.startswith("cupy"):
        return _cupy_backend()
    return _numpy_backend()


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _cupy_backend()
    except BackendUnavailableError:
        return False
    return True


def resolve_backend(spec: str | Backend | None = None) -> Backend:
    """Turn a backend name, a :class:`Backend` or ``None`` (= current) into a Backend."""
    if spec is None:
        return current_backend()
    if isinstance(spec, Backend):
        return spec
    name = str(spec).strip().lower()
    if name in ("numpy", "cpu", "np"):
        return _numpy_backend()
    if name in ("cupy", "gpu", "cuda", "cp"):
        return _cupy_backend()
    raise ConfigError(f"backend: unknown backend {spec!r}; expected one of {list(BACKEND_NAMES)}")


def _initial_backend_name() -> str:
    return os.environ.get("LOOM_BACKEND", "numpy") or "numpy"


_current: contextvars.ContextVar[str] = contextvars.ContextVar("loom_backend")


def current_backend() -> Backend:
    """The :class:`Backend` that new networks and models use by default."""
    return resolve_backend(_current.get(None) or _initial_backend_name())


def get_backend() -> str:
    """Name of the current default backend: ``"numpy"`` or ``"cupy"``."""
    return current_backend().name


def set_backend(name: str | Backend) -> None:
    """Set the default backend for new networks (``"numpy"`` or ``"cupy"``).

    Raises :class:`~loom.errors.BackendUnavailableError` when CuPy or a CUDA
    device is missing.
    """
    _current.set(resolve_backend(name).name)


@contextlib.contextmanager
def use_backend(name: str | Backend) -> Iterator[Backend]:
    """Context manager: use ``name`` as the default backend inside the block.

    Examples
    --------
    >>> with use_backend("numpy") as be:
    ...     be.name
    'numpy'
    """
    backend = resolve_backend(name)
    token = _current.set(backend.name)
    try:
        yield backend
    finally:
        _current.reset(token)
