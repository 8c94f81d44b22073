"""The CUDA kernel on a real GPU through CuPy (skipped without a usable GPU): the same images
as the NumPy engine, the image stays on the device, and the command line runs on it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import nbxp
from nbxp import gpu

from .helpers import requires_reference
from .kernel_helpers import CASES, assert_close, assert_exact, case_config

pytestmark = pytest.mark.skipif(not gpu.usable_gpu(), reason="no usable GPU (CuPy and a CUDA device)")


@requires_reference
@pytest.mark.parametrize("name", CASES)
def test_reference_case_on_gpu(name, tmp_path):
    import cupy
    cfg = case_config(name, tmp_path)
    ref = np.asarray(nbxp.simulate(cfg, xp=np), np.float64)
    img = nbxp.simulate(cfg, xp=cupy)
    assert isinstance(img, cupy.ndarray) and img.dtype == cupy.float64
    assert_exact(cupy.asnumpy(img).astype(np.float64), ref)
    img32 = nbxp.simulate(cfg, backend="cupy", dtype="float32")
    assert isinstance(img32, cupy.ndarray) and img32.dtype == cupy.float32
    assert_close(cupy.asnumpy(img32).astype(np.float64), ref)


def test_interpolation_fallback_on_gpu():
    import cupy
    from nbxp.engine import render
    from nbxp.experiment import build_experiment
    from .test_kernel_cpu import BASE, hkl_grid
    cfg = nbxp.config_from_args((BASE + " -interpolate -default_F 7 -oversample 2 -Xbeam 1 -Ybeam 1").split())
    cfg.hkl = hkl_grid((-6, -6, -6), (12, 12, 12))
    a, sa = render(build_experiment(cfg, xp=np, dtype=np.float64), threads=1)
    b, sb = gpu.render_kernel(build_experiment(cfg, xp=nbxp.api.resolve_namespace(cupy), dtype=cupy.float64), chunk=64)
    assert sa.trigger == sb.trigger
    assert_exact(cupy.asnumpy(b), np.asarray(a))


def test_cli_on_gpu(tmp_path):
    args = "-cell 100 100 100 90 90 90 -default_F 100 -N 5 -lambda 6.2 -distance 100 -detpixels 128 -pixel 0.1".split()
    for backend in ("numpy", "cupy"):
        p = subprocess.run([sys.executable, "-m", "nbxp", *args, "--backend", backend, "-floatfile", f"{backend}.bin",
                            "-nonoise", "-nopgm"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert f"nbxp backend: {backend}" in p.stdout
    a = np.fromfile(tmp_path / "numpy.bin", np.float32)
    b = np.fromfile(tmp_path / "cupy.bin", np.float32)
    assert_exact(b.astype(np.float64), a.astype(np.float64))
