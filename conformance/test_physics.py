"""Sampling, normalisation, absorption, structure and lattice factors, polarization, background
(docs/spec/physics.md): AT-SAM-*, AT-ABS-001, AT-STR-*, AT-POL-001, AT-BKG-001, AT-SRC-*,
AT-FLU-001 and the intensity checks of the parallel suite.

Most checks compare whole images with closed forms evaluated on pixel positions from the
geometry model (``_geom``), which AT-GEO-* tests against the programs themselves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance import _geom as G
from conformance._nb import AVOGADRO, DEFAULT_FLUENCE, R_E_SQR, image, run, write_hkl

at = pytest.mark.at
CELL = ["-cell", 100, 100, 100, 90, 90, 90]
#: one unit cell and one F everywhere: every pixel is F^2 * omega * polarization
FLAT = CELL + ["-N", 1, "-default_F", 1, "-nointerpolate", "-oversample", 1]
SCALE = R_E_SQR * DEFAULT_FLUENCE


def mosflm(n=64, **kw):
    return G.place("MOSFLM", n, **kw)


def sub_positions(det, n, over):
    """Sub-pixel centres (n, n, over*over, 3) in nanoBragg's loop order (sub-slow, sub-fast)."""
    step = det.pixel / over
    out = np.empty((n, n, over * over, 3))
    idx = np.arange(n)
    for i, (a, b) in enumerate((a, b) for a in range(over) for b in range(over)):
        S = (idx * over + a + 0.5) * step
        F = (idx * over + b + 0.5) * step
        out[:, :, i, :] = det.pix0 + F[None, :, None] * det.f + S[:, None, None] * det.s
    return out


# ------------------------------------------------------------------ sampling

@at("AT-SAM-001", "the image is divided by the number of sub-paths")
def test_steps_normalisation(tmp_path):
    # with one unit cell every phi step and mosaic domain adds the same term, so dividing by
    # the number of steps must give back the one-step image
    one = image(FLAT + ["-detpixels", 32], tmp_path, 32)
    for extra in (["-phi", 0, "-osc", 40, "-phisteps", 2], ["-phi", 0, "-osc", 40, "-phisteps", 4],
                  ["-mosaic", 2, "-mosaic_dom", 3], ["-phisteps", 3, "-osc", 10, "-mosaic", 1, "-mosaic_dom", 2]):
        np.testing.assert_allclose(image(FLAT + ["-detpixels", 32] + extra, tmp_path, 32), one, rtol=1e-6)


@at("AT-SAM-002", "solid angle and polarization: once per pixel, or per sub-pixel on the running sum")
@pytest.mark.parametrize("which", ["omega", "polar"])
def test_oversample_factor_semantics(tmp_path, which):
    n, over = 24, 2
    det = mosflm(n, distance=0.03)
    P = sub_positions(det, n, over)
    if which == "omega":
        args = FLAT + ["-nopolar", "-oversample", over]
        factor = G.omega(P, det.close_distance, det.pixel)
    else:
        args = FLAT + ["-point_pixel", "-polar", 0, "-oversample", over]
        factor = G.kahn(P, det.b, det.p, 0.0)
        other = G.omega(P[:, :, 0], det.close_distance, det.pixel, point_pixel=True)
    args += ["-detpixels", n, "-distance", 30]
    once = image(args, tmp_path, n)
    running = image(args + ["-oversample_" + which], tmp_path, n)
    # without the flag: the factor of the pixel's first sub-pixel times the mean term
    want_once = factor[:, :, 0].copy()
    # with it: after every addition the running sum is multiplied by that sub-pixel's factor
    acc = np.zeros((n, n))
    for i in range(over * over):
        acc = (acc + 1.0) * factor[:, :, i]
    want_running = acc / over**2
    if which == "polar":
        want_once, want_running = want_once * other, want_running * other
    np.testing.assert_allclose(once, SCALE * want_once, rtol=1e-5)
    np.testing.assert_allclose(running, SCALE * want_running, rtol=1e-5)


