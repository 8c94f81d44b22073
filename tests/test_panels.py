"""Multi-panel detectors (issue 14) in the set-up and in every engine.

A detector is a list of flat panels (:class:`nbxp.panels.PanelSpec`).  The tests hold the
panels to the one detector nanoBragg's flags describe, whose images are established:

- a flat detector cut into contiguous panels (2x2 of different sizes, rows) renders the
  single panel's pixels: only the rounding of the sub-pixel positions differs (each panel
  adds its own origin), measured ~1.4e-15 of the maximum, bounded here by 1e-12;
- one panel equal to the flags' detector renders the flags' image (bit for bit for the
  MOSFLM default in the NumPy engine);
- tilted panels with gaps: every engine agrees with the NumPy engine, and a reflection put
  exactly on the Ewald sphere (solved here with numpy) peaks at the pixel its diffracted ray
  meets on a tilted panel (ray-plane intersection computed here).

Engines: the NumPy engine (the specification), the compiled CPU kernel (cpu_simd) and the
CUDA kernel's CPU build (CpuRawModule through nbxp.gpu's launch glue).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import nbxp
from nbxp import gpu, resources
from nbxp.engine import render, rendered_masks
from nbxp.errors import ConfigError, NbxpError
from nbxp.experiment import build_experiment
from nbxp.panels import PanelSpec, slab
from nbxp.series import prepare_series

from .kernel_helpers import cpu_module

__all__ = ["cpu_module"]

BASE = "-cell 70 80 90 85 95 100 -lambda 2 -distance 60 -detpixels_f 26 -detpixels_s 22 -pixel 0.2 -N 4"
#: a cut detector differs from the whole one only by the rounding of sub-pixel positions
SPLIT_TOL = 1e-12


@pytest.fixture(scope="module")
def simd():
    from nbxp.kernels import cpu_simd
    why = cpu_simd.why_unavailable()
    if why:
        pytest.skip(f"no CPU kernel: {why}")
    return cpu_simd


def engines(cpu_module, simd):
    """name -> render(exp) for the three engines."""
    return {
        "numpy": lambda e: render(e, threads=1),
        "cpu": lambda e: simd.render_cpu(e, threads=2),
        "cuda-cpu": lambda e: gpu.render_kernel(e, raw_module=cpu_module, chunk=97),
    }


def cfg_of(extra=""):
    return nbxp.config_from_args((BASE + " " + extra).split())


def host(v):
    return np.asarray(v, dtype=np.float64)


def cut(geom, boxes, **kw):
    """PanelSpecs cutting the flags' detector ``geom`` into rectangles (f0, s0, nf, ns) of
    its pixels: origin = pix0 + f0 px fdet + s0 px sdet."""
    pix0, f, s = host(geom.pix0), host(geom.fdet), host(geom.sdet)
    px = geom.pixel_size
    return tuple(PanelSpec(f"p{i}", tuple(pix0 + f0 * px * f + s0 * px * s), tuple(f), tuple(s), nf, ns, px, **kw)
                 for i, (f0, s0, nf, ns) in enumerate(boxes))


def assemble(images, boxes, shape):
    out = np.full(shape, np.nan)
    for im, (f0, s0, nf, ns) in zip(images, boxes):
        assert np.asarray(im).shape == (ns, nf)
        out[s0:s0 + ns, f0:f0 + nf] = np.asarray(im, dtype=np.float64)
    assert not np.isnan(out).any()
    return out


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


#: 2x2 of different sizes, and three bands of rows
UNEVEN = [(0, 0, 10, 9), (10, 0, 16, 9), (0, 9, 10, 13), (10, 9, 16, 13)]
ROWS = [(0, 0, 26, 5), (0, 5, 26, 1), (0, 6, 26, 16)]

SPLIT_CASES = {
    "plain": "-default_F 30",
    "oversample_thick_mosaic": "-default_F 30 -oversample 3 -detector_thick 200 -detector_thicksteps 2 "
                               "-detector_abs 150 -mosaic 1 -mosaic_dom 3",
    "rotated_oversample_flags": "-default_F 30 -oversample 2 -oversample_omega -oversample_polar -polar 0.8 "
                                "-detector_rotx 4 -detector_roty -3 -twotheta 6",
}


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
@pytest.mark.parametrize("boxes", [UNEVEN, ROWS], ids=["2x2-uneven", "rows"])
def test_a_cut_detector_gives_the_single_panel(case, boxes, cpu_module, simd):
    cfg = cfg_of(SPLIT_CASES[case])
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    ref, _ = render(exp, threads=1)
    ref = np.asarray(ref)
    assert ref.max() > 0
    cfg.detector.panels = cut(exp.geom, boxes)
    multi = build_experiment(cfg, xp=np, dtype=np.float64)
    assert multi.multi_panel and len(multi.panels) == len(boxes) and multi.oversample == exp.oversample
    assert multi.panel_offsets.tolist() == np.cumsum([0] + [nf * ns for _, _, nf, ns in boxes]).tolist()
    for name, fn in engines(cpu_module, simd).items():
        images, _ = fn(multi)
        assert isinstance(images, list), name
        assert rel(assemble(images, boxes, ref.shape), ref) <= SPLIT_TOL, name


def test_a_cut_detector_float32_and_the_written_image(simd):
    """float32 experiments and the CPU kernel's float32 image (what the command writes)."""
    cfg = cfg_of("-default_F 30 -oversample 2")
    exp = build_experiment(cfg, xp=np, dtype=np.float32)
    ref = np.asarray(render(exp, threads=1)[0], np.float64)
    cfg.detector.panels = cut(exp.geom, UNEVEN)
    multi = build_experiment(cfg, xp=np, dtype=np.float32)
    for images in (render(multi, threads=1)[0], simd.render_cpu(multi, float32_image=True)[0]):
        assert all(np.asarray(im).dtype == np.float32 for im in images)
        assert rel(assemble(images, UNEVEN, ref.shape), ref) <= 1e-6


