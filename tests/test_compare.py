"""nbxp-compare end to end: nbxp against itself, against a stand-in program that shifts,
resizes or breaks its image, and every exit status."""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap

import numpy as np
import pytest

from nbxp.tools import compare

# 48 fast x 40 slow pixels: a non-square frame shows whether shapes keep their orientation
ARGS = ("-cell 100 100 100 90 90 90 -default_F 100 -N 5 -lambda 6.2 -distance 60 -pixel 0.1 "
        "-detpixels_x 48 -detpixels_y 40 -nopgm -nonoise -noprogress").split()
NBXP = shlex.join([sys.executable, "-m", "nbxp"])

STAND_IN = textwrap.dedent("""
    # a nanoBragg stand-in for the tests: runs nbxp, then spoils its float image
    import subprocess, sys
    import numpy as np
    mode, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if mode == "fail":
        print("stand-in: something went wrong", file=sys.stderr)
        sys.exit(n)
    out = args[len(args) - 1 - args[::-1].index("-floatfile") + 1]
    if mode == "nofloat":
        sys.exit(0)
    if mode == "garbage":
        np.arange(7, dtype="<f4").tofile(out)
        sys.exit(0)
    run = subprocess.run([sys.executable, "-m", "nbxp", *args], capture_output=True, text=True)
    if run.returncode:
        sys.exit(run.returncode)
    img = np.fromfile(out, "<f4").reshape(40, 48)
    if mode == "shift":
        img = np.roll(img, n, axis=1)
    elif mode == "resize":
        img = np.repeat(np.repeat(img, n, axis=0), n, axis=1)
    img.astype("<f4").tofile(out)
    print(f"stand-in wrote ({img.shape[1]}x{img.shape[0]} pixels)")
""")


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "stand_in.py"
    path.write_text(STAND_IN)
    return lambda mode, n=0: shlex.join([sys.executable, str(path), mode, str(n)])


def _run(*argv):
    return compare.main(list(argv))


def _summary(outdir):
    return json.loads((outdir / "summary.json").read_text())


def _floats(path, shape):
    return np.fromfile(path, "<f4").astype(np.float64).reshape(shape)


def _png_size(path):
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        return im.size, im.mode


def test_nbxp_against_itself(stand_in, tmp_path, capsys):
    out = tmp_path / "same"
    assert _run("--a", NBXP, "--outdir", str(out), "--diff-png", "--", *ARGS) == 0
    s = _summary(out)
    img = _floats(out / "a.float.bin", (40, 48))
    assert img.max() > 0 and np.array_equal(img, _floats(out / "b.float.bin", (40, 48)))
    assert (s["correlation"], s["mse"], s["rmse"], s["max_abs_diff"], s["sum_ratio"]) == (1.0, 0.0, 0.0, 0.0, 1.0)
    assert s["sum_a"] == s["sum_b"] == pytest.approx(img.sum(), rel=1e-12)
    assert s["shape_a"] == s["shape_b"] == [40, 48] and s["pixels"] == 40 * 48 and s["status"] == 0
    for name, mode in (("a.png", "L"), ("b.png", "L"), ("diff.png", "RGB")):
        assert _png_size(out / name) == ((48, 40), mode)  # PIL reports (width, height)
    for f in ("a.stdout.txt", "a.stderr.txt", "b.stdout.txt", "b.stderr.txt"):
        assert (out / f).is_file()
    assert "max_I" in (out / "a.stdout.txt").read_text()
    printed = capsys.readouterr().out
    assert "correlation   1" in printed and str(out) in printed


def test_shifted_image(stand_in, tmp_path):
    out = tmp_path / "shift"
    assert _run("--a", NBXP, "--b", stand_in("shift", 2), "--outdir", str(out), "--", *ARGS) == 0
    s = _summary(out)
    A, B = _floats(out / "a.float.bin", (40, 48)), _floats(out / "b.float.bin", (40, 48))
    assert np.array_equal(B, np.roll(A, 2, axis=1))
    d = B - A
    assert s["correlation"] == pytest.approx(np.corrcoef(A.ravel(), B.ravel())[0, 1], rel=1e-12)
    assert s["correlation"] < 0.99
    assert s["mse"] == pytest.approx(np.mean(d * d), rel=1e-12)
    assert s["rmse"] == pytest.approx(np.sqrt(np.mean(d * d)), rel=1e-12)
    assert s["max_abs_diff"] == np.abs(d).max()
    assert s["sum_ratio"] == pytest.approx(1.0, rel=1e-6)  # a roll moves photons, it keeps them

    # the same through an ROI: statistics of the slices
    out2 = tmp_path / "roi"
    assert _run("--a", NBXP, "--b", stand_in("shift", 2), "--outdir", str(out2), "--roi", "10", "29", "5", "24",
                "--", *ARGS) == 0
    r = _summary(out2)
    a, b = A[5:25, 10:30], B[5:25, 10:30]
    assert r["pixels"] == 400 and r["roi"] == [10, 29, 5, 24]
    assert r["sum_a"] == pytest.approx(a.sum(), rel=1e-12) and r["sum_b"] == pytest.approx(b.sum(), rel=1e-12)
    assert r["correlation"] == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-12)

    # below the threshold: status 3, results still written
    out3 = tmp_path / "thr"
    assert _run("--a", NBXP, "--b", stand_in("shift", 2), "--outdir", str(out3), "--threshold", "0.999",
                "--", *ARGS) == 3
    t = _summary(out3)
    assert t["status"] == 3 and "below the threshold" in t["message"]
    assert _png_size(out3 / "b.png") == ((48, 40), "L")


