"""Where the GPU-training tests get their kernels: the GPU, or the CPU emulation on request.

With ``--backend cupy`` networks on CuPy train through :mod:`loom.nn.gpu_training` and the real
kernels. Without a GPU the tests are skipped, unless ``LOOM_CUDA_EMULATOR=1`` asks for
``tools/cuda_emulator``: NumPy networks then train through the same GPU code path with the
kernels built for the CPU by g++ (slow; for checking the logic). The reference is always the
generic array-API step on NumPy.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np

import loom
from loom.backend.cuda_train import TrainKernels, device_train_kernels, use_train_kernels
from tests.cuda_rig import KernelRig, emulator, make_rig


@functools.cache
def _emulated() -> TrainKernels:
    return emulator().emulated_train_kernels()


class TrainRig(KernelRig):
    """The training kernels under test and the backend whose networks use them."""

    kernels: TrainKernels

    @contextlib.contextmanager
    def device(self) -> Iterator[None]:
        """Inside: networks of :attr:`backend` train through the GPU step (opt-in outside tests)."""
        with use_train_kernels(self.kernels):
            yield

    def network(self, config: dict, seed: int = 1) -> loom.Network:
        return loom.create_network_from_json(config, backend=self.backend, seed=seed)


def train_rig(backend_name: str) -> TrainRig:
    """The rig for this test run, or a skip saying what is missing."""
    return make_rig(backend_name, TrainRig, device_train_kernels, _emulated, "GPU training kernels")


def parameters(net: loom.Network) -> dict[str, np.ndarray]:
    """Every parameter of ``net`` on the host, by name."""
    return {name: loom.to_numpy(array).copy() for name, array in net.named_parameters()}


def assert_same_parameters(a: loom.Network, b: loom.Network, atol: float = 1e-5) -> None:
    pa, pb = parameters(a), parameters(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_allclose(pb[name], pa[name], rtol=0, atol=atol, err_msg=name)
