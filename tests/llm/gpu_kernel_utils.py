"""Where the fused-kernel tests get their kernels: the GPU, or the CPU emulation on request.

With ``--backend cupy`` the tests run the real kernels. Without a GPU they are
skipped, unless ``LOOM_CUDA_EMULATOR=1`` asks for ``tools/cuda_emulator``
(g++ builds the kernels for the CPU: slow, for checking kernel logic only).
"""

from __future__ import annotations

from loom.backend.cuda_llm import llm_kernels
from tests.cuda_rig import KernelRig, emulator, make_rig

__all__ = ["KernelRig", "kernel_rig"]


def kernel_rig(backend_name: str) -> KernelRig:
    """The decode/prefill kernels for this test run, or a skip saying what is missing."""
    return make_rig(
        backend_name, KernelRig, llm_kernels, lambda: emulator().emulated_llm_kernels(), "fused CUDA kernels"
    )
