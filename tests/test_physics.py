"""Unit tests of nbxp.physics: grating and sphere transforms, lattice factors, the Kahn
polarization factor and structure-factor lookup / tricubic interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbxp.physics import (SHAPE_GAUSS, SHAPE_ROUND, SHAPE_SQUARE, SHAPE_TOPHAT, StructureFactors,
                          lattice_factor, polarization, sinc3, sincg, sincg_product, sinpi_reduced)

from .helpers import to_numpy

ROUND_NORM = 0.723601254558268
SINC3_FIRST_ZERO = 4.493409457909064  # first positive root of tan x = x


def cf(xp, a):
    """Components-first array: (..., 3) input -> (3, ...) as the physics functions take."""
    a = np.asarray(a, dtype=float)
    return xp.asarray(np.ascontiguousarray(np.moveaxis(a, -1, 0)), dtype=xp.float64)


def f64(xp, v):
    return xp.asarray(np.asarray(v, dtype=np.float64), dtype=xp.float64)


# --------------------------------------------------------------------------- sincg


@pytest.mark.parametrize("N", [1.0, 2.0, 5.0, 17.0])
def test_sincg_at_zero_is_N(xp, N):
    out = to_numpy(sincg(f64(xp, [0.0, 0.0]), N, xp=xp))
    np.testing.assert_array_equal(out, [N, N])


@pytest.mark.parametrize("N", [2.0, 5.0, 11.0])
def test_sincg_closed_form_away_from_zero(xp, N):
    x = np.linspace(0.01, 3.1, 57)
    x = np.concatenate([x, -x])
    out = to_numpy(sincg(f64(xp, x), N, xp=xp))
    np.testing.assert_allclose(out, np.sin(N * x) / np.sin(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N", [3.0, 4.0, 10.0])
@pytest.mark.parametrize("h", [1.0, 2.0, -3.0, 7.0])
def test_sincg_peaks_at_integer_h(xp, N, h):
    # near an integer Miller index the grating function approaches +-N
    hs = np.array([h + 1e-7, h - 1e-7, h + 1e-6])
    out = to_numpy(sincg(f64(xp, math.pi * hs), N, xp=xp))
    np.testing.assert_allclose(np.abs(out), N, rtol=1e-6)
    # sign: (-1)^(h (N-1))
    np.testing.assert_allclose(out[0], N * (-1.0) ** (int(h) * (int(N) - 1)), rtol=1e-6)
    # and it is much smaller halfway between peaks
    mid = to_numpy(sincg(f64(xp, [math.pi * (h + 0.5)]), N, xp=xp))
    assert abs(mid[0]) <= 1.0 + 1e-12


@pytest.mark.parametrize("N", [3, 5, 8])
def test_sincg_zeros_at_fractions_m_over_N(xp, N):
    hs = np.array([m / N for m in range(1, 3 * N) if m % N != 0])
    out = to_numpy(sincg(f64(xp, math.pi * hs), float(N), xp=xp))
    np.testing.assert_allclose(out, 0.0, atol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-13), ("float32", 4e-7)])
def test_sinpi_polynomial_accuracy(xp, dtype, rtol):
    # the fitted polynomial against the float64 library sine over the whole reduced range
    x = np.linspace(-0.5, 0.5, 20001)
    x = x[x != 0]
    dt = getattr(xp, dtype)
    out = to_numpy(sinpi_reduced(xp.asarray(x.astype(dtype), dtype=dt), xp=xp)).astype(np.float64)
    ref = np.sin(np.pi * x.astype(dtype).astype(np.float64))
    assert np.max(np.abs(out / ref - 1.0)) < rtol


def test_sincg_product_matches_direct_formula_for_large_N(xp):
    # Pilatus-like crystal sizes and indices far from the origin: the range-reduced form
    # against sin(N pi h)/sin(pi h) evaluated directly in float64
    rng = np.random.default_rng(7)
    N = (36.0, 47.0, 29.0)
    hkl = rng.uniform(-60, 60, size=(500, 3))
    hkl[:50] = np.round(hkl[:50]) + rng.uniform(-1e-3, 1e-3, size=(50, 3))  # near peaks
    out = to_numpy(sincg_product(cf(xp, hkl), N, xp=xp))
    ref = np.prod([np.sin(n * np.pi * hkl[:, i]) / np.sin(np.pi * hkl[:, i]) for i, n in enumerate(N)], axis=0)
    # the direct formula itself loses ~N*|h|*eps in the sine argument
    np.testing.assert_allclose(out, ref, rtol=1e-8, atol=1e-8 * np.prod(N))


@pytest.mark.parametrize("N", [(5.0, 5.0, 5.0), (4.0, 7.0, 2.0)])
def test_sincg_product_at_exact_lattice_points(xp, N):
    # exact integers (f = 0, the removable singularity) give +-Na Nb Nc with the sign
    # (-1)^(sum h_i (N_i - 1))
    hkl = np.array([[0, 0, 0], [1, 0, 0], [-3, 2, 1], [7, -5, 4]], dtype=float)
    out = to_numpy(sincg_product(cf(xp, hkl), N, xp=xp))
    sign = (-1.0) ** np.sum(hkl * (np.array(N) - 1), axis=1)
    np.testing.assert_array_equal(out, sign * np.prod(N))


def test_sincg_product_float32_close_to_float64(xp):
    rng = np.random.default_rng(8)
    hkl = rng.uniform(-20, 20, size=(2000, 3))
    N = (5.0, 6.0, 7.0)
    ref = to_numpy(sincg_product(cf(xp, hkl), N, xp=xp))
    h32 = xp.astype(cf(xp, hkl), xp.float32)
    out = to_numpy(sincg_product(h32, N, xp=xp)).astype(np.float64)
    # float32 indices carry |h| * 6e-8 of error, N times that in the phase
    np.testing.assert_allclose(out, ref, atol=2e-4 * np.prod(N))


# --------------------------------------------------------------------------- sinc3


def test_sinc3_one_at_zero(xp):
    np.testing.assert_array_equal(to_numpy(sinc3(f64(xp, [0.0]), xp=xp)), [1.0])


def test_sinc3_closed_form(xp):
    x = np.concatenate([np.linspace(0.05, 12.0, 50), [-1.3, -7.0]])
    out = to_numpy(sinc3(f64(xp, x), xp=xp))
    ref = 3.0 * (np.sin(x) - x * np.cos(x)) / x ** 3
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-14)
    # small argument: 1 - x^2/10 series
    small = to_numpy(sinc3(f64(xp, [1e-3]), xp=xp))
    np.testing.assert_allclose(small, 1.0 - 1e-6 / 10.0, rtol=1e-9)


def test_sinc3_first_zero(xp):
    x = np.array([SINC3_FIRST_ZERO - 0.01, SINC3_FIRST_ZERO, SINC3_FIRST_ZERO + 0.01])
    out = to_numpy(sinc3(f64(xp, x), xp=xp))
    assert out[0] > 0.0
    assert abs(out[1]) < 1e-12
    assert out[2] < 0.0
    # and positive everywhere before it
    xs = np.linspace(0.0, SINC3_FIRST_ZERO - 1e-3, 200)
    assert np.all(to_numpy(sinc3(f64(xp, xs), xp=xp)) > 0.0)


# --------------------------------------------------------------------------- lattice factor

RECIP = np.diag([1 / 50.0, 1 / 60.0, 1 / 70.0])  # 1/A, orthorhombic 50x60x70 A cell


def test_lattice_square_is_product_of_gratings(xp):
    rng = np.random.default_rng(1)
    hkl = rng.uniform(-3, 3, size=(40, 3))
    N = (3.0, 4.0, 7.0)
    out = to_numpy(lattice_factor(cf(xp, hkl), N, SHAPE_SQUARE, 1.0, f64(xp, RECIP), xp=xp))
    ref = np.ones(len(hkl))
    for i, n in enumerate(N):
        x = np.pi * hkl[:, i]
        ref = ref * np.sin(n * x) / np.sin(x)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_lattice_square_axes_with_one_cell_contribute_one(xp):
    rng = np.random.default_rng(2)
    hkl = rng.uniform(-3, 3, size=(30, 3))
    out = to_numpy(lattice_factor(cf(xp, hkl), (1.0, 5.0, 1.0), SHAPE_SQUARE, 1.0, f64(xp, RECIP), xp=xp))
    x = np.pi * hkl[:, 1]
    np.testing.assert_allclose(out, np.sin(5 * x) / np.sin(x), rtol=1e-10, atol=1e-10)
    ones = to_numpy(lattice_factor(cf(xp, hkl), (1.0, 1.0, 1.0), SHAPE_SQUARE, 1.0, f64(xp, RECIP), xp=xp))
    np.testing.assert_array_equal(ones, np.ones(len(hkl)))


def test_lattice_square_peak_value(xp):
    out = to_numpy(lattice_factor(cf(xp, [[0.0, 0.0, 0.0], [2.0 + 1e-7, -1.0 + 1e-7, 3.0 - 1e-7]]),
                                  (3.0, 4.0, 5.0), SHAPE_SQUARE, 1.0, f64(xp, RECIP), xp=xp))
    np.testing.assert_allclose(np.abs(out), 60.0, rtol=1e-6)


@pytest.mark.parametrize("shape,peak", [(SHAPE_ROUND, ROUND_NORM), (SHAPE_GAUSS, 1.0), (SHAPE_TOPHAT, 1.0)])
def test_lattice_shapes_at_lattice_points(xp, shape, peak):
    hkl = [[0.0, 0.0, 0.0], [1.0, -2.0, 3.0], [-4.0, 5.0, 0.0]]
    N = (3.0, 4.0, 5.0)
    out = to_numpy(lattice_factor(cf(xp, hkl), N, shape, 1.0, f64(xp, RECIP), xp=xp))
    np.testing.assert_allclose(out, 60.0 * peak, rtol=1e-12)


def test_lattice_round_closed_form(xp):
    rng = np.random.default_rng(3)
    hkl = rng.uniform(-4, 4, size=(50, 3))
    N, fudge = (3.0, 4.0, 5.0), 1.3
    out = to_numpy(lattice_factor(cf(xp, hkl), N, SHAPE_ROUND, fudge, f64(xp, RECIP), xp=xp))
    d = hkl - np.round(hkl)
    r = np.pi * np.sqrt(np.sum((d * np.array(N)) ** 2, axis=1) * fudge)
    ref = 60.0 * ROUND_NORM * 3.0 * (np.sin(r) - r * np.cos(r)) / r ** 3
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)


def test_lattice_gauss_closed_form(xp):
    rng = np.random.default_rng(4)
    hkl = rng.uniform(-4, 4, size=(50, 3))
    N, fudge = (2.0, 3.0, 4.0), 0.7
    out = to_numpy(lattice_factor(cf(xp, hkl), N, SHAPE_GAUSS, fudge, f64(xp, RECIP), xp=xp))
    d = hkl - np.round(hkl)
    dq = d @ RECIP  # 1/A
    ref = 24.0 * np.exp(-np.sum(dq * dq, axis=1) * 24.0 ** 2 / 0.63 * fudge)
    np.testing.assert_allclose(out, ref, rtol=1e-10)


def test_lattice_tophat_zero_far_from_lattice_points(xp):
    N = (5.0, 5.0, 5.0)
    # |d* NaNbNc|^2 for d = (0.4, 0, 0): (0.4/50 * 125)^2 = 1.0 > 0.3969 -> outside
    # d = (0.02, 0, 0): (0.05)^2 = 0.0025 < 0.3969 -> inside
    hkl = [[2.4, 1.0, 0.0], [0.5, 0.5, 0.5], [3.02, -1.0, 2.0], [1.0, 1.0, 1.0]]
    out = to_numpy(lattice_factor(cf(xp, hkl), N, SHAPE_TOPHAT, 1.0, f64(xp, RECIP), xp=xp))
    np.testing.assert_array_equal(out, [0.0, 0.0, 125.0, 125.0])


# --------------------------------------------------------------------------- polarization


def _kahn_reference(inc, dif, axis, K):
    """Kahn et al. (1982) written through the E and B components of the diffracted ray:
    P = (1+K)/2 (1 - (d.E)^2) + (1-K)/2 (1 - (d.B)^2), E the polarization axis made
    perpendicular to the incident beam, B = incident x E."""
    out = []
    for i, d in zip(inc, dif):
        E = axis - np.dot(axis, i) * i
        E /= np.linalg.norm(E)
        B = np.cross(i, E)
        out.append(0.5 * (1 + K) * (1 - np.dot(d, E) ** 2) + 0.5 * (1 - K) * (1 - np.dot(d, B) ** 2))
    return np.array(out)


def _random_units(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_polarization_unpolarized(xp):
    rng = np.random.default_rng(5)
    inc = np.tile([1.0, 0.0, 0.0], (40, 1))
    dif = _random_units(rng, 40)
    out = to_numpy(polarization(f64(xp, inc), f64(xp, dif), f64(xp, [0.0, 0.0, 1.0]), 0.0, xp=xp))
    c = dif[:, 0]  # cos 2theta
    np.testing.assert_allclose(out, 0.5 * (1 + c * c), rtol=1e-12)
    # forward scattering keeps everything, 90 degrees halves it
    out2 = to_numpy(polarization(f64(xp, [[1.0, 0, 0], [1.0, 0, 0]]), f64(xp, [[1.0, 0, 0], [0, 1.0, 0]]),
                                 f64(xp, [0.0, 0.0, 1.0]), 0.0, xp=xp))
    np.testing.assert_allclose(out2, [1.0, 0.5], rtol=1e-12)


@pytest.mark.parametrize("K", [1.0, 0.9, 0.5, -0.3])
def test_polarization_kahn_matches_independent_formula(xp, K):
    rng = np.random.default_rng(6)
    inc = _random_units(rng, 30)
    dif = _random_units(rng, 30)
    axis = np.array([0.3, -0.2, 0.93])
    axis /= np.linalg.norm(axis)
    out = to_numpy(polarization(f64(xp, inc), f64(xp, dif), f64(xp, axis), K, xp=xp))
    np.testing.assert_allclose(out, _kahn_reference(inc, dif, axis, K), rtol=1e-10, atol=1e-12)


def test_polarization_fully_polarized_special_planes(xp):
    tt = np.radians([5.0, 30.0, 60.0, 90.0, 130.0])
    inc = np.tile([1.0, 0.0, 0.0], (len(tt), 1))
    axis = f64(xp, [0.0, 0.0, 1.0])
    # diffraction in the xy plane (perpendicular to E along z): no loss
    in_plane = np.stack([np.cos(tt), np.sin(tt), np.zeros_like(tt)], axis=1)
    out = to_numpy(polarization(f64(xp, inc), f64(xp, in_plane), axis, 1.0, xp=xp))
    np.testing.assert_allclose(out, 1.0, rtol=1e-12)
    # diffraction in the xz plane (containing E): cos^2 2theta
    along_E = np.stack([np.cos(tt), np.zeros_like(tt), np.sin(tt)], axis=1)
    out = to_numpy(polarization(f64(xp, inc), f64(xp, along_E), axis, 1.0, xp=xp))
    np.testing.assert_allclose(out, np.cos(tt) ** 2, rtol=1e-10, atol=1e-15)


# --------------------------------------------------------------------------- structure factors

MINS = (-4, -3, -5)
SHAPE = (10, 8, 9)  # h -4..5, k -3..4, l -5..3


def _poly(h, k, l):
    return h ** 3 - 2 * k ** 2 + l + h * k + 0.25 * h ** 2 * k ** 3 * l ** 3 - 3.0


def _grid_values():
    h, k, l = np.meshgrid(*[np.arange(m, m + n, dtype=float) for m, n in zip(MINS, SHAPE)], indexing="ij")
    return _poly(h, k, l)


def _sf(xp, default_F=7.5, count=None):
    F = _grid_values()
    return StructureFactors(f64(xp, F.reshape(-1)), SHAPE, MINS, F.size if count is None else count,
                            default_F, xp=xp)


def test_nearest_grid_lookup_and_default_outside(xp):
    sf = _sf(xp)
    F = _grid_values()
    pts = np.array([[-4, -3, -5], [5, 4, 3], [0, 0, 0], [2, -1, 1], [-3, 4, -5]], dtype=float)
    out = to_numpy(sf.nearest(cf(xp, pts)))
    ref = [F[int(h) - MINS[0], int(k) - MINS[1], int(l) - MINS[2]] for h, k, l in pts]
    np.testing.assert_array_equal(out, ref)
    outside = np.array([[-5, 0, 0], [6, 0, 0], [0, -4, 0], [0, 5, 0], [0, 0, -6], [0, 0, 4], [9, 9, 9],
                        [-1e6, 0, 0], [0, 3e9, -2e9]], dtype=float)
    np.testing.assert_array_equal(to_numpy(sf.nearest(cf(xp, outside))), 7.5)


def test_nearest_empty_table_gives_default(xp):
    sf = _sf(xp, default_F=3.25, count=0)
    out = to_numpy(sf.nearest(cf(xp, [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])))
    np.testing.assert_array_equal(out, [3.25, 3.25])


def test_tricubic_reproduces_cubic_polynomials(xp):
    sf = _sf(xp)
    rng = np.random.default_rng(7)
    # nanoBragg's interpolation range: lo+2 <= x <= hi-2 on every axis
    lo = np.array(MINS) + 2.0
    hi = np.array(MINS) + np.array(SHAPE) - 1 - 2.0
    pts = rng.uniform(lo, hi, size=(200, 3))
    assert not np.any(to_numpy(sf.out_of_interpolation_range(cf(xp, pts))))
    out = to_numpy(sf.tricubic(cf(xp, pts)))
    ref = _poly(pts[:, 0], pts[:, 1], pts[:, 2])
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)


def test_tricubic_equals_grid_at_integer_points(xp):
    sf = _sf(xp)
    F = _grid_values()
    pts = np.array([[h, k, l] for h in range(-2, 4) for k in (-1, 0, 2) for l in (-3, 0, 1)], dtype=float)
    out = to_numpy(sf.tricubic(cf(xp, pts)))
    ref = np.array([F[int(h) - MINS[0], int(k) - MINS[1], int(l) - MINS[2]] for h, k, l in pts])
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-10)


def test_tricubic_is_not_exact_for_quartic(xp):
    # guards against a trivially exact test: degree 4 is beyond the 4-point stencil
    F = np.fromfunction(lambda i, j, k: (i - 4.0) ** 4, SHAPE)
    sf = StructureFactors(f64(xp, F.reshape(-1)), SHAPE, MINS, F.size, 0.0, xp=xp)
    out = to_numpy(sf.tricubic(cf(xp, [[0.5, 0.0, 0.0]])))
    # Lagrange error for x^4 on nodes -1,0,1,2: x^4 - p(x) = (x+1)x(x-1)(x-2) = 0.5625 at 0.5
    np.testing.assert_allclose(out, [0.0625 - 0.5625], rtol=1e-12)


def test_out_of_interpolation_range_edges(xp):
    sf = _sf(xp)
    lo = np.array(MINS, dtype=float)
    hi = lo + np.array(SHAPE) - 1
    centre = (lo + hi) / 2.0
    pts, expect = [], []
    for ax in range(3):
        for value, bad in [(lo[ax] + 2.0, False), (lo[ax] + 2.0 - 1e-9, True), (lo[ax] + 1.0, True),
                           (hi[ax] - 2.0, False), (hi[ax] - 2.0 + 1e-9, True), (hi[ax], True),
                           (hi[ax] + 5.0, True), (lo[ax] - 3.0, True)]:
            p = centre.copy()
            p[ax] = value
            pts.append(p)
            expect.append(bad)
    pts.append(centre)
    expect.append(False)
    out = to_numpy(sf.out_of_interpolation_range(cf(xp, np.array(pts))))
    np.testing.assert_array_equal(out, expect)
