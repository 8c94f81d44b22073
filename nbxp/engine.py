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

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .config import R_E_SQR
from .experiment import Experiment
from .geometry import capture_fraction_cos, pixel_positions, solid_angle
from .physics import kahn_factor, lattice_factor, polarization_frame

#: memory (bytes) for the temporaries of one tile; one tile is computed per thread at a time,
#: so the engine's working memory is about threads x this, whatever the detector size.
#: 20 MiB gives 2^16 sub-path evaluations per float64 tile (2^17 in float32).  Measured on
#: a 2-core EPYC (scripts/profile_engine.py, and render() over tile sizes): one thread is
#: within 10% of its best from 4 to 40 MiB; two threads need large tiles, because every
#: NumPy call takes the GIL back and with small tiles the threads mostly wait for each other
#: (two threads are 2x slower than one at 1 MiB, 1.4x faster at 20 MiB)
DEFAULT_TILE_BYTES = 20 * 2**20

#: peak live array elements per sub-path evaluation inside a tile, as Python's allocation
#: accounting counts them over the benchmark cases (24-42; per-pixel arrays weigh most when a pixel
#: has one sub-path); the 64-point tricubic stencil keeps about four times as many
ITEMS_PER_EVALUATION = 40


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


def rendered_mask(exp: Experiment) -> np.ndarray:
    """Host bool image of the pixels that are simulated: inside the ROI and not masked."""
    g = exp.geom
    fmin, fmax, smin, smax = exp.roi
    m = np.zeros((g.spixels, g.fpixels), dtype=bool)
    m[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1] = True
    if exp.mask is not None:
        m &= exp.mask
    return m


def rendered_masks(exp: Experiment) -> list:
    """:func:`rendered_mask` of every panel, in order (one entry for nanoBragg's detector)."""
    return [rendered_mask(exp.panel_view(p)) for p in range(len(exp.panels))]


def panel_tiles(exp: Experiment, tile_bytes: int = DEFAULT_TILE_BYTES):
    """(panel, tile) pairs in render order: the tiles of :func:`tiles` of each panel in
    turn, as host arrays of *global* pixel indices (the panels concatenated in order,
    :attr:`Experiment.panel_offsets`); a tile never crosses a panel.  For nanoBragg's
    one-panel detector exactly :func:`tiles`, with panel 0."""
    offsets = exp.panel_offsets
    for p in range(len(exp.panels)):
        view = exp.panel_view(p)
        for ids in tiles(view, tile_size(view, tile_bytes)):
            yield p, (ids + offsets[p] if offsets[p] else ids)


def panel_values(view: Experiment, offset: int, idx, state: InterpolationState):
    """Photons per pixel (array (P,)) for global pixel indices ``idx`` (an array of the
    namespace) of the panel whose view (:meth:`Experiment.panel_view`) is ``view`` and whose
    pixels start at global index ``offset``: :func:`tile_values` of the view on the local
    indices; an interpolation switch-off is recorded at its global index."""
    off = int(offset)
    before = state.trigger
    v = tile_values(view, idx - off if off else idx, state)
    if state.trigger is not before and state.trigger is not None:
        state.trigger = (state.trigger[0] + off, *state.trigger[1:])
    return v


