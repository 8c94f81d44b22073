"""From settings to a fully determined experiment.

:func:`build_experiment` makes every choice nanoBragg makes automatically (beam centre and
pivot from the convention, step counts, oversampling, interpolation, crystal size, mosaic
domains) and builds the arrays the engine needs in the requested namespace: detector frame,
sources, crystal orientations and the structure-factor grid.  It also returns the lines
nanoBragg would print about those choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import crystal as xtal
from .config import AVOGADRO, R_E_SQR, SimConfig
from .errors import ConfigError
from .geometry import DetectorGeometry, build_detector, convention_axes
from .physics import StructureFactors
from .resources import ceil_count, check_fits, setup_parts
from .sources import auto_steps, build_sources, divergence_sampling

WATER_F = 2.57
WATER_MW = 18.0


@dataclass
class Experiment:
    """Everything the engine needs, in one namespace and dtype (SI units)."""

    geom: DetectorGeometry
    incident: object  # (S, 3) unit vectors along the beam
    lambdas: object  # (S,) m
    orient: object  # (Nrot, 3, 3) cell vectors a, b, c (m) per phi step and domain
    orient_rows: object  # (3*Nrot, 3) the same, row j*Nrot + r = vector j of orientation r
    recip: object  # (3, 3) reciprocal cell (1/A), for spot shapes
    N: tuple[float, float, float]
    shape: str
    fudge: float
    F: StructureFactors
    interpolate: bool
    polar_axis: object
    kahn: float
    nopolar: bool
    oversample: int
    oversample_omega: bool
    oversample_polar: bool
    oversample_thick: bool
    thicksteps: int
    thickstep: float
    thickness: float
    mu: float
    dmin: float
    fluence: float
    I_bg: float
    steps: int
    roi: tuple[int, int, int, int]
    mask: object  # host bool array (spixels, fpixels) of pixels to simulate, or None
    sampling: xtal.RotationSampling
    wavelength: float
    source_table: np.ndarray
    cell_params: tuple
    notes: list = field(default_factory=list)
    xp: object = None
    dtype: object = None
    # the crystal before any phi or mosaic rotation, and the spindle: a series re-orients the
    # crystal per frame from these (nbxp.series), and file formats describe them (nbxp.models)
    cell_real: object = None  # (3, 3) float64 cell vectors a, b, c (m), after -cell/-mat/-misset
    spindle_unit: object = None  # host float64 (3,) unit spindle axis
    mosaic_umats: object = None  # host (domains, 3, 3) mosaic rotations, or None without a spread
    #: set by the differentiable set-up (nbxp.params): arrays may carry autograd graphs, so
    #: the engine avoids in-place updates of values autograd saves
    differentiable: bool = False


def auto_interpolate(cfg: SimConfig, notes: list) -> bool:
    """nanoBragg's default: interpolate F when the crystal is at most 2 cells along an axis
    (decided from -N/-Na/-Nb/-Nc before crystal sizes are applied, as nanoBragg does)."""
    if cfg.interpolate is not None:
        return bool(cfg.interpolate)
    c = cfg.crystal
    if c.Na <= 2 or c.Nb <= 2 or c.Nc <= 2:
        notes.append("auto-selected tricubic interpolation of structure factors")
        return True
    notes.append("auto-selected no interpolation")
    return False


def build_experiment(cfg: SimConfig, *, xp, dtype) -> Experiment:
    notes: list[str] = []
    det, beam, cr = cfg.detector, cfg.beam, cfg.crystal
    if cr.cell is None and cr.amat is None:
        raise ConfigError("the crystal needs a unit cell (-cell) or an A matrix (-mat)")
    axes = convention_axes(det.convention, {
        "beam": beam.beam_vector, "fdet": det.fdet_vector, "sdet": det.sdet_vector,
        "odet": det.odet_vector, "twotheta_axis": det.twotheta_axis,
        "polar": beam.polar_vector, "spindle": cr.spindle_axis,
    })
    geom = build_detector(det, axes, xp=xp, dtype=dtype, notes=notes)
    unit = lambda v: v / (np.linalg.norm(v) or 1.0)  # noqa: E731
    beam_u, polar_u, spindle_u = unit(axes["beam"]), unit(axes["polar"]), unit(axes["spindle"])
    interpolate = auto_interpolate(cfg, notes)

    misset = cr.misset
    if misset == "random":
        seed = cr.misset_seed if cr.misset_seed is not None else cfg.seed
        misset = xtal.random_misset(seed)
        notes.append("random orientation misset angles: " + " ".join(f"{math.degrees(a):f}" for a in misset) + " deg")
    vecs = xtal.cell_vectors(cr, beam.wavelength, notes, xp=xp, misset=misset)
    cell_params = xtal.cell_parameters(vecs, xp=xp)
    N = xtal.crystal_size(cr, vecs.real, xp=xp)

    # oversampling: enough sub-pixels to resolve the crystal's transform across a pixel
    size_max = max(float(xtal.norm(vecs.real[i, :], xp=xp)) * 1e-10 * N[i] for i in range(3))
    recip_pixel = beam.wavelength * geom.distance / geom.pixel_size
    # a vanishing reciprocal pixel (a subnormal distance) asks for unbounded oversampling,
    # which the memory estimate below refuses (a negative one, a detector behind the
    # sample, gives 1 as in nanoBragg)
    recommended = ceil_count(3.0 * size_max / recip_pixel) if recip_pixel != 0 else 2**62
    recommended = max(recommended, 1)
    oversample = cfg.oversample if cfg.oversample is not None and cfg.oversample > 0 else 0
    if oversample <= 0:
        oversample = recommended
        notes.append(f"auto-selected {oversample}-fold oversampling")
    if oversample < recommended:
        notes.append(f"WARNING: maximum dimension of sample is {size_max * 1e10:g} A\n"
                     f"         but reciprocal pixel size is {recip_pixel * 1e10:g} A\n"
                     "         intensity may vary significantly across a pixel!\n"
                     f"         recommend -oversample {recommended} to work around this")

    # structure factors
    grid = cfg.hkl
    if grid is None or grid.count == 0:
        interpolate = False
        Fs = StructureFactors(xp.zeros((1,), dtype=dtype), (1, 1, 1), (0, 0, 0), 0, cfg.default_F, xp=xp)
    else:
        Fs = StructureFactors(xp.asarray(np.ascontiguousarray(grid.F).reshape(-1), dtype=dtype),
                              grid.F.shape, (grid.h_min, grid.k_min, grid.l_min), grid.count,
                              cfg.default_F, xp=xp)

    # sensor layers
    thick, step, steps_t = auto_steps(det.thickness, det.thickstep, det.thicksteps, thick_style=True) \
        if det.thickness >= 0 else (0.0, 0.0, 1)
    mu = -1.0 if det.mu is None else det.mu
    if det.thickness > 0.0 and mu < 0.0:
        mu = 1.0 / det.thickness
        notes.append(f"WARNING: setting detector attenuation depth to {mu:g} m")

    sampling = xtal.rotation_sampling(cr, notes)
    # every count is known now: refuse a run that cannot fit before building its arrays
    if beam.sources is not None:
        n_src, src_flags = len(beam.sources), "-sourcefile"
    else:
        ds = divergence_sampling(beam)
        n_src, src_flags = ds.hdivsteps * ds.vdivsteps * ds.dispsteps, "-divsteps/-hdivsteps/-vdivsteps/-dispsteps"
    check_fits(setup_parts(
        pixels=geom.fpixels * geom.spixels, phisteps=sampling.phisteps, domains=sampling.mosaic_domains,
        sources=n_src, thicksteps=steps_t, oversample=oversample, itemsize=8 if dtype == xp.float64 else 4,
        interpolate=interpolate, grid_points=0 if grid is None else grid.F.size, source_flags=src_flags,
        tile=not getattr(xp, "__name__", "").endswith("cupy")))
    spindle = xp.asarray(spindle_u, dtype=dtype)
    umats = xtal.mosaic_matrices(sampling, cr.mosaic_seed) if sampling.mosaic_spread > 0.0 else None
    orient = xtal.orientations(vecs.real * 1e-10, spindle, sampling, cr.mosaic_seed, xp=xp, dtype=dtype,
                               umats=umats)

    incident, lambdas, table, _ = build_sources(beam, beam_u, polar_u, xp=xp, dtype=dtype)
    n_src = table.shape[0]
    if n_src == 0:  # nanoBragg would divide by zero sub-paths and write NaN images
        raise ConfigError("-hdivsteps/-vdivsteps/-divsteps: the divergence grid trimmed to an ellipse keeps no "
                          "source (give the divergence ranges, more steps, or -square_div)")
    steps = n_src * sampling.mosaic_domains * sampling.phisteps * oversample * oversample

    try:
        cube = cfg.water_size ** 3
    except OverflowError:  # float ** raises where * gives inf; the image then says so
        cube = math.copysign(math.inf, cfg.water_size)
    I_bg = WATER_F ** 2 * R_E_SQR * beam.fluence * cube * 1e6 * AVOGADRO / WATER_MW

    roi = det.roi if det.roi is not None else (0, geom.fpixels, 0, geom.spixels)
    mask = None
    if det.mask is not None:
        mask = np.asarray(det.mask) != 0

    return Experiment(
        geom=geom, incident=incident, lambdas=lambdas, orient=orient,
        orient_rows=xp.reshape(xp.permute_dims(orient, (1, 0, 2)), (-1, 3)),
        recip=xp.asarray(vecs.reciprocal, dtype=dtype), N=N, shape=cr.shape, fudge=cr.fudge,
        F=Fs, interpolate=interpolate, polar_axis=xp.asarray(polar_u, dtype=dtype),
        kahn=beam.kahn_factor, nopolar=beam.nopolar, oversample=oversample,
        oversample_omega=cfg.oversample_omega, oversample_polar=cfg.oversample_polar,
        oversample_thick=cfg.oversample_thick, thicksteps=steps_t, thickstep=step, thickness=thick,
        mu=mu, dmin=cfg.dmin, fluence=beam.fluence, I_bg=I_bg, steps=steps, roi=roi, mask=mask,
        sampling=sampling, wavelength=beam.wavelength, source_table=table, cell_params=cell_params,
        notes=notes, xp=xp, dtype=dtype, cell_real=vecs.real * 1e-10,
        spindle_unit=np.asarray(spindle_u, dtype=np.float64), mosaic_umats=umats,
    )


def corner_resolution(det, beam) -> float:
    """The smallest d-spacing (m) the detector records: over its four corner pixels and
    every source (direction and wavelength), d = lambda / |d_hat - i_hat|, the largest
    scattering vector.  The scattering angle from a fixed beam is quasi-convex on a plane,
    so the corners bound the whole detector.  Used for a model's default -sf_dmin."""
    from .api import resolve_namespace
    from .geometry import pixel_positions
    xp = resolve_namespace(np)
    axes = convention_axes(det.convention, {
        "beam": beam.beam_vector, "fdet": det.fdet_vector, "sdet": det.sdet_vector,
        "odet": det.odet_vector, "twotheta_axis": det.twotheta_axis, "polar": beam.polar_vector})
    geom = build_detector(det, axes, xp=xp, dtype=xp.float64, notes=[])
    unit = lambda v: v / (np.linalg.norm(v) or 1.0)  # noqa: E731
    incident, lambdas, _, _ = build_sources(beam, unit(axes["beam"]), unit(axes["polar"]), xp=xp, dtype=xp.float64)
    f1, s1 = geom.fpixels - 1, geom.spixels - 1
    pos, _, _ = pixel_positions(geom, np.array([0, f1, 0, f1]), np.array([0, 0, s1, s1]), 1, np.zeros(1), xp=xp)
    pos = np.asarray(pos).reshape(3, -1).T
    out = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    q = np.linalg.norm(out[None, :, :] - np.asarray(incident)[:, None, :], axis=2) / np.asarray(lambdas)[:, None]
    return float(1.0 / q.max())
