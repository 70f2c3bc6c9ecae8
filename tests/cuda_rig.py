"""Where the CUDA-kernel tests get their kernels: the GPU, or the CPU emulation on request.

With ``--backend cupy`` the tests run the real kernels on CuPy buffers. Without a GPU they are
skipped, unless ``LOOM_CUDA_EMULATOR=1`` asks for ``tools/cuda_emulator``: g++ builds the same
kernel sources for the CPU and they run over NumPy buffers (slow; for checking kernel logic).
Used by :mod:`tests.gpu_training_utils` (training kernels) and :mod:`tests.llm.gpu_kernel_utils`
(decode/prefill kernels).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import pytest

import loom
from loom.backend import Backend, resolve_backend

EMULATOR_DIR = Path(__file__).resolve().parents[1] / "tools" / "cuda_emulator"


def emulator() -> ModuleType:
    """``tools/cuda_emulator/emulator.py`` (``emulated_llm_kernels``, ``emulated_train_kernels``)."""
    if str(EMULATOR_DIR) not in sys.path:
        sys.path.insert(0, str(EMULATOR_DIR))
    import emulator as module

    return module


@dataclass
class KernelRig:
    """Kernels plus the backend their buffers live in."""

    kernels: Any
    backend: Backend
    emulated: bool

    @property
    def raw(self) -> Any:
        return self.backend.raw

    def put(self, array: np.ndarray) -> Any:
        return self.raw.array(np.ascontiguousarray(array), copy=True)  # never aliases the host array

    def get(self, array: Any) -> np.ndarray:
        return loom.to_numpy(array)


RigT = TypeVar("RigT", bound=KernelRig)


def make_rig(
    backend_name: str,
    rig: type[RigT],
    on_gpu: Callable[[Backend], Any],
    emulated: Callable[[], Any],
    what: str,
) -> RigT:
    """``rig(kernels, backend, emulated)`` for this test run, or a skip saying what is missing.

    ``on_gpu(cupy_backend)`` builds the real kernels, ``emulated()`` the CPU-emulated ones;
    ``what`` names them in the skip message.
    """
    if backend_name == "cupy":
        backend = resolve_backend("cupy")
        return rig(on_gpu(backend), backend, emulated=False)
    if os.environ.get("LOOM_CUDA_EMULATOR") == "1":
        if shutil.which("g++") is None:
            pytest.skip("LOOM_CUDA_EMULATOR=1 needs g++")
        return rig(emulated(), resolve_backend("numpy"), emulated=True)
    pytest.skip(f"{what}: run with --backend cupy on a GPU (or LOOM_CUDA_EMULATOR=1 on the CPU)")
