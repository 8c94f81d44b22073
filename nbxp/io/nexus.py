"""NeXus/NXmx (``.h5``/``.nxs``): one HDF5 file for a whole series, frames streamed in.

Layout (NXmx application definition; the frame is NeXus' McStas frame, z along the beam,
y up, each vector ``NEXUS_FROM_DIALS @ v`` of :mod:`nbxp.models`' DIALS-frame description;
lengths in mm, angles in degrees, each with its ``units`` attribute)::

    /entry                      NXentry, definition = "NXmx"
      data/data                 (frames, slow, fast) int32 or float32, one chunk per frame,
                                shuffle + gzip (filters every HDF5 has, 1.10 included)
      instrument/beam           NXbeam: incident_wavelength (angstrom)
      instrument/detector       NXdetector: sensor_material, sensor_thickness, frame_time,
                                count_time, saturation_value, beam_center_x/y, distance,
                                depends_on -> transformations/translation
        transformations         rotation (the detector's orientation: one axis and angle
                                taking a detector perpendicular to the beam, fast = -x,
                                slow = -y in McStas, to the simulated one) <- translation
                                (the normal distance, along the rotated beam axis)
        module                  NXdetector_module: data_origin, data_size (slow, fast),
                                module_offset (in-plane translation to the corner of the
                                first pixel) <- fast_pixel_direction / slow_pixel_direction
                                (pixel size as value, unrotated direction as vector)
      sample                    NXsample: depends_on -> transformations/omega (rotation
                                scans: omega start per frame, omega_end, omega_increment_set);
                                still shots have no depends_on (a series of stills)

dxtbx places a panel at the cumulative transformation of the chain that
``fast_pixel_direction`` depends on, and takes the panel's origin there (the corner of pixel
(0, 0), as nbxp's ``pix0``; an ``offset`` on the pixel-direction fields would be ignored), so
the module offset carries the whole in-plane position.  Fast and slow axes that are not
perpendicular (custom vectors) are refused: dxtbx's panel model asserts they are.

The file is created under a temporary name beside the target and renamed on
:meth:`NexusWriter.close`; :meth:`NexusWriter.abort` (or an exception inside ``with``)
removes it.  h5py's default file format is used on purpose: ``libver="latest"`` (HDF5 2.x)
files cannot be read by the HDF5 1.10 that DIALS' packages use.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..models import NEXUS_FROM_DIALS, describe, flat_detector_problem, slab_layout, to_slab
from . import commit_temporary, temporary_beside

#: sensor thickness written when nbxp simulated none (m): dxtbx requires one > 0 and turns it
#: into a parallax correction of at most thickness * tan(2 theta), under 1/50 of a 100 um
#: pixel at 1 um, so DIALS' positions match nbxp's parallax-free image
DEFAULT_SENSOR_THICKNESS = 1e-6

#: gzip level: level 1 already gives most of the size reduction on photon-count frames at
#: a fraction of the time of the default 4
GZIP_LEVEL = 1

_DET = "/entry/instrument/detector"


def unsupported(exp, description=None) -> str | None:
    """Why NXmx (as written here) cannot describe ``exp``; None when it can."""
    d = description if description is not None else describe(exp)
    return flat_detector_problem(d, "NeXus (.h5/.nxs) as written by nbxp")


def _rotation_to_axis_angle(R: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit axis and right-handed angle (rad) of the proper rotation ``R``."""
    c = max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))
    angle = math.acos(c)
    if angle < 1e-12:
        return np.array([0.0, 0.0, 1.0]), 0.0
    if math.pi - angle < 1e-6:
        # near 180 degrees the antisymmetric part vanishes: the axis is R's eigenvector of 1
        w, v = np.linalg.eigh((R + R.T) / 2.0)
        axis = v[:, int(np.argmax(w))]
    else:
        axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return axis / np.linalg.norm(axis), angle


