"""The launch glue (nbxp/gpu.py) against the CPU stand-in for cupy.RawModule: argument list,
dtypes, grid and block, device buffers, chunks, the interpolation passes; the stand-in's own
checks; backend choice in the library and on the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import nbxp
from nbxp import gpu, kernels
from nbxp.engine import render
from nbxp.experiment import build_experiment

from .helpers import to_numpy
from .kernel_helpers import assert_exact, cpu_module, engine_and_kernel

__all__ = ["cpu_module"]

BASE = "-cell 70 80 90 85 95 100 -lambda 2 -distance 60 -detpixels_f 26 -detpixels_s 22 -pixel 0.2 -N 4"


def _cfg(extra="-default_F 30", hkl=False):
    cfg = nbxp.config_from_args((BASE + " " + extra).split())
    if hkl:
        rng = np.random.default_rng(1)
        cfg.hkl = nbxp.HKLGrid(F=rng.uniform(10, 100, (12, 12, 12)), h_min=-6, k_min=-6, l_min=-6, count=12**3)
    return cfg


class Spy:
    """A RawModule class that records every launch and passes it on to the CPU stand-in."""

    calls: list = []

    def __init__(self, code=None, options=()):
        from nbxp.kernels.cpu import CpuRawModule
        self.inner = CpuRawModule(code=code, options=options)

    def get_function(self, name):
        f = self.inner.get_function(name)

        def launch(grid, block, args, **kw):
            Spy.calls.append((grid, block, tuple(args)))
            return f(grid, block, args, **kw)
        launch.params = f.params
        return launch


@pytest.fixture
def spy(cpu_module):
    Spy.calls = []
    return Spy


def _one_launch(spy, dtype=np.float64, extra="-default_F 30 -roi 2 20 3 15"):
    exp = build_experiment(_cfg(extra), xp=np, dtype=dtype)
    img, _ = gpu.render_kernel(exp, raw_module=spy)
    assert len(spy.calls) == 1
    return exp, img, spy.calls[0]


# ------------------------------------------------------------------ the glue

@pytest.mark.parametrize("extra,hkl", [("-default_F 30 -roi 2 20 3 15", False),
                                       ("-interpolate -default_F 7 -oversample 2 -Xbeam 1 -Ybeam 1", True),
                                       ("-default_F 30 -polar 0.8 -detector_thick 100 -detector_thicksteps 2", False)])
def test_glue_uses_only_the_array_api(extra, hkl, cpu_module):
    """The set-up and the launch loop run on array-api-strict arrays (no NumPy-only calls),
    so they run on CuPy's; the image comes back in that namespace and equals the engine's."""
    import array_api_strict as xs
    cfg = _cfg(extra, hkl)
    exp = build_experiment(cfg, xp=xs, dtype=xs.float64)
    img, state = gpu.render_kernel(exp, raw_module=cpu_module, chunk=50)
    assert type(img).__module__.startswith("array_api_strict")
    ref, ref_state = render(build_experiment(cfg, xp=np, dtype=np.float64), threads=1)
    assert_exact(to_numpy(img), np.asarray(ref))
    assert state.trigger == ref_state.trigger
    if hkl:
        assert state.trigger is not None


def test_arguments_follow_the_kernel_signature(spy):
    for dtype in (np.float64, np.float32):
        spy.calls = []
        _, img, (grid, block, args) = _one_launch(spy, dtype)
        params = kernels.kernel_signature(kernels.source(), kernels.RENDER_KERNEL, kernels.compile_options(dtype))
        assert len(args) == len(params)
        for a, p in zip(args, params):
            assert np.dtype(a.dtype) == p.dtype, p.decl
        assert img.dtype == dtype
        assert block == (gpu.BLOCK,) and grid[0] * block[0] >= 19 * 13


def test_chunks_and_launch_shapes_do_not_change_the_image(cpu_module):
    cfg = _cfg("-default_F 30 -mosaic 1 -mosaic_dom 2 -roi 1 24 0 20")
    cfg.detector.mask = np.random.default_rng(0).random((22, 26)) > 0.2
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    one, _ = gpu.render_kernel(exp, raw_module=cpu_module)
    for chunk, block in [(1, 1), (7, 3), (64, 32), (10_000, 256)]:
        img, _ = gpu.render_kernel(exp, raw_module=cpu_module, chunk=chunk, block=block)
        np.testing.assert_array_equal(img, one)


def test_interpolation_passes(spy):
    """One pass per chunk while interpolation is on; the chunk holding the first out-of-range
    evaluation gets a second pass from that pixel on; later chunks one nearest-F pass."""
    exp = build_experiment(_cfg("-interpolate -default_F 7 -oversample 2 -Xbeam 1 -Ybeam 1", hkl=True),
                           xp=np, dtype=np.float64)
    npos = 26 * 22
    img, state = gpu.render_kernel(exp, raw_module=spy, chunk=10)
    P = state.trigger[0]
    chunks = -(-npos // 10)
    assert len(spy.calls) == chunks + 1
    names = [p.name for p in kernels.kernel_signature(kernels.source(), kernels.RENDER_KERNEL)]
    arg = lambda c, name: int(c[2][names.index(name)])  # noqa: E731
    starts = [arg(c, "start") for c in spy.calls]
    switch = [arg(c, "switch_pixel") for c in spy.calls]
    k = P // 10
    assert starts[:k + 1] == [10 * j for j in range(k + 1)] and switch[:k + 1] == [npos] * (k + 1)
    assert starts[k + 1] == P and switch[k + 1] == P
    interp = kernels.constants()["NBXP_INTERPOLATE"]
    assert all(not (arg(c, "flags") & interp) for c in spy.calls[k + 2:])


def test_engine_render_dispatches_a_cupy_experiment_to_the_kernel(cpu_module, monkeypatch):
    """engine.render hands an experiment on CuPy to the kernel (CuPy's namespace imitated by
    NumPy here, the kernel built for the CPU)."""
    class FakeCupy:
        __name__ = "array_api_compat.cupy"

        def __getattr__(self, name):
            return getattr(np, name)

    monkeypatch.setattr(kernels, "default_raw_module", lambda: cpu_module)
    exp = build_experiment(_cfg(), xp=np, dtype=np.float64)
    ref, _ = render(exp, threads=1)
    exp.xp = FakeCupy()
    ticks = []
    img, state = render(exp, progress=ticks.append)
    np.testing.assert_array_equal(img, ref)
    assert sum(ticks) == 26 * 22 and state.trigger is None


# ------------------------------------------------------------------ the stand-in's checks

def test_wrong_arguments_are_refused(spy):
    _, img, (grid, block, args) = _one_launch(spy)
    from nbxp.kernels.cpu import CpuRawModule
    kernel = kernels.get_kernel(np.float64, CpuRawModule)
    kernel(grid, block, args)  # the recorded launch is fine

    def swapped(i, j):
        a = list(args)
        a[i], a[j] = a[j], a[i]
        return tuple(a)

    names = [p.name for p in kernel.params]
    bad = {
        "swap start/switch_sub": swapped(names.index("start"), names.index("switch_sub")),
        "swap image/first_oor": swapped(names.index("image"), names.index("first_oor")),
        "swap Fgrid/mask": swapped(names.index("Fgrid"), names.index("mask")),
        "swap flags/dmin": swapped(names.index("flags"), names.index("dmin")),
        "swap frames/layout": swapped(names.index("frames"), names.index("layout")),
        "one missing": args[:-1],
        "one too many": args + (np.float64(0),),
        "python int": tuple(int(a) if i == names.index("oversample") else a for i, a in enumerate(args)),
        "python float": tuple(float(a) if i == names.index("scale") else a for i, a in enumerate(args)),
        "int64 for int": tuple(np.int64(a) if i == names.index("npanels") else a for i, a in enumerate(args)),
        "float32 scalar": tuple(np.float32(a) if i == names.index("kahn") else a for i, a in enumerate(args)),
        "float64 layout": tuple(a.astype(np.float64) if i == names.index("layout") else a
                                for i, a in enumerate(args)),
        "float32 image": (args[0].astype(np.float32),) + args[1:],
        "strided array": (np.zeros(2 * args[0].size)[::2],) + args[1:],
        "read-only output": (np.frombuffer(bytes(args[0].nbytes), np.float64),) + args[1:],
        "scalar for pointer": (np.float64(0),) + args[1:],
        "array for scalar": tuple(np.asarray([a]) if i == names.index("n") else a for i, a in enumerate(args)),
    }
    for what, a in bad.items():
        with pytest.raises(TypeError):
            kernel(grid, block, a)
        assert what
    with pytest.raises(TypeError):
        kernel(grid, block, list(args)[0])
    for g, b, err in [(7, block, TypeError), ((7.0,), block, TypeError), ((0,), block, ValueError),
                      (grid, (2048,), ValueError), (grid, (512,), ValueError), (grid, (16, 16, 2), ValueError),
                      ((1, 1, 1, 1), block, TypeError)]:
        with pytest.raises(err):
            kernel(g, b, args)


def test_a_launch_that_does_not_cover_the_pixels_shows(spy):
    """A wrong element count leaves pixels unrendered, as on a GPU; a single thread still
    covers everything (the kernel is a grid-stride loop)."""
    exp, img, (grid, block, args) = _one_launch(spy)
    from nbxp.kernels.cpu import CpuRawModule
    kernel = kernels.get_kernel(np.float64, CpuRawModule)
    names = [p.name for p in kernel.params]
    ref = np.array(img).reshape(-1)
    last = 15 * 26 + 20  # the ROI's last pixel
    assert ref[last] > 0

    def run(g, b, **changes):
        out = np.zeros_like(args[0])
        a = [out] + list(args[1:])
        for k, v in changes.items():
            a[names.index(k)] = v
        kernel(g, b, tuple(a))
        return out

    short = run(grid, block, n=np.int64(int(args[names.index("n")]) - 1))
    assert short[last] == 0 and np.array_equal(short[:last], ref[:last])
    np.testing.assert_array_equal(run((1,), (1,)), ref)
    np.testing.assert_array_equal(run((3, 2), (5, 2, 1)), ref)


def test_every_block_and_thread_runs_once(cpu_module):
    """cuda_cpu.h's launch: each (block, thread) of a 3-D grid of 3-D blocks, with the
    built-ins set as on a GPU."""
    code = r'''
extern "C" __global__ void ids(int* out, int n)
{
    const int tpb = blockDim.x * blockDim.y * blockDim.z;
    const int b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const int i = b * tpb + t;
    if (i < n) out[i] += 1 + b * 100 + t;
}
'''
    f = cpu_module(code=code).get_function("ids")
    out = np.zeros(200, np.int32)
    f((2, 3, 2), (2, 2, 1), (out, np.int32(200)))
    b, t = np.divmod(np.arange(48), 4)
    np.testing.assert_array_equal(out[:48], 1 + b * 100 + t)
    assert not out[48:].any()


def test_signature_parsing():
    code = '''
typedef float real;
#define IDX long long
/* a comment with extern "C" __global__ void k(int x) */
extern "C" __global__ void k(real* __restrict__ out, const unsigned char* m, IDX n, int flag,
                             const double* __restrict__ table)
{}
'''
    ps = kernels.kernel_signature(code, "k")
    assert [(p.name, p.dtype.name, p.pointer, p.const) for p in ps] == [
        ("out", "float32", True, False), ("m", "uint8", True, True), ("n", "int64", False, False),
        ("flag", "int32", False, False), ("table", "float64", True, True)]
    src = kernels.source()
    ps64 = kernels.kernel_signature(src, "nbxp_render", kernels.compile_options(np.float64))
    ps32 = kernels.kernel_signature(src, "nbxp_render", kernels.compile_options(np.float32))
    assert ps64[0].dtype == np.float64 and ps32[0].dtype == np.float32 and ps32[-1].dtype == np.float32
    with pytest.raises(LookupError):
        kernels.kernel_signature(code, "nope")
    assert kernels.max_threads_per_block(code, "k") is None
    assert kernels.max_threads_per_block(src, "nbxp_render") == 256 == kernels.constants()["NBXP_MAX_BLOCK"]
    assert kernels.kernel_names(src) == ["nbxp_render"]


def test_python_constants_come_from_the_source():
    c = kernels.constants()
    assert c["NBXP_FRAME_SIZE"] == 24 and c["NBXP_SOURCE_SIZE"] == 10
    assert c["NBXP_LAYOUT_SIZE"] == 8
    bits = [v for k, v in c.items() if not k.startswith(("NBXP_SHAPE", "NBXP_FRAME", "NBXP_SOURCE", "NBXP_MAX",
                                                           "NBXP_MIN", "NBXP_LAYOUT"))]
    assert sorted(bits) == [1 << i for i in range(len(bits))]


# ------------------------------------------------------------------ backend choice

def test_choose_backend(monkeypatch):
    monkeypatch.setattr(gpu, "gpu_status", lambda: (False, "no CUDA device"))
    monkeypatch.setenv("NBXP_NO_NATIVE", "1")  # no CPU kernel either (tests/test_kernel_simd.py has it)
    assert gpu.choose_backend("auto")[0] == "numpy"
    assert gpu.choose_backend("numpy") == ("numpy", "requested")
    assert gpu.choose_backend(None)[0] == "numpy"
    with pytest.raises(gpu.BackendError, match="no usable GPU"):
        gpu.choose_backend("cupy")
    with pytest.raises(gpu.BackendError, match="expected one of"):
        gpu.choose_backend("opencl")
    monkeypatch.setattr(gpu, "gpu_status", lambda: (True, "1 CUDA device"))
    assert gpu.choose_backend("auto") == ("cupy", "auto: 1 CUDA device")
    assert gpu.choose_backend("cupy")[0] == "cupy"


def test_gpu_status_survives_a_broken_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    assert gpu.gpu_status() == (False, "CuPy is not installed")


@pytest.mark.skipif(gpu.usable_gpu(), reason="a GPU is present")
def test_library_backend_without_gpu(caplog, monkeypatch):
    monkeypatch.setenv("NBXP_NO_NATIVE", "1")  # no CPU kernel either (tests/test_kernel_simd.py has it)
    cfg = _cfg()
    with caplog.at_level("INFO", logger="nbxp"):
        img = nbxp.simulate(cfg, backend="auto")
    assert isinstance(img, np.ndarray) and "nbxp backend: numpy" in caplog.text
    assert isinstance(nbxp.simulate(cfg, backend="numpy"), np.ndarray)
    with pytest.raises(gpu.BackendError):
        nbxp.simulate(cfg, backend="cupy")
    with pytest.raises(ValueError):
        nbxp.simulate(cfg, xp=np, backend="cupy")


@pytest.mark.skipif(gpu.usable_gpu(), reason="a GPU is present")
def test_cli_backend_without_gpu(tmp_path):
    args = [sys.executable, "-m", "nbxp", *BASE.split(), "-default_F", "30", "-nonoise", "-nopgm", "-noprogress"]
    p = subprocess.run(args + ["--backend", "cupy"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "--backend cupy: no usable GPU" in p.stderr and not (tmp_path / "floatimage.bin").exists()
    env = dict(os.environ, NBXP_NO_NATIVE="1")  # no CPU kernel either (tests/test_kernel_simd.py has it)
    p = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert "nbxp backend: numpy (auto: no usable GPU" in p.stdout


def test_to_host_float32():
    import array_api_strict as xs
    a = np.arange(6.0).reshape(2, 3)
    for x in (a, xs.asarray(a)):
        h = gpu.to_host_float32(x)
        assert h.dtype == np.float32 and h.flags.c_contiguous and np.array_equal(h, a)


def test_engine_and_kernel_helper_agree_on_a_plain_case(cpu_module):
    a, b, _, _, _ = engine_and_kernel(_cfg(), np.float64, cpu_module)
    assert_exact(b, a)
