"""The CUDA kernels compiled for the CPU, behind ``cupy.RawModule``'s interface.

This is how the kernel source is tested where there is no GPU (CI, most machines): the very
``.cu`` file is compiled as C++ by the system compiler with ``cuda_cpu.h`` (which supplies
the CUDA built-ins) and loaded with ctypes.  :class:`CpuRawModule` stands in for
``cupy.RawModule`` and its functions for ``cupy.RawKernel``, so the launch code of
:mod:`nbxp.gpu` runs unchanged against it, with checks at least as strict as a real launch:

- grid and block must be tuples of 1 to 3 positive ints within CUDA's limits and the
  kernel's ``__launch_bounds__``;
- the arguments must match the kernel's C parameter list, read from the source: an array
  of exactly the pointer's dtype (C-contiguous, writable unless the pointer is const) for
  each pointer, a NumPy scalar of exactly the parameter's dtype for each scalar (CuPy would
  pass a Python int or float as 64 bits whatever the parameter is, so they are refused);
- the launch visits every (block, thread) of the grid, so a grid or an element count that
  does not cover the work leaves pixels unrendered, as on a GPU.

Binaries are cached in ``cpu-kernels/`` of nbxp's cache directory (``$NBXP_CACHE_DIR``, else
``~/.cache/nbxp``), keyed by a hash of the source, header, options and compiler command.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np

from . import KERNEL_DIR, Param, kernel_names, kernel_signature, max_threads_per_block

HEADER = KERNEL_DIR / "cuda_cpu.h"
#: -ffp-contract=off: no fused multiply-adds, so float64 results do not depend on the CPU
CXXFLAGS = ("-x", "c++", "-std=c++14", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno",
            "-Wall", "-Wextra", "-Werror")

_CTYPES = {
    np.dtype(np.float64): ctypes.c_double, np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.int32): ctypes.c_int32, np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.int64): ctypes.c_int64, np.dtype(np.uint64): ctypes.c_uint64,
    np.dtype(np.int16): ctypes.c_int16, np.dtype(np.uint16): ctypes.c_uint16,
    np.dtype(np.int8): ctypes.c_int8, np.dtype(np.uint8): ctypes.c_uint8, np.dtype(np.bool_): ctypes.c_bool,
}

#: CUDA's launch limits (compute capability >= 3.0)
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX", "c++"))


def available() -> bool:
    """Whether a C++ compiler is at hand for the CPU build."""
    try:
        return subprocess.run(compiler() + ["--version"], capture_output=True).returncode == 0
    except OSError:
        return False


def _launchers(code: str, options) -> str:
    """C++ entry points ``nbxp_cpu_launch_<kernel>(gx, gy, gz, bx, by, bz, <kernel params>)``
    that run one launch of each ``extern "C" __global__`` kernel in ``code``."""
    out = []
    for name in kernel_names(code):
        params = kernel_signature(code, name, options)
        decls = ", ".join(p.decl for p in params)
        names = ", ".join(p.name for p in params)
        out.append(
            f'extern "C" void nbxp_cpu_launch_{name}(unsigned gx, unsigned gy, unsigned gz, '
            f"unsigned bx, unsigned by, unsigned bz{', ' if decls else ''}{decls})\n"
            f"{{\n    nbxp_cpu_each_thread(gx, gy, gz, bx, by, bz, [&]() {{ {name}({names}); }});\n}}\n")
    return "\n/* ---- appended by nbxp/kernels/cpu.py ---- */\n" + "\n".join(out)


def build(code: str, options=()) -> Path:
    """Compile ``code`` (CUDA C) for the CPU; the path of the shared library (cached)."""
    from ..native import compile_cached
    defines = [str(o) for o in options or () if str(o).startswith(("-D", "-U"))]
    full = code + "\n" + _launchers(code, defines)
    cmd = compiler() + list(CXXFLAGS) + ["-include", str(HEADER)] + defines
    return compile_cached(cmd, full, "kernel", subdir="cpu-kernels", key_extra=HEADER.read_text())


class CpuRawModule:
    """Stand-in for ``cupy.RawModule``: ``CpuRawModule(code=..., options=...)``, then
    ``get_function(name)``.  Compiles when constructed."""

    def __init__(self, code: str | None = None, options=(), path: str | None = None, **_ignored):
        if code is None:
            if path is None:
                raise TypeError("CpuRawModule needs code= or path=")
            code = Path(path).read_text()
        self.code, self.options = code, tuple(options or ())
        self.library_path = build(code, self.options)
        self._lib = ctypes.CDLL(str(self.library_path))

    def get_function(self, name: str) -> "CpuKernel":
        return CpuKernel(self, name)


def _as_host_array(a):
    """A NumPy view of an array argument (NumPy itself, or any namespace that exports host
    memory through DLPack, e.g. array-api-strict), or None if it is not an array."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, np.generic) or not hasattr(a, "__dlpack__"):
        return None
    if type(a).__module__.startswith("cupy"):
        raise TypeError("CpuRawModule launches the CPU build of a kernel: it takes host arrays, not CuPy's")
    return np.from_dlpack(a)