ONE_PANEL = {
    "mosflm_default": "-default_F 30",
    "rotated_twotheta": "-default_F 30 -oversample 2 -detector_rotx 5 -detector_roty 3 -detector_rotz 10 "
                        "-twotheta 15 -Xbeam 2 -Ybeam 3",
    "xds": "-default_F 30 -xds -oversample 2 -ORGX 10 -ORGY 12",
}


@pytest.mark.parametrize("case", sorted(ONE_PANEL))
def test_one_panel_equal_to_the_flags_detector(case, cpu_module, simd):
    cfg = cfg_of(ONE_PANEL[case])
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    g = exp.geom
    cfg.detector.panels = (PanelSpec("flags", tuple(host(g.pix0)), tuple(host(g.fdet)), tuple(host(g.sdet)),
                                     g.fpixels, g.spixels, g.pixel_size),)
    one = build_experiment(cfg, xp=np, dtype=np.float64)
    p = one.panels[0]
    assert one.geom is p and math.isclose(p.close_distance, g.close_distance, rel_tol=1e-14)
    assert math.isclose(p.Fclose, g.Fclose, rel_tol=1e-12, abs_tol=1e-15)
    np.testing.assert_allclose(host(p.odet), host(g.odet), atol=1e-15)
    for name, fn in engines(cpu_module, simd).items():
        ref = np.asarray(fn(exp)[0])
        images, _ = fn(one)
        assert len(images) == 1 and images[0].shape == ref.shape
        if case == "mosflm_default":
            np.testing.assert_array_equal(images[0], ref, err_msg=name)
        else:
            assert rel(images[0], ref) <= SPLIT_TOL, name


def test_nanobragg_detector_is_one_panel_unchanged():
    exp = build_experiment(cfg_of("-default_F 30"), xp=np, dtype=np.float64)
    assert not exp.multi_panel and exp.panels == [exp.geom] and exp.panels[0] is exp.geom
    assert exp.panel_offsets.tolist() == [0, 26 * 22] and exp.panel_view(0) is exp
    img, _ = render(exp, threads=1)
    assert not isinstance(img, list) and img.shape == (22, 26)


# ------------------------------------------------------------------ tilted panels, gaps

def rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def tilted_panels(centre, normal_tilts, n=(18, 14), px=1e-4, gap=2e-3):
    """Panels side by side along lab z with a gap, each tilted about its own axis."""
    out = []
    for i, (axis, ang) in enumerate(normal_tilts):
        R = rotation(axis, math.radians(ang))
        fast, slow = R @ np.array([0.0, 0.0, 1.0]), R @ np.array([0.0, -1.0, 0.0])
        c = np.asarray(centre) + np.array([0.0, 0.0, 1.0]) * (i - 0.5) * (n[0] * px + gap)
        origin = c - fast * n[0] * px / 2 - slow * n[1] * px / 2
        out.append(PanelSpec(f"t{i}", tuple(origin), tuple(fast), tuple(slow), n[0], n[1], px,
                             thickness=[None, 300e-6][i % 2], mu=[None, 2000.0][i % 2]))
    return tuple(out)


