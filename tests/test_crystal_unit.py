"""Unit tests of nbxp.crystal: cell vectors, misset, crystal size, rotation sampling and
per-orientation cell vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbxp import rng as nbrng
from nbxp.config import CrystalConfig
from nbxp.crystal import (RotationSampling, cell_parameters, cell_vectors, crystal_size, orientations,
                          rotation_sampling, standard_setting)

from .helpers import to_numpy

D = math.radians

CELLS = {
    "cubic": (50.0, 50.0, 50.0, 90.0, 90.0, 90.0),
    "orthorhombic": (40.0, 55.0, 72.0, 90.0, 90.0, 90.0),
    "monoclinic": (45.0, 61.0, 38.0, 90.0, 104.5, 90.0),
    "monoclinic_alpha": (45.0, 61.0, 38.0, 97.0, 90.0, 90.0),
    "hexagonal": (60.0, 60.0, 90.0, 90.0, 90.0, 120.0),
    "triclinic": (50.0, 60.0, 70.0, 80.0, 95.0, 105.0),
    "triclinic2": (27.1, 31.4, 34.3, 88.2, 108.5, 111.9),
}
#: cells with at most one angle away from 90 degrees.  For these nanoBragg's standard setting
#: is exact; with two or more oblique angles its c*_z = c* V / (a b c sin gamma*) differs from
#: 1/c by the factor a b c sin(al) sin(be) sin(ga) / V, and nbxp reproduces that faithfully
#: (the user's edge lengths are then forced, but the angles are slightly off).
EXACT = [k for k in CELLS if not k.startswith("triclinic")]


def closed_form_volume(a, b, c, al, be, ga):
    ca, cb, cg = math.cos(al), math.cos(be), math.cos(ga)
    return a * b * c * math.sqrt(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg)


def angle(u, v):
    return math.acos(float(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))


def cfg_for(cell, **kw):
    a, b, c, al, be, ga = cell
    return CrystalConfig(cell=(a * 1e-10, b * 1e-10, c * 1e-10, D(al), D(be), D(ga)), **kw)


@pytest.mark.parametrize("name", list(CELLS))
def test_standard_setting_volume_and_orientation(name):
    a, b, c, al, be, ga = CELLS[name]
    al, be, ga = D(al), D(be), D(ga)
    notes: list = []
    recip, V, lengths = standard_setting((a, b, c, al, be, ga), notes)
    assert notes == []
    assert lengths == (a, b, c)
    assert V == pytest.approx(closed_form_volume(a, b, c, al, be, ga), rel=1e-12)
    # nanoBragg's standard orientation: a* along x, b* in the xy plane, c* with z > 0
    assert recip[0, 1] == 0.0 and recip[0, 2] == 0.0 and recip[1, 2] == 0.0
    assert recip[0, 0] > 0 and recip[1, 1] > 0 and recip[2, 2] > 0
    # |a*| = b c sin(al) / V, |b*| = c a sin(be) / V, cos(gamma*) from the direct angles
    assert np.linalg.norm(recip[0]) == pytest.approx(b * c * math.sin(al) / V, rel=1e-12)
    assert np.linalg.norm(recip[1]) == pytest.approx(c * a * math.sin(be) / V, rel=1e-12)
    cos_gs = (math.cos(al) * math.cos(be) - math.cos(ga)) / (math.sin(al) * math.sin(be))
    assert math.cos(angle(recip[0], recip[1])) == pytest.approx(cos_gs, abs=1e-12)


@pytest.mark.parametrize("name", EXACT)
def test_standard_setting_reciprocal_cell(name):
    a, b, c, al, be, ga = CELLS[name]
    recip, V, lengths = standard_setting((a, b, c, D(al), D(be), D(ga)), [])
    V_ref = closed_form_volume(a, b, c, D(al), D(be), D(ga))
    assert np.linalg.norm(recip[2]) == pytest.approx(a * b * math.sin(D(ga)) / V_ref, rel=1e-12)
    # the reciprocal of the reciprocal cell has the given edges, and volume 1/V
    real = np.linalg.inv(recip).T  # rows a, b, c with a_i . b*_j = delta_ij
    np.testing.assert_allclose(np.linalg.norm(real, axis=1), [a, b, c], rtol=1e-12)
    assert abs(np.linalg.det(recip)) == pytest.approx(1.0 / V_ref, rel=1e-12)
    assert angle(real[1], real[2]) == pytest.approx(D(al), abs=1e-12)
    assert angle(real[0], real[2]) == pytest.approx(D(be), abs=1e-12)
    assert angle(real[0], real[1]) == pytest.approx(D(ga), abs=1e-12)


def test_standard_setting_defaults():
    # b, c default to a and angles to 90 degrees
    recip, V, lengths = standard_setting((30.0, 0.0, 0.0, 0.0, 0.0, 0.0), [])
    assert lengths == (30.0, 30.0, 30.0)
    assert V == pytest.approx(27000.0, rel=1e-12)
    np.testing.assert_allclose(recip, np.eye(3) / 30.0, atol=1e-15)


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_vectors_lengths_and_volume(xp, name):
    # every cell: the user's edge lengths are forced exactly, the reported volume is the
    # closed-form one, and the reciprocal vectors are the cross products over that volume
    a, b, c, al, be, ga = CELLS[name]
    vecs = cell_vectors(cfg_for(CELLS[name]), 1e-10, [], xp=xp)
    real, recip = to_numpy(vecs.real), to_numpy(vecs.reciprocal)
    np.testing.assert_allclose(np.linalg.norm(real, axis=1), [a, b, c], rtol=1e-12)
    assert vecs.volume == pytest.approx(closed_form_volume(a, b, c, D(al), D(be), D(ga)), rel=1e-12)
    np.testing.assert_allclose(recip[0], np.cross(real[1], real[2]) / vecs.volume, rtol=1e-12, atol=1e-15)
    assert np.linalg.det(real) > 0  # right-handed


@pytest.mark.parametrize("name", EXACT)
def test_cell_vectors_lengths_angles_volume(xp, name):
    a, b, c, al, be, ga = CELLS[name]
    notes: list = []
    vecs = cell_vectors(cfg_for(CELLS[name]), 1e-10, notes, xp=xp)
    assert notes == []
    real, recip = to_numpy(vecs.real), to_numpy(vecs.reciprocal)
    np.testing.assert_allclose(np.linalg.norm(real, axis=1), [a, b, c], rtol=1e-12)
    assert angle(real[1], real[2]) == pytest.approx(D(al), abs=1e-11)
    assert angle(real[0], real[2]) == pytest.approx(D(be), abs=1e-11)
    assert angle(real[0], real[1]) == pytest.approx(D(ga), abs=1e-11)
    np.testing.assert_allclose(real @ recip.T, np.eye(3), atol=1e-12)
    V_ref = closed_form_volume(a, b, c, D(al), D(be), D(ga))
    assert vecs.volume == pytest.approx(V_ref, rel=1e-12)
    assert np.linalg.det(real) == pytest.approx(V_ref, rel=1e-12)  # right-handed
    # cell_parameters reads the same cell back (degrees)
    params, rparams = cell_parameters(vecs, xp=xp)
    np.testing.assert_allclose(params, CELLS[name], rtol=1e-10)
    np.testing.assert_allclose(rparams[:3], np.linalg.norm(recip, axis=1), rtol=1e-12)


def test_cell_vectors_cubic_is_axis_aligned(xp):
    vecs = cell_vectors(cfg_for(CELLS["cubic"]), 1e-10, [], xp=xp)
    np.testing.assert_allclose(to_numpy(vecs.real), 50.0 * np.eye(3), atol=1e-12)
    np.testing.assert_allclose(to_numpy(vecs.reciprocal), np.eye(3) / 50.0, atol=1e-15)


def test_cell_vectors_from_amat(xp):
    # a MOSFLM A matrix holds reciprocal vectors (columns) times the wavelength in A
    lam = 1.5e-10
    recip, V, _ = standard_setting((40.0, 55.0, 72.0, D(90), D(90), D(90)), [])
    amat = recip.T * 1.5
    vecs = cell_vectors(CrystalConfig(amat=amat), lam, [], xp=xp)
    np.testing.assert_allclose(to_numpy(vecs.reciprocal), recip, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(np.linalg.norm(to_numpy(vecs.real), axis=1), [40.0, 55.0, 72.0], rtol=1e-12)
    assert vecs.volume == pytest.approx(40.0 * 55.0 * 72.0, rel=1e-12)


@pytest.mark.parametrize("name", ["orthorhombic", "hexagonal", "triclinic"])
def test_misset_is_a_rotation(xp, name):
    mis = (D(12.0), D(-33.0), D(71.0))
    ref = to_numpy(cell_vectors(cfg_for(CELLS[name]), 1e-10, [], xp=xp).real)
    rot = to_numpy(cell_vectors(cfg_for(CELLS[name], misset=mis), 1e-10, [], xp=xp).real)
    np.testing.assert_allclose(np.linalg.norm(rot, axis=1), np.linalg.norm(ref, axis=1), rtol=1e-12)
    np.testing.assert_allclose(rot @ rot.T, ref @ ref.T, rtol=1e-10, atol=1e-9)  # all metric data
    # and it is x, then y, then z rotation of the unrotated cell
    cx, sx = math.cos(mis[0]), math.sin(mis[0])
    cy, sy = math.cos(mis[1]), math.sin(mis[1])
    cz, sz = math.cos(mis[2]), math.sin(mis[2])
    R = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
         @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    np.testing.assert_allclose(rot, ref @ R.T, atol=1e-10)
    assert not np.allclose(rot, ref)


# --------------------------------------------------------------------------- crystal size


def test_crystal_size(xp):
    real = cell_vectors(cfg_for(CELLS["orthorhombic"]), 1e-10, [], xp=xp).real  # 40, 55, 72 A
    # sizes: 1.234 um / 40 A = 308.5 -> 309; 0.5 um / 55 A = 90.9 -> 91; none -> Nc as given
    N = crystal_size(CrystalConfig(size_a=1.234e-6, size_b=0.5e-6, Nc=7.0), real, xp=xp)
    assert N == (309.0, 91.0, 7.0)
    assert N == tuple(float(math.ceil(s / L)) if s else 7.0
                      for s, L in zip((1.234e-6, 0.5e-6, 0.0), (40e-10, 55e-10, 72e-10)))
    # a size smaller than one cell still gives one cell
    assert crystal_size(CrystalConfig(size_a=1e-12, size_b=10e-10, size_c=72e-10 * 2.5), real, xp=xp) == (1.0, 1.0, 3.0)
    # N <= 1 (including 0 and fractions) is clamped to 1; larger N kept as given
    assert crystal_size(CrystalConfig(Na=0.0, Nb=0.5, Nc=12.0), real, xp=xp) == (1.0, 1.0, 12.0)
    assert crystal_size(CrystalConfig(Na=-3.0, Nb=1.0, Nc=1.5), real, xp=xp) == (1.0, 1.0, 1.5)


# --------------------------------------------------------------------------- rotation sampling


def test_rotation_sampling_nothing_given():
    s = rotation_sampling(CrystalConfig(), [])
    assert (s.phisteps, s.phistep, s.osc) == (1, 0.0, 0.0)
    assert (s.mosaic_domains, s.mosaic_spread) == (1, 0.0)
    assert s.phis == [0.0]


def test_rotation_sampling_osc_only():
    osc = D(0.5)
    s = rotation_sampling(CrystalConfig(osc=osc, phi0=D(10.0)), [])
    assert s.phisteps == 2
    assert s.phistep == pytest.approx(osc / 2)
    assert s.phis == pytest.approx([D(10.0), D(10.0) + osc / 2])


def test_rotation_sampling_phisteps_and_osc():
    s = rotation_sampling(CrystalConfig(osc=D(1.0), phisteps=4), [])
    assert s.phisteps == 4 and s.phistep == pytest.approx(D(0.25)) and s.osc == pytest.approx(D(1.0))
    assert s.phis == pytest.approx([0.0, D(0.25), D(0.5), D(0.75)])


def test_rotation_sampling_other_phi_rules():
    # osc and step: ceil(osc/step) steps
    s = rotation_sampling(CrystalConfig(osc=1.0, phistep=0.3), [])
    assert s.phisteps == 4 and s.phistep == 0.3
    # step only: one step's oscillation in two steps
    s = rotation_sampling(CrystalConfig(phistep=0.2), [])
    assert (s.osc, s.phisteps, s.phistep) == (0.2, 2, 0.2)
    # phisteps only: 1 degree oscillation split in phisteps
    s = rotation_sampling(CrystalConfig(phisteps=5), [])
    assert s.osc == pytest.approx(D(1.0)) and s.phistep == pytest.approx(D(1.0) / 5) and s.phisteps == 5
    # phisteps 0 becomes 1
    s = rotation_sampling(CrystalConfig(phisteps=0, osc=0.1), [])
    assert s.phisteps == 1 and s.phistep == pytest.approx(0.1)


def test_rotation_sampling_mosaic_rules():
    notes: list = []
    s = rotation_sampling(CrystalConfig(mosaic_spread=D(0.3)), notes)
    assert s.mosaic_domains == 10 and s.mosaic_spread == pytest.approx(D(0.3))
    assert any("10 mosaic domains" in n for n in notes)
    notes = []
    s = rotation_sampling(CrystalConfig(mosaic_domains=25), notes)
    assert s.mosaic_domains == 1 and s.mosaic_spread == 0.0
    assert any("mosaic_domains = 1" in n for n in notes)
    s = rotation_sampling(CrystalConfig(mosaic_domains=25, mosaic_spread=0.0), [])
    assert s.mosaic_domains == 1
    s = rotation_sampling(CrystalConfig(mosaic_spread=0.0), [])
    assert (s.mosaic_domains, s.mosaic_spread) == (1, 0.0)
    s = rotation_sampling(CrystalConfig(mosaic_domains=25, mosaic_spread=D(0.1)), [])
    assert (s.mosaic_domains, s.mosaic_spread) == (25, pytest.approx(D(0.1)))


# --------------------------------------------------------------------------- orientations


def test_orientations_spindle_quarter_turn(xp):
    real = np.diag([50e-10, 60e-10, 70e-10])
    sampling = RotationSampling(phi0=0.0, phistep=math.pi / 2, phisteps=3, osc=3 * math.pi / 2,
                                mosaic_spread=0.0, mosaic_domains=1)
    out = to_numpy(orientations(real, xp.asarray(np.array([0.0, 0.0, 1.0]), dtype=xp.float64), sampling,
                                12345678, xp=xp, dtype=xp.float64))
    assert out.shape == (3, 3, 3)
    np.testing.assert_allclose(out[0], real, atol=1e-25)
    # 90 degrees about +z: a (along x) -> along y, b (along y) -> along -x, c unchanged
    np.testing.assert_allclose(out[1], [[0, 50e-10, 0], [-60e-10, 0, 0], [0, 0, 70e-10]], atol=1e-24)
    np.testing.assert_allclose(out[2], [[-50e-10, 0, 0], [0, -60e-10, 0], [0, 0, 70e-10]], atol=1e-24)


def test_orientations_without_spread_repeats_domains(xp):
    real = np.diag([50e-10, 60e-10, 70e-10])
    sampling = RotationSampling(0.0, 0.1, 2, 0.2, 0.0, 4)
    out = to_numpy(orientations(real, xp.asarray(np.array([0.0, 1.0, 0.0]), dtype=xp.float64), sampling,
                                1, xp=xp, dtype=xp.float64))
    assert out.shape == (8, 3, 3)
    for p in range(2):
        for m in range(4):
            np.testing.assert_array_equal(out[p * 4 + m], out[p * 4])


def test_orientations_mosaic_domains(xp):
    real = np.array([[50e-10, 0, 0], [3e-10, 60e-10, 0], [1e-10, -2e-10, 70e-10]])
    spread, M, seed = D(0.5), 5, 12345678
    sampling = RotationSampling(phi0=0.0, phistep=0.3, phisteps=2, osc=0.6, mosaic_spread=spread,
                                mosaic_domains=M)
    spindle = np.array([0.0, 0.0, 1.0])
    out = to_numpy(orientations(real, xp.asarray(spindle, dtype=xp.float64), sampling, seed,
                                xp=xp, dtype=xp.float64))
    assert out.shape == (2 * M, 3, 3)
    U = nbrng.mosaic_domains(spread, M, -seed)
    c, s = math.cos(0.3), math.sin(0.3)
    Rphi = [np.eye(3), np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])]
    for p in range(2):
        rotated = real @ Rphi[p].T
        # domain 0 is the unrotated (identity) domain
        np.testing.assert_allclose(out[p * M], rotated, atol=1e-22)
        for m in range(M):
            np.testing.assert_allclose(out[p * M + m], rotated @ U[m].T, atol=1e-22)
            # a mosaic rotation keeps lengths and tilts by at most the spread
            np.testing.assert_allclose(np.linalg.norm(out[p * M + m], axis=1),
                                       np.linalg.norm(real, axis=1), rtol=1e-12)
            for i in range(3):
                assert angle(out[p * M + m][i], rotated[i]) <= spread + 1e-9
    assert np.max(np.abs(out[1] - out[0])) > 1e-3 * 50e-10  # a real rotation happened


# ---------------------------------------------------------------- degenerate crystals

@pytest.mark.parametrize("cell,why", [
    ((0.0, 50.0, 50.0, 90.0, 90.0, 90.0), "edge a must be positive"),
    ((-5.0, 0.0, 0.0, 0.0, 0.0, 0.0), "edge a must be positive"),
    ((50.0, 50.0, 50.0, 180.0, 90.0, 90.0), "alpha = 180 deg is not below 180"),
    ((50.0, 50.0, 50.0, 200.0, 200.0, 200.0), "alpha = 200 deg"),  # nanoBragg's |...| accepts these
    ((50.0, 50.0, 50.0, 120.0, 120.0, 120.0), "give no real cell"),  # sum 360: flat
    ((50.0, 50.0, 50.0, 30.0, 40.0, 100.0), "give no real cell"),  # gamma > alpha + beta
    ((50.0, 50.0, math.inf, 90.0, 90.0, 90.0), "non-finite"),
])
def test_impossible_cells_are_refused_before_any_division(cell, why):
    from nbxp.errors import ConfigError, NbxpError
    cfg = cfg_for(cell)
    with pytest.raises(ConfigError, match=why) as e:
        cell_vectors(cfg, 1e-10, [], xp=np)
    assert isinstance(e.value, NbxpError) and str(e.value).startswith("-cell: ")


@pytest.mark.parametrize("name", list(CELLS))
def test_real_cells_pass_and_the_flatness_is_V_over_abc(name):
    from nbxp.crystal import MIN_FLATNESS, cell_problem
    a, b, c, al, be, ga = CELLS[name]
    assert cell_problem((a, b, c, D(al), D(be), D(ga))) is None
    assert closed_form_volume(a, b, c, D(al), D(be), D(ga)) / (a * b * c) > 1000 * MIN_FLATNESS
    # a sliver just above the bound passes, one below it does not: 90, 90, gamma with
    # V/abc = sin(gamma)
    assert cell_problem((a, b, c, D(90), D(90), math.pi - 2 * MIN_FLATNESS)) is None
    assert cell_problem((a, b, c, D(90), D(90), math.pi - 0.5 * MIN_FLATNESS)) is not None


@pytest.mark.parametrize("amat,why", [
    (np.zeros((3, 3)), "column is zero"),
    (np.array([[0.01, 0.0, 0.02], [0.0, 0.01, 0.0], [0.0, 0.0, 0.0]]), "coplanar"),  # c* = 2 a*
    (np.array([[0.01, 0, 0], [0, 0.01, 0], [0, 0, np.inf]]), "nine finite numbers"),
    (np.array([[0.02, 0, 0], [0, 0.0, 0], [0, 0, 0.02]]), "b* column is zero"),
])
def test_singular_A_matrices_are_refused(amat, why):
    from nbxp.errors import ConfigError
    with pytest.raises(ConfigError, match=why):
        cell_vectors(CrystalConfig(amat=amat), 1e-10, [], xp=np)


def test_a_rotated_A_matrix_passes_and_its_volume_is_the_inverse_determinant():
    from nbxp.crystal import amat_problem
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    amat = q @ np.diag([1 / 40.0, 1 / 50.0, 1 / 60.0])  # lambda = 1 A
    assert amat_problem(amat) is None
    v = cell_vectors(CrystalConfig(amat=amat), 1e-10, [], xp=np)
    assert v.volume == pytest.approx(40 * 50 * 60, rel=1e-9)


def test_the_library_gets_the_same_refusal():
    import nbxp
    from nbxp.config import SimConfig
    from nbxp.errors import NbxpError
    with pytest.raises(NbxpError, match="A matrix is singular"):
        nbxp.simulate(SimConfig(crystal=CrystalConfig(amat=np.zeros((3, 3))), default_F=1.0))
