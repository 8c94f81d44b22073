"""Series on Dask distributed: the frame is the task, from one laptop to a cluster of GPU nodes.

nbxp does not schedule frames itself: it hands them to Dask (``pip install "nbxp[dask]"``).

* **What travels.**  The client builds the series once (to check it and to write the series'
  metadata) and ships a :class:`FrameJob` to every worker once (``Client.scatter``,
  broadcast): the :class:`~nbxp.config.SimConfig` and the series' parameters, the planned
  outputs and the writer's settings.  Each worker rebuilds the shared set-up from it once
  and keeps it (:func:`_worker_series`, keyed by the job's token), because the set-up holds
  array-namespace objects (NumPy's, CuPy's device arrays) that should not cross a network.
  The set-up is deterministic (seeded mosaic domains, sources, HKL grid from the config), so
  every worker's is the client's bit for bit.
* **The task** (:func:`render_frame`): frame ``i`` = :meth:`nbxp.series.Series.frame` (its
  own noise seed ``seed + i``), written on the worker through the series writer
  (:class:`nbxp.io.dataset.SeriesWriter`, so SMV/CBF/raw/PGM files are the serial run's byte
  for byte, each written atomically), NeXus as one data file per frame
  (:mod:`nbxp.io.nexus_vds`).  It returns a small record: index, files with SHA-256, the
  image's SHA-256, statistics, seconds, where it ran.
* **The client** keeps a bounded window of tasks in flight (a few per worker thread: the
  scheduler never holds 10^5 tasks), appends each finished frame to the manifest
  (:mod:`nbxp.io.manifest`), and when every frame is in writes the NeXus masters (a virtual
  dataset over the frame files) and the ground-truth ``.expt``.
* **Failures.**  A worker that dies has its tasks rerun elsewhere by Dask (the scheduler's
  ``allowed-failures``); files are renamed into place whole, so a killed frame leaves at
  most a hidden temporary, removed at the end.  An exception in a task is retried
  ``retries`` times unless it is an :class:`~nbxp.errors.NbxpError` (bad input found late:
  deterministic, retrying cannot help); then no new frame starts, the frames in flight
  finish and are recorded, and the run stops with one :class:`FrameError` line.  The
  manifest then lists exactly the complete frames, and ``--resume`` continues from there.

Results do not depend on where or in which order frames ran: a frame is a pure function of
the shared set-up and its index (:mod:`nbxp.series`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import NbxpError

__all__ = ["FrameError", "FrameJob", "SeriesRequest", "simulate_series", "simulate_sweep", "cluster",
           "render_frame", "fingerprint"]

#: how long a client waits for the first worker of an external cluster (s)
WAIT_FOR_WORKERS_S = float(os.environ.get("NBXP_DASK_WAIT_S", "120"))
#: how long a client tries to reach a scheduler (s)
CONNECT_S = float(os.environ.get("NBXP_DASK_CONNECT_S", "30"))
#: tasks in flight per worker thread (enough to keep every worker busy between the
#: client's round trips, few enough that the scheduler's state stays small)
WINDOW_PER_THREAD = 4


class FrameError(NbxpError):
    """A frame of a distributed series failed for a reason retrying cannot fix (bad input
    found late, an unwritable output file, a frame that kills its workers); the message
    starts with the frame number (1-based) and names the flag or file."""


class DaskMissing(NbxpError):
    """Dask is not installed."""


def _require_dask():
    try:
        import distributed
    except ImportError:
        raise DaskMissing("--workers/--scheduler: Dask is not installed (pip install \"nbxp[dask]\")") from None
    return distributed


# ---------------------------------------------------------------- what a worker needs

@dataclass(frozen=True)
class SeriesRequest:
    """How to rebuild a series on a worker (:func:`nbxp.series.prepare_series`'s arguments,
    the renderer already chosen on the client: 'cpu', 'numpy' or 'cupy')."""

    config: object
    frames: int | None
    stills: int | None
    orientation_seed: int | None
    backend: str
    dtype: str | None
    fast_math: bool | None

    def build(self):
        from .series import prepare_series
        return prepare_series(self.config, frames=self.frames, stills=self.stills,
                              orientation_seed=self.orientation_seed, backend=self.backend, dtype=self.dtype,
                              fast_math=self.fast_math)


@dataclass(frozen=True)
class FrameJob:
    """Everything a task needs besides the frame index: the series, the planned outputs
    (:class:`nbxp.io.dataset.Output`), the writer's settings, engine threads (None: the
    worker's share of its host's cores) and whether the record carries the float image."""

    request: SeriesRequest
    token: str
    outputs: tuple = ()
    scale: float = 0.0
    pgm_scale: float = 0.0
    adc: float = 40.0
    adc_given: bool = False
    threads: int | None = None
    tile_bytes: int | None = None
    keep_image: bool = False


def fingerprint(obj) -> str:
    """A SHA-256 digest of a settings tree (dataclasses, tuples, dicts, NumPy arrays,
    numbers, strings) that is the same in every process and Python version: the identity
    of a series in its manifest and the key of the workers' set-up cache."""
    h = hashlib.sha256()

    def walk(o):
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            h.update(b"D" + type(o).__qualname__.encode())
            for f in dataclasses.fields(o):
                h.update(f.name.encode())
                walk(getattr(o, f.name))
        elif isinstance(o, np.ndarray):
            a = np.ascontiguousarray(o)
            h.update(b"A" + str(a.dtype).encode() + repr(a.shape).encode())
            h.update(a.tobytes())
        elif isinstance(o, (list, tuple)):
            h.update(b"L%d" % len(o))
            for x in o:
                walk(x)
        elif isinstance(o, dict):
            h.update(b"M%d" % len(o))
            for k in sorted(o, key=repr):
                walk(k)
                walk(o[k])
        elif isinstance(o, (bool, np.bool_)):
            h.update(b"B1" if o else b"B0")
        elif isinstance(o, (int, np.integer)):
            h.update(b"I" + str(int(o)).encode())
        elif isinstance(o, (float, np.floating)):
            h.update(b"F" + float(o).hex().encode())
        elif o is None:
            h.update(b"N")
        elif isinstance(o, str):
            h.update(b"S%d:" % len(o) + o.encode())
        else:
            h.update(b"R" + repr(o).encode())
    walk(obj)
    return h.hexdigest()


