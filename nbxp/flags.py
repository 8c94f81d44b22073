"""nanoBragg's command-line flags: spellings, units, defaults and precedence.

nanoBragg scans its arguments left to right and, for every token that starts with '-',
applies *every* option whose name occurs in the token (substring matching, sometimes with a
length check), so ``-mosaic_domains`` works through ``-mosaic_dom``, ``-matrix`` through
``-mat``, and ``-twotheta_axis`` also sets ``-twotheta`` from its first number.  Later
tokens override earlier ones; SMV headers from ``-mask`` and then ``-img`` are applied before
any flag.  nbxp reproduces those semantics with one table (:data:`FLAGS`) and differs only
where nanoBragg would silently misbehave:

* a token that matches no flag, a missing value or a non-numeric number is an error naming
  the flag (nanoBragg ignores it or reads 0);
* ``-misset_seed`` only sets the seed (nanoBragg also reads three misset angles from it);
* ``-pix0_vector``/``-pix0_vector_mm`` are accepted and warned about: nanoBragg parses them
  and then overwrites the origin in both pivot branches.

Values are converted to SI here and nowhere else.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


from .config import BeamConfig, CrystalConfig, DetectorConfig, SimConfig
from .errors import NbxpError

RTD = 180.0 / math.pi


class UsageError(NbxpError):
    """A command-line problem; the message names the flag and what was expected."""


@dataclass
class Flag:
    names: tuple[str, ...]          # spellings shown in help (first is canonical)
    nargs: int                      # values consumed (-1: variable, see parser)
    action: Callable                # action(state, values)
    group: str
    help: str
    metavar: str = ""
    match: Optional[Callable[[str], bool]] = None  # nanoBragg's test on the token
    stop: bool = False              # nanoBragg's 'continue': later flags not tried

    def matches(self, token: str) -> bool:
        if self.match is not None:
            return self.match(token)
        return any(n in token for n in self.names)


def _exact(*names):
    return lambda t: t in names


# --------------------------------------------------------------------------- values

def _num(flag: str, v: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise UsageError(f"{flag}: expected a number, got {v!r}") from None
    if math.isnan(x):
        raise UsageError(f"{flag}: expected a number, got {v!r}")
    return x


def _int(flag: str, v: str) -> int:
    x = _num(flag, v)
    if math.isinf(x) or x != math.floor(x):
        raise UsageError(f"{flag}: expected an integer, got {v!r}")
    return int(x)


def _finite(flag: str, v: str) -> float:
    x = _num(flag, v)
    if math.isinf(x):
        raise UsageError(f"{flag}: expected a finite number, got {v!r}")
    return x


def _positive(flag: str, v: str) -> float:
    x = _finite(flag, v)
    if x <= 0:
        raise UsageError(f"{flag}: expected a positive number, got {v!r}")
    return x


def _si(conv, scale=1.0):
    """``conv`` followed by the conversion to SI units, checked again afterwards: a value
    that passes in the user's units can leave the useful range in SI (``-pixel 1e-320``
    underflows to 0 m, ``-energy 1e-310`` gives an infinite wavelength), and every later
    division relies on the check."""
    def f(flag: str, v: str) -> float:
        x = conv(flag, v) * scale if scale != 1.0 else conv(flag, v)
        if (conv is not _num and not math.isfinite(x)) or (conv is _positive and not x > 0):
            raise UsageError(f"{flag}: {v} is out of range")
        return x
    return f


# --------------------------------------------------------------------------- state

@dataclass
class State:
    """nanoBragg's variables while the command line is read (already in SI units)."""

    Na: float = 1.0
    Nb: float = 1.0
    Nc: float = 1.0
    cell: Optional[list] = None
    misset: object = None
    misset_seed: Optional[int] = None
    sample: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    Xbeam: Optional[float] = None
    Ybeam: Optional[float] = None
    Xclose: Optional[float] = None
    Yclose: Optional[float] = None
    ORGX: Optional[float] = None
    ORGY: Optional[float] = None
    pivot: str = "BEAM"
    convention: str = "MOSFLM"
    vectors: dict = field(default_factory=dict)
    pix0_given: bool = False
    distance: float = 0.1
    close_distance: Optional[float] = None
    mu: Optional[float] = None
    thickness: float = 0.0
    thicksteps: Optional[int] = None
    twotheta: float = 0.0
    rot: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    detsize_f: float = 0.1024
    detsize_s: float = 0.1024
    fpixels: int = 0
    spixels: int = 0
    size_flag: str = "-detpixels"  # the flag that last sized the detector, for messages
    curved: bool = False
    pixel_size: float = 1e-4
    point_pixel: bool = False
    kahn: float = 0.0
    nopolar: bool = False
    oversample: Optional[int] = None
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False
    roi: Optional[list] = None
    wavelength: float = 1e-10
    fluence: float = BeamConfig.fluence
    flux: float = 0.0
    exposure: float = 1.0
    beamsize: float = 1e-4
    mosaic_spread: Optional[float] = None
    mosaic_domains: Optional[int] = None
    dispersion: float = 0.0
    dispsteps: Optional[int] = None
    hdivrange: Optional[float] = None
    vdivrange: Optional[float] = None
    hdivstep: Optional[float] = None
    vdivstep: Optional[float] = None
    hdivsteps: Optional[int] = None
    vdivsteps: Optional[int] = None
    round_div: bool = True
    adc: float = 40.0
    phi0: float = 0.0
    osc: Optional[float] = None
    phistep: Optional[float] = None
    phisteps: Optional[int] = None
    dmin: float = 0.0
    matfile: Optional[str] = None
    hklfile: Optional[str] = None
    # structure factors from MTZ / mmCIF / models (nbxp.structure_factors)
    hkl_column: Optional[str] = None
    hkl_block: Optional[str] = None
    pdbfile: Optional[str] = None
    sf_dmin: Optional[float] = None
    fprime: bool = True
    anomalous: bool = False
    solvent: bool = False
    write_hkl: Optional[str] = None
    sf: object = None  # the StructureFactorSet read, for the printout and -write_hkl
    sf_lines: list = field(default_factory=list)
    default_F: float = 0.0
    imgfile: Optional[str] = None
    maskfile: Optional[str] = None
    stolfile: Optional[str] = None
    sourcefile: Optional[str] = None
    floatfile: str = "floatimage.bin"
    intfile: str = "intimage.img"
    pgmfile: str = "image.pgm"
    noisefile: str = "noiseimage.img"
    calculate_noise: bool = True
    write_pgm: bool = True
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    progress: bool = True
    printout: bool = False
    printout_pixel: Optional[tuple] = None
    trace_pixel: Optional[tuple] = None  # (slow, fast) of -trace_pixel
    interpolate: Optional[bool] = None
    shape: str = "SQUARE"
    fudge: float = 1.0
    seed: Optional[int] = None
    mosaic_seed: int = 12345678
    water_size: float = 0.0
    threads: Optional[int] = None
    dtype: str = "float64"
    backend: str = "auto"
    tile_mb: Optional[float] = None
    fast_math: bool = False
    warnings: list = field(default_factory=list)
    adc_given: bool = False  # -adc on the command line (CBF/NeXus counts carry no offset otherwise)
    frames: Optional[int] = None  # --frames: rotation scan
    stills: Optional[int] = None  # --stills: still shots
    orientation_seed: Optional[int] = None
    truth: Optional[str] = None
    geometry: Optional[str] = None  # --geometry: the detector from a DIALS/CrystFEL file
    given: list = field(default_factory=list)  # (token, canonical name) of every flag, in order
    geometry_lines: list = field(default_factory=list)  # what --geometry set, for the printout
    workers: Optional[int] = None  # --workers: a local Dask cluster (nbxp.distributed)
    scheduler: Optional[str] = None  # --scheduler: an existing Dask cluster
    resume: bool = False


