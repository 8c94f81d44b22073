"""The series writer (nbxp/io/dataset.py) and the series command line: names, formats,
refusals before rendering, atomic files, count images, and the CBF/NeXus/.expt dispatch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nbxp
from nbxp import images
from nbxp.io import InputError
from nbxp.io import dataset as ds

BASE = ["-cell", "70", "80", "90", "75", "85", "95", "-default_F", "100", "-N", "4", "-lambda", "1",
        "-distance", "100", "-detpixels", "32", "-pixel", "0.2", "-oversample", "1", "-seed", "21"]


def run_nbxp(args, cwd):
    return subprocess.run([sys.executable, "-m", "nbxp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def listing(d):
    return sorted(os.listdir(d))


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("name,n,template,first,added", [
    ("scan_#####.cbf", 20, "scan_#####.cbf", "scan_00001.cbf", False),
    ("scan.img", 20, "scan_#####.img", "scan_00001.img", True),
    ("d/x#.bin", 9, "d/x#.bin", "d/x1.bin", False),
    ("noext", 3, "noext_#####", "noext_00001", True),
    ("big.img", 123456, "big_######.img", "big_000001.img", True),
])
def test_frame_names(tmp_path, name, n, template, first, added):
    tpl, was_added = ds.frame_template(name, "-intfile", n)
    assert (tpl, was_added) == (template, added)
    o = ds.Output("-intfile", ds.INT, ds.SMV, name, tpl, added)
    assert o.path(0) == first
    assert o.path(n - 1).endswith(str(n) + os.path.splitext(name)[1])
    assert o.matches(first) and not o.matches(first.replace("1", "x"))


@pytest.mark.parametrize("name,msg", [
    ("a_#_#.img", "more than one run"),
    ("a_#.img", "10 frames need at least 2"),
    ("d#/a.img", "only appear in the file name"),
])
def test_bad_templates(name, msg):
    with pytest.raises(InputError, match=msg):
        ds.frame_template(name, "-intfile", 10)


@pytest.mark.parametrize("kind,name,fmt", [
    (ds.FLOAT, "f.bin", ds.RAW), (ds.FLOAT, "f.raw", ds.RAW), (ds.FLOAT, "f.h5", ds.NEXUS),
    (ds.INT, "i.img", ds.SMV), (ds.INT, "i.SMV", ds.SMV), (ds.INT, "i.cbf", ds.CBF), (ds.NOISE, "n.nxs", ds.NEXUS),
    (ds.NOISE, "n.whatever", ds.SMV), (ds.PGM, "p.pgm", ds.PGMFMT),
])
def test_format_by_extension(kind, name, fmt):
    assert ds.output_format(kind, name, "-x") == fmt


@pytest.mark.parametrize("kind,name,msg", [
    (ds.FLOAT, "f.cbf", "CBF files hold integers"), (ds.FLOAT, "f.img", "SMV files hold integers"),
    (ds.NOISE, "n.bin", ".bin is the raw float format"),
])
def test_formats_that_cannot_hold_the_image(kind, name, msg):
    with pytest.raises(InputError, match=msg):
        ds.output_format(kind, name, "-x")


# ---------------------------------------------------------------- refusals before rendering

@pytest.mark.parametrize("extra,msg", [
    (["--frames", "0", "-osc", "1"], "--frames: expected a positive number of frames"),
    (["--frames", "-3", "-osc", "1"], "--frames: expected a positive number of frames"),
    (["--stills", "-1"], "--stills: expected a positive number of frames"),
    (["--stills", "2", "--orientation-seed", "-4"], "--orientation-seed: expected a non-negative"),
    (["--frames", "3"], "-osc"),
    (["--frames", "3", "-osc", "1", "--orientation-seed", "2"], "--orientation-seed: only still shots"),
    (["--stills", "3", "-osc", "1"], "--stills and -osc"),
    (["--frames", "2", "--stills", "2", "-osc", "1"], "--frames and --stills"),
    (["--truth", "t.expt"], "--truth: needs --frames"),
    (["--frames", "2", "-osc", "1", "-floatfile", "f.cbf"], "-floatfile: f.cbf: CBF files hold integers"),
    (["--frames", "2", "-osc", "1", "-intfile", "i.bin"], "-intfile: i.bin: .bin is the raw float"),
    (["--frames", "12", "-osc", "1", "-intfile", "i_#.img"], "12 frames need at least 2"),
    (["--frames", "2", "-osc", "1", "-noisefile", "n_#.h5"], "takes no '#'"),
    (["--frames", "2", "-osc", "1", "-intfile", "x.img", "-noisefile", "x.img"], "-intfile and -noisefile: both"),
    (["--frames", "2", "-osc", "1", "-floatfile", "nodir/f.bin"], "-floatfile: cannot write"),
    (["--frames", "2", "-osc", "1", "-intfile", "in_#####.img", "-img", "in_00002.img"],
     "would overwrite the input file in_00002.img"),
    (["--frames", "2", "-osc", "1", "-noisefile", "A#####.mat", "-mat", "A00001.mat"], "would overwrite the input"),
    (["--frames", "2", "-osc", "1", "--truth", "nodir/t.expt"], "--truth: cannot write"),
    # geometry NeXus and the .expt cannot describe, refused before anything is rendered
    (["--frames", "2", "-osc", "1", "-curved_det", "-noisefile", "n.h5"], "-noisefile: n.h5: NeXus (.h5/.nxs)"),
    (["--frames", "2", "-osc", "1", "-curved_det", "--truth", "t.expt"], "--truth: t.expt:"),
])
def test_bad_series_requests_write_nothing(tmp_path, extra, msg):
    if "-img" in extra:  # a real SMV input whose name the template would hit
        assert run_nbxp(BASE + ["-intfile", "in_00002.img", "-nonoise", "-nopgm", "-floatfile", "x.bin"],
                        tmp_path).returncode == 0
        os.unlink(tmp_path / "x.bin")
    if "-mat" in extra:
        (tmp_path / "A00001.mat").write_text("0.01 0 0\n0 0.01 0\n0 0 0.01\n")
    before = {p: (tmp_path / p).read_bytes() for p in listing(tmp_path)}
    p = run_nbxp(BASE + extra, tmp_path)
    assert p.returncode == 2, p.stdout
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and msg in err[0], p.stderr
    assert "Traceback" not in p.stderr
    assert {q: (tmp_path / q).read_bytes() for q in listing(tmp_path)} == before


def test_cbf_refuses_geometry_it_cannot_describe(tmp_path):
    cbf = pytest.importorskip("nbxp.io.cbf")
    cfg = nbxp.config_from_args(BASE + ["-twotheta", "10", "-osc", "1"])
    s = nbxp.prepare_series(cfg, frames=2)
    why = cbf.unsupported(s.exp)
    assert why and "NeXus" in why
    p = run_nbxp(BASE + ["-twotheta", "10", "-osc", "1", "--frames", "2", "-noisefile", "n_#.cbf"], tmp_path)
    assert p.returncode == 2 and "NeXus" in p.stderr and listing(tmp_path) == []


# ---------------------------------------------------------------- writing

def test_series_files_names_and_headers(tmp_path):
    p = run_nbxp(BASE + ["-osc", "0.5", "-phi", "10", "--frames", "3", "-noprogress"], tmp_path)
    assert p.returncode == 0, p.stderr
    names = listing(tmp_path)
    for stem, ext in (("floatimage", "bin"), ("intimage", "img"), ("image", "pgm"), ("noiseimage", "img")):
        for i in (1, 2, 3):
            assert f"{stem}_{i:05d}.{ext}" in names
    assert len(names) == 12  # nothing else: no temporary files, no Fdump.bin without -hkl
    assert "no '#' in floatimage.bin: _##### added" in p.stdout
    assert p.stdout.count("frame ") >= 3 and "frame 3/3: phi 11 deg" in p.stdout
    for i, phi in ((1, "10"), (3, "11")):
        head = (tmp_path / f"intimage_{i:05d}.img").read_bytes()[:512].decode("latin-1")
        assert f"PHI={phi};" in head and f"OSC_START={phi};" in head and "OSC_RANGE=0.5;" in head
    fabio = pytest.importorskip("fabio")
    img = fabio.open(str(tmp_path / "noiseimage_00002.img"))
    assert img.data.shape == (32, 32) and float(img.header["OSC_START"]) == 10.5


def test_stills_cli(tmp_path):
    p = run_nbxp(BASE + ["--stills", "3", "--orientation-seed", "5", "-noprogress", "-nopgm", "-floatfile",
                         "s_#.bin", "-intfile", "s_#.img", "-nonoise"], tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = nbxp.config_from_args(BASE)
    frames = list(nbxp.simulate_series(cfg, stills=3, orientation_seed=5))
    for f in frames:
        np.testing.assert_array_equal(np.fromfile(tmp_path / f"s_{f.index + 1}.bin", np.float32).reshape(32, 32),
                                      np.asarray(f.image).astype(np.float32))
        assert "OSC_RANGE=0;" in (tmp_path / f"s_{f.index + 1}.img").read_bytes()[:512].decode()


def test_a_failure_leaves_whole_files_only(tmp_path, monkeypatch):
    """A write that fails at frame 2 (the rename of its file) ends the run with the error; the
    first frame's files are whole, frame 2 has no file, and no temporary file is left."""
    from nbxp import cli
    calls = {"n": 0}
    real = os.replace

    def failing(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # float and SMV of frame 1 go through, frame 2's float fails
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        cli.run(BASE + ["-osc", "1", "--frames", "3", "-nopgm", "-nonoise", "-floatfile", "f_#.bin",
                        "-intfile", "i_#.img"], out=open(os.devnull, "w"))
    assert listing(tmp_path) == ["f_1.bin", "i_1.img"]
    assert (tmp_path / "f_1.bin").stat().st_size == 32 * 32 * 4


def test_a_failure_removes_the_nexus_file(tmp_path, monkeypatch):
    pytest.importorskip("nbxp.io.nexus")
    from nbxp import cli
    from nbxp.io import dataset
    real = dataset.SeriesWriter.write

    def failing(self, frame):
        if frame.index == 1:
            raise RuntimeError("stop")
        return real(self, frame)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dataset.SeriesWriter, "write", failing)
    with pytest.raises(RuntimeError):
        cli.run(BASE + ["-osc", "1", "--frames", "3", "-nopgm", "-floatfile", "f_#.bin", "-intfile", "i_#.img",
                        "-noisefile", "n.h5"], out=open(os.devnull, "w"))
    assert listing(tmp_path) == ["f_1.bin", "i_1.img"]


