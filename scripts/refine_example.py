"""Refine detector distance, a cell length, three misset angles and the beam centre against
a simulated image, with torch's L-BFGS and nbxp's gradients (docs/gradients.md).

    python scripts/refine_example.py            # noise-free, then Poisson noise
    python scripts/refine_example.py --quick    # noise-free only

The "measured" image is simulated at the true parameters; the refinement starts from
perturbed ones (distance +1%, a +0.5%, misset +-0.15 deg, beam centre +-0.15 mm = 0.3 pixel) and
minimises the mean squared difference (noise-free) or the Poisson negative log-likelihood
(noisy image).  Parameters are optimised as dimensionless offsets scaled to their expected
sizes so that L-BFGS sees a well-conditioned problem.  With noise the result is compared with
the standard errors from the Fisher information J^T diag(1/I) J (J the image's Jacobian).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

import nbxp

ARGS = ("-cell 40 50 60 85 95 100 -misset 10 20 30 -default_F 100 -N 5 -lambda 1.5 -distance 50 "
        "-detpixels 64 -pixel 0.5 -Xbeam 16.2 -Ybeam 15.7 -oversample 1 -water 0.05")

NAMES = ["distance", "cell a", "misset x", "misset y", "misset z", "Xbeam", "Ybeam"]


def split(cfg, u):
    """SimConfig params from the offsets u (7,): value = true value + scale * u (distance and
    a: 1e-3 relative per unit; misset: 0.1 deg; beam centre: 0.1 mm)."""
    d, c, m = cfg.detector.distance, cfg.crystal.cell, cfg.crystal.misset
    cell = torch.cat([(c[0] * (1 + 1e-3 * u[1]))[None], torch.tensor(c[1:], dtype=torch.float64)])
    return {"detector.distance": d * (1 + 1e-3 * u[0]), "crystal.cell": cell,
            "crystal.misset": torch.tensor(m, dtype=torch.float64) + math.radians(0.1) * u[2:5],
            "detector.Xbeam": cfg.detector.Xbeam + 1e-4 * u[5], "detector.Ybeam": cfg.detector.Ybeam + 1e-4 * u[6]}


def values(cfg, u):
    p = split(cfg, u)
    return np.array([float(p["detector.distance"]), float(p["crystal.cell"][0]), *p["crystal.misset"].tolist(),
                     float(p["detector.Xbeam"]), float(p["detector.Ybeam"])])


def refine(cfg, target, u0, loss, max_eval=100):
    """L-BFGS (strong Wolfe line search) on the offsets; returns them and the evaluations."""
    u = u0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([u], lr=1, max_iter=max_eval, max_eval=max_eval, history_size=20,
                            tolerance_grad=1e-14, tolerance_change=1e-18, line_search_fn="strong_wolfe")
    count = [0]

    def closure():
        opt.zero_grad()
        count[0] += 1
        # one forward + backward, tile by tile: memory stays that of one tile
        ul = u.detach().clone().requires_grad_(True)
        L, g = nbxp.loss_and_grad(cfg, split(cfg, ul), target, loss=loss)
        (gu,) = torch.autograd.grad(list(split(cfg, ul).values()), [ul],
                                    grad_outputs=[g[k] for k in split(cfg, ul)])
        u.grad = gu.detach()
        return torch.tensor(L, dtype=torch.float64)

    opt.step(closure)
    return u.detach(), count[0]


def jacobian(cfg, u, h=1e-3):
    """d image / d u (pixels, 7) by central differences (for the standard errors only)."""
    cols = []
    for i in range(u.numel()):
        e = torch.zeros_like(u)
        e[i] = h
        a = nbxp.simulate(cfg, params=split(cfg, u + e)).reshape(-1)
        b = nbxp.simulate(cfg, params=split(cfg, u - e)).reshape(-1)
        cols.append(((a - b) / (2 * h)).numpy())
    return np.stack(cols, axis=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="noise-free refinement only")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    cfg = nbxp.config_from_args(ARGS.split())
    truth = torch.zeros(7, dtype=torch.float64)
    true_vals = values(cfg, truth)
    u0 = torch.tensor([10.0, 5.0, 1.5, -1.5, 1.5, 1.5, -1.5], dtype=torch.float64)  # the perturbation
    target = nbxp.simulate(cfg, params=split(cfg, truth)).detach().numpy()
    ok = True

    t0 = time.time()
    u, n = refine(cfg, target, u0, "mse")
    rel = np.abs(values(cfg, u) - true_vals) / np.maximum(np.abs(true_vals), 1e-300)
    print(f"noise-free: {n} evaluations, {time.time() - t0:.1f} s")
    for name, r, v0, v in zip(NAMES, rel, values(cfg, u0), values(cfg, u)):
        print(f"  {name:9s} start {v0: .9g}  refined {v: .9g}  relative error {r:.2e}")
    ok &= bool(np.all(rel <= 1e-5)) and n <= 100
    if a.quick:
        return 0 if ok else 1

    # Poisson noise on the same image (photons as counts), refined by the Poisson likelihood
    noisy = np.random.default_rng(a.seed).poisson(target).astype(np.float64)
    t0 = time.time()
    u, n = refine(cfg, noisy, u0, "poisson")
    J = jacobian(cfg, u)
    I = nbxp.simulate(cfg, params=split(cfg, u)).detach().numpy().reshape(-1)
    cov = np.linalg.inv(J.T @ (J / I[:, None]))
    se = np.sqrt(np.diag(cov))
    z = u.numpy() / se  # the truth is u = 0
    print(f"Poisson noise: {n} evaluations, {time.time() - t0:.1f} s; (refined - true) / standard error:")
    for name, zi, s in zip(NAMES, z, se * np.abs(values(cfg, torch.ones(7, dtype=torch.float64)) - true_vals)):
        print(f"  {name:9s} {zi: .2f}   (standard error {s:.3g} SI)")
    ok &= bool(np.all(np.abs(z) <= 4.0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