def _set(**kw):
    def act(s, v, flag=None):
        for k, val in kw.items():
            setattr(s, k, val)
    return act


def _scalar(attr: str, conv=_finite, scale=1.0, **extra):
    conv_si = _si(conv, scale) if conv in (_finite, _positive) else conv

    def act(s, v, flag=None):
        setattr(s, attr, conv_si(flag, v[0]) * scale if conv_si is conv and scale != 1.0 else conv_si(flag, v[0]))
        for k, val in extra.items():
            setattr(s, k, val)
    return act


def _vector(key: str):
    def act(s, v, flag=None):
        s.convention = "CUSTOM"
        s.vectors[key] = tuple(_finite(flag, x) for x in v[:3])
    return act


def _cell(s, v, flag=None):
    vals = [_finite(flag, x) for x in v]
    s.cell = vals


def _misset(s, v, flag=None):
    if "rand" in v[0]:
        s.misset = "random"
    else:
        s.misset = tuple(_finite(flag, x) / RTD for x in v[:3])


def _sample(axes, scale=1e-3):
    def act(s, v, flag=None):
        x = _finite(flag, v[0]) * scale
        for a in axes:
            s.sample[a] = x
    return act


def _detector_abs(s, v, flag=None):
    if "inf" in v[0] or _num(flag, v[0]) == 0.0:
        s.thickness, s.mu = 0.0, 0.0
    else:
        s.mu = 1.0 / _si(_positive, 1e-6)(flag, v[0])
        if not math.isfinite(s.mu):
            raise UsageError(f"{flag}: {v[0]} is out of range")


def _pivot(s, v, flag=None):
    if "sample" in v[0]:
        s.pivot = "SAMPLE"
    elif "beam" in v[0]:
        s.pivot = "BEAM"
    else:
        raise UsageError(f"{flag}: expected 'beam' or 'sample', got {v[0]!r}")


def _energy(s, v, flag=None):
    lam = 12398.42 / _positive(flag, v[0]) * 1e-10
    if not (math.isfinite(lam) and lam > 0):
        raise UsageError(f"{flag}: {v[0]} is out of range")
    s.wavelength = lam


def _detsize(s, v, flag=None):
    s.detsize_f = s.detsize_s = _si(_positive, 1e-3)(flag, v[0])
    s.size_flag = flag


def _roi(s, v, flag=None):
    s.roi = [_int(flag, x) for x in v[:4]]


def _pix0(s, v, flag=None):
    for x in v[:3]:
        _finite(flag, x)
    s.convention = "CUSTOM"
    s.pix0_given = True


def _pixels(*which):
    def act(s, v, flag=None):
        n = _int(flag, v[0])
        if n <= 0:
            raise UsageError(f"{flag}: expected a positive number of pixels, got {v[0]!r}")
        for w in which:
            setattr(s, w, n)
        s.size_flag = flag
    return act


def _printout_pixel(s, v, flag=None):
    s.printout = True
    s.printout_pixel = (_int(flag, v[0]), _int(flag, v[1]))


def _trace_pixel(s, v, flag=None):
    s.trace_pixel = (_int(flag, v[0]), _int(flag, v[1]))


def _seed(attr):
    def act(s, v, flag=None):
        setattr(s, attr, _int(flag, v[0]))
    return act


def _file(attr):
    def act(s, v, flag=None):
        setattr(s, attr, v[0])
    return act


G_IN, G_XTAL, G_BEAM, G_DET, G_SAMP, G_OUT, G_MISC = (
    "input files", "crystal", "beam", "detector", "sampling", "output files", "other")
G_SF = "structure factors from data and models (nbxp; needs gemmi)"