# ---------------------------------------------------------------- count images

def test_count_images_share_the_smv_stream():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 30, (20, 30)).astype(np.float32)
    img[3, 4] = 1e5  # above 65535 counts: clipped in SMV, kept in the count image
    roi = np.ones(img.shape, bool)
    roi[0, :] = False
    smv, photons, over = images.noise_image(img, roi, 77, 40.0)
    counts, photons2, over2 = images.noise_counts(img, roi, 77)
    assert counts.dtype == np.int32 and photons2 == photons and over == 1 and over2 == 0
    below = smv < 65535
    np.testing.assert_array_equal(smv[below & roi].astype(np.int64), counts[below & roi] + 40)
    assert counts[3, 4] > 65535 and abs(counts[3, 4] - 1e5) < 5 * np.sqrt(1e5)
    assert counts.sum() == photons and np.all(counts[0] == 0)
    # an explicit -adc is carried
    with_adc, _, _ = images.noise_counts(img, roi, 77, adc=10.0)
    np.testing.assert_array_equal(with_adc[roi], counts[roi] + 10)
    # saturation: counts beyond int32 are clipped there and counted
    huge = np.full((1, 2), 3e9, np.float32)
    c, _, n = images.noise_counts(huge, np.ones((1, 2), bool), 5)
    assert n == 2 and np.all(c == images.COUNT_SATURATION)
    # the noiseless image: SMV rounding, int32 range
    ints = images.int_counts(img, roi, 1.0)
    smv_i = images.int_image(img, roi, 1.0, 0.0)
    np.testing.assert_array_equal(ints[roi & (img < 65535)], smv_i[roi & (img < 65535)])
    assert ints[3, 4] == 100000 and smv_i[3, 4] == 65535


