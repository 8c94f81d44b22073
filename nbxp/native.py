"""Small C helpers built on first use with the system C compiler and loaded with ctypes.

Some work is inherently serial and fast only as compiled code: the noise image replays
nanoBragg's single random stream pixel by pixel.  nbxp ships such helpers as C source
(``nbxp/kernels/*.c``), compiles each once per machine into a cache directory
(``$NBXP_CACHE_DIR``, else ``$XDG_CACHE_HOME/nbxp``, else ``~/.cache/nbxp``), keyed by a hash of
the source, compiler and flags, and loads it with ctypes.  Every helper has a pure-Python
equivalent; without a compiler (or with ``NBXP_NO_NATIVE=1``) nbxp uses that instead, with
the same results.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

KERNELS = Path(__file__).resolve().parent / "kernels"
#: IEEE-exact arithmetic: no contraction into FMAs, no fast-math; results must equal the
#: Python reference bit for bit
CFLAGS = ("-O2", "-fPIC", "-shared", "-std=c99", "-ffp-contract=off", "-fno-fast-math")

_loaded: dict[str, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    base = os.environ.get("NBXP_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nbxp"


def c_compiler() -> str | None:
    """The C compiler: $CC, Python's own build compiler, or cc/gcc/clang on the PATH."""
    for cand in (os.environ.get("CC"), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def load(name: str) -> ctypes.CDLL | None:
    """The compiled helper ``kernels/<name>.c`` as a ctypes library, or None where it
    cannot be built (no compiler, NBXP_NO_NATIVE set, compilation failed)."""
    if name in _loaded:
        return _loaded[name]
    _loaded[name] = lib = None if os.environ.get("NBXP_NO_NATIVE") else _build(name)
    return lib


def compile_cached(cmd: list[str], code: str, stem: str, *, subdir: str = "", libs=(), key_extra: str = "") -> Path:
    """A shared library built from ``code`` (fed to the compiler on standard input) with
    ``cmd`` (compiler, flags and the input language, e.g. ``[cc, "-O2", ..., "-x", "c"]``),
    linked with ``libs``; cached in ``cache_dir()/subdir`` under a hash of the code, the
    command and ``key_extra`` (the text of included headers), so it is built once per
    machine.  Raises RuntimeError with the compiler's message when the build fails."""
    key = hashlib.sha256("\0".join([code, *cmd, *libs, key_extra, sys.platform]).encode()).hexdigest()[:24]
    d = cache_dir() / subdir if subdir else cache_dir()
    lib = d / f"{stem}-{key}.so"
    if lib.is_file():
        return lib
    d.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename: concurrent first runs never see half a file
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".so")
    os.close(fd)
    try:
        p = subprocess.run([*cmd, "-o", tmp, "-", *libs], input=code, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"building {stem} failed ({' '.join(cmd)}):\n{p.stderr}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _build(name: str) -> ctypes.CDLL | None:
    cc = c_compiler()
    src = KERNELS / f"{name}.c"
    if cc is None or not src.is_file():
        return None
    try:
        return ctypes.CDLL(str(compile_cached([cc, *CFLAGS, "-x", "c"], src.read_text(), name, libs=["-lm"])))
    except (OSError, RuntimeError):
        return None