@pytest.mark.parametrize("extra", ["-default_F 30 -oversample 2 -mosaic 0.5 -mosaic_dom 3",
                                   "-default_F 30 -oversample 2 -oversample_thick -detector_thick 100 "
                                   "-detector_thicksteps 2 -polar 0.9 -dmin 3"])
def test_tilted_panels_with_gaps_every_engine_agrees(extra, cpu_module, simd):
    cfg = cfg_of(extra)
    cfg.detector.panels = tilted_panels((0.06, 0.004, 0.0), [((0, 1, 0), 12), ((1, 1, 0), -9)])
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    assert exp.panel_sensors[1].thickness == 300e-6 and exp.panel_sensors[1].mu == 2000.0
    runs = {name: fn(exp)[0] for name, fn in engines(cpu_module, simd).items()}
    ref = runs.pop("numpy")
    assert all(np.asarray(r).max() > 0 for r in ref)
    for name, images in runs.items():
        for a, b in zip(images, ref):
            assert rel(a, b) <= 1e-12, name


@pytest.mark.parametrize("ns", ["array_api_strict", "torch", "jax.numpy"])
def test_tilted_panels_on_other_namespaces_agree_with_numpy(ns):
    """The array-API engine on another namespace renders a multi-panel detector as NumPy does
    (JAX through its own path without item assignment), one image per panel."""
    mod = pytest.importorskip(ns)
    if ns == "jax.numpy":
        pytest.importorskip("jax").config.update("jax_enable_x64", True)
    cfg = cfg_of("-default_F 30 -oversample 2 -mosaic 0.5 -mosaic_dom 3")
    cfg.detector.panels = tilted_panels((0.06, 0.004, 0.0), [((0, 1, 0), 12), ((1, 1, 0), -9)])
    ref = nbxp.simulate(cfg, xp=np)
    got = nbxp.simulate(cfg, xp=mod)
    assert isinstance(got, list) and len(got) == len(ref) == 2
    for a, b in zip(got, ref):
        a = np.from_dlpack(a) if ns == "array_api_strict" else np.asarray(a)
        assert a.shape == b.shape and b.max() > 0
        assert rel(a, b) <= 1e-12, ns


def bragg_setup():
    """A cubic 50 A cell at lambda 1 A, turned about the spindle (-phi) so that reflection
    (1, 2, 3) lies exactly on the Ewald sphere; returns (cfg, diffracted unit vector)."""
    base = "-cell 50 50 50 90 90 90 -lambda 1 -N 7 -default_F 100 -oversample 1 -distance 80 -detpixels 16"
    hkl = np.array([1.0, 2.0, 3.0])
    lam = 1e-10
    exp0 = build_experiment(nbxp.config_from_args(base.split()), xp=np, dtype=np.float64)
    beam = np.array([1.0, 0.0, 0.0])
    # h = a.S for cell vectors a, b, c (rows, m): the reciprocal vector G solves M G = h
    G0 = np.linalg.solve(np.asarray(exp0.orient[0]), hkl)
    u = exp0.spindle_unit
    # i . R(phi) G0 = -lambda |G|^2 / 2 (Ewald sphere), R about u: A cos + B sin + C
    par = u * (u @ G0)
    perp = G0 - par
    A, B, C = beam @ perp, beam @ np.cross(u, perp), beam @ par
    target = -lam * (G0 @ G0) / 2 - C
    rho = math.hypot(A, B)
    base_ang = math.atan2(B, A)
    cands = [base_ang + s * math.acos(target / rho) for s in (1, -1)]
    for phi in sorted(cands, key=abs):
        for sign in (1, -1):
            cfg = nbxp.config_from_args((base + f" -phi {math.degrees(sign * phi)!r}").split())
            exp = build_experiment(cfg, xp=np, dtype=np.float64)
            G = np.linalg.solve(np.asarray(exp.orient[0]), hkl)
            k_out = beam / lam + G
            if abs(np.linalg.norm(k_out) * lam - 1) < 1e-12:
                return cfg, k_out / np.linalg.norm(k_out)
    raise AssertionError("no spindle angle puts the reflection on the Ewald sphere")


