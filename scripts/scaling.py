#!/usr/bin/env python3
"""How nbxp's time and memory grow with the detector: 1, 4 and 16 Mpixel.

    python scripts/scaling.py [--c-bin PATH] [--repeats 2] [--threads N] [--out docs/scaling]

Runs the same simulation (a 100 A cubic cell, N = 10, 10 phi steps over 1 degree, no
oversampling, so ten sub-paths per pixel as in the Pilatus benchmark) on square detectors of
1024, 2048 and 4096 pixels a side, each in a fresh process, and records the median wall time and the peak
resident memory (GNU time) of nbxp float64, nbxp float32 and, given ``--c-bin``, nanoBragg.
A 64 x 64 run gives the fixed memory (interpreter, libraries, tables), so that
``peak - fixed`` is the image-sized part, which should grow with the pixel count and no
faster.  Writes ``OUT.json`` and, with matplotlib installed (``pip install
"nbxp[bench]"``), the plot ``OUT.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import run_once  # noqa: E402  (same timing and RSS measurement)

ARGS = ("-cell 100 100 100 90 90 90 -lambda 1 -N 10 -default_F 100 -distance 100 -pixel 0.1 -oversample 1 "
        "-phi 0 -osc 1 -phisteps 10")
SIDES = (1024, 2048, 4096)


def measure(cmd: list[str], side: int, repeats: int, env: dict) -> dict:
    runs = [run_once(cmd, ARGS.split() + ["-detpixels", str(side)], env) for _ in range(repeats)]
    return {"side": side, "mpixel": side * side / 2**20, "wall_s": round(statistics.median(r["wall"] for r in runs), 3),
            "peak_rss_mb": round(max(r["rss_mb"] for r in runs), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c-bin", help="nanoBragg binary to compare with")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="scaling")
    a = ap.parse_args()
    threads = a.threads or len(os.sched_getaffinity(0))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    programs = {f"nbxp {dt}": [sys.executable, "-m", "nbxp", "--backend", "numpy", "--dtype", dt, "--threads", str(threads)]
                for dt in ("float64", "float32")}
    if a.c_bin:
        programs["nanoBragg"] = [a.c_bin]
    results = {}
    for prog, cmd in programs.items():
        fixed = measure(cmd, 64, 1, env)["peak_rss_mb"]
        rows = [measure(cmd, side, a.repeats, env) for side in SIDES]
        for r in rows:
            r["image_part_mb"] = round(r["peak_rss_mb"] - fixed, 1)
        growth = [round(rows[i + 1]["image_part_mb"] / rows[i]["image_part_mb"], 2) for i in range(len(rows) - 1)]
        results[prog] = {"fixed_rss_mb": fixed, "rows": rows, "image_part_growth_per_doubling": growth}
        print(prog, json.dumps(results[prog]), flush=True)
    Path(a.out + ".json").write_text(json.dumps({"threads": threads, "args": ARGS, "results": results}, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'nbxp[bench]')", file=sys.stderr)
        return 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for prog, res in results.items():
        mp = [r["mpixel"] for r in res["rows"]]
        ax1.plot(mp, [r["wall_s"] for r in res["rows"]], "o-", label=prog)
        ax2.plot(mp, [r["peak_rss_mb"] for r in res["rows"]], "o-", label=prog)
    for ax, title in ((ax1, "wall time (s)"), (ax2, "peak resident memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([1, 4, 16], ["1", "4", "16"])
        ax.set_xlabel("detector size (Mpixel), 10 sub-paths per pixel")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend()
    fig.suptitle(f"{threads} threads; time and memory against detector size")
    fig.tight_layout()
    fig.savefig(a.out + ".png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
