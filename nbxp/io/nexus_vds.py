"""NeXus for a distributed series: one small HDF5 data file per frame, written by the worker
that rendered it, and the NXmx master (:mod:`nbxp.io.nexus`) written once at the end, whose
``/entry/data/data`` is an HDF5 virtual dataset (VDS, HDF5 >= 1.10) over those files.

Readers (h5py, dxtbx/DIALS) see the master exactly as the single-file series: one
``(frames, slow, fast)`` dataset and the same geometry.  The frames never pass through the
client, so the series' data cross the shared file system once.

* Frame file of output ``scan.h5``, frame i (0-based): ``scan_data_{i+1:06d}.h5`` beside it (the output's own extension)
  (the Eiger convention of ``_data_NNNNNN``), one dataset ``data`` (slow, fast), int32 or
  float32, one chunk, shuffle + gzip (as the single file).  Written under a temporary name
  and renamed, so it is whole or absent.
* The master's VDS names its sources relative to the master's directory (``./name``):
  HDF5 looks for a relative source beside the virtual file, so the set can be moved as a
  directory.  Frames missing at read time read as the fill value 0; the master is only
  written once every frame file is complete (the manifest says so).
"""

from __future__ import annotations

import os

import numpy as np

from . import commit_temporary, temporary_beside

DATA = "data"


def frame_path(master: str, index: int) -> str:
    """The data file of frame ``index`` (0-based) of the NeXus output ``master``."""
    root, ext = os.path.splitext(master)
    return f"{root}_data_{index + 1:06d}{ext}"


def frame_paths(master: str, count: int) -> list[str]:
    return [frame_path(master, i) for i in range(count)]


def write_frame(path: str, data) -> None:
    """One frame's data file (whole or not at all)."""
    import h5py
    from .nexus import GZIP_LEVEL
    a = np.ascontiguousarray(data)
    if a.ndim != 2 or a.dtype not in (np.dtype(np.int32), np.dtype(np.float32)):
        raise TypeError(f"a NeXus frame is a 2-D int32 or float32 array, got {a.dtype} {a.shape}")
    tmp, mode = temporary_beside(path)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(DATA, data=a, chunks=a.shape, compression="gzip", compression_opts=GZIP_LEVEL,
                             shuffle=True)
        commit_temporary(tmp, path, mode)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class FrameSink:
    """Stands in for the series' :class:`~nbxp.io.nexus.NexusWriter` inside a worker's
    :class:`~nbxp.io.dataset.SeriesWriter`: ``write(index, data)`` writes that frame's file."""

    def __init__(self, master: str):
        self.master = master
        self.written: list[str] = []

    def write(self, index: int, data) -> None:
        p = frame_path(self.master, index)
        write_frame(p, data)
        self.written.append(p)


def write_master(path: str, series, *, kind_float: bool) -> None:
    """The NXmx master of ``series`` (a :class:`nbxp.series.Series`) with ``/entry/data/data``
    a virtual dataset over the frame files (all of which must exist)."""
    import h5py
    from ..images import COUNT_SATURATION
    from .nexus import NexusWriter
    dtype = np.float32 if kind_float else np.int32
    w = NexusWriter(path, series.exp, nframes=series.count, dtype=dtype, start_angle=series.phi0,
                    angle_increment=series.osc, stills=series.kind == "stills",
                    exposure=series.config.beam.exposure, saturation=None if kind_float else COUNT_SATURATION)
    try:
        # the writer made an empty chunked dataset (no chunk written, a few hundred bytes);
        # it is replaced by the virtual one, the rest of the layout is the writer's own
        grp = w._file["/entry/data"]
        shape, fill = grp[DATA].shape, grp[DATA].fillvalue
        del grp[DATA]
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        d = os.path.dirname(os.path.abspath(path))
        for i in range(series.count):
            src = frame_path(path, i)
            if not os.path.isfile(src):
                raise FileNotFoundError(2, "frame file missing", src)
            rel = "./" + os.path.relpath(os.path.abspath(src), d)
            layout[i] = h5py.VirtualSource(rel, DATA, shape=shape[1:], dtype=dtype)
        grp.create_virtual_dataset(DATA, layout, fillvalue=fill)
        w._written[:] = True
        w.close()
    except BaseException:
        w.abort()
        raise
