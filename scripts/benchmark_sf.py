#!/usr/bin/env python3
"""Time structure factors from a real model: F computed from the atoms, expanded to P1 and
loaded into the grid the engine reads, against reading the same P1 list as text.

    python scripts/benchmark_sf.py [--model 1tii.pdb] [--dmin 2.0] [--lambda 1.0] [--repeats 3]

Default model: 1tii.pdb from Debian's pymol-data package (P 3_1 2 1, 5684 atoms; at 2 A
about 75k unique and 870k P1 reflections).  Prints the median of the repeats for each stage
and one markdown row for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PYMOL = ("/usr/share/pymol/data/demo/1tii.pdb", "/usr/share/pymol/test/dat/1tii.pdb")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=next((p for p in PYMOL if os.path.isfile(p)), None))
    ap.add_argument("--dmin", type=float, default=2.0, help="resolution (A)")
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0, help="wavelength for f' (A)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if not a.model:
        print("no model: give --model (1tii.pdb is in Debian's pymol-data)", file=sys.stderr)
        return 2
    import nbxp
    from nbxp.api import resolve_namespace
    from nbxp.io.hkl import read_hkl, write_hkl
    from nbxp.physics import StructureFactors

    xp = resolve_namespace(np)
    compute, load, text = [], [], []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        sf = nbxp.structure_factors(a.model, dmin=a.dmin * 1e-10, wavelength=a.lam * 1e-10)
        t1 = time.perf_counter()
        g = sf.grid(0.0)
        # what build_experiment does with the grid
        StructureFactors(xp.asarray(np.ascontiguousarray(g.F).reshape(-1), dtype=xp.float64), g.F.shape,
                         (g.h_min, g.k_min, g.l_min), g.count, 0.0, xp=xp)
        t2 = time.perf_counter()
        compute.append(t1 - t0)
        load.append(t2 - t1)
        with tempfile.TemporaryDirectory() as d:
            h, F = sf.listing()
            write_hkl(os.path.join(d, "p1.hkl"), h, F)
            t3 = time.perf_counter()
            read_hkl(os.path.join(d, "p1.hkl"), 0.0)
            text.append(time.perf_counter() - t3)
    med = statistics.median
    total = [c + lo for c, lo in zip(compute, load)]
    print(f"model {a.model}: {sf.n_asu} unique, {len(sf.F)} P1 reflections to {a.dmin} A, grid {g.F.shape}")
    print(f"compute F (read, density, FFT, P1 expansion): {med(compute):.2f} s")
    print(f"grid + load into the engine:                  {med(load):.2f} s")
    print(f"total:                                        {med(total):.2f} s")
    print(f"(the same P1 list read back as text:          {med(text):.2f} s)")
    print(f"| {Path(a.model).name} at {a.dmin:g} A ({len(sf.F) / 1e3:.0f}k P1) | {med(compute):.2f} | "
          f"{med(load):.2f} | {med(total):.2f} | {med(text):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
