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


# --------------------------------------------------------------------------- NVRTC
# cupy.RawModule compiles with NVRTC, not nvcc: no system headers, its own preprocessor.
# The same source must compile there too.  NVRTC comes with the CUDA toolkit or the
# nvidia-cuda-nvrtc-cu12 wheel (cupy-cuda12x[ctk]); NBXP_NVRTC may name the library.

def _find_nvrtc():
    import ctypes
    import ctypes.util
    import glob
    import os
    import sys
    candidates = [os.environ.get("NBXP_NVRTC", "")]
    for base in sys.path:
        candidates += sorted(glob.glob(os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
    candidates += sorted(glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*"))
    candidates.append(ctypes.util.find_library("nvrtc") or "")
    for path in candidates:
        if path and "builtins" not in path and "alt" not in os.path.basename(path):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


NVRTC = _find_nvrtc()


@pytest.mark.skipif(NVRTC is None, reason="NVRTC (libnvrtc) is not installed")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_kernel_compiles_with_nvrtc_as_cupy_does(arch, dtype):
    import ctypes
    code = kernels.source().encode()
    prog = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(prog), code, kernels.RENDER_SOURCE.encode(), 0, None, None) == 0
    try:
        opts = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in kernels.compile_options(dtype)]
        rc = NVRTC.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(prog, log)
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
    text = log.value.decode(errors="replace")
    assert rc == 0, text
    assert "warning" not in text.lower(), text
