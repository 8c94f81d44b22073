"""The compiled CPU kernel (nbxp/kernels/nbxp_render_cpu.cpp, pixels in SIMD lanes) against
the NumPy engine, nbxp's specification.

The same cases as the CUDA kernel's tests (tests/test_kernel_cpu.py): every reference case,
every feature configuration and hypothesis-drawn configurations, both precisions.  float64
must agree to rounding: within FLOAT64_TOL of the image's maximum (the vector exp/sin of
libmvec differ from the engine's in the last bits), or the rounding bound of the
-oversample_* running products, which the engine computes in closed form (everything else is
bitwise equal, checked where it holds),
and with the same interpolation fallback; float32 by the correlation rule.  Also: the image
does not depend on the thread count, the fast-math build stays within its documented
tolerance, and without a compiler nbxp falls back to the NumPy engine with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, note, settings

import nbxp
from nbxp.engine import render
from nbxp.experiment import build_experiment

from .helpers import requires_reference
from .kernel_helpers import CASES, assert_close, assert_exact, case_config
from .test_kernel_cpu import BASE, FEATURES, SETTINGS, configurations, hkl_grid

#: float64 agreement with the engine, relative to the image maximum (default build); with
#: -oversample_* running products the engine's closed form (a reversed cumulative product)
#: and the kernel's running sum each round once per factor, so the bound is running_tol()
FLOAT64_TOL = 1e-13
#: a ROUND crystal's lattice factor 3 (sin x / x - cos x) / x^2 cancels as x -> 0, where the
#: spot is brightest: the last-bit differences of glibc's vector sin/cos (libmvec) and NumPy's
#: scalar ones grow there as eps / x^2 (drawn configurations reached 1.5e-12 of the maximum)
ROUND_TOL = 1e-9
#: the same with FMA contraction (--fast-math, NBXP_FAST_MATH=1)
FAST_MATH_TOL = 1e-10
#: features whose float64 image is bitwise the engine's (no running products, no
#: transcendental in the hot loop beyond what both compute alike)
BITWISE = {"default_F", "integer_N_1", "curved", "dmin", "dmin_all_cut", "hkl_nearest", "hkl_interpolate",
           "hkl_interpolate_mosaic", "hkl_interpolate_dmin", "kahn", "mosaic", "phi", "sources", "roi",
           "roi_outside", "roi_empty", "rotated", "sample_pivot", "oversample", "point_pixel", "tophat", "water"}


@pytest.fixture(scope="session")
def simd():
    """nbxp.kernels.cpu_simd, with both precisions built (cached on disk too)."""
    from nbxp.kernels import cpu_simd
    why = cpu_simd.why_unavailable()
    if why:
        pytest.skip(f"no CPU kernel: {why}")
    for dt in (np.float64, np.float32):
        cpu_simd.library(dt)
    return cpu_simd


def engine_and_simd(cfg, dtype, simd, **kw):
    """(engine image, CPU kernel image, engine state, kernel state, experiment)."""
    exp = build_experiment(cfg, xp=np, dtype=dtype)
    a, sa = render(exp, threads=1)
    b, sb = simd.render_cpu(exp, **kw)
    assert isinstance(b, np.ndarray) and b.dtype == exp.dtype and b.shape == a.shape
    return np.asarray(a, np.float64), np.asarray(b, np.float64), sa, sb, exp


def running_tol(exp, tol=FLOAT64_TOL):
    """The float64 bound for ``exp``: FLOAT64_TOL, or for running products of n sub-path
    factors (three gains each) 4 n eps, whichever is larger; for a ROUND crystal at least
    ROUND_TOL."""
    if exp.shape == "ROUND":
        tol = max(tol, ROUND_TOL)
    if not (exp.oversample_omega or exp.oversample_polar or exp.oversample_thick):
        return tol
    n = exp.thicksteps * exp.oversample ** 2 * exp.incident.shape[0] * exp.orient.shape[0]
    return max(tol, 4 * 3 * n * np.finfo(np.float64).eps)


def assert_float64(b, a, tol=FLOAT64_TOL):
    assert_exact(b, a)  # the parity rule, and the same non-finite pixels
    fin = np.isfinite(a)
    if fin.any():
        scale = max(np.abs(a[fin]).max(), 1e-300)
        assert np.abs(b[fin] - a[fin]).max() <= tol * scale, np.abs(b[fin] - a[fin]).max() / scale


def feature_config(feature):
    cfg = nbxp.config_from_args((BASE + " " + FEATURES[feature]).split())
    if feature.startswith("hkl"):
        cfg.hkl = hkl_grid()
    if feature == "noninteger_N":
        cfg.crystal.Na, cfg.crystal.Nb, cfg.crystal.Nc = 2.5, 3.0, 1.5
    return cfg


# ------------------------------------------------------------------ reference cases

@requires_reference
@pytest.mark.parametrize("name", CASES)
def test_reference_case_float64(name, tmp_path, simd):
    a, b, sa, sb, exp = engine_and_simd(case_config(name, tmp_path), np.float64, simd, threads=2)
    assert_float64(b, a, running_tol(exp))
    assert sa.trigger == sb.trigger


@requires_reference
@pytest.mark.parametrize("name", CASES)
def test_reference_case_float32(name, tmp_path, simd):
    a, b, _, _, _ = engine_and_simd(case_config(name, tmp_path), np.float32, simd, threads=2)
    assert_close(b, a)


# ------------------------------------------------------------------ every feature

@pytest.mark.parametrize("feature", sorted(FEATURES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_feature(feature, dtype, simd):
    a, b, sa, sb, exp = engine_and_simd(feature_config(feature), dtype, simd, threads=2)
    if dtype == np.float64:
        assert_float64(b, a, running_tol(exp))
        if feature in BITWISE:
            assert np.array_equal(a, b)
        assert sa.trigger == sb.trigger
    else:
        assert_close(b, a)
    if feature == "hkl_interpolate":
        assert sa.trigger is not None  # the fallback happens in this configuration


def test_mask(simd):
    cfg = nbxp.config_from_args((BASE + " -default_F 30 -roi 2 20 1 18").split())
    cfg.detector.mask = np.random.default_rng(3).random((22, 26)) > 0.3
    a, b, _, _, _ = engine_and_simd(cfg, np.float64, simd, threads=2)
    assert np.array_equal(a, b)
    assert np.all(b[~cfg.detector.mask] == 0) and np.count_nonzero(b) > 100


def test_interpolation_fallback_in_a_later_chunk_and_mid_pixel(simd):
    """Small chunks and a block of lanes straddling the switch: every evaluation before it
    interpolated, every one after it not, exactly as the engine decides."""
    cfg = nbxp.config_from_args((BASE + " -interpolate -default_F 7 -oversample 2 -mosaic 1 -mosaic_dom 3 "
                                 "-Xbeam 1 -Ybeam 1").split())
    cfg.hkl = hkl_grid((-6, -6, -6), (12, 12, 12))
    a, b, sa, sb, _ = engine_and_simd(cfg, np.float64, simd, threads=2, chunk=7)
    assert sa.trigger is not None and sa.trigger[0] > 7
    assert sa.trigger == sb.trigger
    assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_image_does_not_depend_on_threads_or_chunks(dtype, simd):
    cfg = nbxp.config_from_args((BASE + " -default_F 30 -mosaic 1 -mosaic_dom 3 -oversample 2 -oversample_omega "
                                 "-detector_thick 100 -detector_thicksteps 2 -gauss_xtal").split())
    exp = build_experiment(cfg, xp=np, dtype=dtype)
    ref, _ = simd.render_cpu(exp, threads=1)
    for threads, chunk in ((2, None), (3, 37), (5, 1)):
        img, _ = simd.render_cpu(exp, threads=threads, chunk=chunk)
        assert np.array_equal(img, ref), (threads, chunk)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_float32_image_is_the_image_rounded(dtype, simd):
    """What the command line writes: the kernel stores float32 directly, as astype would round."""
    cfg = nbxp.config_from_args((BASE + " -default_F 30 -roi 3 17 5 12 -mosaic 1 -mosaic_dom 2").split())
    exp = build_experiment(cfg, xp=np, dtype=dtype)
    img, _ = simd.render_cpu(exp, threads=2)
    img32, _ = simd.render_cpu(exp, threads=2, float32_image=True)
    assert img32.dtype == np.float32 and img32.shape == img.shape
    assert np.array_equal(img32, img.astype(np.float32)) and np.count_nonzero(img32) == 15 * 8


@pytest.mark.parametrize("feature", ["default_F", "hkl_nearest", "round", "gauss", "all_oversample_flags",
                                     "thickness", "noninteger_N"])
def test_fast_math_build_within_its_tolerance(feature, simd):
    a, b, sa, sb, exp = engine_and_simd(feature_config(feature), np.float64, simd, threads=2, fast_math=True)
    assert_float64(b, a, running_tol(exp, FAST_MATH_TOL))
    assert sa.trigger == sb.trigger


# ------------------------------------------------------------------ random configurations

@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=int(os.environ.get("NBXP_KERNEL_EXAMPLES", 150)), **SETTINGS)
@given(cfg=configurations())
def test_random_configuration_float64(cfg, simd):
    a, b, sa, sb, exp = engine_and_simd(cfg, np.float64, simd, threads=2, chunk=53)
    note(f"max |diff| / max = {np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(a)), 1e-300):.3g}")
    assert_float64(b, a, running_tol(exp))
    assert sa.trigger == sb.trigger


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=int(os.environ.get("NBXP_KERNEL_EXAMPLES", 150)) // 2, **SETTINGS)
@given(cfg=configurations())
def test_random_configuration_float32(cfg, simd):
    a, b, _, _, _ = engine_and_simd(cfg, np.float32, simd, threads=2)
    assert_close(b, a)


# ------------------------------------------------------------------ backend choice

def test_choose_backend_cpu(simd, monkeypatch):
    from nbxp import gpu
    monkeypatch.setattr(gpu, "gpu_status", lambda: (False, "no CUDA device"))
    name, why = gpu.choose_backend("auto", np.float64)
    assert name == "cpu" and why.startswith("auto: no usable GPU: no CUDA device; CPU kernel built with")
    assert gpu.choose_backend("cpu", np.float32) == ("cpu", "requested")
    assert gpu.choose_backend("auto", gpu=False)[0] == "cpu"
    monkeypatch.setenv("NBXP_NO_NATIVE", "1")
    assert gpu.choose_backend("auto") == ("numpy", "auto: no usable GPU: no CUDA device; "
                                                   "no CPU kernel: NBXP_NO_NATIVE is set")
    with pytest.raises(gpu.BackendError, match="--backend cpu: the compiled CPU kernel is not available"):
        gpu.choose_backend("cpu")
    monkeypatch.delenv("NBXP_NO_NATIVE")
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert gpu.choose_backend("auto")[1].endswith("no CPU kernel: no C++ compiler ($CXX, c++, g++ or clang++)")


def test_library_default_is_the_cpu_kernel_and_xp_numpy_the_engine(simd, caplog):
    cfg = nbxp.config_from_args((BASE + " -default_F 30 -mosaic 1 -mosaic_dom 2").split())
    with caplog.at_level("INFO", logger="nbxp"):
        fast = nbxp.simulate(cfg)
    assert "nbxp backend: cpu" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="nbxp"):
        spec = nbxp.simulate(cfg, xp=np)
    assert "nbxp backend" not in caplog.text  # an explicit namespace is the array-API engine
    assert isinstance(fast, np.ndarray) and np.array_equal(fast, spec)
    assert np.array_equal(nbxp.simulate(cfg, backend="cpu", dtype="float32"),
                          nbxp.simulate(cfg, xp=np, backend="cpu", dtype=np.float32))
    import array_api_strict
    with pytest.raises(ValueError, match="contradicts"):
        nbxp.simulate(cfg, xp=array_api_strict, backend="cpu")


def _cli(args, tmp_path, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-m", "nbxp", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=e)


CLI = BASE.split() + ["-default_F", "30", "-nonoise", "-nopgm", "-noprogress", "-mosaic", "1", "-mosaic_dom", "2"]


def test_cli_default_backend_and_fallback_without_a_compiler(simd, tmp_path):
    from nbxp.gpu import usable_gpu
    p = _cli(CLI + ["-floatfile", "auto.bin"], tmp_path)
    assert p.returncode == 0, p.stderr
    if not usable_gpu():
        assert "nbxp backend: cpu (auto: no usable GPU" in p.stdout
    p = _cli(CLI + ["--backend", "numpy", "-floatfile", "numpy.bin"], tmp_path)
    assert p.returncode == 0 and "nbxp backend: numpy (requested)" in p.stdout
    for env in ({"NBXP_NO_NATIVE": "1"}, {"CXX": str(tmp_path / "no-such-compiler")}):
        p = _cli(CLI + ["--backend", "auto", "-floatfile", "fallback.bin"], tmp_path, **env)
        assert p.returncode == 0, p.stderr
        lines = [ln for ln in p.stdout.splitlines() if "backend" in ln]
        assert len(lines) == 1 and "nbxp backend: numpy" in lines[0] and "no CPU kernel: " in lines[0], lines
        assert np.array_equal(np.fromfile(tmp_path / "fallback.bin", np.float32),
                              np.fromfile(tmp_path / "numpy.bin", np.float32))
        p = _cli(CLI + ["--backend", "cpu", "-floatfile", "forced.bin"], tmp_path, **env)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
        assert "--backend cpu: the compiled CPU kernel is not available" in p.stderr
        assert not (tmp_path / "forced.bin").exists()
    if not usable_gpu():
        assert np.array_equal(np.fromfile(tmp_path / "auto.bin", np.float32),
                              np.fromfile(tmp_path / "numpy.bin", np.float32))


def test_cli_threads_and_fast_math(simd, tmp_path):
    outs = []
    for extra in (["--threads", "1"], ["--threads", "2"], ["--threads", "2", "--fast-math"]):
        name = f"img{len(outs)}.bin"
        p = _cli(CLI + ["--backend", "cpu", "-floatfile", name, *extra], tmp_path)
        assert p.returncode == 0, p.stderr
        outs.append(np.fromfile(tmp_path / name, np.float32))
    assert np.array_equal(outs[0], outs[1])
    assert np.abs(outs[2] - outs[0]).max() <= 1e-6 * np.abs(outs[0]).max()