# ---------------------------------------------------------------- the worker side

_CACHE: "OrderedDict[str, tuple]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: set-ups a worker keeps (a parameter sweep builds one per configuration)
CACHE_SIZE = 4


def _worker_series(job: FrameJob):
    """(series, writer) of ``job``, built once per worker process and kept."""
    with _CACHE_LOCK:
        hit = _CACHE.get(job.token)
        if hit is not None:
            _CACHE.move_to_end(job.token)
            return hit
        from .io.dataset import SeriesWriter
        series = job.request.build()
        writer = SeriesWriter(series, list(job.outputs), scale=job.scale, pgm_scale=job.pgm_scale, adc=job.adc,
                              adc_given=job.adc_given)
        _CACHE[job.token] = (series, writer)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return series, writer


def _cores() -> int:
    from .engine import default_threads
    return default_threads()


def _engine_threads(job: FrameJob, threads_by_host: Mapping[str, int] | None) -> int:
    """Engine threads for one task: the job's, else this host's share computed by the
    client (cores // task slots on the host), else cores // this worker's task slots."""
    if job.threads:
        return int(job.threads)
    try:
        from distributed import get_worker
        w = get_worker()
    except Exception:  # not on a Dask worker (the serial path)
        return _cores()
    host = _host_of(w.address)
    if threads_by_host and host in threads_by_host:
        return int(threads_by_host[host])
    return max(1, _cores() // max(1, int(w.state.nthreads)))


def _host_of(address: str) -> str:
    m = re.match(r"^\w+://\[?([^\]]*?)\]?:\d+$", address or "")
    return m.group(1) if m else address


def render_frame(job: FrameJob, index: int, threads_by_host: Mapping[str, int] | None = None) -> dict:
    """The task: render frame ``index`` of ``job``, write its files, return its record.

    Record: ``index``, ``files`` ([path, sha256, bytes] per file, in output order),
    ``image_sha256`` (the float32 image's bytes), ``max_I``, ``photons``/``overloads`` (with
    a noise output), ``interpolation_fallback``, ``phi`` (rad), ``seed``, ``seconds`` (render
    and write), ``host``, ``pid``, ``threads``, and ``image`` (float32) when the job keeps
    images."""
    from .io.manifest import file_entry
    from .io.nexus_vds import FrameSink
    t0 = time.perf_counter()
    try:
        series, base = _worker_series(job)
        threads = _engine_threads(job, threads_by_host)
        frame = series.frame(int(index), threads=threads, float32_image=True,
                             **({} if job.tile_bytes is None else {"tile_bytes": int(job.tile_bytes)}))
        writer = copy.copy(base)  # a shallow copy per task: its NeXus sinks are this frame's
        sinks = {i: FrameSink(o.template) for i, o in enumerate(job.outputs) if not o.per_frame}
        writer._nexus = sinks
        rep = writer.write(frame)
        paths = rep.files + [p for s in sinks.values() for p in s.written]
        files = [file_entry(p) for p in paths]
    except NbxpError as e:
        raise FrameError(f"frame {int(index) + 1}: {e}") from None
    except OSError as e:
        if e.errno not in _FILE_ERRNOS:
            raise  # an I/O error that may pass (EIO, a stale NFS handle): retried by the client
        raise FrameError(f"frame {int(index) + 1}: {_os_error(e, job.outputs)}") from None
    from .gpu import to_host_float32
    img32 = to_host_float32(frame.image)
    rec = {"index": int(index), "files": files,
           "image_sha256": hashlib.sha256(memoryview(np.ascontiguousarray(img32)).cast("B")).hexdigest(),
           "max_I": float(rep.stats.max_I), "photons": rep.photons, "overloads": rep.overloads,
           "interpolation_fallback": bool(frame.interpolation is not None and frame.interpolation.trigger is not None),
           "phi": float(frame.phi), "seed": int(frame.seed), "threads": int(threads),
           "seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid()}
    if job.keep_image:
        rec["image"] = img32
    return rec


#: file-system errors that another try cannot fix: the series stops (FrameError)
_FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.EROFS, errno.ENOSPC,
                errno.EDQUOT, errno.ENAMETOOLONG, errno.EEXIST}


def _os_error(e: OSError, outputs) -> str:
    """One line for a file-system error, naming the output flag whose file it hit."""
    path = str(e.filename2 or e.filename or "")
    m = re.fullmatch(r"\.(.+)\.[A-Za-z0-9_]{8}", os.path.basename(path))
    if m:  # the temporary beside the file (nbxp.io.atomic_write): name the file itself
        path = os.path.join(os.path.dirname(path), m.group(1))
    flag = next((o.flag for o in outputs if path and _output_of(o, path)), None)
    what = f"cannot write {path}: {e.strerror or e}" if path else f"{e.strerror or e}"
    return f"{flag}: {what}" if flag else what


def _output_of(o, path: str) -> bool:
    from .io.nexus_vds import frame_path
    if o.per_frame:
        return o.matches(path)
    return os.path.dirname(os.path.realpath(path)) == os.path.dirname(os.path.realpath(o.template)) and \
        os.path.basename(path).startswith(os.path.splitext(os.path.basename(frame_path(o.template, 0)))[0][:-6])


# ---------------------------------------------------------------- clusters

def _tree_env() -> dict:
    """Environment for spawned workers: this nbxp first on PYTHONPATH (so workers import the
    client's code, not another installed copy)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": here + (os.pathsep + old if old else "")}


def _dashboard_ok() -> bool:
    try:
        import bokeh  # noqa: F401
        return True
    except ImportError:
        return False


@contextlib.contextmanager
def cluster(workers: int | None = None, scheduler: str | None = None, *, gpu: bool = False,
            engine_threads: int | None = None):
    """A connected :class:`distributed.Client` for the duration of the block.

    ``scheduler``: an address (``tcp://host:8786``) or a scheduler file (JSON, as
    ``dask scheduler --scheduler-file`` writes) of a cluster the user started; otherwise a
    local cluster of ``workers`` processes (default: one per core, or one per GPU with
    ``gpu``), one task at a time each, engine threads ``engine_threads`` (default cores //
    workers) passed on as OMP_NUM_THREADS.  GPU: dask-cuda's ``LocalCUDACluster`` where it is
    installed, else one Nanny per device with ``CUDA_VISIBLE_DEVICES`` set to it."""
    distributed = _require_dask()
    from .engine import default_threads
    quiet = logging.ERROR
    if scheduler is not None:
        if not os.path.isfile(scheduler) and "://" not in scheduler and (
                scheduler.endswith(".json") or os.sep in scheduler):
            raise FrameError(f"--scheduler: {scheduler}: no such scheduler file (or give an address, "
                             "tcp://host:8786)")
        kw = {"scheduler_file": scheduler} if os.path.isfile(scheduler) else {"address": scheduler}
        try:
            client = distributed.Client(timeout=f"{CONNECT_S}s", **kw)
        except (OSError, TimeoutError, ValueError) as e:
            raise FrameError(f"--scheduler: cannot connect to {scheduler}: {e}") from None
        try:
            yield client
        finally:
            client.close()
        return
    cores = default_threads()
    env = _tree_env()
    if gpu:
        n = workers or _gpu_count()
        threads = engine_threads or max(1, cores // max(1, n))
        env["OMP_NUM_THREADS"] = str(threads)
        try:
            from dask_cuda import LocalCUDACluster
            cl = LocalCUDACluster(n_workers=n, threads_per_worker=1, silence_logs=quiet,
                                  dashboard_address=":0", env=env)
        except ImportError:
            cl = _visible_devices_cluster(n, env, quiet)
    else:
        n = workers or cores
        threads = engine_threads or max(1, cores // max(1, n))
        env["OMP_NUM_THREADS"] = str(threads)
        cl = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=":0", silence_logs=quiet,
                                      env=env)
    try:
        client = distributed.Client(cl)
        try:
            yield client
        finally:
            client.close()
    finally:
        cl.close()


def _gpu_count() -> int:
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001
        raise FrameError(f"--workers: no GPU to count ({type(e).__name__}); give --workers N") from None


def _visible_devices_cluster(n: int, env: dict, quiet):
    """n single-GPU workers without dask-cuda: worker i sees only device i."""
    from distributed import Nanny, Scheduler, SpecCluster
    workers = {f"gpu-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": dict(env, CUDA_VISIBLE_DEVICES=str(i))}}
               for i in range(n)}
    sched = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}  # any free port (none without bokeh)
    return SpecCluster(workers=workers, scheduler=sched, silence_logs=quiet)


def describe_client(client) -> str:
    """One line: scheduler, workers, threads, dashboard."""
    info = client.scheduler_info()
    ws = info.get("workers", {})
    slots = sum(int(w.get("nthreads", 1)) for w in ws.values())
    link = client.dashboard_link if _dashboard_ok() else ""
    dash = f", dashboard {link}" if link else " (the dashboard needs bokeh: pip install bokeh)"
    return f"dask: scheduler {client.scheduler.address}, {len(ws)} workers, {slots} task slots{dash}"


def threads_by_host(client) -> dict[str, int]:
    """Engine threads per task on each host: its cores // the task slots of its workers (so
    workers x threads = cores on every node, however the user laid the workers out)."""
    info = client.scheduler_info().get("workers", {})
    cores = client.run(_cores)
    slots: dict[str, int] = {}
    ncores: dict[str, int] = {}
    for addr, w in info.items():
        h = _host_of(addr)
        slots[h] = slots.get(h, 0) + int(w.get("nthreads", 1))
        ncores[h] = max(ncores.get(h, 0), int(cores.get(addr, 1)))
    return {h: max(1, ncores[h] // max(1, slots[h])) for h in slots}


# ---------------------------------------------------------------- the client side

@dataclass
class _Plan:
    """One series of a run: its client-side series, job, manifest and frames to render."""

    series: object
    job: FrameJob
    outputs: list
    manifest: object = None
    todo: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    skipped: int = 0
    truth: str | None = None
    scattered: object = None


_KINDS = {"-floatfile": "float", "-intfile": "int", "-pgmfile": "pgm", "-noisefile": "noise"}


def _requests(outputs: Mapping[str, str] | None):
    from .io import dataset
    if not outputs:
        return []
    out = []
    for k, name in outputs.items():
        flag = "-" + k.lstrip("-")
        if flag not in _KINDS:
            raise FrameError(f"outputs: unknown output {k!r} (expected {', '.join(_KINDS)})")
        out.append((flag, getattr(dataset, _KINDS[flag].upper()), name))
    return out


def resolved_backend(series) -> str:
    """The renderer the client's series uses, by name, for the workers to use the same."""
    from .gpu import is_cupy
    if is_cupy(series.exp.xp):
        return "cupy"
    return "cpu" if series.renderer == "cpu" else "numpy"


