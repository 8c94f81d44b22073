"""What was simulated, described as DIALS describes an experiment (dxtbx-like plain models).

This module is the one place where nbxp's laboratory frame (nanoBragg's) is converted to the
frame DIALS works in; the CBF, NeXus and ``.expt`` writers all describe the experiment through
:func:`describe`.

**DIALS' frame** (dxtbx's, the imgCIF frame): the beam travels along -z (dxtbx stores the
*sample-to-source* direction, +z), x lies along the principal goniometer axis, y completes a
right-handed set.  nanoBragg's frame depends on the convention (MOSFLM: beam along +x,
spindle +z; XDS: beam +z, spindle +x; custom vectors anything), so no mapping is hard-coded:
:func:`lab_to_dials` builds the proper rotation from the vectors that were simulated,

    z_D = -beam,   x_D = spindle with its beam component removed, normalised,   y_D = z_D x x_D,

and every vector (detector axes and origin, spindle, polarization, crystal) goes through that
one rotation.  For the MOSFLM convention it reduces to nanoBragg's own ``DIALS_ORIGIN``
mapping (x_D, y_D, z_D) = (z, y, -x).  A spindle along the beam (or zero) leaves x_D free;
the detector's fast axis takes its place.  Rotations are right-handed in both frames (nbxp's
phi rotation, :func:`nbxp.vectors.rotate_axis`, and dxtbx's goniometer), so the spindle
keeps its sense: a reversed axis would make DIALS' indexing fail.

**NeXus/NXmx** uses the McStas frame (z along the beam, y up): its vectors are
``NEXUS_FROM_DIALS @ v`` (dxtbx's ``MCSTAS_TO_IMGCIF``, a 180 degree turn about y).

Units are dxtbx's, since these models are what files hold: lengths in mm, wavelength and cell
in A, angles in degrees, ``mu`` in 1/mm.  Pixel (0, 0)'s *corner* is the panel origin
(nbxp's ``pix0``), so beam centres carry no half-pixel shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: McStas (NeXus) components of a DIALS-frame vector: v_nexus = NEXUS_FROM_DIALS @ v_dials
NEXUS_FROM_DIALS = np.diag([-1.0, 1.0, -1.0])

#: largest component error (of unit vectors) still counted as "along that axis"
AXIS_TOLERANCE = 1e-6


def host(v) -> np.ndarray:
    """Host float64 copy of a small array of any array-API namespace (CuPy included)."""
    a = v
    if type(a).__module__.startswith("cupy"):
        a = a.get()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):  # namespaces NumPy cannot convert directly
        return np.from_dlpack(a).astype(np.float64)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.zeros(3)


def lab_to_dials(beam, spindle, fdet) -> np.ndarray:
    """The proper rotation R (3x3) with v_dials = R @ v_nbxp, from the beam's propagation
    direction, the spindle axis and (fallback for x) the detector's fast axis, all in nbxp's
    lab frame."""
    z = -_unit(beam)
    x = None
    for cand in (spindle, fdet, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)):
        c = np.asarray(cand, dtype=np.float64)
        c = c - np.dot(c, z) * z
        if np.linalg.norm(c) > 1e-6:
            x = _unit(c)
            break
    y = np.cross(z, x)
    return np.stack([x, y, z])


@dataclass(frozen=True)
class Beam:
    """dxtbx's beam: ``direction`` is the unit sample-to-source vector (the beam travels
    along -direction), ``wavelength`` in A; the polarization plane's normal and the fraction
    of intensity polarized in that plane (the one holding the electric vector)."""

    direction: np.ndarray
    wavelength: float
    polarization_normal: np.ndarray
    polarization_fraction: float

    @property
    def s0(self) -> np.ndarray:
        """Incident wave vector (1/A), -direction / wavelength."""
        return -self.direction / self.wavelength


@dataclass(frozen=True)
class Panel:
    """One flat detector panel as dxtbx holds it: unit ``fast_axis``/``slow_axis``,
    ``origin`` (mm) the corner of pixel (0, 0), ``image_size`` (fast, slow) pixels,
    ``pixel_size`` (fast, slow) mm, sensor ``thickness`` (mm, 0 for none), ``mu`` (1/mm)."""

    name: str
    fast_axis: np.ndarray
    slow_axis: np.ndarray
    origin: np.ndarray
    image_size: tuple[int, int]
    pixel_size: tuple[float, float]
    thickness: float
    mu: float
    material: str = ""

    @property
    def normal(self) -> np.ndarray:
        """Unit normal fast x slow (pointing away from the sample for the miniCBF layout)."""
        return _unit(np.cross(self.fast_axis, self.slow_axis))

    @property
    def directed_distance(self) -> float:
        """origin . normal (mm): the plane's signed distance from the sample."""
        return float(np.dot(self.origin, self.normal))

    @property
    def distance(self) -> float:
        """dxtbx's panel distance (mm): |origin . normal|."""
        return abs(self.directed_distance)

    def ray_intersection(self, s) -> tuple[float, float]:
        """(fast, slow) mm where the ray from the sample along ``s`` meets the panel plane
        (any non-orthogonal fast/slow axes handled exactly)."""
        D = np.column_stack([self.fast_axis, self.slow_axis, -np.asarray(s, dtype=np.float64)])
        f, sl, _ = np.linalg.solve(D, -self.origin)
        return float(f), float(sl)

    def beam_centre_px(self, beam: Beam) -> tuple[float, float]:
        """Direct-beam position in pixels (fast, slow) from pixel (0, 0)'s corner."""
        f, s = self.ray_intersection(-beam.direction)
        return f / self.pixel_size[0], s / self.pixel_size[1]


