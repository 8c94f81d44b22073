"""Integer images derived from the float image, exactly as nanoBragg derives them (host).

All take the float32 image (what nanoBragg holds) and the boolean ROI box; pixels outside
the ROI are 0 in every output.
"""

from __future__ import annotations

import numpy as np

from .rng import poisson_counts

#: pixels per block of rows in the whole-image passes: temporaries stay ~10 MB whatever the
#: detector size
BLOCK_PIXELS = 1 << 20


def row_blocks(shape: tuple[int, int], pixels: int = BLOCK_PIXELS):
    """Slices of whole rows covering an image of ``shape``, about ``pixels`` pixels each."""
    rows = max(1, pixels // max(shape[1], 1))
    for r0 in range(0, shape[0], rows):
        yield slice(r0, min(r0 + rows, shape[0]))


def int_scale(scale: float, max_I: float) -> float:
    """The SMV scale: the user's when > 0, else 55000/max_I (1 for a blank image)."""
    if scale > 0.0:
        return scale
    return 55000.0 / max_I if max_I > 0.0 else 1.0


def int_image(img32: np.ndarray, roi: np.ndarray, scale: float, adc: float) -> np.ndarray:
    """Noiseless SMV pixels: float * scale + adc, clipped to [0, 65535], rounded half up in
    single precision (nanoBragg's floorf(x + 0.5))."""
    out = np.zeros(img32.shape, dtype=np.uint16)
    for rows in row_blocks(img32.shape):
        v = img32[rows].astype(np.float64) * scale + adc
        v = np.clip(v, 0.0, 65535.0)
        out[rows] = np.floor((v + 0.5).astype(np.float32)).astype(np.uint16)
    out[~roi] = 0
    return out


def pgm_scale(scale: float, int_scale_: float, rmsd: float) -> float:
    """The PGM scale: the user's when > 0, else 250/(5 rmsd) (the SMV scale for a flat image)."""
    if scale > 0.0:
        return scale
    return 250.0 / (5.0 * rmsd) if rmsd > 0.0 else int_scale_


def pgm_image(img32: np.ndarray, roi: np.ndarray, scale: float) -> np.ndarray:
    out = np.zeros(img32.shape, dtype=np.uint8)
    for rows in row_blocks(img32.shape):
        v = np.minimum(img32[rows].astype(np.float64) * scale, 255.0)
        out[rows] = np.where(roi[rows], np.trunc(np.maximum(v, 0.0)), 0.0).astype(np.uint8)
    return out


def noise_image(img32: np.ndarray, roi: np.ndarray, seed: int, adc: float):
    """Poisson-noise SMV pixels from nanoBragg's generator seeded like ``-seed``.

    Returns (uint16 image, photons drawn, overloads).  Pixels are visited in nanoBragg's
    order (slow, then fast) so the sequence of deviates, and so the image, equals
    nanoBragg's for the same seed.
    """
    sel = np.flatnonzero(roi.reshape(-1))
    counts = poisson_counts(img32.reshape(-1)[sel], -int(seed)).astype(np.float64)
    total = float(np.sum(counts))
    n = counts + adc
    over = n > 65535.0
    n = np.where(over, 65535.0, n)
    out = np.zeros(img32.shape, dtype=np.uint16)
    out.reshape(-1)[sel] = np.where(n >= 0, np.trunc(n), 0.0).astype(np.uint16)
    return out, total, int(np.count_nonzero(over))
