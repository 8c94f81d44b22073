"""``-trace_pixel S F``: every intermediate quantity of one pixel, as nanoBragg's
instrumented build prints it.

nanoBragg's tracing build prints ``TRACE_C:`` lines (detector set-up, then one block per
sub-path of the traced pixel) and ``TRACE:`` lines (crystal set-up).  This module prints the
same tags, in the same order and with the same printf formats, prefixed ``TRACE_PY`` (and
``TRACE_PY_PHI``/``TRACE_PY_SOURCE2`` for the per-phi and second-source lines;
``TRACE_CONFIG`` stays as it is), so that ``nbxp-trace-diff`` or a plain ``diff`` lines the
two logs up and the first quantity that departs is easy to find.

Everything is computed from nbxp's own functions (:mod:`nbxp.geometry`,
:mod:`nbxp.crystal`, :mod:`nbxp.physics`) on a float64 NumPy copy of the experiment, for
the one pixel, whatever backend rendered the image; nothing here runs unless the flag is
given.  The sub-path loop follows nanoBragg's order (sensor layer, sub-pixel slow, sub-pixel
fast, source, phi step, mosaic domain), and so do the "last value" factors printed at the
end (see :mod:`nbxp.engine`).

Where nbxp deliberately differs from nanoBragg the trace shows nbxp's value: the phi = 0
step is rotated freshly (nanoBragg's carries the previous pixel's rotation), and the
beam-pivot block names the real convention and its axes (nanoBragg's instrumented build
prints MOSFLM's there whatever the convention).  Units are nanoBragg's: metres, with
scattering vectors in 1/m although the tag says ``A_inv``, and the ``beam_center_m`` values
divided by 1000 once more, exactly as the C program prints them.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from .config import R_E_SQR, SimConfig
from .geometry import beam_centre, beam_ratio, capture_fraction, convention_axes, solid_angle, subpixel_positions, unit_host
from .physics import lattice_factor, polarization
from .vectors import cross, dot, norm, rotate_axis, rotate_xyz, unitize

PY = "TRACE_PY"
RTD = 180.0 / math.pi
_UNKNOWN = object()


# ----------------------------------------------------------------------------- formats
# C's printf formats, reproduced with Python's (identical for finite doubles; glibc and
# Python both round correctly)

def _g15(x) -> str:
    return "%.15g" % float(x)


def _g(x) -> str:
    return "%g" % float(x)


def _v15(v) -> str:
    return " ".join(_g15(x) for x in v)


def _vg(v) -> str:
    """A vector as the crystal set-up block prints it: [x, y, z] with %g."""
    return "[" + ", ".join(_g(x) for x in v) + "]"


def _m15(M) -> str:
    return "[" + "; ".join(" ".join(_g15(x) for x in row) for row in M) + "]"


# ----------------------------------------------------------------------------- detector

def _mapping(conv: str, beam) -> str:
    """Which user beam-centre value becomes (Fbeam, Sbeam) in the beam pivot, per convention."""
    if conv == "MOSFLM":
        m = "Fbeam←Ybeam_mm(+0.5px),Sbeam←Xbeam_mm(+0.5px)"
    elif conv == "DENZO":
        m = "Fbeam←Ybeam_mm,Sbeam←Xbeam_mm"
    elif conv == "ADXV":
        m = "Fbeam←Xbeam_mm,Sbeam←detsize_s-Ybeam_mm"
    else:
        m = "Fbeam←Xbeam_mm,Sbeam←Ybeam_mm"
    return f"{m},beam_vec=[{' '.join(_g(x) for x in beam)}]"


def detector_lines(cfg: SimConfig) -> list[str]:
    """The detector set-up block (``TRACE_PY:tag=value``), nbxp's placement of the detector
    step by step: beam centre and pivot from the convention, rotations about x, y, z, then
    about the two-theta axis, then the origin ``pix0`` (m).

    The steps are those of :func:`nbxp.geometry.build_detector`, redone here on host
    float64 so the intermediate vectors can be printed; the result is checked against it
    by the tests.
    """
    det, beam_cfg, cr = cfg.detector, cfg.beam, cfg.crystal
    axes = convention_axes(det.convention, {
        "beam": beam_cfg.beam_vector, "fdet": det.fdet_vector, "sdet": det.sdet_vector,
        "odet": det.odet_vector, "twotheta_axis": det.twotheta_axis,
        "polar": beam_cfg.polar_vector, "spindle": cr.spindle_axis,
    })
    px = det.pixel_size
    conv = det.convention
    bc = beam_centre(det)
    Xbeam, Ybeam, Xclose, Yclose = bc.Xbeam, bc.Ybeam, bc.Xclose, bc.Yclose
    Fbeam, Sbeam, Fclose, Sclose, pivot = bc.Fbeam, bc.Sbeam, bc.Fclose, bc.Sclose, bc.pivot
    beam, _ = unit_host(axes["beam"])
    fdet, _ = unit_host(axes["fdet"])
    sdet, _ = unit_host(axes["sdet"])
    odet, omag = unit_host(axes["odet"])
    if omag != 1.0:
        odet, _ = unit_host(np.cross(fdet, sdet))
    tt_axis = np.asarray(axes["twotheta_axis"], dtype=np.float64)
    rx, ry, rz, tt = det.rotx, det.roty, det.rotz, det.twotheta

    ratio, close_distance = beam_ratio(det, beam, odet, xp=np)
    distance = close_distance / ratio

    out: list[str] = []
    tag = lambda name, text: out.append(f"{PY}:{name}={text}")  # noqa: E731
    def head(centre: str):
        """The block both pivots start with: convention, angles, beam centre, axes."""
        tag("detector_convention", conv)
        tag("angles_rad", f"rotx:{_g15(rx)} roty:{_g15(ry)} rotz:{_g15(rz)} twotheta:{_g15(tt)}")
        tag("beam_center_m", f"{centre} pixel_mm:{_g15(px * 1000.0)}")
        for n, v in (("initial_fdet", fdet), ("initial_sdet", sdet), ("initial_odet", odet)):
            tag(n, _v15(v))
    if pivot == "SAMPLE":
        head(f"Xclose:{_g15(Xclose / 1000.0)} Yclose:{_g15(Yclose / 1000.0)}")
        for n, x in (("Fclose_m", Fclose), ("Sclose_m", Sclose), ("close_distance_m", close_distance),
                     ("ratio", ratio), ("distance_m", distance)):
            tag(n, _g15(x))
        tag("term_fast_before_rot", _v15(-Fclose * fdet))
        tag("term_slow_before_rot", _v15(-Sclose * sdet))
        tag("term_close_before_rot", _v15(close_distance * odet))
        pix0 = -Fclose * fdet - Sclose * sdet + close_distance * odet
        tag("pix0_before_rotation", _v15(pix0))
        pix0 = rotate_xyz(pix0, rx, ry, rz, xp=np)
        tag("pix0_after_rotz", _v15(pix0))
        pix0 = rotate_axis(pix0, tt_axis, tt, xp=np)
        tag("pix0_after_twotheta", _v15(pix0))
    f1, s1, o1 = (rotate_xyz(v, rx, ry, rz, xp=np) for v in (fdet, sdet, odet))
    f2, s2, o2 = (rotate_axis(v, tt_axis, tt, xp=np) for v in (f1, s1, o1))

    def rotated(after_xyz):
        for n, v in zip(("fdet_after_rotz", "sdet_after_rotz", "odet_after_rotz"), after_xyz):
            tag(n, _v15(v))
        tag("twotheta_axis", _v15(tt_axis))
        for n, v in (("fdet_after_twotheta", f2), ("sdet_after_twotheta", s2), ("odet_after_twotheta", o2)):
            tag(n, _v15(v))

    rotated((f1, s1, o1))
    if pivot == "BEAM":
        head(f"X:{_g15(Xbeam / 1000.0)} Y:{_g15(Ybeam / 1000.0)}")
        R = _rotation_matrices(rx, ry, rz)
        for n, M in zip(("Rx", "Ry", "Rz", "R_total"), R):
            tag(n, _m15(M))
        # this block is printed after both rotations, and shows the vectors as they are then
        rotated((f2, s2, o2))
        tag("convention_mapping", _mapping(conv, beam))
        for n, x in (("Fbeam_m", Fbeam), ("Sbeam_m", Sbeam), ("distance_m", distance)):
            tag(n, _g15(x))
        tag("term_fast", _v15(-Fbeam * f2))
        tag("term_slow", _v15(-Sbeam * s2))
        tag("term_beam", _v15(distance * beam))
        pix0 = -Fbeam * f2 - Sbeam * s2 + distance * beam
        tag("pix0_vector", _v15(pix0))
    return out


def _rotation_matrices(rx: float, ry: float, rz: float):
    """Rx, Ry, Rz and R_total = Rz Ry Rx (the x, y, z rotations of ``rotate_xyz`` as
    matrices, summed in row-column order)."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]]
    Ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]]
    Rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]]

    def mul(A, B):
        out = [[0.0] * 3 for _ in range(3)]
        for i in range(3):
            for j in range(3):
                acc = 0.0
                for k in range(3):
                    acc += A[i][k] * B[k][j]
                out[i][j] = acc
        return out

    return Rx, Ry, Rz, mul(Rz, mul(Ry, Rx))


