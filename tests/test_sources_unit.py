"""Unit tests of nbxp.sources: step rules, divergence rasters, spectra and source vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbxp.config import BeamConfig
from nbxp.sources import (DivergenceSampling, auto_steps, build_sources, divergence_angles,
                          divergence_sampling, wavelengths)

from .helpers import to_numpy

BEAM = np.array([1.0, 0.0, 0.0])  # MOSFLM beam
POLAR = np.array([0.0, 0.0, 1.0])  # MOSFLM E vector

# --------------------------------------------------------------------------- auto_steps


@pytest.mark.parametrize("args,expect", [
    ((None, None, None), (0.0, 0.0, 1)),          # nothing given: one source
    ((None, 0.002, None), (0.002, 0.002, 2)),     # step only: range = step, 2 steps
    ((0.004, None, None), (0.004, 0.004, 2)),     # range only: 2 steps a range apart
    ((0.004, 0.001, None), (0.004, 0.001, 4)),    # range and step: ceil(range/step)
    ((0.0045, 0.001, None), (0.0045, 0.001, 5)),
    ((None, None, 4), (1.0, 0.25, 4)),            # count only: unit range
    ((None, 0.003, 7), (0.003, 0.003, 2)),        # step and count: range = step, 2 steps
    ((0.004, None, 5), (0.004, 0.001, 5)),        # range and count: range/(count-1)
    ((0.004, None, 1), (0.004, 0.004, 2)),        # ... with count 1 bumped to 2
    ((0.004, 0.003, 9), (0.004, 0.003, 9)),       # everything given
    ((0.0, None, None), (0.0, 0.0, 1)),           # zero range collapses to one source
    ((0.0, None, 5), (0.0, 0.0, 1)),
])
def test_auto_steps_divergence_rules(args, expect):
    out = auto_steps(*args)
    assert out[2] == expect[2]
    assert out[0] == pytest.approx(expect[0], abs=1e-18)
    assert out[1] == pytest.approx(expect[1], abs=1e-18)


@pytest.mark.parametrize("args,expect", [
    ((None, None, None), (0.0, 0.0, 1)),
    ((100e-6, None, None), (100e-6, 50e-6, 2)),   # thickness only: two layers of half
    ((100e-6, 10e-6, None), (100e-6, 10e-6, 10)),
    ((None, None, 5), (0.5e-6, 0.1e-6, 5)),       # layers only: 0.5 um sensor
    ((100e-6, None, 4), (100e-6, 100e-6 / 3, 4)),
])
def test_auto_steps_thickness_rules(args, expect):
    out = auto_steps(*args, thick_style=True)
    assert out[2] == expect[2]
    assert out[0] == pytest.approx(expect[0], rel=1e-12, abs=1e-18)
    assert out[1] == pytest.approx(expect[1], rel=1e-12, abs=1e-18)


def test_divergence_sampling_dispersion_defaults_to_zero():
    s = divergence_sampling(BeamConfig(hdivrange=0.002, vdivrange=0.001, hdivsteps=3, vdivsteps=3))
    assert (s.hdivrange, s.hdivstep, s.hdivsteps) == (0.002, 0.001, 3)
    assert (s.vdivrange, s.vdivstep, s.vdivsteps) == (0.001, 0.0005, 3)
    assert (s.dispersion, s.dispstep, s.dispsteps) == (0.0, 0.0, 1)
    s = divergence_sampling(BeamConfig(dispersion=0.1, dispsteps=5))
    assert (s.dispersion, s.dispsteps) == (0.1, 5) and s.dispstep == pytest.approx(0.025)


# --------------------------------------------------------------------------- divergence grid


def _sampling(hr, hn, vr, vn):
    hs = hr / (hn - 1) if hn > 1 else 0.0
    vs = vr / (vn - 1) if vn > 1 else 0.0
    return DivergenceSampling(hr, hs, hn, vr, vs, vn, 0.0, 0.0, 1)


def _expected_kept(hr, hn, vr, vn):
    """nanoBragg's elliptical trim: with x, y the angles in units of the ranges (shifted by a
    quarter step squared for even counts), keep where 4 (x^2 + y^2) <= 1.1."""
    hs, vs = hr / (hn - 1), vr / (vn - 1)
    kept = []
    for i in range(hn):
        for j in range(vn):
            h = hs * i - hr / 2
            v = vs * j - vr / 2
            t = (h * h - (hs * hs / 4 if hn % 2 == 0 else 0.0)) / hr ** 2
            t += (v * v - (vs * vs / 4 if vn % 2 == 0 else 0.0)) / vr ** 2
            if 4 * t <= 1.1:
                kept.append((h, v))
    return kept


@pytest.mark.parametrize("hn,vn", [(5, 5), (4, 4), (7, 3), (6, 5), (9, 9)])
def test_divergence_angles_round_and_square(hn, vn):
    hr, vr = 0.002, 0.003
    s = _sampling(hr, hn, vr, vn)
    square = divergence_angles(s, round_div=False)
    assert len(square) == hn * vn
    # nanoBragg order: h outer, v inner, from -range/2 to +range/2
    assert square[0] == pytest.approx((-hr / 2, -vr / 2))
    assert square[1] == pytest.approx((-hr / 2, -vr / 2 + vr / (vn - 1)))
    assert square[-1] == pytest.approx((hr / 2, vr / 2))
    rnd = divergence_angles(s, round_div=True)
    exp = _expected_kept(hr, hn, vr, vn)
    assert len(rnd) == len(exp) < hn * vn
    np.testing.assert_allclose(np.array(rnd), np.array(exp), atol=1e-18)


def test_divergence_angles_known_counts():
    # 5x5: the corners and the 8 points next to them fall outside -> 13 kept
    assert len(divergence_angles(_sampling(1e-3, 5, 1e-3, 5), True)) == 13
    # 4x4: only the 4 corners fall outside
    assert len(divergence_angles(_sampling(1e-3, 4, 1e-3, 4), True)) == 12
    assert len(divergence_angles(_sampling(1e-3, 5, 1e-3, 5), False)) == 25


def test_divergence_angles_single_axis_never_trimmed():
    # a zero vertical range gives NaN in the ellipse test, which never trims (as nanoBragg)
    s = DivergenceSampling(0.002, 0.0005, 5, 0.0, 0.0, 1, 0.0, 0.0, 1)
    out = divergence_angles(s, True)
    assert len(out) == 5
    np.testing.assert_allclose([h for h, _ in out], [-0.001, -0.0005, 0.0, 0.0005, 0.001], atol=1e-18)


# --------------------------------------------------------------------------- wavelengths


@pytest.mark.parametrize("n", [2, 3, 6])
def test_wavelengths_symmetric(n):
    lam0, disp = 1.3e-10, 0.04
    s = DivergenceSampling(0, 0, 1, 0, 0, 1, disp, disp / (n - 1), n)
    lams = np.array(wavelengths(lam0, s))
    assert len(lams) == n
    np.testing.assert_allclose(lams[[0, -1]], [lam0 * (1 - disp / 2), lam0 * (1 + disp / 2)], rtol=1e-14)
    np.testing.assert_allclose(lams + lams[::-1], 2 * lam0, rtol=1e-14)
    np.testing.assert_allclose(np.diff(lams), lam0 * disp / (n - 1), rtol=1e-9)
    assert lams.mean() == pytest.approx(lam0, rel=1e-14)


def test_wavelengths_single():
    s = DivergenceSampling(0, 0, 1, 0, 0, 1, 0.0, 0.0, 1)
    assert wavelengths(1e-10, s) == [1e-10]


# --------------------------------------------------------------------------- build_sources


def test_build_sources_zero_divergence(xp):
    inc, lams, table, sampling = build_sources(BeamConfig(wavelength=1.2e-10), BEAM, POLAR, xp=xp, dtype=xp.float64)
    np.testing.assert_allclose(to_numpy(inc), [[1.0, 0.0, 0.0]], atol=1e-15)
    np.testing.assert_allclose(to_numpy(lams), [1.2e-10], rtol=1e-15)
    assert table.shape == (1, 5)
    np.testing.assert_allclose(table[0, :3], -10.0 * BEAM)  # source 10 m upstream
    assert table[0, 3] == 1.0
    assert sampling.hdivsteps == 1 and sampling.vdivsteps == 1 and sampling.dispsteps == 1


def test_build_sources_divergence_and_dispersion(xp):
    beam = BeamConfig(wavelength=1e-10, hdivrange=0.002, hdivsteps=3, vdivrange=0.002, vdivsteps=3,
                      dispersion=0.02, dispsteps=2, round_div=False)
    inc, lams, table, _ = build_sources(beam, BEAM, POLAR, xp=xp, dtype=xp.float64)
    inc, lams = to_numpy(inc), to_numpy(lams)
    assert inc.shape == (18, 3) and lams.shape == (18,)
    np.testing.assert_allclose(np.linalg.norm(inc, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(table[:, 3], 1.0 / 18)
    # wavelengths vary fastest
    np.testing.assert_allclose(lams[:2], [0.99e-10, 1.01e-10], rtol=1e-14)
    # every direction within the divergence box; the centre one along the beam
    ang = np.degrees(np.arccos(np.clip(inc @ BEAM, -1, 1)))
    assert np.all(ang <= np.degrees(math.hypot(0.001, 0.001)) + 1e-9)
    np.testing.assert_allclose(inc[8], BEAM, atol=1e-15)  # (hdiv, vdiv) = (0, 0), first wavelength


def test_build_sources_rotation_directions(xp):
    # hdiv only: rotation about beam x polar = -y tilts the beam towards +z (the E vector)
    beam = BeamConfig(hdivrange=0.02, hdivsteps=3)
    inc = to_numpy(build_sources(beam, BEAM, POLAR, xp=xp, dtype=xp.float64)[0])
    h = np.array([-0.01, 0.0, 0.01])
    np.testing.assert_allclose(inc, np.stack([np.cos(h), 0 * h, np.sin(h)], axis=1), atol=1e-15)
    # vdiv only: rotation about the polarization axis z tilts the beam within the xy plane
    beam = BeamConfig(vdivrange=0.02, vdivsteps=3)
    inc = to_numpy(build_sources(beam, BEAM, POLAR, xp=xp, dtype=xp.float64)[0])
    np.testing.assert_allclose(inc, np.stack([np.cos(h), np.sin(h), 0 * h], axis=1), atol=1e-15)


def test_build_sources_user_table_defaults(xp):
    nan = float("nan")
    user = np.array([
        [nan, nan, nan, nan, nan],
        [-5.0, 0.5, nan, 2.0, 1.5e-10],
        [0.0, 0.0, -3.0, nan, nan],
    ])
    beam_vec = np.array([0.0, 0.0, 1.0])
    original = user.copy()
    beam = BeamConfig(wavelength=0.9e-10, source_distance=7.0, sources=user)
    inc, lams, table, sampling = build_sources(beam, beam_vec, np.array([1.0, 0, 0]), xp=xp, dtype=xp.float64)
    assert sampling is None
    np.testing.assert_array_equal(user, original)  # the caller's table is not modified (NaN == NaN here)
    expect = np.array([
        [0.0, 0.0, -7.0, 1.0, 0.9e-10],
        [-5.0, 0.5, -7.0, 2.0, 1.5e-10],
        [0.0, 0.0, -3.0, 1.0, 0.9e-10],
    ])
    np.testing.assert_allclose(table, expect, rtol=1e-15)
    pos = expect[:, :3]
    np.testing.assert_allclose(to_numpy(inc), -pos / np.linalg.norm(pos, axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(to_numpy(lams), expect[:, 4], rtol=1e-15)
