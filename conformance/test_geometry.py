"""AT-GEO-001..006, AT-PRE-002 and the geometric parallel checks (docs/spec/geometry.md).

Two probes see the detector from outside:

* the SMV header records where the program placed it (compared with ``_geom.place``);
* a "flat" crystal (one unit cell, one F everywhere, no polarization) makes every pixel
  worth F^2 times its solid angle, so a point-pixel image is 1/R^2 per pixel and fixes
  each pixel's distance from the sample; spots of a 100 A cubic crystal fix directions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance import _geom as G
from conformance._nb import image, peak, run

at = pytest.mark.at
CELL = ["-cell", 100, 100, 100, 90, 90, 90]
#: every pixel = F^2 * solid angle (r_e^2 * default fluence = 1)
FLAT = CELL + ["-N", 1, "-default_F", 1, "-nointerpolate", "-oversample", 1, "-nopolar"]
#: sharp spots of a 100 A cubic crystal at 1 A
SPOTS = CELL + ["-N", 5, "-default_F", 100, "-lambda", 1, "-oversample", 1, "-nointerpolate"]
ROT = ["-detector_rotx", 5, "-detector_roty", 3, "-detector_rotz", 2]
ROT_RAD = tuple(np.radians([5, 3, 2]))
MOSFLM_AXES = ["-fdet_vector", 0, 0, 1, "-sdet_vector", 0, -1, 0, "-odet_vector", 1, 0, 0, "-beam_vector", 1, 0, 0]
CUSTOM = dict(b=(1, 0, 0), f=(0, 0, 1), s=(0, -1, 0), o=(1, 0, 0), tt=(0, 1, 0), p=(0, 0, 1), u=(0, 0, 1))


def header(tmp_path, flags, n=64):
    r = run(CELL + ["-N", 1, "-default_F", 1, "-detpixels", n, "-roi", 0, 0, 0, 0, "-intfile", "i.img",
                    "-nonoise", "-nopgm"] + flags, tmp_path)
    return r.smv("i.img")[0]


def fit_near_point(img, pixel, f0=0, s0=0):
    """Near point (Fclose, Sclose) and close distance (m) from a point-pixel flat image:
    R^2 = 1/I is close^2 + (u - Fclose)^2 + (v - Sclose)^2 over pixel centres (u, v)."""
    ss, ff = np.nonzero(img > 0)
    u, v = (ff + f0 + 0.5) * pixel, (ss + s0 + 0.5) * pixel
    R2 = 1.0 / img[ss, ff]
    A = np.stack([np.ones_like(u), u, v], axis=1)
    c, *_ = np.linalg.lstsq(A, R2 - u * u - v * v, rcond=None)
    Fc, Sc = -c[1] / 2, -c[2] / 2
    return Fc, Sc, math.sqrt(c[0] - Fc * Fc - Sc * Sc)


@at("AT-GEO-001", "MOSFLM beam centre: +0.5 pixel, detector origin")
def test_mosflm_beam_centre(tmp_path):
    head = run(FLAT + ["-point_pixel", "-detpixels", 1024, "-pixel", 0.1, "-distance", 100, "-Xbeam", 51.2,
                       "-Ybeam", 51.2, "-roi", 505, 519, 505, 519, "-floatfile", "f.bin", "-intfile", "i.img",
                       "-nonoise", "-nopgm"], tmp_path)
    o = [float(x) for x in head.smv("i.img")[0]["DIALS_ORIGIN"].split(",")]
    pix0 = np.array([-o[2], o[1], o[0]]) / 1000.0     # DIALS axes are lab z, y, -x
    np.testing.assert_allclose(pix0, [0.1, 0.05125, -0.05125], atol=1e-9)
    # Fbeam = Sbeam = 51.25 mm: the beam meets the centre of pixel (512, 512), about which
    # the flat image is symmetric and brightest
    img = head.floats("f.bin", 1024)[505:520, 505:520]
    np.testing.assert_allclose(img, img[::-1, ::-1], rtol=2e-7)
    np.testing.assert_allclose(img, img.T, rtol=2e-7)
    assert np.unravel_index(np.argmax(img), img.shape) == (7, 7)


@at("AT-GEO-002", "pivot: from the convention; in CUSTOM from -distance, -close_distance, -pivot")
@pytest.mark.parametrize("flags,pivot,close", [
    (["-distance", 100], "BEAM", None),
    (["-close_distance", 100], "SAMPLE", 0.1),
    (["-close_distance", 100, "-pivot", "beam"], "BEAM", 0.1),
    (["-distance", 100, "-pivot", "sample"], "SAMPLE", None),
], ids=["distance", "close_distance", "close+pivot-beam", "distance+pivot-sample"])
def test_pivot_rules(tmp_path, flags, pivot, close):
    head = header(tmp_path, MOSFLM_AXES + flags + ROT)
    G.check_header(head, G.place(custom=CUSTOM, pivot=pivot, close_distance=close, rot=ROT_RAD), 64e-4)


@at("AT-GEO-002", "pivot: from the convention; in CUSTOM from -distance, -close_distance, -pivot")
def test_named_convention_keeps_its_pivot(tmp_path):
    head = header(tmp_path, ["-mosflm", "-close_distance", 100, "-pivot", "sample"] + ROT)
    G.check_header(head, G.place("MOSFLM", close_distance=0.1, rot=ROT_RAD), 64e-4)


@at("AT-GEO-003", "rotations: distance = close_distance / (b.o); BEAM pivot keeps the beam spot")
@pytest.mark.parametrize("conv", ["MOSFLM", "XDS"])
def test_rotation_distance_update(tmp_path, conv):
    flags = ["-" + conv.lower(), "-close_distance", 90, "-twotheta", 4] + ROT
    det = G.place(conv, close_distance=0.09, rot=ROT_RAD, twotheta=math.radians(4))
    head = header(tmp_path, flags)
    G.check_header(head, det, 64e-4)
    ratio = float(det.b @ G.rot_xyz(G.CONVENTIONS[conv]["o"], *ROT_RAD))   # before two-theta
    assert float(head["DISTANCE"]) == pytest.approx(90 / ratio, rel=1e-5)
    if conv == "MOSFLM":   # BEAM pivot: the direct beam still meets (Ybeam, Xbeam) + half a pixel
        assert float(head["DENZO_Y_BEAM"]) == pytest.approx(3.3, abs=1e-4)
        assert float(head["DENZO_X_BEAM"]) == pytest.approx(3.3, abs=1e-4)
    # the rendered pixels are where the header says: near point and close distance
    img = image(FLAT + ["-point_pixel", "-detpixels", 64] + flags, tmp_path, 64)
    Fc, Sc, close = fit_near_point(img, 1e-4)
    assert close == pytest.approx(float(head["CLOSE_DISTANCE"]) / 1000, rel=1e-5)
    assert Fc / 1e-4 + 0.5 == pytest.approx(float(head["XDS_ORGX"]), abs=0.01)
    assert Sc / 1e-4 + 0.5 == pytest.approx(float(head["XDS_ORGY"]), abs=0.01)


@at("AT-GEO-004", "two-theta axis by convention; TWOTHETA recorded as given")
@pytest.mark.parametrize("conv", ["MOSFLM", "XDS", "DIALS"])
def test_twotheta_axis(tmp_path, conv):
    head = header(tmp_path, ["-" + conv.lower(), "-distance", 100, "-twotheta", 7])
    assert float(head["TWOTHETA"]) == pytest.approx(7)
    G.check_header(head, G.place(conv, twotheta=math.radians(7)), 64e-4)


@at("AT-GEO-004", "two-theta axis by convention; TWOTHETA recorded as given")
def test_twotheta_axis_override(tmp_path):
    # -twotheta_axis also reads its first number as -twotheta, so -twotheta comes after it;
    # -twotheta asks for the sample pivot and the later -distance for the beam pivot
    custom = dict(CUSTOM, tt=(0, 0, 1))
    head = header(tmp_path, ["-twotheta_axis", 0, 0, 1, "-twotheta", 7, "-distance", 100])
    G.check_header(head, G.place(custom=custom, pivot="BEAM", twotheta=math.radians(7)), 64e-4)
    head = header(tmp_path, ["-twotheta_axis", 0, 0, 1, "-distance", 100, "-twotheta", 7])
    G.check_header(head, G.place(custom=custom, pivot="SAMPLE", twotheta=math.radians(7)), 64e-4)


@at("AT-GEO-005", "curved detector: every pixel at the same distance, arc-length mapping")
def test_curved_detector(tmp_path):
    args = FLAT + ["-detpixels", 64, "-distance", 100, "-pixel", 0.2]
    planar = image(args + ["-point_pixel"], tmp_path, 64)
    curved = image(args + ["-point_pixel", "-curved_det"], tmp_path, 64)
    np.testing.assert_allclose(curved, 1 / 0.1**2, rtol=1e-6)   # R = distance everywhere
    assert planar.min() < 0.995 * planar.max()
    # directions: the unpolarized factor (1 + cos^2 2theta)/2 shows each pixel's angle
    pol = image(CELL + ["-N", 1, "-default_F", 1, "-nointerpolate", "-oversample", 1, "-polar", 0, "-point_pixel",
                        "-curved_det", "-detpixels", 64, "-distance", 100, "-pixel", 0.2], tmp_path, 64)
    det = G.place("MOSFLM", pixel=2e-4)
    P = det.positions(64, 64)
    want = np.empty(P.shape)
    for i in range(64):
        for j in range(64):
            v = G.rot_axis(0.1 * det.b, det.s, P[i, j, 1] / 0.1)
            want[i, j] = G.rot_axis(v, det.f, P[i, j, 2] / 0.1)
    np.testing.assert_allclose(pol / curved, G.kahn(want, det.b, det.p, 0.0), rtol=2e-6)


@at("AT-GEO-006", "point pixel: 1/R^2; otherwise pixel^2/R^2 * close_distance/R")
def test_point_pixel_solid_angle(tmp_path):
    args = FLAT + ["-detpixels", 48, "-distance", 80, "-detector_roty", 20, "-detector_rotz", 10]
    det = G.place("MOSFLM", 48, distance=0.08, rot=(0.0, math.radians(20), math.radians(10)))
    P = det.positions(48, 48)
    point = image(args + ["-point_pixel"], tmp_path, 48)
    full = image(args, tmp_path, 48)
    np.testing.assert_allclose(point, G.omega(P, det.close_distance, 1e-4, point_pixel=True), rtol=1e-5)
    np.testing.assert_allclose(full, G.omega(P, det.close_distance, 1e-4), rtol=1e-5)


@at("AT-PRE-002", "beam-centre flags pivot on beam, near-point flags on sample")
@pytest.mark.parametrize("flags,kw", [
    (["-Xbeam", 2.5, "-Ybeam", 3.5], dict(Xbeam=2.5e-3, Ybeam=3.5e-3, pivot="BEAM")),
    (["-Xclose", 2.5, "-Yclose", 3.5], dict(Xclose=2.5e-3, Yclose=3.5e-3, pivot="SAMPLE")),
    (["-ORGX", 20, "-ORGY", 30], dict(ORGX=20, ORGY=30, pivot="SAMPLE")),
    (["-ORGX", 20, "-ORGY", 30, "-pivot", "beam"], dict(ORGX=20, ORGY=30, pivot="BEAM")),
    (["-pivot", "sample", "-Xbeam", 2.5, "-Ybeam", 3.5], dict(Xbeam=2.5e-3, Ybeam=3.5e-3, pivot="BEAM")),
], ids=["beam", "close", "org", "org+pivot", "pivot-then-beam"])
def test_origin_flags_set_pivot(tmp_path, flags, kw):
    head = header(tmp_path, MOSFLM_AXES + ["-distance", 100] + flags + ROT)
    G.check_header(head, G.place(custom=CUSTOM, rot=ROT_RAD, **kw), 64e-4)


# ------------------------------------------------------------------ parallel-suite geometry

def bragg_offset_px(wavelength_A, distance_mm, pixel_mm, d_A=100.0):
    return distance_mm * math.tan(2 * math.asin(wavelength_A / (2 * d_A))) / pixel_mm


@at("AT-PARALLEL-001", "default beam centre scales with the detector size")
@pytest.mark.parametrize("n", [64, 128, 256, 512])
def test_beam_centre_scales(tmp_path, n):
    c = n // 2   # a window symmetric about pixel-index c + 0.5
    r = run(SPOTS + ["-lambda", 6.2, "-N", 3, "-detpixels", n, "-pixel", 0.1, "-distance", 100,
                     "-roi", c - 6, c + 7, c - 6, c + 7, "-floatfile", "f.bin", "-intfile", "i.img",
                     "-nonoise", "-nopgm"], tmp_path)
    head = r.smv("i.img")[0]
    assert float(head["BEAM_CENTER_X"]) == pytest.approx((n + 1) * 0.05)
    assert float(head["BEAM_CENTER_Y"]) == pytest.approx((n + 1) * 0.05)
    img = r.floats("f.bin", n)
    ss, ff = np.mgrid[:n, :n]
    s, f = (img * ss).sum() / img.sum(), (img * ff).sum() / img.sum()
    assert (s, f) == pytest.approx((c + 0.5, c + 0.5), abs=0.02)   # Fbeam = Ybeam + half a pixel


@at("AT-PARALLEL-002", "pixel-size independence: beam and spot offsets scale as 1/pixel")
@pytest.mark.parametrize("pixel", [0.05, 0.1, 0.2])
def test_pixel_size_independence(tmp_path, pixel):
    beam = 25.6 / pixel                      # pixel index of the direct beam
    off = bragg_offset_px(1.0, 100, pixel)   # (0, 1, 0) spot, along slow
    b = int(round(beam))
    w = int(off) + 6
    img = image(SPOTS + ["-detpixels", 1024, "-pixel", pixel, "-distance", 100, "-Xbeam", 25.6, "-Ybeam", 25.6,
                         "-roi", b - w, b + w, b - w, b + w], tmp_path, 1024)
    assert peak(img, near=(beam, beam), search=1, radius=1) == pytest.approx((beam, beam), abs=0.3)
    s, f = peak(img, near=(beam + off, beam), search=2, radius=1)
    assert s - beam == pytest.approx(off, abs=0.5) and f == pytest.approx(beam, abs=0.5)


@at("AT-PARALLEL-006", "spot position follows Bragg's law in distance and wavelength")
@pytest.mark.parametrize("lam,dist", [(1.0, 50), (1.0, 100), (1.0, 200), (1.5, 100), (2.0, 100)])
def test_bragg_peak_position(tmp_path, lam, dist):
    img = image(SPOTS + ["-lambda", lam, "-detpixels", 64, "-pixel", 0.1, "-distance", dist, "-Xbeam", 3.2,
                         "-Ybeam", 3.2], tmp_path, 64)
    off = bragg_offset_px(lam, dist, 0.1)
    for sign in (1, -1):   # (0, -1, 0) and (0, 1, 0)
        s, f = peak(img, near=(32 + sign * off, 32), search=2, radius=1)
        assert abs(s - 32) == pytest.approx(off, abs=0.5) and f == pytest.approx(32, abs=0.5)


def zero_layer_directions(lam_A, a_A=100.0, span=1):
    """Diffracted directions of the (0, k, l) spots of a cubic cell with b, c along lab y, z."""
    for k in range(-span, span + 1):
        for l in range(-span, span + 1):
            y, z = lam_A * k / a_A, lam_A * l / a_A
            yield (k, l), np.array([math.sqrt(1 - y * y - z * z), y, z])


@at("AT-PARALLEL-007", "spot positions on a rotated detector (rotx, roty, rotz, two-theta)")
def test_peaks_on_rotated_detector(tmp_path):
    flags = ["-detpixels", 96, "-pixel", 0.1, "-distance", 100, "-twotheta", 10] + ROT
    img = image(SPOTS + flags, tmp_path, 96)
    det = G.place("MOSFLM", 96, rot=ROT_RAD, twotheta=math.radians(10))
    found = 0
    for hkl, d in zero_layer_directions(1.0):
        s, f = G.spot(det, d)
        if not (3 <= s <= 92 and 3 <= f <= 92):
            continue
        got = peak(img, near=(s, f), search=2, radius=1)
        assert got == pytest.approx((s, f), abs=0.5), f"spot {hkl}"
        found += 1
    assert found >= 4


@at("AT-PARALLEL-021", "a phi rotation about the beam turns the spot pattern with it")
@pytest.mark.parametrize("phi", [0, 30, 55])
def test_phi_rotation_turns_pattern(tmp_path, phi):
    img = image(SPOTS + ["-spindle_axis", 1, 0, 0, "-phi", phi, "-osc", 0, "-detpixels", 64, "-pixel", 0.1,
                         "-distance", 100], tmp_path, 64)
    det = G.place(custom=CUSTOM, pivot="BEAM")      # the beam meets pixel-index 31.5
    c, sn = math.cos(math.radians(phi)), math.sin(math.radians(phi))
    for (k, l), d in zero_layer_directions(1.0):
        if abs(k) + abs(l) != 1:
            continue
        turned = np.array([d[0], c * d[1] - sn * d[2], sn * d[1] + c * d[2]])   # right-handed about x
        s, f = G.spot(det, turned)
        assert peak(img, near=(s, f), search=1, radius=1) == pytest.approx((s, f), abs=0.5)
    if phi:   # where the unturned (0, 1, 0) spot was, there is now little
        s, f = G.spot(det, next(d for (k, l), d in zero_layer_directions(1.0) if (k, l) == (1, 0)))
        assert img[int(round(s)), int(round(f))] < 0.05 * img.max()
