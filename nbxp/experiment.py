"""From settings to a fully determined experiment.

:func:`build_experiment` makes every choice nanoBragg makes automatically (beam centre and
pivot from the convention, step counts, oversampling, interpolation, crystal size, mosaic
domains) and builds the arrays the engine needs in the requested namespace: detector frame,
sources, crystal orientations and the structure-factor grid.  It also returns the lines
nanoBragg would print about those choices.
"""

from __future__ import annotations

import dataclasses
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
    # a multi-panel detector (cfg.detector.panels; nbxp.panels): None for nanoBragg's one
    # panel, which is `geom` with the sensor and mask above.  Otherwise one entry per panel,
    # in order: its geometry (geom is the first), its sensor and its mask (see panel_view)
    panel_geometries: object = None  # list[DetectorGeometry] or None
    panel_specs: object = None  # tuple[PanelSpec] or None
    panel_sensors: object = None  # list[PanelSensor] or None
    panel_masks: object = None  # list of host bool (spixels_p, fpixels_p) (True: simulate) or None entries
    #: set by the differentiable set-up (nbxp.params): arrays may carry autograd graphs, so
    #: the engine avoids in-place updates of values autograd saves
    differentiable: bool = False

    @property
    def multi_panel(self) -> bool:
        """Whether the detector is a list of panels (cfg.detector.panels given)."""
        return self.panel_geometries is not None

    @property
    def panels(self) -> list:
        """The detector's panels (DetectorGeometry each): ``[geom]`` for nanoBragg's one panel."""
        return [self.geom] if self.panel_geometries is None else list(self.panel_geometries)

    @property
    def panel_offsets(self) -> np.ndarray:
        """Host int64 (npanels + 1,): where each panel starts in the global pixel index (the
        panels concatenated in order, each row-major: slow * fpixels + fast); the last entry
        is the total number of pixels."""
        return np.concatenate([[0], np.cumsum([g.fpixels * g.spixels for g in self.panels])]).astype(np.int64)

    def panel_view(self, p: int) -> "Experiment":
        """The one-panel experiment of panel ``p``: its geometry, sensor layers and mask in
        place of the detector's, everything else shared.  Rendering it gives image ``p`` of
        the multi-panel render (the engine renders the panels through these views, and headers
        and statistics of one panel can use it as an experiment of their own).  For a
        one-panel experiment, the experiment itself."""
        if self.panel_geometries is None:
            if p != 0:
                raise IndexError(f"panel {p} of a one-panel detector")
            return self
        sen = self.panel_sensors[p]
        return dataclasses.replace(
            self, geom=self.panel_geometries[p], thicksteps=sen.thicksteps, thickstep=sen.thickstep,
            thickness=sen.thickness, mu=sen.mu, mask=self.panel_masks[p], panel_geometries=None,
            panel_specs=None, panel_sensors=None, panel_masks=None)


@dataclass(frozen=True)
class PanelSensor:
    """One panel's sensor layers: thickness (m), layers and their depth step (m), mu (1/m)."""

    thicksteps: int
    thickstep: float
    thickness: float
    mu: float


def sensor_layers(thickness: float, thickstep, thicksteps, mu, notes: list) -> PanelSensor:
    """nanoBragg's sensor set-up for -detector_thick, -detector_thickstep(s), -detector_abs
    (the run's detector and each panel's): layers from the thickness, and mu defaulting to
    1/thickness for a thick sensor given no attenuation."""
    thick, step, steps_t = auto_steps(thickness, thickstep, thicksteps, thick_style=True) \
        if thickness >= 0 else (0.0, 0.0, 1)
    mu = -1.0 if mu is None else mu
    if thickness > 0.0 and mu < 0.0:
        mu = 1.0 / thickness
        notes.append(f"WARNING: setting detector attenuation depth to {mu:g} m")
    return PanelSensor(int(steps_t), float(step), float(thick), float(mu))


