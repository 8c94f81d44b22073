"""Unit tests of nbxp.rng: nanoBragg's ran1 and mosaic-domain rotations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbxp.rng import Deviates, Ran1, mosaic_domains, mosaic_rotation_umat, poisson_counts

M31 = 2**31 - 1


class ReferenceRan1:
    """Numerical Recipes' ran1 written the plain way: the Park-Miller minimal standard
    x <- 16807 x mod (2^31 - 1) computed with Python's big integers (no Schrage trick),
    with a 32-entry Bays-Durham shuffle and 8 warm-up draws."""

    NTAB = 32
    NDIV = 1 + (M31 - 1) // 32

    def __init__(self, seed: int):
        x = -seed if seed < 0 else 0
        self.x = max(x, 1)  # seed 0 or a positive seed start the generator at 1
        self.table = [0] * self.NTAB
        for j in range(self.NTAB + 7, -1, -1):
            self.x = (16807 * self.x) % M31
            if j < self.NTAB:
                self.table[j] = self.x
        self.last = self.table[0]

    def __call__(self) -> float:
        self.x = (16807 * self.x) % M31
        j = self.last // self.NDIV
        self.last = self.table[j]
        self.table[j] = self.x
        value = np.float32(self.last * (1.0 / M31))
        return float(min(value, np.float32(1.0 - 1.2e-7)))


def test_reference_generator_is_the_minimal_standard():
    # Park & Miller (1988): from x0 = 1 the 10000th value is 1043618065
    x = 1
    for _ in range(10000):
        x = (16807 * x) % M31
    assert x == 1043618065


@pytest.mark.parametrize("seed", [-1, -12345678, -987654321, -2])
def test_ran1_matches_reference(seed):
    r, ref = Ran1(seed), ReferenceRan1(seed)
    got = [r() for _ in range(2000)]
    want = [ref() for _ in range(2000)]
    assert got == want


def test_ran1_seed_minus_one_first_values():
    r, ref = Ran1(-1), ReferenceRan1(-1)
    first = [r() for _ in range(5)]
    assert first == [ref() for _ in range(5)]
    assert len(set(first)) == 5
    # the well-known first deviate of ran1(idum = -1)
    assert first[0] == pytest.approx(0.415999, abs=1e-6)


def test_ran1_positive_and_zero_seed_start_at_one():
    # NR's ran1 initialises with idum = 1 when -idum < 1
    def seq(seed):
        g = Ran1(seed)
        return [g() for _ in range(50)]
    assert seq(5) == seq(-1) == seq(0)
    assert seq(-2) != seq(-1)


def test_ran1_deterministic_and_in_unit_interval():
    a = Ran1(-12345678)
    b = Ran1(-12345678)
    xs = [a() for _ in range(5000)]
    assert xs == [b() for _ in range(5000)]
    arr = np.array(xs)
    assert np.all(arr > 0.0) and np.all(arr < 1.0)
    assert all(float(np.float32(x)) == x for x in xs)  # single precision, as the reference
    # roughly uniform
    assert abs(arr.mean() - 0.5) < 0.02
    assert abs(arr.var() - 1.0 / 12.0) < 0.01
    # another seed gives another sequence
    c = Ran1(-7)
    assert [c() for _ in range(3)] != xs[:3]


# --------------------------------------------------------------------------- mosaic rotations


def _rotation_angle(R):
    return math.acos(min(1.0, max(-1.0, (np.trace(R) - 1.0) / 2.0)))


@pytest.mark.parametrize("spread", [math.radians(0.1), math.radians(2.0), math.radians(30.0)])
def test_mosaic_rotation_umat_is_rotation_within_spread(spread):
    r = Ran1(-12345678)
    for _ in range(200):
        U = mosaic_rotation_umat(spread, r)
        np.testing.assert_allclose(U @ U.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(U) == pytest.approx(1.0, abs=1e-12)
        assert _rotation_angle(U) <= spread * (1 + 1e-6) + 1e-12


def test_mosaic_rotation_umat_axis_and_angle():
    # the axis (uniform on the sphere) and angle spread*(1-r3^2)^(1/3) come from three deviates
    spread = math.radians(5.0)
    r, ref = Ran1(-4242), ReferenceRan1(-4242)
    for _ in range(50):
        U = mosaic_rotation_umat(spread, r)
        r1, r2, r3 = (2.0 * ref() - 1.0 for _ in range(3))
        s = math.sqrt(1.0 - r2 * r2)
        v = np.array([s * math.sin(math.pi * r1), s * math.cos(math.pi * r1), r2])
        t = spread * (1.0 - r3 * r3) ** (1.0 / 3.0)
        K = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        R = np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K
        np.testing.assert_allclose(U, R, atol=1e-8)  # the angle is rounded to float32
        np.testing.assert_allclose(U @ v, v, atol=1e-12)  # the axis is fixed


def test_mosaic_rotation_umat_zero_spread_is_identity():
    U = mosaic_rotation_umat(0.0, Ran1(-1))
    np.testing.assert_allclose(U, np.eye(3), atol=0)


def test_mosaic_domains():
    spread, n = math.radians(1.5), 12
    U = mosaic_domains(spread, n, -12345678)
    assert U.shape == (n, 3, 3)
    np.testing.assert_array_equal(U[0], np.eye(3))
    np.testing.assert_array_equal(U, mosaic_domains(spread, n, -12345678))
    # domain 0 still consumes its three deviates: domain m is the m-th draw of the sequence
    r = Ran1(-12345678)
    draws = [mosaic_rotation_umat(spread, r) for _ in range(n)]
    np.testing.assert_array_equal(U[1:], np.array(draws[1:]))
    for m in range(1, n):
        np.testing.assert_allclose(U[m] @ U[m].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(U[m]) == pytest.approx(1.0, abs=1e-12)
        assert 0.0 < _rotation_angle(U[m]) <= spread * (1 + 1e-6)
    other = mosaic_domains(spread, n, -1)
    np.testing.assert_array_equal(other[0], np.eye(3))
    assert np.max(np.abs(other[1:] - U[1:])) > 1e-6
    # a prefix of a longer run is the shorter run
    np.testing.assert_array_equal(mosaic_domains(spread, 5, -12345678), U[:5])


# --------------------------------------------------------------------------- compiled noise

def _native_available():
    from nbxp import native
    return native.load("noise") is not None


@pytest.mark.skipif(not _native_available(), reason="no C compiler for the compiled noise generator")
@pytest.mark.parametrize("seed", [-1234, -1, -987654321])
def test_compiled_noise_equals_python_reference(seed):
    # every regime of poidev (multiplication below 12, rejection up to 1e6, Gaussian above)
    # and its cached constants (repeated means), in one shuffled stream
    rng = np.random.default_rng(abs(seed))
    means = np.concatenate([rng.exponential(0.5, 20000), rng.uniform(0, 12, 5000), rng.uniform(12, 2000, 3000),
                            rng.uniform(1e5, 3e6, 300), np.zeros(100), np.full(50, 7.25), np.full(50, 345.5),
                            [1e6, 12.0, np.nextafter(np.float32(12), np.float32(0)), 1e6 + 64, -3.0]]).astype(np.float32)
    rng.shuffle(means)
    fast = poisson_counts(means, seed)
    slow = poisson_counts(means, seed, native=False)
    np.testing.assert_array_equal(fast, slow)
    # and the Python path is the Deviates stream itself
    dev = Deviates(seed)
    np.testing.assert_array_equal(slow[:500], np.array([dev.poisson(float(m)) for m in means[:500]], np.float32))


def test_noise_without_compiler_falls_back_to_python(monkeypatch, tmp_path):
    from nbxp import native
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("NBXP_NO_NATIVE", "1")
    assert native.load("noise") is None
    means = np.array([0.0, 0.5, 3.0, 40.0, 2e6], np.float32)
    out = poisson_counts(means, -77)
    dev = Deviates(-77)
    np.testing.assert_array_equal(out, np.array([dev.poisson(float(m)) for m in means], np.float32))