def make_plan(series, outputs: Sequence, *, writer: Mapping | None = None, threads: int | None = None,
              tile_bytes: int | None = None, manifest: str | None = None, resume: bool = False,
              keep_image: bool = False, truth: str | None = None, dtype=None, inputs: Iterable[str] = ()) -> _Plan:
    """The plan of one series: its job (shipped to the workers), its manifest (opened now:
    on resume, the frames still complete on disk are skipped) and the frames to render."""
    from .io import manifest as mf
    w = dict(writer or {})
    req = SeriesRequest(series.config, series.count if series.kind == "rotation" else None,
                        series.count if series.kind == "stills" else None, series.orientation_seed,
                        resolved_backend(series), None if dtype is None else str(np.dtype(dtype)), series.fast_math)
    user_outs = list(outputs)
    # workers write where the client means: absolute names (a worker's working directory is
    # its own; on a cluster the outputs must be on a file system every worker shares)
    outs = tuple(dataclasses.replace(o, template=os.path.abspath(o.template)) for o in user_outs)
    settings = (req, w.get("scale", 0.0), w.get("pgm_scale", 0.0), w.get("adc", 40.0), w.get("adc_given", False))
    # the workers' cache key: the settings and where the files go
    token = fingerprint((settings, [(o.flag, o.kind, o.format, o.template) for o in outs]))
    job = FrameJob(req, token, outs, float(w.get("scale", 0.0)), float(w.get("pgm_scale", 0.0)),
                   float(w.get("adc", 40.0)), bool(w.get("adc_given", False)), threads, tile_bytes, keep_image)
    plan = _Plan(series, job, user_outs, truth=truth)
    if outs:
        path = manifest or mf.default_path(user_outs[0].template)
        for o in outs:
            if o.matches(path):
                raise FrameError(f"manifest: {path} is also an output of {o.flag}")
        for src in inputs:
            if src and os.path.realpath(src) == os.path.realpath(path):
                raise FrameError(f"manifest: {path} would overwrite the input file {src}")
        # the manifest's identity of the series: the settings and the output names relative to
        # the manifest (the directory may move between an interrupted run and its resumption)
        base = os.path.dirname(os.path.abspath(path))
        rel = [[o.flag, o.format, os.path.relpath(o.template, base)] for o in outs]
        header = {"series": fingerprint((settings, rel)), "kind": series.kind, "count": series.count, "outputs": rel}
        if resume:
            remove_stale_temporaries(outs)
        plan.manifest = mf.Manifest(path, header, resume=resume)
        plan.skipped = len(plan.manifest.done)
        plan.todo = [i for i in range(series.count) if i not in plan.manifest.done]
    else:
        plan.todo = list(range(series.count))
    return plan