def tile_values(exp: Experiment, idx, state: InterpolationState):
    """Photons per pixel (array (P,)) for the flat pixel indices ``idx`` (array (P,)).

    Arrays keep the pixel axis last (contiguous) and vector components first, so every
    elementwise operation streams over whole tiles.
    """
    xp, dtype, g = exp.xp, exp.dtype, exp.geom
    O, T = exp.oversample, exp.thicksteps
    P = idx.shape[0]
    fpix, spix = idx % g.fpixels, idx // g.fpixels
    layers = xp.arange(T, dtype=dtype)
    pos, _, _ = pixel_positions(g, fpix, spix, O, layers * exp.thickstep, xp=xp)
    Q = T * O * O
    pos = xp.reshape(pos, (3, Q, P))
    # explicit component sums: reductions over a length-3 axis are slow strided loops
    airpath = xp.sqrt(pos[0, ...] * pos[0, ...] + pos[1, ...] * pos[1, ...] + pos[2, ...] * pos[2, ...])  # (Q, P) m
    d = pos / airpath  # diffracted unit vectors (3, Q, P)

    # per sub-pixel: solid angle and sensor capture, (Q, P)
    omega = solid_angle(airpath, g.pixel_size, g.close_distance, g.point_pixel, xp=xp)
    if exp.oversample_thick or exp.thickness != 0.0:
        layer_of_q = xp.reshape(xp.broadcast_to(layers[:, None], (T, O * O)), (Q, 1))
        parallax = _dot3(d, g.odet)
        capture = capture_fraction_cos(parallax, layer_of_q, exp.thickstep, exp.mu, xp=xp)
    else:
        capture = None

    # per sub-pixel and source: scattering vector S = (d - i)/lambda (1/m), (3, Q, S, P)
    inc, lam = exp.incident, exp.lambdas
    S = inc.shape[0]
    scat = (d[:, :, None, :] - xp.permute_dims(inc, (1, 0))[:, None, :, None]) / lam[None, None, :, None]
    valid = None  # (Q, S, P): sources nanoBragg renders (-dmin cut)
    if exp.dmin > 0.0:
        stol = 0.5 * xp.sqrt(scat[0, ...] * scat[0, ...] + scat[1, ...] * scat[1, ...] + scat[2, ...] * scat[2, ...])
        safe = xp.where(stol > 0, stol, xp.ones_like(stol))
        valid = ~((stol > 0) & (exp.dmin > 0.5 / safe))
    polar = None  # (Q, S, P)
    if not (exp.nopolar and not exp.oversample_polar):
        dq = d[:, :, None, :]  # (3, Q, 1, P) against per-source vectors (3, 1, S, 1)
        col = lambda v: xp.permute_dims(v, (1, 0))[:, None, :, None]  # noqa: E731
        cos2theta = _dot3(dq, col(inc))
        if exp.kahn == 0.0:
            polar = kahn_factor(cos2theta, None, None, 0.0, xp=xp)
        else:
            E_in, B_in = polarization_frame(inc, exp.polar_axis, xp=xp)
            polar = kahn_factor(cos2theta, _dot3(dq, col(E_in)), _dot3(dq, col(B_in)), exp.kahn, xp=xp)

    # Miller indices for every orientation, h = a.S: components first, then sub-path
    # (sub-pixel, source, orientation: nanoBragg's order), pixels last: (3, L, P).
    # Three broadcast multiply-adds rather than matmul: BLAS gains nothing on a 3-long inner
    # axis and its own threads would fight the tile threads
    R = exp.orient.shape[0]
    W = xp.reshape(exp.orient_rows, (3, 1, 1, R, 1, 3))  # [j, ., ., r, ., c]: vector j of orientation r
    sc = lambda c: scat[c, :, :, None, :][None, ...]  # noqa: E731  (1, Q, S, 1, P)
    hkl = W[..., 0] * sc(0) + W[..., 1] * sc(1)
    hkl += W[..., 2] * sc(2)  # (3, Q, S, R, P)
    hkl = xp.reshape(hkl, (3, Q * S * R, P))
    F_latt = lattice_factor(hkl, exp.N, exp.shape, exp.fudge, exp.recip, xp=xp)  # (L, P)

    # (L, P): sub-paths that reach nanoBragg's intensity sum: not cut by -dmin and, without
    # a background, F_latt != 0.  The F_latt test only matters where a skipped sub-path
    # changes something besides adding zero: the interpolation switch-off and the running
    # products of the -oversample_* flags
    running = exp.oversample_omega or exp.oversample_polar or exp.oversample_thick
    rendered = None
    if valid is not None:
        rendered = xp.reshape(xp.broadcast_to(valid[:, :, None, :], (Q, S, R, P)), (Q * S * R, P))
    evaluated = rendered
    if exp.I_bg == 0.0 and (state.active or running):
        nz = F_latt != 0.0
        evaluated = nz if evaluated is None else evaluated & nz

    if exp.F.count == 0:
        F2 = exp.F.default_F * exp.F.default_F  # (float ** raises on overflow; * gives inf)
        term = F_latt * F_latt
        if not isinstance(F2, (int, float)):  # a differentiable default_F: never skipped at 1
            term = term * F2
        elif F2 != 1.0:
            term *= F2
    else:
        hkl0 = xp.ceil(hkl - 0.5)
        F_cell = exp.F.nearest(hkl0)
        if state.active:
            F_cell = _with_interpolation(exp, hkl, hkl0, F_cell, evaluated, idx, state)
        term = F_cell * F_latt
        # squared in place, except under autograd (the product's inputs are saved for it)
        term = term * term if exp.differentiable else _square_in_place(term)
    if rendered is not None:
        term = xp.where(rendered, term, xp.zeros_like(term))

    expand = lambda a: xp.reshape(xp.broadcast_to(a, (Q, S, R, P)), (Q * S * R, P))  # noqa: E731
    if not running:
        I = xp.sum(term, axis=0)
        if exp.I_bg != 0.0:
            I = I + exp.I_bg
    else:
        # running sum multiplied at every addition: I_n = (I_{n-1} + t_n) g_n, solved as
        # I = I_bg prod(g) + sum_n t_n prod_{j>=n} g_j with a reversed cumulative product
        gfac = xp.ones_like(term)
        if exp.oversample_thick:
            gfac = gfac * expand(capture[:, None, None, :])
        if exp.oversample_omega:
            gfac = gfac * expand(omega[:, None, None, :])
        if exp.oversample_polar:
            gfac = gfac * expand(polar[:, :, None, :])
        if evaluated is not None:
            gfac = xp.where(evaluated, gfac, xp.ones_like(gfac))
        tail = xp.flip(xp.cumulative_prod(xp.flip(gfac, axis=0), axis=0), axis=0)  # prod_{j>=n} g_j
        I = exp.I_bg * tail[0, :] + xp.sum(term * tail, axis=0)

    value = (R_E_SQR * exp.fluence / exp.steps) * I
    if not exp.oversample_thick and capture is not None:
        value = value * capture[(T - 1) * O * O, :]
    if not exp.oversample_omega:
        value = value * omega[0, :]
    if not exp.oversample_polar and polar is not None:
        value = value * _first_rendered(polar, valid, xp=xp)
    return value