# Order matters: it is nanoBragg's order of tests, and 'stop' flags end the search.
FLAGS: list[Flag] = [
    Flag(("-Na",), 1, _scalar("Na", _int), G_XTAL, "unit cells along a (default 1)", "N", stop=True),
    Flag(("-Nb",), 1, _scalar("Nb", _int), G_XTAL, "unit cells along b (default 1)", "N", stop=True),
    Flag(("-Nc",), 1, _scalar("Nc", _int), G_XTAL, "unit cells along c (default 1)", "N", stop=True),
    Flag(("-N",), 1, lambda s, v, flag=None: [setattr(s, k, _int(flag, v[0])) for k in ("Na", "Nb", "Nc")],
         G_XTAL, "unit cells along a, b and c", "N", match=_exact("-N"), stop=True),
    Flag(("-cell",), -1, _cell, G_XTAL, "unit cell a b c (A) alpha beta gamma (deg); missing values: b=c=a, angles 90",
         "A B C AL BE GA"),
    Flag(("-misset",), -2, _misset, G_XTAL, "crystal rotations about x, y, z (deg), or 'random'", "RX RY RZ",
         match=lambda t: "-misset" in t and "-misset_seed" not in t),
    Flag(("-samplesize", "-sample_size"), 1, _sample((0, 1, 2)), G_XTAL, "sample size along a, b and c (mm)", "MM"),
    Flag(("-sample_thick", "-sample_x"), 1, _sample((0,)), G_XTAL, "sample size along a (mm)", "MM"),
    Flag(("-sample_width", "-sample_y", "-width"), 1, _sample((1,)), G_XTAL, "sample size along b (mm)", "MM"),
    Flag(("-sample_heigh", "-sample_z", "-heigh"), 1, _sample((2,)), G_XTAL, "sample size along c (mm)", "MM"),
    Flag(("-xtalsize", "-xtal_size"), 1, _sample((0, 1, 2)), G_XTAL,
         "crystal size along a, b and c (mm); sets Na, Nb, Nc from the cell", "MM"),
    Flag(("-xtal_thick", "-xtal_x"), 1, _sample((0,)), G_XTAL, "crystal size along a (mm)", "MM"),
    Flag(("-xtal_width", "-xtal_y", "-width"), 1, _sample((1,)), G_XTAL, "crystal size along b (mm)", "MM"),
    Flag(("-xtal_heigh", "-xtal_z", "-heigh"), 1, _sample((2,)), G_XTAL, "crystal size along c (mm)", "MM"),
    Flag(("-density", "-sample_den"), 1, lambda s, v, flag=None: _finite(flag, v[0]), G_MISC,
         "sample density (g/cm^3; accepted, no effect on the image)", "RHO"),
    Flag(("-MW", "-molec"), 1, lambda s, v, flag=None: _finite(flag, v[0]), G_MISC,
         "molecular weight (accepted, no effect on the image)", "MW",
         match=lambda t: t == "-MW" or "-molec" in t),
    Flag(("-Xbeam",), 1, _scalar("Xbeam", scale=1e-3, pivot="BEAM"), G_DET,
         "direct-beam position on the detector, convention's X axis (mm); pivot beam", "MM"),
    Flag(("-Ybeam",), 1, _scalar("Ybeam", scale=1e-3, pivot="BEAM"), G_DET,
         "direct-beam position, convention's Y axis (mm); pivot beam", "MM"),
    Flag(("-Xclose",), 1, _scalar("Xclose", scale=1e-3, pivot="SAMPLE"), G_DET,
         "near point of the detector, X (mm); pivot sample", "MM"),
    Flag(("-Yclose",), 1, _scalar("Yclose", scale=1e-3, pivot="SAMPLE"), G_DET,
         "near point of the detector, Y (mm); pivot sample", "MM"),
    Flag(("-ORGX",), 1, _scalar("ORGX", pivot="SAMPLE"), G_DET, "XDS origin, fast (pixels); pivot sample", "PX"),
    Flag(("-ORGY",), 1, _scalar("ORGY", pivot="SAMPLE"), G_DET, "XDS origin, slow (pixels); pivot sample", "PX"),
    Flag(("-pivot",), 1, _pivot, G_DET, "rotate the detector about the 'beam' spot or the 'sample' (near point)",
         "beam|sample"),
    Flag(("-mosflm",), 0, _set(convention="MOSFLM", pivot="BEAM"), G_DET, "MOSFLM axes and beam centre (default)"),
    Flag(("-xds",), 0, _set(convention="XDS", pivot="SAMPLE"), G_DET, "XDS axes and origin"),
    Flag(("-adxv",), 0, _set(convention="ADXV", pivot="BEAM"), G_DET, "ADXV axes and beam centre"),
    Flag(("-denzo",), 0, _set(convention="DENZO", pivot="BEAM"), G_DET, "DENZO axes and beam centre"),
    Flag(("-dials",), 0, _set(convention="DIALS", pivot="SAMPLE"), G_DET, "DIALS axes"),
    Flag(("-fdet_vector",), 3, _vector("fdet"), G_DET, "fast pixel axis (unit vector); CUSTOM convention", "X Y Z"),
    Flag(("-sdet_vector",), 3, _vector("sdet"), G_DET, "slow pixel axis; CUSTOM convention", "X Y Z"),
    Flag(("-odet_vector",), 3, _vector("odet"), G_DET,
         "detector normal, away from the sample; CUSTOM convention (replaced by fdet x sdet unless of unit length)",
         "X Y Z"),
    Flag(("-beam_vector",), 3, _vector("beam"), G_BEAM, "beam direction; CUSTOM convention", "X Y Z"),
    Flag(("-polar_vector",), 3, _vector("polar"), G_BEAM, "E-vector of the polarized beam; CUSTOM convention",
         "X Y Z"),
    Flag(("-spindle_axis",), 3, _vector("spindle"), G_XTAL, "phi rotation axis (right-handed); CUSTOM convention",
         "X Y Z"),
    Flag(("-twotheta_axis",), 3, _vector("twotheta_axis"), G_DET,
         "two-theta rotation axis; CUSTOM convention (as in nanoBragg, also reads its first number as -twotheta)",
         "X Y Z"),
    Flag(("-pix0_vector", "-pix0_vector_mm"), 3, _pix0, G_DET,
         "accepted for compatibility; has no effect (nanoBragg overwrites the origin from the beam centre)",
         "X Y Z"),
    Flag(("-distance",), 1, _scalar("distance", _positive, 1e-3, pivot="BEAM"), G_DET,
         "sample to detector along the beam (mm, default 100); pivot beam", "MM"),
    Flag(("-close_distance",), 1, _scalar("close_distance", _positive, 1e-3, pivot="SAMPLE"), G_DET,
         "sample to detector plane along its normal (mm); pivot sample", "MM"),
    Flag(("-detector_abs", "-detector_absorb"), 1, _detector_abs, G_DET,
         "sensor attenuation depth (um); 'inf' or 0: no absorption", "UM"),
    Flag(("-detector_thick",), 1, _scalar("thickness", _finite, 1e-6), G_DET, "sensor thickness (um)", "UM",
         match=_exact("-detector_thick")),
    Flag(("-detector_thicksteps", "-thicksteps"), 1, _scalar("thicksteps", _int), G_DET,
         "sensor layers (default: 1 without a thickness)", "N", match=lambda t: "-detector_thicksteps" in t or "-thicksteps" in t),
    Flag(("-twotheta",), 1, _scalar("twotheta", _finite, 1 / RTD, pivot="SAMPLE"), G_DET,
         "detector rotation about the two-theta axis (deg); pivot sample", "DEG"),
    Flag(("-detector_rotx",), 1, lambda s, v, flag=None: s.rot.__setitem__(0, _finite(flag, v[0]) / RTD), G_DET,
         "detector rotation about lab x (deg)", "DEG"),
    Flag(("-detector_roty",), 1, lambda s, v, flag=None: s.rot.__setitem__(1, _finite(flag, v[0]) / RTD), G_DET,
         "detector rotation about lab y (deg)", "DEG"),
    Flag(("-detector_rotz",), 1, lambda s, v, flag=None: s.rot.__setitem__(2, _finite(flag, v[0]) / RTD), G_DET,
         "detector rotation about lab z (deg)", "DEG"),
    Flag(("-detsize",), 1, _detsize, G_DET, "detector side (mm, default 102.4)", "MM", match=_exact("-detsize")),
    Flag(("-detsize_f",), 1, _scalar("detsize_f", _positive, 1e-3, size_flag="-detsize_f"), G_DET, "detector fast side (mm)", "MM"),
    Flag(("-detsize_s",), 1, _scalar("detsize_s", _positive, 1e-3, size_flag="-detsize_s"), G_DET, "detector slow side (mm)", "MM"),
    Flag(("-detpixels",), 1, _pixels("fpixels", "spixels"), G_DET, "pixels along each side (overrides -detsize)",
         "N", match=_exact("-detpixels")),
    Flag(("-detpixels_f", "-detpixels_x"), 1, _pixels("fpixels"), G_DET, "pixels along the fast axis", "N"),
    Flag(("-detpixels_s", "-detpixels_y"), 1, _pixels("spixels"), G_DET, "pixels along the slow axis", "N"),
    Flag(("-curved_det",), 0, _set(curved=True), G_DET, "spherical detector: every pixel at the same distance"),
    Flag(("-pixel",), 1, _scalar("pixel_size", _positive, 1e-3), G_DET, "pixel size (mm, default 0.1)", "MM"),
    Flag(("-point_pixel",), 0, _set(point_pixel=True), G_DET, "solid angle 1/R^2, no obliquity"),
    Flag(("-polar",), 1, _scalar("kahn", _finite, nopolar=False), G_BEAM, "Kahn polarization factor (default 0)",
         "K", match=_exact("-polar")),
    Flag(("-nopolar",), 0, _set(nopolar=True), G_BEAM, "no polarization correction"),
    Flag(("-oversample_thick",), 0, _set(oversample_thick=True), G_SAMP,
         "recompute sensor absorption for every sub-pixel", stop=True),
    Flag(("-oversample_polar",), 0, _set(oversample_polar=True), G_SAMP,
         "recompute polarization for every sub-pixel and source", stop=True),
    Flag(("-oversample_omega",), 0, _set(oversample_omega=True), G_SAMP,
         "recompute the solid angle for every sub-pixel", stop=True),
    Flag(("-oversample",), 1, _scalar("oversample", _int), G_SAMP,
         "sub-pixels per pixel side (default: from crystal size and pixel)", "N"),
    Flag(("-roi",), 4, _roi, G_DET, "render only pixels xmin..xmax, ymin..ymax (inclusive)", "XMIN XMAX YMIN YMAX"),
    Flag(("-lambda", "-wave"), 1, _scalar("wavelength", _positive, 1e-10), G_BEAM, "wavelength (A, default 1)", "A"),
    Flag(("-energy",), 1, _energy,
         G_BEAM, "photon energy (eV), instead of -lambda", "EV"),
    Flag(("-fluence",), 1, _scalar("fluence", _finite), G_BEAM, "photons/m^2 (default 1.25932e29)", "PH/M2"),
    Flag(("-flux",), 1, _scalar("flux", _finite), G_BEAM, "photons/s; with -exposure and -beamsize sets the fluence",
         "PH/S"),
    Flag(("-exposure",), 1, _scalar("exposure", _finite), G_BEAM, "exposure time (s, default 1)", "S"),
    Flag(("-beamsize",), 1, _scalar("beamsize", _finite, 1e-3), G_BEAM, "beam size (mm, default 0.1)", "MM"),
    Flag(("-mosaic", "-mosaic_spread"), 1, _scalar("mosaic_spread", _finite, 1 / RTD), G_XTAL,
         "mosaic spread (deg)", "DEG",
         match=lambda t: t == "-mosaic" or "-mosaici" in t or "-mosaic_spr" in t),
    Flag(("-mosaic_domains", "-mosaic_dom"), 1, _scalar("mosaic_domains", _int), G_XTAL,
         "mosaic domains (default 10 with a spread)", "N", match=lambda t: "-mosaic_dom" in t),
    Flag(("-dispersion",), 1, _scalar("dispersion", _finite, 0.01), G_BEAM, "spectral width (percent)", "PCT"),
    Flag(("-dispsteps",), 1, _scalar("dispsteps", _int), G_BEAM, "wavelengths across the dispersion", "N"),
    Flag(("-divergence",), 1, lambda s, v, flag=None: [setattr(s, k, _finite(flag, v[0]) * 1e-3) for k in ("hdivrange", "vdivrange")],
         G_BEAM, "horizontal and vertical divergence (mrad)", "MRAD"),
    Flag(("-hdivrange",), 1, _scalar("hdivrange", _finite, 1e-3), G_BEAM, "horizontal divergence (mrad)", "MRAD"),
    Flag(("-vdivrange",), 1, _scalar("vdivrange", _finite, 1e-3), G_BEAM, "vertical divergence (mrad)", "MRAD"),
    Flag(("-hdivstep",), 1, _scalar("hdivstep", _finite, 1e-3), G_BEAM, "horizontal divergence step (mrad)", "MRAD",
         match=_exact("-hdivstep")),
    Flag(("-hdivsteps",), 1, _scalar("hdivsteps", _int), G_BEAM, "horizontal divergence steps", "N"),
    Flag(("-vdivstep",), 1, _scalar("vdivstep", _finite, 1e-3), G_BEAM, "vertical divergence step (mrad)", "MRAD",
         match=_exact("-vdivstep")),
    Flag(("-vdivsteps",), 1, _scalar("vdivsteps", _int), G_BEAM, "vertical divergence steps", "N"),
    Flag(("-divsteps",), 1, lambda s, v, flag=None: [setattr(s, k, _int(flag, v[0])) for k in ("hdivsteps", "vdivsteps")],
         G_BEAM, "divergence steps in both directions", "N"),
    Flag(("-round_div",), 0, _set(round_div=True), G_BEAM, "trim the divergence grid to an ellipse (default)"),
    Flag(("-square_div",), 0, _set(round_div=False), G_BEAM, "keep the full divergence grid"),
    Flag(("-adc",), 1, _scalar("adc", _finite, adc_given=True), G_OUT, "offset added to SMV pixels (default 40)", "ADU"),
    Flag(("-phi",), 1, _scalar("phi0", _finite, 1 / RTD), G_XTAL, "starting spindle angle (deg, default 0)", "DEG",
         match=_exact("-phi")),
    Flag(("-osc",), 1, _scalar("osc", _finite, 1 / RTD), G_XTAL, "oscillation range (deg)", "DEG"),
    Flag(("-phistep",), 1, _scalar("phistep", _finite, 1 / RTD), G_XTAL, "spindle step (deg)", "DEG",
         match=_exact("-phistep")),
    Flag(("-phisteps",), 1, _scalar("phisteps", _int), G_XTAL, "spindle steps across the oscillation", "N"),
    Flag(("-dmin",), 1, _scalar("dmin", _finite, 1e-10), G_SAMP, "skip scattering beyond this resolution (A)", "A"),
    Flag(("-mat", "-matrix"), 1, _file("matfile"), G_IN, "MOSFLM A matrix (orientation and cell)", "FILE",
         match=lambda t: "-mat" in t),
    Flag(("-hkl",), 1, _file("hklfile"), G_IN,
         "structure factors: 'h k l F' lines, a merged MTZ or a structure-factor mmCIF, recognised by content, "
         ".gz too; MTZ/mmCIF data are expanded to P1 (writes Fdump.bin)", "FILE",
         match=lambda t: "-hkl" in t and not t.startswith(("-hkl_column", "-hkl_block"))),
    Flag(("-hkl_column",), 1, _file("hkl_column"), G_SF,
         "MTZ label or _refln tag to use: amplitude, intensity (F = sqrt(I)), or one of an anomalous pair "
         "(default: FP, F, FOBS, FMEAN, F_meas...; else the only F; else the only I)", "LABEL",
         match=_exact("-hkl_column")),
    Flag(("-hkl_block",), 1, _file("hkl_block"), G_SF, "mmCIF block to read (default: the first merged one)",
         "NAME", match=_exact("-hkl_block")),
    Flag(("-pdb",), 1, _file("pdbfile"), G_SF,
         "atomic model (PDB or mmCIF coordinates, .gz too): F computed from it (writes Fdump.bin)", "FILE",
         match=_exact("-pdb")),
    Flag(("-sf_dmin",), 1, _scalar("sf_dmin", _positive, 1e-10), G_SF,
         "resolution of F from -pdb, and cut-off for -hkl data (A; default for -pdb: the detector corner's "
         "resolution at the shortest wavelength, with a margin)", "A", match=_exact("-sf_dmin")),
    Flag(("-nofprime",), 0, _set(fprime=False), G_SF, "-pdb: no f' (default: f' at the beam's wavelength)",
         match=_exact("-nofprime")),
    Flag(("-anomalous",), 0, _set(anomalous=True), G_SF,
         "-pdb: add f'' so that F(h) and F(-h) differ; -hkl: prefer anomalous pairs in the automatic column choice",
         match=_exact("-anomalous")),
    Flag(("-solvent",), 0, _set(solvent=True), G_SF, "-pdb: add a flat bulk-solvent contribution",
         match=_exact("-solvent")),
    Flag(("-write_hkl",), 1, _file("write_hkl"), G_OUT,
         "write the P1 structure factors of -hkl/-pdb as nanoBragg 'h k l F' text", "FILE",
         match=_exact("-write_hkl")),
    Flag(("-default_F",), 1, _scalar("default_F", _finite), G_XTAL, "F of reflections not in -hkl (default 0)", "F"),
    Flag(("-img",), 1, _file("imgfile"), G_IN, "take detector settings from this SMV header", "FILE"),
    Flag(("-mask",), 1, _file("maskfile"), G_IN,
         "SMV mask: zero pixels are not rendered; its header sets the detector (beam centre Y flipped)", "FILE"),
    Flag(("-stolout",), 1, lambda s, v, flag=None: None, G_MISC, "accepted, no effect", "FILE",
         match=lambda t: "-stolout" in t and len(t) > 7),
    Flag(("-stol", "-4stol", "-Q"), 1, _file("stolfile"), G_MISC,
         "amorphous-scattering table (read by nanoBragg but unused in the image)", "FILE",
         match=lambda t: t in ("-stol", "-4stol", "-Q")),
    Flag(("-sourcefile",), 1, _file("sourcefile"), G_IN, "sources: X Y Z (m) weight lambda (m) per line", "FILE"),
    Flag(("-floatfile", "-floatimage"), 1, _file("floatfile"), G_OUT, "raw float32 image (default floatimage.bin)",
         "FILE"),
    Flag(("-intfile", "-intimage"), 1, _file("intfile"), G_OUT, "noiseless SMV image (default intimage.img)", "FILE"),
    Flag(("-pgmfile", "-pgmimage"), 1, lambda s, v, flag=None: (setattr(s, "pgmfile", v[0]), setattr(s, "write_pgm", True)),
         G_OUT, "8-bit PGM preview (default image.pgm)", "FILE"),
    Flag(("-noisefile", "-noiseimage"), 1,
         lambda s, v, flag=None: (setattr(s, "noisefile", v[0]), setattr(s, "calculate_noise", True)),
         G_OUT, "SMV image with Poisson noise (default noiseimage.img)", "FILE"),
    Flag(("-nonoise",), 0, _set(calculate_noise=False), G_OUT, "do not write the noise image"),
    Flag(("-nopgm",), 0, _set(write_pgm=False), G_OUT, "do not write the PGM image"),
    Flag(("-scale",), 1, _scalar("intfile_scale", _finite), G_OUT, "SMV scale (default 55000/max)", "X"),
    Flag(("-pgmscale",), 1, lambda s, v, flag=None: (setattr(s, "pgm_scale", _finite(flag, v[0])), setattr(s, "write_pgm", True)),
         G_OUT, "PGM scale (default 250/(5 rmsd))", "X"),
    Flag(("-coherent",), 0, lambda s, v, flag=None: None, G_MISC, "accepted, no effect (as in nanoBragg)"),
    Flag(("-printout",), 0, _set(printout=True), G_MISC, "print per-pixel values"),
    Flag(("-noprogress",), 0, _set(progress=False), G_MISC, "no progress meter"),
    Flag(("-progress",), 0, _set(progress=True), G_MISC, "progress meter"),
    Flag(("-interpolate",), 0, _set(interpolate=True), G_XTAL, "tricubic interpolation of F (default: if N <= 2)"),
    Flag(("-nointerpolate",), 0, _set(interpolate=False), G_XTAL, "nearest-neighbour F"),
    Flag(("-round_xtal",), 0, _set(shape="ROUND"), G_XTAL, "ellipsoidal crystal"),
    Flag(("-square_xtal",), 0, _set(shape="SQUARE"), G_XTAL, "parallelepiped crystal (default)"),
    Flag(("-gauss_xtal",), 0, _set(shape="GAUSS"), G_XTAL, "Gaussian spots"),
    Flag(("-tophat_spots", "-binary_spots"), 0, _set(shape="TOPHAT"), G_XTAL, "flat-top spots"),
    Flag(("-fudge",), 1, _scalar("fudge", _finite), G_XTAL, "spot-shape scale for round/gauss/tophat (default 1)", "X"),
    Flag(("-printout_pixel",), 2, _printout_pixel, G_MISC, "print values of this pixel only", "F S"),
    Flag(("-trace_pixel", "-dump_pixel"), 2, _trace_pixel, G_MISC,
         "print every intermediate quantity of this pixel (slow, fast) as TRACE_PY lines, "
         "tag for tag like nanoBragg's instrumented build (see nbxp-trace-diff)", "S F",
         match=lambda t: "-trace_pixel" in t or "-dump_pixel" in t),
    Flag(("-seed",), 1, _seed("seed"), G_OUT, "noise seed (default: time)", "N"),
    Flag(("-mosaic_seed",), 1, _seed("mosaic_seed"), G_XTAL, "mosaic-domain seed (default 12345678)", "N"),
    Flag(("-misset_seed",), 1, _seed("misset_seed"), G_XTAL, "seed for -misset random", "N"),
    Flag(("-water",), 1, _scalar("water_size", _finite, 1e-6), G_SAMP, "water background thickness (um)", "UM"),
]

