"""8-bit PGM (P5) previews as nanoBragg writes them."""

from __future__ import annotations

import numpy as np

from . import atomic_write


def write_pgm(path: str, data: np.ndarray, scale: float) -> None:
    """``data``: uint8 (spixels, fpixels); the comment line records the scale used."""
    h, w = data.shape
    head = b"P5\n%d %d\n" % (w, h) + ("# pixels scaled by %g\n" % scale).encode() + b"255\n"
    atomic_write(path, [head, np.ascontiguousarray(data, dtype=np.uint8)])
