"""Files, noise, precedence, ROI/mask and statistics (docs/spec/files.md):
AT-IO-001..004, AT-NOISE-001, AT-PRE-001, AT-ROI-001, AT-STA-001."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from conformance._nb import R_E_SQR, image, read_pgm, run, write_hkl, write_smv

at = pytest.mark.at
CELL = ["-cell", 100, 100, 100, 90, 90, 90]
SPOTS = CELL + ["-N", 5, "-default_F", 100, "-lambda", 6.2, "-distance", 100, "-oversample", 1, "-nointerpolate"]
FLAT = CELL + ["-N", 1, "-default_F", 1, "-nointerpolate", "-oversample", 1, "-nopolar", "-point_pixel"]
KEY_ORDER = ["HEADER_BYTES", "DIM", "BYTE_ORDER", "TYPE", "SIZE1", "SIZE2", "PIXEL_SIZE", "DISTANCE", "WAVELENGTH",
             "BEAM_CENTER_X", "BEAM_CENTER_Y", "ADXV_CENTER_X", "ADXV_CENTER_Y", "MOSFLM_CENTER_X",
             "MOSFLM_CENTER_Y", "DENZO_X_BEAM", "DENZO_Y_BEAM", "DIALS_ORIGIN", "XDS_ORGX", "XDS_ORGY",
             "CLOSE_DISTANCE", "PHI", "OSC_START", "OSC_RANGE", "TWOTHETA", "DETECTOR_SN", "BEAMLINE"]


@at("AT-IO-001", "SMV files: 512-byte header, fixed keys, '}' + form feed, fast-major data")
def test_smv_layout(tmp_path):
    r = run(SPOTS + ["-detpixels_f", 40, "-detpixels_s", 24, "-Xbeam", 0.7, "-Ybeam", 2.9, "-floatfile", "f.bin",
                     "-intfile", "i.img", "-noisefile", "n.img", "-seed", 3, "-nopgm"], tmp_path)
    img = r.floats("f.bin", 40, 24)
    for name in ("i.img", "n.img"):
        head, raw, data = r.smv(name)
        assert len(raw) == 512 and raw.startswith(b"{\nHEADER_BYTES=512;\n")
        text = raw.rstrip(b" ")
        assert text.endswith(b"}\f"), "header must close with '}' and a form feed, then spaces"
        assert list(head) == KEY_ORDER
        assert head["BYTE_ORDER"] in ("little_endian", "big_endian") and head["DIM"] == "2"
        assert raw.count(b"\n") == len(KEY_ORDER) + 1
        # the direct beam's pixel (slow 7, fast 29) is the brightest: rows are slow, fast-major
        assert data[7, 29] >= 0.8 * data.max() and data[29 % 24, 7] < 0.5 * data.max()
    assert np.unravel_index(np.argmax(img), img.shape) == (7, 29)
    assert np.unravel_index(np.argmax(r.smv("i.img")[2]), (24, 40)) == (7, 29)


@at("AT-IO-002", "PGM: P5, width height, '# pixels scaled by S', 255, floor(min(255, I S))")
@pytest.mark.parametrize("scale", [None, 4.0])
def test_pgm(tmp_path, scale):
    extra = [] if scale is None else ["-pgmscale", scale]
    r = run(SPOTS + ["-detpixels_f", 40, "-detpixels_s", 24, "-Xbeam", 0.7, "-Ybeam", 2.9, "-floatfile", "f.bin",
                     "-pgmfile", "p.pgm", "-nonoise"] + extra, tmp_path)
    img = r.floats("f.bin", 40, 24)
    raw = (tmp_path / "p.pgm").read_bytes()
    s = scale if scale is not None else r.value("pgm_scale")
    m = re.match(rb"P5\n40 24\n# pixels scaled by (\S+)\n255\n", raw)
    assert m, raw[:60]
    assert float(m.group(1)) == pytest.approx(s, rel=1e-5)
    assert len(raw) == m.end() + 40 * 24
    _, pgm = read_pgm(tmp_path / "p.pgm")
    want = np.floor(np.minimum(255, img * float(m.group(1))))
    assert np.abs(pgm - want).max() <= 1 and np.mean(pgm == want) > 0.99
    assert pgm[7, 29] == want[7, 29]


def _read_fdump(path):
    raw = path.read_bytes()
    end = raw.index(b"\f")
    lims = [int(x) for x in raw[:end].split()]
    (h0, h1, k0, k1, l0, l1) = lims
    shape = (h1 - h0 + 2, k1 - k0 + 2, l1 - l0 + 2)   # one spare slab on every axis
    data = np.frombuffer(raw[end + 1:], dtype=np.float64)
    assert data.size == np.prod(shape), f"Fdump.bin holds {data.size} values, expected {shape}"
    return lims, data.reshape(shape)


@at("AT-IO-003", "Fdump.bin: written after reading -hkl, read back when -hkl is absent")
def test_fdump_cache(tmp_path):
    rows = [(-2, 0, 1, 50.0), (1, -1, 0, 70.0), (0, 3, -2, 90.0), (0, 0, 0, 120.0)]
    write_hkl(tmp_path / "F.hkl", rows)
    args = CELL + ["-N", 3, "-lambda", 1, "-distance", 50, "-detpixels", 32, "-oversample", 1, "-nointerpolate"]
    first = image(args + ["-hkl", "F.hkl", "-default_F", 5], tmp_path, 32)
    lims, grid = _read_fdump(tmp_path / "Fdump.bin")
    assert lims == [-2, 1, -1, 3, -2, 1]
    for h, k, l, F in rows:
        assert grid[h + 2, k + 1, l + 2] == F
    assert grid[0, 0, 0] == 5.0 and grid[3, 4, 3] == 5.0       # gaps hold default_F
    (tmp_path / "F.hkl").unlink()
    again = image(args + ["-default_F", 5], tmp_path, 32)   # default_F still serves outside the grid
    np.testing.assert_array_equal(again, first)


HKL_ROWS = [(h, k, l, 20.0 + 7 * (h + 2) + 3 * (k + 3) + (l + 3)) for h in (-1, 0, 1) for k in range(-3, 4)
            for l in range(-3, 4)]
HKL_ARGS = CELL + ["-N", 5, "-lambda", 1, "-distance", 50, "-detpixels", 32, "-oversample", 1, "-nointerpolate",
                   "-default_F", 3]


def _hkl_images(tmp_path, columns):
    """The image from an HKL file with ``columns`` columns, then again from its Fdump.bin."""
    d = tmp_path / f"c{columns}"
    d.mkdir()
    write_hkl(d / "F.hkl", HKL_ROWS, columns)
    first = image(HKL_ARGS + ["-hkl", "F.hkl"], d, 32)
    (d / "F.hkl").unlink()
    return first, image(HKL_ARGS, d, 32)


@at("AT-IO-004", "HKL files: negative indices; the Fdump.bin copy gives the same image")
def test_hkl_negative_indices(tmp_path):
    img, again = _hkl_images(tmp_path, 4)
    np.testing.assert_array_equal(again, img)
    # negative indices are used: the direct beam meets pixel-index (16.5, 16.5) and the
    # (0, 1, 0) and (0, -1, 0) spots lie 5 pixels either side along slow (lab y is -slow);
    # windows mirrored about the beam hold them, and their ratio is that of the F^2
    plus, minus = img[10:14, 15:19].sum(), img[20:24, 15:19].sum()
    F_plus, F_minus = 20 + 14 + 12 + 3, 20 + 14 + 6 + 3
    assert plus / minus == pytest.approx((F_plus / F_minus) ** 2, rel=0.01)


@at("AT-IO-004", "HKL files with sigma and phase columns give the same image")
@pytest.mark.nbxp_only
def test_hkl_extra_columns(tmp_path):
    # nanoBragg reads the file as a stream of numbers taken four at a time, so a fifth column
    # shifts every later reflection; nbxp reads line by line and ignores extra columns
    four = _hkl_images(tmp_path, 4)[0]
    for columns in (5, 6):
        for img in _hkl_images(tmp_path, columns):
            np.testing.assert_array_equal(img, four)


@at("AT-NOISE-001", "noise image: Poisson about the float image, + ADC, clipped, overloads counted")
@pytest.mark.parametrize("mean", [4.0, 3000.0, 3e6])
def test_noise_statistics(tmp_path, mean):
    fluence = mean * 0.1**2 / R_E_SQR        # I = fluence r_e^2 / R^2 on a flat point-pixel image
    r = run(FLAT + ["-detpixels", 48, "-distance", 100, "-fluence", fluence, "-floatfile", "f.bin",
                    "-noisefile", "n.img", "-seed", 5, "-nopgm", "-adc", 10], tmp_path)
    mu = r.floats("f.bin", 48)
    data = r.smv("n.img")[2].astype(float)
    m = re.search(r"(\d+) photons on noise image \((\d+) overloads\)", r.stdout)
    assert m
    overloads = int(m.group(2))
    if mean > 1e6:
        assert np.all(data == 65535) and overloads == data.size
        return
    x = data - 10
    n = x.size
    assert overloads == 0 and x.min() >= 0
    assert abs(x.sum() - mu.sum()) < 5 * math.sqrt(mu.sum())
    var = ((x - mu) ** 2 / mu).mean()          # 1 for Poisson deviates
    assert var == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))
    assert int(m.group(1)) == pytest.approx(x.sum(), abs=1)
    if mean < 12:   # exact Poisson: P(0) = exp(-mean)
        assert np.mean(x == 0) == pytest.approx(math.exp(-mean), abs=5 * math.sqrt(math.exp(-mean) / n))


@at("AT-PRE-001", "-img and -mask headers: -img last for shared keys, mask-only keys kept, mask Y flipped")
def test_header_precedence(tmp_path):
    write_smv(tmp_path / "m.img", np.ones((20, 30)), PIXEL_SIZE=0.1, DISTANCE=70, WAVELENGTH=4.0,
              BEAM_CENTER_X=1.0, BEAM_CENTER_Y=0.5)
    write_smv(tmp_path / "i.img", np.ones((20, 30)), PIXEL_SIZE=0.1, DISTANCE=130, BEAM_CENTER_X=1.4)
    r = run(CELL + ["-default_F", 1, "-N", 1, "-img", "i.img", "-mask", "m.img", "-intfile", "o.img", "-nonoise",
                    "-nopgm"], tmp_path)
    head = r.smv("o.img")[0]
    assert float(head["DISTANCE"]) == pytest.approx(130)       # both: -img wins
    assert float(head["BEAM_CENTER_X"]) == pytest.approx(1.4)  # both: -img wins
    assert float(head["WAVELENGTH"]) == pytest.approx(4.0)     # only the mask has it
    assert float(head["BEAM_CENTER_Y"]) == pytest.approx(2.0 - 0.5)   # mask's, flipped


@at("AT-ROI-001", "ROI and mask: skipped pixels are 0 and left out of the statistics")
def test_roi_and_mask(tmp_path):
    mask = np.ones((32, 32), np.uint16)
    mask[10:14, 8:20] = 0
    write_smv(tmp_path / "m.img", mask, PIXEL_SIZE=0.1, DISTANCE=100)
    r = run(SPOTS + ["-mask", "m.img", "-roi", 4, 25, 6, 20, "-floatfile", "f.bin", "-nonoise", "-nopgm"], tmp_path)
    img = r.floats("f.bin", 32)
    keep = np.zeros((32, 32), bool)
    keep[6:21, 4:26] = True
    keep &= mask != 0
    assert np.all(img[~keep] == 0) and np.all(img[keep] > 0)
    v = img[keep]
    n = v.size
    assert r.value("mean") == pytest.approx(v.mean(), rel=2e-5)
    assert r.value("rms") == pytest.approx(math.sqrt((v**2).sum() / (n - 1)), rel=2e-5)
    # nanoBragg's rmsd runs over the whole ROI: masked pixels count, as zeros
    roi = img[6:21, 4:26]
    assert r.value("rmsd") == pytest.approx(math.sqrt(((roi - v.mean()) ** 2).sum() / (roi.size - 1)), rel=2e-5)


@at("AT-STA-001", "statistics: max_I and where, mean, rms, rmsd over rendered pixels")
@pytest.mark.parametrize("over", [1, 2])
def test_statistics(tmp_path, over):
    r = run(SPOTS + ["-detpixels", 32, "-Xbeam", 1.1, "-Ybeam", 2.2, "-oversample", over, "-floatfile", "f.bin",
                     "-nonoise", "-nopgm"], tmp_path)
    img = r.floats("f.bin", 32)
    n = img.size
    s, f = np.unravel_index(np.argmax(img), img.shape)
    assert (s, f) == (11, 22)   # the direct beam: Sbeam = 1.15 mm, Fbeam = 2.25 mm
    assert r.value("max_I") == pytest.approx(img.max(), rel=1e-5)
    # the position printed is that of the pixel's last sub-pixel (m)
    last = (1 - 0.5 / over) * 1e-4
    assert r.max_at() == pytest.approx((f * 1e-4 + last, s * 1e-4 + last), abs=1e-9)
    assert r.value("mean") == pytest.approx(img.mean(), rel=2e-5)
    assert r.value("rms") == pytest.approx(math.sqrt((img**2).sum() / (n - 1)), rel=2e-5)
    assert r.value("rmsd") == pytest.approx(math.sqrt(((img - img.mean()) ** 2).sum() / (n - 1)), rel=2e-5)


def _fdump_unpadded(lims, grid, newline: bool) -> bytes:
    """The grid without nanoBragg's spare planes (as early versions of nanoBragg's PyTorch
    port write it), header with or without the newline before the form feed."""
    h0, h1, k0, k1, l0, l1 = lims
    core = np.ascontiguousarray(grid[:h1 - h0 + 1, :k1 - k0 + 1, :l1 - l0 + 1])
    return (" ".join(str(x) for x in lims) + ("\n" if newline else "") + "\f").encode() + core.tobytes()


@at("AT-IO-005", "Fdump.bin from another program: no spare planes, no newline; a wrong size is an error")
@pytest.mark.nbxp_only
@pytest.mark.parametrize("newline", [True, False], ids=["newline", "no-newline"])
def test_fdump_other_layouts(tmp_path, newline):
    rows = [(-2, 0, 1, 50.0), (1, -1, 0, 70.0), (0, 3, -2, 90.0), (0, 0, 0, 120.0)]
    write_hkl(tmp_path / "F.hkl", rows)
    args = CELL + ["-N", 3, "-lambda", 1, "-distance", 50, "-detpixels", 32, "-oversample", 1, "-nointerpolate",
                   "-default_F", 5]
    first = image(args + ["-hkl", "F.hkl"], tmp_path, 32)
    lims, grid = _read_fdump(tmp_path / "Fdump.bin")
    (tmp_path / "F.hkl").unlink()
    raw = _fdump_unpadded(lims, grid, newline)
    (tmp_path / "Fdump.bin").write_bytes(raw)
    np.testing.assert_array_equal(image(args, tmp_path, 32), first)
    (tmp_path / "Fdump.bin").write_bytes(raw[:-8])  # one value short: fits neither layout
    r = run(args + ["-floatfile", "g.bin"], tmp_path, ok=False)
    assert r.rc != 0 and "Fdump.bin" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g.bin").exists()
