"""The statistics nanoBragg prints after a run, computed the way it computes them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .images import row_blocks


@dataclass
class ImageStats:
    max_I: float
    max_I_x: float  # fast coordinate (m) of the last sub-pixel of the brightest pixel
    max_I_y: float  # slow coordinate (m)
    mean: float
    rms: float
    rmsd: float

    def lines(self) -> list[str]:
        return [f"max_I = {self.max_I:g}  at {self.max_I_x:g} {self.max_I_y:g}",
                f"mean= {self.mean:g} rms= {self.rms:g} rmsd= {self.rmsd:g}"]


def image_stats(img32: np.ndarray, rendered: np.ndarray, roi, pixel_size: float, oversample: int) -> ImageStats:
    """Statistics of the float32 image ``img32`` (spixels, fpixels).

    ``rendered``: bool mask of the pixels that were simulated (ROI and not masked): max, mean
    and rms run over them; rmsd runs over the whole ROI (masked pixels count as zeros there),
    both with nanoBragg's n-1 denominators.
    """
    # in blocks of rows, in float64 as nanoBragg accumulates: bounded temporaries
    n, total, sumsq = 0, 0.0, 0.0
    max_I, at = 0.0, None  # strictly greater: the first brightest pixel in pixel order wins
    # (the same values in the same order as a masked float64 copy of each block: a fully
    # rendered block skips the mask's copy, and the squares are taken in place after the
    # sum, so the sums are bitwise those of the plain expressions)
    for rows in row_blocks(img32.shape):
        r = rendered[rows]
        vals = img32[rows].astype(np.float64)
        vals = vals.reshape(-1) if r.all() else vals[r]
        if vals.size == 0:
            continue
        k = int(np.argmax(vals))
        if vals[k] > max_I:
            max_I = float(vals[k])
            at = (rows.start, rows.stop, k)
        n += vals.size
        total += float(np.sum(vals))
        np.multiply(vals, vals, out=vals)
        sumsq += float(np.sum(vals))
    mx, my = 0.0, 0.0
    if at is not None:
        r0, r1, k = at
        flat = np.flatnonzero(rendered[r0:r1].reshape(-1))[k]
        s, f = divmod(int(flat), img32.shape[1])
        s += r0
        sub = pixel_size / oversample
        mx = sub * (f * oversample + oversample - 1) + sub / 2.0
        my = sub * (s * oversample + oversample - 1) + sub / 2.0
    avg = total / (n if n > 0 else 1)
    rms = math.sqrt(sumsq / ((n if n > 1 else 2) - 1))
    fmin, fmax, smin, smax = roi
    box = img32[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1]
    m = box.size
    dev2 = 0.0
    for rows in row_blocks(box.shape):
        d = np.subtract(box[rows], avg, dtype=np.float64)  # float32 -> float64 exactly, then - avg
        np.multiply(d, d, out=d)
        dev2 += float(np.sum(d))
    rmsd = math.sqrt(dev2 / ((m if m > 1 else 2) - 1))
    return ImageStats(max_I, mx, my, avg, rms, rmsd)


@dataclass
class DetectorStats:
    """Statistics of a multi-panel image: ``total`` over every panel (as :func:`image_stats`
    of one image made of all of them: max and mean/rms over the simulated pixels, rmsd over
    the panels' ROI boxes), the brightest pixel's ``panel`` (index) and ``names``, and
    ``panels``, one :class:`ImageStats` per panel (positions in that panel's own frame)."""

    total: ImageStats
    panel: int
    names: list
    panels: list

    @property
    def max_I(self) -> float:
        return self.total.max_I

    @property
    def rmsd(self) -> float:
        return self.total.rmsd

    def lines(self) -> list[str]:
        t = self.total
        n = len(self.panels)
        out = [f"detector of {n} panels: max_I = {t.max_I:g}  at {t.max_I_x:g} {t.max_I_y:g} on panel "
               f"{self.names[self.panel]}",
               f"detector of {n} panels: mean= {t.mean:g} rms= {t.rms:g} rmsd= {t.rmsd:g}"]
        for name, st in zip(self.names, self.panels):
            out.append(f"  panel {name}: max_I = {st.max_I:g}  at {st.max_I_x:g} {st.max_I_y:g}  "
                       f"mean= {st.mean:g} rms= {st.rms:g} rmsd= {st.rmsd:g}")
        return out


def panel_stats(images, rendered, rois, pixel_sizes, oversample: int, names) -> DetectorStats:
    """:class:`DetectorStats` of per-panel float32 images (host, (spixels_p, fpixels_p)),
    with each panel's ``rendered`` mask, ROI (fmin, fmax, smin, smax) and pixel size (m).
    The whole detector's figures pool the panels' sums with nanoBragg's n-1 denominators."""
    per = [image_stats(im, r, roi, px, oversample) for im, r, roi, px in zip(images, rendered, rois, pixel_sizes)]
    n = [int(np.count_nonzero(r)) for r in rendered]
    N = sum(n)
    total = sum(st.mean * k for st, k in zip(per, n))
    # rms^2 (k - 1) is each panel's sum of squares (image_stats' denominators)
    sumsq = sum(st.rms ** 2 * ((k if k > 1 else 2) - 1) for st, k in zip(per, n))
    avg = total / (N if N > 0 else 1)
    rms = math.sqrt(sumsq / ((N if N > 1 else 2) - 1))
    dev2, M = 0.0, 0
    for im, (fmin, fmax, smin, smax) in zip(images, rois):
        box = im[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1]
        M += box.size
        for rows in row_blocks(box.shape):
            d = np.subtract(box[rows], avg, dtype=np.float64)
            np.multiply(d, d, out=d)
            dev2 += float(np.sum(d))
    rmsd = math.sqrt(dev2 / ((M if M > 1 else 2) - 1))
    best = 0
    for i, st in enumerate(per):
        if st.max_I > per[best].max_I:  # strictly greater: the first panel wins a tie
            best = i
    b = per[best]
    return DetectorStats(ImageStats(b.max_I, b.max_I_x, b.max_I_y, avg, rms, rmsd), best, list(names), per)
