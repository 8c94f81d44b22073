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
    axis, with its limit N at x = 0 (nanoBragg's ``sincg``).  ``N`` may be a 0-d array (a
    differentiable crystal size): the limit is then N times ones, which carries dN."""
    s = xp.sin(x)
    safe = xp.where(x == 0, xp.ones_like(s), s)
    limit = xp.full_like(s, N) if isinstance(N, (int, float)) else N * xp.ones_like(s)
    return xp.where(x == 0, limit, xp.sin(N * x) / safe)


def sinc3(x, *, xp):
    """Transform of a sphere, 3 (sin x - x cos x)/x^3, equal to 1 at x = 0."""
    safe = xp.where(x == 0, xp.ones_like(x), x)
    v = 3.0 * (xp.sin(safe) / safe - xp.cos(safe)) / (safe * safe)
    return xp.where(x == 0, xp.ones_like(x), v)


# sin(pi x) = x P(x^2) on |x| <= 1/2: near-minimax coefficients of P (lowest order first)
# from scripts/fit_sinpi.py.  float64: degree 6 in x^2, relative error 6e-14 (libm's sine
# is scalar code in NumPy on most CPUs and costs ~5x more); float32: degree 4, 2e-7, the
# accuracy of float32 itself, for half the cost of NumPy's vectorised float32 sine
_SINPI_OVER_X = {
    "float64": (3.1415926535895964, -5.167712779977414, 2.550164035423543, -0.5992644257994288,
                0.08214473257783624, -0.007363786623417221, 0.00044720239425064814),
    "float32": (3.1415926369616254, -5.167709688139303, 2.550069772582328, -0.5982423660551025,
                0.07756080372327143),
}


def sinpi_over_x(z, *, xp):
    """sin(pi x)/x as a function of z = x^2, for |x| <= 1/2 (pi at z = 0)."""
    c = _SINPI_OVER_X["float32" if z.dtype == xp.float32 else "float64"]
    p = z * c[-1]
    for a in c[-2:0:-1]:
        p += a
        p *= z
    p += c[0]
    return p


def sinpi_reduced(x, *, xp):
    """sin(pi x) for |x| <= 1/2."""
    return x * sinpi_over_x(x * x, xp=xp)


def sincg_product(hkl, N, *, xp):
    """prod_i sincg(pi h_i, N_i) over the three axes of ``hkl`` (3, ...), for integer N.

    Exact range reduction instead of sin(N pi h): with h = n + f (n the nearest integer,
    |f| <= 1/2) and N f = m + g (|g| <= 1/2),

        sin(N pi h)/sin(pi h) = (-1)^(n (N - 1) + m) sin(pi g)/sin(pi f)
                              = (-1)^(n (N - 1) + m) (g/f) P(g^2)/P(f^2)

    with sin(pi x) = x P(x^2).  Both sines keep full relative precision near the Bragg
    peaks, and g/f is exactly N where m = 0 (the limit N at f = 0 needs no special case).
    The signs of the three axes are combined into one parity.
    """
    shape = (3,) + (1,) * (hkl.ndim - 1)
    Nv = xp.reshape(xp.asarray(N, dtype=hkl.dtype), shape)
    n = xp.round(hkl)
    f = hkl - n
    g = f * Nv
    m = xp.round(g)
    g -= m
    # g/f = N - m/f: exactly N wherever m = 0, f = 0 included (the tiny offset turns 0/0
    # into 0/tiny and changes no other quotient), without a branch
    tiny = float(xp.finfo(hkl.dtype).smallest_normal)
    r = Nv - m / (f + tiny)
    r *= sinpi_over_x(g * g, xp=xp)
    r /= sinpi_over_x(f * f, xp=xp)
    k = n * (Nv - 1.0)
    k += m  # (-1)^k is the sign of each axis
    F = r[0, ...] * r[1, ...]
    F *= r[2, ...]
    half = k[0, ...] + k[1, ...]
    half += k[2, ...]
    half *= 0.5
    sign = xp.floor(half)
    sign -= half  # 0 for an even total, -1/2 for an odd one
    sign *= 4.0
    sign += 1.0
    F *= sign
    return F


def lattice_factor(hkl, N: tuple[float, float, float], shape: str, fudge: float, recip, *, xp):
    """F_latt for fractional Miller indices ``hkl``, shape (3, ...) (h, k, l first).

    SQUARE: product of sincg(pi h, Na) over axes with more than one cell.  ROUND, GAUSS and
    TOPHAT use the distance from the nearest reciprocal-lattice point, ``h - round(h)``:
    in index space scaled by N (ROUND) or in reciprocal space scaled by Na Nb Nc (GAUSS,
    TOPHAT, with ``recip`` the (3, 3) reciprocal cell in 1/A, rows a*, b*, c*).
    """
    Na, Nb, Nc = N
    # a 0-d array among N: a differentiable (continuous) crystal size, on the general path
    smooth = [not isinstance(n, (int, float)) for n in N]
    if shape == SHAPE_SQUARE:
        if not any(smooth) and all(float(n) == math.floor(n) for n in N):
            # axes with N = 1 give exactly 1 here, as nanoBragg's skipping them does
            return sincg_product(hkl, tuple(float(max(n, 1.0)) for n in N), xp=xp)
        F = None
        for i, n in enumerate(N):
            # nanoBragg skips axes of one cell; a stand-in is never skipped (sin(Nx)/sin(x) is
            # 1 at N = 1, and its derivative there is what a refinement needs)
            if smooth[i] or n > 1:
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
    inside = xp.full_like(rad_star_sqr, NNN) if not any(smooth) else NNN * xp.ones_like(rad_star_sqr)
    return xp.where(rad_star_sqr * fudge < 0.3969, inside, xp.zeros_like(rad_star_sqr))


def polarization_frame(incident, axis, *, xp):
    """Unit vectors (E_in, B_in) spanning the plane normal to each ``incident`` beam (S, 3):
    E_in in the plane of ``incident`` and the E-vector ``axis``, B_in = axis x incident."""
    B_in, _ = unitize(cross(axis, incident, xp=xp), xp=xp)
    E_in, _ = unitize(cross(incident, B_in, xp=xp), xp=xp)
    return E_in, B_in


def kahn_factor(cos2theta, x, y, kahn: float, *, xp):
    """Kahn polarization factor 0.5 (1 + cos^2 2theta - K cos(2 psi) sin^2 2theta) from
    ``cos2theta`` (incident . diffracted) and the diffracted ray's components ``x`` along
    E_in and ``y`` along B_in (psi = -atan2(y, x), Kahn et al. 1982).

    cos(2 psi) = (x^2 - y^2)/(x^2 + y^2), 1 along the beam (psi = 0): the same value as
    cos(2 atan2(y, x)) without two transcendental calls per evaluation.
    """
    c2 = cos2theta * cos2theta
    if kahn == 0.0:
        return 0.5 * (1.0 + c2)
    x2, y2 = x * x, y * y
    r2 = x2 + y2
    safe = xp.where(r2 == 0, xp.ones_like(r2), r2)
    cos2psi = xp.where(r2 == 0, xp.ones_like(r2), (x2 - y2) / safe)
    return 0.5 * (1.0 + c2 - kahn * cos2psi * (1.0 - c2))


def polarization(incident, diffracted, axis, kahn: float, *, xp):
    """Kahn polarization factor (:func:`kahn_factor`) for unit vectors ``incident`` and
    ``diffracted`` (components last, broadcasting against each other); ``axis`` is the
    E-vector reference direction."""
    E_in, B_in = polarization_frame(incident, axis, xp=xp)
    return kahn_factor(dot(incident, diffracted, xp=xp), dot(diffracted, E_in, xp=xp),
                       dot(diffracted, B_in, xp=xp), kahn, xp=xp)


class StructureFactors:
    """Lookup of F(h, k, l) on a dense grid: nearest neighbour or tricubic interpolation.

    Index arrays are components-first: ``hkl[0]`` is h, ``hkl[1]`` k, ``hkl[2]`` l.

    ``grid`` is a 1-D array (the flattened (Hr, Kr, Lr) grid), ``mins`` the (h, k, l) of its
    first element, ``count`` the number of reflections read (0: every lookup is default_F).
    """

    def __init__(self, grid, shape, mins, count: int, default_F: float, *, xp):
        self.grid, self.shape, self.mins = grid, shape, mins
        self.count, self.default_F, self.xp = count, default_F, xp
        self._padded = None
        #: build the padded grid by pure operations (set by the differentiable set-up)
        self.pure = False

    def _padded_grid(self):
        """The grid with a one-cell border of default_F on every face (flattened): nearest
        lookups clip indices into the border instead of testing and selecting."""
        if self._padded is None and self.pure:
            self._padded = self._padded_pure()
        if self._padded is None:
            xp = self.xp
            Hr, Kr, Lr = self.shape
            pad = xp.full((Hr + 2, Kr + 2, Lr + 2), self.default_F, dtype=self.grid.dtype)
            pad[1:-1, 1:-1, 1:-1] = xp.reshape(self.grid, (Hr, Kr, Lr))
            self._padded = xp.reshape(pad, (-1,))
        return self._padded

    def _padded_pure(self):
        """The padded grid by concatenation only (no item assignment, which JAX lacks and
        which autograd records poorly): differentiable in the grid and in default_F."""
        xp = self.xp
        g = xp.reshape(self.grid, self.shape)
        for ax in (2, 1, 0):
            shp = list(g.shape)
            shp[ax] = 1
            face = xp.ones(tuple(shp), dtype=g.dtype) * self.default_F
            g = xp.concat([face, g, face], axis=ax)
        return xp.reshape(g, (-1,))

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
            if not isinstance(self.default_F, (int, float)):
                return xp.ones_like(hkl0[0, ...]) * self.default_F
            return xp.full_like(hkl0[0, ...], self.default_F)
        Hr, Kr, Lr = self.shape
        mins = self._mins_col(hkl0)
        # any index outside the grid lands on the default_F border of the padded grid
        c = xp.clip(hkl0, mins - 1.0, mins + self._shape_col(hkl0))
        itype = xp.int64 if (Hr + 2) * (Kr + 2) * (Lr + 2) >= 2**31 else xp.int32
        c = xp.astype(c, itype)
        K2, L2 = Kr + 2, Lr + 2
        origin = ((1 - self.mins[0]) * K2 + (1 - self.mins[1])) * L2 + (1 - self.mins[2])
        flat = c[0, ...] * K2
        flat += c[1, ...]
        flat *= L2
        flat += c[2, ...]
        flat += origin
        return xp.reshape(xp.take(self._padded_grid(), xp.reshape(flat, (-1,)), axis=0), flat.shape)

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
