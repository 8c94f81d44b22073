"""The render kernel compiled for this CPU: pixels in SIMD lanes, OpenMP over blocks.

``nbxp_render_cpu.cpp`` is the CPU entry of the same kernel source the GPU runs
(``nbxp_render.cu``, whose ``__device__`` functions it calls); this module compiles it on
first use with the system C++ compiler (``$CXX``, else ``c++``/``g++``/``clang++``), caches
the library in ``cpu-kernels/`` of nbxp's cache directory (:func:`nbxp.native.cache_dir`)
under a hash of the sources, the flags, the compiler binary and this CPU's identity
(``-march=native`` code may not run on another CPU sharing the cache), and loads it with
ctypes.  :func:`render_cpu` runs it through the launch glue of :func:`nbxp.gpu.render_kernel`
(chunks, the two-pass interpolation fallback), so the CPU and GPU paths share everything
but the kernel's traversal.

Flags (docs/performance.md, "The CPU kernel"): ``-O3 -march=native`` with
``-ffp-contract=off`` (no fused multiply-adds: float64 results are the NumPy engine's, not
the CPU's), ``-fno-trapping-math`` (without it gcc vectorises none of the lane loops: the
selects must not raise FP exceptions) and ``-fno-math-errno``.  ``NBXP_FAST_MATH=1`` (or
``simulate(fast_math=True)``, ``--fast-math``) builds with ``-ffp-contract=fast`` instead:
FMA contraction, ~1.2x faster in float64, float64 images within ~1e-12 of the maximum
instead of to rounding.

``NBXP_NO_NATIVE=1`` disables it (nbxp then renders with the NumPy engine).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil

import numpy as np

from . import KERNEL_DIR, RENDER_SOURCE, real_name, source

CPU_SOURCE = "nbxp_render_cpu.cpp"
ENTRY = "nbxp_render_cpu"
HEADER = KERNEL_DIR / "cuda_cpu.h"
#: the default flags: float64 bitwise stable (see the module docstring)
BASE_FLAGS = ("-x", "c++", "-std=c++14", "-O3", "-march=native", "-fPIC", "-shared", "-fopenmp",
              "-fno-trapping-math", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas")
EXACT_FLAGS = ("-ffp-contract=off",)
FAST_FLAGS = ("-ffp-contract=fast",)


class NativeUnavailable(RuntimeError):
    """The CPU kernel cannot be built or loaded here (the message says why)."""


def fast_math_default() -> bool:
    return os.environ.get("NBXP_FAST_MATH", "") not in ("", "0")


def compiler() -> list[str] | None:
    """The C++ compiler command: $CXX, else c++, g++ or clang++ on the PATH."""
    env = os.environ.get("CXX")
    if env:
        cmd = shlex.split(env)
        return cmd if cmd and shutil.which(cmd[0]) else None
    for cand in ("c++", "g++", "clang++"):
        if shutil.which(cand):
            return [shutil.which(cand)]
    return None


def _compiler_identity(cmd: list[str]) -> str:
    """The compiler binary as the cache key sees it: resolved path, size and modification
    time (a stat, not a ``--version`` run: a cached kernel costs no subprocess)."""
    parts = list(cmd)
    exe = shutil.which(cmd[0])
    if exe:
        real = os.path.realpath(exe)
        try:
            st = os.stat(real)
            parts += [real, str(st.st_size), str(st.st_mtime_ns)]
        except OSError:
            parts.append(real)
    return "\0".join(parts)


@functools.lru_cache(maxsize=None)
def cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("vendor_id", "model name", "flags", "cpu family", "model"):
                    parts.append(line.strip())
                if not line.strip() and len(parts) > 1:
                    break  # the first processor is enough
    except OSError:
        parts.append(platform.processor())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def why_unavailable() -> str | None:
    """None when the CPU kernel can be built here, else the reason (one phrase)."""
    if os.environ.get("NBXP_NO_NATIVE"):
        return "NBXP_NO_NATIVE is set"
    if compiler() is None:
        return "no C++ compiler ($CXX, c++, g++ or clang++)"
    return None  # a compiler that does not work shows when the kernel is built


_LIBS: dict = {}


def library(dtype, fast_math: bool | None = None) -> ctypes.CDLL:
    """The compiled kernel for precision ``dtype`` (built and cached on first use).
    Raises :class:`NativeUnavailable` when it cannot be built or loaded."""
    from ..native import compile_cached
    fast = fast_math_default() if fast_math is None else bool(fast_math)
    key = (real_name(dtype), fast)
    if key in _LIBS:
        return _LIBS[key]
    why = why_unavailable()
    if why:
        raise NativeUnavailable(why)
    cmd = compiler()
    code = source(RENDER_SOURCE) + "\n" + source(CPU_SOURCE)
    extra = "\0".join([HEADER.read_text(), _compiler_identity(cmd), cpu_identity()])
    flags = [*cmd, *BASE_FLAGS, *(FAST_FLAGS if fast else EXACT_FLAGS), "-include", str(HEADER),
             f"-DNBXP_REAL={key[0]}"]
    errors = []
    # libmvec (glibc's vector math) for the transcendental shapes; without it, scalar calls;
    # without an OpenMP runtime (clang lacking libomp), one thread with the SIMD pragmas kept
    serial = [f for f in flags if f != "-fopenmp"] + ["-fopenmp-simd"]
    for cmd_flags, libs in ((flags, ["-lmvec", "-lm"]), (flags + ["-DNBXP_NO_VECTOR_MATH"], ["-lm"]),
                            (serial + ["-DNBXP_NO_VECTOR_MATH"], ["-lm"])):
        try:
            path = compile_cached(cmd_flags, code, f"render-{key[0]}", subdir="cpu-kernels", libs=libs,
                                  key_extra=extra)
            lib = ctypes.CDLL(str(path))
            break
        except (RuntimeError, OSError) as e:
            errors.append(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    else:
        raise NativeUnavailable(f"building the CPU kernel failed: {errors[-1]}")
    fn = getattr(lib, ENTRY)
    fn.restype = None
    _LIBS[key] = lib
    return lib


class CpuSimdKernel:
    """The compiled CPU entry with ``cupy.RawKernel``'s calling convention, for
    :func:`nbxp.gpu.render_kernel`: ``kernel(grid, block, args)``; grid and block are
    ignored (OpenMP shares the pixels out), ``args`` are nbxp_render's."""

    def __init__(self, dtype, Fpad: np.ndarray, threads: int, fast_math: bool | None = None,
                 image32: np.ndarray | None = None):
        self.real = np.float32 if real_name(dtype) == "float" else np.float64
        self._fn = getattr(library(dtype, fast_math), ENTRY)
        self.Fpad = np.ascontiguousarray(Fpad, dtype=self.real)
        self.threads = int(threads)
        if image32 is not None and not (image32.dtype == np.float32 and image32.flags.c_contiguous):
            raise TypeError("image32 must be a C-contiguous float32 array")
        self.image32 = image32  # where the image goes instead, as float32
        self.launches = 0

    def __call__(self, grid, block, args, **_ignored):
        conv = []
        for a in args:
            if isinstance(a, np.ndarray):
                conv.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.floating):
                conv.append(ctypes.c_float(a) if a.dtype == np.float32 else ctypes.c_double(a))
            elif isinstance(a, np.int64):
                conv.append(ctypes.c_longlong(int(a)))
            elif isinstance(a, np.int32):
                conv.append(ctypes.c_int(int(a)))
            else:
                raise TypeError(f"nbxp_render_cpu: unexpected argument {type(a).__name__}")
        conv += [ctypes.c_void_p(self.Fpad.ctypes.data), ctypes.c_int(self.threads),
                 ctypes.c_void_p(None if self.image32 is None else self.image32.ctypes.data)]
        self._fn(*conv)
        self.launches += 1


