#!/usr/bin/env python3
"""Time nbxp (each backend and precision) against a nanoBragg binary on a fixed set of simulations.

    python scripts/benchmark.py [--c-bin PATH] [--repeats 3] [--threads N] [--only a,b]
                                [--json out.json] [--markdown out.md] [--series N]

``--series 100 --only series`` times the dataset row alone: ``nbxp --frames 100`` of 512x512
frames in one command against 100 nanoBragg runs of the same frames (``-phi`` per frame),
both writing the float and the SMV image of every frame (result in ``*_series.json``).

nbxp runs on NumPy (``--backend numpy``) in float64 and float32, and, where a usable GPU is
present, also on CuPy (``nbxp-cupy`` rows).  Runs alternate between programs (so drifts in
machine load hit both), each in a fresh temporary directory with the inputs it needs, and
report the median wall time, the ratio
to nanoBragg (its time / nbxp's: > 1 means nbxp is faster), the peak resident memory of
each process, and the correlation of each float image with nanoBragg's (or with nbxp
float64's when no binary is given).  Noise and PGM outputs are switched off for every
program: the benchmark measures the simulation.  Inputs come from ../shared/reference/inputs.

Two timings are reported for nbxp: ``cold``, the whole command in a fresh process (Python
and NumPy start-up included, as a shell loop over nanoBragg-style commands pays it), and
``warm``, the same command run again inside one Python process (``nbxp.cli.run``: flags,
simulation, statistics and files, without interpreter start-up), which is the throughput
of a batch of images driven from Python.  nanoBragg has no start-up to speak of: its cold
time is its warm time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INPUTS = HERE.parent.parent / "shared" / "reference" / "inputs"

PILATUS = ("-mat A.mat -hkl scaled.hkl -nointerpolate -oversample 1 -exposure 1 -flux 1e18 -beamsize 1.0 "
           "-spindle_axis -1 0 0 -Xbeam 217.742295 -Ybeam 213.907080 -distance 231.274660 -lambda 0.976800 "
           "-pixel 0.172 -detpixels_x 2463 -detpixels_y 2527 -odet_vector -0.000088 0.004914 -0.999988 "
           "-sdet_vector -0.005998 -0.999970 -0.004913 -fdet_vector 0.999982 -0.005998 -0.000118 "
           "-pix0_vector_mm -216.336293 215.205512 -230.200866 -beam_vector 0.00051387949 0.0 -0.99999986 "
           "-Na 36 -Nb 47 -Nc 29 -osc 0.1 -phi 0 -phisteps 10 -detector_rotx 0 -detector_roty 0 "
           "-detector_rotz 0 -twotheta 0")

CASES = {
    "simple_cubic": "-cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -default_F 100 -distance 100 -detsize 102.4 "
                    "-pixel 0.1",
    "triclinic_P1": "-misset -89.968546 -31.328953 177.753396 -cell 70 80 90 75 85 95 -default_F 100 -N 5 "
                    "-lambda 1.0 -detpixels 512",
    "pilatus_frame": PILATUS,
    "heavy_composite": "-cell 70 80 90 75 85 95 -default_F 100 -N 6 -mosaic 0.4 -mosaic_dom 6 -phi 0.5 -osc 60 "
                       "-phisteps 6 -detector_rotx 2 -detector_roty 3 -detector_rotz 4 -twotheta 8 "
                       "-detector_abs 300 -detector_thick 200 -thicksteps 4 -polar 0.9 -lambda 1 -distance 100 "
                       "-detpixels 512",
}
#: the dataset row: a rotation scan of 512x512 frames (the DIALS test's crystal), as one
#: ``nbxp --frames`` command against one nanoBragg run per frame (``-phi phi0 + i*osc``)
SERIES = ("-cell 50 60 70 90 90 90 -misset 10 20 30 -default_F 100 -N 10 -lambda 1 -distance 100 "
          "-detpixels 512 -pixel 0.1 -osc 0.5 -phisteps 5")
TIME = shutil.which("time") or "/usr/bin/time"
COMMON = ["-nonoise", "-nopgm", "-noprogress", "-floatfile", "float.bin", "-intfile", "int.img"]


def run_once(cmd: list[str], args: list[str], env: dict) -> dict:
    """Wall time, peak RSS (MB) and the float image of one run in a fresh directory."""
    with tempfile.TemporaryDirectory() as d:
        for f in os.listdir(INPUTS):
            if f in args:
                shutil.copy(INPUTS / f, d)
        # GNU time reports the peak RSS of the program itself (a fork of this script would
        # count our own memory too)
        rss_file = Path(d) / ".rss"
        t0 = time.perf_counter()
        p = subprocess.run([TIME, "-f", "%M", "-o", str(rss_file)] + cmd + args + COMMON, cwd=d, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace")
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {err[-300:]}")
        rss_mb = float(rss_file.read_text().split()[-1]) / 1024.0
        img = np.fromfile(Path(d) / "float.bin", np.float32).astype(np.float64)
    return {"wall": wall, "rss_mb": rss_mb, "image": img}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() and b.std() else float("nan")


def warm_times(options: list[str], args: list[str], repeats: int, env: dict) -> list[float]:
    """Wall times (s) of ``repeats`` runs of the nbxp command (nanoBragg ``args`` plus nbxp's
    ``options``) inside one Python process, after one untimed run (imports, first
    allocations, file caches, kernel compilation)."""
    code = ("import io, json, sys, time\n"
            "from nbxp.cli import run\n"
            "args = json.loads(sys.argv[1])\n"
            "run(args, out=io.StringIO())\n"
            "ts = []\n"
            "for _ in range(int(sys.argv[2])):\n"
            "    t0 = time.perf_counter(); run(args, out=io.StringIO()); ts.append(time.perf_counter() - t0)\n"
            "print(json.dumps(ts))\n")
    return _timed_in_process(code, args, options, repeats, env, "warm nbxp")


def _timed_in_process(code: str, args: list[str], options: list[str], repeats: int, env: dict, what: str) -> list:
    """Run the timing program ``code`` (it prints a JSON list of seconds) in a fresh Python,
    in a scratch folder holding the case's input files; ``options``: nbxp's own flags
    (--backend, --dtype, --threads), added to the case's arguments."""
    full = args + COMMON + options
    with tempfile.TemporaryDirectory() as d:
        for f in os.listdir(INPUTS):
            if f in args:
                shutil.copy(INPUTS / f, d)
        p = subprocess.run([sys.executable, "-c", code, json.dumps(full), str(repeats)], cwd=d, env=env,
                           capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed: {p.stderr[-300:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def series_row(c_bin: str | None, frames: int, threads: int, env: dict, backend: str = "cpu") -> dict:
    """One ``nbxp --frames`` command against ``frames`` nanoBragg runs of the same frames, both
    writing the float and the SMV image of every frame: wall times, throughput (frames/s) and
    the correlation of the middle frame's float images."""
    args = SERIES.split()
    osc = float(args[args.index("-osc") + 1])
    out = {"case": f"series_{frames}x512", "frames": frames, "threads": threads, "backend": backend}
    mid = frames // 2
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "nbxp", *args, "--frames", str(frames), "--backend", backend, "--threads",
               str(threads), "-nonoise", "-nopgm", "-noprogress", "-floatfile", "f_###.bin", "-intfile", "i_###.img"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=d, env=env, check=True, stdout=subprocess.DEVNULL)
        out["nbxp_s"] = round(time.perf_counter() - t0, 2)
        ours = np.fromfile(Path(d) / f"f_{mid + 1:03d}.bin", np.float32).astype(np.float64)
    out["nbxp_frames_per_s"] = round(frames / out["nbxp_s"], 3)
    if c_bin:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            for i in range(frames):
                subprocess.run([c_bin, *args, "-phi", repr(i * osc), "-nonoise", "-nopgm", "-floatfile", f"f_{i}.bin",
                                "-intfile", f"i_{i}.img"], cwd=d, env=env, check=True, stdout=subprocess.DEVNULL)
            out["nanoBragg_s"] = round(time.perf_counter() - t0, 2)
            theirs = np.fromfile(Path(d) / f"f_{mid}.bin", np.float32).astype(np.float64)
        out["nanoBragg_frames_per_s"] = round(frames / out["nanoBragg_s"], 3)
        out["throughput_ratio"] = round(out["nanoBragg_s"] / out["nbxp_s"], 2)
        out["corr_mid_frame"] = _corr(ours, theirs)
        out["maxrel_mid_frame"] = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))
    return out