@at("AT-SAM-003", "-dmin skips sub-paths with d = 1/|q| below it")
def test_dmin_culling(tmp_path):
    args = FLAT + ["-lambda", 1, "-distance", 50, "-detpixels", 64, "-nopolar", "-point_pixel"]
    full = image(args, tmp_path, 64)
    cut = image(args + ["-dmin", 15], tmp_path, 64)
    det = mosflm(distance=0.05)
    P = det.positions(64, 64)
    q = np.linalg.norm(G.unit(P) - det.b, axis=-1) / 1e-10      # 1/m
    x = q * 15e-10                                              # > 1: d < dmin
    clear = np.abs(x - 1) > 1e-6
    assert (x[clear] > 1).sum() > 100 and (x[clear] < 1).sum() > 100
    assert np.all(cut[clear & (x > 1)] == 0)
    np.testing.assert_array_equal(cut[clear & (x < 1)], full[clear & (x < 1)])


@at("AT-ABS-001", "sensor absorption per layer; last layer's fraction or running-sum application")
def test_detector_absorption(tmp_path):
    n, T, layers, mu = 32, 450e-6, 5, 1 / 500e-6
    args = FLAT + ["-point_pixel", "-nopolar", "-detpixels", n, "-distance", 40, "-detector_roty", 25,
                   "-detector_abs", 500, "-detector_thick", 450, "-detector_thicksteps", layers]
    det = mosflm(n, distance=0.04, rot=(0.0, math.radians(25), 0.0))
    dz = T / (layers - 1)        # nanoBragg's step for a given thickness and layer count
    P0 = det.positions(n, n)
    frac = []
    for t in range(layers):
        rho = G.unit(P0 + t * dz * det.o) @ det.o
        frac.append(np.exp(-t * dz * mu / rho) - np.exp(-(t + 1) * dz * mu / rho))
    w = 1.0 / np.sum(P0 * P0, axis=-1)          # point-pixel solid angle, first layer
    rho0 = G.unit(P0) @ det.o
    # the layer fractions telescope to 1 - exp(-layers dz mu / rho) (per fixed rho)
    tele = sum(np.exp(-t * dz * mu / rho0) - np.exp(-(t + 1) * dz * mu / rho0) for t in range(layers))
    np.testing.assert_allclose(tele, 1 - np.exp(-layers * dz * mu / rho0), rtol=1e-12)
    last = image(args, tmp_path, n)
    np.testing.assert_allclose(last, SCALE * w * layers * frac[-1], rtol=1e-5)
    acc = np.zeros((n, n))
    for t in range(layers):
        acc = (acc + 1.0) * frac[t]
    running = image(args + ["-oversample_thick"], tmp_path, n)
    np.testing.assert_allclose(running, SCALE * w * acc, rtol=1e-5)


# ------------------------------------------------------------------ structure factors

def ratio_to_flat(tmp_path, extra, hkl_rows, n=64, default_F=1.0, columns=4):
    """Image with an HKL file divided by the same image with F = 1 everywhere: F_cell^2."""
    base = CELL + ["-N", 1, "-oversample", 1, "-lambda", 1, "-distance", 50, "-detpixels", n] + extra
    (tmp_path / "ref").mkdir()
    (tmp_path / "hkl").mkdir()
    ref = image(base + ["-default_F", 1], tmp_path / "ref", n)
    write_hkl(tmp_path / "hkl" / "F.hkl", hkl_rows, columns)
    r = run(base + ["-hkl", "F.hkl", "-default_F", default_F, "-floatfile", "f.bin", "-nonoise", "-nopgm"],
            tmp_path / "hkl")
    ratio_to_flat.stdout = r.stdout
    return r.floats("f.bin", n) / ref


def nearest(x):
    return np.ceil(x - 0.5)


def _pixel_hkl(n=64):
    det = mosflm(n, distance=0.05)
    return G.miller(det.positions(n, n), det.b, 1e-10)