#: pixels per call: large enough that OpenMP start-up is nothing, small enough that the
#: progress bar moves (about 2^24 sub-path evaluations, ~0.05-0.2 s)
CHUNK_EVALUATIONS = 1 << 24


def render_cpu(exp, *, threads: int | None = None, progress=None, fast_math: bool | None = None,
               chunk: int | None = None, float32_image: bool = False):
    """The float image (spixels, fpixels) of ``exp`` (a NumPy experiment) from the CPU
    kernel, and the :class:`~nbxp.engine.InterpolationState` at the end: the contract of
    :func:`nbxp.engine.render` (a list of per-panel images for a multi-panel experiment).  ``chunk``: pixels per call (default: about 2^24 sub-path
    evaluations).  ``float32_image``: return the image rounded to float32 (computed in
    ``exp.dtype``, rounded as it is stored: no float64 image is held).  Raises
    :class:`NativeUnavailable` where it cannot run."""
    from ..engine import default_threads
    from ..gpu import render_kernel
    if getattr(exp.xp, "__name__", "") != "numpy":
        raise TypeError("the CPU kernel renders NumPy experiments")
    threads = default_threads() if threads is None else max(1, int(threads))
    Fpad = exp.F._padded_grid() if exp.F.count != 0 else np.zeros(1, dtype=exp.dtype)
    if Fpad.shape[0] >= 2**31:
        # the kernel indexes the grid with 32-bit lanes (twice the gather width of 64-bit)
        raise NativeUnavailable(f"an HKL grid of {Fpad.shape[0]} cells is beyond the CPU kernel's 2^31")
    g = exp.geom
    offsets = exp.panel_offsets
    image32 = np.zeros(int(offsets[-1]), dtype=np.float32) if float32_image else None
    kernel = CpuSimdKernel(exp.dtype, np.asarray(Fpad), threads, fast_math, image32)
    from ..gpu import max_layers
    per_pixel = max_layers(exp) * exp.oversample ** 2 * exp.incident.shape[0] * exp.orient.shape[0]
    if chunk is None:
        chunk = int(min(max(CHUNK_EVALUATIONS // max(per_pixel, 1), 1 << 12), 1 << 22))
    img, state = render_kernel(exp, kernel=kernel, progress=progress, chunk=chunk)
    if image32 is not None:
        # render_kernel's own image stayed untouched (calloc'd pages never written)
        if not exp.multi_panel:
            return image32.reshape(g.spixels, g.fpixels), state
        return [image32[int(offsets[p]):int(offsets[p + 1])].reshape(q.spixels, q.fpixels)
                for p, q in enumerate(exp.panels)], state
    return img, state
