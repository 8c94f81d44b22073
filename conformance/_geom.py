"""An independent model of nanoBragg's detector placement (docs/spec/geometry.md).

Written from the specification, not from either program, so that tests can state where the
detector must be for a given command line and compare with what a program reports (SMV
header) and renders (pixel intensities).  Lengths in metres, angles in radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: beam b, fast f, slow s, normal o, two-theta axis, polarization p, spindle u
CONVENTIONS = {
    "MOSFLM": dict(b=(1, 0, 0), f=(0, 0, 1), s=(0, -1, 0), o=(1, 0, 0), tt=(0, 0, -1), p=(0, 0, 1), u=(0, 0, 1)),
    "DENZO": dict(b=(1, 0, 0), f=(0, 0, 1), s=(0, -1, 0), o=(1, 0, 0), tt=(0, 0, -1), p=(0, 0, 1), u=(0, 0, 1)),
    "ADXV": dict(b=(0, 0, 1), f=(1, 0, 0), s=(0, -1, 0), o=(0, 0, 1), tt=(-1, 0, 0), p=(1, 0, 0), u=(1, 0, 0)),
    "XDS": dict(b=(0, 0, 1), f=(1, 0, 0), s=(0, 1, 0), o=(0, 0, 1), tt=(1, 0, 0), p=(1, 0, 0), u=(1, 0, 0)),
    "DIALS": dict(b=(0, 0, 1), f=(1, 0, 0), s=(0, 1, 0), o=(0, 0, 1), tt=(0, 1, 0), p=(0, 1, 0), u=(0, 1, 0)),
}
PIVOT = {"MOSFLM": "BEAM", "DENZO": "BEAM", "ADXV": "BEAM", "XDS": "SAMPLE", "DIALS": "SAMPLE"}


def rot_xyz(v, rx, ry, rz):
    """Right-handed rotations about lab x, then y, then z."""
    v = np.asarray(v, float)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ (Ry @ (Rx @ v))


def rot_axis(v, axis, phi):
    """Right-handed rotation of ``v`` about the unit vector ``axis`` (Rodrigues)."""
    v, k = np.asarray(v, float), np.asarray(axis, float)
    return v * math.cos(phi) + np.cross(k, v) * math.sin(phi) + k * (k @ v) * (1 - math.cos(phi))


@dataclass
class Detector:
    f: np.ndarray
    s: np.ndarray
    o: np.ndarray
    b: np.ndarray
    p: np.ndarray
    pix0: np.ndarray
    pixel: float
    Fbeam: float        # where the direct beam meets the detector (after rotations)
    Sbeam: float
    Fclose: float       # foot of the perpendicular from the sample
    Sclose: float
    close_distance: float
    distance: float     # along the beam
    Xbeam: float        # as given or defaulted (what BEAM_CENTER_X/Y record)
    Ybeam: float

    @property
    def orgx(self):
        return self.Fclose / self.pixel + 0.5

    @property
    def orgy(self):
        return self.Sclose / self.pixel + 0.5

    @property
    def dials_origin_mm(self):
        return 1000.0 * np.array([self.pix0[2], self.pix0[1], -self.pix0[0]])

    def positions(self, fpixels, spixels):
        """Pixel-centre positions (spixels, fpixels, 3) in the lab frame."""
        ff = (np.arange(fpixels) + 0.5) * self.pixel
        ss = (np.arange(spixels) + 0.5) * self.pixel
        return (self.pix0[None, None, :] + ff[None, :, None] * self.f[None, None, :]
                + ss[:, None, None] * self.s[None, None, :])

    def beam_pixel(self):
        """(slow, fast) pixel-index coordinates of the direct-beam spot (pixel centres are
        integers)."""
        return self.Sbeam / self.pixel - 0.5, self.Fbeam / self.pixel - 0.5


def place(conv="MOSFLM", fpixels=64, spixels=None, pixel=1e-4, distance=0.1, close_distance=None,
          Xbeam=None, Ybeam=None, ORGX=None, ORGY=None, Xclose=None, Yclose=None, rot=(0.0, 0.0, 0.0),
          twotheta=0.0, pivot=None, custom=None) -> Detector:
    """The detector nanoBragg's rules give for these settings (named conventions; ``custom``:
    a dict of vectors and ``pivot`` for the CUSTOM convention)."""
    spixels = spixels or fpixels
    dsf, dss = fpixels * pixel, spixels * pixel
    Fclose = (ORGX - 0.5) * pixel if ORGX is not None else dsf / 2
    Sclose = (ORGY - 0.5) * pixel if ORGY is not None else dss / 2
    Xclose = Fclose if Xclose is None else Xclose   # only a default beam centre, as in nanoBragg
    Yclose = Sclose if Yclose is None else Yclose
    if custom is None:
        v = {k: np.array(x, float) for k, x in CONVENTIONS[conv].items()}
        pivot = PIVOT[conv]  # the named conventions decide the pivot, whatever the flags say
        if conv in ("MOSFLM", "DENZO"):
            Xb = Xbeam if Xbeam is not None else (dss + pixel) / 2
            Yb = Ybeam if Ybeam is not None else (dsf + pixel) / 2
            half = 0.5 * pixel if conv == "MOSFLM" else 0.0
            Fbeam, Sbeam = Yb + half, Xb + half
        elif conv == "ADXV":
            Xb = Xbeam if Xbeam is not None else (dsf + pixel) / 2
            Yb = Ybeam if Ybeam is not None else (dss - pixel) / 2
            Fbeam, Sbeam = Xb, dss - Yb
        else:
            Xb = Xbeam if Xbeam is not None else Xclose
            Yb = Ybeam if Ybeam is not None else Yclose
            Fbeam, Sbeam = Xb, Yb
    else:
        v = {k: np.array(x, float) for k, x in custom.items()}
        Xb = Xbeam if Xbeam is not None else Xclose
        Yb = Ybeam if Ybeam is not None else Yclose
        Fbeam, Sbeam = Xb, Yb
        Fclose, Sclose = Xb, Yb
    for k in ("b", "f", "s", "o"):
        v[k] = v[k] / np.linalg.norm(v[k])
    ratio = float(v["b"] @ rot_xyz(v["o"], *rot))
    if close_distance is None:
        close_distance = abs(ratio * distance)
    distance = close_distance / ratio
    if pivot == "SAMPLE":
        pix0 = -Fclose * v["f"] - Sclose * v["s"] + close_distance * v["o"]
        pix0 = rot_axis(rot_xyz(pix0, *rot), v["tt"], twotheta)
    f, s, o = (rot_axis(rot_xyz(v[k], *rot), v["tt"], twotheta) for k in ("f", "s", "o"))
    if pivot == "BEAM":
        pix0 = -Fbeam * f - Sbeam * s + distance * v["b"]
    Fclose, Sclose, close_distance = -pix0 @ f, -pix0 @ s, pix0 @ o
    r = close_distance / ratio * v["b"] - pix0
    return Detector(f=f, s=s, o=o, b=v["b"], p=v["p"], pix0=pix0, pixel=pixel, Fbeam=float(f @ r),
                    Sbeam=float(s @ r), Fclose=float(Fclose), Sclose=float(Sclose),
                    close_distance=float(close_distance), distance=float(close_distance / ratio), Xbeam=Xb, Ybeam=Yb)


def header_expectations(det: Detector, detsize_s: float) -> dict[str, float]:
    """The SMV header values (mm, pixels) that describe ``det``."""
    mm, px = 1000.0, det.pixel * 1000.0
    return {
        "DISTANCE": det.distance * mm, "CLOSE_DISTANCE": det.close_distance * mm,
        "BEAM_CENTER_X": det.Xbeam * mm, "BEAM_CENTER_Y": det.Ybeam * mm,
        "ADXV_CENTER_X": det.Fbeam * mm, "ADXV_CENTER_Y": (detsize_s - det.Sbeam) * mm,
        "MOSFLM_CENTER_X": det.Sbeam * mm - 0.5 * px, "MOSFLM_CENTER_Y": det.Fbeam * mm - 0.5 * px,
        "DENZO_X_BEAM": det.Sbeam * mm, "DENZO_Y_BEAM": det.Fbeam * mm,
        "XDS_ORGX": det.orgx, "XDS_ORGY": det.orgy,
    }


def header_floats(head: dict) -> dict[str, float]:
    out = {}
    for k, v in head.items():
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def check_header(head: dict, det: Detector, detsize_s: float, rel=2e-5, abs_=2e-4):
    """Compare the geometry keys of an SMV header with the model; %g prints six digits."""
    got = header_floats(head)
    want = header_expectations(det, detsize_s)
    bad = {k: (got.get(k), round(w, 6)) for k, w in want.items()
           if k not in got or not math.isclose(got[k], w, rel_tol=rel, abs_tol=abs_)}
    origin = [float(x) for x in head["DIALS_ORIGIN"].split(",")]
    if not np.allclose(origin, det.dials_origin_mm, rtol=rel, atol=abs_):
        bad["DIALS_ORIGIN"] = (origin, det.dials_origin_mm.round(6).tolist())
    assert not bad, f"header differs from the model (got, expected): {bad}"


# ------------------------------------------------------------------ per-pixel physics

def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def omega(P, close_distance, pixel, point_pixel=False):
    """Solid angle of a pixel seen at position(s) P: pixel^2/R^2 * close_distance/R, or
    1/R^2 for a point pixel."""
    R = np.linalg.norm(P, axis=-1)
    return 1.0 / R**2 if point_pixel else pixel**2 / R**2 * close_distance / R


def kahn(P, b, p, K):
    """Kahn polarization factor for diffraction towards P of a beam along b with E-vector p."""
    d = unit(P)
    i = unit(b)
    c = d @ i
    B = unit(np.cross(p, i))
    E = unit(np.cross(i, B))
    psi = -np.arctan2(d @ B, d @ E)
    return 0.5 * (1.0 + c**2 - K * np.cos(2 * psi) * (1.0 - c**2))


def miller(P, b, wavelength, cell=(100e-10, 100e-10, 100e-10)):
    """Fractional (h, k, l) at P for an orthorhombic cell with a, b, c along lab x, y, z
    (the orientation -cell gives without misset)."""
    q = (unit(P) - unit(b)) / wavelength
    return q[..., 0] * cell[0], q[..., 1] * cell[1], q[..., 2] * cell[2]


def spot(det: Detector, d):
    """(slow, fast) pixel-index coordinates where the ray along d meets the detector."""
    d = np.asarray(d, float)
    t = (det.pix0 @ det.o) / (d @ det.o)
    r = t * d - det.pix0
    return float(r @ det.s) / det.pixel - 0.5, float(r @ det.f) / det.pixel - 0.5
