"""The statistics nanoBragg prints after a run, computed the way it computes them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
    v = img32.astype(np.float64)
    vals = v[rendered]
    n = vals.size
    max_I, mx, my = 0.0, 0.0, 0.0
    if n:
        k = int(np.argmax(vals))
        if vals[k] > 0.0:
            flat = np.flatnonzero(rendered.reshape(-1))[k]
            s, f = divmod(int(flat), img32.shape[1])
            sub = pixel_size / oversample
            max_I = float(vals[k])
            mx = sub * (f * oversample + oversample - 1) + sub / 2.0
            my = sub * (s * oversample + oversample - 1) + sub / 2.0
    total = float(np.sum(vals))
    sumsq = float(np.sum(vals * vals))
    avg = total / (n if n > 0 else 1)
    rms = math.sqrt(sumsq / ((n if n > 1 else 2) - 1))
    fmin, fmax, smin, smax = roi
    box = v[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1]
    m = box.size
    rmsd = math.sqrt(float(np.sum((box - avg) ** 2)) / ((m if m > 1 else 2) - 1))
    return ImageStats(max_I, mx, my, avg, rms, rmsd)
