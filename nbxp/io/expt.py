"""The ground truth as a DIALS experiment list (``.expt``: dxtbx's JSON), from nbxp's models.

Written from :mod:`nbxp.models` (dxtbx is not a dependency), in the layout dxtbx 3.x writes
and reads (``ExperimentList.to_dict``): lists of beams, detectors, goniometers, scans and
crystals, and experiments that point into them by index.  The conventions are dxtbx's: DIALS'
laboratory frame (beam along -z, ``direction`` = sample to source; see :mod:`nbxp.models`),
lengths in mm, wavelength and cell in A, angles in degrees; the panel origin is the corner of
pixel (0, 0); image_size and pixel_size are (fast, slow).  The crystal's real-space vectors
are its orientation at goniometer angle 0 (a rotation scan's crystal turns right-handedly
about ``rotation_axis`` by the scan angle), space group P1 (" P 1", Hall symbol).  No
imageset is recorded (the truth stands beside the images; ``dials.import`` makes its own).
"""

from __future__ import annotations

import json

import numpy as np

from ..models import describe, flat_detector_problem, make_scan
from . import atomic_write

#: dxtbx's default trusted range for a detector with no recorded saturation
TRUSTED_RANGE = (-1.0, float(2**31 - 1))


def _vec(v) -> list[float]:
    return [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]


def beam_dict(beam) -> dict:
    return {"direction": _vec(beam.direction), "wavelength": float(beam.wavelength),
            "divergence": 0.0, "sigma_divergence": 0.0,
            "polarization_normal": _vec(beam.polarization_normal),
            "polarization_fraction": float(beam.polarization_fraction),
            "flux": 0.0, "transmission": 1.0}


def panel_dict(p, trusted_range=TRUSTED_RANGE) -> dict:
    parallax = p.thickness > 0 and p.mu > 0
    strategy = ({"type": "ParallaxCorrectedPxMmStrategy", "mu": float(p.mu), "t0": float(p.thickness)}
                if parallax else {"type": "SimplePxMmStrategy"})
    return {"name": p.name, "type": "SENSOR_PAD", "fast_axis": _vec(p.fast_axis),
            "slow_axis": _vec(p.slow_axis), "origin": _vec(p.origin), "raw_image_offset": [0, 0],
            "image_size": [int(p.image_size[0]), int(p.image_size[1])],
            "pixel_size": [float(p.pixel_size[0]), float(p.pixel_size[1])],
            "trusted_range": [float(trusted_range[0]), float(trusted_range[1])],
            "thickness": float(p.thickness), "material": p.material, "mu": float(p.mu),
            "identifier": "", "mask": [], "gain": 1.0, "pedestal": 0.0, "px_mm_strategy": strategy}


def detector_dict(panels, trusted_range=TRUSTED_RANGE) -> dict:
    """A flat detector: every panel a child of an identity hierarchy root (dxtbx's layout)."""
    root = {"name": "", "type": "", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, 1.0, 0.0],
            "origin": [0.0, 0.0, 0.0], "raw_image_offset": [0, 0], "image_size": [0, 0],
            "pixel_size": [0.0, 0.0], "trusted_range": [0.0, 0.0], "thickness": 0.0, "material": "",
            "mu": 0.0, "identifier": "", "mask": [], "gain": 1.0, "pedestal": 0.0,
            "px_mm_strategy": {"type": "SimplePxMmStrategy"},
            "children": [{"panel": i} for i in range(len(panels))]}
    return {"panels": [panel_dict(p, trusted_range) for p in panels], "hierarchy": root}


def goniometer_dict(g) -> dict:
    eye = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    return {"rotation_axis": _vec(g.rotation_axis), "fixed_rotation": eye, "setting_rotation": list(eye)}


def scan_dict(s) -> dict:
    n = s.image_range[1] - s.image_range[0] + 1
    return {"image_range": [int(s.image_range[0]), int(s.image_range[1])], "batch_offset": 0,
            "oscillation": [float(s.oscillation[0]), float(s.oscillation[1])],
            "exposure_time": [float(s.exposure_time)] * n,
            "epochs": [float(s.exposure_time) * i for i in range(n)], "valid_image_ranges": {}}


def crystal_dict(c) -> dict:
    a, b, cc = (c.real_space[i] for i in range(3))
    return {"__id__": "crystal", "real_space_a": _vec(a), "real_space_b": _vec(b),
            "real_space_c": _vec(cc), "space_group_hall_symbol": c.space_group_hall}


def unsupported(exp, description=None) -> str | None:
    """Why a dxtbx experiment list cannot describe ``exp``; None when it can."""
    d = description if description is not None else describe(exp)
    return flat_detector_problem(d, "a DIALS experiment list (.expt)")


def experiment_list(exp, *, start_angle: float, angle_increment: float, nframes: int,
                    exposure: float = 1.0, crystal_rotations=None) -> dict:
    """The experiment list as a JSON-ready dict (see :func:`write_expt`)."""
    d = describe(exp)
    why = unsupported(exp, d)
    if why:
        raise ValueError(why)
    out = {"__id__": "ExperimentList", "experiment": [], "imageset": [],
           "beam": [beam_dict(d.beam)], "detector": [detector_dict(d.detector)],
           "goniometer": [], "scan": [], "crystal": [], "profile": [], "scaling_model": []}
    if crystal_rotations is None:
        out["goniometer"].append(goniometer_dict(d.goniometer))
        out["scan"].append(scan_dict(make_scan(start_angle, angle_increment, nframes, exposure)))
        out["crystal"].append(crystal_dict(d.crystal))
        out["experiment"].append({"__id__": "Experiment", "identifier": "", "beam": 0, "detector": 0,
                                  "goniometer": 0, "scan": 0, "crystal": 0})
    else:
        rots = np.asarray(crystal_rotations, dtype=np.float64)
        if rots.ndim != 3 or rots.shape[1:] != (3, 3):
            raise ValueError(f"crystal_rotations must have shape (n, 3, 3), got {rots.shape}")
        for i, Q in enumerate(rots):
            out["crystal"].append(crystal_dict(d.rotated_crystal(Q)))
            out["experiment"].append({"__id__": "Experiment", "identifier": "", "beam": 0,
                                      "detector": 0, "crystal": i})
    return out


def write_expt(path: str, exp, *, start_angle: float, angle_increment: float, nframes: int,
               exposure: float = 1.0, crystal_rotations=None) -> None:
    """The ground truth as a DIALS experiment list (dxtbx JSON), written whole or not at all.

    Rotation scan (``crystal_rotations`` None): one experiment with beam, detector,
    goniometer (the spindle), scan (``nframes`` images of ``angle_increment`` from
    ``start_angle``, radians; ``exposure`` s each) and the base crystal.  Still shots:
    ``crystal_rotations`` is an (n, 3, 3) array; shot i's crystal is ``crystal_rotations[i]
    @`` (base real-space vectors), a rotation in nbxp's lab frame; one experiment per shot
    with no goniometer or scan (stills)."""
    doc = experiment_list(exp, start_angle=start_angle, angle_increment=angle_increment,
                          nframes=nframes, exposure=exposure, crystal_rotations=crystal_rotations)
    atomic_write(path, (json.dumps(doc, indent=1) + "\n").encode("ascii"))
