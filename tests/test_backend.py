"""Backend selection: names, context manager, env variable, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import loom
import loom.backend as lb
from loom.errors import BackendUnavailableError, ConfigError


def test_get_and_set_backend_round_trip(backend_name):
    assert loom.get_backend() == backend_name
    loom.set_backend("numpy")
    assert loom.get_backend() == "numpy"


def test_use_backend_restores_previous():
    loom.set_backend("numpy")
    with lb.use_backend("numpy") as be:
        assert be.name == "numpy" and be.xp is not None and be.raw is np
    assert loom.get_backend() == "numpy"


def test_unknown_backend_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown backend 'tpu'.*numpy.*cupy"):
        loom.set_backend("tpu")


def test_to_numpy_accepts_lists_and_arrays(backend):
    arr = backend.asarray([1.0, 2.0])
    assert arr.dtype == backend.float_dtype
    out = loom.to_numpy(arr)
    assert isinstance(out, np.ndarray) and out.tolist() == [1.0, 2.0]
    assert loom.to_numpy([3, 4]).tolist() == [3, 4]


def test_env_variable_selects_initial_backend():
    code = "import loom; print(loom.get_backend())"
    env = {**os.environ, "LOOM_BACKEND": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "numpy"


@pytest.mark.skipif(lb.cupy_available(), reason="CuPy with a CUDA device is present")
def test_gpu_request_without_cupy_says_what_is_missing():
    with pytest.raises(BackendUnavailableError, match=r"pip install"):
        loom.set_backend("cupy")
    net = loom.create_network_from_json(
        {
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [{"type": "dense", "input_size": 2, "output_size": 1}],
        },
        backend="numpy",
    )
    with pytest.raises(BackendUnavailableError, match=r"CuPy|CUDA"):
        net.train([([0.1, 0.2], [1.0])], {"Epochs": 1, "UseGPU": True})


def test_scatter_add_sums_repeated_indices(backend):
    target = backend.zeros(3)
    idx = backend.raw.asarray([0, 2, 0, 0])
    backend.scatter_add(target, idx, backend.asarray([1.0, 2.0, 3.0, 4.0]))
    assert loom.to_numpy(target).tolist() == [8.0, 0.0, 2.0]


@pytest.mark.gpu
@pytest.mark.skipif(not lb.cupy_available(), reason="needs CuPy and a CUDA device")
def test_network_moves_between_backends():
    net = loom.create_network_from_json(
        {
            "grid_rows": 1,
            "grid_cols": 1,
            "layers_per_cell": 1,
            "layers": [{"type": "dense", "input_size": 3, "output_size": 2, "activation": "tanh"}],
        },
        backend="numpy",
        seed=1,
    )
    x = [0.1, -0.2, 0.3]
    y_cpu = loom.to_numpy(net.forward(x))
    net.to_backend("cupy")
    assert net.backend == "cupy"
    np.testing.assert_allclose(loom.to_numpy(net.forward(x)), y_cpu, rtol=1e-5, atol=1e-6)
