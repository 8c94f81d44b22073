#!/usr/bin/env python3
"""Fit the even polynomials P(z), z = x^2, with sin(pi x) = x P(x^2) on |x| <= 1/2, that
nbxp.physics uses for the lattice factor, and print their coefficients and accuracy.

Least squares on Chebyshev nodes, re-weighted towards equal relative error (Lawson's
iteration), which lands close to the minimax polynomial: degree 6 in z (13 in x) reaches
~6e-14 relative error in float64, degree 4 (9 in x) ~5e-9, below float32 rounding.

    python scripts/fit_sinpi.py
"""

import numpy as np


def fit(deg_z: int, nodes: int = 4000, iters: int = 60) -> np.ndarray:
    k = np.arange(nodes)
    x = 0.25 + 0.25 * np.cos(np.pi * (k + 0.5) / nodes)  # Chebyshev nodes on [0, 1/2]
    z = x * x
    target = np.sin(np.pi * x) / x
    V = np.vander(z, deg_z + 1, increasing=True)
    w = np.ones_like(z)
    for _ in range(iters):
        c, *_ = np.linalg.lstsq(V * (w / target)[:, None], w, rcond=None)
        err = np.abs(V @ c / target - 1.0)
        w *= np.sqrt(err / err.max() + 1e-3)
        w /= w.max()
    return c


def max_rel_error(c: np.ndarray, dtype=np.float64) -> float:
    x = np.linspace(-0.5, 0.5, 2_000_001)
    x = x[x != 0]
    xd, cd = x.astype(dtype), c.astype(dtype)
    p = xd * np.polyval(cd[::-1], xd * xd)
    return float(np.max(np.abs(p.astype(np.float64) / np.sin(np.pi * x) - 1.0)))


if __name__ == "__main__":
    for deg, dtype in ((6, np.float64), (4, np.float32)):
        c = fit(deg)
        print(f"degree {deg} in z ({np.dtype(dtype).name}): max relative error {max_rel_error(c, dtype):.2e}")
        print("   ", tuple(float(v) for v in c))
