"""The CUDA kernel's source, compiled for the CPU, against the NumPy engine.

Every reference case and random small configurations (hypothesis) covering every feature
the kernel handles: float64 must be "exact" by the parity rule (max |diff| <= 1e-5 of the
maximum), float32 must correlate >= 0.9999; with interpolation the fallback must switch at
the same evaluation (same warning).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import nbxp
from nbxp.config import HKLGrid

from .helpers import requires_reference
from .kernel_helpers import CASES, assert_close, assert_exact, case_config, cpu_module, engine_and_kernel

__all__ = ["cpu_module"]  # the fixture, imported for pytest


@requires_reference
@pytest.mark.parametrize("name", CASES)
def test_reference_case_float64_exact(name, tmp_path, cpu_module):
    a, b, sa, sb, _ = engine_and_kernel(case_config(name, tmp_path), np.float64, cpu_module)
    assert_exact(b, a)
    assert sa.trigger == sb.trigger


@requires_reference
@pytest.mark.parametrize("name", CASES)
def test_reference_case_float32_close(name, tmp_path, cpu_module):
    a, b, _, _, _ = engine_and_kernel(case_config(name, tmp_path), np.float32, cpu_module)
    assert_close(b, a)


# ------------------------------------------------------------------ every feature, by hand

BASE = "-cell 70 80 90 85 95 100 -lambda 2 -distance 60 -detpixels_f 26 -detpixels_s 22 -pixel 0.2 -N 4"


def hkl_grid(lo=(-3, -2, -4), shape=(7, 6, 9), seed=1):
    rng = np.random.default_rng(seed)
    return HKLGrid(F=rng.uniform(10, 100, size=shape), h_min=lo[0], k_min=lo[1], l_min=lo[2],
                   count=int(np.prod(shape)))


FEATURES = {
    "default_F": "-default_F 30",
    "integer_N_1": "-default_F 30 -Na 1 -Nb 3 -Nc 5",
    "noninteger_N": "-default_F 30",  # Na, Nb, Nc set below (the library allows any N)
    "round": "-default_F 30 -round_xtal -fudge 1.3",
    "gauss": "-default_F 30 -gauss_xtal",
    "tophat": "-default_F 30 -tophat_spots -fudge 0.7",
    "oversample": "-default_F 30 -oversample 3",
    "oversample_omega": "-default_F 30 -oversample 2 -oversample_omega",
    "oversample_polar": "-default_F 30 -oversample 2 -oversample_polar -polar 0.7",
    "oversample_thick": "-default_F 30 -oversample 2 -oversample_thick -detector_thick 300 -detector_thicksteps 3 "
                        "-detector_abs 200",
    "thickness": "-default_F 30 -detector_thick 200 -detector_thicksteps 2 -detector_abs 150",
    "all_oversample_flags": "-default_F 30 -oversample 2 -oversample_omega -oversample_polar -oversample_thick "
                            "-detector_thick 100 -detector_thicksteps 2",
    "dmin": "-default_F 30 -dmin 4 -divergence 1 -divsteps 3",
    "dmin_all_cut": "-default_F 30 -dmin 1000",
    "kahn": "-default_F 30 -polar 0.9",
    "nopolar": "-default_F 30 -nopolar",
    "nopolar_oversample_polar": "-default_F 30 -nopolar -oversample_polar -oversample 2",
    "curved": "-default_F 30 -curved_det -detector_rotx 5",
    "point_pixel": "-default_F 30 -point_pixel",
    "mosaic": "-default_F 30 -mosaic 1 -mosaic_dom 4",
    "phi": "-default_F 30 -phi 10 -osc 3 -phisteps 3",
    "sources": "-default_F 30 -divergence 2 -divsteps 3 -dispersion 5 -dispsteps 3",
    "water": "-default_F 30 -water 100",
    "water_oversample": "-default_F 30 -water 50 -oversample 2 -oversample_omega",
    "roi": "-default_F 30 -roi 3 17 5 12",
    "roi_outside": "-default_F 30 -roi 20 60 -5 3",
    "roi_empty": "-default_F 30 -roi 30 40 30 40",
    "rotated": "-default_F 30 -detector_rotx 3 -detector_roty -4 -detector_rotz 5 -twotheta 10",
    "sample_pivot": "-default_F 30 -xds -twotheta 8",
    "hkl_nearest": "-nointerpolate -default_F 7",
    "hkl_interpolate": "-interpolate -default_F 7",
    "hkl_interpolate_mosaic": "-interpolate -default_F 7 -mosaic 2 -mosaic_dom 3 -oversample 2",
    "hkl_interpolate_water": "-interpolate -default_F 7 -water 20",
    "hkl_interpolate_dmin": "-interpolate -default_F 7 -dmin 3",
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_feature(feature, dtype, cpu_module):
    cfg = nbxp.config_from_args((BASE + " " + FEATURES[feature]).split())
    if feature.startswith("hkl"):
        cfg.hkl = hkl_grid()
    if feature == "noninteger_N":
        cfg.crystal.Na, cfg.crystal.Nb, cfg.crystal.Nc = 2.5, 3.0, 1.5
    a, b, sa, sb, exp = engine_and_kernel(cfg, dtype, cpu_module)
    if dtype == np.float64:
        assert_exact(b, a)
        assert sa.trigger == sb.trigger
    else:
        assert_close(b, a)
    if feature == "hkl_interpolate":
        assert sa.trigger is not None  # the fallback happens in this configuration


def test_mask(cpu_module):
    cfg = nbxp.config_from_args((BASE + " -default_F 30 -roi 2 20 1 18").split())
    cfg.detector.mask = np.random.default_rng(3).random((22, 26)) > 0.3
    a, b, _, _, _ = engine_and_kernel(cfg, np.float64, cpu_module)
    assert_exact(b, a)
    assert np.all(b[~cfg.detector.mask] == 0)


def test_interpolation_fallback_in_a_later_chunk_and_mid_pixel(cpu_module):
    """Small chunks: the switch lands in a later launch; every evaluation before it
    interpolated, every one after it not, exactly as the engine decides."""
    cfg = nbxp.config_from_args((BASE + " -interpolate -default_F 7 -oversample 2 -mosaic 1 -mosaic_dom 3 "
                                 "-Xbeam 1 -Ybeam 1").split())
    cfg.hkl = hkl_grid((-6, -6, -6), (12, 12, 12))
    a, b, sa, sb, _ = engine_and_kernel(cfg, np.float64, cpu_module, chunk=7, block=4)
    assert sa.trigger is not None and sa.trigger[0] > 7
    assert sa.trigger == sb.trigger
    assert_exact(b, a)


# ------------------------------------------------------------------ random configurations

@st.composite
def configurations(draw):
    f = lambda lo, hi: draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))  # noqa: E731
    i = lambda lo, hi: draw(st.integers(lo, hi))  # noqa: E731
    fp, sp = i(4, 20), i(4, 20)
    args = ["-cell", *(f"{f(30, 90):.3f}" for _ in range(3)), *(f"{f(75, 105):.3f}" for _ in range(3)),
            "-lambda", f"{f(0.8, 6):.4f}", "-distance", f"{f(40, 200):.3f}", "-pixel", f"{f(0.05, 0.4):.4f}",
            "-detpixels_f", str(fp), "-detpixels_s", str(sp), "-misset", *(f"{f(-90, 90):.3f}" for _ in range(3))]
    args += ["-Na", str(i(1, 9)), "-Nb", str(i(1, 9)), "-Nc", str(i(1, 9))]
    noninteger_N = [f(0.5, 6) for _ in range(3)] if draw(st.integers(0, 3)) == 0 else None
    shape = draw(st.sampled_from(["", "-round_xtal", "-gauss_xtal", "-tophat_spots"]))
    if shape:
        args += [shape, "-fudge", f"{f(0.3, 2):.3f}"]
    args += ["-oversample", str(i(1, 3))]
    for flag in ("-oversample_omega", "-oversample_polar", "-oversample_thick", "-curved_det", "-point_pixel",
                 "-nopolar"):
        if draw(st.integers(0, 3)) == 0:
            args.append(flag)
    if draw(st.booleans()):
        args += ["-polar", f"{f(-1, 1):.3f}"]
    if draw(st.booleans()):
        args += ["-detector_thick", f"{f(10, 400):.2f}", "-detector_thicksteps", str(i(1, 3)),
                 "-detector_abs", f"{f(20, 500):.2f}"]
    if draw(st.integers(0, 2)) == 0:
        args += ["-dmin", f"{f(0.5, 20):.3f}"]
    if draw(st.booleans()):
        args += ["-mosaic", f"{f(0.1, 3):.3f}", "-mosaic_dom", str(i(1, 4)), "-mosaic_seed", str(i(1, 10**6))]
    if draw(st.booleans()):
        args += ["-phi", f"{f(-30, 30):.3f}", "-osc", f"{f(0.1, 5):.3f}", "-phisteps", str(i(1, 3))]
    if draw(st.booleans()):
        args += ["-divergence", f"{f(0.1, 3):.3f}", "-divsteps", str(i(1, 3)),
                 "-dispersion", f"{f(0, 10):.3f}", "-dispsteps", str(i(1, 3))]
    if draw(st.integers(0, 3)) == 0:
        args += ["-water", f"{f(1, 200):.2f}"]
    if draw(st.booleans()):
        args += ["-detector_rotx", f"{f(-10, 10):.3f}", "-detector_roty", f"{f(-10, 10):.3f}",
                 "-twotheta", f"{f(-20, 20):.3f}"]
    if draw(st.booleans()):
        a, b = sorted((i(-2, fp + 2), i(-2, fp + 2)))
        c, d = sorted((i(-2, sp + 2), i(-2, sp + 2)))
        args += ["-roi", str(a), str(b), str(c), str(d)]
    hkl = draw(st.sampled_from(["default", "nearest", "interpolate"]))
    args += ["-default_F", f"{f(0.5, 50):.3f}"]
    if hkl != "default":
        args.append("-interpolate" if hkl == "interpolate" else "-nointerpolate")
    note("nbxp " + " ".join(args))
    cfg = nbxp.config_from_args(args)
    if noninteger_N:
        cfg.crystal.Na, cfg.crystal.Nb, cfg.crystal.Nc = noninteger_N
    if hkl != "default":
        lo = (i(-6, 0), i(-6, 0), i(-6, 0))
        shape3 = (i(1, 12), i(1, 12), i(1, 12))
        cfg.hkl = hkl_grid(lo, shape3, seed=i(0, 1000))
        note(f"hkl grid from {lo}, shape {shape3}")
    if draw(st.integers(0, 3)) == 0:
        cfg.detector.mask = np.random.default_rng(i(0, 1000)).random((sp, fp)) > 0.25
        note("with a mask")
    if noninteger_N:
        note(f"N = {noninteger_N}")
    return cfg


# derandomized by default (the same examples on every run, so CI never flakes);
# NBXP_KERNEL_EXPLORE=1 draws new ones
EXPLORE = bool(os.environ.get("NBXP_KERNEL_EXPLORE"))
SETTINGS = dict(deadline=None, derandomize=not EXPLORE, suppress_health_check=[HealthCheck.too_slow,
                HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])


# some drawn configurations overflow the -oversample_* running products (point pixels close
# to the sample); the test then compares non-finite with non-finite, and NumPy's overflow
# warnings are expected
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=int(os.environ.get("NBXP_KERNEL_EXAMPLES", 150)), **SETTINGS)
@given(cfg=configurations())
def test_random_configuration_float64_exact(cfg, cpu_module):
    a, b, sa, sb, _ = engine_and_kernel(cfg, np.float64, cpu_module, chunk=53, block=32)
    event("interpolation fallback" if sa.trigger else "no fallback")
    event("image > 0" if np.nanmax(a) > 0 else "image 0")
    assert_exact(b, a)
    assert sa.trigger == sb.trigger


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=int(os.environ.get("NBXP_KERNEL_EXAMPLES", 150)) // 2, **SETTINGS)
@given(cfg=configurations())
def test_random_configuration_float32_close(cfg, cpu_module):
    a, b, _, _, _ = engine_and_kernel(cfg, np.float32, cpu_module)
    assert_close(b, a)
