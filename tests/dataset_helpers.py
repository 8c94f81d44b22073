"""Small datasets made with the library, frame by frame, for the file-format tests.

A rotation frame i is the single image nanoBragg makes with ``-phi phi0+i*osc -osc osc``; a
still shot is the image at ``-osc 0`` with the crystal turned by a rotation Q (applied as
``-misset`` angles on the standard-setting cell, so the truth is Q @ base).  The frames,
the Experiment and the rotations are returned for the writers.
"""

from __future__ import annotations

import math

import numpy as np

import nbxp
from nbxp.experiment import build_experiment

#: ~600x500 frames, a P1-indexable orthorhombic-metric cell, off-centre beam; phisteps 10 so
#: nanoBragg's left-endpoint phi sampling puts the frame's mean angle only osc/20 early
SCAN_ARGS = ("-cell 50 60 70 90 90 90 -default_F 100 -gauss_xtal -N 12 -lambda 1 -distance 100 -pixel 0.1 "
             "-detpixels_f 600 -detpixels_s 500 -Xbeam 26 -Ybeam 31 -oversample 1 -phisteps 10 "
             "-misset 10 20 30").split()
SCAN_CELL = (50, 60, 70, 90, 90, 90)

#: still shots need realistic crystals to index (../shared/notes/dials.md): Gaussian shape,
#: mosaic spread and bandwidth
STILL_ARGS = ("-cell 50 60 70 90 90 90 -default_F 100 -gauss_xtal -N 10 -mosaic 0.5 -mosaic_dom 50 "
              "-mosaic_seed 4 -dispersion 0.5 -dispsteps 3 -lambda 1 -distance 100 -pixel 0.1 "
              "-detpixels_f 600 -detpixels_s 500 -Xbeam 26 -Ybeam 31 -oversample 1").split()


def experiment(args) -> object:
    """The Experiment (geometry, base crystal) of a nanoBragg argument list."""
    return build_experiment(nbxp.config_from_args(list(args)), xp=np, dtype=np.float64)


def rotation_frames(args, *, nframes: int, osc_deg: float, phi0_deg: float = 0.0):
    """Yield (i, float image, Experiment) of a rotation scan, one nbxp image per frame."""
    for i in range(nframes):
        cfg = nbxp.config_from_args(list(args) + ["-phi", repr(phi0_deg + i * osc_deg), "-osc", repr(osc_deg)])
        exps: list = []
        img = nbxp.simulate(cfg, experiment_out=exps)
        yield i, np.asarray(img), exps[0]


def random_rotations(n: int, seed: int) -> np.ndarray:
    """n rotation matrices drawn uniformly from SO(3) (unit quaternions, Shoemake 1992)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u1, u2, u3 = rng.random(3)
        a, b = math.sqrt(1 - u1), math.sqrt(u1)
        w, x = a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2)
        y, z = b * math.sin(2 * math.pi * u3), b * math.cos(2 * math.pi * u3)
        out.append([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return np.array(out)


def xyz_angles(R: np.ndarray) -> tuple[float, float, float]:
    """Angles (deg) with R = Rz(rz) Ry(ry) Rx(rx): nbxp's -misset order."""
    ry = -math.asin(max(-1.0, min(1.0, R[2, 0])))
    rx = math.atan2(R[2, 1], R[2, 2])
    rz = math.atan2(R[1, 0], R[0, 0])
    return math.degrees(rx), math.degrees(ry), math.degrees(rz)


def still_frames(args, rotations):
    """Yield (i, float image, Experiment) of still shots, shot i's crystal turned by
    rotations[i] (nbxp's lab frame) from the standard setting (``args`` hold no -misset)."""
    for i, R in enumerate(rotations):
        cfg = nbxp.config_from_args(list(args) + ["-misset", *(repr(a) for a in xyz_angles(R)), "-osc", "0"])
        exps: list = []
        img = nbxp.simulate(cfg, experiment_out=exps)
        yield i, np.asarray(img), exps[0]


def counts(img: np.ndarray, seed: int) -> np.ndarray:
    """Poisson photon counts of a float image as int32 (a photon-counting detector's frame)."""
    return np.random.default_rng(seed).poisson(np.clip(img, 0, None)).astype(np.int32)