def remove_stale_temporaries(outputs) -> int:
    """Remove the hidden temporaries (``.NAME.XXXXXXXX``, :func:`nbxp.io.atomic_write`'s) of
    this series' output names that a killed worker left behind; returns how many."""
    from .io.nexus_vds import frame_path
    pats: dict[str, list] = {}
    for o in outputs:
        names = [o.template] if o.per_frame else [o.template, frame_path(o.template, 0).replace("000001", "######")]
        for name in names:
            d, base = os.path.split(os.path.abspath(name))
            rx = "".join(r"\d{%d}" % len(p) if p.startswith("#") else re.escape(p)
                         for p in re.split(r"(#+)", base) if p)
            pats.setdefault(d, []).append(re.compile(r"\." + rx + r"\.[A-Za-z0-9_]{8}"))
    n = 0
    for d, rxs in pats.items():
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and any(r.fullmatch(name) for r in rxs):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(d, name))
                    n += 1
    return n


def finish_plan(plan: _Plan) -> list[str]:
    """After every frame of ``plan`` is in: NeXus masters and the ground truth; returns the
    files written."""
    from .io import dataset
    from .io.nexus_vds import write_master
    wrote = []
    for o in plan.outputs:
        if not o.per_frame:
            write_master(o.template, plan.series, kind_float=o.kind == dataset.FLOAT)
            wrote.append(o.template)
    if plan.truth is not None:
        dataset.write_truth(plan.truth, plan.series)
        wrote.append(plan.truth)
    remove_stale_temporaries(plan.outputs)
    return wrote