def _threads(s, v, flag=None):
    n = _int(flag, v[0])
    if n < 1:
        raise UsageError(f"{flag}: expected a positive number of threads, got {v[0]!r}")
    s.threads = n


def _dtype(s, v, flag=None):
    if v[0] not in ("float32", "float64"):
        raise UsageError(f"{flag}: expected float32 or float64, got {v[0]!r}")
    s.dtype = v[0]


def _backend(s, v, flag=None):
    if v[0] not in ("auto", "numpy", "cpu", "cupy"):
        raise UsageError(f"{flag}: expected auto, cpu, numpy or cupy, got {v[0]!r}")
    s.backend = v[0]


def _tile_mb(s, v, flag=None):
    s.tile_mb = _positive(flag, v[0])


def _count(attr):
    def act(s, v, flag=None):
        n = _int(flag, v[0])
        if n < 1:
            raise UsageError(f"{flag}: expected a positive number of frames, got {v[0]!r}")
        setattr(s, attr, n)
    return act


def _workers(s, v, flag=None):
    n = _int(flag, v[0])
    if n < 1:
        raise UsageError(f"{flag}: expected a positive number of worker processes, got {v[0]!r}")
    # a local cluster's workers share this machine's cores (workers x threads = cores): more
    # processes than cores only compete for them, and an absurd count would fork without end
    from .engine import default_threads
    most = max(2, default_threads())
    if n > most:
        raise UsageError(f"{flag}: expected at most {most} local worker processes (this machine's cores), got "
                         f"{v[0]!r}; use --scheduler to run on a larger cluster")
    s.workers = n


