"""Simulation settings as plain dataclasses, in SI units (metres, radians, seconds).

These mirror what a nanoBragg command line can say, after unit conversion and nothing
else: quantities nanoBragg chooses automatically (beam centre, phi/divergence/dispersion/
thickness step counts, oversampling, interpolation, pivot) are ``None`` here and are decided
by :func:`nbxp.experiment.build_experiment`, exactly as nanoBragg decides them, so a library
user and the command line get the same defaults.  Conversions from nanoBragg's units (mm,
degrees, Angstrom, mrad, microns, percent) happen only in :mod:`nbxp.flags`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

Vector = Optional[tuple[float, float, float]]

CONVENTIONS = ("MOSFLM", "XDS", "DIALS", "ADXV", "DENZO", "CUSTOM")
PIVOTS = ("BEAM", "SAMPLE")
SHAPES = ("SQUARE", "ROUND", "GAUSS", "TOPHAT")

#: classical electron radius squared (m^2), the value nanoBragg uses
R_E_SQR = 7.94079248018965e-30
#: nanoBragg's default fluence (photons/m^2)
DEFAULT_FLUENCE = 125932015286227086360700780544.0
AVOGADRO = 6.02214179e23


@dataclass
class DetectorConfig:
    """Pixel array, its placement and its sensor.

    Beam-centre quantities follow nanoBragg: ``Xbeam``/``Ybeam`` (m) are the direct-beam
    position in the convention's own axes, ``Xclose``/``Yclose`` (m) the near point,
    ``ORGX``/``ORGY`` (pixels) the XDS origin.  ``pivot=None`` lets the convention decide.
    """

    fpixels: int = 1024
    spixels: int = 1024
    pixel_size: float = 1.0e-4
    #: physical sides (m) used for default beam centres; None = pixels x pixel_size
    detsize_f: Optional[float] = None
    detsize_s: Optional[float] = None
    distance: float = 0.1
    close_distance: Optional[float] = None
    convention: str = "MOSFLM"
    pivot: str = "BEAM"
    Xbeam: Optional[float] = None
    Ybeam: Optional[float] = None
    Xclose: Optional[float] = None
    Yclose: Optional[float] = None
    ORGX: Optional[float] = None
    ORGY: Optional[float] = None
    rotx: float = 0.0
    roty: float = 0.0
    rotz: float = 0.0
    twotheta: float = 0.0
    # CUSTOM-convention vectors (ignored by the named conventions, which set their own)
    fdet_vector: Vector = None
    sdet_vector: Vector = None
    odet_vector: Vector = None
    twotheta_axis: Vector = None
    curved: bool = False
    point_pixel: bool = False
    # sensor: attenuation coefficient mu (1/m), thickness (m), layers
    mu: Optional[float] = None
    thickness: float = 0.0
    thickstep: Optional[float] = None
    thicksteps: Optional[int] = None
    # region of interest, inclusive pixel bounds (fmin, fmax, smin, smax); None = whole
    roi: Optional[tuple[int, int, int, int]] = None
    #: optional (spixels, fpixels) array; pixels where it is 0 are not simulated
    mask: Optional[np.ndarray] = None
    #: a multi-panel detector (tuple of :class:`nbxp.panels.PanelSpec`, e.g. from
    #: ``--geometry``); None: the one panel the fields above describe (nanoBragg's detector)
    panels: Optional[tuple] = None


@dataclass
class BeamConfig:
    """Incident beam: wavelength, spectrum, divergence, polarization, fluence."""

    wavelength: float = 1.0e-10
    beam_vector: Vector = None
    polar_vector: Vector = None
    #: Kahn polarization factor (0 = unpolarized)
    kahn_factor: float = 0.0
    nopolar: bool = False
    #: relative spectral width (fraction, not percent)
    dispersion: float = 0.0
    dispsteps: Optional[int] = None
    hdivrange: Optional[float] = None
    vdivrange: Optional[float] = None
    hdivstep: Optional[float] = None
    vdivstep: Optional[float] = None
    hdivsteps: Optional[int] = None
    vdivsteps: Optional[int] = None
    round_div: bool = True
    source_distance: float = 10.0
    #: explicit sources, shape (n, 5): X, Y, Z (m, position), weight, wavelength (m);
    #: NaN entries take nanoBragg's defaults.  None = generate from divergence/dispersion.
    sources: Optional[np.ndarray] = None
    fluence: float = DEFAULT_FLUENCE
    flux: float = 0.0
    exposure: float = 1.0
    beamsize: float = 1.0e-4


@dataclass
class CrystalConfig:
    """Unit cell, orientation, size, shape, mosaicity and rotation."""

    #: a, b, c (m) and alpha, beta, gamma (rad); None when an A matrix is given
    cell: Optional[tuple[float, ...]] = None
    #: MOSFLM A matrix as written in a .mat file (reciprocal vectors times wavelength, 1/A)
    amat: Optional[np.ndarray] = None
    #: misset rotations about x, y, z (rad); "random" for a random orientation
    misset: Optional[tuple[float, float, float] | str] = None
    misset_seed: Optional[int] = None
    Na: float = 1.0
    Nb: float = 1.0
    Nc: float = 1.0
    #: crystal sizes (m); when > 0 they set Na/Nb/Nc from the cell
    size_a: float = 0.0
    size_b: float = 0.0
    size_c: float = 0.0
    shape: str = "SQUARE"
    fudge: float = 1.0
    mosaic_spread: Optional[float] = None
    mosaic_domains: Optional[int] = None
    #: seed as given to -mosaic_seed (nanoBragg negates it internally)
    mosaic_seed: int = 12345678
    spindle_axis: Vector = None
    phi0: float = 0.0
    osc: Optional[float] = None
    phistep: Optional[float] = None
    phisteps: Optional[int] = None


@dataclass
class HKLGrid:
    """Structure-factor amplitudes on a dense (h, k, l) grid.

    ``F[h - h_min, k - k_min, l - l_min]``; ``count`` is the number of reflections that were
    given (0 means the grid is empty and every lookup returns ``default_F``).
    """

    F: np.ndarray
    h_min: int
    k_min: int
    l_min: int
    count: int

    @property
    def maxima(self) -> tuple[int, int, int]:
        return tuple(m + n - 1 for m, n in zip((self.h_min, self.k_min, self.l_min), self.F.shape))


@dataclass
class SimConfig:
    """Everything that determines a float image."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    crystal: CrystalConfig = field(default_factory=CrystalConfig)
    hkl: Optional[HKLGrid] = None
    default_F: float = 0.0
    #: tricubic interpolation of F: None = nanoBragg's automatic choice
    interpolate: Optional[bool] = None
    dmin: float = 0.0
    #: seed of the noise image (nanoBragg: -seed, default from the clock); also the
    #: default seed of '-misset random'
    seed: int = 0
    #: water-droplet background size (m)
    water_size: float = 0.0
    oversample: Optional[int] = None
    oversample_omega: bool = False
    oversample_polar: bool = False
    oversample_thick: bool = False