def _manifest_entry(rec: dict, base: str) -> dict:
    """A record as its manifest line: file names relative to the manifest's directory (the
    set of files and manifest can move together)."""
    keep = ("index", "image_sha256", "max_I", "photons", "overloads", "seed", "seconds", "host", "pid")
    e = {k: rec[k] for k in keep if k in rec}
    e["files"] = [[os.path.relpath(p, base), h, n] for p, h, n in rec["files"]]
    return e


def _as_given(plan: _Plan, path: str) -> str:
    """A worker's absolute file name as the user spelled the output (relative stays relative)."""
    for o in plan.outputs:
        if _output_of(o, path):
            return path if os.path.isabs(o.template) else os.path.relpath(path)
    return path


def run_plans(plans: Sequence[_Plan], client=None, *, retries: int = 2,
              on_record: Callable[[_Plan, dict], None] | None = None) -> None:
    """Render the frames of ``plans`` on ``client`` (None: in this process, one after the
    other), recording each in its plan and manifest as it arrives."""
    if client is None:
        for plan in plans:
            for i in plan.todo:
                _accept(plan, render_frame(plan.job, i), on_record)
        return
    from distributed import as_completed
    queue = deque((p, i) for p in plans for i in p.todo)
    if not queue:
        return
    if not client.scheduler_info().get("workers"):
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except (TimeoutError, OSError):
            raise FrameError(f"dask: no worker joined the scheduler {client.scheduler.address} in "
                             f"{WAIT_FOR_WORKERS_S:g} s (start some with: dask worker ADDRESS)") from None
    hosts = threads_by_host(client)
    left = {id(p): len(p.todo) for p in plans}
    inflight: dict = {}
    run_id = os.urandom(4).hex()
    # results are fetched by the client's event loop as tasks finish (pipelined), not by a
    # blocking round trip per frame here
    ac = as_completed(with_results=True, raise_errors=False)
    failure: BaseException | None = None
    state = {"window": 8, "at": 0.0}

    def window() -> int:
        # tasks in flight: a few per worker thread, refreshed as workers join or leave
        now = time.monotonic()
        if now - state["at"] > 5.0:
            state["window"] = max(8, WINDOW_PER_THREAD * sum(client.nthreads().values()))
            state["at"] = now
        return state["window"]

    def submit(plan, i, attempt):
        if plan.scattered is None:  # each series' job goes to the workers when its first frame does
            plan.scattered = client.scatter(plan.job, broadcast=True, hash=False)
        fut = client.submit(render_frame, plan.scattered, i, hosts, pure=False,
                            key=f"nbxp-frame-{run_id}-{plan.job.token[:8]}-{i}-{attempt}")
        inflight[fut] = (plan, i, attempt)
        ac.add(fut)

    def top_up():
        while queue and len(inflight) < window():
            p, i = queue.popleft()
            submit(p, i, 0)

    try:
        top_up()
        for fut, res in ac:
            plan, i, attempt = inflight.pop(fut)
            try:
                if fut.status == "error":
                    raise res[1]
                if isinstance(res, BaseException):  # cancelled
                    raise res
                rec = res
            except FrameError as e:
                failure = failure or e
            except Exception as e:  # noqa: BLE001 -- a worker's error: retry, then report it
                if failure is None and attempt < retries and not _killed(e):
                    submit(plan, i, attempt + 1)
                    continue
                if failure is None:
                    failure = FrameError(f"frame {i + 1}: {_describe(e)}")
            else:
                _accept(plan, rec, on_record)
                left[id(plan)] -= 1
                if not left[id(plan)] and plan.scattered is not None:  # that series is done
                    plan.scattered.release()
                    plan.scattered = None
            finally:
                fut.release()
            if failure is None:
                top_up()
            if not inflight:
                break
    except BaseException:
        # interrupted (Ctrl-C): nothing new starts; the frames recorded so far stand
        client.cancel(list(inflight))
        raise
    finally:
        for plan in plans:
            if plan.scattered is not None:
                plan.scattered.release()
                plan.scattered = None
    if failure is not None:
        raise failure


