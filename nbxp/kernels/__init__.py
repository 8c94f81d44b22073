"""nbxp's CUDA kernels: the sources, what they declare, and the compiled kernels.

The kernels are ordinary CUDA C files in this folder (``nbxp_render.cu``), compiled once per
process and precision with ``cupy.RawModule`` (CuPy keeps the binaries in its own disk
cache, so later processes start fast).  The tests compile the same files for the CPU
(:mod:`nbxp.kernels.cpu`) and launch them through a stand-in with RawModule's interface.

The precision is chosen at compile time: ``-DNBXP_REAL=double`` or ``-DNBXP_REAL=float``.

The same source has a second, CPU entry point, ``nbxp_render_cpu.cpp`` (pixels in SIMD
lanes, OpenMP threads), which :mod:`nbxp.kernels.cpu_simd` compiles for this machine: nbxp's
default renderer on a CPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

KERNEL_DIR = Path(__file__).resolve().parent
RENDER_SOURCE = "nbxp_render.cu"
RENDER_KERNEL = "nbxp_render"

#: C type (after typedefs and macros) -> NumPy dtype, for kernel parameters
C_TYPES = {
    "double": np.float64, "float": np.float32,
    "int": np.int32, "unsigned int": np.uint32, "unsigned": np.uint32,
    "long long": np.int64, "long long int": np.int64, "unsigned long long": np.uint64,
    "short": np.int16, "unsigned short": np.uint16,
    "char": np.int8, "signed char": np.int8, "unsigned char": np.uint8, "bool": np.bool_,
}


@lru_cache(maxsize=None)
def source(name: str = RENDER_SOURCE) -> str:
    """The text of a kernel source file of this folder."""
    return (KERNEL_DIR / name).read_text()


def numpy_dtype(dtype) -> np.dtype:
    """The NumPy dtype of a dtype of any array namespace (NumPy's, CuPy's, array-api-strict's)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(str(dtype).split(".")[-1])  # e.g. array_api_strict.float64


def real_name(dtype) -> str:
    """The C name of a floating dtype: ``double`` or ``float``."""
    dt = numpy_dtype(dtype)
    if dt == np.float64:
        return "double"
    if dt == np.float32:
        return "float"
    raise TypeError(f"the CUDA kernels are built for float32 and float64, not {dtype}")


def compile_options(dtype) -> tuple[str, ...]:
    """Compiler options for one precision (the same for NVRTC, nvcc and the CPU build)."""
    return (f"-DNBXP_REAL={real_name(dtype)}",)


def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
    return re.sub(r"//[^\n]*", " ", code)


def enum_values(code: str) -> dict[str, int]:
    """Enumerators given an explicit integer value in ``code`` (``NAME = 123``)."""
    out = {}
    for body in re.findall(r"\benum\b[^{]*\{(.*?)\}", _strip_comments(code), flags=re.S):
        for item in body.split(","):
            m = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+)\s*", item)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


@lru_cache(maxsize=None)
def constants(name: str = RENDER_SOURCE) -> dict[str, int]:
    """The ``NBXP_*`` enumerators of a source file (flag bits, shapes, array layouts, launch
    bounds), so the Python side never repeats a number the kernel defines."""
    return {k: v for k, v in enum_values(source(name)).items() if k.startswith("NBXP_")}


@dataclass(frozen=True)
class Param:
    """One kernel parameter as declared: C text, name, resolved type, pointer or not."""

    decl: str
    name: str
    ctype: str
    pointer: bool
    const: bool

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(C_TYPES[self.ctype])


def _macros(code: str, options) -> dict[str, str]:
    """Object-like macros: -D options first (they win over #ifndef defaults in the file)."""
    defined = {}
    for m in re.finditer(r"^\s*#\s*define\s+(\w+)[ \t]+([^\n]+?)\s*$", code, flags=re.M):
        defined.setdefault(m.group(1), m.group(2))
    for opt in options or ():
        m = re.fullmatch(r"-D(\w+)(?:=(.*))?", str(opt))
        if m:
            defined[m.group(1)] = m.group(2) if m.group(2) is not None else "1"
    return defined