@at("AT-STR-001", "nearest-neighbour F: grid value in range, default_F outside")
def test_nearest_neighbour_lookup(tmp_path):
    table = {(0, k, l): 10.0 + 3 * (k + 3) + 25 * (l + 3) for k in range(-3, 4) for l in range(-3, 4)}
    got = ratio_to_flat(tmp_path, ["-nointerpolate"], [(*key, F) for key, F in table.items()], default_F=2)
    h, k, l = _pixel_hkl()
    h0, k0, l0 = nearest(h), nearest(k), nearest(l)
    want = np.array([table.get((a, b, c), 2.0) for a, b, c in zip(h0.ravel(), k0.ravel(), l0.ravel())])
    want = want.reshape(h.shape) ** 2
    clear = (np.abs(np.abs(k - np.floor(k)) - 0.5) > 0.02) & (np.abs(np.abs(l - np.floor(l)) - 0.5) > 0.02)
    assert (want[clear] == 4).sum() > 50 and (want[clear] > 4).sum() > 50
    np.testing.assert_allclose(got[clear], want[clear], rtol=1e-5)


def poly_F(h, k, l):
    # cubic at most along each index, so 4-point interpolation reproduces it exactly
    return 60 + 2 * h + 3 * k - l + 0.2 * k * l + 0.05 * k**3


@at("AT-STR-002", "tricubic interpolation of F inside the grid")
def test_tricubic_interpolation(tmp_path):
    rows = [(a, b, c, poly_F(a, b, c)) for a in range(-3, 4) for b in range(-9, 10) for c in range(-9, 10)]
    got = ratio_to_flat(tmp_path, ["-interpolate"], rows)
    h, k, l = _pixel_hkl()
    np.testing.assert_allclose(got, poly_F(h, k, l) ** 2, rtol=2e-5)


@at("AT-STR-002", "out-of-grid evaluation: one warning, default_F, nearest-neighbour afterwards")
def test_interpolation_fallback(tmp_path):
    rows = [(a, b, c, poly_F(a, b, c)) for a in range(-3, 4) for b in range(-4, 5) for c in range(-4, 5)]
    got = ratio_to_flat(tmp_path, ["-interpolate"], rows, default_F=7)
    h, k, l = _pixel_hkl()
    out = (k > 4 - 2) | (k < -4 + 2) | (l > 4 - 2) | (l < -4 + 2) | (h > 3 - 2) | (h < -3 + 2)
    first = np.flatnonzero(out.ravel())[0]            # pixels are visited slow-major, then fast
    k0, l0 = nearest(k), nearest(l)
    inside = (np.abs(k0) <= 4) & (np.abs(l0) <= 4)
    near = np.where(inside, poly_F(0, k0, l0), 7.0) ** 2
    want = np.where(np.arange(h.size).reshape(h.shape) < first, poly_F(h, k, l) ** 2, near)
    want.ravel()[first] = 49.0
    clear = (np.abs(np.abs(k - np.floor(k)) - 0.5) > 0.02) & (np.abs(np.abs(l - np.floor(l)) - 0.5) > 0.02)
    clear.ravel()[:first + 1] = True
    np.testing.assert_allclose(got[clear], want[clear], rtol=2e-5)
    warnings = [x for x in ratio_to_flat.stdout.splitlines() if "WARNING" in x and "interpolation" in x]
    assert len(warnings) == 1, "expected one warning about leaving the grid"


