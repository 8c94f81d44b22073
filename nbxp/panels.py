"""Multi-panel detectors: the plain description of a detector as a list of flat panels.

A detector is a list of panels.  Each panel is a flat pixel array placed in nbxp's
laboratory frame (the frame the engine works in: the beam, spindle and polarization vectors
of the run are expressed in it) by the corner of its first pixel and two unit vectors, as
dxtbx describes a panel and as CrystFEL's ``corner_x/corner_y, fs, ss`` do.  nanoBragg's
flags describe a one-panel detector (:func:`nbxp.geometry.build_detector` places it); a
geometry file (``--geometry``, :mod:`nbxp.io.geometry`) gives any number of panels.

This module holds host-side descriptions only (SI units, float64, no array namespace):
:class:`PanelSpec` for one panel and :class:`DetectorSpec` for what a geometry file says
about the whole experiment.  Physics modules turn them into arrays of the engine's namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

Vector3 = tuple[float, float, float]


@dataclass(frozen=True)
class PanelSpec:
    """One flat panel, in nbxp's laboratory frame (SI units).

    ``origin``: vector (m) from the sample to the outer corner of pixel (0, 0) (nanoBragg's
    ``pix0``).  ``fast``/``slow``: unit vectors along increasing fast (column) and slow (row)
    pixel index; the panel normal is fast x slow.  ``fpixels``/``spixels``: pixel counts;
    ``pixel_size``: side (m) of the square pixels.  ``thickness`` (m) / ``mu`` (1/m) /
    ``material``: the sensor where the file gives it (None: the run's -detector_thick and
    -detector_abs apply).  ``mask``: host bool (spixels, fpixels), False where the file
    marks pixels bad (not simulated, written as 0), or None.  ``name``: the file's name for
    the panel (for printouts and output files).
    """

    name: str
    origin: Vector3
    fast: Vector3
    slow: Vector3
    fpixels: int
    spixels: int
    pixel_size: float
    thickness: Optional[float] = None
    mu: Optional[float] = None
    material: Optional[str] = None
    mask: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    @property
    def normal(self) -> np.ndarray:
        """Unit normal fast x slow (host float64)."""
        n = np.cross(np.asarray(self.fast, dtype=np.float64), np.asarray(self.slow, dtype=np.float64))
        return n / np.linalg.norm(n)

    @property
    def npixels(self) -> int:
        return int(self.fpixels) * int(self.spixels)


@dataclass(frozen=True)
class DetectorSpec:
    """What a geometry file says about an experiment, in nbxp's laboratory frame.

    ``panels``: the detector, in file order.  ``beam``: unit vector along the beam's
    propagation (None where the file gives none); ``wavelength`` (m) or None; ``spindle``:
    unit rotation axis or None.  ``source``: the file it came from (for messages);
    ``notes``: lines for the printout (what the file set, which of file and flags won).
    ``adu_per_photon``: CrystFEL's ``adu_per_eV``/``adu_per_photon`` turned into counts per
    photon where the file gives it (else None).
    """

    panels: tuple[PanelSpec, ...]
    beam: Optional[Vector3] = None
    wavelength: Optional[float] = None
    spindle: Optional[Vector3] = None
    source: str = ""
    adu_per_photon: Optional[float] = None
    notes: tuple[str, ...] = ()


def slab(images):
    """The per-panel images (a list of (spixels_p, fpixels_p) arrays, in panel order, as
    :func:`nbxp.simulate` returns them for a multi-panel detector) concatenated along the
    slow axis: one (sum spixels_p, fpixels) array, the raw-float file's layout (CrystFEL's
    "slab": panel p's rows follow panel p-1's).  A single array is returned as it is.
    Panels of different fast widths have no slab: ValueError (one line)."""
    if not isinstance(images, (list, tuple)):
        return images
    if not images:
        raise ValueError("slab: no panel images")
    widths = [int(im.shape[-1]) for im in images]
    if len(set(widths)) != 1:
        raise ValueError(f"slab: the panels' fast widths differ ({', '.join(map(str, widths))} pixels): "
                         "they cannot be stacked along slow")
    first = images[0]
    if hasattr(first, "__array_namespace__"):
        xp = first.__array_namespace__()
    else:  # e.g. a torch tensor
        from array_api_compat import array_namespace
        xp = array_namespace(*images)
    return xp.concat(list(images), axis=0)
