"""Datasets: rotation scans and series of still shots, from one shared set-up.

A series is the set-up every frame shares, built once (:func:`prepare_series`: the
:class:`~nbxp.experiment.Experiment` with the detector geometry, HKL grid, sources and mosaic
domains), and frames that are pure functions of that set-up and their index
(:meth:`Series.frame`), so frames can be rendered in any order, alone, or handed out as
independent tasks.  Only the crystal orientations change from frame to frame.

* **Rotation scan** (``frames=N``): frame i (0-based) starts at phi_i = phi0 + i*osc and
  covers osc with the same phi sub-steps, so it is exactly the image a single run with
  ``-phi`` phi_i gives (nanoBragg's and nbxp's).
* **Still shots** (``stills=N``): osc 0; shot i's crystal is turned by a rotation R_i drawn
  uniformly over SO(3) (:func:`shot_rotation`), on top of the orientation that
  -cell/-mat/-misset and -phi give; mosaic domains apply after it as usual.
* **Noise seeds**: frame i's noise image uses seed + i (:func:`frame_seed`).

No file format is imported here (the writer is :mod:`nbxp.io.dataset`).  Angles in radians.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from . import crystal as xtal
from .config import SimConfig
from .errors import NbxpError
from .experiment import Experiment, build_experiment
from .vectors import rotate_axis

ROTATION, STILLS = "rotation", "stills"


class SeriesError(NbxpError):
    """A series that cannot be made as asked (the message names the flag)."""


def frame_seed(seed: int, index: int) -> int:
    """The noise seed of frame ``index`` (0-based) of a series run with noise seed ``seed``:
    seed + index.  Frame i's noise image is then exactly the noise image of the single run
    with ``-seed seed+i`` at that frame's orientation (nanoBragg's or nbxp's), frame 0's is
    the single run's with ``-seed seed``, and a frame never depends on the others.
    (Two series whose seeds differ by less than their length share seeds at different
    frames: give independent series seeds far apart.)"""
    return int(seed) + int(index)


def shot_rotation(orientation_seed: int, index: int) -> np.ndarray:
    """Still shot ``index``'s random rotation (host float64 (3, 3), lab frame), uniform over
    SO(3): Shoemake's unit quaternion (:func:`nbxp.crystal.uniform_rotation`) from three
    uniform deviates of NumPy's PCG64 generator seeded by the pair (orientation_seed,
    index) through :class:`numpy.random.SeedSequence`, so a shot depends on nothing but its
    own index and the series' seed."""
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(orientation_seed), int(index)])))
    u = gen.random(3)
    return xtal.uniform_rotation(float(u[0]), float(u[1]), float(u[2]))


def spindle_rotation(axis, phi: float) -> np.ndarray:
    """The matrix (host float64 (3, 3)) of the right-handed rotation by ``phi`` about the unit
    vector ``axis``, as :func:`nbxp.vectors.rotate_axis` applies it to row vectors."""
    ax = np.asarray(axis, dtype=np.float64)
    # rotate_axis turns each row e_k of the identity into R e_k: the rows of R^T
    return np.asarray(rotate_axis(np.eye(3), ax, float(phi), xp=np)).T


@dataclass(frozen=True)
class Frame:
    """One rendered frame of a series.

    ``image``: the float image (photons per pixel, (spixels, fpixels)) in the series'
    namespace and dtype; for a multi-panel detector a list of per-panel images (image p
    (spixels_p, fpixels_p), as :func:`nbxp.simulate` gives).  ``phi``: the spindle angle at the frame's start, ``osc`` its width
    (rad; 0 for stills).  ``rotation``: for a still shot, the crystal's full rotation from the
    base orientation (host (3, 3): the shot's random rotation times the -phi rotation), None
    in a rotation scan.  ``seed``: the noise seed of this frame.  ``interpolation``: the
    engine's interpolation state at the end (its fallback warning, as for one image).
    """

    index: int
    image: object
    phi: float
    osc: float
    rotation: np.ndarray | None
    seed: int
    interpolation: object = None

    @property
    def metadata(self) -> dict:
        """Per-frame metadata (degrees for angles)."""
        md = {"index": self.index, "phi_start_deg": math.degrees(self.phi), "osc_deg": math.degrees(self.osc),
              "noise_seed": self.seed}
        if self.rotation is not None:
            md["rotation"] = np.asarray(self.rotation).tolist()
        return md


