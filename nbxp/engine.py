"""The array-API engine: a float image from an :class:`~nbxp.experiment.Experiment`.

The unit of work is a *tile*: a sorted array of flat pixel indices (slow * fpixels + fast).
ROI and mask only decide which indices enter the tiles, so any later selection (shoeboxes,
panels) uses the same path.  Inside a tile every sub-path of every pixel is evaluated at
once, broadcast over axes in nanoBragg's loop order:

    pixel, sensor layer x sub-pixel (slow, fast) [Q], source [S], phi step x domain [R]

Quantities that depend only on the sub-pixel (position, diffracted direction, solid angle,
capture fraction) are computed on (P, Q); polarization on (P, Q, S); Miller indices, lattice
factor and structure factor on (P, Q, S, R).  Memory is bounded by sizing tiles to a fixed
number of sub-path evaluations.

Reproduced nanoBragg semantics (see docs): without ``-oversample_omega/_polar/_thick`` the
pixel sum is multiplied once by the solid angle of the first sub-pixel, the polarization of
the first rendered source and the capture fraction of the last sensor layer; with a flag the
running sum is multiplied by that factor at every addition.  With interpolation on, the
first evaluation (in nanoBragg's loop order) whose 4x4x4 neighbourhood leaves the HKL grid
switches interpolation off for it and for everything after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import R_E_SQR
from .experiment import Experiment
from .geometry import capture_fraction, solid_angle, subpixel_positions
from .physics import lattice_factor, polarization
from .vectors import unitize

#: sub-path evaluations per tile: keeps each temporary at ~1 MB in float64
DEFAULT_TILE_EVALUATIONS = 1 << 17


@dataclass
class InterpolationState:
    """Whether tricubic interpolation is still on, and where it was switched off."""

    active: bool
    trigger: tuple | None = None  # (pixel index, h, k, l, h0, k0, l0)


def selected_pixels(exp: Experiment, rows: range) -> np.ndarray:
    """Flat indices (host int64, ascending) of the pixels to simulate in ``rows``: inside the
    inclusive ROI and not masked."""
    fmin, fmax, smin, smax = exp.roi
    F = exp.geom.fpixels
    f = np.arange(max(fmin, 0), min(fmax, F - 1) + 1)
    s = np.arange(max(rows.start, smin, 0), min(rows.stop - 1, smax, exp.geom.spixels - 1) + 1)
    if f.size == 0 or s.size == 0:
        return np.zeros(0, dtype=np.int64)
    idx = (s[:, None] * F + f[None, :]).reshape(-1)
    if exp.mask is not None:
        idx = idx[exp.mask.reshape(-1)[idx]]
    return idx.astype(np.int64)


def tile_values(exp: Experiment, idx, state: InterpolationState):
    """Photons per pixel (array (P,)) for the flat pixel indices ``idx`` (array (P,))."""
    xp, dtype, g = exp.xp, exp.dtype, exp.geom
    O, T = exp.oversample, exp.thicksteps
    P = idx.shape[0]
    fpix, spix = idx % g.fpixels, idx // g.fpixels
    layers = xp.arange(T, dtype=dtype)
    pos, _, _ = subpixel_positions(g, fpix, spix, O, layers * exp.thickstep, xp=xp)
    Q = T * O * O
    pos = xp.reshape(pos, (P, Q, 3))
    d, airpath = unitize(pos, xp=xp)  # diffracted directions (P, Q, 3), path lengths (m)

    omega = solid_angle(airpath, g.pixel_size, g.close_distance, g.point_pixel, xp=xp)  # (P, Q)
    layer_of_q = xp.reshape(xp.broadcast_to(layers[:, None], (T, O * O)), (Q,))
    if exp.oversample_thick or exp.thickness != 0.0:
        capture = capture_fraction(d, g.odet, layer_of_q, exp.thickstep, exp.mu, xp=xp)  # (P, Q)
    else:
        capture = xp.ones_like(omega)

    inc, lam = exp.incident, exp.lambdas  # (S, 3), (S,)
    S = inc.shape[0]
    scat = (d[:, :, None, :] - inc[None, None, :, :]) / lam[None, None, :, None]  # (P, Q, S, 3) 1/m
    valid = None
    if exp.dmin > 0.0:
        stol = 0.5 * xp.sqrt(xp.sum(scat * scat, axis=-1))
        safe = xp.where(stol > 0, stol, xp.ones_like(stol))
        valid = ~((stol > 0) & (exp.dmin > 0.5 / safe))  # (P, Q, S)
    if exp.nopolar and not exp.oversample_polar:
        polar = None
    else:
        polar = polarization(inc[None, None, :, :], d[:, :, None, :], exp.polar_axis, exp.kahn, xp=xp)

    # Miller indices for every orientation: h = a.S, k = b.S, l = c.S
    R = exp.orient.shape[0]
    W = xp.reshape(exp.orient, (R * 3, 3))
    hkl = xp.reshape(xp.matmul(scat, xp.permute_dims(W, (1, 0))), (P, Q, S, R, 3))
    F_latt = lattice_factor(hkl, exp.N, exp.shape, exp.fudge, exp.recip, xp=xp)  # (P, Q, S, R)

    evaluated = None  # sub-paths nanoBragg reaches the intensity sum for
    if valid is not None:
        evaluated = xp.broadcast_to(valid[..., None], F_latt.shape)
    if exp.I_bg == 0.0:
        nz = F_latt != 0.0
        evaluated = nz if evaluated is None else evaluated & nz

    hkl0 = xp.ceil(hkl - 0.5)
    F_cell = exp.F.nearest(hkl0)
    if state.active:
        F_cell = _with_interpolation(exp, hkl, hkl0, F_cell, evaluated, idx, state)

    term = F_cell * F_cell * F_latt * F_latt
    if evaluated is not None:
        term = xp.where(evaluated, term, xp.zeros_like(term))

    flags = exp.oversample_omega or exp.oversample_polar or exp.oversample_thick
    if not flags:
        I = exp.I_bg + xp.sum(xp.reshape(term, (P, -1)), axis=1)
    else:
        # running sum multiplied at every addition: I_n = (I_{n-1} + t_n) g_n, solved as
        # I = I_bg prod(g) + sum_n t_n prod_{j>=n} g_j with a reversed cumulative product
        gfac = xp.ones_like(term)
        if exp.oversample_thick:
            gfac = gfac * capture[:, :, None, None]
        if exp.oversample_omega:
            gfac = gfac * omega[:, :, None, None]
        if exp.oversample_polar:
            gfac = gfac * polar[:, :, :, None]
        if evaluated is not None:
            gfac = xp.where(evaluated, gfac, xp.ones_like(gfac))
        gflat = xp.flip(xp.reshape(gfac, (P, -1)), axis=1)
        tail = xp.flip(xp.cumulative_prod(gflat, axis=1), axis=1)  # prod_{j>=n} g_j
        I = exp.I_bg * tail[:, 0] + xp.sum(xp.reshape(term, (P, -1)) * tail, axis=1)

    value = R_E_SQR * exp.fluence * I / exp.steps
    if not exp.oversample_thick:
        value = value * capture[:, (T - 1) * O * O]
    if not exp.oversample_omega:
        value = value * omega[:, 0]
    if not exp.oversample_polar and polar is not None:
        value = value * _first_rendered(polar, valid, xp=xp)
    return value


def _first_rendered(polar, valid, *, xp):
    """Polarization of the first (sub-pixel, source) nanoBragg renders in each pixel; 0 when
    every source of every sub-pixel is cut by -dmin (the reference then leaves it unset)."""
    P = polar.shape[0]
    flat = xp.reshape(polar, (P, -1))
    if valid is None:
        return flat[:, 0]
    v = xp.reshape(valid, (P, -1))
    first = xp.argmax(xp.astype(v, xp.int8), axis=1)
    picked = xp.take_along_axis(flat, first[:, None], axis=1)[:, 0]
    return xp.where(xp.any(v, axis=1), picked, xp.zeros_like(picked))


def _with_interpolation(exp, hkl, hkl0, F_nearest, evaluated, idx, state):
    """Tricubic F up to the first out-of-range evaluation in loop order, nearest after it."""
    xp = exp.xp
    F_interp = exp.F.tricubic(hkl)
    oor = exp.F.out_of_interpolation_range(hkl)
    if evaluated is not None:
        oor = oor & evaluated
    flat = xp.reshape(oor, (-1,))
    if not bool(xp.any(flat)):
        return F_interp
    first = int(xp.argmax(xp.astype(flat, xp.int8)))
    per_pixel = flat.shape[0] // idx.shape[0]
    p, r = divmod(first, per_pixel)
    h = xp.reshape(hkl, (-1, 3))
    h0 = xp.reshape(hkl0, (-1, 3))
    state.active = False
    state.trigger = (int(idx[p]), *(float(h[first, i]) for i in range(3)), *(int(h0[first, i]) for i in range(3)))
    order = xp.reshape(xp.arange(flat.shape[0]), F_interp.shape)
    return xp.where(order < first, F_interp, F_nearest)


def tile_size(exp: Experiment, budget: int = DEFAULT_TILE_EVALUATIONS) -> int:
    per_pixel = exp.thicksteps * exp.oversample ** 2 * exp.incident.shape[0] * exp.orient.shape[0]
    if exp.interpolate:
        per_pixel *= 4  # the 64-point stencil keeps a few more temporaries alive
    return max(1, budget // max(per_pixel, 1))


def render(exp: Experiment, *, tile_budget: int = DEFAULT_TILE_EVALUATIONS, progress=None):
    """The float image (spixels, fpixels) in ``exp.dtype`` on ``exp.xp``, and the state of
    interpolation at the end (for the one-time fallback warning)."""
    xp, g = exp.xp, exp.geom
    state = InterpolationState(active=exp.interpolate)
    P = tile_size(exp, tile_budget)
    rows_per_block = max(1, min(g.spixels, (1 << 20) // max(g.fpixels, 1)))
    values, chosen = [], []
    for r0 in range(0, g.spixels, rows_per_block):
        sel = selected_pixels(exp, range(r0, min(r0 + rows_per_block, g.spixels)))
        for t0 in range(0, sel.shape[0], P):
            ids = sel[t0:t0 + P]
            values.append(tile_values(exp, xp.asarray(ids), state))
            chosen.append(ids)
            if progress is not None:
                progress(ids.shape[0])
    return assemble(exp, chosen, values), state


def assemble(exp: Experiment, chosen: list, values: list):
    """Scatter per-tile values into a zero image with a gather (the array API has no
    integer-array assignment): pixel p takes value number rank(p) when selected."""
    xp, g = exp.xp, exp.geom
    npix = g.fpixels * g.spixels
    if not chosen:
        return xp.zeros((g.spixels, g.fpixels), dtype=exp.dtype)
    ids = np.concatenate(chosen)
    selected = np.zeros(npix, dtype=bool)
    selected[ids] = True
    rank = np.cumsum(selected) - 1
    rank[~selected] = ids.shape[0]  # points at the appended zero
    vals = xp.concat(values + [xp.zeros((1,), dtype=exp.dtype)])
    img = xp.take(vals, xp.asarray(rank), axis=0)
    return xp.reshape(img, (g.spixels, g.fpixels))