# ----------------------------------------------------------------------------- crystal

def crystal_lines(cfg: SimConfig, misset=None) -> list[str]:
    """The crystal set-up block: reciprocal vectors from the cell or A matrix (1/A), misset,
    real-space vectors (A, then m).  The steps of :func:`nbxp.crystal.cell_vectors`, redone
    with every intermediate kept; ``misset`` (rad) overrides ``cfg.crystal.misset`` (a
    resolved random orientation)."""
    from .crystal import cell_with_defaults, exact_cell_edges, reciprocal_lengths, standard_setting

    cr, lam = cfg.crystal, cfg.beam.wavelength
    out: list[str] = []
    p = lambda text: out.append(f"{PY}:{text}")  # noqa: E731
    user_cell = cr.cell is not None
    recip = np.zeros((3, 3))
    lengths = None
    mags = [0.0, 0.0, 0.0]
    if user_cell:
        cell_A = (cr.cell[0] * 1e10, cr.cell[1] * 1e10, cr.cell[2] * 1e10, *cr.cell[3:6])
        recip, V_user, lengths = standard_setting(cell_A, [])
        # nanoBragg prints the stored lengths, not the vectors' norms (which differ slightly
        # for a skewed cell), until a vector operation recomputes them
        mags = list(reciprocal_lengths(cell_with_defaults(cell_A), V_user, []))
    names = ("a_star", "b_star", "c_star")
    if cr.amat is not None:
        raw = np.asarray(cr.amat, dtype=float).T
        p(" Raw matrix values from file:")
        for n, v in zip(names, raw):
            p(f"   {n} (raw) = {_vg(v)}")
        p(f"   lambda0 = {_g(lam * 1e10)} Angstroms")
        p(f"   scaling factor = 1e-10/lambda0 = {_g(1e-10 / lam)}")
        recip = raw * (1e-10 / lam)
        mags = [float(norm(recip[i], xp=np)) for i in range(3)]
        p(" After wavelength correction:")
        for n, v, m in zip(names, recip, mags):
            p(f"   {n} = {_vg(v)} |{n}| = {_g(m)}")
    misset = cr.misset if misset is None else misset
    if isinstance(misset, tuple):
        p(" Before misset rotation:")
        for n, v, m in zip(names, recip, mags):
            p(f"   {n} = {_vg(v)} |{n}| = {_g(m)}")
        p(f"   misset angles = {_vg([a * RTD for a in misset])} degrees")
        recip = rotate_xyz(recip, *misset, xp=np)
        p(" After misset rotation:")
        for n, v, m in zip(names, recip, mags):
            p(f"   {n} = {_vg(v)} |{n}| = {_g(m)}")
    ast, bst, cst = recip[0], recip[1], recip[2]
    p(" Computing cross products of reciprocal vectors:")
    p("   Input vectors for cross products:")
    for n, v in zip(names, recip):
        p(f"     {n} = {_vg(v)}")
    axb, bxc, cxa = cross(ast, bst, xp=np), cross(bst, cst, xp=np), cross(cst, ast, xp=np)
    p("   Cross product results:")
    p(f"     a_star x b_star = {_vg(axb)}")
    p(f"     b_star x c_star = {_vg(bxc)}")
    p(f"     c_star x a_star = {_vg(cxa)}")
    V_star = float(dot(ast, bxc, xp=np))
    p(" Reciprocal cell volume calculation:")
    p(f"   V_star = a_star . (b_star x c_star) = {_g(V_star)}")
    if user_cell:
        bxc, cxa, axb, V_star = exact_cell_edges(bxc, cxa, axb, lengths, V_user, xp=np)
    V_cell = 1.0 / V_star
    p(f" Direct-space cell volume: V_cell = 1/V_star = {_g(V_cell)}")
    p(" Before computing real-space vectors:")
    p(f"   b_star_cross_c_star = {_vg(bxc)}")
    p(f"   c_star_cross_a_star = {_vg(cxa)}")
    p(f"   a_star_cross_b_star = {_vg(axb)}")
    p(f"   V_cell = {_g(V_cell)}, V_star = {_g(V_star)}")
    real = np.stack([bxc * V_cell, cxa * V_cell, axb * V_cell])
    p(" After computing real-space vectors:")
    for n, v in zip("abc", real):
        p(f"   {n} = {_vg(v)} |{n}| = {_g(norm(v, xp=np))}")
    p(" Re-generating reciprocal vectors from real-space vectors:")
    for n, v, m in zip(names, recip, mags):
        p(f"   Before re-generation: {n} = {_vg(v)} |{n}| = {_g(m)}")
    a, b, c = real
    crosses = (("b_cross_c", cross(b, c, xp=np)), ("c_cross_a", cross(c, a, xp=np)), ("a_cross_b", cross(a, b, xp=np)))
    for n, v in crosses:
        p(f"   Cross products: {n} = {_vg(v)}")
    for n, (_, v) in zip(names, crosses):
        r = v * V_star
        p(f"   After re-generation: {n} = {_vg(r)} |{n}| = {_g(norm(r, xp=np))}")
    p(" Converting real-space vectors from Angstroms to meters:")
    for n, v in zip("abc", real):
        p(f"   Before conversion: {n} = {_vg(v)} |{n}| = {_g(norm(v, xp=np))} Angstroms")
    real_m = real * 1e-10
    for n, v in zip("abc", real_m):
        p(f"   After conversion: {n} = {_vg(v)} |{n}| = {_g(norm(v, xp=np))} meters")
    p(" Copying vectors to a0, b0, c0 (phi=0 mosaic=0 reference):")
    for n, v in zip(("a0", "b0", "c0"), real_m):
        p(f"   {n} = {_vg(v)} |{n}| = {_g(norm(v, xp=np))} meters")
    p(" Copying vectors to ap, bp, cp (phi=0 working copy):")
    for n, v in zip(("ap", "bp", "cp"), real_m):
        p(f"   {n} = {_vg(v)} |{n}| = {_g(norm(v, xp=np))} meters")
    return out