def render_times(options: list[str], args: list[str], repeats: int, env: dict) -> list[float]:
    """Wall times (s) of the render alone (``nbxp.engine.render`` with the command's backend,
    precision and threads: no flags, files or statistics), ``repeats`` runs in one process
    after an untimed one."""
    code = ("import json, sys, time\n"
            "import numpy as np\n"
            "from nbxp.flags import parse_args\n"
            "from nbxp.gpu import choose_backend\n"
            "from nbxp.api import resolve_namespace\n"
            "from nbxp.experiment import build_experiment\n"
            "from nbxp.engine import render\n"
            "p = parse_args(json.loads(sys.argv[1])); s = p.state\n"
            "backend, _ = choose_backend(s.backend, s.dtype)\n"
            "xp = resolve_namespace(__import__('cupy') if backend == 'cupy' else np)\n"
            "exp = build_experiment(p.config, xp=xp, dtype=getattr(xp, s.dtype))\n"
            "def one():\n"
            "    t0 = time.perf_counter(); img, _ = render(exp, threads=s.threads, backend=backend,\n"
            "        fast_math=True if s.fast_math else None)\n"
            "    float(img[0, 0]); return time.perf_counter() - t0\n"
            "one()\n"
            "print(json.dumps([one() for _ in range(int(sys.argv[2]))]))\n")
    return _timed_in_process(code, args, options, repeats, env, "nbxp render timing")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c-bin", help="nanoBragg binary to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="nbxp --threads and OMP_NUM_THREADS (default: all)")
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--json", default="benchmark.json")
    ap.add_argument("--markdown", default="benchmark.md")
    ap.add_argument("--series", type=int, default=0, metavar="N",
                    help="also time a rotation scan of N 512x512 frames (one nbxp --frames command against N "
                         "nanoBragg runs); with --only series, that row alone")
    ap.add_argument("--backends", default="cpu,numpy",
                    help="nbxp CPU backends to time, comma-separated: cpu (the compiled kernel), numpy "
                         "(the array-API engine); default both")
    a = ap.parse_args()
    threads = a.threads or len(os.sched_getaffinity(0))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    programs = {}
    if a.c_bin:
        programs["nanoBragg"] = [a.c_bin]
    # "nbxp float64" (the NumPy engine) is the image every other is compared with, when it runs
    backends = [b for b in ("cpu", "numpy") if b in a.backends.split(",")]
    for backend in backends:
        for dt in ("float64", "float32"):
            # "nbxp float64" (the NumPy engine) is the reference every image is compared with
            name = f"nbxp {dt}" if backend == "numpy" else f"nbxp-{backend} {dt}"
            programs[name] = [sys.executable, "-m", "nbxp", "--backend", backend, "--dtype", dt,
                              "--threads", str(threads)]
    from nbxp.gpu import usable_gpu
    if usable_gpu():  # every backend available: the GPU rows beside the CPU ones
        for dt in ("float64", "float32"):
            programs[f"nbxp-cupy {dt}"] = [sys.executable, "-m", "nbxp", "--backend", "cupy", "--dtype", dt]
    names = [n for n in CASES if not a.only or n in a.only.split(",")]
    results = []
    if a.series:
        row = series_row(a.c_bin, a.series, threads, env, backend=backends[0] if backends else "numpy")
        print(json.dumps(row), flush=True)
        Path(a.json).with_name(Path(a.json).stem + "_series.json").write_text(json.dumps(row, indent=1))
        if a.only == "series":
            return 0
    for name in names:
        args = CASES[name].split()
        runs = {p: [] for p in programs}
        for _ in range(a.repeats):
            for prog, cmd in programs.items():  # alternate programs within each repeat
                runs[prog].append(run_once(cmd, args, env))
        ref_prog = "nanoBragg" if "nanoBragg" in runs else next(iter(runs))
        ref_img = runs[ref_prog][0]["image"]
        ref_time = statistics.median(r["wall"] for r in runs[ref_prog])
        warm = {p: (statistics.median(warm_times(programs[p][3:], args, a.repeats, env))
                    if p.startswith("nbxp") else statistics.median(r["wall"] for r in runs[p])) for p in runs}
        render = {p: statistics.median(render_times(programs[p][3:], args, a.repeats, env))
                  for p in runs if p.startswith("nbxp")}
        for prog, rs in runs.items():
            t = statistics.median(r["wall"] for r in rs)
            img = rs[0]["image"]
            corr = _corr(img, ref_img)
            results.append({"case": name, "program": prog, "threads": threads, "median_s": round(t, 3),
                            "warm_median_s": round(warm[prog], 3),
                            # the render alone (nanoBragg: its whole run, nearly all render)
                            "render_s": round(render.get(prog, ref_time if prog == ref_prog else t), 3),
                            "render_ratio_vs_" + ref_prog.replace(" ", "_"):
                                round(ref_time / render.get(prog, ref_time if prog == ref_prog else t), 2),
                            "warm_ratio_vs_" + ref_prog.replace(" ", "_"): round(warm[ref_prog] / warm[prog], 3),
                            "ratio_vs_" + ref_prog.replace(" ", "_"): round(ref_time / t, 3),
                            "peak_rss_mb": round(max(r["rss_mb"] for r in rs), 1),
                            "corr_vs_" + ref_prog.replace(" ", "_"): corr,
                            # float32 against float64 separates precision from nanoBragg's own
                            # defects (its phi = 0 carry-over in the Pilatus frame)
                            "corr_vs_nbxp_float64": (_corr(img, runs["nbxp float64"][0]["image"])
                                                     if "nbxp float64" in runs else float("nan"))})
            print(json.dumps(results[-1]), flush=True)
    Path(a.json).write_text(json.dumps(results, indent=1))
    lines = ["| case | program | cold (s) | speed vs reference, cold | warm (s) | speed vs reference, warm "
             "| render (s) | speed, render | peak RSS (MB) | correlation | correlation with nbxp float64 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = next(v for k, v in r.items() if k.startswith("ratio_vs"))
        wratio = next(v for k, v in r.items() if k.startswith("warm_ratio_vs"))
        corr = next(v for k, v in r.items() if k.startswith("corr_vs"))
        c64 = r["corr_vs_nbxp_float64"]
        rratio = next(v for k, v in r.items() if k.startswith("render_ratio_vs"))
        lines.append(f"| {r['case']} | {r['program']} | {r['median_s']:.2f} | {ratio:.2f}x | {r['warm_median_s']:.3f} "
                     f"| {wratio:.2f}x | {r['render_s']:.3f} | {rratio:.1f}x | {r['peak_rss_mb']:.0f} | {corr:.6f} "
                     f"| {c64:.6f} |")
    Path(a.markdown).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