def _orientation_seed(s, v, flag=None):
    n = _int(flag, v[0])
    if n < 0:
        raise UsageError(f"{flag}: expected a non-negative integer, got {v[0]!r}")
    s.orientation_seed = n


#: nbxp's own options (double dash, matched exactly; nanoBragg has none of these)
NBXP_FLAGS: list[Flag] = [
    Flag(("--threads",), 1, _threads, "nbxp", "worker threads for the CPU engine (default: all cores)", "N",
         match=_exact("--threads")),
    Flag(("--dtype",), 1, _dtype, "nbxp",
         "engine precision: float64 (default, nanoBragg's) or float32 (faster, correlation >= 0.9999)",
         "float32|float64", match=_exact("--dtype")),
    Flag(("--backend",), 1, _backend, "nbxp",
         "renderer: auto (default: CuPy when a usable GPU is present, else the compiled CPU kernel "
         "when a C++ compiler is, else NumPy), cpu (the compiled CPU kernel), numpy (the array-API "
         "engine) or cupy", "auto|cpu|numpy|cupy", match=_exact("--backend")),
    Flag(("--fast-math",), 0, _set(fast_math=True), "nbxp",
         "CPU kernel built with fused multiply-adds (-ffp-contract=fast): faster, float64 images "
         "within ~1e-12 of the maximum instead of to rounding", match=_exact("--fast-math")),
    Flag(("--tile-mb",), 1, _tile_mb, "nbxp",
         "memory for one tile's temporaries in the CPU engine, MiB (default 20); one tile per "
         "thread is in flight, so the engine's working memory is about threads x this whatever "
         "the detector size", "MB", match=_exact("--tile-mb")),
    Flag(("--frames",), 1, _count("frames"), "nbxp",
         "rotation scan of N frames: frame i (from 0) covers -phi + i*osc to -phi + (i+1)*osc with the same "
         "-phisteps (the image of a single run at that -phi); outputs are named per frame (see --stills)", "N",
         match=_exact("--frames")),
    Flag(("--stills",), 1, _count("stills"), "nbxp",
         "N still shots (no oscillation), each in a uniformly random orientation on top of -cell/-mat/-misset/-phi. "
         "Series outputs: .img/.smv SMV, .bin float, .cbf miniCBF per frame, .h5/.nxs one NeXus file; a run of # "
         "in a per-frame name is the frame number (1-based), else _##### is added before the extension; "
         "frame i's noise seed is -seed + i", "N", match=_exact("--stills")),
    Flag(("--orientation-seed",), 1, _orientation_seed, "nbxp",
         "seed of the still shots' random orientations (default: the noise seed)", "S",
         match=_exact("--orientation-seed")),
    Flag(("--geometry",), 1, _file("geometry"), "nbxp",
         "the detector from a geometry file: a DIALS experiment list or detector (.expt/.json, any "
         "panel hierarchy) or a CrystFEL .geom; its beam direction, wavelength and spindle are used "
         "unless -beam_vector, -lambda/-energy or -spindle_axis are given; flags that place the "
         "detector are refused with it (see docs/panels.md)", "FILE", match=_exact("--geometry")),
    Flag(("--truth",), 1, _file("truth"), "nbxp",
         "write what was simulated as a DIALS experiment list (.expt) for comparison with processing results",
         "FILE", match=_exact("--truth")),
    # distribution (nbxp.distributed, the nbxp[dask] extra)
    Flag(("--workers",), 1, _workers, "nbxp",
         "render the series' frames on a local Dask cluster of N worker processes (engine threads per worker: "
         "cores / N unless --threads); the serial run's images and files (NeXus: one data file per frame "
         "under a master with a virtual dataset)", "N", match=_exact("--workers")),
    Flag(("--scheduler",), 1, _file("scheduler"), "nbxp",
         "render the series' frames on an existing Dask cluster: its scheduler address (tcp://host:8786) or "
         "scheduler file (dask scheduler --scheduler-file)", "ADDRESS|FILE", match=_exact("--scheduler")),
    Flag(("--resume",), 0, _set(resume=True), "nbxp",
         "continue an interrupted series: frames whose files the manifest (NAME.manifest.jsonl beside the "
         "first output) lists with matching SHA-256 are skipped", match=_exact("--resume")),
]

