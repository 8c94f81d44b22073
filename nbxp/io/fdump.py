"""``Fdump.bin``: nanoBragg's binary cache of the structure-factor grid.

Layout: an ASCII line ``h_min h_max k_min k_max l_min l_max`` followed by ``\\n\\f``, then
(Hr+1) x (Kr+1) x (Lr+1) native doubles (Hr = h_max - h_min + 1, ...), h slowest; the extra
last plane in each direction is zero padding that nanoBragg allocates and writes.

Other nanoBragg-compatible programs write variants that nanoBragg's own reader (a
``scanf`` of six integers and a form feed, where the newline of the format matches any
white space or none) also accepts or that they read back themselves: the header without the
newline before the form feed, and the grid without the padding, Hr x Kr x Lr doubles (early
versions of the PyTorch port of nanoBragg).  :func:`read_fdump` reads all of them and tells
the two grid layouts apart by the size of the data; :func:`write_fdump` writes nanoBragg's.
"""

from __future__ import annotations

import re

import numpy as np

from ..config import HKLGrid
from . import InputError, atomic_write

# six integers, white space other than the form feed itself (a data byte may equal 0x0c),
# then the form feed
_HEADER = re.compile(rb"^[ \t\r\n]*(-?\d+)[ \t]+(-?\d+)[ \t]+(-?\d+)[ \t]+(-?\d+)[ \t]+(-?\d+)[ \t]+(-?\d+)[ \t\r\n]*\f")

#: the largest grid accepted (points), as for text HKL files
MAX_POINTS = 2**31


def read_fdump(path: str) -> HKLGrid:
    """The grid of an ``Fdump.bin`` in either layout (see the module docstring); raise
    :class:`InputError` naming ``path`` when the header is malformed, the index range is
    empty or absurd, the data size fits neither layout, or a value is not finite."""
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
    if int(np.prod(padded, dtype=object)) > MAX_POINTS:
        raise InputError(f"{path}: the index range {shape} in its header is too large for a grid")
    body = memoryview(raw)[m.end():]
    n_padded, n_plain = int(np.prod(padded)) * 8, int(np.prod(shape)) * 8
    if len(body) == n_padded:
        F = np.frombuffer(body, dtype=np.float64).reshape(padded)[:shape[0], :shape[1], :shape[2]]
    elif len(body) == n_plain:
        F = np.frombuffer(body, dtype=np.float64).reshape(shape)
    else:
        raise InputError(f"{path}: {len(body)} data bytes fit neither Fdump layout for the index range in its "
                         f"header: {n_padded} (nanoBragg's, one spare plane per axis) or {n_plain} (without)")
    if not np.all(np.isfinite(F)):
        raise InputError(f"{path}: holds non-finite structure factors")
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
