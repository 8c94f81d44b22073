"""Detector geometry: conventions, pivots, rotations, and sub-pixel positions.

The detector is a plane spanned by unit vectors ``fdet`` (fast pixel axis) and ``sdet``
(slow axis) with normal ``odet``; ``pix0`` is the vector (m) from the sample to the corner
of the first pixel.  A sub-pixel at detector coordinates (Fdet, Sdet) and depth Odet into
the sensor lies at ``pix0 + Fdet*fdet + Sdet*sdet + Odet*odet``.

Conventions (MOSFLM, XDS, DIALS, ADXV, DENZO, CUSTOM) fix the lab-frame axes and how the
user's beam centre maps onto (Fbeam, Sbeam).  Rotations are applied about lab x, y, z, then
about the two-theta axis.  With the BEAM pivot the direct-beam spot stays at (Fbeam, Sbeam)
after rotation; with the SAMPLE pivot the near point (Fclose, Sclose) at ``close_distance``
is rotated with the detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import DetectorConfig
from .vectors import dot, rotate_axis, rotate_xyz

#: lab-frame axes of each named convention:
#: beam, fdet, sdet, odet, twotheta_axis, polar, spindle
CONVENTION_AXES = {
    "ADXV": ((0, 0, 1), (1, 0, 0), (0, -1, 0), (0, 0, 1), (-1, 0, 0), (1, 0, 0), (1, 0, 0)),
    "MOSFLM": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1)),
    "DENZO": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1)),
    "XDS": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0)),
    "DIALS": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0)),
    # CUSTOM starts from nanoBragg's built-in defaults; user vectors replace any of them
    "CUSTOM": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 1)),
}
_NAMES = ("beam", "fdet", "sdet", "odet", "twotheta_axis", "polar", "spindle")


def convention_axes(convention: str, user: dict) -> dict:
    """The seven lab-frame axes for ``convention``; ``user`` vectors apply to CUSTOM only."""
    axes = dict(zip(_NAMES, (np.asarray(v, dtype=float) for v in CONVENTION_AXES[convention])))
    if convention == "CUSTOM":
        for k, v in user.items():
            if v is not None:
                axes[k] = np.asarray(v, dtype=float)
    return axes


def unit_host(v) -> tuple[np.ndarray, float]:
    """A host float64 unit vector along ``v`` (zero for a zero vector) and ``|v|``."""
    v = np.asarray(v, dtype=np.float64)
    mag = math.sqrt(float(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
    return (v / mag if mag != 0 else np.zeros(3)), mag


@dataclass
class DetectorGeometry:
    """The detector after conventions, pivots and rotations (SI units).

    Vectors (``pix0``, ``fdet``, ``sdet``, ``odet``, ``beam``) are arrays of the engine's
    namespace; the scalars are host floats used by headers and the printed summary.
    """

    fpixels: int
    spixels: int
    pixel_size: float
    detsize_f: float
    detsize_s: float
    pix0: object
    fdet: object
    sdet: object
    odet: object
    beam: object
    distance: float
    close_distance: float
    Xbeam: float
    Ybeam: float
    Fbeam: float
    Sbeam: float
    Xclose: float
    Yclose: float
    Fclose: float
    Sclose: float
    ORGX: float
    ORGY: float
    dials_origin: tuple[float, float, float]
    pivot: str
    convention: str
    twotheta: float
    curved: bool
    point_pixel: bool


@dataclass
class BeamCentre:
    """The detector-plane coordinates (m) a convention derives from the user's beam centre:
    (Xbeam, Ybeam) as given or defaulted, the direct-beam spot (Fbeam, Sbeam), the near
    point (Fclose, Sclose) and (Xclose, Yclose), and the pivot the convention implies."""

    Xbeam: float
    Ybeam: float
    Xclose: float
    Yclose: float
    Fbeam: float
    Sbeam: float
    Fclose: float
    Sclose: float
    pivot: str
    detsize_f: float
    detsize_s: float


def beam_centre(det: DetectorConfig, values: dict | None = None) -> BeamCentre:
    """nanoBragg's beam-centre defaults and mapping for ``det.convention``.

    ``values``: differentiable stand-ins (0-d arrays, m or pixels as the fields) for some of
    ``Xbeam``/``Ybeam``/``Xclose``/``Yclose``/``ORGX``/``ORGY``; which default applies is
    decided from ``det``'s host values, the arithmetic runs on the stand-ins (then the
    returned coordinates are arrays)."""
    px = det.pixel_size
    given = {} if values is None else values
    pick = lambda name, host: given.get(name, host)  # noqa: E731
    detsize_f = det.detsize_f if det.detsize_f is not None else px * det.fpixels
    detsize_s = det.detsize_s if det.detsize_s is not None else px * det.spixels
    conv = det.convention
    nan = float("nan")
    val = lambda v: nan if v is None else float(v)  # noqa: E731
    Xbeam, Ybeam = val(det.Xbeam), val(det.Ybeam)
    Xclose, Yclose = val(det.Xclose), val(det.Yclose)
    Fclose = (pick("ORGX", det.ORGX) - 0.5) * px if det.ORGX is not None else detsize_f / 2.0
    Sclose = (pick("ORGY", det.ORGY) - 0.5) * px if det.ORGY is not None else detsize_s / 2.0
    Xclose = Fclose if math.isnan(Xclose) else pick("Xclose", Xclose)
    Yclose = Sclose if math.isnan(Yclose) else pick("Yclose", Yclose)
    # the user's beam centre, when given, as its stand-in (the defaults below stay host)
    Xbeam = Xbeam if math.isnan(Xbeam) else pick("Xbeam", Xbeam)
    Ybeam = Ybeam if math.isnan(Ybeam) else pick("Ybeam", Ybeam)
    isnan = lambda v: isinstance(v, float) and math.isnan(v)  # noqa: E731
    Fbeam, Sbeam = Fclose, Sclose
    pivot = det.pivot
    if conv == "ADXV":
        Xbeam = (detsize_f + px) / 2.0 if isnan(Xbeam) else Xbeam
        Ybeam = (detsize_s - px) / 2.0 if isnan(Ybeam) else Ybeam
        Fbeam, Sbeam, pivot = Xbeam, detsize_s - Ybeam, "BEAM"
    elif conv in ("MOSFLM", "DENZO"):
        Xbeam = (detsize_s + px) / 2.0 if isnan(Xbeam) else Xbeam
        Ybeam = (detsize_f + px) / 2.0 if isnan(Ybeam) else Ybeam
        half = 0.5 * px if conv == "MOSFLM" else 0.0
        Fbeam, Sbeam, pivot = Ybeam + half, Xbeam + half, "BEAM"
    elif conv in ("XDS", "DIALS"):
        Xbeam = Xclose if isnan(Xbeam) else Xbeam
        Ybeam = Yclose if isnan(Ybeam) else Ybeam
        Fbeam, Sbeam, pivot = Xbeam, Ybeam, "SAMPLE"
    else:  # CUSTOM
        Xbeam = Xclose if isnan(Xbeam) else Xbeam
        Ybeam = Yclose if isnan(Ybeam) else Ybeam
        Fbeam, Sbeam = Xbeam, Ybeam
        Fclose, Sclose = Xbeam, Ybeam
    return BeamCentre(Xbeam, Ybeam, Xclose, Yclose, Fbeam, Sbeam, Fclose, Sclose, pivot, detsize_f, detsize_s)


def beam_ratio(det: DetectorConfig, beam, odet, *, xp, values: dict | None = None) -> tuple[float, float]:
    """How much longer the beam path to the detector is than its normal distance
    (beam . rotated odet, never exactly 0), and the normal distance (m): the user's
    ``-close_distance``, else |ratio * distance|.

    ``values``: differentiable stand-ins for ``rotx``/``roty``/``rotz``/``distance``/
    ``close_distance``; the two results are then arrays (the zero test stays on the host)."""
    ratio = float(dot(beam, rotate_xyz(odet, det.rotx, det.roty, det.rotz, xp=xp), xp=xp))
    if ratio == 0.0:
        ratio = np.finfo(float).tiny
    elif values is not None:
        v = lambda name: values.get(name, getattr(det, name))  # noqa: E731
        ratio = dot(beam, rotate_xyz(odet, v("rotx"), v("roty"), v("rotz"), xp=xp), xp=xp)
    close_distance = det.close_distance
    if values is not None and close_distance is not None:
        close_distance = values.get("close_distance", close_distance)
    if close_distance is None:
        distance = det.distance if values is None else values.get("distance", det.distance)
        close_distance = abs(ratio * distance)
    return ratio, close_distance


@dataclass
class DetectorFrame:
    """The placed detector as arrays of the namespace (m), for the assembly phase of a
    differentiable set-up: what the engine reads from :class:`DetectorGeometry`."""

    pix0: object
    fdet: object
    sdet: object
    odet: object
    beam: object
    close_distance: object
    distance: object


def build_detector(det: DetectorConfig, axes: dict, *, xp, dtype, notes: list, values: dict | None = None):
    """Place the detector as nanoBragg does (convention, beam centre, pivot, rotations).

    ``values`` (the assembly phase of :mod:`nbxp.params`): differentiable stand-ins, keyed by
    :class:`DetectorConfig` field name, for fields of ``det`` (whose host values made every
    decision); the result is then a :class:`DetectorFrame` computed by namespace operations
    only, without the host copies of the final frame."""
    px = det.pixel_size
    conv = det.convention
    bc = beam_centre(det, values)
    Xbeam, Ybeam, Xclose, Yclose = bc.Xbeam, bc.Ybeam, bc.Xclose, bc.Yclose
    Fbeam, Sbeam, Fclose, Sclose, pivot = bc.Fbeam, bc.Sbeam, bc.Fclose, bc.Sclose, bc.pivot
    detsize_f, detsize_s = bc.detsize_f, bc.detsize_s

    beam, _ = unit_host(axes["beam"])
    fdet, _ = unit_host(axes["fdet"])
    sdet, _ = unit_host(axes["sdet"])
    odet, omag = unit_host(axes["odet"])
    if omag != 1.0:
        # nanoBragg keeps odet only when it was given exactly unit length
        notes.append("WARNING: auto-generating odet_vector")
        odet, _ = unit_host(np.cross(fdet, sdet))
    tt_axis = axes["twotheta_axis"]

    A = lambda v: xp.asarray(np.asarray(v, dtype=float), dtype=dtype)  # noqa: E731
    beam_x, fdet_x, sdet_x, odet_x, tt_x = A(beam), A(fdet), A(sdet), A(odet), A(tt_axis)
    rx, ry, rz, tt = det.rotx, det.roty, det.rotz, det.twotheta
    if values is not None:
        rx, ry, rz, tt = (values.get(k, getattr(det, k)) for k in ("rotx", "roty", "rotz", "twotheta"))

    ratio, close_distance = beam_ratio(det, beam_x, odet_x, xp=xp, values=values)

    pix0 = None
    if pivot == "SAMPLE":
        pix0 = -Fclose * fdet_x - Sclose * sdet_x + close_distance * odet_x
        pix0 = rotate_axis(rotate_xyz(pix0, rx, ry, rz, xp=xp), tt_x, tt, xp=xp)
    fdet_x = rotate_axis(rotate_xyz(fdet_x, rx, ry, rz, xp=xp), tt_x, tt, xp=xp)
    sdet_x = rotate_axis(rotate_xyz(sdet_x, rx, ry, rz, xp=xp), tt_x, tt, xp=xp)
    odet_x = rotate_axis(rotate_xyz(odet_x, rx, ry, rz, xp=xp), tt_x, tt, xp=xp)
    if pivot == "BEAM":
        distance = close_distance / ratio
        pix0 = -Fbeam * fdet_x - Sbeam * sdet_x + distance * beam_x
    if values is not None:
        close_distance = dot(pix0, odet_x, xp=xp)
        return DetectorFrame(pix0, fdet_x, sdet_x, odet_x, beam_x, close_distance, close_distance / ratio)

    # near point and direct-beam spot in the final frame
    Fclose = -float(dot(pix0, fdet_x, xp=xp))
    Sclose = -float(dot(pix0, sdet_x, xp=xp))
    close_distance = float(dot(pix0, odet_x, xp=xp))
    hit = close_distance / ratio * beam_x - pix0
    Fbeam = float(dot(fdet_x, hit, xp=xp))
    Sbeam = float(dot(sdet_x, hit, xp=xp))
    distance = close_distance / ratio
    p = [float(pix0[i]) for i in range(3)]
    dials_origin = (1000.0 * p[2], 1000.0 * p[1], -1000.0 * p[0])

    return DetectorGeometry(
        fpixels=det.fpixels, spixels=det.spixels, pixel_size=px,
        detsize_f=detsize_f, detsize_s=detsize_s,
        pix0=pix0, fdet=fdet_x, sdet=sdet_x, odet=odet_x, beam=beam_x,
        distance=distance, close_distance=close_distance,
        Xbeam=Xbeam, Ybeam=Ybeam, Fbeam=Fbeam, Sbeam=Sbeam,
        Xclose=Xclose, Yclose=Yclose, Fclose=Fclose, Sclose=Sclose,
        ORGX=Fclose / px + 0.5, ORGY=Sclose / px + 0.5, dials_origin=dials_origin,
        pivot=pivot, convention=conv, twotheta=tt, curved=det.curved, point_pixel=det.point_pixel,
    )


def pixel_positions(geom: DetectorGeometry, fpix, spix, oversample: int, Odet, *, xp):
    """Lab positions (m) of every sub-pixel of the given pixels, components first.

    ``fpix``/``spix``: integer arrays (P,); ``Odet``: depths into the sensor (m), array (T,).
    Returns an array (3, T, oversample, oversample, P) -- x, y, z, then the sub-pixels in
    the order nanoBragg visits them (thickness layer, sub-pixel slow, sub-pixel fast), pixels
    last so that every later elementwise step streams over contiguous memory -- plus the
    (Fdet, Sdet) of the last sub-pixel of each pixel (used for nanoBragg's ``max_I``).
    """
    dtype = geom.fdet.dtype
    sub = geom.pixel_size / oversample
    o = xp.arange(oversample, dtype=dtype)[:, None]
    F = sub * (xp.astype(fpix, dtype)[None, :] * oversample + o) + sub / 2.0  # (O, P)
    S = sub * (xp.astype(spix, dtype)[None, :] * oversample + o) + sub / 2.0  # (O, P)
    col = lambda v: xp.reshape(v, (3, 1, 1, 1, 1))  # noqa: E731
    pos = col(geom.fdet) * F[None, None, None, :, :] + col(geom.sdet) * S[None, None, :, None, :]
    pos = pos + (col(geom.odet) * xp.reshape(Odet, (1, -1, 1, 1, 1)) + col(geom.pix0))
    if geom.curved:
        # nanoBragg's curved detector: every pixel at `distance`, with the flat position's
        # lab y and z taken as arc lengths about sdet and fdet
        d = geom.distance
        r0 = d * geom.beam
        last = xp.permute_dims(pos, (1, 2, 3, 4, 0))
        last = rotate_axis(rotate_axis(r0, geom.sdet, last[..., 1] / d, xp=xp), geom.fdet, last[..., 2] / d, xp=xp)
        pos = xp.permute_dims(last, (4, 0, 1, 2, 3))
    return pos, F[-1, :], S[-1, :]


def subpixel_positions(geom: DetectorGeometry, fpix, spix, oversample: int, Odet, *, xp):
    """:func:`pixel_positions` with the vector components last: (P, T, O, O, 3)."""
    pos, F, S = pixel_positions(geom, fpix, spix, oversample, Odet, xp=xp)
    return xp.permute_dims(pos, (4, 1, 2, 3, 0)), F, S


def solid_angle(airpath, pixel_size: float, close_distance: float, point_pixel: bool, *, xp):
    """Solid angle (sr) of a pixel seen at ``airpath`` metres: (pixel/R)^2 * (close/R),
    or 1/R^2 for a point pixel, as nanoBragg computes it."""
    if point_pixel:
        return 1.0 / (airpath * airpath)
    return pixel_size * pixel_size / (airpath * airpath) * close_distance / airpath


def capture_fraction(diffracted, odet, layer, thickstep: float, mu: float, *, xp):
    """Fraction of photons absorbed in sensor layer ``layer`` (0-based, array broadcasting)
    for rays along ``diffracted`` (unit vectors, components last)."""
    return capture_fraction_cos(dot(diffracted, odet, xp=xp), layer, thickstep, mu, xp=xp)


def capture_fraction_cos(parallax, layer, thickstep: float, mu: float, *, xp):
    """Fraction absorbed in layer ``layer`` for rays at ``parallax`` = cos(angle to the
    sensor normal): exp(-t mu/parallax) - exp(-(t+1) mu/parallax), t the layer's front
    depth (m) in units of ``thickstep`` (m), ``mu`` in 1/m (Beer-Lambert along the ray)."""
    return (xp.exp(-layer * thickstep * mu / parallax)
            - xp.exp(-(layer + 1) * thickstep * mu / parallax))


def _panel_axis(v) -> np.ndarray:
    """A panel's fast or slow axis as a host float64 unit vector: as given when it is unit
    to 1e-12 (a geometry file's or the flags' own axes keep their bits), else normalised."""
    v = np.asarray(v, dtype=np.float64)
    mag = math.sqrt(float(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
    return v if abs(mag - 1.0) <= 1e-12 else v / mag


def panel_geometry(spec, det: DetectorConfig, beam_unit, *, xp, dtype) -> DetectorGeometry:
    """The :class:`DetectorGeometry` of one flat panel of a multi-panel detector
    (:class:`nbxp.panels.PanelSpec`, SI units, nbxp's lab frame), as the engine uses it.

    pix0 is the panel's ``origin``, fdet/sdet its fast/slow unit axes and odet = fdet x sdet
    (normalised; negated for a mirrored panel whose fdet x sdet points towards the sample,
    so that odet always points into the sensor, away from the sample).  ``close_distance`` = pix0 . odet: the signed distance (m) of the panel's
    plane from the sample, which the solid angle uses as nanoBragg uses its close distance
    (omega = (pixel/R)^2 close/R: the obliquity of the ray to *this* panel's normal).  The
    near point (Fclose, Sclose) is the foot of that normal on the plane, ORGX/ORGY the
    same in pixels (+0.5, XDS); ``distance`` (m) is the path along ``beam_unit`` to the
    plane and (Fbeam, Sbeam) the point where the beam meets it, all nan when the beam's ray
    never meets the plane (parallel, or the plane behind the sample along the beam).
    Conventions and pivots do not apply (convention "CUSTOM", pivot "SAMPLE", two-theta 0:
    the panel is already placed); a panel is never curved; ``point_pixel`` comes from
    ``det`` (-point_pixel)."""
    px = float(spec.pixel_size)
    A = lambda v: xp.asarray(np.asarray(v, dtype=np.float64), dtype=dtype)  # noqa: E731
    fdet_h, sdet_h = _panel_axis(spec.fast), _panel_axis(spec.slow)
    odet_h, _ = unit_host(np.cross(fdet_h, sdet_h))
    if float(np.dot(np.asarray(spec.origin, dtype=np.float64), odet_h)) < 0.0:
        # a mirrored panel (fast x slow towards the sample): the sensor's depth, the
        # obliquity of the solid angle and the parallax of absorption all run away from the
        # sample, so the normal is turned to point away from it
        odet_h = -odet_h
    beam_h, _ = unit_host(beam_unit)
    pix0, fdet, sdet, odet, beam = A(spec.origin), A(fdet_h), A(sdet_h), A(odet_h), A(beam_h)
    # the same arithmetic as build_detector's final frame, so that a panel equal to the
    # flags' detector gives its numbers
    Fclose = -float(dot(pix0, fdet, xp=xp))
    Sclose = -float(dot(pix0, sdet, xp=xp))
    close_distance = float(dot(pix0, odet, xp=xp))
    ratio = float(dot(beam, odet, xp=xp))
    nan = float("nan")
    distance = close_distance / ratio if ratio != 0.0 else nan
    if not distance > 0.0:  # the beam's ray never meets the plane
        distance = Fbeam = Sbeam = nan
    else:
        hit = distance * beam - pix0
        Fbeam = float(dot(fdet, hit, xp=xp))
        Sbeam = float(dot(sdet, hit, xp=xp))
    p = [float(c) for c in np.asarray(spec.origin, dtype=np.float64)]
    return DetectorGeometry(
        fpixels=int(spec.fpixels), spixels=int(spec.spixels), pixel_size=px,
        detsize_f=px * int(spec.fpixels), detsize_s=px * int(spec.spixels),
        pix0=pix0, fdet=fdet, sdet=sdet, odet=odet, beam=beam,
        distance=distance, close_distance=close_distance,
        Xbeam=Fbeam, Ybeam=Sbeam, Fbeam=Fbeam, Sbeam=Sbeam,
        Xclose=Fclose, Yclose=Sclose, Fclose=Fclose, Sclose=Sclose,
        ORGX=Fclose / px + 0.5, ORGY=Sclose / px + 0.5,
        dials_origin=(1000.0 * p[2], 1000.0 * p[1], -1000.0 * p[0]),
        pivot="SAMPLE", convention="CUSTOM", twotheta=0.0, curved=False, point_pixel=bool(det.point_pixel),
    )