def _killed(e: BaseException) -> bool:
    return type(e).__name__ == "KilledWorker"


def _describe(e: BaseException) -> str:
    if _killed(e):
        return ("the workers rendering it died repeatedly (out of memory? see the workers' logs); "
                "the frames finished before it are recorded, --resume continues")
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _accept(plan: _Plan, rec: dict, on_record) -> None:
    rec["files"] = [[_as_given(plan, p), h, n] for p, h, n in rec["files"]]
    if plan.manifest is not None:
        plan.manifest.append(_manifest_entry(rec, plan.manifest.base))
    plan.records[rec["index"]] = rec
    if on_record is not None:
        on_record(plan, rec)


def _close(plans) -> None:
    for p in plans:
        if p.manifest is not None:
            p.manifest.close()


# ---------------------------------------------------------------- the library

def simulate_sweep(configs: Sequence, *, frames: int | None = None, stills: int | None = None,
                   orientation_seed: int | None = None, outputs: Sequence[Mapping[str, str] | None] | None = None,
                   client=None, workers: int | None = None, scheduler: str | None = None,
                   threads: int | None = None, backend: str | None = None, dtype=None,
                   fast_math: bool | None = None, resume: bool = False, truth: Sequence[str | None] | None = None,
                   writer: Mapping | None = None, retries: int = 2, images: bool | None = None,
                   on_record: Callable[[int, dict], None] | None = None) -> list[list[dict]]:
    """A parameter sweep: the series of each configuration in ``configs`` (its own
    orientation, wavelength, crystal size, ...), every frame of every series one task.

    ``outputs``: per configuration, a mapping of output flags to names as on the command
    line (``{"-noisefile": "run3/shot_#####.cbf", "-floatfile": "run3/f_#####.bin"}``;
    ``.h5``/``.nxs`` NeXus) or None; ``truth``: per configuration, a ``.expt`` name or None.
    ``client``: a connected :class:`distributed.Client`; else a cluster is started for the
    call (``scheduler`` address/file, or a local cluster of ``workers`` processes).
    ``images``: whether records carry the float32 image (default: when a series has no
    outputs).  ``resume``: skip frames the manifest lists as complete.  ``writer``: the
    series writer's settings (scale, pgm_scale, adc, adc_given).  Returns, per
    configuration, its frames' records (see :func:`render_frame`) in frame order."""
    from .io import dataset
    from .series import prepare_series
    configs = list(configs)
    outs = list(outputs) if outputs is not None else [None] * len(configs)
    truths = list(truth) if truth is not None else [None] * len(configs)
    if len(outs) != len(configs) or len(truths) != len(configs):
        raise FrameError("outputs/truth: give one entry per configuration")
    plans = []
    try:
        for cfg, o, t in zip(configs, outs, truths):
            n = frames if frames is not None else stills
            series = prepare_series(cfg, frames=frames, stills=stills, orientation_seed=orientation_seed,
                                    backend=backend, dtype=dtype, fast_math=fast_math)
            planned = dataset.plan(_requests(o), n, (), t) if o else []
            dataset.check_geometry(planned, series.exp)
            keep = (not planned) if images is None else bool(images)
            plans.append(make_plan(series, planned, writer=writer, threads=threads, resume=resume, keep_image=keep,
                                   truth=t, dtype=dtype))
        where = {id(p): k for k, p in enumerate(plans)}
        cb = None if on_record is None else (lambda plan, rec: on_record(where[id(plan)], rec))
        if client is None:
            gpu = resolved_backend(plans[0].series) == "cupy" if plans else False
            with cluster(workers, scheduler, gpu=gpu, engine_threads=threads) as c:
                run_plans(plans, c, retries=retries, on_record=cb)
        else:
            run_plans(plans, client, retries=retries, on_record=cb)
        for p in plans:
            finish_plan(p)
    finally:
        _close(plans)
    return [[p.records[i] for i in sorted(p.records)] for p in plans]