def test_a_reflection_peaks_where_its_ray_meets_a_tilted_panel(cpu_module, simd):
    cfg, d = bragg_setup()
    px, n = 1e-4, (21, 17)
    target = (6, 13)  # (slow, fast) pixel the ray must hit, on the second panel
    # panel 1: normal 25 degrees off the ray, the ray through the centre of pixel `target`
    R = rotation(np.cross(d, [0, 0, 1.0]), math.radians(25))
    normal = R @ d
    fast = np.cross(normal, [0, 1.0, 0])
    fast /= np.linalg.norm(fast)
    slow = np.cross(normal, fast)  # fast x slow = normal: the panel faces the sample
    hit = 0.08 * d
    origin = hit - (target[1] + 0.5) * px * fast - (target[0] + 0.5) * px * slow
    # panel 0: flat, off the direct beam, beside panel 1 with a gap
    p0 = PanelSpec("flat", (0.08, 0.004, 0.004), (0, 0, 1.0), (0, -1.0, 0), 16, 16, px)
    cfg.detector.panels = (p0, PanelSpec("tilted", tuple(origin), tuple(fast), tuple(slow), n[0], n[1], px))
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    g = exp.panels[1]
    # the panel's own description of the plane, computed independently: normal distance
    assert math.isclose(g.close_distance, float(origin @ normal), rel_tol=1e-12)
    np.testing.assert_allclose(host(g.odet), normal, atol=1e-12)
    for name, fn in engines(cpu_module, simd).items():
        images, _ = fn(exp)
        im = np.asarray(images[1])
        assert np.unravel_index(np.argmax(im), im.shape) == target, name


# ------------------------------------------------------------------ sensor, mask, ROI, refusals

def test_panel_sensor_overrides_the_run(cpu_module, simd):
    """Panel 1 has its own sensor: its pixels are those of the run with that sensor."""
    thick = "-detector_thick 250 -detector_abs 400"  # layers chosen as nanoBragg does
    boxes = [(0, 0, 26, 10), (0, 10, 26, 12)]
    cfg = cfg_of("-default_F 30 -oversample 2")
    thin = np.asarray(render(build_experiment(cfg, xp=np, dtype=np.float64), threads=1)[0])
    cfg_t = cfg_of("-default_F 30 -oversample 2 " + thick)
    exp_t = build_experiment(cfg_t, xp=np, dtype=np.float64)
    thick_img = np.asarray(render(exp_t, threads=1)[0])
    specs = cut(exp_t.geom, boxes)
    cfg.detector.panels = (specs[0], dataclasses.replace(specs[1], thickness=250e-6, mu=1.0 / 400e-6))
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    assert exp.panel_sensors[1].thicksteps == exp_t.thicksteps > 1 and exp.panel_sensors[0].thicksteps == 1
    want = np.vstack([thin[:10], thick_img[10:]])
    for name, fn in engines(cpu_module, simd).items():
        assert rel(np.vstack(fn(exp)[0]), want) <= SPLIT_TOL, name


def test_panel_masks_and_slab_mask_and_local_roi(cpu_module, simd):
    rng = np.random.default_rng(3)
    cfg = cfg_of("-default_F 30")
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    full = np.asarray(render(exp1, threads=1)[0])
    boxes = [(0, 0, 26, 8), (0, 8, 26, 14)]
    m0 = rng.random((8, 26)) > 0.3
    slab_mask = rng.random((22, 26)) > 0.2
    specs = cut(exp1.geom, boxes)
    cfg.detector.panels = (dataclasses.replace(specs[0], mask=m0), specs[1])
    cfg.detector.mask = slab_mask.astype(np.uint8)
    cfg.detector.roi = (3, 20, 2, 6)  # in each panel's own pixels
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    box = np.zeros((22, 26), bool)
    box[2:7, 3:21] = True
    box[10:15, 3:21] = True
    keep = box & slab_mask & np.vstack([m0, np.ones((14, 26), bool)])
    np.testing.assert_array_equal(np.vstack(rendered_masks(exp)), keep)
    want = np.where(keep, full, 0.0)
    for name, fn in engines(cpu_module, simd).items():
        ticks = []
        if name == "numpy":
            images, _ = render(exp, threads=1, progress=ticks.append)
            assert sum(ticks) == keep.sum()
        else:
            images = fn(exp)[0]
        got = np.vstack(images)
        assert np.array_equal(got == 0, ~keep | (want == 0)), name
        assert rel(got, want) <= SPLIT_TOL, name


