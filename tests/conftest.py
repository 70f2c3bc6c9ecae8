"""Shared pytest fixtures: backend selection and reference data.

* ``--backend`` (or env ``LOOM_TEST_BACKEND``) picks the array backend the suite
  runs on: ``numpy`` (default) or ``cupy``. Asking for ``cupy`` on a machine
  without CuPy or a CUDA device fails loudly instead of silently testing NumPy.
* ``LOOM_SHARED`` points at the reference data folder (default ``../shared``
  beside the repository); tests that need it skip with the reason when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import loom.backend as lb

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The reference-data folder (``LOOM_SHARED`` or ``../shared``)."""
    return Path(os.environ.get("LOOM_SHARED", REPO_ROOT.parent / "shared")).resolve()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="store",
        default=os.environ.get("LOOM_TEST_BACKEND", "numpy"),
        choices=list(lb.BACKEND_NAMES),
        help="array backend the tests run on (default: numpy; env LOOM_TEST_BACKEND)",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--backend")
    if name == "cupy":
        # Fails with BackendUnavailableError (and a clear message) when CuPy/CUDA is missing.
        lb.set_backend("cupy")
    os.environ["LOOM_BACKEND"] = name


def pytest_report_header(config: pytest.Config) -> str:
    return f"loom backend: {config.getoption('--backend')}; shared data: {shared_root()}"


@pytest.fixture(scope="session")
def backend_name(pytestconfig: pytest.Config) -> str:
    """Name of the backend this test run uses."""
    return pytestconfig.getoption("--backend")


@pytest.fixture
def backend(backend_name: str):
    """The :class:`loom.backend.Backend` under test, made current for the test."""
    with lb.use_backend(backend_name) as be:
        yield be


@pytest.fixture
def xp(backend):
    """Array-API namespace of the backend under test."""
    return backend.xp


@pytest.fixture(scope="session", autouse=True)
def _emulated_train_kernels():
    """``LOOM_EMULATE_TRAIN_KERNELS=1``: NumPy networks train through the GPU step, its kernels emulated on the CPU.

    Runs the training tests through :mod:`loom.nn.gpu_training` without a GPU (slow: g++-built
    kernels, one thread per CUDA thread). See ``tools/cuda_emulator``.
    """
    if os.environ.get("LOOM_EMULATE_TRAIN_KERNELS") != "1":
        yield None
        return
    import sys

    from loom.backend.cuda_train import use_train_kernels

    sys.path.insert(0, str(REPO_ROOT / "tools" / "cuda_emulator"))
    from emulator import emulated_train_kernels

    with use_train_kernels(emulated_train_kernels()) as kernels:
        yield kernels


@pytest.fixture(autouse=True)
def _reset_backend(backend_name: str):
    """Every test starts and ends with the run's backend as the default."""
    token = lb._current.set(backend_name)
    yield
    lb._current.reset(token)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Root of the shared reference data; skips when it is absent."""
    root = shared_root()
    if not root.is_dir():
        pytest.skip(f"reference data folder not found at {root} (set LOOM_SHARED)")
    return root


@pytest.fixture(scope="session")
def llm_fixtures(shared_dir: Path) -> Path:
    """``fixtures/llm`` inside the shared data."""
    path = shared_dir / "fixtures" / "llm"
    if not path.is_dir():
        pytest.skip(f"LLM fixtures not found at {path}")
    return path


@pytest.fixture(scope="session")
def go_fixtures(shared_dir: Path) -> Path:
    """``fixtures/loom-go`` inside the shared data."""
    path = shared_dir / "fixtures" / "loom-go"
    if not path.is_dir():
        pytest.skip(f"Go LOOM fixtures not found at {path}")
    return path