def _resolve_type(text: str, code: str, macros: dict) -> str:
    typedefs = dict((alias, base) for base, alias in re.findall(r"\btypedef\s+([\w ]+?)\s+(\w+)\s*;", code))
    t = " ".join(text.split())
    for _ in range(8):
        if t in macros:
            t = " ".join(macros[t].split())
        elif t in typedefs:
            t = " ".join(typedefs[t].split())
        else:
            break
    if t not in C_TYPES:
        raise TypeError(f"kernel parameter type {text!r} ({t!r}) has no NumPy equivalent")
    return t


#: ``extern "C" __global__ void [__launch_bounds__(...)] name(params)``: groups bounds, name, params
_KERNEL_RE = r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\(([^)]*)\)\s*)?({name})\s*\(([^)]*)\)'


def kernel_names(code: str) -> list[str]:
    """The ``extern "C" __global__`` kernels defined in ``code``."""
    return [m.group(2) for m in re.finditer(_KERNEL_RE.format(name=r"\w+"), _strip_comments(code))]


def _kernel_match(code: str, name: str):
    m = re.search(_KERNEL_RE.format(name=re.escape(name)), _strip_comments(code))
    if m is None:
        raise LookupError(f'no extern "C" __global__ kernel named {name!r}')
    return m


def max_threads_per_block(code: str, name: str, options=()) -> int | None:
    """The first argument of the kernel's ``__launch_bounds__`` (a launch with more threads
    per block fails on a GPU), or None without one."""
    bounds = _kernel_match(code, name).group(1)
    if bounds is None:
        return None
    first = bounds.split(",")[0].strip()
    macros = _macros(_strip_comments(code), options)
    first = macros.get(first, first)
    return int(first) if first.isdigit() else enum_values(code)[first]


def kernel_signature(code: str, name: str, options=()) -> list[Param]:
    """The parameters of ``extern "C" __global__ void name(...)`` in ``code``, with their types
    resolved through typedefs and macros (``options`` may define macros with -D)."""
    plain = _strip_comments(code)
    m = _kernel_match(code, name)
    macros = _macros(plain, options)
    params = []
    for decl in (p.strip() for p in m.group(3).split(",")):
        if not decl or decl == "void":
            continue
        pm = re.fullmatch(r"(.*?)([\s*]+)(\w+)", decl, flags=re.S)
        if pm is None:
            raise TypeError(f"cannot read kernel parameter {decl!r}")
        head, stars, pname = pm.groups()
        words = (head + " " + stars.replace("*", " ")).split()
        const = "const" in words
        base = " ".join(w for w in words if w not in ("const", "__restrict__", "volatile"))
        npointers = stars.count("*") + head.count("*")
        if npointers > 1:
            raise TypeError(f"kernel parameter {decl!r}: pointers to pointers are not supported")
        base = base.replace("*", " ").strip()
        params.append(Param(decl, pname, _resolve_type(base, plain, macros), npointers == 1, const))
    return params


_KERNELS: dict = {}


def default_raw_module():
    """The RawModule class kernels are built with unless one is given: ``cupy.RawModule``."""
    import cupy
    return cupy.RawModule


def get_kernel(dtype, raw_module=None, name: str = RENDER_KERNEL, source_name: str = RENDER_SOURCE):
    """The compiled kernel ``name`` for precision ``dtype``, built once per process.

    ``raw_module``: a class with ``cupy.RawModule``'s interface (``RawModule(code=...,
    options=...)``, ``.get_function(name)``); default ``cupy.RawModule``.  The tests pass
    :class:`nbxp.kernels.cpu.CpuRawModule`.
    """
    if raw_module is None:
        raw_module = default_raw_module()
    key = (raw_module, real_name(dtype), name, source_name)
    if key not in _KERNELS:
        module = raw_module(code=source(source_name), options=compile_options(dtype))
        _KERNELS[key] = module.get_function(name)
    return _KERNELS[key]
