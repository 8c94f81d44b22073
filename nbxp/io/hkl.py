"""Text structure-factor files: one reflection per line, ``h k l F`` (extra columns ignored).

nanoBragg reads P1 amplitudes this way, fills a dense grid spanning the index range
(prefilled with ``default_F``), and uses it for every lookup.  Blank lines and lines
starting with ``#`` are skipped (nanoBragg itself rejects comments).
"""

from __future__ import annotations

import gzip
import warnings

import numpy as np

from ..config import HKLGrid
from ..resources import available_memory
from . import InputError


def read_hkl(path: str, default_F: float = 0.0) -> HKLGrid:
    """Read ``path`` into a dense grid; raise :class:`InputError` naming the bad line."""
    a = read_hkl_rows(path)
    return _grid(a, default_F, len(a), path)


def _open_text(path: str):
    """``path`` opened as text; gzip-compressed content (magic 1f 8b) is decompressed
    whatever the file is called."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gz else open(path, "r")


def read_hkl_rows(path: str) -> np.ndarray:
    """The (n, 4) float array of ``h k l F`` rows of ``path`` (plain or gzip-compressed)."""
    try:
        # fast path: NumPy's C parser; any irregular file goes to the line-by-line reader,
        # which names the offending line
        with _open_text(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below, in one line
            a = np.loadtxt(fh, usecols=(0, 1, 2, 3), comments="#", ndmin=2, dtype=float)
        if a.shape[0] and np.all(np.isfinite(a)):
            return a
    except (ValueError, IndexError, OSError, UnicodeDecodeError, EOFError):
        pass
    try:
        with _open_text(path) as fh:
            lines = fh.readlines()
    except OSError as e:
        raise InputError(f"-hkl: cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        raise InputError(f"-hkl: {path} is not a text file of 'h k l F' lines") from None
    rows = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        w = s.replace(",", " ").split()
        try:
            h, k, l, F = float(w[0]), float(w[1]), float(w[2]), float(w[3])
        except (ValueError, IndexError):
            raise InputError(f"-hkl: {path} line {n}: expected 'h k l F', got {s[:60]!r}") from None
        if not all(np.isfinite((h, k, l, F))):
            raise InputError(f"-hkl: {path} line {n}: non-finite value in {s[:60]!r}")
        rows.append((h, k, l, F))
    if not rows:
        raise InputError(f"-hkl: {path} holds no 'h k l F' lines")
    return np.array(rows)


def _grid(a: np.ndarray, default_F: float, count: int, path: str) -> HKLGrid:
    # nanoBragg truncates the indices to integers when it stores them
    if np.abs(a[:, :3]).max() > 2**40:
        raise InputError(f"-hkl: {path}: Miller index {np.abs(a[:, :3]).max():g} is too large for a grid")
    idx = np.trunc(a[:, :3]).astype(np.int64)
    lo = idx.min(axis=0)
    hi = idx.max(axis=0)
    shape = tuple(int(x) for x in hi - lo + 1)
    points = int(np.prod(shape, dtype=object))
    # the dense grid, its copy in the engine and the padded Fdump.bin copy: 3 x 8 bytes a point
    avail = available_memory()
    if points > 2**31 or (avail is not None and points * 24 > avail):
        span = ", ".join(f"{n} {int(l)}..{int(h)}" for n, l, h in zip("hkl", lo, hi))
        raise InputError(f"-hkl: {path}: the index range ({span}) needs a grid of {points:.3g} points "
                         f"({points * 24 / 2**30:.3g} GiB), too large")
    F = np.full(shape, float(default_F))
    i = idx - lo
    F[i[:, 0], i[:, 1], i[:, 2]] = a[:, 3]
    return HKLGrid(F=F, h_min=int(lo[0]), k_min=int(lo[1]), l_min=int(lo[2]), count=count)


def write_hkl(path: str, hkl: np.ndarray, F: np.ndarray) -> None:
    """Write ``h k l F`` lines (nanoBragg's text format) atomically.  F is written as the
    shortest decimal that reads back to the same double (Python's repr), so nanoBragg reading
    the file fills exactly the grid nbxp uses."""
    from . import atomic_write
    rows = zip(np.asarray(hkl, dtype=np.int64).tolist(), np.asarray(F, dtype=np.float64).tolist())
    text = "".join(f"{h} {k} {l} {f!r}\n" for (h, k, l), f in rows)
    atomic_write(path, text.encode())