@dataclass(frozen=True)
class Goniometer:
    """Single-axis goniometer: right-handed rotation about the unit ``rotation_axis``."""

    rotation_axis: np.ndarray


@dataclass(frozen=True)
class Scan:
    """Images ``image_range`` (1-based, inclusive); image i covers oscillation[0] +
    (i - first) * oscillation[1] to one width more (degrees); ``exposure_time`` in s."""

    image_range: tuple[int, int]
    oscillation: tuple[float, float]
    exposure_time: float


@dataclass(frozen=True)
class Crystal:
    """Real-space cell vectors (A) as rows a, b, c, and the Hall symbol of the space group."""

    real_space: np.ndarray
    space_group_hall: str = " P 1"

    @property
    def reciprocal(self) -> np.ndarray:
        """Rows a*, b*, c* (1/A): the inverse transpose of the real-space rows."""
        return np.linalg.inv(self.real_space).T


@dataclass
class Description:
    """An nbxp experiment in DIALS' frame: beam, detector (a list of panels), goniometer
    (the spindle), the base crystal (goniometer angle 0), and ``to_dials`` (R with
    v_dials = R @ v_nbxp).  ``curved`` flags nbxp's curved detector, which no flat-panel
    model describes (the writers refuse it)."""

    beam: Beam
    detector: list
    goniometer: Goniometer
    crystal: Crystal
    to_dials: np.ndarray
    curved: bool = False
    notes: list = field(default_factory=list)

    def rotated_crystal(self, rotation_nbxp) -> Crystal:
        """The base crystal after ``rotation_nbxp`` (3x3, nbxp's lab frame, applied to
        column vectors), as for one still shot."""
        Q = self.to_dials @ np.asarray(rotation_nbxp, dtype=np.float64) @ self.to_dials.T
        return Crystal(self.crystal.real_space @ Q.T, self.crystal.space_group_hall)


def experiment_panels(exp) -> list:
    """The detector panels of an Experiment: ``exp.panels`` (a multi-panel detector, one
    :class:`nbxp.geometry.DetectorGeometry` each) or ``[exp.geom]`` (nanoBragg's one panel)."""
    panels = getattr(exp, "panels", None)
    return list(panels) if panels else [exp.geom]


def panel_names(exp) -> list[str]:
    """Names of the panels (the geometry file's; ``nbxp`` for nanoBragg's one panel)."""
    specs = getattr(exp, "panel_specs", None)
    n = len(experiment_panels(exp))
    if specs and len(specs) == n:
        return [str(p.name) for p in specs]
    return ["nbxp"] if n == 1 else [f"p{i:02d}" for i in range(n)]


def slab_layout(sizes) -> tuple[tuple[int, int], list[int]]:
    """nbxp's slab of several panels: panel images stacked along the slow axis in panel
    order, each starting at fast index 0 (a narrower panel is padded with zeros on its
    right).  ``sizes``: (spixels, fpixels) per panel.  Returns the slab's (slow, fast) shape
    and the first slab row of each panel."""
    rows, r = [], 0
    for s, _ in sizes:
        rows.append(r)
        r += int(s)
    return (r, max(int(f) for _, f in sizes)), rows


def to_slab(images) -> np.ndarray:
    """The per-panel images (each (spixels, fpixels), host) as one slab (:func:`slab_layout`)."""
    imgs = [np.asarray(a) for a in images]
    if len(imgs) == 1:
        return imgs[0]
    shape, rows = slab_layout([a.shape for a in imgs])
    if all(a.shape[1] == shape[1] for a in imgs):
        return np.concatenate(imgs, axis=0)
    out = np.zeros(shape, dtype=np.result_type(*imgs))
    for r, a in zip(rows, imgs):
        out[r:r + a.shape[0], :a.shape[1]] = a
    return out