# ----------------------------------------------------------------------------- pixel

def pixel_rendered(exp, spixel: int, fpixel: int) -> bool:
    """Whether the engine renders this pixel (inside the ROI and not masked)."""
    fmin, fmax, smin, smax = exp.roi
    if not (fmin <= fpixel <= fmax and smin <= spixel <= smax):
        return False
    return exp.mask is None or bool(exp.mask[spixel, fpixel])


def pixel_lines(exp, spixel: int, fpixel: int, *, interpolating: bool, water_size: float = 0.0,
                image_value: float | None = None) -> list[str]:
    """The per-sub-path lines and the final scaling of one pixel.

    ``exp``: a float64 NumPy :class:`~nbxp.experiment.Experiment`.  ``interpolating``:
    whether tricubic interpolation of F is still on when this pixel starts (it switches off
    for good at the first evaluation whose neighbourhood leaves the HKL grid).
    ``image_value``: the value the engine wrote for this pixel, printed as
    ``floatimage_accumulated`` (float32), else this trace's own value rounded to float32.
    """
    g = exp.geom
    O, T = exp.oversample, exp.thicksteps
    layers = np.arange(T, dtype=np.float64)
    pos, _, _ = subpixel_positions(g, np.asarray([fpixel]), np.asarray([spixel]), O, layers * exp.thickstep, xp=np)
    pos = np.reshape(pos, (T * O * O, 3))  # sub-pixels in loop order: layer, slow, fast
    d, airpath = unitize(pos, xp=np)
    omega = solid_angle(airpath, g.pixel_size, g.close_distance, g.point_pixel, xp=np)
    capture = capture_fraction(d, g.odet, np.repeat(layers, O * O), exp.thickstep, exp.mu, xp=np)

    inc, lam = np.asarray(exp.incident), np.asarray(exp.lambdas)
    scat = (d[:, None, :] - inc[None, :, :]) / lam[None, :, None]  # (Q, S, 3), 1/m
    stol = 0.5 * np.sqrt(np.sum(scat * scat, axis=-1))
    with np.errstate(divide="ignore"):
        valid = ~((exp.dmin > 0.0) & (stol > 0.0) & (exp.dmin > 0.5 / stol))
    polar = polarization(inc[None, :, :], d[:, None, :], exp.polar_axis, exp.kahn, xp=np)  # (Q, S)

    orient = np.asarray(exp.orient)  # (R, 3, 3): rows a, b, c (m), phi-major then domain
    # h = a.S as nanoBragg sums it: x, then y, then z
    hkl = (orient[None, None, :, :, 0] * scat[:, :, None, None, 0]
           + orient[None, None, :, :, 1] * scat[:, :, None, None, 1]
           + orient[None, None, :, :, 2] * scat[:, :, None, None, 2])  # (Q, S, R, 3)
    hkl = np.moveaxis(hkl, -1, 0)  # (3, Q, S, R)
    recip = np.asarray(exp.recip)
    F_latt = lattice_factor(hkl, exp.N, exp.shape, exp.fudge, recip, xp=np)
    square = exp.shape == "SQUARE"
    if square:
        Na, Nb, Nc = exp.N
        axis_factors = [lattice_factor(hkl, n, "SQUARE", exp.fudge, recip, xp=np)
                        for n in ((Na, 1.0, 1.0), (1.0, Nb, 1.0), (1.0, 1.0, Nc))]
    hkl0 = np.ceil(hkl - 0.5)
    F_near = exp.F.nearest(hkl0)
    if interpolating and exp.interpolate and exp.F.count:
        F_interp = exp.F.tricubic(hkl)
        out_of_range = exp.F.out_of_interpolation_range(hkl)
    else:
        interpolating = False

    M = exp.sampling.mosaic_domains
    phis = exp.sampling.phis
    Q, S, R = hkl.shape[1:]
    pix0 = np.asarray(g.pix0)
    lines: list[str] = []
    p = lambda text: lines.append(f"{PY}: {text}")  # noqa: E731

    I = exp.I_bg
    polar_now = 1.0 if exp.nopolar else 0.0
    omega_now = 0.0
    capture_now = 1.0
    for q in range(Q):
        if q % (O * O) == 0:
            capture_now = 1.0 if exp.thickness == 0.0 else 0.0  # reset per sensor layer
        if omega_now == 0.0 or exp.oversample_omega:
            omega_now = float(omega[q])
        if capture_now == 0.0 or exp.oversample_thick:
            capture_now = float(capture[q])
        for src in range(S):
            if src == 0:
                p(f"pix0_vector_meters {_v15(pix0)}")
                p(f"fdet_vec {_v15(g.fdet)}")
                p(f"sdet_vec {_v15(g.sdet)}")
                p(f"pixel_pos_meters {_v15(pos[q])}")
                p(f"R_distance_meters {_g15(airpath[q])}")
                p(f"omega_pixel_sr {_g15(omega_now)}")
                p(f"close_distance_meters {_g15(g.close_distance)}")
                p(f"obliquity_factor {_g15(g.close_distance / airpath[q])}")
                p(f"diffracted_vec {_v15(d[q])}")
                p(f"incident_vec {_v15(inc[src])}")
                p(f"lambda_meters {_g15(lam[src])}")
                p(f"lambda_angstroms {_g15(lam[src] * 1e10)}")
                p(f"scattering_vec_A_inv {_v15(scat[q, src])}")
            if not valid[q, src]:
                continue  # beyond -dmin: nanoBragg skips the source before its phi loop
            if polar_now == 0.0 or exp.oversample_polar:
                polar_now = float(polar[q, src])
            for r in range(R):
                phi_tic, mos = divmod(r, M)
                h, k, l = (float(hkl[i, q, src, r]) for i in range(3))
                first = src == 0 and mos == 0 and phi_tic == 0
                if first:
                    for n, v in zip("abc", orient[r]):
                        p(f"rot_{n}_angstroms {_v15(v * 1e10)}")
                    for n, v in zip("abc", recip):
                        p(f"rot_{n}_star_A_inv {_v15(v)}")
                    p(f"hkl_frac {_v15((h, k, l))}")
                    p("hkl_rounded %d %d %d" % tuple(int(hkl0[i, q, src, r]) for i in range(3)))
                fl = float(F_latt[q, src, r])
                if square:
                    if first:
                        for n, fa in zip("abc", axis_factors):
                            p(f"F_latt_{n} {_g15(fa[q, src, r])}")
                        p(f"F_latt {_g15(fl)}")
                    if src == 0 and mos == 0:
                        lines.append(f"{PY}_PHI phi_tic={phi_tic} phi_deg={_g15(phis[phi_tic] * RTD)} k_frac={_g15(k)} "
                                     f"F_latt_b={_g15(axis_factors[1][q, src, r])} F_latt={_g15(fl)}")
                if fl == 0.0 and water_size == 0.0:
                    continue  # nothing to add: nanoBragg skips the structure factor
                if interpolating and bool(out_of_range[q, src, r]):
                    interpolating = False  # this evaluation and all later ones: nearest F
                fc = float(F_interp[q, src, r]) if interpolating else float(F_near[q, src, r])
                if first:
                    p(f"F_cell {_g15(fc)}")
                if src == 2 and mos == 0 and phi_tic == 0:
                    s2 = f"{PY}_SOURCE2: "
                    lines += [s2 + f"F_cell {_g15(fc)}", s2 + f"F_latt {_g15(fl)}",
                              s2 + f"F_cell_squared {_g15(fc * fc)}", s2 + f"F_latt_squared {_g15(fl * fl)}",
                              s2 + f"I_contribution {_g15(fc * fc * fl * fl)}", s2 + f"polar {_g15(polar_now)}",
                              s2 + f"cos2theta {_g15(dot(inc[src], d[q], xp=np))}",
                              s2 + f"lambda_angstroms {_g15(lam[src] * 1e10)}", s2 + f"source_index {src}"]
                I += fc * fc * fl * fl
                if exp.oversample_thick:
                    I *= capture_now
                if exp.oversample_polar:
                    I *= polar_now
                if exp.oversample_omega:
                    I *= omega_now

    test = R_E_SQR * exp.fluence * I / exp.steps
    if not exp.oversample_thick:
        test *= capture_now
    if not exp.oversample_polar:
        test *= polar_now
    if not exp.oversample_omega:
        test *= omega_now
    stored = float(np.float32(test if image_value is None else image_value))
    p(f"I_before_scaling {_g15(I)}")
    p(f"r_e_meters {_g15(math.sqrt(R_E_SQR))}")
    p(f"r_e_sqr {_g15(R_E_SQR)}")
    p(f"fluence_photons_per_m2 {_g15(exp.fluence)}")
    p(f"steps {exp.steps}")
    p(f"oversample_thick {int(exp.oversample_thick)}")
    p(f"oversample_polar {int(exp.oversample_polar)}")
    p(f"oversample_omega {int(exp.oversample_omega)}")
    p(f"capture_fraction {_g15(capture_now)}")
    p(f"polar {_g15(polar_now)}")
    p(f"omega_pixel {_g15(omega_now)}")
    p(f"cos_2theta {_g15(dot(inc[S - 1], d[Q - 1], xp=np))}")
    p(f"I_pixel_final {_g15(test)}")
    p(f"floatimage_accumulated {_g15(stored)}")
    return lines


