"""nanoBragg's random numbers, reproduced bit for bit on the host.

nanoBragg draws mosaic-domain orientations (and, for noise images, Poisson deviates) from the
"minimal standard" multiplicative congruential generator of Park and Miller (multiplier 16807,
modulus 2**31 - 1) with a 32-entry Bays-Durham shuffle table, returning single-precision
uniform deviates (Numerical Recipes' ``ran1``).  The same seed must give the same mosaic
matrices as nanoBragg, or mosaic images differ, so this module mirrors the integer recurrence
and every float32 rounding of the reference.  It is host-side Python: the sequences are short
(three deviates per mosaic domain) and inherently serial.
"""

from __future__ import annotations

import ctypes
import math
import struct

import numpy as np

_F32_STRUCT = struct.Struct("f")


def _f32(x: float) -> float:
    """Round a double to the nearest float32 (as a C float assignment does); several times
    cheaper than a NumPy scalar round trip in these serial loops."""
    try:
        return _F32_STRUCT.unpack(_F32_STRUCT.pack(x))[0]
    except OverflowError:  # beyond float32's range: C gives +-inf
        return math.copysign(math.inf, x)

_IA = 16807
_IM = 2147483647
_AM = 1.0 / _IM
_IQ = 127773
_IR = 2836
_NTAB = 32
_NDIV = 1 + (_IM - 1) // _NTAB
_RNMX = 1.0 - 1.2e-7
_RNMX_F32 = float(np.float32(_RNMX))


class Ran1:
    """Uniform deviates in (0, 1) as float32, identical to nanoBragg's ``ran1``.

    ``seed`` follows nanoBragg's convention: the generator is (re)initialised when the
    state is <= 0, so nanoBragg passes ``-abs(seed)``; ``Ran1(-12345678)`` reproduces its
    default mosaic sequence.  Calling the object draws one deviate; the state lives in a
    closure because noise images draw millions of them serially.
    """

    def __init__(self, seed: int):
        idum = int(seed)
        idum = 1 if -idum < 1 else -idum
        iv = [0] * _NTAB
        for j in range(_NTAB + 7, -1, -1):
            # Schrage's factorisation in the reference computes exactly (16807 idum) mod (2^31 - 1)
            idum = (_IA * idum) % _IM
            if j < _NTAB:
                iv[j] = idum
        state = [idum, iv[0]]
        pack, unpack = _F32_STRUCT.pack, _F32_STRUCT.unpack

        def draw() -> float:
            idum = (_IA * state[0]) % _IM
            j = state[1] // _NDIV
            iy = iv[j]
            iv[j] = idum
            state[0], state[1] = idum, iy
            temp = unpack(pack(_AM * iy))[0]
            return _RNMX_F32 if temp > _RNMX else temp

        self._draw = draw

    def __call__(self) -> float:
        return self._draw()


_ONE_THIRD_F32 = _f32(1.0 / 3.0)


def _c_powf():
    """The C library's ``powf`` (float in, float out), or None off a loadable libm."""
    try:
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        fn = lib.powf
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    return fn


_LIBM_POWF = _c_powf()


def _powf(x: float, y: float) -> float:
    """``powf(x, y)`` as nanoBragg computes it: the C library's own (glibc's powf is not
    correctly rounded; NumPy's float32 power differs from it in about one case in six, which
    matters for ``-misset random``, a cap of 90 radians where one float step of the angle is
    1e-4 degree); without a loadable libm, the double result rounded to float."""
    if _LIBM_POWF is not None:
        return float(_LIBM_POWF(x, y))
    return _f32(x ** y) if x >= 0 else math.nan


def mosaic_rotation_umat(mosaicity: float, rng: Ran1) -> np.ndarray:
    """A random rotation within a spherical cap of angular diameter ``mosaicity`` (radians).

    Returns the 3x3 rotation matrix (row-major, applied as ``R @ v``) that nanoBragg's
    ``mosaic_rotation_umat`` builds: an axis uniform on the sphere and an angle
    ``mosaicity * (1 - r**2)**(1/3)`` (evaluated in single precision, as the reference does),
    turned into a matrix by Rodrigues' formula.
    """
    r1 = 2.0 * rng() - 1.0
    r2 = 2.0 * rng() - 1.0
    r3 = 2.0 * rng() - 1.0
    xyrad = math.sqrt(1.0 - r2 * r2)
    # the reference passes the spread as float and uses powf: round exactly as it does
    rot = _f32(_f32(mosaicity) * _powf(_f32(1.0 - r3 * r3), _ONE_THIRD_F32))
    v1 = xyrad * math.sin(math.pi * r1)
    v2 = xyrad * math.cos(math.pi * r1)
    v3 = r2
    c = math.cos(rot)
    t = 1.0 - c
    s = math.sin(rot)
    return np.array([
        [c + t * v1 * v1, t * v1 * v2 - s * v3, t * v1 * v3 + s * v2],
        [t * v1 * v2 + s * v3, c + t * v2 * v2, t * v2 * v3 - s * v1],
        [t * v1 * v3 - s * v2, t * v2 * v3 + s * v1, c + t * v3 * v3],
    ])


