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


#: SMV pixels are unsigned shorts
SMV_MAX = 65535
#: the saturation value of the photon-count (int32) images written to CBF and NeXus: the
#: largest int32.  A simulated counter never saturates, so only a pixel whose count does not
#: fit the file's integers is clipped there (and counted as an overload); the value is
#: recorded in the file (miniCBF Count_cutoff, NXdetector saturation_value) so readers trust
#: every smaller count
COUNT_SATURATION = 2**31 - 1


def int_image(img32: np.ndarray, roi: np.ndarray, scale: float, adc: float, *,
              limit: int = SMV_MAX, dtype=np.uint16) -> np.ndarray:
    """Noiseless SMV pixels: float * scale + adc, clipped to [0, 65535], rounded half up in
    single precision (nanoBragg's floorf(x + 0.5)).  ``limit``/``dtype``: another integer
    range (:func:`int_counts`)."""
    out = np.zeros(img32.shape, dtype=dtype)
    for rows in row_blocks(img32.shape):
        v = img32[rows].astype(np.float64) * scale + adc
        v = np.clip(v, 0.0, float(limit))
        # the minimum only acts for limits float32 cannot hold (2^31 - 1 rounds up to 2^31)
        out[rows] = np.minimum(np.floor((v + 0.5).astype(np.float32)), float(limit)).astype(dtype)
    out[~roi] = 0
    return out


def int_counts(img32: np.ndarray, roi: np.ndarray, scale: float, adc: float = 0.0) -> np.ndarray:
    """The noiseless integer image as int32 (for CBF/NeXus): the same rounding as
    :func:`int_image`, clipped to [0, :data:`COUNT_SATURATION`] instead of 65535; ``adc``
    is 0 unless the user gave ``-adc``."""
    return int_image(img32, roi, scale, adc, limit=COUNT_SATURATION, dtype=np.int32)


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


def _digitize(shape, sel: np.ndarray, n: np.ndarray, limit: int, dtype):
    """Pixels ``sel`` of an image of ``shape`` set to the values ``n`` clipped to ``limit``
    (counted as overloads) and truncated toward zero (negative values: 0), as nanoBragg
    stores its noise pixels; returns (image, overloads)."""
    over = n > float(limit)
    n = np.where(over, float(limit), n)
    out = np.zeros(shape, dtype=dtype)
    out.reshape(-1)[sel] = np.where(n >= 0, np.trunc(n), 0.0).astype(dtype)
    return out, int(np.count_nonzero(over))


def _poisson_roi(img32: np.ndarray, roi: np.ndarray, seed: int):
    """The selected pixels (flat indices, nanoBragg's order: slow, then fast) and their
    Poisson counts (float64) from nanoBragg's generator seeded like ``-seed``."""
    sel = np.flatnonzero(roi.reshape(-1))
    return sel, poisson_counts(img32.reshape(-1)[sel], -int(seed)).astype(np.float64)


def noise_image(img32: np.ndarray, roi: np.ndarray, seed: int, adc: float):
    """Poisson-noise SMV pixels from nanoBragg's generator seeded like ``-seed``.

    Returns (uint16 image, photons drawn, overloads).  Pixels are visited in nanoBragg's
    order (slow, then fast) so the sequence of deviates, and so the image, equals
    nanoBragg's for the same seed.
    """
    sel, counts = _poisson_roi(img32, roi, seed)
    out, over = _digitize(img32.shape, sel, counts + adc, SMV_MAX, np.uint16)
    return out, float(np.sum(counts)), over


def noise_counts(img32: np.ndarray, roi: np.ndarray, seed: int, adc: float = 0.0):
    """The noise image as a photon-counting detector records it (for CBF/NeXus): the same
    random stream and counts as :func:`noise_image` (so its SMV image for the same seed is
    this one plus the ADC offset, clipped at 65535), as int32 with no ADC offset unless
    ``adc`` is given, clipped only at :data:`COUNT_SATURATION`.

    Returns (int32 image, photons drawn, overloads)."""
    sel, counts = _poisson_roi(img32, roi, seed)
    out, over = _digitize(img32.shape, sel, counts + adc, COUNT_SATURATION, np.int32)
    return out, float(np.sum(counts)), over
