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
    if len(vals) < 9:
        raise InputError(f"-mat: {path} must start with nine numbers (a 3x3 A matrix), found {len(vals)}")
    bad = [i for i, v in enumerate(vals) if not np.isfinite(v)]
    if bad:
        raise InputError(f"-mat: {path}: number {bad[0] + 1} of the A matrix ({words[bad[0]][:30]}) is not finite")
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
        # the set-up divides by the wavelength and by |X Y Z|: refuse values it cannot use
        if not all(np.isfinite(v)):
            raise InputError(f"-sourcefile: {path} line {n}: non-finite value in {s[:60]!r}")
        if len(v) >= 3 and v[0] == v[1] == v[2] == 0.0:
            raise InputError(f"-sourcefile: {path} line {n}: the source position X Y Z is the sample's (0 0 0), "
                             "which gives no direction")
        if len(v) == 5 and not v[4] > 0:
            raise InputError(f"-sourcefile: {path} line {n}: the wavelength (fifth column, m) must be positive, "
                             f"got {v[4]:g}")
        rows.append(v + [np.nan] * (5 - len(v)))
    if not rows:
        raise InputError(f"-sourcefile: {path} holds no sources")
    return np.array(rows, dtype=float)