# ----------------------------------------------------------------------------- whole trace

def host_experiment(cfg: SimConfig):
    """The experiment of ``cfg`` in float64 NumPy, whatever backend renders the image."""
    from .api import resolve_namespace
    from .experiment import build_experiment
    xp = resolve_namespace(np)
    return build_experiment(cfg, xp=xp, dtype=xp.float64)


def check_pixel(cfg: SimConfig, spixel: int, fpixel: int) -> None:
    """Raise a one-line error naming the flag when the pixel is not on the detector."""
    from .flags import UsageError
    if cfg.detector.panels is not None:
        from .errors import ConfigError
        raise ConfigError("-trace_pixel: not available for a multi-panel detector (--geometry); "
                         "the trace follows nanoBragg's one panel")
    S, F = cfg.detector.spixels, cfg.detector.fpixels
    if not (0 <= spixel < S and 0 <= fpixel < F):
        raise UsageError(f"-trace_pixel: pixel (slow {spixel}, fast {fpixel}) is not on the {F}x{S} "
                         f"detector (slow 0..{S - 1}, fast 0..{F - 1})")


def trace_lines(cfg: SimConfig, spixel: int, fpixel: int, *, interpolation_trigger=_UNKNOWN,
                image_value: float | None = None, experiment=None) -> list[str]:
    """Every trace line for pixel (``spixel``, ``fpixel``) (slow, fast; 0-based).

    ``interpolation_trigger``: the flat index of the pixel where the engine switched tricubic
    interpolation off (``render``'s ``state.trigger[0]``), ``None`` if it never did; when not
    given and interpolation is on, the image is rendered once on the host to find it.
    ``experiment``: a float64 NumPy experiment of ``cfg`` to reuse.
    """
    check_pixel(cfg, spixel, fpixel)
    exp = experiment if experiment is not None else host_experiment(cfg)
    misset = cfg.crystal.misset
    if misset == "random":
        from .crystal import random_misset
        seed = cfg.crystal.misset_seed if cfg.crystal.misset_seed is not None else cfg.seed
        misset = random_misset(seed)
    lines = detector_lines(cfg) + crystal_lines(cfg, misset=misset)
    lines.append(f"TRACE_CONFIG: tracing pixel (spixel={spixel}, fpixel={fpixel})")
    if not pixel_rendered(exp, spixel, fpixel):
        return lines
    interpolating = exp.interpolate
    if interpolating:
        if interpolation_trigger is _UNKNOWN:
            from .engine import render
            _, state = render(exp)
            interpolation_trigger = None if state.trigger is None else state.trigger[0]
        here = spixel * exp.geom.fpixels + fpixel
        interpolating = interpolation_trigger is None or interpolation_trigger >= here
    return lines + pixel_lines(exp, spixel, fpixel, interpolating=interpolating, water_size=cfg.water_size,
                               image_value=image_value)


def print_trace(lines: Iterable[str], out: Callable[[str], None] = print) -> None:
    for line in lines:
        out(line)