def test_interpolation_switches_off_at_the_same_global_pixel(cpu_module, simd):
    """The tricubic fallback runs through the panels in order; its trigger is a global
    pixel index, the same in every engine."""
    cfg = cfg_of("-interpolate -default_F 7 -oversample 2 -Xbeam 1 -Ybeam 1")
    rng = np.random.default_rng(1)
    cfg.hkl = nbxp.HKLGrid(F=rng.uniform(10, 100, (12, 12, 12)), h_min=-6, k_min=-6, l_min=-6, count=12**3)
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    cfg.detector.panels = cut(exp1.geom, UNEVEN)
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    ref, sref = render(exp, threads=1)
    assert sref.trigger is not None and sref.trigger[0] >= exp.panel_offsets[1]  # beyond panel 0
    for name, fn in engines(cpu_module, simd).items():
        images, state = fn(exp)
        assert state.trigger[0] == sref.trigger[0], name
        np.testing.assert_allclose(state.trigger[1:4], sref.trigger[1:4], rtol=1e-12)
        for a, b in zip(images, ref):
            assert rel(a, b) <= 1e-12, name


def test_simulate_series_and_slab():
    cfg = cfg_of("-default_F 30 -phi 2 -osc 1 -phisteps 2")
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    cfg.detector.panels = cut(exp1.geom, ROWS)
    images = nbxp.simulate(cfg, xp=np)
    assert isinstance(images, list) and [im.shape for im in images] == [(5, 26), (1, 26), (16, 26)]
    whole = slab(images)
    assert whole.shape == (22, 26)
    for a, b in zip(nbxp.simulate(cfg), images):  # the library default: the compiled kernel where it builds
        assert rel(a, b) <= 1e-12
    assert rel(whole, render(exp1, threads=1)[0]) <= SPLIT_TOL
    s = prepare_series(cfg, frames=3, xp=np)
    f1 = s.frame(1)
    cfg1 = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, phi0=cfg.crystal.phi0 + cfg.crystal.osc))
    for a, b in zip(f1.image, nbxp.simulate(cfg1, xp=np)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="fast widths differ"):
        slab([np.zeros((2, 3)), np.zeros((2, 4))])


def test_memory_estimate_counts_every_panel(monkeypatch):
    seen = []
    real = resources.setup_parts
    monkeypatch.setattr("nbxp.experiment.setup_parts", lambda **kw: seen.append(kw) or real(**kw))
    cfg = cfg_of("-default_F 30")
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    cfg.detector.panels = cut(exp1.geom, UNEVEN) + (dataclasses.replace(
        cut(exp1.geom, [(0, 0, 30, 40)])[0], thickness=1e-4, name="thick"),)
    cfg.detector.thicksteps = None
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    assert seen[-1]["pixels"] == 26 * 22 + 30 * 40 == exp.panel_offsets[-1]
    assert seen[-1]["thicksteps"] == max(s.thicksteps for s in exp.panel_sensors) > 1


@pytest.mark.parametrize("extra,match", [("-curved_det", "-curved_det"), ("", "-mask")])
def test_refusals_name_the_flag(extra, match):
    cfg = cfg_of("-default_F 30 " + extra)
    exp1 = build_experiment(cfg_of("-default_F 30"), xp=np, dtype=np.float64)
    cfg.detector.panels = cut(exp1.geom, UNEVEN)
    if match == "-mask":
        cfg.detector.mask = np.ones((22, 26))  # panel widths differ: no slab
    with pytest.raises(ConfigError, match=match):
        build_experiment(cfg, xp=np, dtype=np.float64)


def test_trace_pixel_is_refused_with_panels():
    from nbxp.trace import check_pixel
    cfg = cfg_of("-default_F 30")
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    cfg.detector.panels = cut(exp1.geom, ROWS)
    with pytest.raises(NbxpError, match="-trace_pixel"):
        check_pixel(cfg, 1, 1)


