#!/usr/bin/env python3
"""The GPU render of the full Pilatus frame against nanoBragg built with OpenMP.

    python scripts/benchmark_gpu.py --c-bin /path/to/nanoBragg [--repeats 5] [--json out.json]

Needs CuPy and an NVIDIA GPU (pip install -e ".[gpu]").  The case is the reference case
``pilatus_roi`` without ``-roi``: 2463 x 2527 pixels x 10 phi steps, -hkl scaled.hkl, nearest F.

Reported per precision (median of ``--repeats`` runs after one warm-up that compiles the
kernel):

- ``simulate``: ``nbxp.simulate(cfg, backend="cupy")`` in a warm process, set-up on the
  device included, synchronised at the end (the image stays on the GPU);
- ``kernel``: the launches alone (CUDA events around ``nbxp.gpu.render_kernel``);
- ``cli``: the ``nbxp --backend cupy`` command in a fresh process (Python, CuPy import and
  files included), once;
- peak GPU memory held by nbxp during ``simulate`` (CuPy pool, allocations not yet freed),
  against the target: twice the image plus the F grid;
- correlation with nanoBragg's image (0.9966 expected: nanoBragg's phi = 0 carry-over
  defect, docs/decisions.md) and maximum relative difference from the NumPy engine
  (``--no-numpy`` skips that slow CPU render).

nanoBragg runs with OMP_NUM_THREADS = every core of this machine; the ratio is its median
wall time over nbxp's (> 1: nbxp faster).  Targets (issue 6): float64 >= 50x, float32 >= 150x.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from benchmark import INPUTS, PILATUS  # noqa: E402

OUT = ["-nonoise", "-nopgm", "-noprogress", "-floatfile", "float.bin", "-intfile", "int.img"]


def workdir() -> str:
    d = tempfile.mkdtemp(prefix="nbxp-gpu-bench-")
    for f in os.listdir(INPUTS):
        if f in PILATUS:
            shutil.copy(INPUTS / f, d)
    return d


def run_nanobragg(c_bin: str, repeats: int) -> tuple[float, np.ndarray]:
    env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count()))
    times, img = [], None
    for _ in range(repeats):
        d = workdir()
        t0 = time.perf_counter()
        subprocess.run([c_bin, *shlex.split(PILATUS), *OUT], cwd=d, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
        img = np.fromfile(Path(d) / "float.bin", np.float32).astype(np.float64)
        shutil.rmtree(d)
    return statistics.median(times), img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c-bin", help="nanoBragg built with -fopenmp (omit to time nbxp alone)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy-engine comparison")
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    import nbxp
    from nbxp import gpu
    ok, why = gpu.gpu_status()
    if not ok:
        print(f"benchmark_gpu: no usable GPU: {why}", file=sys.stderr)
        return 2
    import cupy
    from nbxp.api import resolve_namespace
    from nbxp.experiment import build_experiment

    # an allocator that records the most bytes nbxp holds at once
    pool = cupy.cuda.MemoryPool()
    peak = [0]

    def malloc(size):
        mem = pool.malloc(size)
        peak[0] = max(peak[0], pool.used_bytes())
        return mem
    cupy.cuda.set_allocator(malloc)

    d = workdir()
    cfg = nbxp.config_from_args(shlex.split(PILATUS), cwd=d)
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    rows, images = [], {}
    ref = None
    if a.c_bin:
        c_time, ref = run_nanobragg(a.c_bin, a.repeats)
        rows.append(dict(program="nanoBragg (OpenMP, %d threads)" % os.cpu_count(), seconds=c_time))
    for dtype in ("float64", "float32"):
        nbxp.simulate(cfg, backend="cupy", dtype=dtype)  # warm-up: compiles (or loads) the kernel
        dev.synchronize()
        times = []
        for _ in range(a.repeats):
            pool.free_all_blocks()
            peak[0] = pool.used_bytes()
            t0 = time.perf_counter()
            img = nbxp.simulate(cfg, backend="cupy", dtype=dtype)
            dev.synchronize()
            times.append(time.perf_counter() - t0)
        held = peak[0]
        exp = build_experiment(cfg, xp=resolve_namespace(cupy), dtype=getattr(cupy, dtype))
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        ktimes = []
        for _ in range(a.repeats):
            start.record()
            gpu.render_kernel(exp)
            stop.record()
            stop.synchronize()
            ktimes.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        grid_bytes = int(np.prod(exp.F.shape)) * np.dtype(dtype).itemsize
        host = cupy.asnumpy(img).astype(np.float64).reshape(-1)
        images[dtype] = host
        t = statistics.median(times)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nbxp", *shlex.split(PILATUS), *OUT, "--backend", "cupy",
                        "--dtype", dtype], cwd=d, capture_output=True, check=True)
        cli = time.perf_counter() - t0
        row = dict(program=f"nbxp cupy {dtype}", seconds=t, kernel_seconds=statistics.median(ktimes),
                   cli_seconds=cli, peak_gpu_mb=held / 2**20,
                   target_mb=(2 * host.size * np.dtype(dtype).itemsize + grid_bytes) / 2**20)
        if ref is not None:
            row["ratio"] = rows[0]["seconds"] / t
            row["corr_nanoBragg"] = float(np.corrcoef(host, ref)[0, 1])
        rows.append(row)
    if not a.no_numpy:
        cpu = np.asarray(nbxp.simulate(cfg, xp=np), np.float64).reshape(-1)
        for r in rows[1 if ref is not None else 0:]:
            x = images[r["program"].split()[-1]]
            r["maxrel_numpy"] = float(np.abs(x - cpu).max() / np.abs(cpu).max())
            r["corr_numpy"] = float(np.corrcoef(x, cpu)[0, 1])

    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"GPU: {name}, {props['multiProcessorCount']} SMs; CPU cores: {os.cpu_count()}; "
          f"CuPy {cupy.__version__}; repeats {a.repeats}")
    print("| program | simulate (s) | kernel (s) | CLI cold (s) | nanoBragg / nbxp | peak GPU MB (target) "
          "| corr nanoBragg | max rel diff NumPy |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        print(f"| {r['program']} | {r['seconds']:.4f} | {fmt(r.get('kernel_seconds'), '.4f')} | "
              f"{fmt(r.get('cli_seconds'), '.2f')} | {fmt(r.get('ratio'), '.1f')} | "
              f"{fmt(r.get('peak_gpu_mb'), '.0f')} ({fmt(r.get('target_mb'), '.0f')}) | "
              f"{fmt(r.get('corr_nanoBragg'), '.6f')} | {fmt(r.get('maxrel_numpy'), '.1e')} |")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(gpu=name, cpu_cores=os.cpu_count(), rows=rows), indent=1))
    shutil.rmtree(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