class CpuKernel:
    """Stand-in for ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, module: CpuRawModule, name: str):
        self.name = name
        self.params: list[Param] = kernel_signature(module.code, name, module.options)
        self.max_threads = max_threads_per_block(module.code, name, module.options) or MAX_THREADS_PER_BLOCK
        self._fn = getattr(module._lib, f"nbxp_cpu_launch_{name}")
        self._fn.restype = None
        self._fn.argtypes = [ctypes.c_uint] * 6 + [
            ctypes.c_void_p if p.pointer else _CTYPES[p.dtype] for p in self.params]
        self.launches = 0  # for tests: how many launches ran

    @staticmethod
    def _dims(what: str, dims, limits) -> tuple[int, int, int]:
        if not isinstance(dims, tuple) or not 1 <= len(dims) <= 3:
            raise TypeError(f"{what} must be a tuple of 1 to 3 ints, got {dims!r}")
        out = []
        for v, lim in zip(dims, limits):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{what} must be a tuple of ints, got {dims!r}")
            if not 1 <= int(v) <= lim:
                raise ValueError(f"{what} {dims!r}: each dimension must be in 1..{lim} (CUDA's limit)")
            out.append(int(v))
        return tuple(out + [1] * (3 - len(out)))

    def _check(self, args) -> list:
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        values = []
        for i, (a, p) in enumerate(zip(args, self.params)):
            where = f"{self.name} argument {i} ({p.decl})"
            if p.pointer:
                h = _as_host_array(a)
                if h is None:
                    raise TypeError(f"{where}: expected an array of {p.dtype}, got {type(a).__name__}")
                if h.dtype != p.dtype:
                    raise TypeError(f"{where}: expected an array of {p.dtype}, got {h.dtype}")
                if not h.flags.c_contiguous:
                    raise TypeError(f"{where}: the array is not C-contiguous")
                if not p.const and not h.flags.writeable:
                    raise TypeError(f"{where}: the kernel writes to it but the array is read-only")
                values.append(h.ctypes.data if h.size else None)
            else:
                if not isinstance(a, np.generic) or isinstance(a, np.ndarray):
                    raise TypeError(f"{where}: expected a NumPy {p.dtype} scalar, got {type(a).__name__} "
                                    "(a Python number would be passed as 64 bits)")
                if a.dtype != p.dtype:
                    raise TypeError(f"{where}: expected a NumPy {p.dtype} scalar, got {a.dtype}")
                values.append(a.item())
        return values

    def __call__(self, grid, block, args, *, shared_mem: int = 0, **_ignored):
        g = self._dims("grid", grid, MAX_GRID)
        b = self._dims("block", block, MAX_BLOCK)
        if b[0] * b[1] * b[2] > min(self.max_threads, MAX_THREADS_PER_BLOCK):
            raise ValueError(f"block {block!r}: more than {min(self.max_threads, MAX_THREADS_PER_BLOCK)} threads "
                             f"(CUDA's limit or the kernel's __launch_bounds__: too many resources requested)")
        if shared_mem:
            raise ValueError("CpuKernel does not emulate dynamic shared memory")
        values = self._check(args)
        self._fn(*g, *b, *values)
        self.launches += 1