def mosaic_domains(spread: float, count: int, seed: int) -> np.ndarray:
    """The ``count`` domain rotations nanoBragg renders, shape (count, 3, 3).

    Domain 0 is forced to the identity (after its random numbers are drawn, as in the
    reference), so a mosaic crystal always contains one unrotated domain.
    """
    rng = Ran1(seed)
    umats = np.empty((max(count, 1), 3, 3))
    for i in range(count):
        umats[i] = mosaic_rotation_umat(spread, rng)
    umats[0] = np.eye(3)
    return umats


_F32 = np.float32
_GAMMLN_COF = (76.18009172947146, -86.50532032941677, 24.01409824083091, -1.231739572450155,
               0.1208650973866179e-2, -0.5395239384953e-5)


def gammln(xx: float) -> float:
    """ln Gamma(xx) by Lanczos' series, returned in single precision as nanoBragg does."""
    x = y = float(xx)
    tmp = x + 5.5
    tmp -= (x + 0.5) * math.log(tmp)
    ser = 1.000000000190015
    for c in _GAMMLN_COF:
        y += 1.0
        ser += c / y
    return _f32(-tmp + math.log(2.5066282746310005 * ser / x))


class Deviates:
    """nanoBragg's Poisson and Gaussian deviates drawn from one :class:`Ran1` stream.

    Reproduces ``poidev``/``gaussdev`` including their single-precision arithmetic and
    their hidden state (the spare Gaussian deviate, the cached constants of the last mean),
    so a noise image equals nanoBragg's for the same ``-seed``.
    """

    def __init__(self, seed: int):
        self.ran1 = Ran1(seed)._draw
        self._spare = None
        self._oldm = -1.0
        self._sq = self._alxm = self._g = 0.0

    def gauss(self) -> float:
        if self._spare is not None:
            v, self._spare = self._spare, None
            return v
        f32, r = _f32, self.ran1
        while True:
            v1 = float(f32(2.0 * r() - 1.0))
            v2 = float(f32(2.0 * r() - 1.0))
            rsq = float(f32(f32(v1 * v1) + f32(v2 * v2)))
            if 0 < rsq < 1.0:
                break
        fac = float(f32(math.sqrt(-2.0 * math.log(rsq) / rsq)))
        self._spare = float(f32(v1 * fac))
        return float(f32(v2 * fac))

    def poisson(self, xm: float) -> float:
        """A Poisson deviate of mean ``xm`` (a float32 value): multiplication of uniforms
        below 12, rejection from a Lorentzian up to 1e6, Gaussian above."""
        f32, r = _f32, self.ran1
        if xm > 1.0e6:
            return f32(xm + math.sqrt(xm) * self.gauss())
        if xm < 12.0:
            if xm != self._oldm:
                self._oldm = xm
                self._g = float(f32(math.exp(-xm)))
            g = self._g
            em = -1
            t = 1.0
            while True:
                em += 1
                t = float(f32(t * r()))
                if not t > g:
                    return float(em)
        if xm != self._oldm:
            self._oldm = xm
            self._sq = float(f32(math.sqrt(2.0 * xm)))
            self._alxm = float(f32(math.log(xm)))
            self._g = float(f32(f32(xm * self._alxm) - gammln(float(f32(xm + 1.0)))))
        sq, alxm, g = self._sq, self._alxm, self._g
        while True:
            while True:
                y = float(f32(math.tan(math.pi * r())))
                em = float(f32(f32(sq * y) + xm))
                if em >= 0.0:
                    break
            em = float(math.floor(em))
            arg = f32(f32(f32(em * alxm) - gammln(float(f32(em + 1.0)))) - g)
            t = float(f32(0.9 * (1.0 + float(f32(y * y))) * math.exp(float(arg))))
            if not r() > t:
                return em


def poisson_counts(means: np.ndarray, seed: int, *, native: bool = True) -> np.ndarray:
    """Poisson deviates (float32) for ``means`` in order from one stream started at
    ``seed`` (as :class:`Deviates`): nanoBragg's noise sequence.

    Uses the compiled translation ``kernels/noise.c`` when it can be built (about 100x
    faster), else this module's Python; both give identical values.
    """
    means = np.ascontiguousarray(means, dtype=np.float32).reshape(-1)
    counts = np.empty_like(means)
    lib = None
    if native:
        from . import native as _native
        lib = _native.load("noise")
    if lib is not None:
        fn = lib.nbxp_poisson_counts
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        fn(means.ctypes.data, means.shape[0], int(seed), counts.ctypes.data)
        return counts
    poisson = Deviates(seed).poisson
    for i, xm in enumerate(means.tolist()):
        counts[i] = poisson(xm)
    return counts