_ALL_NAMES = sorted({n for f in FLAGS + NBXP_FLAGS for n in f.names})


@dataclass
class Parsed:
    config: SimConfig
    state: State


def _values_needed(flag: Flag, argv: list[str], i: int) -> int:
    if flag.nargs >= 0:
        return flag.nargs
    if flag.nargs == -2:  # -misset: 'random' or three angles
        return 1 if i + 1 < len(argv) and "rand" in argv[i + 1] else 3
    n = 0  # -cell: up to six numbers, stopping at the next flag
    while n < 6 and i + 1 + n < len(argv) and not argv[i + 1 + n].startswith("-"):
        n += 1
    if n == 0:
        raise UsageError(f"{argv[i]}: expected the unit cell 'a b c alpha beta gamma' (A, deg)")
    return n


def parse_args(argv: list[str], cwd: str = ".") -> Parsed:
    """Apply nanoBragg's flags in order and build the :class:`SimConfig`."""
    s = State()
    # headers first, mask then image, as nanoBragg reads them before any flag
    for tok_i, tok in enumerate(argv):
        if tok.startswith("-") and tok_i + 1 < len(argv):
            if "-img" in tok:
                s.imgfile = argv[tok_i + 1]
            if "-mask" in tok:
                s.maskfile = argv[tok_i + 1]
    mask = None
    if s.maskfile:
        mask = _apply_header(s, _at(cwd, s.maskfile), "-mask", flip_y=True)
    if s.imgfile:
        _apply_header(s, _at(cwd, s.imgfile), "-img", flip_y=False)

    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("-") or tok == "-":
            raise UsageError(f"unexpected argument {tok!r} (values follow their flag; see -h)")
        matched = []
        for f in (NBXP_FLAGS if tok.startswith("--") else FLAGS):
            if f.matches(tok):
                matched.append(f)
                if f.stop:
                    break
        if not matched:
            close = difflib.get_close_matches(tok, _ALL_NAMES, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unknown flag {tok}{hint}")
        need = max(_values_needed(f, argv, i) for f in matched)
        if len(argv) - (i + 1) < need:
            raise UsageError(f"{tok}: expected {need} value{'s' if need > 1 else ''} after it")
        vals = argv[i + 1:i + 1 + need]
        for f in matched:
            s.given.append((tok, f.names[0]))
            f.action(s, vals[:_values_needed(f, argv, i)], flag=tok)
            if f.action is _pix0:
                s.warnings.append(f"WARNING: {tok} has no effect (as in nanoBragg): the detector origin comes from "
                                  "-Xbeam/-Ybeam, -Xclose/-Yclose, -ORGX/-ORGY and -distance/-close_distance")
        i += 1 + need
    return Parsed(config=_finish(s, cwd, mask), state=s)


def _at(cwd: str, name: str) -> str:
    """``name`` relative to ``cwd`` (kept as the user wrote it when cwd is the current one)."""
    return name if cwd in ("", ".") or os.path.isabs(name) else os.path.join(cwd, name)


def _apply_header(s: State, path: str, flag: str, flip_y: bool):
    from .io.smv import header_value, read_smv
    head, data = read_smv(path, flag)
    h, w = data.shape
    s.fpixels, s.spixels = w, h

    def value(key, conv=_finite, si=lambda x: x):
        # header values obey the rules of the flags they stand for (a zero PIXEL_SIZE is as
        # unusable as -pixel 0), in SI units too; the message names the file and the key
        v = header_value(head, key)
        if v is None:
            return None
        where = f"{flag}: {path}: header {key}"
        x = si(conv(where, repr(v)))
        if not math.isfinite(x) or (conv is _positive and not x > 0):
            raise UsageError(f"{where}: {v!r} is out of range")
        return x

    v = value("PIXEL_SIZE", _positive, lambda x: x / 1000.0)
    if v is not None:
        s.pixel_size = v
    s.detsize_f, s.detsize_s = s.pixel_size * w, s.pixel_size * h
    for key, attr, scale, conv in (("DISTANCE", "distance", 1e-3, _positive),
                                   ("CLOSE_DISTANCE", "close_distance", 1e-3, _positive),
                                   ("WAVELENGTH", "wavelength", 1e-10, _positive), ("ORGX", "ORGX", 1.0, _finite),
                                   ("ORGY", "ORGY", 1.0, _finite), ("PHI", "phi0", 1 / RTD, _finite),
                                   ("OSC_RANGE", "osc", 1 / RTD, _finite)):
        v = value(key, conv, lambda x: x * scale)
        if v is not None:
            setattr(s, attr, v)
    v = value("BEAM_CENTER_X", si=lambda x: x / 1000.0)
    if v is not None:
        s.Xbeam = v
    v = value("BEAM_CENTER_Y", si=lambda x: x / 1000.0)
    if v is not None:
        s.Ybeam = (s.detsize_s - v) if flip_y else v
    # nanoBragg reads TWOTHETA from headers into a variable it never uses
    return data


def _finish(s: State, cwd: str, mask) -> SimConfig:
    from .io.fdump import read_fdump
    from .io.text import read_matrix, read_sources

    # detector size: pixel counts win over sizes
    if s.fpixels:
        s.detsize_f = s.pixel_size * s.fpixels
    if s.spixels:
        s.detsize_s = s.pixel_size * s.spixels
    from .resources import ceil_count
    fpixels = ceil_count(s.detsize_f / s.pixel_size - 0.5)
    spixels = ceil_count(s.detsize_s / s.pixel_size - 0.5)
    if fpixels < 1 or spixels < 1:
        raise UsageError(f"{s.size_flag}/-pixel: the detector has no pixels")
    if fpixels * spixels > 2**31 - 1:
        raise UsageError(f"{s.size_flag}/-pixel: {fpixels}x{spixels} pixels is too large a detector")

    fluence = s.fluence
    if s.flux != 0.0 and s.exposure > 0.0 and s.beamsize >= 0:
        fluence = s.flux * s.exposure / s.beamsize / s.beamsize
    sample = list(s.sample)
    if s.beamsize >= 0:
        if s.beamsize < sample[1]:
            s.warnings.append(f"WARNING: clipping sample ({sample[1]:g} m high) with beam ({s.beamsize:g} m)")
            sample[1] = s.beamsize
        if s.beamsize < sample[2]:
            s.warnings.append(f"WARNING: clipping sample ({sample[2]:g} m wide) with beam ({s.beamsize:g} m)")
            sample[2] = s.beamsize

    roi = None
    if s.roi is not None:
        xmin, xmax, ymin, ymax = s.roi
        roi = (0 if xmin < 0 else xmin, fpixels if xmax < 0 else xmax,
               0 if ymin < 0 else ymin, spixels if ymax < 0 else ymax)
        # limits beyond the detector select the same pixels as its edge (nanoBragg only
        # compares indices with them); clamped, they stay small integers for the arrays
        roi = (min(roi[0], fpixels), min(roi[1], fpixels), min(roi[2], spixels), min(roi[3], spixels))

    if mask is not None and s.geometry is None and mask.shape != (spixels, fpixels):
        raise UsageError(f"-mask: {s.maskfile} is {mask.shape[1]}x{mask.shape[0]} pixels but the detector is "
                         f"{fpixels}x{spixels}")

    grid = None
    if (s.hkl_column or s.hkl_block) and not s.hklfile:
        raise UsageError("-hkl_column/-hkl_block: they choose data in an -hkl file, and none is given")
    if s.hklfile and s.pdbfile:
        raise UsageError("-hkl and -pdb: give one source of structure factors, not both")
    if s.hklfile:
        grid = _read_hkl(s, cwd)
    elif s.pdbfile:
        pass  # computed once the detector and beam are known (they set the resolution)
    elif os.path.exists(_at(cwd, "Fdump.bin")):
        grid = read_fdump(_at(cwd, "Fdump.bin"))
    elif s.default_F == 0.0:
        raise UsageError("no structure factors: give -hkl FILE or -default_F F (no Fdump.bin here either)")
    amat = read_matrix(_at(cwd, s.matfile)) if s.matfile else None
    cell = None
    if s.cell is not None:
        c = (s.cell + [0.0] * 6)[:6]
        cell = (c[0] * 1e-10, c[1] * 1e-10, c[2] * 1e-10, c[3] / RTD, c[4] / RTD, c[5] / RTD)
    sources = read_sources(_at(cwd, s.sourcefile)) if s.sourcefile else None
    if s.stolfile and not os.path.isfile(_at(cwd, s.stolfile)):
        raise UsageError(f"-stol: cannot read {s.stolfile}")

    v = s.vectors
    det = DetectorConfig(
        fpixels=fpixels, spixels=spixels, pixel_size=s.pixel_size, detsize_f=s.detsize_f, detsize_s=s.detsize_s,
        distance=s.distance, close_distance=s.close_distance, convention=s.convention, pivot=s.pivot,
        Xbeam=s.Xbeam, Ybeam=s.Ybeam, Xclose=s.Xclose, Yclose=s.Yclose, ORGX=s.ORGX, ORGY=s.ORGY,
        rotx=s.rot[0], roty=s.rot[1], rotz=s.rot[2], twotheta=s.twotheta,
        fdet_vector=v.get("fdet"), sdet_vector=v.get("sdet"), odet_vector=v.get("odet"),
        twotheta_axis=v.get("twotheta_axis"), curved=s.curved, point_pixel=s.point_pixel,
        mu=s.mu, thickness=s.thickness, thicksteps=s.thicksteps, roi=roi, mask=mask,
    )
    beam = BeamConfig(
        wavelength=s.wavelength, beam_vector=v.get("beam"), polar_vector=v.get("polar"), kahn_factor=s.kahn,
        nopolar=s.nopolar, dispersion=s.dispersion, dispsteps=s.dispsteps, hdivrange=s.hdivrange,
        vdivrange=s.vdivrange, hdivstep=s.hdivstep, vdivstep=s.vdivstep, hdivsteps=s.hdivsteps,
        vdivsteps=s.vdivsteps, round_div=s.round_div, sources=sources, fluence=fluence, flux=s.flux,
        exposure=s.exposure, beamsize=s.beamsize,
    )
    if s.geometry is not None:
        det, beam, xtal_spindle = _apply_geometry(s, cwd, det, beam)
        v = dict(v, spindle=xtal_spindle)
    if s.pdbfile:
        grid = _model_grid(s, cwd, det, beam)
    if s.sf is not None and s.sf.cell is not None:
        cell = _sf_cell(s, cell, amat)
    xtal = CrystalConfig(
        cell=cell, amat=amat, misset=s.misset, misset_seed=s.misset_seed, Na=s.Na, Nb=s.Nb, Nc=s.Nc,
        size_a=sample[0], size_b=sample[1], size_c=sample[2], shape=s.shape, fudge=s.fudge,
        mosaic_spread=s.mosaic_spread, mosaic_domains=s.mosaic_domains, mosaic_seed=s.mosaic_seed,
        spindle_axis=v.get("spindle"), phi0=s.phi0, osc=s.osc, phistep=s.phistep, phisteps=s.phisteps,
    )
    from .crystal import check_crystal
    check_crystal(xtal, mat=f"-mat {s.matfile}")  # the set-up checks again, naming no file
    seed = s.seed if s.seed is not None else int(time.time())
    return SimConfig(detector=det, beam=beam, crystal=xtal, hkl=grid, default_F=s.default_F, seed=seed,
                     interpolate=s.interpolate, dmin=s.dmin, water_size=s.water_size, oversample=s.oversample,
                     oversample_omega=s.oversample_omega, oversample_polar=s.oversample_polar,
                     oversample_thick=s.oversample_thick)


#: flags that place or size the detector (or read it from an image header): a geometry
#: file gives all of that, so one of them with --geometry is an error naming both.  -mask
#: (its pixels, in the slab's shape; its header's geometry is not used) and -roi (in each
#: panel's own pixels) still apply
DETECTOR_PLACEMENT = ("-distance", "-close_distance", "-detpixels", "-detpixels_f", "-detpixels_s", "-detsize",
                      "-detsize_f", "-detsize_s", "-pixel", "-Xbeam", "-Ybeam", "-Xclose", "-Yclose", "-ORGX",
                      "-ORGY", "-pivot", "-twotheta", "-twotheta_axis", "-detector_rotx", "-detector_roty",
                      "-detector_rotz", "-fdet_vector", "-sdet_vector", "-odet_vector", "-pix0_vector",
                      "-curved_det", "-img")


def _given(s: State, *names) -> Optional[str]:
    """The last token that set one of the flags ``names`` (canonical spellings), or None."""
    hit = None
    for tok, name in s.given:
        if name in names:
            hit = tok
    return hit


def _apply_geometry(s: State, cwd: str, det, beam):
    """--geometry: the detector (and, unless flags set them, the beam direction, wavelength
    and spindle) from the file.  nbxp's lab frame stays the convention's (for CUSTOM, its
    default axes): the file's DIALS-frame vectors enter through the inverse of
    ``models.lab_to_dials`` of the convention's beam, spindle and fast axis, the rotation
    the writers describe the run with, so that NeXus/.expt outputs hold the file's geometry.
    Returns the new detector and beam configs and the spindle axis."""
    import dataclasses

    import numpy as np

    from .geometry import CONVENTION_AXES, convention_axes
    from .io.geometry import read_geometry
    from .models import lab_to_dials

    for tok, name in s.given:
        if name in DETECTOR_PLACEMENT:
            raise UsageError(f"{tok} and --geometry: {s.geometry} places the detector; give one or the other")
    named = dict(zip(("beam", "fdet", "sdet", "odet", "twotheta_axis", "polar", "spindle"),
                     CONVENTION_AXES[s.convention]))
    R = lab_to_dials(named["beam"], named["spindle"], named["fdet"])
    spec = read_geometry(_at(cwd, s.geometry), to_dials=R)
    lines = s.geometry_lines
    kinds = "CrystFEL" if s.geometry.lower().endswith(".geom") else "DIALS"
    lines.append(f"geometry: {s.geometry} ({kinds}): {len(spec.panels)} panel{'s' if len(spec.panels) > 1 else ''}, "
                 f"in the {'MOSFLM' if s.convention == 'CUSTOM' else s.convention} convention's lab frame")
    lines += [f"  {n}" for n in spec.notes]
    user = s.vectors
    axes = convention_axes(s.convention, user)  # the flags' own vectors (CUSTOM: the user's)
    vec = lambda a: " ".join(f"{x:g}" for x in a)  # noqa: E731
    flag_b = _given(s, "-beam_vector")
    if flag_b is not None or spec.beam is None:
        beam_vec = tuple(float(x) for x in axes["beam"])
        lines.append(f"  beam direction {vec(beam_vec)}: from {flag_b or 'the convention'}"
                     + (f" (the file says {vec(spec.beam)})" if spec.beam is not None else " (the file gives none)"))
    else:
        beam_vec = spec.beam
        lines.append(f"  beam direction {vec(beam_vec)}: from {s.geometry}")
    flag_l = _given(s, "-lambda", "-energy")
    wavelength = beam.wavelength
    if flag_l is None and spec.wavelength is not None:
        wavelength = spec.wavelength
        lines.append(f"  wavelength {wavelength * 1e10:g} A: from {s.geometry}")
    else:
        lines.append(f"  wavelength {wavelength * 1e10:g} A: from {flag_l or 'the default'}"
                     + (f" (the file says {spec.wavelength * 1e10:g} A)" if spec.wavelength is not None else ""))
    flag_sp = _given(s, "-spindle_axis")
    if flag_sp is None and spec.spindle is not None:
        spindle = spec.spindle
        lines.append(f"  spindle {vec(spindle)}: from {s.geometry}")
    else:
        spindle = tuple(float(x) for x in axes["spindle"])
        if spec.spindle is not None:
            lines.append(f"  spindle {vec(spindle)}: from {flag_sp} (the file says {vec(spec.spindle)})")
    lines.append("  polarization: from the flags (-polar, -polar_vector, -nopolar); a file's is not used")
    if s.maskfile:
        lines.append(f"  -mask {s.maskfile}: its pixels (the panels stacked along slow) are used, its header's "
                     "detector values are not")
    if spec.adu_per_photon is not None:
        lines.append(f"  {spec.adu_per_photon:g} ADU per photon in the file; nbxp's images count photons (-scale)")
    p0 = spec.panels[0]
    n0 = np.cross(p0.fast, p0.slow)
    dist = abs(float(np.dot(p0.origin, n0 / np.linalg.norm(n0))))
    # the convention's own axes stay for the flags' one-panel description; every vector the
    # run uses is given explicitly (CUSTOM), so the file's beam and spindle take effect
    det = dataclasses.replace(
        det, convention="CUSTOM", panels=spec.panels, fpixels=p0.fpixels, spixels=p0.spixels,
        pixel_size=p0.pixel_size, detsize_f=p0.fpixels * p0.pixel_size, detsize_s=p0.spixels * p0.pixel_size,
        distance=dist if dist > 0 else det.distance,
        fdet_vector=tuple(float(x) for x in axes["fdet"]), sdet_vector=tuple(float(x) for x in axes["sdet"]),
        odet_vector=tuple(float(x) for x in axes["odet"]), twotheta_axis=tuple(float(x) for x in axes["twotheta_axis"]))
    beam = dataclasses.replace(beam, wavelength=wavelength, beam_vector=tuple(float(x) for x in beam_vec),
                               polar_vector=tuple(float(x) for x in axes["polar"]))
    return det, beam, tuple(float(x) for x in spindle)


def _read_hkl(s: State, cwd: str):
    """The grid of -hkl: nanoBragg's text list read as nanoBragg reads it; MTZ and
    structure-factor mmCIF (recognised by content, gzip or not) expanded to P1 by
    :mod:`nbxp.structure_factors`."""
    from .io.hkl import read_hkl
    from .io.reflections import kind_of, read_bytes
    path = _at(cwd, s.hklfile)
    kind = "text"
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            head = fh.read(65536)
        kind = kind_of(read_bytes(path, "-hkl") if head[:2] == b"\x1f\x8b" else head)
    if kind == "text":
        if s.hkl_column or s.hkl_block:
            raise UsageError(f"-hkl_column/-hkl_block: {s.hklfile} is an 'h k l F' text list; it has no columns")
        return read_hkl(path, s.default_F)
    from .structure_factors import structure_factors
    s.sf = structure_factors(path, column=s.hkl_column, block=s.hkl_block, dmin=s.sf_dmin,
                             anomalous=s.anomalous, flag="-hkl")
    return s.sf.grid(s.default_F)


def _model_grid(s: State, cwd: str, det, beam):
    """F computed from -pdb, to -sf_dmin or to the detector's corner resolution."""
    from .experiment import corner_resolution
    from .structure_factors import structure_factors
    corner = None
    if s.sf_dmin is None:
        corner = corner_resolution(det, beam)
        if s.dmin > corner:
            corner = s.dmin  # nanoBragg's -dmin already skips everything beyond it
    s.sf = structure_factors(_at(cwd, s.pdbfile), dmin=s.sf_dmin, corner_d=corner,
                             wavelength=s.wavelength if s.fprime or s.anomalous else None,
                             fprime=s.fprime, anomalous=s.anomalous, solvent=s.solvent, flag="-pdb")
    if corner is not None:
        s.sf_lines.append(f"  -sf_dmin {s.sf.d_min * 1e10:.3g} A: the detector corner's {corner * 1e10:.3g} A "
                          "with a margin for index rounding and interpolation")
    return s.sf.grid(s.default_F)


def _sf_cell(s: State, cell, amat):
    """The crystal's cell when the structure factors bring one: theirs without -cell/-mat;
    with one given, a warning when the two disagree beyond 0.5% / 0.5 degree."""
    from .structure_factors import cell_warnings
    path = s.hklfile or s.pdbfile
    if cell is None and amat is None:
        s.sf_lines.append(f"  unit cell taken from {path} (no -cell or -mat given)")
        return s.sf.cell
    if cell is not None:
        a = cell[0]
        b, c = (cell[1] or a), (cell[2] or a)
        angles = tuple(x or math.pi / 2 for x in cell[3:6])
        s.warnings += cell_warnings(s.sf.cell, (a, b, c) + angles, path, "-cell")
    else:
        import numpy as np
        recip = np.asarray(amat, dtype=float).T * (1e-10 / s.wavelength)  # rows a*, b*, c* (1/A)
        real = np.linalg.inv(recip).T * 1e-10
        L = np.linalg.norm(real, axis=1)
        ang = [math.acos(float(real[j] @ real[k]) / L[j] / L[k]) for j, k in ((1, 2), (0, 2), (0, 1))]
        s.warnings += cell_warnings(s.sf.cell, tuple(L) + tuple(ang), path, "-mat")
    return cell


def get_parser() -> argparse.ArgumentParser:
    """An argparse description of every flag, grouped by topic (for -h and the man page).

    nbxp parses with nanoBragg's own rules (:func:`parse_args`); this parser documents them.
    """
    p = argparse.ArgumentParser(
        prog="nbxp", allow_abbrev=False, prefix_chars="-",
        description="Simulate nanocrystal diffraction images with nanoBragg's flags, units and outputs.",
        epilog="Units as in nanoBragg: mm, degrees, Angstrom, mrad, microns, eV. "
               "Example: nbxp -cell 100 100 100 90 90 90 -default_F 100 -N 5 -lambda 6.2 -distance 100",
    )
    groups = {}
    seen: set[str] = set()
    for f in FLAGS:
        names = [n for n in f.names if n not in seen]  # -width/-heigh serve two flags
        if not names:
            continue
        seen.update(names)
        g = groups.get(f.group) or groups.setdefault(f.group, p.add_argument_group(f.group))
        kw = {"help": f.help}
        mv = f.metavar.split() or ["V"]
        if f.nargs == 0:
            kw["action"] = "store_true"
        elif f.nargs > 0:
            kw["nargs"] = f.nargs
            kw["metavar"] = tuple(mv) if len(mv) == f.nargs and f.nargs > 1 else mv[0]
        else:
            kw["nargs"] = "+"
            kw["metavar"] = f.metavar
        g.add_argument(*names, dest=f.names[0].lstrip("-"), **kw)
    g = p.add_argument_group("nbxp options (not in nanoBragg)")
    for f in NBXP_FLAGS:
        if f.nargs == 0:  # a switch
            g.add_argument(*f.names, dest=f.names[0].lstrip("-"), action="store_true", help=f.help)
        else:
            g.add_argument(*f.names, dest=f.names[0].lstrip("-"), nargs=f.nargs, metavar=f.metavar, help=f.help)
    return p
