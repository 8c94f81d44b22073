"""Per-sub-path physics on arrays: lattice factors, structure factors, polarization.

All functions take and return arrays of one array-API namespace (``xp``) and broadcast over
leading axes.  Units: Miller indices are dimensionless, reciprocal vectors in 1/A (as
nanoBragg keeps them for the spot-shape radius), wavelengths in m.
"""

from __future__ import annotations

import math

from .vectors import cross, dot, unitize

SHAPE_SQUARE, SHAPE_ROUND, SHAPE_GAUSS, SHAPE_TOPHAT = "SQUARE", "ROUND", "GAUSS", "TOPHAT"

#: (4/3 pi)^(-1/2)-like constant nanoBragg uses so ROUND spots match SQUARE spot volume
_ROUND_NORM = 0.723601254558268


def sincg(x, N: float, *, xp):
    """Grating function sin(N x)/sin(x), the lattice transform of N unit cells along one
    axis, with its limit N at x = 0 (nanoBragg's ``sincg``)."""
    s = xp.sin(x)
    safe = xp.where(x == 0, xp.ones_like(s), s)
    return xp.where(x == 0, xp.full_like(s, N), xp.sin(N * x) / safe)


def sinc3(x, *, xp):
    """Transform of a sphere, 3 (sin x - x cos x)/x^3, equal to 1 at x = 0."""
    safe = xp.where(x == 0, xp.ones_like(x), x)
    v = 3.0 * (xp.sin(safe) / safe - xp.cos(safe)) / (safe * safe)
    return xp.where(x == 0, xp.ones_like(x), v)


# Taylor coefficients of sin(pi x) up to x^15: on |x| <= 1/2 the relative truncation error
# is below 1e-11 (x^13 would give 1e-9), for 16 multiply-adds
_SINPI = tuple((-1) ** k * math.pi ** (2 * k + 1) / math.factorial(2 * k + 1) for k in range(8))


def sinpi_reduced(x, *, xp):
    """sin(pi x) for |x| <= 1/2: a polynomial in float64 (NumPy's float64 sine is scalar C
    code on most CPUs), the namespace's sine in float32 (vectorised there)."""
    if x.dtype == xp.float32:
        return xp.sin(math.pi * x)
    z = x * x
    p = z * _SINPI[-1]
    for c in _SINPI[-2:0:-1]:
        p += c
        p *= z
    p += _SINPI[0]
    p *= x
    return p


def sincg_product(hkl, N, *, xp):
    """prod_i sincg(pi h_i, N_i) over the three axes of ``hkl`` (3, ...), for integer N.

    Exact range reduction instead of sin(N pi h): with h = n + f (n the nearest integer,
    |f| <= 1/2) and N f = m + g, sin(N pi h)/sin(pi h) = (-1)^(n (N - 1) + m) sin(pi g)/sin(pi f),
    so both sines take arguments within +-pi/2 and keep full relative precision near the
    Bragg peaks (the limit at f = 0 is N with that sign).
    """
    shape = (3,) + (1,) * (hkl.ndim - 1)
    Nv = xp.reshape(xp.asarray(N, dtype=hkl.dtype), shape)
    n = xp.round(hkl)
    f = hkl - n
    g = f * Nv
    m = xp.round(g)
    g -= m
    half = n * (Nv - 1.0)
    half += m
    half *= 0.5
    sign = xp.floor(half)
    sign -= half
    sign *= 4.0
    sign += 1.0  # (-1)^(n (N-1) + m)
    num = sinpi_reduced(g, xp=xp)
    num *= sign
    den = sinpi_reduced(f, xp=xp)
    zero = f == 0
    r = num / xp.where(zero, xp.ones_like(den), den)
    r = xp.where(zero, Nv * sign, r)
    return r[0, ...] * r[1, ...] * r[2, ...]


def lattice_factor(hkl, N: tuple[float, float, float], shape: str, fudge: float, recip, *, xp):
    """F_latt for fractional Miller indices ``hkl``, shape (3, ...) (h, k, l first).

    SQUARE: product of sincg(pi h, Na) over axes with more than one cell.  ROUND, GAUSS and
    TOPHAT use the distance from the nearest reciprocal-lattice point, ``h - round(h)``:
    in index space scaled by N (ROUND) or in reciprocal space scaled by Na Nb Nc (GAUSS,
    TOPHAT, with ``recip`` the (3, 3) reciprocal cell in 1/A, rows a*, b*, c*).
    """
    Na, Nb, Nc = N
    if shape == SHAPE_SQUARE:
        if all(float(n) == math.floor(n) for n in N):
            # axes with N = 1 give exactly 1 here, as nanoBragg's skipping them does
            return sincg_product(hkl, tuple(float(max(n, 1.0)) for n in N), xp=xp)
        F = None
        for i, n in enumerate(N):
            if n > 1:
                f = sincg(math.pi * hkl[i, ...], n, xp=xp)
                F = f if F is None else F * f
        return xp.ones_like(hkl[0, ...]) if F is None else F
    d = hkl - xp.ceil(hkl - 0.5)
    NNN = Na * Nb * Nc
    if shape == SHAPE_ROUND:
        hrad_sqr = (d[0, ...] * d[0, ...] * (Na * Na) + d[1, ...] * d[1, ...] * (Nb * Nb)
                    + d[2, ...] * d[2, ...] * (Nc * Nc))
        return NNN * _ROUND_NORM * sinc3(math.pi * xp.sqrt(hrad_sqr * fudge), xp=xp)
    rest = d.shape[1:]
    dstar = xp.matmul(xp.permute_dims(recip, (1, 0)), xp.reshape(d, (3, -1)))  # (3, n) in 1/A
    rad_star_sqr = xp.reshape(xp.sum(dstar * dstar, axis=0), rest) * (Na * Na * Nb * Nb * Nc * Nc)
    if shape == SHAPE_GAUSS:
        return NNN * xp.exp(-(rad_star_sqr / 0.63 * fudge))
    return xp.where(rad_star_sqr * fudge < 0.3969, xp.full_like(rad_star_sqr, NNN), xp.zeros_like(rad_star_sqr))