@at("AT-STR-003", "lattice factors: square (sincg), round (sinc3), Gaussian, top-hat")
@pytest.mark.parametrize("shape", ["square", "round", "gauss", "tophat"])
def test_lattice_shapes(tmp_path, shape):
    flag = {"square": "-square_xtal", "round": "-round_xtal", "gauss": "-gauss_xtal", "tophat": "-tophat_spots"}[shape]
    n, N = 48, 4
    img = image(CELL + ["-N", N, "-default_F", 1, "-nointerpolate", "-oversample", 1, "-nopolar", "-point_pixel",
                        "-lambda", 1, "-distance", 50, "-detpixels", n, "-Xbeam", 2.4, "-Ybeam", 2.4, flag],
                tmp_path, n)
    det = mosflm(n, distance=0.05, Xbeam=2.4e-3, Ybeam=2.4e-3)
    P = det.positions(n, n)
    h, k, l = G.miller(P, det.b, 1e-10)
    d = [x - nearest(x) for x in (h, k, l)]
    if shape == "square":
        def sincg(x):
            s = np.sin(x)
            return np.where(np.abs(s) < 1e-12, N, np.sin(N * x) / np.where(s == 0, 1, s))
        F = sincg(np.pi * h) * sincg(np.pi * k) * sincg(np.pi * l)
    elif shape == "round":
        x = np.pi * np.sqrt(sum((N * e) ** 2 for e in d))
        sinc3 = np.where(x < 1e-9, 1.0, 3 * (np.sin(x) / np.where(x == 0, 1, x) - np.cos(x)) / np.where(x == 0, 1, x) ** 2)
        F = N**3 * 0.723601254558268 * sinc3
    else:
        r2 = sum((0.01 * e) ** 2 for e in d) * N**6          # reciprocal distance (1/A), times N^6
        F = N**3 * (np.exp(-r2 / 0.63) if shape == "gauss" else (r2 < 0.3969).astype(float))
    want = SCALE * F**2 / np.sum(P * P, axis=-1)
    if shape == "round":
        # at q = 0 both programs evaluate 3 (sin x / x - cos x) / x^2 at a rounding-level x,
        # where it cancels to 0, not to its limit 1 (docs/spec/physics.md)
        assert img[24, 24] < 1e-6 * img.max()
        want[24, 24] = img[24, 24]
    else:   # the beam pixel: q = 0, F_latt = N^3
        assert img[24, 24] == pytest.approx(SCALE * N**6 / 0.05**2, rel=1e-5)
    if shape == "tophat":   # the edge of the flat top is a step: leave out pixels on it
        r2 = sum((0.01 * e) ** 2 for e in d) * N**6
        keep = np.abs(r2 - 0.3969) > 1e-3
        np.testing.assert_allclose(img[keep], want[keep], rtol=1e-5, atol=1e-6 * want.max())
    else:
        np.testing.assert_allclose(img, want, rtol=1e-4, atol=1e-6 * want.max())


@at("AT-STR-004", "sparse HKL: listed F where given, default_F for the gaps")
def test_sparse_hkl(tmp_path):
    table = {(0, 0, 0): 100.0, (0, 2, 0): 80.0, (0, 0, 2): 60.0}
    got = ratio_to_flat(tmp_path, ["-nointerpolate"], [(*key, F) for key, F in table.items()], default_F=10)
    h, k, l = _pixel_hkl()
    k0, l0 = nearest(k), nearest(l)
    beam = (32, 32)
    assert got[beam] == pytest.approx(100.0**2, rel=1e-5)
    # (0,1,0) and (0,0,1) are missing: default_F; (0,2,0) and (0,0,2) listed
    for (kk, ll), F in (((1, 0), 10.0), ((0, 1), 10.0), ((2, 0), 80.0), ((0, 2), 60.0), ((3, 3), 10.0)):
        sel = (k0 == kk) & (l0 == ll) & (np.abs(k - kk) < 0.4) & (np.abs(l - ll) < 0.4)
        assert sel.any()
        np.testing.assert_allclose(got[sel], F**2, rtol=1e-5)
    assert got[beam] / got[(k0 == 1) & (l0 == 0)].mean() == pytest.approx(100, rel=1e-4)


# ------------------------------------------------------------------ polarization, background

@at("AT-POL-001", "Kahn polarization factor per pixel; -nopolar gives 1")
@pytest.mark.parametrize("K", [0.0, 0.5, 0.95])
def test_kahn_polarization(tmp_path, K):
    args = FLAT + ["-point_pixel", "-detpixels", 48, "-pixel", 0.4, "-distance", 25, "-detector_rotz", 10]
    det = mosflm(48, pixel=4e-4, distance=0.025, rot=(0.0, 0.0, math.radians(10)))
    P = det.positions(48, 48)
    nopol = image(args + ["-nopolar"], tmp_path, 48)
    pol = image(args + ["-polar", K], tmp_path, 48)
    np.testing.assert_allclose(nopol, SCALE / np.sum(P * P, axis=-1), rtol=1e-5)
    want = G.kahn(P, det.b, det.p, K)
    assert want.min() < 0.9
    np.testing.assert_allclose(pol / nopol, want, rtol=1e-5)


