"""Series (nbxp.series): rotation frames are single images at phi0 + i*osc, still shots are
uniformly random orientations, frames and their noise depend only on their index."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import nbxp
from nbxp import series as ser
from nbxp.crystal import uniform_rotation
from nbxp.gpu import usable_gpu

from .helpers import to_numpy
from .kernel_helpers import assert_exact, cpu_module  # noqa: F401  (fixture)

BASE = ["-cell", "70", "80", "90", "75", "85", "95", "-default_F", "100", "-N", "4", "-lambda", "1",
        "-distance", "100", "-detpixels", "40", "-pixel", "0.2", "-oversample", "1"]
MOSAIC = ["-mosaic", "0.5", "-mosaic_dom", "3", "-phi", "2", "-osc", "1.5", "-phisteps", "3"]
NB_ST = "/work/scratch/nb/nanoBragg_st"


def cfg_of(*extra):
    return nbxp.config_from_args(BASE + list(extra))


def run_nbxp(args, cwd):
    return subprocess.run([sys.executable, "-m", "nbxp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def at_phi(cfg, phi):
    return dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, phi0=phi))


# ---------------------------------------------------------------- rotation frames

@pytest.mark.parametrize("extra", [["-osc", "1"], MOSAIC], ids=["plain", "mosaic_phisteps"])
def test_rotation_frame_is_the_single_image_at_its_phi(extra):
    cfg = cfg_of(*extra)
    frames = list(nbxp.simulate_series(cfg, frames=4))
    osc = math.radians(float(extra[extra.index("-osc") + 1]))
    phi0 = cfg.crystal.phi0
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for f in frames:
        assert f.phi == phi0 + f.index * osc and f.osc == pytest.approx(osc) and f.rotation is None
        single = np.asarray(nbxp.simulate(at_phi(cfg, f.phi)))
        assert single.max() > 0
        np.testing.assert_array_equal(np.asarray(f.image), single)  # the same arithmetic: bit for bit
    # the crystal really turns: consecutive frames differ
    assert not np.array_equal(np.asarray(frames[0].image), np.asarray(frames[1].image))


def test_frames_do_not_depend_on_the_split():
    cfg = cfg_of(*MOSAIC)
    full = list(nbxp.simulate_series(cfg, frames=6))
    part = list(nbxp.simulate_series(cfg, frames=6, indices=[3, 4, 5]))
    assert [f.index for f in part] == [3, 4, 5]
    for f in part:
        np.testing.assert_array_equal(np.asarray(f.image), np.asarray(full[f.index].image))
        assert (f.phi, f.seed) == (full[f.index].phi, full[f.index].seed)
    stills = list(nbxp.simulate_series(cfg_of(), stills=5, orientation_seed=11))
    alone = nbxp.prepare_series(cfg_of(), stills=5, orientation_seed=11).frame(4)
    np.testing.assert_array_equal(np.asarray(alone.image), np.asarray(stills[4].image))
    np.testing.assert_array_equal(alone.rotation, stills[4].rotation)


def test_cli_frames_equal_single_runs_byte_for_byte(tmp_path):
    """Float and SMV (int and noise) files of a CLI series are those of single CLI runs with
    -phi phi_i -seed seed+i (float to the parity rule; SMV bytes, header included)."""
    args = BASE + MOSAIC + ["-seed", "5", "-nopgm", "-noprogress"]
    d = tmp_path / "series"
    d.mkdir()
    p = run_nbxp(args + ["--frames", "3", "-floatfile", "f_###.bin", "-intfile", "i_###.img",
                         "-noisefile", "n_###.img"], d)
    assert p.returncode == 0, p.stderr
    assert "frame 3/3" in p.stdout
    for i in range(3):
        one = tmp_path / f"one{i}"
        one.mkdir()
        phi = 2 + 1.5 * i
        q = run_nbxp(args + ["-phi", repr(phi), "-seed", str(5 + i), "-floatfile", "f.bin", "-intfile", "i.img",
                             "-noisefile", "n.img"], one)
        assert q.returncode == 0, q.stderr
        a = np.fromfile(d / f"f_{i + 1:03d}.bin", np.float32).astype(np.float64)
        b = np.fromfile(one / "f.bin", np.float32).astype(np.float64)
        assert b.max() > 0
        assert_exact(a, b)
        for s, o in (("i", "i"), ("n", "n")):
            assert (d / f"{s}_{i + 1:03d}.img").read_bytes() == (one / f"{o}.img").read_bytes()
        head = (d / f"i_{i + 1:03d}.img").read_bytes()[:512].decode("latin-1")
        assert f"PHI={phi:g};" in head and f"OSC_START={phi:g};" in head and "OSC_RANGE=1.5;" in head


@pytest.mark.skipif(not os.access(NB_ST, os.X_OK), reason="no nanoBragg binary here")
def test_frame_equals_nanobragg_at_its_phi(tmp_path):
    """Frame 2 of a mosaic, multi-step series against nanoBragg itself run with -phi phi_2 and
    -seed seed+2: float to the parity rule, int and noise SMV files byte for byte."""
    args = BASE + MOSAIC + ["-seed", "9", "-nopgm"]
    p = run_nbxp(args + ["--frames", "3", "-noprogress", "-floatfile", "f_#.bin", "-intfile", "i_#.img",
                         "-noisefile", "n_#.img"], tmp_path)
    assert p.returncode == 0, p.stderr
    nb = tmp_path / "nb"
    nb.mkdir()
    q = subprocess.run([NB_ST, *args, "-phi", "5", "-seed", "11", "-floatfile", "f.bin", "-intfile", "i.img",
                        "-noisefile", "n.img"], cwd=nb, capture_output=True, timeout=300)
    assert q.returncode == 0
    a = np.fromfile(tmp_path / "f_3.bin", np.float32).astype(np.float64)
    b = np.fromfile(nb / "f.bin", np.float32).astype(np.float64)
    assert b.max() > 0
    assert_exact(a, b)
    assert (tmp_path / "i_3.img").read_bytes() == (nb / "i.img").read_bytes()
    assert (tmp_path / "n_3.img").read_bytes() == (nb / "n.img").read_bytes()


def test_noise_of_a_frame_is_reproducible_alone(tmp_path):
    args = BASE + ["-osc", "1", "-seed", "100", "-nopgm", "-noprogress", "-floatfile", "f_#.bin",
                   "-intfile", "i_#.img", "-noisefile", "n_#.img"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert run_nbxp(args + ["--frames", "5"], a).returncode == 0
    # frame 4 alone: phi 3 deg, seed 100 + 3
    p = run_nbxp(BASE + ["-osc", "1", "-phi", "3", "-seed", "103", "-nopgm", "-noprogress", "-noisefile", "n.img"], b)
    assert p.returncode == 0, p.stderr
    assert (a / "n_4.img").read_bytes() == (b / "n.img").read_bytes()
    frames = [(a / f"n_{i}.img").read_bytes()[512:] for i in range(1, 6)]
    assert len(set(frames)) == 5  # every frame has its own noise
    assert ser.frame_seed(100, 0) == 100 and ser.frame_seed(100, 3) == 103


# ---------------------------------------------------------------- still shots

def _angles(Rs):
    return np.arccos(np.clip((np.trace(Rs, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0))


def _ks_against_haar(t):
    """Kolmogorov-Smirnov distance of rotation angles from the Haar law, whose density is
    (1 - cos t)/pi on [0, pi] (CDF (t - sin t)/pi)."""
    t = np.sort(t)
    cdf = (t - np.sin(t)) / np.pi
    n = t.size
    return max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))


def test_still_sampler_is_uniform_over_rotations():
    n = 20000
    Rs = np.stack([ser.shot_rotation(2024, i) for i in range(n)])
    # proper rotations
    np.testing.assert_allclose(Rs @ np.transpose(Rs, (0, 2, 1)), np.broadcast_to(np.eye(3), Rs.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(Rs), 1.0, atol=1e-12)
    # the Haar measure: rotation angles follow (1 - cos t)/pi (KS critical value at 1%: 1.63/sqrt(n))
    crit = 1.63 / math.sqrt(n)
    assert _ks_against_haar(_angles(Rs)) < crit
    # and the mean matrix vanishes (each entry has variance 1/3): 5 standard errors
    assert np.abs(Rs.mean(axis=0)).max() < 5 * math.sqrt(1 / 3 / n)
    # the same test rejects a sampler that is not uniform: Euler angles drawn uniformly
    g = np.random.default_rng(1)
    a, b, c = g.uniform(0, 2 * np.pi, (3, n))
    rz = lambda x: np.stack([np.stack([np.cos(x), -np.sin(x), 0 * x], -1), np.stack([np.sin(x), np.cos(x), 0 * x], -1),  # noqa: E731
                             np.stack([0 * x, 0 * x, 1 + 0 * x], -1)], -2)
    ry = lambda x: np.stack([np.stack([np.cos(x), 0 * x, np.sin(x)], -1), np.stack([0 * x, 1 + 0 * x, 0 * x], -1),  # noqa: E731
                             np.stack([-np.sin(x), 0 * x, np.cos(x)], -1)], -2)
    bad = rz(a) @ ry(b) @ rz(c)
    assert _ks_against_haar(_angles(bad)) > crit


def test_still_shots_are_independent():
    # seeded by (orientation seed, index): the same pair gives the same rotation, any other a different one
    np.testing.assert_array_equal(ser.shot_rotation(3, 7), ser.shot_rotation(3, 7))
    Rs = [ser.shot_rotation(3, i) for i in range(50)] + [ser.shot_rotation(4, 0)]
    assert len({r.tobytes() for r in Rs}) == len(Rs)
    # consecutive shots are uncorrelated: the relative rotation of neighbours is itself Haar-distributed
    n = 4000
    R = np.stack([ser.shot_rotation(8, i) for i in range(n + 1)])
    rel = np.transpose(R[:-1], (0, 2, 1)) @ R[1:]
    assert _ks_against_haar(_angles(rel)) < 1.63 / math.sqrt(n)


def _misset_angles(R):
    """(rx, ry, rz) with R = Rz Ry Rx, the order -misset applies (as crystal.random_misset)."""
    return (math.atan2(R[2, 1], R[2, 2]), -math.asin(max(-1.0, min(1.0, R[2, 0]))), math.atan2(R[1, 0], R[0, 0]))


def test_still_shot_is_the_crystal_turned_on_top_of_its_orientation():
    """Shot i is the single image of the crystal whose orientation is R_i times the one
    -cell/-phi give: the same image as a single run with that rotation as -misset."""
    cfg = cfg_of("-phi", "20", "-mosaic", "0.3", "-mosaic_dom", "2")
    s = nbxp.prepare_series(cfg, stills=3, orientation_seed=42)
    for i in range(3):
        f = s.frame(i)
        assert f.osc == 0.0 and f.phi == pytest.approx(math.radians(20))
        R = f.rotation  # R_i @ R_phi(20 deg) about the spindle (+z in the MOSFLM convention)
        np.testing.assert_allclose(R, ser.shot_rotation(42, i) @ ser.spindle_rotation([0, 0, 1], math.radians(20)),
                                   atol=1e-15)
        rx, ry, rz = _misset_angles(R)
        one = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, phi0=0.0, misset=(rx, ry, rz)))
        single = np.asarray(nbxp.simulate(one))
        assert single.max() > 0
        np.testing.assert_allclose(np.asarray(f.image), single, rtol=1e-6, atol=1e-9 * single.max())
    # shots differ from each other and from the unrotated crystal
    base = np.asarray(nbxp.simulate(cfg))
    imgs = [np.asarray(s.frame(i).image) for i in range(2)]
    assert not np.allclose(imgs[0], imgs[1]) and not np.allclose(imgs[0], base)


def test_uniform_rotation_is_shoemakes_quaternion():
    # u1 = 0 -> quaternion (sin 2pi u2, cos 2pi u2, 0, 0): a rotation about x by 2*(pi/2 - 2 pi u2)
    R = uniform_rotation(0.0, 0.125, 0.3)  # w = sin(pi/4), x = cos(pi/4): 90 degrees about x
    np.testing.assert_allclose(R, [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-15)


# ---------------------------------------------------------------- requests

@pytest.mark.parametrize("kw,extra,msg", [
    (dict(frames=0), ["-osc", "1"], "--frames: expected a positive"),
    (dict(stills=-2), [], "--stills: expected a positive"),
    (dict(frames=3), [], "-osc"),
    (dict(stills=3), ["-osc", "1"], "--stills and -osc"),
    (dict(stills=3), ["-phisteps", "4"], "--stills and -phisteps"),
    (dict(frames=2, stills=2), ["-osc", "1"], "one of --frames"),
])
def test_impossible_series_are_refused(kw, extra, msg):
    with pytest.raises(ser.SeriesError, match=msg.replace("(", r"\(")):
        nbxp.prepare_series(cfg_of(*extra), **kw)


def test_frame_metadata():
    s = nbxp.prepare_series(cfg_of("-osc", "0.5", "-phi", "10", "-seed", "3"), frames=2)
    f = s.frame(1)
    assert f.metadata == {"index": 1, "phi_start_deg": pytest.approx(10.5), "osc_deg": pytest.approx(0.5),
                          "noise_seed": 4}
    with pytest.raises(IndexError):
        s.frame(2)


# ---------------------------------------------------------------- the kernel path

def test_series_on_the_kernel_path(cpu_module):  # noqa: F811
    """The CUDA kernel (its CPU build standing in for cupy.RawModule) renders each frame from
    the frame's orientations: the same frames as the NumPy engine, rotation and stills."""
    from nbxp.gpu import render_kernel
    for kw, extra in ((dict(frames=3), MOSAIC), (dict(stills=2, orientation_seed=5), [])):
        s = nbxp.prepare_series(cfg_of(*extra), xp=np, **kw)
        for i in range(s.count):
            e = s.frame_experiment(i)
            k, _ = render_kernel(e, raw_module=cpu_module)
            assert_exact(to_numpy(k).astype(np.float64), np.asarray(s.frame(i).image, np.float64))


@pytest.mark.skipif(not usable_gpu(), reason="no usable GPU (CuPy and a CUDA device)")
def test_series_on_cupy():
    import cupy as cp
    cfg = cfg_of(*MOSAIC)
    gpu = list(nbxp.simulate_series(cfg, frames=3, xp=cp))
    cpu = list(nbxp.simulate_series(cfg, frames=3, xp=np))
    for g, c in zip(gpu, cpu):
        assert type(g.image).__module__.startswith("cupy")
        assert_exact(to_numpy(g.image).astype(np.float64), np.asarray(c.image, np.float64))


def test_series_in_every_namespace(xp):
    """The per-frame orientations are array-API code: the same frames on every namespace."""
    for kw, extra in ((dict(frames=2), MOSAIC), (dict(stills=2, orientation_seed=1), ["-mosaic", "0.3"])):
        cfg = cfg_of(*extra)
        ref = [np.asarray(f.image) for f in nbxp.simulate_series(cfg, xp=np, **kw)]
        for f, r in zip(nbxp.simulate_series(cfg, xp=xp, **kw), ref):
            assert_exact(to_numpy(f.image).astype(np.float64), r)
