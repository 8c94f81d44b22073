"""Unit tests of nbxp.vectors rotations and nbxp.geometry: detector placement, pivots,
two-theta, solid angle and sensor capture fraction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbxp.config import DetectorConfig
from nbxp.geometry import build_detector, capture_fraction, convention_axes, solid_angle
from nbxp.vectors import rotate_axis, rotate_xyz

from .helpers import to_numpy


def f64(xp, v):
    return xp.asarray(np.asarray(v, dtype=np.float64), dtype=xp.float64)


def Rx(t):
    c, s = math.cos(t), math.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def Ry(t):
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def Rz(t):
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rodrigues(axis, t):
    a = np.asarray(axis, dtype=float)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K


# --------------------------------------------------------------------------- rotations


def test_rotate_xyz_preserves_orthonormality(xp):
    out = to_numpy(rotate_xyz(f64(xp, np.eye(3)), 0.3, -1.1, 2.5, xp=xp))
    np.testing.assert_allclose(out @ out.T, np.eye(3), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, rtol=1e-14)


def test_rotate_xyz_is_x_then_y_then_z(xp):
    rng = np.random.default_rng(10)
    v = rng.normal(size=(7, 3))
    rx, ry, rz = 0.4, -0.7, 1.9
    out = to_numpy(rotate_xyz(f64(xp, v), rx, ry, rz, xp=xp))
    ref = v @ (Rz(rz) @ Ry(ry) @ Rx(rx)).T
    np.testing.assert_allclose(out, ref, atol=1e-14)


def test_rotate_xyz_right_handed_quarter_turns(xp):
    e = f64(xp, np.eye(3))
    h = math.pi / 2
    np.testing.assert_allclose(to_numpy(rotate_xyz(e[1, :], h, 0.0, 0.0, xp=xp)), [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(to_numpy(rotate_xyz(e[2, :], 0.0, h, 0.0, xp=xp)), [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(to_numpy(rotate_xyz(e[0, :], 0.0, 0.0, h, xp=xp)), [0, 1, 0], atol=1e-15)


def test_rotate_axis_quarter_turn_about_z(xp):
    out = to_numpy(rotate_axis(f64(xp, np.eye(3)), f64(xp, [0.0, 0.0, 1.0]), math.pi / 2, xp=xp))
    np.testing.assert_allclose(out, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15)


def test_rotate_axis_general_orthonormal_and_matches_matrix(xp):
    axis = np.array([1.0, -2.0, 0.5])
    axis /= np.linalg.norm(axis)
    t = 0.83
    out = to_numpy(rotate_axis(f64(xp, np.eye(3)), f64(xp, axis), t, xp=xp))
    np.testing.assert_allclose(out @ out.T, np.eye(3), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, rtol=1e-14)
    np.testing.assert_allclose(out, np.eye(3) @ rodrigues(axis, t).T, atol=1e-14)
    # the axis itself is fixed
    np.testing.assert_allclose(to_numpy(rotate_axis(f64(xp, axis), f64(xp, axis), t, xp=xp)), axis, atol=1e-15)


def test_rotate_axis_composition_and_inverse(xp):
    rng = np.random.default_rng(11)
    v = f64(xp, rng.normal(size=(5, 3)))
    axis = np.array([0.2, 0.9, -0.4])
    ax = f64(xp, axis / np.linalg.norm(axis))
    a, b = 0.37, -1.21
    twice = rotate_axis(rotate_axis(v, ax, a, xp=xp), ax, b, xp=xp)
    once = rotate_axis(v, ax, a + b, xp=xp)
    np.testing.assert_allclose(to_numpy(twice), to_numpy(once), atol=1e-14)
    back = rotate_axis(rotate_axis(v, ax, a, xp=xp), ax, -a, xp=xp)
    np.testing.assert_allclose(to_numpy(back), to_numpy(v), atol=1e-14)


def test_rotate_axis_agrees_with_rotate_xyz_and_array_angles(xp):
    rng = np.random.default_rng(12)
    v = rng.normal(size=(4, 3))
    phis = np.array([0.0, 0.1, 1.0, -2.0])
    out = to_numpy(rotate_axis(f64(xp, v), f64(xp, [0.0, 1.0, 0.0]), f64(xp, phis), xp=xp))
    for i, p in enumerate(phis):
        np.testing.assert_allclose(out[i], to_numpy(rotate_xyz(f64(xp, v[i]), 0.0, float(p), 0.0, xp=xp)),
                                   atol=1e-14)


# --------------------------------------------------------------------------- detector


def _build(xp, **kw):
    det = DetectorConfig(**kw)
    notes: list = []
    return build_detector(det, convention_axes(det.convention, {}), xp=xp, dtype=xp.float64, notes=notes)


def test_mosflm_defaults_by_hand(xp):
    g = _build(xp)
    px, n, dist = 1e-4, 1024, 0.1
    # MOSFLM: Xbeam = Ybeam = (detsize + pixel)/2, then Fbeam = Ybeam + pixel/2, Sbeam = Xbeam + pixel/2
    Xbeam = (n * px + px) / 2.0
    Fbeam = Sbeam = Xbeam + 0.5 * px
    assert Xbeam == pytest.approx(0.05125, abs=1e-15)
    assert g.Xbeam == pytest.approx(Xbeam, abs=1e-15) and g.Ybeam == pytest.approx(Xbeam, abs=1e-15)
    assert g.Fbeam == pytest.approx(Fbeam, abs=1e-15) and g.Sbeam == pytest.approx(Sbeam, abs=1e-15)
    # beam +x, fast +z, slow -y, normal +x: pix0 = -Fbeam*fdet - Sbeam*sdet + distance*beam
    pix0 = -Fbeam * np.array([0, 0, 1.0]) - Sbeam * np.array([0, -1.0, 0]) + dist * np.array([1.0, 0, 0])
    np.testing.assert_allclose(pix0, [0.1, 0.0513, -0.0513], atol=1e-15)
    np.testing.assert_allclose(to_numpy(g.pix0), pix0, atol=1e-15)
    np.testing.assert_allclose(to_numpy(g.fdet), [0, 0, 1], atol=0)
    np.testing.assert_allclose(to_numpy(g.sdet), [0, -1, 0], atol=0)
    np.testing.assert_allclose(to_numpy(g.odet), [1, 0, 0], atol=0)
    # the direct beam meets the detector at (Fbeam, Sbeam)
    hit = to_numpy(g.pix0) + g.Fbeam * to_numpy(g.fdet) + g.Sbeam * to_numpy(g.sdet)
    np.testing.assert_allclose(hit, [dist, 0.0, 0.0], atol=1e-15)
    # untilted: the near point is the beam spot and close_distance == distance
    assert g.distance == pytest.approx(dist, rel=1e-15)
    assert g.close_distance == pytest.approx(dist, rel=1e-15)
    assert g.Fclose == pytest.approx(Fbeam, abs=1e-15) and g.Sclose == pytest.approx(Sbeam, abs=1e-15)
    assert g.pivot == "BEAM"
    assert g.detsize_f == pytest.approx(0.1024) and g.detsize_s == pytest.approx(0.1024)


def test_xds_defaults_by_hand(xp):
    g = _build(xp, convention="XDS")
    # XDS: near point at the detector centre, beam +z, fast +x, slow +y, SAMPLE pivot
    np.testing.assert_allclose(to_numpy(g.pix0), [-0.0512, -0.0512, 0.1], atol=1e-15)
    assert g.pivot == "SAMPLE"
    assert g.ORGX == pytest.approx(512.5) and g.ORGY == pytest.approx(512.5)
    assert g.close_distance == pytest.approx(g.distance, rel=1e-15)


ROT = dict(rotx=0.05, roty=-0.08, rotz=0.2)


def _near_and_beam_spots(g):
    pix0, f, s = to_numpy(g.pix0), to_numpy(g.fdet), to_numpy(g.sdet)
    return pix0 + g.Fclose * f + g.Sclose * s, pix0 + g.Fbeam * f + g.Sbeam * s


def test_beam_pivot_keeps_direct_beam_spot(xp):
    flat = _build(xp, convention="CUSTOM", pivot="BEAM")
    tilted = _build(xp, convention="CUSTOM", pivot="BEAM", **ROT)
    assert tilted.Fbeam == pytest.approx(flat.Fbeam, abs=1e-14)
    assert tilted.Sbeam == pytest.approx(flat.Sbeam, abs=1e-14)
    assert flat.Fbeam == pytest.approx(0.0512, abs=1e-15)  # CUSTOM default: detector centre
    _, beam_spot = _near_and_beam_spots(tilted)
    np.testing.assert_allclose(beam_spot, [0.1, 0.0, 0.0], atol=1e-14)  # distance along the beam
    assert tilted.distance == pytest.approx(0.1, rel=1e-14)
    # ... while the near point moved
    assert abs(tilted.Fclose - flat.Fclose) > 1e-3 or abs(tilted.Sclose - flat.Sclose) > 1e-3
    assert tilted.close_distance < 0.1


def test_sample_pivot_keeps_near_point(xp):
    kw = dict(convention="CUSTOM", pivot="SAMPLE", close_distance=0.12)
    flat = _build(xp, **kw)
    tilted = _build(xp, twotheta=0.3, **ROT, **kw)
    assert tilted.Fclose == pytest.approx(flat.Fclose, abs=1e-14)
    assert tilted.Sclose == pytest.approx(flat.Sclose, abs=1e-14)
    assert tilted.close_distance == pytest.approx(0.12, rel=1e-14)
    near, _ = _near_and_beam_spots(tilted)
    np.testing.assert_allclose(near, 0.12 * to_numpy(tilted.odet), atol=1e-14)
    # the sample-to-pix0 distance is unchanged by rotations about the sample
    assert np.linalg.norm(to_numpy(tilted.pix0)) == pytest.approx(np.linalg.norm(to_numpy(flat.pix0)), rel=1e-14)
    # ... while the direct-beam spot moved
    assert abs(tilted.Fbeam - flat.Fbeam) > 1e-3 or abs(tilted.Sbeam - flat.Sbeam) > 1e-3


def test_detector_axes_rotated_as_rotate_xyz(xp):
    g = _build(xp, **ROT)
    R = Rz(ROT["rotz"]) @ Ry(ROT["roty"]) @ Rx(ROT["rotx"])
    np.testing.assert_allclose(to_numpy(g.fdet), R @ [0, 0, 1.0], atol=1e-15)
    np.testing.assert_allclose(to_numpy(g.sdet), R @ [0, -1.0, 0], atol=1e-15)
    np.testing.assert_allclose(to_numpy(g.odet), R @ [1.0, 0, 0], atol=1e-15)


@pytest.mark.parametrize("tt_deg", [10.0, 35.0, -20.0])
def test_twotheta_rotates_normal(xp, tt_deg):
    tt = math.radians(tt_deg)
    g = _build(xp, twotheta=tt)  # MOSFLM: two-theta axis -z, normal +x
    odet = to_numpy(g.odet)
    np.testing.assert_allclose(odet, [math.cos(tt), -math.sin(tt), 0.0], atol=1e-15)
    assert float(np.dot(odet, [1.0, 0, 0])) == pytest.approx(math.cos(tt), rel=1e-14)
    np.testing.assert_allclose(to_numpy(g.fdet), [0, 0, 1.0], atol=1e-15)  # fast axis lies on the 2theta axis
    gx = _build(xp, convention="XDS", twotheta=tt)  # XDS: axis +x, normal +z
    np.testing.assert_allclose(to_numpy(gx.odet), [0.0, -math.sin(tt), math.cos(tt)], atol=1e-15)
    # SAMPLE pivot (XDS): the detector swings about the sample, close distance kept
    assert gx.close_distance == pytest.approx(0.1, rel=1e-14)


# --------------------------------------------------------------------------- solid angle, capture


def test_solid_angle_closed_form(xp):
    R = np.array([0.1, 0.11, 0.15, 0.3])
    px, close = 1e-4, 0.1
    out = to_numpy(solid_angle(f64(xp, R), px, close, False, xp=xp))
    np.testing.assert_allclose(out, px * px * close / R ** 3, rtol=1e-14)
    # normal incidence: (pixel/R)^2
    assert out[0] == pytest.approx((px / 0.1) ** 2, rel=1e-14)
    point = to_numpy(solid_angle(f64(xp, R), px, close, True, xp=xp))
    np.testing.assert_allclose(point, 1.0 / R ** 2, rtol=1e-14)


def test_solid_angle_sums_to_sphere_fraction():
    # integrated over a large flat detector the solid angle approaches 2 pi (1 - d/sqrt(d^2+r^2))
    # for a disc; here a square of half-side L at distance d: 4 arctan(L^2/(d sqrt(d^2+2L^2)))
    import array_api_compat.numpy as xnp
    d, L, n = 0.1, 0.05, 400
    px = 2 * L / n
    c = (np.arange(n) + 0.5) * px - L
    X, Y = np.meshgrid(c, c)
    R = np.sqrt(X ** 2 + Y ** 2 + d ** 2)
    total = float(np.sum(to_numpy(solid_angle(xnp.asarray(R), px, d, False, xp=xnp))))
    exact = 4 * math.atan(L * L / (d * math.sqrt(d * d + 2 * L * L)))
    assert total == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("nlayers", [1, 3, 8])
def test_capture_fraction_sums_to_total_absorption(xp, nlayers):
    mu, t = 1.0 / 234e-6, 450e-6  # 1/m, m
    step = t / nlayers
    angles = np.radians([0.0, 20.0, 45.0, 70.0])
    odet = np.array([1.0, 0.0, 0.0])
    diffracted = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    layers = f64(xp, np.arange(nlayers, dtype=float)[:, None])  # (L, 1) against (N,)
    frac = to_numpy(capture_fraction(f64(xp, diffracted), f64(xp, odet), layers, step, mu, xp=xp))
    assert frac.shape == (nlayers, len(angles))
    cos = np.cos(angles)
    # each layer: exp(-mu z0/cos) - exp(-mu z1/cos)
    z = np.arange(nlayers)[:, None] * step
    np.testing.assert_allclose(frac, np.exp(-mu * z / cos) - np.exp(-mu * (z + step) / cos), rtol=1e-12)
    np.testing.assert_allclose(frac.sum(axis=0), 1.0 - np.exp(-mu * t / cos), rtol=1e-12)
    assert np.all(frac > 0) and np.all(np.diff(frac, axis=0) < 0)  # deeper layers absorb less
