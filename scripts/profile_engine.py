#!/usr/bin/env python3
"""Where the engine's time goes: a one-thread cProfile of a render, grouped by stage.

    python scripts/profile_engine.py [--case pilatus_frame|simple_cubic|heavy_rows] [--dtype float64]

``pilatus_frame`` is the Pilatus benchmark frame (10 phi steps, nearest F from an HKL grid);
``heavy_rows`` the first 64 rows of the heavy composite case.  Stages:
per-pixel geometry (positions, directions, solid angle, polarization, capture), Miller
indices and accumulation (the body of ``tile_values``), the lattice factor, the
structure-factor lookup, and the rest (tiling, placing values into the image).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import CASES, INPUTS, PILATUS  # noqa: E402

from nbxp.api import config_from_args  # noqa: E402
from nbxp.engine import render  # noqa: E402
from nbxp.experiment import build_experiment  # noqa: E402

RUNS = {
    "pilatus_frame": PILATUS,
    "simple_cubic": CASES["simple_cubic"],
    "heavy_rows": CASES["heavy_composite"] + " -roi 0 511 0 63",
}
STAGES = {  # function name -> stage
    "pixel_positions": "geometry", "solid_angle": "geometry", "kahn_factor": "geometry",
    "capture_fraction_cos": "geometry", "_dot3": "geometry", "polarization_frame": "geometry",
    "sincg_product": "lattice factor", "sinpi_over_x": "lattice factor", "lattice_factor": "lattice factor",
    "sincg": "lattice factor", "sinc3": "lattice factor",
    "nearest": "F lookup", "tricubic": "F lookup", "_take": "F lookup", "_padded_grid": "F lookup",
    "out_of_interpolation_range": "F lookup", "_with_interpolation": "F lookup",
    "tile_values": "Miller indices, sums, scaling",
}


OTHER = "other (tiling, placing values, thread pool)"


def _stage_weights(func, stats, seen) -> dict[str, float]:
    """Which stages a profiled function's own time belongs to: its own stage when it is
    one of ours, else its callers' stages weighted by the time each caller spent in it
    (NumPy's C functions and Python wrappers report time under their own names)."""
    name = func[2]
    if name in STAGES:
        return {STAGES[name]: 1.0}
    callers = stats[func][4]
    if not callers or func in seen:
        return {OTHER: 1.0}
    seen = seen | {func}
    total = sum(c[2] for c in callers.values()) or 1.0
    out: dict[str, float] = {}
    for caller, c in callers.items():
        share = (c[2] / total) if total else 1.0 / len(callers)
        for stage, w in _stage_weights(caller, stats, seen).items():
            out[stage] = out.get(stage, 0.0) + share * w
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", default="pilatus_frame", choices=sorted(RUNS))
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    a = ap.parse_args()
    exp = build_experiment(config_from_args(RUNS[a.case].split(), cwd=str(INPUTS)), xp=np, dtype=getattr(np, a.dtype))
    render(exp, threads=1)  # warm-up: allocator, caches
    prof = cProfile.Profile()
    t0 = time.process_time()
    prof.enable()
    render(exp, threads=1)
    prof.disable()
    total = time.process_time() - t0
    stats = pstats.Stats(prof).stats
    by_stage: dict[str, float] = {}
    for func, (_, _, tottime, _, _) in stats.items():
        for stage, w in _stage_weights(func, stats, set()).items():
            by_stage[stage] = by_stage.get(stage, 0.0) + tottime * w
    prof_total = sum(by_stage.values())
    g = exp.geom
    fmin, fmax, smin, smax = exp.roi
    pixels = (min(fmax, g.fpixels - 1) - max(fmin, 0) + 1) * (min(smax, g.spixels - 1) - max(smin, 0) + 1)
    subpaths = pixels * exp.thicksteps * exp.oversample ** 2 * exp.incident.shape[0] * exp.orient.shape[0]
    print(f"{a.case} {a.dtype}: {pixels} pixels, {subpaths} sub-paths, {total:.3f} s CPU (one thread), "
          f"{1e9 * total / subpaths:.1f} ns per sub-path")
    print("| stage | share of time | ns per sub-path |")
    print("|---|---|---|")
    for stage, t in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {100 * t / prof_total:.0f}% | {1e9 * total * t / prof_total / subpaths:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