@at("AT-PARALLEL-011", "polarization matches the Kahn formula at K = 0 and K = 0.95")
@pytest.mark.parametrize("K", [0.0, 0.95])
def test_parallel_kahn(tmp_path, K):
    args = CELL + ["-N", 5, "-default_F", 100, "-oversample", 1, "-lambda", 1, "-detpixels", 64, "-distance", 30]
    det = mosflm(64, distance=0.03)
    ratio = image(args + ["-polar", K], tmp_path, 64) / image(args + ["-nopolar"], tmp_path, 64)
    np.testing.assert_allclose(ratio, G.kahn(det.positions(64, 64), det.b, det.p, K), rtol=1e-5)


@at("AT-BKG-001", "water background: (2.57^2) r_e^2 fluence size^3 1e6 N_A / 18 per pixel")
def test_water_background(tmp_path):
    # F = 0 everywhere: only the background, added before any Bragg term and then scaled
    # like one, so each pixel is I_bg * omega * polarization / steps (here 1)
    args = CELL + ["-N", 1, "-default_F", 0, "-hkl", "zero.hkl", "-nointerpolate", "-oversample", 1, "-nopolar",
                   "-point_pixel", "-detpixels", 32, "-distance", 100, "-water", 50]
    write_hkl(tmp_path / "zero.hkl", [(0, 0, 0, 0.0)])
    img = image(args, tmp_path, 32)
    Ibg = 2.57**2 * R_E_SQR * DEFAULT_FLUENCE * (50e-6) ** 3 * 1e6 * AVOGADRO / 18.0
    det = mosflm(32)
    P = det.positions(32, 32)
    np.testing.assert_allclose(img, Ibg * SCALE / np.sum(P * P, axis=-1), rtol=1e-5)


# ------------------------------------------------------------------ intensity scaling

@at("AT-PARALLEL-009", "beam-pixel intensity is r_e^2 fluence F^2 N^6 (pixel/distance)^2")
@pytest.mark.parametrize("N,F", [(1, 100), (2, 100), (3, 100), (5, 100), (5, 50), (5, 200), (5, 500)])
def test_n6_f2_scaling(tmp_path, N, F):
    img = image(CELL + ["-N", N, "-default_F", F, "-nointerpolate", "-oversample", 1, "-lambda", 6.2,
                        "-detpixels", 32, "-distance", 100, "-Xbeam", 1.6, "-Ybeam", 1.6], tmp_path, 32)
    # the direct beam meets the centre of pixel (16, 16): q = 0, so F_latt = N^3, P = 1
    assert img[16, 16] == pytest.approx(SCALE * F**2 * N**6 * (1e-4 / 0.1) ** 2, rel=1e-6)
    assert img.max() == img[16, 16]


@at("AT-PARALLEL-010", "solid angle: 1/R^2 for point pixels, close_distance/R^3 otherwise")
@pytest.mark.parametrize("dist", [50, 100, 200, 400])
@pytest.mark.parametrize("tilt", [0, 10, 20, 30])
def test_solid_angle_scaling(tmp_path, dist, tilt):
    args = CELL + ["-N", 5, "-default_F", 100, "-nointerpolate", "-oversample", 1, "-lambda", 6.2, "-detpixels", 24,
                   "-distance", dist, "-Xbeam", 1.2, "-Ybeam", 1.2, "-detector_roty", tilt, "-nopolar"]
    point = image(args + ["-point_pixel"], tmp_path, 24)
    full = image(args, tmp_path, 24)
    D = dist / 1000
    # the direct beam still meets pixel (12, 12), at distance D along the beam
    assert point[12, 12] == pytest.approx(SCALE * 1e4 * 5**6 / D**2, rel=1e-6)
    assert full[12, 12] == pytest.approx(SCALE * 1e4 * 5**6 * 1e-8 * math.cos(math.radians(tilt)) / D**2, rel=1e-6)
    det = mosflm(24, distance=D, Xbeam=1.2e-3, Ybeam=1.2e-3, rot=(0.0, math.radians(tilt), 0.0))
    R = np.linalg.norm(det.positions(24, 24), axis=-1)
    np.testing.assert_allclose(full / point, 1e-8 * det.close_distance / R, rtol=1e-5)


