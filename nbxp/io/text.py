"""Small text inputs: MOSFLM A matrices and source lists."""

from __future__ import annotations

import numpy as np

from . import InputError


def read_matrix(path: str) -> np.ndarray:
    """The 3x3 A matrix of a MOSFLM-style ``.mat`` file (first nine numbers, row by row)."""
    try:
        with open(path, "r") as fh:
            words = fh.read().split()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"-mat: cannot read {path}: {getattr(e, 'strerror', None) or 'not text'}") from None
    vals = []
    for w in words:
        try:
            vals.append(float(w))
        except ValueError:
            break
        if len(vals) == 9:
            break
    if len(vals) < 9 or not np.all(np.isfinite(vals)):
        raise InputError(f"-mat: {path} must start with nine numbers (a 3x3 A matrix), found {len(vals)}")
    return np.array(vals).reshape(3, 3)


def read_sources(path: str) -> np.ndarray:
    """Source list: up to five columns per line, X Y Z (m) weight wavelength (m).

    Missing columns are NaN (nanoBragg's defaults fill them later).  Blank lines and ``#``
    comments are skipped.
    """
    try:
        with open(path, "r") as fh:
            lines = fh.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"-sourcefile: cannot read {path}: {getattr(e, 'strerror', None) or 'not text'}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        w = s.replace(",", " ").replace(";", " ").replace("\t", " ").split()[:5]
        try:
            v = [float(x) for x in w]
        except ValueError:
            raise InputError(f"-sourcefile: {path} line {n}: expected up to five numbers, got {s[:60]!r}") from None
        rows.append(v + [np.nan] * (5 - len(v)))
    if not rows:
        raise InputError(f"-sourcefile: {path} holds no sources")
    return np.array(rows, dtype=float)
