"""SMV (ADSC) images: nanoBragg's header-driven geometry from ``-img``/``-mask`` files.

nanoBragg looks a keyword up by its *last* occurrence anywhere in the header text (so
``DISTANCE`` finds ``CLOSE_DISTANCE=`` when both are present) and reads the number after the
next ``=``; :func:`header_value` reproduces that rule.
"""

from __future__ import annotations

import re

import numpy as np

from . import InputError

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
    hb = 512 if hb is None else int(hb)
    if hb != 512:
        head = raw[:hb].split(b"\0")[0].decode("latin-1")
    w, h = header_value(head, "SIZE1"), header_value(head, "SIZE2")
    if not w or not h or w < 1 or h < 1:
        raise InputError(f"{flag}: {path} has no usable SIZE1/SIZE2 in its header")
    w, h = int(w), int(h)
    order = head.rsplit("BYTE_ORDER=", 1)[-1][:10] if "BYTE_ORDER=" in head else "little_end"
    dt = np.dtype(">u2") if order.startswith("big_endian") else np.dtype("<u2")
    need = hb + 2 * w * h
    if len(raw) < need:
        raise InputError(f"{flag}: {path} is truncated: {len(raw)} bytes, expected {need} for {w}x{h} pixels")
    data = np.frombuffer(raw[hb:need], dtype=dt).reshape(h, w)
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