def _square_in_place(a):
    a *= a
    return a


def _dot3(a, b):
    """a . b over the leading (component) axis of two broadcasting arrays (3, ...)."""
    return a[0, ...] * b[0, ...] + a[1, ...] * b[1, ...] + a[2, ...] * b[2, ...]


def _first_rendered(polar, valid, *, xp):
    """Polarization of the first (sub-pixel, source) nanoBragg renders in each pixel; 0 when
    every source of every sub-pixel is cut by -dmin (the reference then leaves it unset)."""
    P = polar.shape[-1]
    flat = xp.reshape(polar, (-1, P))
    if valid is None:
        return flat[0, :]
    v = xp.reshape(valid, (-1, P))
    first = xp.argmax(xp.astype(v, xp.int8), axis=0)
    picked = xp.take_along_axis(flat, first[None, :], axis=0)[0, :]
    return xp.where(xp.any(v, axis=0), picked, xp.zeros_like(picked))


def _with_interpolation(exp, hkl, hkl0, F_nearest, evaluated, idx, state):
    """Tricubic F up to the first out-of-range evaluation in loop order (pixel, then
    sub-path), nearest-neighbour F from it on.  Arrays are (L, P)."""
    xp = exp.xp
    F_interp = exp.F.tricubic(hkl)
    oor = exp.F.out_of_interpolation_range(hkl)
    if evaluated is not None:
        oor = oor & evaluated
    hit = xp.any(oor, axis=0)  # (P,)
    if not bool(xp.any(hit)):
        return F_interp
    p = int(xp.argmax(xp.astype(hit, xp.int8)))
    l = int(xp.argmax(xp.astype(oor[:, p], xp.int8)))
    state.active = False
    state.trigger = (int(idx[p]), *(float(hkl[i, l, p]) for i in range(3)), *(int(hkl0[i, l, p]) for i in range(3)))
    L, P = F_interp.shape
    before = (xp.arange(P)[None, :] < p) | ((xp.arange(P)[None, :] == p) & (xp.arange(L)[:, None] < l))
    return xp.where(before, F_interp, F_nearest)


