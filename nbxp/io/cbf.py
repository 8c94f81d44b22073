"""Pilatus-style miniCBF frames (``.cbf``), written with fabio, for DIALS' ``FormatCBFMini``.

A miniCBF header holds no vectors: its reader (dxtbx ``FormatCBFMini``) assumes a flat
detector perpendicular to the beam with fast = +x and slow = -y in DIALS' frame, a
single-axis goniometer along +x and the beam along -z.  :func:`unsupported` says when nbxp's
geometry (described in DIALS' frame by :mod:`nbxp.models`) is not that, and the writer
refuses it rather than write a file DIALS would silently misread; NeXus describes any
geometry.

Header lines follow what FormatCBFMini parses (``_array_data.header_convention
GENERIC_MINI``, keyword then value, units *not* parsed, hence exactly these): ``Pixel_size``
m, ``Exposure_period`` s (the scan's exposure), ``Count_cutoff`` counts (the trusted
maximum), ``Wavelength`` A, ``Detector_distance`` m, ``Beam_xy`` (fast, slow) pixels from the
corner of the first pixel, ``Start_angle`` and ``Angle_increment`` degrees.  The detector
line names no real model or serial number (``PILATUS`` would select the Pilatus reader with
its fixed module sizes; a beamline's serial number selects that beamline's reader, one of
which reverses the rotation axis).  A sensor line (which turns on DIALS' parallax
correction, with DIALS' own absorption coefficient of silicon) is written only for a sensor
of non-zero thickness.  Data: int32, fabio's byte-offset compression.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import numpy as np

from ..models import along, describe, is_orthonormal
from . import commit_temporary, final_mode

#: the neutral detector line (see the module docstring)
DETECTOR_LINE = "Detector: nbxp simulated detector, S/N 00-0000"


def unsupported(exp, description=None) -> str | None:
    """Why a Pilatus-style miniCBF file cannot describe ``exp``'s geometry, as one sentence
    naming NeXus as the way; None when miniCBF describes it exactly."""
    d = description if description is not None else describe(exp)
    why = None
    conv = getattr(exp.geom, "convention", "")
    if d.curved:
        why = "a curved detector"
    elif len(d.detector) != 1:
        why = "a detector of several panels"
    else:
        p = d.detector[0]
        if not is_orthonormal(p):
            why = "fast and slow detector axes that are not perpendicular"
        elif not along(np.abs(p.normal), (0.0, 0.0, 1.0)):
            tt = math.degrees(getattr(exp.geom, "twotheta", 0.0) or 0.0)
            why = ("a detector that is not perpendicular to the beam "
                   + (f"(two-theta {tt:g} deg)" if tt else "(detector rotations or custom vectors)"))
        elif not (along(p.fast_axis, (1.0, 0.0, 0.0)) and along(p.slow_axis, (0.0, -1.0, 0.0))):
            f = ",".join(f"{v:+.3g}" for v in p.fast_axis)
            s = ",".join(f"{v:+.3g}" for v in p.slow_axis)
            why = (f"fast/slow pixel axes ({f}) / ({s}) in DIALS' frame, where miniCBF readers assume "
                   f"+x / -y, with the spindle along +x (the {conv} convention, a detector rotation "
                   "about the beam, or a spindle not along the detector's fast axis)")
        elif p.directed_distance <= 0:
            why = "a detector upstream of the sample"
        elif not along(d.goniometer.rotation_axis, (1.0, 0.0, 0.0)):
            why = "a spindle axis that is not perpendicular to the beam"
    if why is None:
        return None
    return f"miniCBF (.cbf) cannot describe {why}; write NeXus (.h5 or .nxs) instead"


def header_lines(exp, *, start_angle: float, angle_increment: float, exposure: float,
                 saturation: int, description=None) -> list[str]:
    """The ``# ...`` lines of the miniCBF header (without the leading ``# ``); angles in
    radians, exposure in s."""
    d = description if description is not None else describe(exp)
    p = d.detector[0]
    bx, by = p.beam_centre_px(d.beam)
    px_m = p.pixel_size[0] * 1e-3
    py_m = p.pixel_size[1] * 1e-3
    lines = [DETECTOR_LINE, f"Pixel_size {px_m:.10g} m x {py_m:.10g} m"]
    if p.thickness > 0:
        lines.append(f"Silicon sensor, thickness {p.thickness * 1e-3:.10g} m")
    lines += [
        f"Exposure_time {exposure:.10g} s",
        f"Exposure_period {exposure:.10g} s",
        f"Count_cutoff {int(saturation)} counts",
        f"Wavelength {d.beam.wavelength:.10g} A",
        f"Detector_distance {p.distance * 1e-3:.10g} m",
        f"Beam_xy ({bx:.6f}, {by:.6f}) pixels",
        f"Start_angle {math.degrees(start_angle):.10g} deg.",
        f"Angle_increment {math.degrees(angle_increment):.10g} deg.",
        f"Polarization {d.beam.polarization_fraction:.6g}",
        "Detector_2theta 0.0000 deg.",
    ]
    return lines


def write_cbf(path: str, data, exp, *, start_angle: float, angle_increment: float,
              exposure: float, saturation: int) -> None:
    """One frame as miniCBF: ``data`` a 2-D int32 NumPy array (spixels, fpixels) (any other
    dtype raises TypeError: the caller rounds, since fabio would truncate floats silently);
    angles in radians, ``exposure`` in s, ``saturation`` the trusted maximum count.  Written
    whole or not at all (temporary name, then rename); a geometry miniCBF cannot hold
    raises ValueError with :func:`unsupported`'s sentence."""
    if not isinstance(data, np.ndarray) or data.dtype != np.int32:
        raise TypeError(f"miniCBF frames must be int32 NumPy arrays, got {getattr(data, 'dtype', type(data))}")
    d = describe(exp)
    why = unsupported(exp, d)
    if why:
        raise ValueError(why)
    p = d.detector[0]
    if data.shape != (p.image_size[1], p.image_size[0]):
        raise ValueError(f"frame shape {data.shape} is not the detector's (slow, fast) = "
                         f"({p.image_size[1]}, {p.image_size[0]})")
    import fabio.cbfimage

    lines = header_lines(exp, start_angle=start_angle, angle_increment=angle_increment,
                         exposure=exposure, saturation=saturation, description=d)
    header = {"_array_data.header_convention": "GENERIC_MINI",
              "_array_data.header_contents": "\n".join("# " + s for s in lines)}
    img = fabio.cbfimage.CbfImage(data=np.ascontiguousarray(data), header=header)
    # fabio names the CIF data block after the file: write under the final name inside a
    # private temporary directory beside the target, then rename into place
    target = os.path.abspath(path)
    mode = final_mode(target)
    tmpdir = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".", dir=os.path.dirname(target))
    try:
        tmp = os.path.join(tmpdir, os.path.basename(target))
        img.write(tmp)
        commit_temporary(tmp, target, mode)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
