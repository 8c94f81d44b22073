"""Crystal: unit cell, orientation, size, phi rotation and mosaic domains.

The real-space cell vectors a, b, c (m) define fractional Miller indices of a scattering
vector S (1/m) as h = a.S, k = b.S, l = c.S.  Orientation comes from a MOSFLM A matrix or
from a cell placed in nanoBragg's standard setting (a* along x, b* in the xy plane), then
rotated by the misset angles.  Each rendered orientation is a phi step about the spindle
(fresh rotation at every step, see docs) followed by a mosaic-domain rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import rng
from .config import CrystalConfig
from .errors import ConfigError
from .resources import ceil_count
from .vectors import cross, dot, norm, rotate_axis, rotate_xyz

_TINY = np.finfo(float).tiny


@dataclass
class CellVectors:
    """Real-space (A) and reciprocal-space (1/A) cell vectors in the lab frame, rows a, b, c."""

    real: np.ndarray  # (3, 3) Angstrom
    reciprocal: np.ndarray  # (3, 3) 1/Angstrom
    volume: float  # A^3


def _clamp(s: float, c: float) -> float:
    s = min(max(s, -1.0), 1.0)
    if c * c > 1.0:
        c = 1.0
    return math.atan2(s, c)


def cell_with_defaults(cell) -> tuple[float, float, float, float, float, float]:
    """(a, b, c, alpha, beta, gamma) with nanoBragg's defaults for missing or non-positive
    entries: b and c equal a, angles 90 degrees (lengths in A, angles in rad)."""
    a, b, c, al, be, ga = (list(cell) + [0.0] * 6)[:6]
    b = a if b <= 0 else b
    c = a if c <= 0 else c
    al = math.pi / 2 if al <= 0 else al
    be = math.pi / 2 if be <= 0 else be
    ga = math.pi / 2 if ga <= 0 else ga
    return a, b, c, al, be, ga


def reciprocal_lengths(cell, V: float, notes: list) -> tuple[float, float, float]:
    """|a*|, |b*|, |c*| (1/A) of a defaulted cell of volume ``V`` (A^3); impossible
    (non-positive) values are noted and replaced by their magnitude (or the smallest float)."""
    a, b, c, al, be, ga = cell
    Vs = 1.0 / V
    ast, bst, cst = b * c * math.sin(al) * Vs, c * a * math.sin(be) * Vs, a * b * math.sin(ga) * Vs
    if ast <= 0 or bst <= 0 or cst <= 0:
        notes.append(f"WARNING: impossible reciprocal cell lengths: {ast:g} {bst:g} {cst:g}")
        ast, bst, cst = (abs(x) or _TINY for x in (ast, bst, cst))
    return ast, bst, cst


def exact_cell_edges(bxc, cxa, axb, lengths, V: float, *, xp):
    """Rescale b* x c*, c* x a*, a* x b* to lengths a/V, b/V, c/V, so the real-space vectors
    they give have the user's cell edges exactly (``lengths`` in A, ``V`` in A^3); returns
    them and V* = 1/V."""
    a_len, b_len, c_len = lengths
    rescale = lambda v, m: v * (m / (float(norm(v, xp=xp)) or 1.0))  # noqa: E731
    return rescale(bxc, a_len / V), rescale(cxa, b_len / V), rescale(axb, c_len / V), 1.0 / V


def standard_setting(cell, notes: list) -> tuple[np.ndarray, float, tuple[float, float, float]]:
    """Reciprocal vectors (rows, 1/A) of a cell (a, b, c in A; angles in rad) in nanoBragg's
    standard orientation, with the cell volume (A^3) and the edge lengths after defaults."""
    a, b, c, al, be, ga = cell_with_defaults(cell)
    aavg = (al + be + ga) / 2
    skew = abs(math.sin(aavg) * math.sin(aavg - al) * math.sin(aavg - be) * math.sin(aavg - ga))
    V = 2.0 * a * b * c * math.sqrt(skew)
    if V <= 0:
        notes.append(f"WARNING: impossible unit cell volume: {V:g}")
        V = _TINY
    Vs = 1.0 / V
    ast, bst, cst = reciprocal_lengths((a, b, c, al, be, ga), V, notes)
    sin_gs = c * Vs / ast / bst
    cos_as = (math.cos(be) * math.cos(ga) - math.cos(al)) / (math.sin(be) * math.sin(ga))
    cos_bs = (math.cos(ga) * math.cos(al) - math.cos(be)) / (math.sin(ga) * math.sin(al))
    cos_gs = (math.cos(al) * math.cos(be) - math.cos(ga)) / (math.sin(al) * math.sin(be))
    sin_gs = min(max(sin_gs, -1.0), 1.0)
    cos_as = 1.0 if cos_as * cos_as > 1 else cos_as
    cos_bs = 1.0 if cos_bs * cos_bs > 1 else cos_bs
    cos_gs = 1.0 if cos_gs * cos_gs > 1 else cos_gs
    recip = np.array([
        [ast, 0.0, 0.0],
        [bst * cos_gs, bst * sin_gs, 0.0],
        [cst * cos_bs, cst * (cos_as - cos_bs * cos_gs) / sin_gs, cst * V / (a * b * c * sin_gs)],
    ])
    return recip, V, (a, b, c)


def uniform_rotation(u1: float, u2: float, u3: float) -> np.ndarray:
    """The rotation matrix (3, 3) of the unit quaternion Shoemake's method makes of three
    independent uniform deviates in [0, 1) ("Uniform random rotations", Graphics Gems III,
    1992): (w, x, y, z) = (sqrt(1-u1) sin 2pi u2, sqrt(1-u1) cos 2pi u2, sqrt(u1) sin 2pi u3,
    sqrt(u1) cos 2pi u3) is uniform on the unit 3-sphere, so the rotation is uniform
    (Haar-distributed) over SO(3)."""
    a, b = math.sqrt(1 - u1), math.sqrt(u1)
    w, x = a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2)
    y, z = b * math.sin(2 * math.pi * u3), b * math.cos(2 * math.pi * u3)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def random_misset(seed: int) -> tuple[float, float, float]:
    """Misset angles (rad, about x then y then z) of nanoBragg's ``-misset random``.

    nanoBragg draws the orientation with its mosaic-domain generator,
    :func:`nbxp.rng.mosaic_rotation_umat`, asking for a spherical cap of 90 (meant as
    degrees, "a full sphere", but the generator takes radians), from a fresh ``ran1``
    stream seeded with ``-seed`` (``-misset_seed`` S is stored as -S, as every nanoBragg
    seed); then it turns the matrix into the three angles it prints and applies.  The
    result is a valid rotation but not uniformly distributed over all orientations (use
    :func:`uniform_misset` for that).  Reproduced exactly, so the same seed gives
    nanoBragg's printed angles and image.
    """
    umat = rng.mosaic_rotation_umat(90.0, rng.Ran1(-int(seed)))
    return umat_to_misset(umat)


def umat_to_misset(umat) -> tuple[float, float, float]:
    """(rx, ry, rz) (rad) with R = Rz(rz) Ry(ry) Rx(rx) for a rotation matrix ``umat``.

    Follows nanoBragg's conversion step by step so the angles agree to the last bit: each
    row is normalised twice (its re-orthogonalisation through cross products only replaces
    a zero row, which a rotation matrix never has), then rx = atan2(R_zy, R_zz),
    ry = atan2(-R_zx, sqrt(R_zy^2 + R_zz^2)), rz = atan2(R_yx, R_xx); at gimbal lock
    (|R_zx| = 1) it returns (pi, pi/2, atan2(R_xy, -R_yy)).
    """
    rows = [[float(x) for x in r] for r in np.asarray(umat, dtype=float).reshape(3, 3)]
    if any(not (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]) > 0 for r in rows):
        raise ValueError("umat_to_misset: a row of the matrix is zero")  # programming error
    for _ in range(2):
        for r in rows:
            m = math.sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2])
            r[0], r[1], r[2] = r[0] / m, r[1] / m, r[2] / m
    (uxx, uxy, _), (uyx, uyy, _), (uzx, uzy, uzz) = rows
    if uzx * uzx < 1.0:
        return math.atan2(uzy, uzz), math.atan2(-uzx, math.sqrt(uzy * uzy + uzz * uzz)), math.atan2(uyx, uxx)
    return math.atan2(1, 1) * 4, math.atan2(1, 1) * 2, math.atan2(uxy, -uyy)


def uniform_misset(seed: int) -> tuple[float, float, float]:
    """Misset angles (rad, about x then y then z) of a rotation drawn uniformly from SO(3),
    for library users who need unbiased random orientations (e.g. a series of still shots;
    nanoBragg's ``-misset random``, :func:`random_misset`, is not uniform).

    A uniform unit quaternion (Shoemake 1992) from three of nanoBragg's uniform deviates
    (``Ran1(-seed)``), decomposed as R = Rz(rz) Ry(ry) Rx(rx).
    """
    gen = rng.Ran1(-abs(int(seed)))
    return umat_to_misset(uniform_rotation(gen(), gen(), gen()))


#: smallest accepted V / (a b c) of a cell, and |det| / (|a*| |b*| |c*|) of an A matrix: the
#: sine-like "flatness" of the three edges.  Real cells are above 0.1; below 1e-6 the
#: reciprocal lengths exceed a million times the edges and the lattice is meaningless.
MIN_FLATNESS = 1e-6


def cell_problem(cell) -> str | None:
    """Why the ``-cell`` values (a, b, c in any length unit, angles in rad; nanoBragg's
    defaults fill non-positive entries) give no real unit cell, or None when they do.

    The cell exists when a > 0, every angle lies strictly between 0 and 180 degrees and the
    metric determinant 1 - cos^2(alpha) - cos^2(beta) - cos^2(gamma) + 2 cos(alpha) cos(beta)
    cos(gamma) (= (V / abc)^2) is positive; nanoBragg's volume formula takes an absolute value
    and so accepts impossible angle sets (e.g. three angles of 200 degrees).
    """
    vals = list(cell)
    if not all(math.isfinite(float(x)) for x in vals):
        return "the cell holds a non-finite value"
    a, b, c, al, be, ga = cell_with_defaults(vals)
    if a <= 0:
        return "the cell edge a must be positive"
    for name, ang in (("alpha", al), ("beta", be), ("gamma", ga)):
        if not ang < math.pi:
            return f"the angle {name} = {math.degrees(ang):g} deg is not below 180 deg"
    ca, cb, cg = math.cos(al), math.cos(be), math.cos(ga)
    det = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    if not det > MIN_FLATNESS ** 2:
        return (f"the angles {math.degrees(al):g} {math.degrees(be):g} {math.degrees(ga):g} deg give no real cell "
                "(zero volume: each angle must be less than the sum of the other two, and all three less than 360)")
    return None


def amat_problem(amat) -> str | None:
    """Why a MOSFLM A matrix (3x3, columns a*, b*, c* times the wavelength) gives no lattice,
    or None: every entry finite, no zero column, and the three vectors not coplanar
    (|det| >= :data:`MIN_FLATNESS` x the product of their lengths)."""
    m = np.asarray(amat, dtype=float)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        return "the A matrix must be nine finite numbers"
    lengths = np.sqrt(np.sum(m * m, axis=0))
    if not np.all(lengths > 0):
        names = [n for n, v in zip(("a*", "b*", "c*"), lengths) if not v > 0]
        return f"the A matrix is singular: its {', '.join(names)} column is zero"
    with np.errstate(all="ignore"):
        flat = abs(float(np.linalg.det(m / lengths)))
    if not flat >= MIN_FLATNESS:
        return "the A matrix is singular: its reciprocal vectors a*, b*, c* are coplanar (the cell has no volume)"
    return None


def check_crystal(cfg: CrystalConfig, *, mat: str = "-mat") -> None:
    """Raise :class:`~nbxp.errors.ConfigError` naming the flag when the cell or A matrix is
    degenerate (see :func:`cell_problem`, :func:`amat_problem`); ``mat`` is how the message
    names the A matrix (e.g. ``"-mat A.mat"``).  The set-up calls this before it divides by
    any volume, so every caller of the library gets the same refusal."""
    if cfg.cell is None and cfg.amat is None:
        raise ConfigError("no crystal: give -cell a b c alpha beta gamma or -mat FILE")
    if cfg.cell is not None:
        why = cell_problem(cfg.cell)
        if why:
            raise ConfigError(f"-cell: {why}")
    if cfg.amat is not None:
        why = amat_problem(cfg.amat)
        if why:
            raise ConfigError(f"{mat}: {why}")


def cell_vectors(cfg: CrystalConfig, wavelength: float, notes: list, *, xp, misset=None) -> CellVectors:
    """Lab-frame cell vectors from ``-cell`` or ``-mat``, after the misset rotation
    (``misset``: angles overriding ``cfg.misset``, e.g. resolved random ones).

    Follows nanoBragg: reciprocal vectors are built (or read, dividing the A matrix by the
    wavelength in A), rotated by the misset, turned into real-space vectors through cross
    products (forcing the user's edge lengths when a cell was given), and then the reciprocal
    vectors are regenerated from the real ones.
    """
    check_crystal(cfg)
    user_cell = cfg.cell is not None
    recip = np.zeros((3, 3))
    if user_cell:
        cell_A = (cfg.cell[0] * 1e10, cfg.cell[1] * 1e10, cfg.cell[2] * 1e10, *cfg.cell[3:6])
        recip, V_user, lengths = standard_setting(cell_A, notes)
    if cfg.amat is not None:
        # A-matrix rows hold x, y, z components of a*, b*, c* times lambda (in A)
        recip = np.asarray(cfg.amat, dtype=float).T * (1e-10 / wavelength)
    r = xp.asarray(recip, dtype=xp.float64)
    misset = cfg.misset if misset is None else misset
    if isinstance(misset, tuple):
        r = rotate_xyz(r, *misset, xp=xp)
    ast, bst, cst = r[0, :], r[1, :], r[2, :]
    axb, bxc, cxa = cross(ast, bst, xp=xp), cross(bst, cst, xp=xp), cross(cst, ast, xp=xp)
    V_star = float(dot(ast, bxc, xp=xp))
    if user_cell:
        bxc, cxa, axb, V_star = exact_cell_edges(bxc, cxa, axb, lengths, V_user, xp=xp)
    V_cell = 1.0 / V_star
    a, b, c = bxc * V_cell, cxa * V_cell, axb * V_cell
    real = xp.stack([a, b, c])
    recip = xp.stack([cross(b, c, xp=xp), cross(c, a, xp=xp), cross(a, b, xp=xp)]) * V_star
    return CellVectors(real=real, reciprocal=recip, volume=V_cell)


def cell_parameters(vecs: CellVectors, *, xp) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(a, b, c, alpha, beta, gamma) in A and degrees, for the cell and its reciprocal."""
    def params(v, other, vol_factor):
        lens = [float(norm(v[i, :], xp=xp)) for i in range(3)]
        olens = [float(norm(other[i, :], xp=xp)) for i in range(3)]
        ang = []
        for i, (j, k) in enumerate(((1, 2), (0, 2), (0, 1))):
            s = olens[i] * vol_factor / lens[j] / lens[k]
            c = float(dot(v[j, :], v[k, :], xp=xp)) / lens[j] / lens[k]
            ang.append(math.degrees(_clamp(s, c)))
        return tuple(lens) + tuple(ang)
    return params(vecs.real, vecs.reciprocal, vecs.volume), params(vecs.reciprocal, vecs.real, 1.0 / vecs.volume)


def crystal_size(cfg: CrystalConfig, real_A, *, xp) -> tuple[float, float, float]:
    """Na, Nb, Nc: from the crystal sizes when given (rounded up), at least 1."""
    N = [cfg.Na, cfg.Nb, cfg.Nc]
    for i, size in enumerate((cfg.size_a, cfg.size_b, cfg.size_c)):
        if size > 0:
            N[i] = float(math.ceil(size / (float(norm(real_A[i, :], xp=xp)) * 1e-10)))
        if N[i] <= 1.0:
            N[i] = 1.0
    return tuple(N)


@dataclass
class RotationSampling:
    """Spindle and mosaic sampling after nanoBragg's automatic choices (radians)."""

    phi0: float
    phistep: float
    phisteps: int
    osc: float
    mosaic_spread: float
    mosaic_domains: int

    @property
    def phis(self) -> list[float]:
        return [self.phi0 + self.phistep * i for i in range(self.phisteps)]


def rotation_sampling(cfg: CrystalConfig, notes: list) -> RotationSampling:
    """Choose phi steps and mosaic domains from whatever the user gave, as nanoBragg does."""
    osc = -1.0 if cfg.osc is None else cfg.osc
    phistep = -1.0 if cfg.phistep is None else cfg.phistep
    phisteps = -1 if cfg.phisteps is None else cfg.phisteps
    if phisteps < 0:
        if osc < 0.0:
            if phistep <= 0.0:
                phisteps, osc, phistep = 1, 0.0, 0.0
            else:
                osc, phisteps = phistep, 2
        elif phistep <= 0.0:
            phisteps, phistep = 2, osc / 2.0
        else:
            phisteps = ceil_count(osc / phistep)
    else:
        if phisteps == 0:
            phisteps = 1
        if osc < 0.0:
            if phistep <= 0.0:
                osc = math.radians(1.0)
                phistep = osc / phisteps
            else:
                osc, phisteps = phistep, 2
        elif phistep < 0.0:
            phistep = osc / phisteps

    spread = -1.0 if cfg.mosaic_spread is None else cfg.mosaic_spread
    if not abs(spread) < float(np.finfo(np.float32).max):
        # nanoBragg's domain generator takes the spread as a float: beyond its range the
        # rotation angle is infinite and every domain matrix NaN
        raise ConfigError(f"-mosaic: a spread of {math.degrees(spread):g} deg is beyond the single-precision "
                          "range of nanoBragg's mosaic-domain generator")
    domains = -1 if cfg.mosaic_domains is None else cfg.mosaic_domains
    if domains <= 0:
        if spread < 0.0:
            domains, spread = 1, 0.0
        elif spread == 0.0:
            domains = 1
        else:
            notes.append("WARNING: finite mosaicity with only one domain! upping to 10 mosaic domains")
            domains = 10
    elif spread < 0.0:
        notes.append("WARNING: no mosaic spread specified.  setting mosaic_domains = 1")
        spread, domains = 0.0, 1
    elif spread == 0.0:
        notes.append("WARNING: zero mosaic spread specified.  setting mosaic_domains = 1")
        domains = 1
    return RotationSampling(cfg.phi0, phistep, phisteps, osc, spread, domains)


def orientations(real_m, spindle, sampling: RotationSampling, seed: int, *, xp, dtype, extra=None, umats=None,
                 phis=None):
    """Cell vectors (m) for every (phi step, mosaic domain), shape (phisteps*domains, 3, 3).

    Rows are a, b, c; the flattened order is phi-major then domain, nanoBragg's loop order.
    Each phi step rotates the unrotated cell afresh about the spindle axis; the mosaic
    rotation is applied after it.  ``extra``: a (3, 3) lab-frame rotation applied after the
    phi rotation and before the mosaic one (a still shot's orientation, :mod:`nbxp.series`);
    ``umats``: the mosaic matrices of :func:`mosaic_matrices` when already drawn (a series
    draws them once; an array of the namespace in the differentiable set-up); ``phis``: the
    phi angles (rad, array (P,)) when they are differentiable stand-ins for ``sampling.phis``.
    """
    phis = xp.asarray(sampling.phis, dtype=dtype) if phis is None else phis  # (P,)
    v = _namespace_array(real_m, xp, dtype)  # (3, 3)
    rotated = rotate_axis(v[None, :, :], spindle, phis[:, None], xp=xp)  # (P, 3, 3)
    if extra is not None:
        # rows are vectors: v' = R v  ->  rows @ R^T
        rotated = xp.matmul(rotated, xp.permute_dims(xp.asarray(extra, dtype=dtype), (1, 0))[None, :, :])
    if sampling.mosaic_spread > 0.0:
        U = _namespace_array(mosaic_matrices(sampling, seed) if umats is None else umats, xp, dtype)
        # a_m = U_m a_p  ->  rows: (P,1,3,3) @ (1,M,3,3)^T
        rotated = xp.matmul(rotated[:, None, :, :], xp.permute_dims(U, (0, 2, 1))[None, :, :, :])
        rotated = xp.reshape(rotated, (-1, 3, 3))
    else:
        rotated = xp.reshape(xp.broadcast_to(rotated[:, None, :, :], (rotated.shape[0], sampling.mosaic_domains, 3, 3)), (-1, 3, 3))
    return rotated


def _namespace_array(a, xp, dtype):
    """``a`` itself when it already is an array of the namespace in ``dtype`` (a value that
    may carry a derivative: asarray would copy it, and on older torch drop its graph), else
    ``xp.asarray(a, dtype=dtype)``."""
    if not isinstance(a, np.ndarray) and getattr(a, "dtype", None) == dtype:
        return a
    return xp.asarray(a, dtype=dtype)


def mosaic_matrices(sampling: RotationSampling, seed: int) -> np.ndarray:
    """The mosaic-domain rotations (host float64, (domains, 3, 3)) nanoBragg draws from
    ``-mosaic_seed`` ``seed`` for ``sampling``'s spread."""
    return rng.mosaic_domains(sampling.mosaic_spread, sampling.mosaic_domains, -seed)


# -- the assembly phase of a differentiable set-up (nbxp.params) -----------------------------
# Pure namespace operations on stand-ins for the crystal's parameters; every decision (cell
# defaults, clamps, the misset's presence, the mosaic draws) was taken on the host by the
# functions above, from plain-float copies of the same values.

def standard_setting_pure(cell, *, xp):
    """:func:`standard_setting`'s reciprocal vectors (3, 3) (1/A), volume (A^3) and edges
    for a cell whose entries (A, rad; defaults already applied) are 0-d arrays: the same
    formulas (the cell is known valid, so its clamps are inactive)."""
    a, b, c, al, be, ga = cell
    sin, cos = xp.sin, xp.cos
    aavg = (al + be + ga) / 2
    skew = xp.abs(sin(aavg) * sin(aavg - al) * sin(aavg - be) * sin(aavg - ga))
    V = 2.0 * a * b * c * xp.sqrt(skew)
    Vs = 1.0 / V
    ast, bst, cst = b * c * sin(al) * Vs, c * a * sin(be) * Vs, a * b * sin(ga) * Vs
    sin_gs = c * Vs / ast / bst
    cos_as = (cos(be) * cos(ga) - cos(al)) / (sin(be) * sin(ga))
    cos_bs = (cos(ga) * cos(al) - cos(be)) / (sin(ga) * sin(al))
    cos_gs = (cos(al) * cos(be) - cos(ga)) / (sin(al) * sin(be))
    zero = xp.zeros_like(a)
    recip = xp.stack([
        xp.stack([ast, zero, zero]),
        xp.stack([bst * cos_gs, bst * sin_gs, zero]),
        xp.stack([cst * cos_bs, cst * (cos_as - cos_bs * cos_gs) / sin_gs, cst * V / (a * b * c * sin_gs)]),
    ])
    return recip, V, (a, b, c)


def cell_vectors_pure(recip, misset, lengths=None, V_user=None, *, xp) -> CellVectors:
    """:func:`cell_vectors` after its host part: ``recip`` (3, 3) (1/A, array) rotated by
    ``misset`` (three angles, rad, floats or 0-d arrays; None: no misset), turned into the
    real cell and back; with ``lengths``/``V_user`` (A, A^3) the user's cell edges are
    imposed.  ``volume`` is then an array."""
    r = recip
    if misset is not None:
        r = rotate_xyz(r, *misset, xp=xp)
    ast, bst, cst = r[0, :], r[1, :], r[2, :]
    axb, bxc, cxa = cross(ast, bst, xp=xp), cross(bst, cst, xp=xp), cross(cst, ast, xp=xp)
    V_star = dot(ast, bxc, xp=xp)
    if lengths is not None:
        a_len, b_len, c_len = lengths
        rescale = lambda v, m: v * (m / norm(v, xp=xp))  # noqa: E731
        bxc, cxa, axb = rescale(bxc, a_len / V_user), rescale(cxa, b_len / V_user), rescale(axb, c_len / V_user)
        V_star = 1.0 / V_user
    V_cell = 1.0 / V_star
    a, b, c = bxc * V_cell, cxa * V_cell, axb * V_cell
    real = xp.stack([a, b, c])
    rec = xp.stack([cross(b, c, xp=xp), cross(c, a, xp=xp), cross(a, b, xp=xp)]) * V_star
    return CellVectors(real=real, reciprocal=rec, volume=V_cell)


def mosaic_draws(sampling: RotationSampling, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The random part of :func:`mosaic_matrices`, frozen: per domain the unit rotation axis
    (host (domains, 3)) and the factor (1 - r^2)^(1/3) (host (domains,)) that scales the
    spread into the domain's rotation angle, from the same ``ran1`` stream in the same order
    (three deviates per domain, :func:`nbxp.rng.mosaic_rotation_umat`)."""
    gen = rng.Ran1(-seed)
    axes, scales = [], []
    for _ in range(sampling.mosaic_domains):
        r1, r2, r3 = 2.0 * gen() - 1.0, 2.0 * gen() - 1.0, 2.0 * gen() - 1.0
        xyrad = math.sqrt(1.0 - r2 * r2)
        axes.append((xyrad * math.sin(math.pi * r1), xyrad * math.cos(math.pi * r1), r2))
        scales.append(rng._powf(rng._f32(1.0 - r3 * r3), rng._ONE_THIRD_F32))
    return np.asarray(axes, dtype=np.float64).reshape(-1, 3), np.asarray(scales, dtype=np.float64)


def mosaic_matrices_smooth(spread, axes: np.ndarray, scales: np.ndarray, *, xp, dtype):
    """Rodrigues rotations (domains, 3, 3) by ``spread * scales`` about ``axes`` (a 0-d
    array ``spread``, rad): the smooth formula whose value nanoBragg rounds to single
    precision; domain 0 is the identity, as in :func:`nbxp.rng.mosaic_domains`."""
    v = xp.asarray(axes, dtype=dtype)
    rot = spread * xp.asarray(scales, dtype=dtype)
    c, s = xp.cos(rot), xp.sin(rot)
    t = 1.0 - c
    v1, v2, v3 = v[:, 0], v[:, 1], v[:, 2]
    U = xp.stack([
        xp.stack([c + t * v1 * v1, t * v1 * v2 - s * v3, t * v1 * v3 + s * v2], axis=-1),
        xp.stack([t * v1 * v2 + s * v3, c + t * v2 * v2, t * v2 * v3 - s * v1], axis=-1),
        xp.stack([t * v1 * v3 - s * v2, t * v2 * v3 + s * v1, c + t * v3 * v3], axis=-1),
    ], axis=-2)
    first = xp.reshape(xp.arange(U.shape[0]) == 0, (-1, 1, 1))
    return xp.where(first, xp.eye(3, dtype=dtype)[None, :, :], U)
