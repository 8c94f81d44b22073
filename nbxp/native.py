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


def _build(name: str) -> ctypes.CDLL | None:
    cc = c_compiler()
    src = KERNELS / f"{name}.c"
    if cc is None or not src.is_file():
        return None
    key = hashlib.sha256(src.read_bytes() + cc.encode() + " ".join(CFLAGS).encode()
                         + sys.platform.encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if not target.is_file():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # build beside the target and rename: concurrent first runs never see half a file
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
            os.close(fd)
            r = subprocess.run([cc, *CFLAGS, "-o", tmp, str(src), "-lm"], capture_output=True, text=True)
            if r.returncode != 0:
                os.unlink(tmp)
                return None
            os.replace(tmp, target)
        except OSError:
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError:
        return None