def simulate_series(config, *, frames: int | None = None, stills: int | None = None, **kw) -> list[dict]:
    """One series on Dask: :func:`simulate_sweep` with one configuration (``outputs`` a
    mapping or None, ``truth`` a name or None; the other arguments as there).

    >>> recs = nbxp.distributed.simulate_series(cfg, frames=100, workers=4,          # doctest: +SKIP
    ...                                         outputs={"-noisefile": "scan_#####.cbf"})
    """
    if "outputs" in kw:
        kw["outputs"] = [kw["outputs"]]
    if "truth" in kw:
        kw["truth"] = [kw["truth"]]
    return simulate_sweep([config], frames=frames, stills=stills, **kw)[0]


# ---------------------------------------------------------------- the command line

def check_cli_request(s) -> None:
    """--workers/--scheduler/--resume need a series; --workers and --scheduler exclude
    each other."""
    from .flags import UsageError
    given = [f for f, v in (("--workers", s.workers), ("--scheduler", s.scheduler), ("--resume", s.resume or None))
             if v is not None]
    if s.frames is None and s.stills is None:
        raise UsageError(f"{given[0]}: needs --frames N or --stills N")
    if s.workers is not None and s.scheduler is not None:
        raise UsageError("--workers and --scheduler: start a local cluster or connect to one, not both")