def tile_size(exp: Experiment, tile_bytes: int = DEFAULT_TILE_BYTES) -> int:
    """Pixels per tile so that a tile's temporaries take about ``tile_bytes``."""
    itemsize = 4 if exp.dtype == exp.xp.float32 else 8
    per_pixel = exp.thicksteps * exp.oversample ** 2 * exp.incident.shape[0] * exp.orient.shape[0]
    items = ITEMS_PER_EVALUATION * (4 if exp.interpolate else 1)
    return max(1, int(tile_bytes) // (items * itemsize * max(per_pixel, 1)))


_MALLOC_TUNED = False


def tune_malloc() -> None:
    """Keep freed tile temporaries in the heap instead of returning them to the kernel.

    glibc serves blocks above its mmap threshold (128 KiB at first) with fresh mappings,
    so every ~1 MB NumPy temporary of a tile costs page faults on first touch; measured on
    this project's machine that makes the lattice factor 6x slower.  Raising the mmap and
    trim thresholds once (glibc's ``mallopt``) lets the same memory be reused tile after
    tile.  No-op off glibc; NBXP_NO_MALLOC_TUNING=1 disables it.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or os.environ.get("NBXP_NO_MALLOC_TUNING"):
        return
    _MALLOC_TUNED = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 256 * 2**20)
        libc.mallopt(M_TRIM_THRESHOLD, 512 * 2**20)
    except (OSError, AttributeError):
        pass


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def tiles(exp: Experiment, tile_pixels: int):
    """Host arrays of flat pixel indices, in nanoBragg's pixel order, ``tile_pixels`` each."""
    g = exp.geom
    rows_per_block = max(1, min(g.spixels, (1 << 20) // max(g.fpixels, 1)))
    for r0 in range(0, g.spixels, rows_per_block):
        sel = selected_pixels(exp, range(r0, min(r0 + rows_per_block, g.spixels)))
        for t0 in range(0, sel.shape[0], tile_pixels):
            yield sel[t0:t0 + tile_pixels]


def render(exp: Experiment, *, tile_bytes: int = DEFAULT_TILE_BYTES, threads: int | None = None,
           progress=None, backend: str | None = None, fast_math: bool | None = None,
           float32_image: bool = False):
    """The float image (spixels, fpixels) in ``exp.dtype`` on ``exp.xp``, and the state of
    interpolation at the end (for the one-time fallback warning).

    A multi-panel experiment (:attr:`Experiment.multi_panel`) gives a list of per-panel
    images instead, image p of shape (spixels_p, fpixels_p) (every backend): the tiles are
    of global pixel indices over the concatenated panels, each rendered with its panel's
    frame and sensor; the interpolation state runs through the panels in order.

    Tiles run on ``threads`` worker threads (default: every core this process may use);
    NumPy releases the GIL inside its array operations, so they overlap.  Results are
    gathered in tile order, so the image does not depend on the thread count.  A run with
    interpolation on goes tile by tile in order: where interpolation switches off depends
    on every evaluation before it.  ``progress(n)`` is called with each tile's pixel count.

    ``backend='cpu'``: the compiled CPU kernel renders instead (same contract, same image;
    :func:`nbxp.kernels.cpu_simd.render_cpu`; ``fast_math`` picks its build, and with
    ``float32_image`` it returns the image rounded to float32, what the command line writes,
    without holding a float64 image); a CuPy experiment always goes to the CUDA kernel.
    """
    xp = exp.xp
    if backend == "cpu":
        from .kernels import cpu_simd  # the kernel's CPU entry, pixels in SIMD lanes
        try:
            return cpu_simd.render_cpu(exp, threads=threads, progress=progress, fast_math=fast_math,
                                       float32_image=float32_image)
        except cpu_simd.NativeUnavailable as e:  # chosen, but this experiment is beyond it
            import logging
            logging.getLogger("nbxp").warning("nbxp backend: numpy (the CPU kernel cannot render this: %s)", e)
    if getattr(xp, "__name__", "").endswith("cupy"):
        from .gpu import render_kernel  # the CUDA kernel, one thread per pixel (nbxp/kernels)
        return render_kernel(exp, progress=progress)
    tune_malloc()
    state = InterpolationState(active=exp.interpolate)
    threads = default_threads() if threads is None else max(1, int(threads))
    masks = rendered_masks(exp)
    # the selected pixels' values in nanoBragg's pixel order (panel by panel), filled tile by
    # tile: memory is this one array plus the tiles in flight
    counts = [int(np.count_nonzero(m)) for m in masks]
    vals = xp.empty((sum(counts),), dtype=exp.dtype)  # every entry gets written
    offset = 0

    views = [exp.panel_view(p) for p in range(len(masks))]
    offsets = exp.panel_offsets

    def one(tile):
        p, ids = tile
        if not exp.multi_panel:
            return tile_values(exp, xp.asarray(ids), state)
        return panel_values(views[p], int(offsets[p]), xp.asarray(ids), state)

    def store(o, tile, v):
        n = tile[1].shape[0]
        vals[o:o + n] = v
        if progress is not None:
            progress(n)

    if threads == 1 or exp.interpolate or getattr(xp, "__name__", "").endswith("cupy"):
        for tile in panel_tiles(exp, tile_bytes):
            store(offset, tile, one(tile))
            offset += tile[1].shape[0]
    else:
        window = 4 * threads  # tiles in flight: bounds memory whatever the detector size
        with ThreadPoolExecutor(max_workers=threads) as pool:
            pending = deque()
            for tile in panel_tiles(exp, tile_bytes):
                pending.append((offset, tile, pool.submit(one, tile)))
                offset += tile[1].shape[0]
                while len(pending) >= window:
                    o, i, fut = pending.popleft()
                    store(o, i, fut.result())
            while pending:
                o, i, fut = pending.popleft()
                store(o, i, fut.result())
    if not exp.multi_panel:
        return place(exp, vals, masks[0]), state
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [place(views[p], vals[int(starts[p]):int(starts[p + 1])], masks[p])
            for p in range(len(masks))], state


def place(exp: Experiment, vals, mask: np.ndarray):
    """The image (spixels, fpixels) with ``vals`` at the pixels of the host bool image
    ``mask`` (in row-major order) and zeros elsewhere."""
    xp, g = exp.xp, exp.geom
    npix = g.fpixels * g.spixels
    if vals.shape[0] == npix:  # every pixel: the values are the image
        return xp.reshape(vals, (g.spixels, g.fpixels))
    img = xp.zeros((npix,), dtype=exp.dtype)
    if vals.shape[0]:
        img[xp.asarray(mask.reshape(-1))] = vals
    return xp.reshape(img, (g.spixels, g.fpixels))
