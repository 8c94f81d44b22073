"""Time and peak memory of nbxp.loss_and_grad on a full Pilatus 6M frame (2463 x 2527) against
the forward image alone (docs/performance.md, "Gradients").

    python scripts/gradient_benchmark.py [--pixels F S] [--what forward|torch|grad|all]

Each measurement runs in a fresh process so that its peak resident memory (ru_maxrss) is its
own: 'forward' is the NumPy engine's image, 'torch' the torch engine's image without a graph,
'grad' loss_and_grad (MSE against the NumPy image) with respect to distance, cell, misset and
beam centre, tile by tile.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

ARGS = ("-cell 70 80 90 85 95 100 -misset 10 20 30 -default_F 100 -N 5 -lambda 1.0 -distance 200 "
        "-pixel 0.172 -oversample 1 -Xbeam 217 -Ybeam 212")


def one(what: str, f: int, s: int, warm: bool = True, torch_threads: int = 1) -> dict:
    import numpy as np
    import nbxp
    if what != "forward":
        import torch
        # torch's intra-op threads: with the engine's own tiles on 2 cores shared with other
        # work, torch's OpenMP pool oversubscribes the cores and one tile takes 20-30x longer
        # (measured on this machine under load); 0 keeps torch's default
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
    if warm:  # one-time costs (imports, torch's first backward loads sympy) off the clock
        one(what, 32, 32, warm=False, torch_threads=torch_threads)
    cfg = nbxp.config_from_args((ARGS + f" -detpixels_f {f} -detpixels_s {s}").split())
    t0 = time.perf_counter()
    if what == "forward":
        nbxp.simulate(cfg, xp=np)
    elif what == "torch":
        import torch
        nbxp.simulate(cfg, xp=torch)
    else:
        import torch
        target = np.zeros((s, f))
        T = lambda v: torch.tensor(v, dtype=torch.float64, requires_grad=True)  # noqa: E731
        P = {"detector.distance": T(cfg.detector.distance * 1.001), "crystal.cell": T(cfg.crystal.cell),
             "crystal.misset": T(cfg.crystal.misset), "detector.Xbeam": T(cfg.detector.Xbeam),
             "detector.Ybeam": T(cfg.detector.Ybeam)}
        nbxp.loss_and_grad(cfg, P, target)
    dt = time.perf_counter() - t0
    return {"what": what, "seconds": dt, "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, nargs=2, default=(2463, 2527), metavar=("F", "S"))
    ap.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--what", default="all", choices=("forward", "torch", "grad", "all", "_one_forward",
                                                       "_one_torch", "_one_grad"))
    a = ap.parse_args(argv)
    f, s = a.pixels
    if a.what.startswith("_one_"):
        print(json.dumps(one(a.what[5:], f, s, torch_threads=a.torch_threads)))
        return 0
    whats = ("forward", "torch", "grad") if a.what == "all" else (a.what,)
    res = {}
    for w in whats:
        p = subprocess.run([sys.executable, __file__, "--what", "_one_" + w, "--pixels", str(f), str(s),
                            "--torch-threads", str(a.torch_threads)],
                           capture_output=True, text=True, check=True)
        res[w] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"{w:8s} {res[w]['seconds']:8.1f} s   peak RSS {res[w]['peak_rss_MiB']:8.0f} MiB", flush=True)
    if "grad" in res and "torch" in res:
        print(f"forward+backward / torch forward: {res['grad']['seconds'] / res['torch']['seconds']:.2f}x")
    if "grad" in res and "forward" in res:
        print(f"forward+backward / NumPy forward: {res['grad']['seconds'] / res['forward']['seconds']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
