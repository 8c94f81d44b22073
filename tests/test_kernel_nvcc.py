"""The CUDA kernel compiles with nvcc for the GPUs nbxp targets (A100: sm_80, H100: sm_90) in
both precisions, warnings as errors.  Skipped where nvcc is absent."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from nbxp import kernels

NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_kernel_compiles_without_warnings(arch, dtype, tmp_path):
    src = kernels.KERNEL_DIR / kernels.RENDER_SOURCE
    cmd = [NVCC, f"-arch={arch}", "-c", "-Werror", "all-warnings", "-Xptxas", "-Werror",
           *kernels.compile_options(dtype), str(src), "-o", str(tmp_path / "k.o")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "warning" not in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