# ------------------------------------------------------------------ sources and fluence

@at("AT-SRC-001", "source file: weights ignored, each source counts once at its own wavelength")
def test_source_file(tmp_path):
    args = CELL + ["-N", 5, "-default_F", 100, "-nointerpolate", "-oversample", 1, "-detpixels", 32,
                   "-distance", 100, "-Xbeam", 1.6, "-Ybeam", 1.6]
    at62 = image(args + ["-lambda", 6.2], tmp_path, 32)
    at15 = image(args + ["-lambda", 1.5], tmp_path, 32)
    # two sources on the beam axis, 10 m upstream: weights 1 and 3 make no difference ...
    (tmp_path / "same.txt").write_text("-10 0 0 1.0 6.2e-10\n-10 0 0 3.0 6.2e-10\n")
    same = image(args + ["-lambda", 6.2, "-sourcefile", "same.txt"], tmp_path, 32)
    np.testing.assert_allclose(same, at62, rtol=1e-6)
    # ... and a second wavelength in the file gives the mean of the two one-wavelength images
    (tmp_path / "two.txt").write_text("-10 0 0 1.0 6.2e-10\n-10 0 0 3.0 1.5e-10\n")
    two = image(args + ["-lambda", 6.2, "-sourcefile", "two.txt"], tmp_path, 32)
    np.testing.assert_allclose(two, (at62 + at15) / 2, rtol=1e-5, atol=1e-6 * at62.max())


@at("AT-SRC-002", "step counts chosen from whichever of range, step and count is given")
@pytest.mark.parametrize("flags,sources,layers", [
    ([], 1, 1),
    (["-hdivrange", 0.5, "-hdivstep", 0.25], 2, 1),           # range and step: ceil(range/step)
    (["-hdivrange", 0.5, "-hdivsteps", 3, "-square_div"], 3, 1),
    (["-dispersion", 1], 2, 1),                               # range only: two steps
    (["-dispersion", 1, "-dispsteps", 4], 4, 1),
    (["-detector_thick", 100, "-detector_abs", 100], 1, 2),   # thickness only: two layers
    (["-detector_thicksteps", 3], 1, 1),       # count only: thickness stays 0, so no sensor layers
], ids=["none", "hdiv-range-step", "hdiv-range-count", "disp-range", "disp-range-count", "thick-only",
        "thicksteps-only"])
def test_auto_selection(tmp_path, flags, sources, layers):
    r = run(FLAT + ["-detpixels", 8, "-nonoise", "-nopgm"] + flags, tmp_path)
    created = [int(line.split("created a total of")[1].split()[0]) for line in r.stdout.splitlines()
               if "created a total of" in line and "sources" in line]
    assert created == [sources]
    thick = [line for line in r.stdout.splitlines() if "sensor is" in line]
    assert thick and f"in {layers} layers" in thick[0]


@at("AT-FLU-001", "fluence from flux, exposure and beam size; sample clipped to the beam")
def test_fluence_from_flux(tmp_path):
    base = FLAT + ["-detpixels", 16, "-nopolar", "-point_pixel"]
    flux = image(base + ["-fluence", 1e20, "-flux", 1e12, "-exposure", 2, "-beamsize", 0.05], tmp_path, 16)
    ref = image(base + ["-fluence", 1e12 * 2 / (0.05e-3) ** 2], tmp_path, 16)
    np.testing.assert_allclose(flux, ref, rtol=1e-6)
    r = run(base + ["-flux", 1e12, "-beamsize", 0.05, "-samplesize", 0.2, "-nonoise", "-nopgm"], tmp_path)
    assert "clipping" in r.stdout.lower() or "clipping" in r.stderr.lower()