def test_resized_image(stand_in, tmp_path):
    out = tmp_path / "resized"
    assert _run("--a", NBXP, "--b", stand_in("resize", 2), "--outdir", str(out), "--", *ARGS) == 4
    s = _summary(out)
    assert s["status"] == 4 and s["shape_a"] == [40, 48] and s["shape_b"] == [80, 96]
    assert "correlation" not in s
    assert _png_size(out / "b.png") == ((96, 80), "L")

    out2 = tmp_path / "resampled"
    assert _run("--a", NBXP, "--b", stand_in("resize", 2), "--outdir", str(out2), "--resample", "--diff-png",
                "--", *ARGS) == 0
    r = _summary(out2)
    # each pixel became 2x2 equal pixels; bilinear interpolation at the old centres undoes it
    assert r["resampled"] and r["correlation"] == pytest.approx(1.0, abs=1e-12) and r["max_abs_diff"] == 0.0
    assert r["sum_ratio"] == pytest.approx(1.0, rel=1e-12)
    assert _png_size(out2 / "diff.png") == ((48, 40), "RGB")


def test_resample_is_bilinear_at_pixel_centres():
    img = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(compare.resample(img, (3, 4)), img)
    half = compare.resample(img, (3, 2))  # new centres at old x = 0.5 and 2.5
    np.testing.assert_allclose(half, [[0.5, 2.5], [4.5, 6.5], [8.5, 10.5]])


def test_program_failures(stand_in, tmp_path, capsys):
    out = tmp_path / "fail"
    assert _run("--a", NBXP, "--b", stand_in("fail", 3), "--outdir", str(out), "--", *ARGS) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--b" in err and "status 3" in err and "something went wrong" in err
    assert "stand-in: something went wrong" in (out / "b.stderr.txt").read_text()
    assert not (out / "summary.json").exists()

    assert _run("--a", NBXP, "--b", stand_in("nofloat"), "--outdir", str(tmp_path / "nf"), "--", *ARGS) == 2
    assert "wrote no float image" in capsys.readouterr().err
    assert _run("--a", str(tmp_path / "no-such-program"), "--outdir", str(tmp_path / "np"), "--", *ARGS) == 2
    assert "no such program" in capsys.readouterr().err
    # nbxp itself refusing its arguments is a failed program too
    assert _run("--a", NBXP, "--outdir", str(tmp_path / "bad"), "--", *ARGS, "-lambda", "blue") == 2
    assert "-lambda" in capsys.readouterr().err


def test_usage_errors(stand_in, tmp_path, capsys, monkeypatch):
    assert _run("--a", NBXP, *ARGS) == 1  # no '--'
    assert "'--'" in capsys.readouterr().err
    assert _run("--a", NBXP, "--") == 1
    capsys.readouterr()
    assert _run("--bogus", "--", *ARGS) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bogus" in err
    assert _run("--a", NBXP, "--roi", "0", "48", "0", "10", "--outdir", str(tmp_path / "r"), "--", *ARGS) == 1
    assert "--roi" in capsys.readouterr().err and not (tmp_path / "r").exists()  # refused before running
    assert _run("--a", NBXP, "--roi", "5", "2", "0", "10", "--", *ARGS) == 1
    assert _run("--a", NBXP, "--timeout", "0", "--", *ARGS) == 1
    monkeypatch.delenv("NB_C_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _run("--outdir", str(tmp_path / "x"), "--", *ARGS) == 1
    assert "NB_C_BIN" in capsys.readouterr().err
    assert compare.main(["-h"]) == 0


def test_io_errors(stand_in, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert _run("--a", NBXP, "--outdir", str(blocker / "out"), "--", *ARGS) == 5
    assert "--outdir" in capsys.readouterr().err
    assert _run("--a", NBXP, "--b", stand_in("garbage"), "--outdir", str(tmp_path / "g"), "--", *ARGS) == 5
    assert "cannot tell the shape" in capsys.readouterr().err


def test_default_outdir_is_new_and_timestamped(stand_in, tmp_path):
    assert _run("--a", NBXP, "--", *ARGS) == 0
    made = [p for p in os.listdir(tmp_path) if p.startswith("nbxp-compare-")]
    assert len(made) == 1 and (tmp_path / made[0] / "summary.json").is_file()
    assert _run("--a", NBXP, "--", *ARGS) == 0  # a second run in the same second gets its own folder
    assert len([p for p in os.listdir(tmp_path) if p.startswith("nbxp-compare-")]) == 2


def test_inputs_are_found_from_the_run_folders(stand_in, tmp_path):
    (tmp_path / "tiny.hkl").write_text("0 0 0 10\n1 0 0 20\n0 1 0 30\n0 0 1 40\n")
    args = [a for a in ARGS if a not in ("-default_F", "100")] + ["-hkl", "tiny.hkl", "-default_F", "5"]
    out = tmp_path / "hkl"
    assert _run("--a", NBXP, "--outdir", str(out), "--", *args) == 0
    assert "tiny.hkl" in _summary(out)["a"]["command"] and str(tmp_path / "tiny.hkl") in _summary(out)["a"]["command"]
    assert (out / "a_run" / "Fdump.bin").is_file() and not (tmp_path / "Fdump.bin").exists()


@pytest.mark.skipif(not os.environ.get("NB_C_BIN"), reason="NB_C_BIN (a nanoBragg executable) is not set")
def test_against_nanobragg(stand_in, tmp_path):
    out = tmp_path / "c"
    assert _run("--outdir", str(out), "--threshold", "0.999999", "--", *ARGS) == 0
    s = _summary(out)
    assert s["max_abs_diff"] <= 1e-5 * max(s["sum_a"], 1.0) and s["sum_ratio"] == pytest.approx(1.0, rel=1e-6)