def describe(exp) -> Description:
    """The :class:`Description` of an :class:`nbxp.experiment.Experiment` (any namespace);
    a multi-panel experiment's detector holds every panel, in panel order."""
    geoms = experiment_panels(exp)
    g = geoms[0]
    beam_nb = host(g.beam)
    fdet = host(g.fdet)
    spindle = host(exp.spindle_unit) if exp.spindle_unit is not None else np.array([0.0, 0.0, 1.0])
    R = lab_to_dials(beam_nb, spindle, fdet)

    direction = -(R @ _unit(beam_nb))
    # the electric vector: the polarization axis made perpendicular to the beam
    e = R @ host(exp.polar_axis)
    e = e - np.dot(e, direction) * direction
    normal = _unit(np.cross(direction, e)) if np.linalg.norm(e) > 1e-9 else np.array([0.0, 1.0, 0.0])
    # nanoBragg's Kahn factor K is the degree of polarization along the polar axis:
    # I_parallel / (I_parallel + I_perpendicular) = (1 + K) / 2
    fraction = 0.5 * (1.0 + float(exp.kahn))
    beam = Beam(direction=direction, wavelength=float(exp.wavelength) * 1e10,
                polarization_normal=normal, polarization_fraction=fraction)

    specs = getattr(exp, "panel_specs", None)
    specs = list(specs) if specs and len(specs) == len(geoms) else [None] * len(geoms)
    panels = []
    for name, pg, spec in zip(panel_names(exp), geoms, specs):
        fast, slow = R @ _unit(host(pg.fdet)), R @ _unit(host(pg.sdet))
        if abs(np.dot(fast, slow)) < AXIS_TOLERANCE:
            # perpendicular up to the engine's rounding (float32 geometry): make it exact, as
            # dxtbx's panel model demands (it asserts fast . slow < 1e-7)
            slow = _unit(slow - np.dot(slow, fast) * fast)
        px_mm = float(pg.pixel_size) * 1e3
        t, m = exp.thickness, exp.mu
        if spec is not None and spec.thickness is not None:
            t, m = spec.thickness, (spec.mu if spec.mu is not None else exp.mu)
        thick_mm = float(t) * 1e3 if t and t > 0 else 0.0
        mu = float(m) * 1e-3 if thick_mm > 0 and m > 0 else 0.0
        material = (spec.material or "") if spec is not None else ""
        panels.append(Panel(name=name, fast_axis=fast, slow_axis=slow, origin=R @ host(pg.pix0) * 1e3,
                            image_size=(int(pg.fpixels), int(pg.spixels)), pixel_size=(px_mm, px_mm),
                            thickness=thick_mm, mu=mu, material=material))

    if exp.cell_real is not None:
        real = host(exp.cell_real) * 1e10
    else:  # an Experiment built elsewhere: invert the reciprocal cell
        real = np.linalg.inv(host(exp.recip)).T
    crystal = Crystal(np.asarray(real, dtype=np.float64) @ R.T)
    gonio = Goniometer(R @ _unit(spindle))
    return Description(beam=beam, detector=panels, goniometer=gonio, crystal=crystal,
                       to_dials=R, curved=any(bool(getattr(pg, "curved", False)) for pg in geoms))


def make_scan(start_angle: float, angle_increment: float, nframes: int, exposure: float = 1.0) -> Scan:
    """The scan of ``nframes`` images from ``start_angle`` in steps of ``angle_increment``
    (both radians; stored in degrees as dxtbx does)."""
    return Scan(image_range=(1, int(nframes)),
                oscillation=(math.degrees(start_angle), math.degrees(angle_increment)),
                exposure_time=float(exposure))


def along(v, axis, tol: float = AXIS_TOLERANCE) -> bool:
    """Whether unit vector ``v`` is ``axis`` to within ``tol`` per component."""
    return bool(np.all(np.abs(np.asarray(v, dtype=np.float64) - np.asarray(axis, dtype=np.float64)) <= tol))


def flat_detector_problem(d: Description, what: str) -> str | None:
    """Why ``what`` (a format holding flat panels whose pixel axes are perpendicular, as
    dxtbx's panel model requires) cannot describe the detector of ``d``; None when it can."""
    if d.curved:
        return f"{what} describes flat detectors only, not -curved_det"
    if not all(is_orthonormal(p) for p in d.detector):
        return f"{what} needs perpendicular fast and slow pixel axes; -fdet_vector and -sdet_vector are not"
    return None


def is_orthonormal(panel: Panel, tol: float = AXIS_TOLERANCE) -> bool:
    """Whether the panel's fast and slow axes are perpendicular unit vectors."""
    f, s = panel.fast_axis, panel.slow_axis
    return abs(np.dot(f, s)) <= tol and abs(np.linalg.norm(f) - 1) <= tol and abs(np.linalg.norm(s) - 1) <= tol
