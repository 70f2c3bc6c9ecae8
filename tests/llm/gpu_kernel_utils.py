"""Where the fused-kernel tests get their kernels: the GPU, or the CPU emulation on request.

With ``--backend cupy`` the tests run the real kernels. Without a GPU they are
skipped, unless ``LOOM_CUDA_EMULATOR=1`` asks for ``tools/cuda_emulator``
(g++ builds the kernels for the CPU: slow, for checking kernel logic only).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import loom
from loom.backend import Backend, resolve_backend
from loom.backend.cuda_llm import LLMKernels, llm_kernels

EMULATOR_DIR = Path(__file__).resolve().parents[2] / "tools" / "cuda_emulator"


@dataclass
class KernelRig:
    """Kernels plus the array module their buffers live in."""

    kernels: LLMKernels
    backend: Backend
    emulated: bool

    @property
    def raw(self) -> Any:
        return self.backend.raw

    def put(self, array: np.ndarray) -> Any:
        return self.raw.array(np.ascontiguousarray(array), copy=True)  # never aliases the host array

    def get(self, array: Any) -> np.ndarray:
        return loom.to_numpy(array)


def kernel_rig(backend_name: str) -> KernelRig:
    """The rig for this test run, or a skip saying what is missing."""
    if backend_name == "cupy":
        backend = resolve_backend("cupy")
        return KernelRig(llm_kernels(backend), backend, emulated=False)
    if os.environ.get("LOOM_CUDA_EMULATOR") == "1":
        if shutil.which("g++") is None:
            pytest.skip("LOOM_CUDA_EMULATOR=1 needs g++")
        sys.path.insert(0, str(EMULATOR_DIR))
        from emulator import emulated_llm_kernels

        return KernelRig(emulated_llm_kernels(), resolve_backend("numpy"), emulated=True)
    pytest.skip("fused CUDA kernels: run with --backend cupy on a GPU (or LOOM_CUDA_EMULATOR=1 on the CPU)")
