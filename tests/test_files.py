"""nanoBragg-compatible files: SMV int and noise images, PGM, Fdump.bin, -img/-mask."""

from __future__ import annotations

import gzip
import json
import math
import os
import shlex
import shutil
import subprocess
import sys

import fabio
import numpy as np
import pytest

from nbxp import images
from nbxp.io.fdump import read_fdump, write_fdump
from nbxp.io.hkl import read_hkl

from .helpers import REFERENCE, requires_reference

BASE = ["-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "5", "-lambda", "6.2",
        "-distance", "100", "-detpixels", "40", "-pixel", "0.1", "-noprogress"]


def run_nbxp(args, cwd):
    return subprocess.run([sys.executable, "-m", "nbxp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------- SMV and PGM

def test_default_outputs_and_fabio_reads_them(tmp_path):
    p = run_nbxp(BASE + ["-seed", "7", "-Xbeam", "2.05", "-Ybeam", "2.15"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["floatimage.bin", "image.pgm", "intimage.img", "noiseimage.img"]
    flt = np.fromfile(tmp_path / "floatimage.bin", np.float32).reshape(40, 40)
    for name in ("intimage.img", "noiseimage.img"):
        im = fabio.open(str(tmp_path / name))
        assert im.data.shape == (40, 40) and im.data.dtype == np.uint16
        h = im.header
        assert h["HEADER_BYTES"] == "512" and h["SIZE1"] == "40" and h["SIZE2"] == "40"
        assert float(h["PIXEL_SIZE"]) == 0.1 and float(h["WAVELENGTH"]) == 6.2
        assert float(h["DISTANCE"]) == 100 and float(h["BEAM_CENTER_X"]) == 2.05
        assert float(h["BEAM_CENTER_Y"]) == 2.15
        raw = (tmp_path / name).read_bytes()
        assert len(raw) == 512 + 2 * 40 * 40 and raw[:512].rstrip(b" ").endswith(b"}\f")
    intimg = fabio.open(str(tmp_path / "intimage.img")).data
    scale = 55000.0 / flt.max()
    assert f"intfile_scale = {scale:g}" in p.stdout
    np.testing.assert_array_equal(intimg, np.floor(flt.astype(np.float64) * scale + 40 + 0.5).astype(np.uint16))
    assert intimg.max() == 55040
    pgm = (tmp_path / "image.pgm").read_bytes()
    assert pgm.startswith(b"P5\n40 40\n# pixels scaled by ")
    assert len(pgm.split(b"\n255\n", 1)[1]) == 1600


def test_scale_adc_and_clipping():
    img = np.array([[0.0, 1.0, 2.5], [1000.0, -5.0, 3.49]], np.float32)
    roi = np.ones(img.shape, bool)
    out = images.int_image(img, roi, 100.0, 10.0)
    np.testing.assert_array_equal(out, [[10, 110, 260], [65535, 0, 359]])
    roi[0, 0] = False
    assert images.int_image(img, roi, 100.0, 10.0)[0, 0] == 0
    assert images.int_scale(0.0, 11.0) == pytest.approx(5000.0)
    assert images.int_scale(0.0, 0.0) == 1.0 and images.int_scale(3.0, 11.0) == 3.0
    pg = images.pgm_image(img, roi, 100.0)
    np.testing.assert_array_equal(pg, [[0, 100, 250], [255, 0, 255]])
    assert images.pgm_scale(0.0, 7.0, 10.0) == pytest.approx(5.0)
    assert images.pgm_scale(0.0, 7.0, 0.0) == 7.0


@requires_reference
@pytest.mark.parametrize("name", ["pgm_scaled", "cli_minimal", "roi", "water"])
def test_pgm_matches_reference(name, tmp_path):
    case = json.loads((REFERENCE / "cases" / name / "case.json").read_text())
    p = run_nbxp(shlex.split(case["args"]) + shlex.split(case["auto_added_args"]), tmp_path)
    assert p.returncode == 0, p.stderr
    mine = (tmp_path / "image.pgm").read_bytes()
    ref = gzip.open(REFERENCE / "cases" / name / "image.pgm.gz").read()
    hm, dm = mine.split(b"\n255\n", 1)
    hr, dr = ref.split(b"\n255\n", 1)
    assert hm == hr
    assert np.abs(np.frombuffer(dm, np.uint8).astype(int) - np.frombuffer(dr, np.uint8).astype(int)).max() <= 1


# ---------------------------------------------------------------- noise

def _noise(img, seed):
    return images.noise_image(np.asarray(img, np.float32), np.ones(np.shape(img), bool), seed, 0.0)


@pytest.mark.parametrize("mean", [0.3, 5.0, 40.0, 2000.0, 3.0e6], ids=["low", "direct", "rejection", "high",
                                                                         "gaussian"])
def test_noise_regimes_have_poisson_statistics(mean):
    n = 4000 if mean < 1e6 else 2000
    img = np.full((1, n), mean, np.float32)
    out, total, overloads = images.noise_image(img, np.ones(img.shape, bool), 99, 0.0)
    # the photon total is a sum of n Poisson(mean) draws: within 5 standard deviations
    assert abs(total - n * float(np.float32(mean))) < 5 * math.sqrt(n * mean)
    if mean < 60000:
        counts = out.astype(np.float64)
        assert counts.mean() == pytest.approx(mean, rel=6 / math.sqrt(n * mean))
        assert counts.var() == pytest.approx(mean, rel=0.15)
        assert overloads == 0
    else:
        assert overloads == n and out.max() == 65535


def test_noise_is_reproducible_and_seed_dependent():
    img = np.random.default_rng(0).uniform(0, 30, (20, 30)).astype(np.float32)
    a, ta, _ = _noise(img, 1234)
    b, tb, _ = _noise(img, 1234)
    c, tc, _ = _noise(img, 4321)
    np.testing.assert_array_equal(a, b)
    assert ta == tb
    assert not np.array_equal(a, c)


def test_noise_photon_total_matches_float_sum(tmp_path):
    p = run_nbxp(BASE + ["-seed", "11", "-fluence", "1e30"], tmp_path)
    flt = np.fromfile(tmp_path / "floatimage.bin", np.float32).astype(np.float64)
    photons = float(next(x for x in p.stdout.splitlines() if "photons on noise image" in x).split()[0])
    assert abs(photons - flt.sum()) < 5 * math.sqrt(flt.sum())
    noisy = fabio.open(str(tmp_path / "noiseimage.img")).data.astype(np.float64) - 40
    assert noisy.sum() == pytest.approx(photons)


@requires_reference
def test_noise_equals_nanoBragg_for_the_same_seed(tmp_path):
    case = json.loads((REFERENCE / "cases" / "noise_scaled" / "case.json").read_text())
    p = run_nbxp(shlex.split(case["args"]) + shlex.split(case["auto_added_args"]), tmp_path)
    assert p.returncode == 0, p.stderr
    ref = gzip.open(REFERENCE / "cases" / "noise_scaled" / "noise.img.gz").read()
    assert (tmp_path / "noise.img").read_bytes() == ref


# ---------------------------------------------------------------- Fdump.bin

FDUMP = REFERENCE / "fdump"


@requires_reference
@pytest.mark.parametrize("hkl", ["P1", "P1_wide", "pattern"])
@pytest.mark.parametrize("default_F", [0, 7])
def test_fdump_written_byte_identical_to_nanoBragg(hkl, default_F, tmp_path):
    shutil.copy(REFERENCE / "inputs" / f"{hkl}.hkl", tmp_path)
    p = run_nbxp(["-hkl", f"{hkl}.hkl", "-default_F", str(default_F), "-cell", "100", "100", "100", "90", "90",
                  "90", "-detpixels", "8", "-nonoise", "-nopgm"], tmp_path)
    assert p.returncode == 0, p.stderr
    ref = FDUMP / (f"{hkl}.Fdump.bin" if default_F == 0 else f"{hkl}.default_F7.Fdump.bin")
    assert (tmp_path / "Fdump.bin").read_bytes() == ref.read_bytes()


@requires_reference
@pytest.mark.parametrize("hkl", ["P1", "P1_wide", "pattern"])
def test_fdump_from_nanoBragg_is_read_and_gives_the_hkl_image(hkl, tmp_path):
    grid = read_fdump(str(FDUMP / f"{hkl}.default_F7.Fdump.bin"))
    direct = read_hkl(str(REFERENCE / "inputs" / f"{hkl}.hkl"), 7.0)
    np.testing.assert_array_equal(grid.F, direct.F)
    assert (grid.h_min, grid.k_min, grid.l_min) == (direct.h_min, direct.k_min, direct.l_min)
    args = ["-cell", "70", "80", "90", "75", "85", "95", "-N", "3", "-lambda", "2", "-distance", "60",
            "-detpixels", "32", "-nonoise", "-nopgm"]
    shutil.copy(REFERENCE / "inputs" / f"{hkl}.hkl", tmp_path)
    p1 = run_nbxp(args + ["-hkl", f"{hkl}.hkl", "-default_F", "7", "-floatfile", "a.bin"], tmp_path)
    shutil.copy(FDUMP / f"{hkl}.default_F7.Fdump.bin", tmp_path / "Fdump.bin")
    p2 = run_nbxp(args + ["-floatfile", "b.bin"], tmp_path)
    assert p1.returncode == p2.returncode == 0, p2.stderr
    assert "reading Fs from Fdump.bin" in p2.stdout
    a = np.fromfile(tmp_path / "a.bin", np.float32)
    np.testing.assert_array_equal(a, np.fromfile(tmp_path / "b.bin", np.float32))
    assert a.max() > 0


def test_fdump_round_trip(tmp_path):
    (tmp_path / "x.hkl").write_text("0 0 0 5\n1 -1 2 3.5\n-2 0 1 1e3\n")
    g = read_hkl(str(tmp_path / "x.hkl"), 2.0)
    write_fdump(str(tmp_path / "F.bin"), g)
    back = read_fdump(str(tmp_path / "F.bin"))
    np.testing.assert_array_equal(back.F, g.F)
    assert back.F[1 - (-2), -1 - (-1), 2 - 0] == 3.5 and back.F[0, 0, 0] == 2.0


def _fdump_layout(grid, padded: bool, newline: bool) -> bytes:
    """An Fdump.bin written here from ``grid`` in one of the layouts programs write:
    nanoBragg's (one spare plane per axis, header ending in newline + form feed), or the
    unpadded grid of early PyTorch-port files, with or without the newline."""
    H, K, L = grid.F.shape
    hi = (grid.h_min + H - 1, grid.k_min + K - 1, grid.l_min + L - 1)
    head = f"{grid.h_min} {hi[0]} {grid.k_min} {hi[1]} {grid.l_min} {hi[2]}" + ("\n" if newline else "") + "\f"
    data = np.zeros((H + 1, K + 1, L + 1)) if padded else np.zeros((H, K, L))
    data[:H, :K, :L] = grid.F
    return head.encode() + data.tobytes()


@pytest.mark.parametrize("padded,newline", [(True, True), (True, False), (False, True), (False, False)],
                         ids=["nanoBragg", "no-newline", "unpadded", "unpadded-no-newline"])
def test_fdump_layouts_load_and_give_the_hkl_image(padded, newline, tmp_path):
    rows = [(h, k, l, 10 + 3 * h - 2 * k + l * l) for h in range(-3, 4) for k in range(-2, 3) for l in range(-4, 2)
            if (h + k + l) % 3]
    (tmp_path / "x.hkl").write_text("".join(f"{h} {k} {l} {F}\n" for h, k, l, F in rows))
    grid = read_hkl(str(tmp_path / "x.hkl"), 5.0)
    raw = _fdump_layout(grid, padded, newline)
    if padded and newline:  # that is what nbxp (and nanoBragg) write
        write_fdump(str(tmp_path / "mine.bin"), grid)
        assert (tmp_path / "mine.bin").read_bytes() == raw
    (tmp_path / "layout.bin").write_bytes(raw)
    back = read_fdump(str(tmp_path / "layout.bin"))
    np.testing.assert_array_equal(back.F, grid.F)
    assert (back.h_min, back.k_min, back.l_min) == (grid.h_min, grid.k_min, grid.l_min)
    args = ["-cell", "30", "35", "40", "90", "90", "90", "-N", "3", "-lambda", "1.5", "-distance", "40",
            "-detpixels", "32", "-default_F", "5", "-nonoise", "-nopgm", "-noprogress"]
    d1, d2 = tmp_path / "hkl", tmp_path / "fdump"
    d1.mkdir()
    d2.mkdir()
    shutil.copy(tmp_path / "x.hkl", d1)
    p1 = run_nbxp(args + ["-hkl", "x.hkl", "-floatfile", "a.bin"], d1)
    (d2 / "Fdump.bin").write_bytes(raw)
    p2 = run_nbxp(args + ["-floatfile", "b.bin"], d2)
    assert p1.returncode == p2.returncode == 0, p2.stderr
    assert "reading Fs from Fdump.bin" in p2.stdout
    a = np.fromfile(d1 / "a.bin", np.float32)
    assert a.max() > 0 and len(np.unique(a)) > 10
    np.testing.assert_array_equal(a, np.fromfile(d2 / "b.bin", np.float32))
    assert (d2 / "Fdump.bin").read_bytes() == raw  # read, not rewritten


def test_fdump_of_neither_size_names_the_file_and_both_sizes(tmp_path):
    raw = b"0 1 0 1 0 2\n\f" + bytes(8 * 20)
    (tmp_path / "Fdump.bin").write_bytes(raw)
    p = run_nbxp(["-cell", "50", "-detpixels", "8"], tmp_path)
    assert p.returncode == 2
    line = p.stderr.strip()
    assert line.count("\n") == 0 and "Fdump.bin" in line
    # 2 x 2 x 3 points: nanoBragg's layout 3 x 3 x 4 doubles = 288 bytes, without padding 96
    assert "160 data bytes" in line and "288 (nanoBragg's" in line and "96 (without)" in line
    assert os.listdir(tmp_path) == ["Fdump.bin"]


# ---------------------------------------------------------------- bad files

def _smv(path, w=8, h=6, extra=""):
    head = (f"{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1={w};\n"
            f"SIZE2={h};\nPIXEL_SIZE=0.1;\nDISTANCE=50;\n{extra}}}\f")
    data = np.ones((h, w), "<u2")
    data[0, :3] = 0
    path.write_bytes(head.encode().ljust(512, b" ") + data.tobytes())


def test_mask_zeros_are_skipped(tmp_path):
    _smv(tmp_path / "m.img")
    p = run_nbxp(["-mask", "m.img", "-cell", "50", "-default_F", "10", "-N", "3", "-nonoise", "-nopgm"], tmp_path)
    assert p.returncode == 0, p.stderr
    f = np.fromfile(tmp_path / "floatimage.bin", np.float32).reshape(6, 8)
    assert np.all(f[0, :3] == 0) and np.all(f[1:] > 0)


BAD_FILES = [
    ("-img", "notsmv.img", "does not look like an SMV"),
    ("-img", "short.img", "is truncated"),
    ("-mask", "short.img", "is truncated"),
    ("-mask", "odd.img", "but the detector is"),
]


@pytest.mark.parametrize("flag,name,message", BAD_FILES)
def test_bad_smv_inputs(flag, name, message, tmp_path):
    (tmp_path / "notsmv.img").write_bytes(b"P5\n2 2\n255\n" + bytes(600))
    _smv(tmp_path / "full.img")
    (tmp_path / "short.img").write_bytes((tmp_path / "full.img").read_bytes()[:600])
    _smv(tmp_path / "odd.img", 8, 6)
    before = sorted(os.listdir(tmp_path))
    extra = ["-detpixels", "10"] if name == "odd.img" else []
    p = run_nbxp([flag, name, "-cell", "50", "-default_F", "10"] + extra, tmp_path)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and message in p.stderr and flag in p.stderr
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("content,message", [
    (b"garbage", "not an Fdump.bin file"),
    (b"0 1 0 1 0 1\n\f" + bytes(40), "fit neither Fdump layout"),
])
def test_bad_fdump(content, message, tmp_path):
    (tmp_path / "Fdump.bin").write_bytes(content)
    p = run_nbxp(["-cell", "50", "-detpixels", "8"], tmp_path)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert message in p.stderr and "Fdump.bin" in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["Fdump.bin"]


@pytest.mark.parametrize("flag", ["-intfile", "-pgmfile", "-noisefile", "-floatfile"])
def test_unwritable_output_path(flag, tmp_path):
    p = run_nbxp(BASE + [flag, "missing_dir/out"], tmp_path)
    assert p.returncode != 0 and f"{flag}: cannot write missing_dir/out" in p.stderr
    assert os.listdir(tmp_path) == []


def test_output_files_get_ordinary_permissions(tmp_path):
    # written through temporary files, but readable like any file the user creates: 0666
    # less the umask, and an existing file keeps its mode when it is replaced
    (tmp_path / "intimage.img").write_bytes(b"old")
    os.chmod(tmp_path / "intimage.img", 0o640)
    (tmp_path / "small.hkl").write_text("0 0 0 10\n1 0 0 20\n0 1 0 30\n")
    p = subprocess.run(["sh", "-c", 'umask 022 && exec "$0" -m nbxp "$@"', sys.executable, *BASE,
                        "-hkl", "small.hkl", "-floatfile", "floatimage.bin"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    mode = lambda name: os.stat(tmp_path / name).st_mode & 0o777  # noqa: E731
    for name in ("floatimage.bin", "noiseimage.img", "image.pgm", "Fdump.bin"):
        assert mode(name) == 0o644, name
    assert mode("intimage.img") == 0o640
