"""Shared pytest fixtures: backend selection and reference data.

* ``--backend`` (or env ``LOOM_TEST_BACKEND``) picks the array backend the suite
  runs on: ``numpy`` (default) or ``cupy``. Asking for ``cupy`` on a machine
  without CuPy or a CUDA device fails loudly instead of silently testing NumPy.
  ``strict`` runs the tests of ``loom.ops`` (``tests/ops``) with ``array_api_strict``
  as the namespace (``xp``); every other test is skipped (they need a loom backend).
* ``LOOM_SHARED`` points at the reference data folder (default ``../shared``
  beside the repository); tests that need it skip with the reason when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import loom.backend as lb

REPO_ROOT = Path(__file__).resolve().parents[1]
OPS_TESTS = REPO_ROOT / "tests" / "ops"
#: The ``--backend`` value that runs ``loom.ops``' tests on ``array_api_strict``.
STRICT = "strict"
#: The standard version ``loom.ops`` is written against (what ``array_api_compat`` gives NumPy and CuPy).
STRICT_API_VERSION = "2024.12"


def shared_root() -> Path:
    """The reference-data folder (``LOOM_SHARED`` or ``../shared``)."""
    return Path(os.environ.get("LOOM_SHARED", REPO_ROOT.parent / "shared")).resolve()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="store",
        default=os.environ.get("LOOM_TEST_BACKEND", "numpy"),
        choices=[*lb.BACKEND_NAMES, STRICT],
        help="array backend the tests run on (default: numpy; env LOOM_TEST_BACKEND); "
        "'strict': loom.ops' tests on array_api_strict",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--backend")
    if name == "cupy":
        # Fails with BackendUnavailableError (and a clear message) when CuPy/CUDA is missing.
        lb.set_backend("cupy")
    os.environ["LOOM_BACKEND"] = "numpy" if name == STRICT else name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--backend") != STRICT:
        return
    skip = pytest.mark.skip(reason="--backend strict runs loom.ops' tests (tests/ops) only")
    for item in items:
        if OPS_TESTS not in Path(str(item.path)).parents:
            item.add_marker(skip)


def strict_namespace():
    """``array_api_strict`` pinned to :data:`STRICT_API_VERSION` (skips when it is not installed)."""
    strict = pytest.importorskip("array_api_strict", reason="pip install array-api-strict (the test extra)")
    strict.set_array_api_strict_flags(api_version=STRICT_API_VERSION)
    return strict


def pytest_report_header(config: pytest.Config) -> str:
    return f"loom backend: {config.getoption('--backend')}; shared data: {shared_root()}"


@pytest.fixture(scope="session")
def backend_name(pytestconfig: pytest.Config) -> str:
    """Name of the backend this test run uses."""
    return pytestconfig.getoption("--backend")


@pytest.fixture
def backend(backend_name: str):
    """The :class:`loom.backend.Backend` under test, made current for the test."""
    if backend_name == STRICT:
        pytest.skip("array_api_strict is a namespace, not a loom backend: only loom.ops' tests use it")
    with lb.use_backend(backend_name) as be:
        yield be


@pytest.fixture
def xp(backend_name: str, request: pytest.FixtureRequest):
    """Array-API namespace under test: the backend's, or ``array_api_strict`` with ``--backend strict``."""
    if backend_name == STRICT:
        return strict_namespace()
    return request.getfixturevalue("backend").xp


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
    token = lb._current.set("numpy" if backend_name == STRICT else backend_name)
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
