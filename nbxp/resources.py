"""Memory a run needs, estimated from its counts before any large array is allocated.

The set-up builds arrays whose sizes are products of user-given counts: crystal
orientations (phi steps x mosaic domains), sources (divergence grid x dispersion steps),
and the engine's tiles, whose smallest unit is one pixel with every sub-path (sensor layers
x sub-pixels x sources x orientations).  A command line such as ``-phisteps 99999999999``
would otherwise run for minutes, growing memory until the system kills it.
:func:`check_fits` compares the estimate with the memory available and refuses, naming the
flags responsible and the memory needed, while a large run that fits is let through.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import ConfigError

#: counts are capped here before they are multiplied (a product of five stays a finite float)
_CAP = float(2**62)

#: bytes per source while the source list is built (host Python rows, a table, the arrays)
SOURCE_BYTES = 320
#: bytes per detector pixel held through a run: the image in the engine's dtype plus the
#: float32 copy, the SMV image and the ROI/mask images
PIXEL_BYTES = 4 + 2 + 2 + 1


@dataclass
class Part:
    """One array family of the estimate: what it is, its bytes, and the counts that size it
    as (flags, value) pairs; the flags of counts above 1 are the ones a message names."""

    what: str
    nbytes: float
    factors: tuple = ()

    @property
    def flags(self) -> list[str]:
        """The flags of the counts that make this part large: those of 1000 or more, else
        the largest one."""
        named = [f for f, v in self.factors if v >= 1000]
        return named or [max(self.factors, key=lambda fv: fv[1])[0]] if self.factors else []


def count(n) -> float:
    """A user-derived count as a float no larger than 2**62 (Python ints may be huge)."""
    try:
        return min(float(n), _CAP)
    except OverflowError:
        return _CAP


def ceil_count(x: float) -> int:
    """ceil(x) for a step count such as range/step, which may overflow to infinity for a
    tiny step: then 2**62, which the estimate refuses like any other absurd count."""
    return math.ceil(x) if math.isfinite(x) else 2**62


def setup_parts(*, pixels: int, phisteps, domains, sources, thicksteps, oversample, itemsize: int,
                interpolate: bool, grid_points: int = 0, source_flags: str = "-divsteps/-dispsteps",
                tile: bool = True) -> list[Part]:
    """The memory of a run's arrays (bytes), by family.

    ``pixels``: detector pixels; ``phisteps``, ``domains``, ``sources``, ``thicksteps``,
    ``oversample``: the counts the set-up chose (any size, capped by :func:`count`);
    ``itemsize``: 8 for float64, 4 for float32; ``tile``: count the CPU engine's tiles
    (one pixel with all its sub-paths at the least, per worker thread).
    """
    from .engine import DEFAULT_TILE_BYTES, ITEMS_PER_EVALUATION, default_threads
    P, M, S = count(phisteps), count(domains), count(sources)
    T, O = count(thicksteps), count(oversample)
    R = P * M
    f_phi, f_mos, f_src = ("-phisteps/-osc/-phistep", P), ("-mosaic_domains", M), (source_flags, S)
    parts = [
        Part(f"a {pixels}-pixel detector", pixels * (itemsize + PIXEL_BYTES), (("-detpixels", pixels),)),
        # rotated copies in the engine's dtype (phi rotation, mosaic product, row layout),
        # the host mosaic matrices and the list of phi angles
        Part(f"orientations: {P:.3g} phi steps x {M:.3g} mosaic domains", R * 9 * itemsize * 3 + M * 72 + P * 40,
             (f_phi, f_mos)),
        Part(f"{S:.3g} sources", S * SOURCE_BYTES, (f_src,)),
        Part(f"a structure-factor grid of {grid_points} points", grid_points * itemsize, (("-hkl", grid_points),)),
    ]
    if tile:
        per_pixel = T * O * O * S * R
        one = ITEMS_PER_EVALUATION * (4 if interpolate else 1) * itemsize * per_pixel
        threads = default_threads()
        nbytes = threads * max(min(float(DEFAULT_TILE_BYTES), pixels * one), one)
        parts.append(Part(f"engine tiles: {threads} x one pixel of {per_pixel:.3g} sub-paths "
                          f"({T:.3g} layers x {O:.3g}^2 sub-pixels x {S:.3g} sources x {R:.3g} orientations)", nbytes,
                          (("-oversample", O), ("-thicksteps", T), f_src, f_phi, f_mos)))
    return parts


def available_memory() -> float | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, lowered by a
    cgroup (container) limit; None where neither can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = float(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = float(fh.read().strip())
        if limit != "max":
            room = float(limit) - used
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def _gib(n: float) -> str:
    g = n / 2**30
    return f"{g:.1f} GiB" if g < 1e5 else f"{g:.2g} GiB"


def check_fits(parts: list[Part], avail: float | None = None) -> float:
    """Raise :class:`~nbxp.errors.ConfigError` when the parts together exceed the available
    memory (``avail`` bytes; default :func:`available_memory`), naming the flags of the
    parts that take most of it; return the estimated bytes otherwise."""
    need = sum(p.nbytes for p in parts)
    if avail is None:
        avail = available_memory()
    if avail is None or need <= avail or not math.isfinite(avail):
        return need
    big = sorted((p for p in parts if p.nbytes >= 0.1 * need), key=lambda p: -p.nbytes)
    flags = []
    for p in big:
        flags += [f for f in p.flags if f not in flags]
    raise ConfigError(f"{', '.join(flags)}: this run needs about {_gib(need)} of memory "
                      f"({'; '.join(f'{p.what}: {_gib(p.nbytes)}' for p in big)}), "
                      f"more than the {_gib(avail)} available")
