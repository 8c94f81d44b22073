"""``Fdump.bin``: nanoBragg's binary cache of the structure-factor grid.

Layout: an ASCII line ``h_min h_max k_min k_max l_min l_max`` followed by ``\\n\\f``, then
(Hr+1) x (Kr+1) x (Lr+1) native doubles (Hr = h_max - h_min + 1, ...), h slowest; the extra
last plane in each direction is zero padding that nanoBragg allocates and writes.
"""

from __future__ import annotations

import re

import numpy as np

from ..config import HKLGrid
from . import InputError, atomic_write

_HEADER = re.compile(rb"^\s*(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s*\n\f")


def read_fdump(path: str) -> HKLGrid:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    m = _HEADER.match(raw[:256])
    if not m:
        raise InputError(f"{path}: not an Fdump.bin file (no 'h_min h_max k_min k_max l_min l_max' header)")
    hmin, hmax, kmin, kmax, lmin, lmax = (int(x) for x in m.groups())
    shape = (hmax - hmin + 1, kmax - kmin + 1, lmax - lmin + 1)
    if min(shape) < 1:
        raise InputError(f"{path}: empty index range in header")
    padded = tuple(n + 1 for n in shape)
    need = int(np.prod(padded)) * 8
    body = raw[m.end():]
    if len(body) < need:
        raise InputError(f"{path}: truncated: {len(body)} data bytes, expected {need}")
    F = np.frombuffer(body[:need], dtype=np.float64).reshape(padded)[:shape[0], :shape[1], :shape[2]]
    return HKLGrid(F=F.copy(), h_min=hmin, k_min=kmin, l_min=lmin, count=int(np.prod(shape)))


def write_fdump(path: str, grid: HKLGrid) -> None:
    """Write ``grid`` in nanoBragg's layout (byte-identical to nanoBragg for the same input),
    to a temporary name first so a failed write leaves no partial file."""
    Hr, Kr, Lr = grid.F.shape
    hmax, kmax, lmax = grid.maxima
    head = f"{grid.h_min} {hmax} {grid.k_min} {kmax} {grid.l_min} {lmax}\n\f".encode()
    padded = np.zeros((Hr + 1, Kr + 1, Lr + 1))
    padded[:Hr, :Kr, :Lr] = grid.F
    atomic_write(path, [head, padded])
