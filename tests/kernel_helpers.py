"""Shared pieces of the kernel tests (tests/test_kernel*.py): reference cases as configs,
the CPU build of the kernel, and the comparison rules."""

from __future__ import annotations

import json
import os
import shlex
import shutil

import numpy as np
import pytest

import nbxp
from nbxp.engine import render
from nbxp.experiment import build_experiment

from .helpers import REFERENCE, to_numpy

CASES = sorted(p.name for p in (REFERENCE / "cases").iterdir()) if (REFERENCE / "cases").is_dir() else []


def case_config(name, tmp_path):
    """The SimConfig of a reference case, its input files copied to ``tmp_path``."""
    case = json.loads((REFERENCE / "cases" / name / "case.json").read_text())
    args = shlex.split(case["args"])
    for f in os.listdir(REFERENCE / "inputs"):
        if f in case["args"]:
            shutil.copy(REFERENCE / "inputs" / f, tmp_path)
    return nbxp.config_from_args(args, cwd=str(tmp_path))


@pytest.fixture(scope="session")
def cpu_module():
    """The stand-in RawModule class, after compiling both precisions once for the session
    (the binaries are cached on disk too)."""
    from nbxp import kernels
    from nbxp.kernels import cpu
    if not cpu.available():
        pytest.skip("no C++ compiler for the CPU build of the kernel")
    for dt in (np.float64, np.float32):
        kernels.get_kernel(dt, cpu.CpuRawModule)
    return cpu.CpuRawModule


def engine_and_kernel(cfg, dtype, raw_module, **kw):
    """(NumPy engine image, kernel image, engine state, kernel state, experiment) for a config."""
    from nbxp.gpu import render_kernel
    exp = build_experiment(cfg, xp=np, dtype=dtype)
    a, sa = render(exp, threads=1)
    b, sb = render_kernel(exp, raw_module=raw_module, **kw)
    return np.asarray(a, np.float64), to_numpy(b).astype(np.float64), sa, sb, exp


def _split_finite(x, y):
    """Values that overflow (the running product of -oversample_omega with a point pixel
    can: inf in a running sum, NaN in the engine's closed form of it) must be non-finite in
    both; the finite rest is returned for comparison."""
    assert x.shape == y.shape
    fx, fy = np.isfinite(x), np.isfinite(y)
    assert np.array_equal(fx, fy)
    return x[fx], y[fy]


def assert_exact(x, y):
    """The parity rule's "exact": max |x - y| <= 1e-5 max |y|."""
    x, y = _split_finite(x, y)
    if y.size == 0:
        return
    scale = max(np.abs(y).max(), 1e-300)
    assert np.abs(x - y).max() <= 1e-5 * scale, np.abs(x - y).max() / scale


def assert_close(x, y, corr=0.9999):
    """The single-precision rule: correlation >= 0.9999, or equal to 1e-5 of the maximum
    (an image nearly constant across its pixels has no meaningful correlation in float32)."""
    x, y = _split_finite(x, y)
    if y.size == 0:
        return
    scale = max(np.abs(y).max(), 1e-300)
    if np.abs(x - y).max() <= 1e-5 * scale:
        return
    assert x.std() > 0 and y.std() > 0, np.abs(x - y).max() / scale
    assert np.corrcoef(x.ravel(), y.ravel())[0, 1] >= corr