def build_panels(cfg: SimConfig, beam_unit, *, xp, dtype, notes: list):
    """The geometries, sensors and masks of a multi-panel detector (cfg.detector.panels).

    A panel's thickness/mu override -detector_thick/-detector_abs for it; its mask and
    -mask (which must then have the shape of the panels stacked along slow, the raw-float
    slab) exclude pixels.  Refuses, naming the flag, what panels do not support."""
    from .geometry import panel_geometry
    det = cfg.detector
    specs = tuple(det.panels)
    if not specs:
        raise ConfigError("the detector's panel list is empty (a geometry file with no panels?)")
    if det.curved:
        raise ConfigError("-curved_det: a multi-panel detector is a set of flat panels (no curved detector)")
    for i, s in enumerate(specs):
        if int(s.fpixels) < 1 or int(s.spixels) < 1 or not float(s.pixel_size) > 0.0:
            raise ConfigError(f"panel {i} ({s.name}): needs fpixels, spixels >= 1 and a pixel size > 0, "
                              f"got {s.fpixels}x{s.spixels}, {s.pixel_size} m")
    for i, s in enumerate(specs):
        f, sl, o = (np.asarray(v, dtype=np.float64) for v in (s.fast, s.slow, s.origin))
        if not (np.isfinite(f).all() and np.isfinite(sl).all() and np.isfinite(o).all()):
            raise ConfigError(f"panel {i} ({s.name}): origin and axes must be finite")
        n = np.cross(f, sl)
        if not np.linalg.norm(n) > 1e-9 * (np.linalg.norm(f) * np.linalg.norm(sl)):
            raise ConfigError(f"panel {i} ({s.name}): its fast and slow axes are zero or parallel")
        if not abs(float(o @ n)) > 1e-9 * np.linalg.norm(n):
            raise ConfigError(f"panel {i} ({s.name}): its plane passes through the sample (no solid angle)")
    geoms = [panel_geometry(s, det, beam_unit, xp=xp, dtype=dtype) for s in specs]
    sensors, seen = [], {}
    for s in specs:
        key = (det.thickness if s.thickness is None else float(s.thickness), det.mu if s.mu is None else float(s.mu))
        if key not in seen:  # one warning per distinct sensor (the run's own is warned of already)
            seen[key] = sensor_layers(key[0], det.thickstep, det.thicksteps, key[1],
                                      [] if key == (det.thickness, det.mu) else notes)
        sensors.append(seen[key])
    slab = None
    if det.mask is not None:
        widths = {int(s.fpixels) for s in specs}
        shape = (sum(int(s.spixels) for s in specs), int(specs[0].fpixels))
        m = np.asarray(det.mask)
        if len(widths) != 1 or m.shape != shape:
            raise ConfigError(f"-mask: with a multi-panel detector the mask is the panels stacked along slow "
                              f"({'x'.join(map(str, shape[::-1])) if len(widths) == 1 else 'impossible: panel widths differ'}),"
                              f" got {'x'.join(map(str, m.shape[::-1]))}")
        slab = m != 0
    masks, row = [], 0
    for s in specs:
        m = None if s.mask is None else np.asarray(s.mask, dtype=bool)
        if m is not None and m.shape != (int(s.spixels), int(s.fpixels)):
            raise ConfigError(f"panel {s.name}: mask of shape {m.shape}, expected ({s.spixels}, {s.fpixels})")
        if slab is not None:
            part = slab[row:row + int(s.spixels)]
            m = part if m is None else (m & part)
        row += int(s.spixels)
        masks.append(None if m is None else np.ascontiguousarray(m))
    return geoms, specs, sensors, masks