def polarization(incident, diffracted, axis, kahn: float, *, xp):
    """Kahn polarization factor 0.5 (1 + cos^2 2theta - K cos(2 psi) sin^2 2theta).

    ``incident`` and ``diffracted`` are unit vectors broadcasting against each other;
    ``axis`` is the E-vector reference direction; psi is the azimuth of the diffracted ray
    about the incident beam, measured from the E vector (Kahn et al. 1982).
    """
    c2 = dot(incident, diffracted, xp=xp)
    c2 = c2 * c2
    s2 = 1.0 - c2
    if kahn == 0.0:
        return 0.5 * (1.0 + c2)
    B_in, _ = unitize(cross(axis, incident, xp=xp), xp=xp)
    E_in, _ = unitize(cross(incident, B_in, xp=xp), xp=xp)
    psi = -xp.atan2(dot(diffracted, B_in, xp=xp), dot(diffracted, E_in, xp=xp))
    return 0.5 * (1.0 + c2 - kahn * xp.cos(2.0 * psi) * s2)


class StructureFactors:
    """Lookup of F(h, k, l) on a dense grid: nearest neighbour or tricubic interpolation.

    Index arrays are components-first: ``hkl[0]`` is h, ``hkl[1]`` k, ``hkl[2]`` l.

    ``grid`` is a 1-D array (the flattened (Hr, Kr, Lr) grid), ``mins`` the (h, k, l) of its
    first element, ``count`` the number of reflections read (0: every lookup is default_F).
    """

    def __init__(self, grid, shape, mins, count: int, default_F: float, *, xp):
        self.grid, self.shape, self.mins = grid, shape, mins
        self.count, self.default_F, self.xp = count, default_F, xp

    def _mins_col(self, like):
        return self.xp.reshape(self.xp.asarray(self.mins, dtype=like.dtype), (3,) + (1,) * (like.ndim - 1))

    def _shape_col(self, like):
        return self.xp.reshape(self.xp.asarray(self.shape, dtype=like.dtype), (3,) + (1,) * (like.ndim - 1))

    def _flat_index(self, h, k, l):
        Hr, Kr, Lr = self.shape
        return ((h - self.mins[0]) * Kr + (k - self.mins[1])) * Lr + (l - self.mins[2])

    def _take(self, idx):
        xp = self.xp
        n = self.shape[0] * self.shape[1] * self.shape[2]
        idx = xp.clip(idx, 0, max(n - 1, 0))
        flat = xp.reshape(idx, (-1,))
        return xp.reshape(xp.take(self.grid, flat, axis=0), idx.shape)

    def nearest(self, hkl0):
        """F at the nearest lattice point ``hkl0`` (integer-valued float array (3, ...)),
        ``default_F`` outside the grid."""
        xp = self.xp
        if self.count == 0:
            return xp.full_like(hkl0[0, ...], self.default_F)
        rel = hkl0 - self._mins_col(hkl0)  # (3, ...) offsets into the grid
        inside = xp.all((rel >= 0) & (rel < self._shape_col(hkl0)), axis=0)
        Hr, Kr, Lr = self.shape
        flat = (rel[0, ...] * Kr + rel[1, ...]) * Lr + rel[2, ...]
        flat = xp.where(inside, flat, xp.zeros_like(flat))
        F = xp.reshape(xp.take(self.grid, xp.reshape(xp.astype(flat, xp.int64), (-1,)), axis=0), flat.shape)
        return xp.where(inside, F, xp.full_like(F, self.default_F))

    def out_of_interpolation_range(self, hkl):
        """True where the 4x4x4 neighbourhood of ``hkl`` is not inside the grid, by
        nanoBragg's test on the fractional indices."""
        bad = None
        for ax in range(3):
            lo, rng = self.mins[ax], self.shape[ax]
            x = hkl[ax, ...]
            b = ((x - lo + 3) > rng) | (x - 2 < lo)
            bad = b if bad is None else bad | b
        return bad

    def tricubic(self, hkl):
        """Tricubic (4-point Lagrange per axis) interpolation of F at ``hkl`` (3, ...).

        Points whose neighbourhood leaves the grid give meaningless values; callers select
        them away with :meth:`out_of_interpolation_range`.
        """
        xp = self.xp
        base = xp.floor(hkl)
        u = hkl - base
        w = []
        for ax in range(3):
            d0, d1, d2, d3 = u[ax, ...] + 1.0, u[ax, ...], u[ax, ...] - 1.0, u[ax, ...] - 2.0
            w.append((d1 * d2 * d3 / -6.0, d0 * d2 * d3 / 2.0, d0 * d1 * d3 / -2.0, d0 * d1 * d2 / 6.0))
        ib = xp.astype(base, xp.int64)
        F = xp.zeros_like(hkl[0, ...])
        for i in range(4):
            for j in range(4):
                wij = w[0][i] * w[1][j]
                for k in range(4):
                    idx = self._flat_index(ib[0, ...] + (i - 1), ib[1, ...] + (j - 1), ib[2, ...] + (k - 1))
                    F = F + wij * w[2][k] * self._take(idx)
        return F
