"""SMV (ADSC) images: nanoBragg's header-driven geometry from ``-img``/``-mask`` files.

nanoBragg looks a keyword up by its *last* occurrence anywhere in the header text (so
``DISTANCE`` finds ``CLOSE_DISTANCE=`` when both are present) and reads the number after the
next ``=``; :func:`header_value` reproduces that rule.
"""

from __future__ import annotations

import re

import numpy as np

from . import InputError, atomic_write

_NUM = re.compile(r"\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)")


def read_smv(path: str, flag: str) -> tuple[str, np.ndarray]:
    """Header text and the (SIZE2, SIZE1) unsigned-short data of an SMV file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise InputError(f"{flag}: cannot read {path}: {e.strerror}") from None
    if len(raw) < 512 or not raw.startswith(b"{\nHEADER_BYT"):
        raise InputError(f"{flag}: {path} does not look like an SMV (ADSC) image")
    head = raw[:512].split(b"\0")[0].decode("latin-1")
    hb = header_value(head, "HEADER_BYTES")
    if hb is not None and not 0 < hb <= len(raw):  # also refuses 1e999 (inf) before int()
        raise InputError(f"{flag}: {path} has an unusable HEADER_BYTES={hb:g} ({len(raw)} bytes in the file)")
    hb = 512 if hb is None else int(hb)
    if hb != 512:
        head = raw[:hb].split(b"\0")[0].decode("latin-1")
    w, h = header_value(head, "SIZE1"), header_value(head, "SIZE2")
    if not w or not h or not 1 <= w < 2**31 or not 1 <= h < 2**31:
        raise InputError(f"{flag}: {path} has no usable SIZE1/SIZE2 in its header")
    w, h = int(w), int(h)
    need = hb + 2 * w * h
    if len(raw) < need:
        raise InputError(f"{flag}: {path} is truncated: {len(raw)} bytes, expected {need} for {w}x{h} pixels")
    import fabio  # the community's image reader decodes the pixels (byte order, type)
    try:
        data = np.asarray(fabio.open(path).data)
    except Exception as e:  # fabio raises many kinds on malformed files
        raise InputError(f"{flag}: {path} could not be read as an SMV image ({type(e).__name__})") from None
    if data.shape != (h, w):
        raise InputError(f"{flag}: {path} holds {data.shape[1]}x{data.shape[0]} pixels, header says {w}x{h}")
    return head, data


def header_value(head: str, key: str):
    """nanoBragg's ``ValueOf``: the number after '=' following the last ``key`` in ``head``;
    None when the key is absent."""
    i = head.rfind(key)
    if i < 0:
        return None
    j = head.find("=", i + len(key))
    if j < 0:
        return 0.0
    m = _NUM.match(head, j + 1)
    return float(m.group(1)) if m else 0.0


def byte_order() -> str:
    import sys
    return "little_endian" if sys.byteorder == "little" else "big_endian"


def nanobragg_header(h: dict) -> bytes:
    """The 512-byte SMV header nanoBragg writes, from values in its units (mm, A, deg).

    Keys of ``h``: fpixels, spixels, pixel_mm, distance_mm, wavelength_A, Xbeam_mm, Ybeam_mm,
    Fbeam_mm, Sbeam_mm, detsize_s_mm, dials_origin (3 mm), ORGX, ORGY, close_distance_mm,
    phi_deg, osc_deg, twotheta_deg.  Numbers use C's %g, as nanoBragg prints them.
    """
    px = h["pixel_mm"]
    o = h["dials_origin"]
    text = (
        "{\nHEADER_BYTES=512;\nDIM=2;\n"
        f"BYTE_ORDER={byte_order()};\nTYPE=unsigned_short;\n"
        "SIZE1=%d;\nSIZE2=%d;\nPIXEL_SIZE=%g;\nDISTANCE=%g;\n" % (h["fpixels"], h["spixels"], px, h["distance_mm"])
        + "WAVELENGTH=%g;\n" % h["wavelength_A"]
        + "BEAM_CENTER_X=%g;\nBEAM_CENTER_Y=%g;\n" % (h["Xbeam_mm"], h["Ybeam_mm"])
        + "ADXV_CENTER_X=%g;\nADXV_CENTER_Y=%g;\n" % (h["Fbeam_mm"], h["detsize_s_mm"] - h["Sbeam_mm"])
        + "MOSFLM_CENTER_X=%g;\nMOSFLM_CENTER_Y=%g;\n" % (h["Sbeam_mm"] - 0.5 * px, h["Fbeam_mm"] - 0.5 * px)
        + "DENZO_X_BEAM=%g;\nDENZO_Y_BEAM=%g;\n" % (h["Sbeam_mm"], h["Fbeam_mm"])
        + "DIALS_ORIGIN=%g,%g,%g\n" % tuple(o)
        + "XDS_ORGX=%g;\nXDS_ORGY=%g;\n" % (h["ORGX"], h["ORGY"])
        + "CLOSE_DISTANCE=%g;\n" % h["close_distance_mm"]
        + "PHI=%g;\nOSC_START=%g;\nOSC_RANGE=%g;\n" % (h["phi_deg"], h["phi_deg"], h["osc_deg"])
        + "TWOTHETA=%g;\n" % h["twotheta_deg"]
        + "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f"
    )
    raw = text.encode("ascii")
    return raw.ljust(512, b" ") if len(raw) < 512 else raw


def header_values(exp, phi: float | None = None, osc: float | None = None) -> dict:
    """The geometry an SMV header records, in nanoBragg's header units; ``phi``/``osc``
    (rad): a series frame's start angle and width instead of the experiment's."""
    import math
    g = exp.geom
    rtd = 180.0 / math.pi
    phi = exp.sampling.phi0 if phi is None else phi
    osc = exp.sampling.osc if osc is None else osc
    return dict(fpixels=g.fpixels, spixels=g.spixels, pixel_mm=g.pixel_size * 1000.0,
                distance_mm=g.distance * 1000.0, wavelength_A=exp.wavelength * 1e10,
                Xbeam_mm=g.Xbeam * 1000.0, Ybeam_mm=g.Ybeam * 1000.0, Fbeam_mm=g.Fbeam * 1000.0,
                Sbeam_mm=g.Sbeam * 1000.0, detsize_s_mm=g.detsize_s * 1000.0, dials_origin=g.dials_origin,
                ORGX=g.ORGX, ORGY=g.ORGY, close_distance_mm=g.close_distance * 1000.0,
                phi_deg=phi * rtd, osc_deg=osc * rtd, twotheta_deg=g.twotheta * rtd)


def write_smv(path: str, data: np.ndarray, header: bytes) -> None:
    """``header`` followed by ``data`` as native-order unsigned shorts, fast-major."""
    atomic_write(path, [header, np.ascontiguousarray(data, dtype=np.uint16)])