# ---------------------------------------------------------------- CBF, NeXus and .expt (after the merge)

def _nbxp_noise_counts(args, n):
    cfg = nbxp.config_from_args(args)
    s = nbxp.prepare_series(cfg, frames=n)
    w = ds.SeriesWriter(s, [])
    out = []
    for f in s.frames():
        img32 = np.asarray(f.image).astype(np.float32)
        out.append(images.noise_counts(img32, w.box, f.seed)[0])
    return out


def test_cbf_series(tmp_path):
    pytest.importorskip("nbxp.io.cbf")
    fabio = pytest.importorskip("fabio")
    args = BASE + ["-osc", "1", "-phi", "3"]
    p = run_nbxp(args + ["--frames", "3", "-noprogress", "-nopgm", "-noisefile", "scan_#####.cbf", "-intfile",
                         "scan_#####.img"], tmp_path)
    assert p.returncode == 0, p.stderr
    want = _nbxp_noise_counts(args, 3)
    for i in range(3):
        data = fabio.open(str(tmp_path / f"scan_{i + 1:05d}.cbf")).data
        np.testing.assert_array_equal(np.asarray(data, np.int64), want[i].astype(np.int64))


def test_nexus_series(tmp_path):
    pytest.importorskip("nbxp.io.nexus")
    h5py = pytest.importorskip("h5py")
    args = BASE + ["-osc", "1"]
    p = run_nbxp(args + ["--frames", "3", "-noprogress", "-nopgm", "-noisefile", "scan.h5", "-floatfile",
                         "float.nxs", "-intfile", "i_#.img"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(f for f in listing(tmp_path) if not f.endswith(".img")) == ["float.nxs", "scan.h5"]
    want = _nbxp_noise_counts(args, 3)

    def stack(path):
        found = []
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, o: found.append(o[()]) if isinstance(o, h5py.Dataset) and o.ndim == 3 else None)
        assert found
        return found[0]

    counts = stack(tmp_path / "scan.h5")
    assert counts.shape == (3, 32, 32)
    np.testing.assert_array_equal(counts.astype(np.int64), np.stack(want).astype(np.int64))
    floats = stack(tmp_path / "float.nxs")
    cfg = nbxp.config_from_args(args)
    for f in nbxp.simulate_series(cfg, frames=3):
        np.testing.assert_array_equal(floats[f.index], np.asarray(f.image).astype(np.float32))


def test_truth_file(tmp_path):
    pytest.importorskip("nbxp.io.expt")
    p = run_nbxp(BASE + ["--stills", "4", "-noprogress", "-nopgm", "-nonoise", "-floatfile", "s_#.bin",
                         "-intfile", "s_#.img", "--truth", "truth.expt"], tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "truth.expt").read_text())
    assert len(doc["experiment"]) == 4 and len(doc["crystal"]) == 4
    p = run_nbxp(BASE + ["--frames", "4", "-osc", "1", "-noprogress", "-nopgm", "-nonoise", "-floatfile", "r_#.bin",
                         "-intfile", "r_#.img", "--truth", "scan.expt"], tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "scan.expt").read_text())
    assert len(doc["experiment"]) == 1 and len(doc["scan"]) == 1