def test_a_mirrored_panel_faces_the_sample(cpu_module, simd):
    """A panel whose fast x slow points towards the sample (slow reversed: the flags'
    detector read bottom row first) is the flags' image upside down: its normal is turned
    away from the sample, so solid angle and absorption keep their sign."""
    # one sub-pixel: with more, nanoBragg's once-per-pixel factors are those of the first
    # sub-pixel, which mirroring moves to another corner of the pixel
    cfg = cfg_of("-default_F 30 -oversample 1 -detector_thick 150 -detector_abs 300 -detector_rotz 7")
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    g = exp1.geom
    px = g.pixel_size
    origin = host(g.pix0) + g.spixels * px * host(g.sdet)
    cfg.detector.panels = (PanelSpec("mirror", tuple(origin), tuple(host(g.fdet)), tuple(-host(g.sdet)),
                                     g.fpixels, g.spixels, px),)
    exp = build_experiment(cfg, xp=np, dtype=np.float64)
    assert exp.geom.close_distance > 0 and float(host(exp.geom.odet) @ host(g.odet)) > 0.999999
    for name, fn in engines(cpu_module, simd).items():
        ref = np.asarray(fn(exp1)[0])
        assert rel(fn(exp)[0][0][::-1], ref) <= SPLIT_TOL, name


def test_the_launch_glue_uses_only_the_array_api_with_panels(cpu_module):
    xs = pytest.importorskip("array_api_strict")
    cfg = cfg_of("-default_F 30 -oversample 2 -roi 2 14 1 10")
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    cfg.detector.panels = cut(exp1.geom, UNEVEN)
    cfg.detector.panels = (dataclasses.replace(cfg.detector.panels[0], mask=np.eye(9, 10, dtype=bool) == 0),
                           *cfg.detector.panels[1:])
    images, _ = gpu.render_kernel(build_experiment(cfg, xp=xs, dtype=xs.float64), raw_module=cpu_module, chunk=13)
    assert all(type(im).__module__.startswith("array_api_strict") for im in images)
    ref, _ = render(build_experiment(cfg, xp=np, dtype=np.float64), threads=1)
    for a, b in zip(images, ref):
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.parametrize("panel,match", [
    (PanelSpec("flat", (0.0, 0.0, 0.01), (0, 0, 1.0), (0, 1.0, 0), 4, 4, 1e-4), "passes through the sample"),
    (PanelSpec("par", (0.1, 0.0, 0.0), (0, 0, 1.0), (0, 0, 2.0), 4, 4, 1e-4), "parallel"),
    (PanelSpec("nan", (0.1, float("nan"), 0.0), (0, 0, 1.0), (0, 1.0, 0), 4, 4, 1e-4), "finite"),
    (PanelSpec("empty", (0.1, 0.0, 0.0), (0, 0, 1.0), (0, 1.0, 0), 0, 4, 1e-4), "fpixels"),
])
def test_degenerate_panels_are_refused(panel, match):
    cfg = cfg_of("-default_F 30")
    cfg.detector.panels = (panel,)
    with pytest.raises(ConfigError, match=match):
        build_experiment(cfg, xp=np, dtype=np.float64)


def test_corner_resolution_covers_every_panel():
    """A model's default -sf_dmin: the finest d over every panel's corners (here computed
    directly from the corner positions)."""
    from nbxp.experiment import corner_resolution
    cfg = cfg_of("-default_F 30")
    exp1 = build_experiment(cfg, xp=np, dtype=np.float64)
    near = cut(exp1.geom, [(0, 0, 26, 22)])[0]
    far = PanelSpec("far", (0.03, 0.05, 0.02), (0, 0, 1.0), (0, -1.0, 0), 10, 10, 2e-4)
    cfg.detector.panels = (near, far)
    lam = 2e-10
    px, o, f, sl = 2e-4, np.asarray(far.origin), np.asarray(far.fast), np.asarray(far.slow)
    corners = np.array([o + (i + 0.5) * px * f + (j + 0.5) * px * sl for i in (0, 9) for j in (0, 9)])
    d = corners / np.linalg.norm(corners, axis=1, keepdims=True)
    want = lam / np.linalg.norm(d - [1.0, 0, 0], axis=1).max()
    assert want < corner_resolution(cfg_of("-default_F 30").detector, cfg.beam)  # the far panel decides
    assert math.isclose(corner_resolution(cfg.detector, cfg.beam), want, rel_tol=1e-9)