def run_cli_series(parsed, series, outputs, p, out, finish: Callable[[], None]) -> int:
    """The frames of ``nbxp --frames/--stills`` with ``--workers``/``--scheduler`` (Dask) or
    ``--resume`` alone (in this process); the printout as the serial run's, frame lines in
    the order frames finish.  ``finish``: the command's own last files (structure factors)."""
    import sys
    from .cli import frame_bar  # the command's bar: one over frames, on a terminal only
    s = parsed.state
    n = series.count
    writer = {"scale": s.intfile_scale, "pgm_scale": s.pgm_scale, "adc": s.adc, "adc_given": s.adc_given}
    tile = None if s.tile_mb is None else int(s.tile_mb * 2**20)
    inputs = [s.hklfile, s.pdbfile, s.matfile, s.imgfile, s.maskfile, s.sourcefile, s.stolfile]
    plan = make_plan(series, outputs, writer=writer, threads=s.threads, tile_bytes=tile, resume=s.resume,
                     truth=s.truth, dtype=s.dtype, inputs=inputs)
    try:
        if plan.manifest is not None:
            line = f"manifest: {plan.manifest.path}"
            if s.resume:
                stale = plan.manifest.stale
                line += f" ({plan.skipped} of {n} frames complete, skipped" + (
                    f"; {len(stale)} listed but missing or changed on disk, rendered again" if stale else "") + ")"
            p(line)
        rtd = 180.0 / math.pi

        def run(client):
            with frame_bar(n, s.progress) as bar:
                if bar is not None:
                    bar.update(plan.skipped)
                say = p if bar is None else (lambda line: bar.write(line, file=out))

                def on_record(_plan, rec):
                    line = (f"frame {rec['index'] + 1}/{n}: phi {rec['phi'] * rtd:g} deg, max_I {rec['max_I']:g}, "
                            f"noise seed {rec['seed']}")
                    if rec["photons"] is not None:
                        line += f", {rec['photons']:.0f} photons ({rec['overloads']} overloads)"
                    per_frame = [f[0] for f in rec["files"] if not _is_nexus_frame(f[0], outputs)]
                    say(line + (": " + " ".join(per_frame) if per_frame else ""))
                    if rec["interpolation_fallback"]:
                        say(f"WARNING: frame {rec['index'] + 1}: out of range for three point interpolation; "
                            "nearest-neighbour F from there on")
                    if bar is not None:
                        bar.update(1)
                    out.flush()
                run_plans([plan], client, on_record=on_record)

        if (s.workers is None and s.scheduler is None) or not plan.todo:
            run(None)  # in this process (--resume alone), or nothing left to render
        else:
            gpu = resolved_backend(series) == "cupy"
            cores_each = None
            if s.workers is not None and s.threads is None and not gpu:
                from .engine import default_threads
                cores_each = max(1, default_threads() // s.workers)
            with cluster(s.workers, s.scheduler, gpu=gpu, engine_threads=s.threads or cores_each) as client:
                if s.scheduler is not None and not client.scheduler_info().get("workers"):
                    p(f"dask: waiting up to {WAIT_FOR_WORKERS_S:g} s for workers to join {s.scheduler}")
                    out.flush()
                if cores_each is not None:
                    plan.job = dataclasses.replace(plan.job, threads=cores_each)
                p(describe_client(client) + (f", {plan.job.threads} engine threads per task" if plan.job.threads
                                             else ", engine threads per task: the host's cores / its task slots"))
                out.flush()
                run(client)
        for path in finish_plan(plan):
            if path != s.truth:
                p(f"wrote {path} ({n} frames; a virtual dataset over {os.path.splitext(path)[0]}_data_*{os.path.splitext(path)[1]})")
    finally:
        _close([plan])
    finish()
    if s.truth is not None:
        p(f"wrote the ground truth to {s.truth}")
    sys.stdout.flush()
    return 0


def _is_nexus_frame(path: str, outputs) -> bool:
    return any(not o.per_frame and _output_of(o, path) for o in outputs)


def manifest_lines(path: str) -> list[dict]:
    """The parsed lines of a manifest (for scripts and tests)."""
    with open(path) as fh:
        return [json.loads(x) for x in fh if x.strip()]