@dataclass
class Series:
    """The set-up a whole series shares, and its frames as functions of their index.

    ``exp``: the experiment built once (its orientations are frame 0's); ``kind``:
    ``"rotation"`` or ``"stills"``; ``count``: frames; ``seed``: the noise seed of frame 0;
    ``orientation_seed``: the still shots' seed (None for a rotation scan).
    """

    config: SimConfig
    exp: Experiment
    kind: str
    count: int
    seed: int
    orientation_seed: int | None = None
    #: 'cpu': frames are rendered by the compiled CPU kernel (as :func:`nbxp.simulate` chose
    #: it); None: by ``exp``'s namespace (the array-API engine, or the CUDA kernel on CuPy)
    renderer: str | None = None
    fast_math: bool | None = None

    @property
    def phi0(self) -> float:
        return self.exp.sampling.phi0

    @property
    def osc(self) -> float:
        """Frame width (rad): the oscillation of a rotation scan, 0 for stills."""
        return self.exp.sampling.osc if self.kind == ROTATION else 0.0

    def frame_phi(self, index: int) -> float:
        """Spindle angle (rad) at the start of frame ``index``."""
        return self.phi0 + index * self.exp.sampling.osc if self.kind == ROTATION else self.phi0

    def frame_rotation(self, index: int) -> np.ndarray | None:
        """A still shot's full crystal rotation (host (3, 3)): R_index @ R_phi0; None for a
        rotation scan."""
        if self.kind != STILLS:
            return None
        R_phi = spindle_rotation(_host(self.exp.spindle_unit), self.phi0)
        return shot_rotation(self.orientation_seed, index) @ R_phi

    def crystal_rotations(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """(n, 3, 3) full rotations of the still shots (for the ground truth file)."""
        idx = range(self.count) if indices is None else indices
        return np.stack([self.frame_rotation(i) for i in idx]) if self.kind == STILLS else None

    def frame_experiment(self, index: int) -> Experiment:
        """The experiment of frame ``index``: the shared one with that frame's orientations
        (and, for a rotation frame, its phi range); nothing else is rebuilt."""
        if not 0 <= index < self.count:
            raise IndexError(f"frame {index} is outside the series of {self.count}")
        e = self.exp
        xp, dt = e.xp, e.dtype
        if self.kind == ROTATION:
            sampling = dataclasses.replace(e.sampling, phi0=self.frame_phi(index))
            extra = None
        else:
            sampling = e.sampling  # phisteps 1 at phi0, osc 0
            extra = shot_rotation(self.orientation_seed, index)
        orient = xtal.orientations(e.cell_real, xp.asarray(e.spindle_unit, dtype=dt), sampling, self.config.crystal.mosaic_seed,
                                   xp=xp, dtype=dt, extra=extra, umats=e.mosaic_umats)
        rows = xp.reshape(xp.permute_dims(orient, (1, 0, 2)), (-1, 3))
        return dataclasses.replace(e, orient=orient, orient_rows=rows, sampling=sampling)

    def frame(self, index: int, *, threads: int | None = None, tile_bytes: int | None = None,
              progress=None, float32_image: bool = False) -> Frame:
        """Render frame ``index`` (0-based); ``float32_image``: the image rounded to float32
        (what files hold), without a float64 image where the renderer allows it."""
        from .engine import render
        e = self.frame_experiment(index)
        img, interp = render(e, threads=threads, progress=progress, backend=self.renderer, fast_math=self.fast_math,
                             float32_image=float32_image,
                             **({} if tile_bytes is None else {"tile_bytes": int(tile_bytes)}))
        return Frame(index=index, image=img, phi=self.frame_phi(index), osc=self.osc,
                     rotation=self.frame_rotation(index), seed=frame_seed(self.seed, index), interpolation=interp)

    def frames(self, indices: Iterable[int] | None = None, **kw) -> Iterator[Frame]:
        """Frames in order (all, or ``indices``), rendered one at a time as they are asked for."""
        for i in (range(self.count) if indices is None else indices):
            yield self.frame(int(i), **kw)


def _host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(np.from_dlpack(a) if hasattr(a, "__dlpack__") else a)


def check_request(config: SimConfig, frames: int | None, stills: int | None, orientation_seed=None) -> None:
    """Refuse a series that cannot be made, naming the flag (before anything is built)."""
    if (frames is None) == (stills is None):
        raise SeriesError("give one of --frames N (rotation scan) or --stills N (still shots)")
    if frames is not None and orientation_seed is not None:
        raise SeriesError("--orientation-seed: only still shots (--stills) have random orientations")
    flag, n = ("--frames", frames) if frames is not None else ("--stills", stills)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SeriesError(f"{flag}: expected a positive number of frames, got {n!r}")
    cr = config.crystal
    if stills is not None:
        given = [f for f, v in (("-osc", cr.osc), ("-phistep", cr.phistep), ("-phisteps", cr.phisteps)) if v is not None]
        if given:
            raise SeriesError(f"--stills and {'/'.join(given)}: still shots have no oscillation "
                              "(use --frames N for a rotation scan)")


def prepare_series(config: SimConfig, *, frames: int | None = None, stills: int | None = None,
                   orientation_seed: int | None = None, xp=None, dtype=None, backend: str | None = None,
                   fast_math: bool | None = None) -> Series:
    """Build the shared set-up of a series (once) and return the :class:`Series`.

    ``frames``: a rotation scan of that many frames of -osc each; ``stills``: that many still
    shots, uniformly random orientations from ``orientation_seed`` (default: the noise
    seed).  ``xp``/``dtype``/``backend``/``fast_math`` as in :func:`nbxp.simulate` (by
    default the compiled CPU kernel renders, else the NumPy engine)."""
    from .api import backend_choice, resolve_dtype, resolve_namespace
    check_request(config, frames, stills, orientation_seed)
    module, renderer = backend_choice(xp, backend, dtype)
    ns = resolve_namespace(module)
    exp = build_experiment(config, xp=ns, dtype=resolve_dtype(ns, dtype))
    seed = int(config.seed)
    if frames is not None:
        if not exp.sampling.osc > 0.0:
            raise SeriesError("--frames: a rotation scan needs an oscillation per frame (-osc DEG)")
        return Series(config, exp, ROTATION, int(frames), seed, renderer=renderer, fast_math=fast_math)
    oseed = abs(seed) if orientation_seed is None else int(orientation_seed)
    if oseed < 0:
        raise SeriesError(f"--orientation-seed: expected a non-negative integer, got {orientation_seed!r}")
    return Series(config, exp, STILLS, int(stills), seed, oseed, renderer=renderer, fast_math=fast_math)


def simulate_series(config: SimConfig, *, frames: int | None = None, stills: int | None = None,
                    orientation_seed: int | None = None, indices: Iterable[int] | None = None, xp=None,
                    dtype=None, backend: str | None = None, threads: int | None = None,
                    tile_bytes: int | None = None, fast_math: bool | None = None) -> Iterator[Frame]:
    """The frames of a rotation scan (``frames=N``) or of still shots (``stills=N``), as
    :class:`Frame` records, rendered one by one as the iterator is advanced (memory does not
    grow with the number of frames).  ``indices``: only those frames (0-based), identical
    to the same frames of the whole series.  The set-up is built when this is called.

    >>> for f in nbxp.simulate_series(cfg, frames=20):        # doctest: +SKIP
    ...     f.index, f.image.shape, f.metadata
    """
    s = prepare_series(config, frames=frames, stills=stills, orientation_seed=orientation_seed, xp=xp,
                       dtype=dtype, backend=backend, fast_math=fast_math)
    return s.frames(indices, threads=threads, tile_bytes=tile_bytes)
