"""X-ray sources: beam divergence and spectral dispersion, or a user's source list.

Each source is an incident direction (unit vector along the propagation) and a wavelength.
nanoBragg builds a raster of divergence angles (trimmed to an ellipse unless square
divergence is asked for) times a set of wavelengths across the dispersion; source weights
are not used in the intensity (every source counts equally, normalised by the step count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import BeamConfig
from .resources import ceil_count
from .vectors import rotate_axis


@dataclass
class DivergenceSampling:
    hdivrange: float
    hdivstep: float
    hdivsteps: int
    vdivrange: float
    vdivstep: float
    vdivsteps: int
    dispersion: float
    dispstep: float
    dispsteps: int


def _auto_steps(rng_: float, step: float, steps: int, *, thick_style=False) -> tuple[float, float, int]:
    """nanoBragg's rule for completing (range, step, count) from what the user gave."""
    if steps <= 0:
        if rng_ < 0.0:
            if step <= 0.0:
                return 0.0, 0.0, 1
            return step, step, 2
        if step <= 0.0:
            if thick_style:
                return rng_, rng_ / 2, 2
            return rng_, rng_, 2
        return rng_, step, ceil_count(rng_ / step)
    if rng_ < 0.0:
        if step <= 0.0:
            r = 0.5e-6 if thick_style else 1.0
            return r, r / steps, steps
        return step, step, 2
    if step <= 0.0:
        steps = 2 if steps <= 1 else steps
        return rng_, rng_ / (steps - 1), steps
    return rng_, step, steps


def _sanitise(rng_: float, step: float, steps: int) -> tuple[float, float, int]:
    if rng_ <= 0.0 or step <= 0.0 or steps <= 0:
        return 0.0, 0.0, 1
    return rng_, step, steps


def auto_steps(rng_, step, steps, *, thick_style=False):
    """Complete and sanitise a (range, step, count) triple; None means not given."""
    r = -1.0 if rng_ is None else rng_
    s = -1.0 if step is None else step
    n = -1 if steps is None else steps
    return _sanitise(*_auto_steps(r, s, n, thick_style=thick_style))


def divergence_sampling(beam: BeamConfig) -> DivergenceSampling:
    h = auto_steps(beam.hdivrange, beam.hdivstep, beam.hdivsteps)
    v = auto_steps(beam.vdivrange, beam.vdivstep, beam.vdivsteps)
    # dispersion defaults to 0 (not "unset") in nanoBragg
    d = auto_steps(beam.dispersion, None, beam.dispsteps)
    return DivergenceSampling(*h, *v, *d)


def divergence_angles(s: DivergenceSampling, round_div: bool) -> list[tuple[float, float]]:
    """(hdiv, vdiv) pairs in nanoBragg's order, trimmed to an ellipse when ``round_div``."""
    out = []
    for i in range(s.hdivsteps):
        for j in range(s.vdivsteps):
            hdiv = s.hdivstep * i - s.hdivrange / 2.0
            vdiv = s.vdivstep * j - s.vdivrange / 2.0
            if round_div:
                with np.errstate(all="ignore"):
                    t = np.float64(hdiv * hdiv - s.hdivstep * s.hdivstep / 4.0 * (1 - s.hdivsteps % 2)) / s.hdivrange / s.hdivrange
                    t += np.float64(vdiv * vdiv - s.vdivstep * s.vdivstep / 4.0 * (1 - s.vdivsteps % 2)) / s.vdivrange / s.vdivrange
                if t * 4.0 > 1.1:  # NaN (zero range) never trims, as in the reference
                    continue
            out.append((hdiv, vdiv))
    return out


def wavelengths(wavelength: float, s: DivergenceSampling) -> list[float]:
    return [wavelength * (1.0 + s.dispstep * i - s.dispersion / 2.0) for i in range(s.dispsteps)]


def build_sources(beam: BeamConfig, beam_vector: np.ndarray, polar_vector: np.ndarray, *, xp, dtype):
    """Incident unit vectors (S, 3) and wavelengths (S,) (m), plus a host table for printing.

    ``beam_vector`` and ``polar_vector`` are unit vectors (host arrays).  A source sits at
    ``-source_distance * beam`` rotated by vdiv about the polarization axis and then by hdiv
    about beam x polarization; the incident direction is minus its unit position.
    """
    if beam.sources is not None:
        table = np.array(beam.sources, dtype=float, copy=True)
        for i in range(3):
            miss = np.isnan(table[:, i])
            table[miss, i] = -beam.source_distance * beam_vector[i]
        table[np.isnan(table[:, 3]), 3] = 1.0
        table[np.isnan(table[:, 4]), 4] = beam.wavelength
        sampling = None
    else:
        sampling = divergence_sampling(beam)
        angles = divergence_angles(sampling, beam.round_div)
        lams = wavelengths(beam.wavelength, sampling)
        vert = np.cross(beam_vector, polar_vector)
        vn = np.linalg.norm(vert)
        vert = vert / vn if vn != 0 else np.zeros(3)
        rows = []
        n = len(angles) * len(lams)
        for hdiv, vdiv in angles:
            v0 = np.asarray(-beam.source_distance * beam_vector, dtype=float)
            v1 = rotate_axis(v0, polar_vector, vdiv, xp=np)
            v2 = rotate_axis(v1, vert, hdiv, xp=np)
            for lam in lams:
                rows.append([v2[0], v2[1], v2[2], 1.0 / n, lam])
        table = np.array(rows, dtype=float).reshape(-1, 5)
    pos = table[:, :3]
    mag = np.sqrt(np.sum(pos * pos, axis=1))
    unit = np.where(mag[:, None] != 0, pos / np.where(mag == 0, 1.0, mag)[:, None], 0.0)
    incident = xp.asarray(-unit, dtype=dtype)
    lambdas = xp.asarray(table[:, 4], dtype=dtype)
    return incident, lambdas, table, sampling


def wavelength_factors(beam: BeamConfig) -> tuple[np.ndarray, np.ndarray]:
    """Host arrays (scale, offset), one entry per source in :func:`build_sources`' order,
    with wavelength_s = beam.wavelength * scale_s + offset_s: the dispersion's factors
    (1 + step i - dispersion/2, offset 0) for generated sources; for a source list, 1 and 0
    where a row takes the beam's wavelength, 0 and its own wavelength elsewhere.  The
    differentiable set-up (nbxp.params) rebuilds the wavelengths from a stand-in this way,
    with the same floating-point operations as the host."""
    if beam.sources is not None:
        lam = np.asarray(beam.sources, dtype=float)[:, 4]
        miss = np.isnan(lam)
        return np.where(miss, 1.0, 0.0), np.where(miss, 0.0, lam)
    s = divergence_sampling(beam)
    n_angles = len(divergence_angles(s, beam.round_div))
    scale = [1.0 + s.dispstep * i - s.dispersion / 2.0 for i in range(s.dispsteps)] * n_angles
    return np.asarray(scale, dtype=float), np.zeros(len(scale))