def panel_reach(g) -> float:
    """The distance (m) that sets a panel's reciprocal pixel for auto-oversampling: along the
    beam where the beam meets the panel's plane (nanoBragg's -distance), else the plane's
    normal distance."""
    return g.distance if math.isfinite(g.distance) and g.distance > 0.0 else abs(g.close_distance)


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
    panel_geoms = panel_specs = panel_sensors = panel_masks = None
    if det.panels is not None:  # a multi-panel detector replaces the flags' one panel
        panel_geoms, panel_specs, panel_sensors, panel_masks = build_panels(cfg, axes["beam"], xp=xp, dtype=dtype,
                                                                           notes=notes)
        geom = panel_geoms[0]
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
    if panel_geoms is not None:  # the panel that needs the most sub-pixels sets it
        recip_pixel = min(beam.wavelength * panel_reach(g) / g.pixel_size for g in panel_geoms)
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

    # sensor layers (the same rule gives each panel's, build_panels)
    sensor = sensor_layers(det.thickness, det.thickstep, det.thicksteps, det.mu, notes)
    thick, step, steps_t, mu = sensor.thickness, sensor.thickstep, sensor.thicksteps, sensor.mu

    sampling = xtal.rotation_sampling(cr, notes)
    # every count is known now: refuse a run that cannot fit before building its arrays
    if beam.sources is not None:
        n_src, src_flags = len(beam.sources), "-sourcefile"
    else:
        ds = divergence_sampling(beam)
        n_src, src_flags = ds.hdivsteps * ds.vdivsteps * ds.dispsteps, "-divsteps/-hdivsteps/-vdivsteps/-dispsteps"
    npix, max_layers = geom.fpixels * geom.spixels, steps_t
    if panel_geoms is not None:
        npix = sum(g.fpixels * g.spixels for g in panel_geoms)
        max_layers = max(p.thicksteps for p in panel_sensors)
    check_fits(setup_parts(
        pixels=npix, phisteps=sampling.phisteps, domains=sampling.mosaic_domains,
        sources=n_src, thicksteps=max_layers, oversample=oversample, itemsize=8 if dtype == xp.float64 else 4,
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
    if panel_geoms is not None and det.roi is None:  # -roi is in each panel's own pixels
        roi = (0, max(g.fpixels for g in panel_geoms), 0, max(g.spixels for g in panel_geoms))
    mask = None
    if det.mask is not None and panel_geoms is None:
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
        panel_geometries=panel_geoms, panel_specs=panel_specs, panel_sensors=panel_sensors, panel_masks=panel_masks,
    )


def corner_resolution(det, beam) -> float:
    """The smallest d-spacing (m) the detector records: over its four corner pixels and
    every source (direction and wavelength), d = lambda / |d_hat - i_hat|, the largest
    scattering vector.  The scattering angle from a fixed beam is quasi-convex on a plane,
    so the corners bound the whole detector (of a multi-panel detector: every panel's
    corners).  Used for a model's default -sf_dmin."""
    from .api import resolve_namespace
    from .geometry import pixel_positions
    xp = resolve_namespace(np)
    axes = convention_axes(det.convention, {
        "beam": beam.beam_vector, "fdet": det.fdet_vector, "sdet": det.sdet_vector,
        "odet": det.odet_vector, "twotheta_axis": det.twotheta_axis, "polar": beam.polar_vector})
    geoms = [build_detector(det, axes, xp=xp, dtype=xp.float64, notes=[])]
    if det.panels is not None:
        from .geometry import panel_geometry
        geoms = [panel_geometry(p, det, axes["beam"], xp=xp, dtype=xp.float64) for p in det.panels]
    unit = lambda v: v / (np.linalg.norm(v) or 1.0)  # noqa: E731
    incident, lambdas, _, _ = build_sources(beam, unit(axes["beam"]), unit(axes["polar"]), xp=xp, dtype=xp.float64)
    corners = []
    for geom in geoms:
        f1, s1 = geom.fpixels - 1, geom.spixels - 1
        pos, _, _ = pixel_positions(geom, np.array([0, f1, 0, f1]), np.array([0, 0, s1, s1]), 1, np.zeros(1), xp=xp)
        corners.append(np.asarray(pos).reshape(3, -1).T)
    pos = np.concatenate(corners)
    out = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    q = np.linalg.norm(out[None, :, :] - np.asarray(incident)[:, None, :], axis=2) / np.asarray(lambdas)[:, None]
    return float(1.0 / q.max())