def detector_chain(panel) -> dict:
    """The NXmx transformations (McStas frame, mm, degrees) that place ``panel``
    (:class:`nbxp.models.Panel`): rotation (axis, deg), translation (vector, mm),
    module_offset (vector, mm), fast/slow (unrotated unit directions)."""
    M = NEXUS_FROM_DIALS
    F, S, O = M @ panel.fast_axis, M @ panel.slow_axis, M @ panel.origin
    f0, s0, n0 = np.array([-1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    N = np.cross(F, S)
    Rdet = np.column_stack([F, S, N]) @ np.column_stack([f0, s0, n0]).T
    axis, angle = _rotation_to_axis_angle(Rdet)
    # place the rest with the rotation as written (the file's own, rounded, numbers)
    Rdet_used = _axis_angle_matrix(axis, angle)
    local = Rdet_used.T @ O
    dist = float(local @ n0)
    inplane = local - dist * n0
    fast, slow = Rdet_used.T @ F, Rdet_used.T @ S
    trans = (n0, dist)
    off = float(np.linalg.norm(inplane))
    off_vec = inplane / off if off > 0 else np.array([1.0, 0.0, 0.0])
    return {"rotation": (axis, math.degrees(angle)), "translation": trans,
            "module_offset": (off_vec, off), "fast": fast / np.linalg.norm(fast),
            "slow": slow / np.linalg.norm(slow)}


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix, right-handed ``angle`` (rad) about unit ``axis``."""
    K = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * K + (1.0 - math.cos(angle)) * (K @ K)


class NexusWriter:
    """One NXmx file for a whole series, frames streamed in (see the module docstring).

    ``dtype``: np.int32 (counts) or np.float32 (float images); angles in radians,
    ``exposure`` in s, ``saturation`` the trusted maximum (recorded when given).  A context
    manager: leaving the block normally calls :meth:`close`, an exception :meth:`abort`.
    """

    def __init__(self, path: str, exp, *, nframes: int, dtype, start_angle: float,
                 angle_increment: float, stills: bool, exposure: float,
                 saturation: int | None = None):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.int32), np.dtype(np.float32)):
            raise TypeError(f"NeXus frames must be int32 or float32, got {dtype}")
        if int(nframes) < 1:
            raise ValueError(f"a NeXus series needs at least one frame, got {nframes}")
        d = describe(exp)
        why = unsupported(exp, d)
        if why:
            raise ValueError(why)
        import h5py

        self.path = os.path.abspath(path)
        self.nframes = int(nframes)
        self.dtype = dtype
        self._panel = d.detector[0]
        self._panels = list(d.detector)
        self._written = np.zeros(self.nframes, dtype=bool)
        self._tmp, self._mode = temporary_beside(self.path)
        self._file = None
        try:
            # the default (earliest) file-format version keeps the file readable by HDF5 1.10
            self._file = h5py.File(self._tmp, "w")
            self._layout(d, start_angle=start_angle, angle_increment=angle_increment,
                         stills=stills, exposure=exposure, saturation=saturation)
        except BaseException:
            self.abort()
            raise

    # -- structure -------------------------------------------------------------------------

    def _layout(self, d, *, start_angle, angle_increment, stills, exposure, saturation):
        f = self._file
        p = self._panel
        fast_n, slow_n = p.image_size
        multi = len(self._panels) > 1
        if multi:  # nbxp's slab: panels stacked along slow (nbxp.models.slab_layout)
            (slow_n, fast_n), self._rows = slab_layout([(q.image_size[1], q.image_size[0]) for q in self._panels])

        def group(parent, name, nx_class):
            g = parent.create_group(name)
            g.attrs["NX_class"] = nx_class
            return g

        def field(parent, name, value, units=None, **attrs):
            ds = parent.create_dataset(name, data=value)
            if units is not None:
                ds.attrs["units"] = units
            for k, v in attrs.items():
                ds.attrs[k] = v
            return ds

        def transformation(parent, name, value, units, kind, vector, depends_on, **extra):
            return field(parent, name, np.atleast_1d(np.asarray(value, dtype=np.float64)), units,
                         transformation_type=kind, vector=np.asarray(vector, dtype=np.float64),
                         depends_on=depends_on, **extra)

        f.attrs["default"] = "entry"
        entry = group(f, "entry", "NXentry")
        entry.attrs["default"] = "data"
        field(entry, "definition", "NXmx")
        data = group(entry, "data", "NXdata")
        data.attrs["signal"] = "data"
        self._ds = data.create_dataset(
            "data", shape=(self.nframes, slow_n, fast_n), dtype=self.dtype,
            chunks=(1, slow_n, fast_n), compression="gzip", compression_opts=GZIP_LEVEL,
            shuffle=True, fillvalue=self.dtype.type(0))

        inst = group(entry, "instrument", "NXinstrument")
        field(inst, "name", "nbxp simulation")
        beam = group(inst, "beam", "NXbeam")
        field(beam, "incident_wavelength", d.beam.wavelength, "angstrom")

        det = group(inst, "detector", "NXdetector")
        field(det, "description", "nbxp simulated detector")
        field(det, "sensor_material", "Silicon")
        thick_m = p.thickness * 1e-3 if p.thickness > 0 else DEFAULT_SENSOR_THICKNESS
        field(det, "sensor_thickness", thick_m, "m")
        field(det, "frame_time", float(exposure), "s")
        field(det, "count_time", float(exposure), "s")
        if saturation is not None:
            field(det, "saturation_value", np.int64(saturation))
        if not multi:
            bx, by = p.beam_centre_px(d.beam)
            field(det, "beam_center_x", bx, "pixels")
            field(det, "beam_center_y", by, "pixels")
            field(det, "distance", p.distance, "mm")
        field(det, "x_pixel_size", p.pixel_size[0], "mm")
        field(det, "y_pixel_size", p.pixel_size[1], "mm")
        tr = group(det, "transformations", "NXtransformations")
        if not multi:
            field(det, "depends_on", _DET + "/transformations/translation")
            self._module(mod_group=group(det, "module", "NXdetector_module"), tr=tr, panel=p, suffix="",
                         origin=(0, 0), transformation=transformation, field=field)
        else:
            # one NXdetector_module per panel (dxtbx reads one NXdetector with several modules
            # as a multi-panel detector; several NXdetector groups it does not), each with its
            # own chain, all slicing the one (frames, slab slow, slab fast) dataset
            field(det, "depends_on", _DET + "/transformations/translation_00")
            for i, (q, row) in enumerate(zip(self._panels, self._rows)):
                self._module(mod_group=group(det, f"module_{i:02d}", "NXdetector_module"), tr=tr, panel=q,
                             suffix=f"_{i:02d}", origin=(row, 0), transformation=transformation, field=field)

        sample = group(entry, "sample", "NXsample")
        field(sample, "name", "nbxp crystal")
        if not stills:
            st = group(sample, "transformations", "NXtransformations")
            start = math.degrees(start_angle)
            step = math.degrees(angle_increment)
            omega = start + step * np.arange(self.nframes, dtype=np.float64)
            transformation(st, "omega", omega, "deg", "rotation", NEXUS_FROM_DIALS @ d.goniometer.rotation_axis, ".")
            field(st, "omega_end", omega + step, "deg")
            field(st, "omega_increment_set", np.full(self.nframes, step), "deg")
            field(sample, "depends_on", "/entry/sample/transformations/omega")

    def _module(self, *, mod_group, tr, panel, suffix, origin, transformation, field):
        """One panel's chain (``rotation{suffix}`` <- ``translation{suffix}`` in the detector's
        transformations) and its NXdetector_module (data_origin ``origin`` (slow, fast))."""
        p, mod = panel, mod_group
        chain = detector_chain(p)
        axis, angle_deg = chain["rotation"]
        transformation(tr, "rotation" + suffix, angle_deg, "deg", "rotation", axis, ".")
        vec, dist = chain["translation"]
        transformation(tr, "translation" + suffix, dist, "mm", "translation", vec,
                       _DET + "/transformations/rotation" + suffix)
        here = _DET + "/" + mod.name.rsplit("/", 1)[-1]
        field(mod, "data_origin", np.array(origin, dtype=np.int64))
        field(mod, "data_size", np.array([p.image_size[1], p.image_size[0]], dtype=np.int64))  # slow, fast
        field(mod, "data_stride", np.array([1, 1], dtype=np.int64))
        if suffix:  # a multi-panel detector: the geometry file's panel name
            field(mod, "description", p.name)
        vec, off = chain["module_offset"]
        transformation(mod, "module_offset", off, "mm", "translation", vec,
                       _DET + "/transformations/translation" + suffix)
        transformation(mod, "fast_pixel_direction", p.pixel_size[0], "mm", "translation", chain["fast"],
                       here + "/module_offset", offset=np.zeros(3), offset_units="mm")
        transformation(mod, "slow_pixel_direction", p.pixel_size[1], "mm", "translation", chain["slow"],
                       here + "/module_offset", offset=np.zeros(3), offset_units="mm")

    # -- frames ----------------------------------------------------------------------------

    def write(self, index: int, data) -> None:
        """Store frame ``index`` (0-based): a 2-D (slow, fast) array of the file's kind
        (floats are not silently truncated into an integer file), or for a multi-panel
        detector the list of per-panel images (placed in the slab) or the slab itself."""
        if self._file is None:
            raise ValueError(f"{self.path}: the NeXus file is already closed")
        index = int(index)
        if not 0 <= index < self.nframes:
            raise IndexError(f"frame index {index} outside 0..{self.nframes - 1}")
        a = to_slab(data) if isinstance(data, (list, tuple)) else np.asarray(data)
        if a.shape != self._ds.shape[1:]:
            raise ValueError(f"frame shape {a.shape} is not the detector's (slow, fast) = {self._ds.shape[1:]}")
        if self.dtype.kind in "iu" and a.dtype.kind not in "iu":
            raise TypeError(f"an int32 NeXus series needs integer frames, got {a.dtype} (round first)")
        self._ds[index] = a.astype(self.dtype, copy=False)
        self._written[index] = True

    def close(self) -> None:
        """Finish the file and rename it into place; every frame must have been written
        (otherwise the file is removed and ValueError raised)."""
        if self._file is None:
            return
        missing = np.flatnonzero(~self._written)
        if missing.size:
            self.abort()
            raise ValueError(f"{self.path}: {missing.size} of {self.nframes} frames never written "
                             f"(first: {int(missing[0])}); nothing kept")
        try:
            self._file.close()
            self._file = None
            commit_temporary(self._tmp, self.path, self._mode)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the unfinished file."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
