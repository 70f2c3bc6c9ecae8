"""Run loom's CUDA kernels on the CPU: a stand-in for ``cupy.RawModule`` built with g++.

For checking kernel logic where no GPU is at hand (it is slow: one OS thread per
CUDA thread). The kernel source is compiled together with ``cuda_emulator.h``
into a shared library with one ``emu_launch_<kernel>`` entry per
``extern "C" __global__`` function; launches take NumPy arrays (pointers) and
NumPy scalars, like CuPy's ``RawKernel``.

    from emulator import emulated_llm_kernels
    kernels = emulated_llm_kernels()   # loom.backend.cuda_llm.LLMKernels on NumPy arrays
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(')
_MACRO = re.compile(r"^#define\s+(\w+)\(([^)]*)\)(.*?)(?=^\S|\Z)", re.M | re.S)
_PASTED = re.compile(r"(\w+)##(\w+)\s*\(")


def kernel_names(source: str) -> list[str]:
    """Names of the ``extern "C" __global__`` kernels of ``source``, those that macros paste together too."""
    names = [n for n in _KERNEL.findall(source) if n != "__launch_bounds__"]
    for macro, params, body in _MACRO.findall(source):
        params = [p.strip() for p in params.split(",")]
        stems = [(stem, params.index(arg)) for stem, arg in _PASTED.findall(body) if arg in params]
        for call in re.findall(rf"^{macro}\(([^)]*)\)", source, re.M):
            args = [a.strip() for a in call.split(",")]
            names += [stem + args[i] for stem, i in stems]
    return sorted(set(names))


class EmulatedKernel:
    def __init__(self, entry: Any) -> None:
        self._entry = entry
        self.max_dynamic_shared_size_bytes = 48 * 1024

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...], shared_mem: int = 0):
        g = (*grid, 1, 1)[:3]
        b = (*block, 1, 1)[:3]
        holders = []
        for a in args:
            if isinstance(a, np.ndarray):
                holders.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.generic):
                holders.append(ctypes.create_string_buffer(a.tobytes(), 16))
            else:
                raise TypeError(f"kernel argument of type {type(a).__name__}: pass NumPy arrays or NumPy scalars")
        pointers = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        dims = [ctypes.c_uint(v) for v in (*g, *b)]
        self._entry(*dims, ctypes.c_size_t(shared_mem), pointers)


class EmulatedModule:
    """``cupy.RawModule(code=source)`` look-alike running on the CPU."""

    def __init__(self, code: str, options: tuple[str, ...] = ()) -> None:
        names = kernel_names(code)
        exports = "\n".join(
            f'extern "C" void emu_launch_{n}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
            f"unsigned bz, size_t smem, void** args) {{ emu::launch(&{n}, dim3{{gx, gy, gz}}, dim3{{bx, by, bz}}, "
            "smem, args); }"
            for n in names
        )
        full = f'#include "{HERE / "cuda_emulator.h"}"\n{code}\n{exports}\n'
        digest = hashlib.sha256(full.encode()).hexdigest()[:16]
        build = Path(tempfile.gettempdir()) / "loom_cuda_emulator"
        build.mkdir(exist_ok=True)
        library = build / f"kernels_{digest}.so"
        if not library.exists():
            src = build / f"kernels_{digest}.cpp"
            src.write_text(full)
            cmd = ["g++", "-std=c++20", "-O1", "-g", "-shared", "-fPIC", "-pthread", "-Wno-unknown-pragmas"]
            subprocess.run([*cmd, "-o", str(library), str(src)], check=True)
        self._lib = ctypes.CDLL(str(library))
        self._names = set(names)

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self._names:
            raise KeyError(f"no kernel {name!r} in the module")
        return EmulatedKernel(getattr(self._lib, f"emu_launch_{name}"))


def numpy_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float, tf32: bool) -> None:
    out[...] = a @ b + np.float32(beta) * out if beta else a @ b


def emulated_llm_kernels(multiprocessors: int = 4):
    """:class:`loom.backend.cuda_llm.LLMKernels` whose kernels run on the CPU over NumPy arrays."""
    from loom.backend.cuda_llm import LLMKernels

    return LLMKernels(lambda source: EmulatedModule(source), numpy_gemm, multiprocessors)
