"""AT-CLI-001..009: the command line as a user meets it (docs/spec/cli.md)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import _geom as G
from conformance._nb import read_pgm, run

at = pytest.mark.at
CELL = ["-cell", 100, 100, 100, 90, 90, 90]
SPOTS = CELL + ["-N", 5, "-default_F", 100, "-lambda", 6.2, "-distance", 100, "-pixel", 0.1, "-oversample", 1]
HEADER_KEYS = ("HEADER_BYTES", "DIM", "BYTE_ORDER", "TYPE", "SIZE1", "SIZE2", "PIXEL_SIZE", "DISTANCE",
               "WAVELENGTH", "BEAM_CENTER_X", "BEAM_CENTER_Y", "ADXV_CENTER_X", "ADXV_CENTER_Y",
               "MOSFLM_CENTER_X", "MOSFLM_CENTER_Y", "DENZO_X_BEAM", "DENZO_Y_BEAM", "DIALS_ORIGIN",
               "XDS_ORGX", "XDS_ORGY", "CLOSE_DISTANCE", "PHI", "OSC_START", "OSC_RANGE", "TWOTHETA",
               "DETECTOR_SN", "BEAMLINE")


@at("AT-CLI-001", "help lists the main flags")
def test_help_lists_flags(tmp_path):
    r = run(["-h"], tmp_path, ok=False)
    for flag in ("-hkl", "-mat", "-cell", "-pixel", "-detpixels", "-distance", "-lambda", "-energy", "-floatfile",
                 "-intfile", "-noisefile", "-pgmfile", "-scale", "-adc", "-mosflm", "-xds", "-roi"):
        assert flag in r.text, f"{flag} missing from the usage text"


@at("AT-CLI-001", "-h is a request: exit 0, every convention listed")
@pytest.mark.nbxp_only
def test_help_succeeds(tmp_path):
    # nanoBragg has no help flag: -h is ignored and it prints usage because inputs are
    # missing (exit 9); nbxp treats -h as a request and succeeds
    r = run(["-h"], tmp_path, ok=False)
    assert r.rc == 0
    for flag in ("-mosflm", "-xds", "-adxv", "-denzo", "-dials"):
        assert flag in r.stdout


@at("AT-CLI-002", "minimal render: float and SMV files, header keys, fast-major order")
def test_minimal_render(tmp_path):
    # 40 fast x 24 slow pixels; the direct beam on the centre of pixel (slow 7, fast 29)
    r = run(SPOTS + ["-detpixels_f", 40, "-detpixels_s", 24, "-Xbeam", 0.7, "-Ybeam", 2.9,
                     "-floatfile", "f.bin", "-intfile", "i.img", "-nonoise", "-nopgm"], tmp_path)
    img = r.floats("f.bin", 40, 24)
    assert np.unravel_index(np.argmax(img), img.shape) == (7, 29)
    head, raw, data = r.smv("i.img")
    for k in HEADER_KEYS:
        assert k in head, f"header lacks {k}"
    assert (int(head["SIZE1"]), int(head["SIZE2"])) == (40, 24)
    assert float(head["PIXEL_SIZE"]) == pytest.approx(0.1)
    assert float(head["DISTANCE"]) == pytest.approx(100)
    assert float(head["WAVELENGTH"]) == pytest.approx(6.2)
    assert head["TYPE"] == "unsigned_short" and head["DETECTOR_SN"] == "000" and head["BEAMLINE"] == "fake"
    # the integer image is the float image scaled pixel by pixel, in the same order
    scale = r.value("intfile_scale")
    want = np.clip(np.floor(img * scale + 40 + 0.5), 0, 65535)
    assert np.abs(data.astype(float) - want).max() <= 1


def _header_geometry(tmp_path, flags):
    r = run(CELL + ["-default_F", 1, "-N", 1, "-detpixels", 64, "-pixel", 0.1, "-roi", 0, 0, 0, 0,
                    "-intfile", "i.img", "-nonoise", "-nopgm"] + flags, tmp_path)
    return r.smv("i.img")[0]


ROT = ["-detector_rotx", 3, "-detector_roty", 2, "-detector_rotz", 1]
MOSFLM_AXES = ["-fdet_vector", 0, 0, 1, "-sdet_vector", 0, -1, 0, "-odet_vector", 1, 0, 0, "-beam_vector", 1, 0, 0]
CUSTOM = dict(b=(1, 0, 0), f=(0, 0, 1), s=(0, -1, 0), o=(1, 0, 0), tt=(0, 1, 0), p=(0, 0, 1), u=(0, 0, 1))


@at("AT-CLI-003", "conventions set axes, beam centre and pivot; -pivot decides in CUSTOM")
@pytest.mark.parametrize("conv", ["MOSFLM", "XDS"])
def test_conventions_and_pivot(tmp_path, conv):
    rot = np.radians([3, 2, 1])
    head = _header_geometry(tmp_path, ["-" + conv.lower(), "-distance", 100] + ROT)
    G.check_header(head, G.place(conv, 64, pixel=1e-4, distance=0.1, rot=rot), 64e-4)
    # the named conventions fix the pivot: -pivot does not move the detector
    other = "sample" if G.PIVOT[conv] == "BEAM" else "beam"
    head2 = _header_geometry(tmp_path, ["-" + conv.lower(), "-distance", 100, "-pivot", other] + ROT)
    assert head2 == head


@at("AT-CLI-003", "conventions set axes, beam centre and pivot; -pivot decides in CUSTOM")
def test_custom_pivot_override(tmp_path):
    rot = np.radians([3, 2, 1])
    heads = {}
    for pivot in ("beam", "sample"):
        heads[pivot] = _header_geometry(tmp_path, MOSFLM_AXES + ["-distance", 100, "-pivot", pivot] + ROT)
        G.check_header(heads[pivot], G.place(custom=CUSTOM, fpixels=64, pivot=pivot.upper(), rot=rot), 64e-4)
    assert heads["beam"]["XDS_ORGX"] != heads["sample"]["XDS_ORGX"]


def _write_img(path, data, **keys):
    from conformance._nb import write_smv
    write_smv(path, data, **keys)


@at("AT-CLI-004", "-img and -mask headers: -img read last wins; mask zeros not rendered")
@pytest.mark.parametrize("order", ["mask-first", "img-first"])
def test_header_precedence_and_mask(tmp_path, order):
    mask = np.ones((24, 32), np.uint16)
    mask[4:8, 10:14] = 0
    _write_img(tmp_path / "mask.img", mask, PIXEL_SIZE=0.1, DISTANCE=80, WAVELENGTH=5, BEAM_CENTER_X=1.2,
               BEAM_CENTER_Y=0.8)
    _write_img(tmp_path / "hdr.img", np.zeros((24, 32)), PIXEL_SIZE=0.1, DISTANCE=120, WAVELENGTH=6,
               BEAM_CENTER_X=1.5, BEAM_CENTER_Y=1.1)
    files = [["-mask", "mask.img"], ["-img", "hdr.img"]]
    if order == "img-first":
        files.reverse()
    r = run(CELL + ["-default_F", 1, "-N", 1, "-oversample", 1, "-floatfile", "f.bin", "-intfile", "i.img",
                    "-nonoise", "-nopgm"] + files[0] + files[1], tmp_path)
    head = r.smv("i.img")[0]
    # -img's header is applied after -mask's whatever the order on the command line
    assert float(head["DISTANCE"]) == pytest.approx(120)
    assert float(head["WAVELENGTH"]) == pytest.approx(6)
    assert float(head["BEAM_CENTER_X"]) == pytest.approx(1.5)
    assert float(head["BEAM_CENTER_Y"]) == pytest.approx(1.1)
    img = r.floats("f.bin", 32, 24)
    assert np.all(img[mask == 0] == 0) and np.all(img[mask != 0] > 0)
    inside = img[mask != 0]
    assert r.value("mean") == pytest.approx(inside.mean(), rel=1e-4)


@at("AT-CLI-004", "-img and -mask headers: -img read last wins; mask zeros not rendered")
def test_mask_beam_centre_y_is_flipped(tmp_path):
    _write_img(tmp_path / "mask.img", np.ones((24, 32)), PIXEL_SIZE=0.1, DISTANCE=90, BEAM_CENTER_X=1.2,
               BEAM_CENTER_Y=0.8)
    r = run(CELL + ["-default_F", 1, "-N", 1, "-mask", "mask.img", "-intfile", "i.img", "-nonoise", "-nopgm"],
            tmp_path)
    head = r.smv("i.img")[0]
    assert float(head["BEAM_CENTER_X"]) == pytest.approx(1.2)
    assert float(head["BEAM_CENTER_Y"]) == pytest.approx(2.4 - 0.8)   # detsize_s - value
    assert float(head["DISTANCE"]) == pytest.approx(90)


@at("AT-CLI-005", "-roi: only the rectangle is rendered in float, int and noise images")
def test_roi(tmp_path):
    r = run(CELL + ["-default_F", 10, "-N", 1, "-detpixels", 32, "-roi", 5, 20, 3, 11, "-floatfile", "f.bin",
                    "-intfile", "i.img", "-noisefile", "n.img", "-seed", 7, "-nopgm"], tmp_path)
    img = r.floats("f.bin", 32)
    inside = np.zeros_like(img, bool)
    inside[3:12, 5:21] = True          # bounds are inclusive: slow 3..11, fast 5..20
    assert np.all(img[inside] > 0) and np.all(img[~inside] == 0)
    for name in ("i.img", "n.img"):
        data = r.smv(name)[2]
        assert np.all(data[~inside] == 0), f"{name} has values outside the ROI"
        assert np.all(data[inside] >= 40)


@at("AT-CLI-006", "SMV scaling (auto 55000/max, -scale, -adc) and the PGM image")
def test_scaling_and_pgm(tmp_path):
    base = SPOTS + ["-detpixels", 32, "-floatfile", "f.bin", "-nonoise"]
    r = run(base + ["-intfile", "a.img", "-pgmfile", "a.pgm"], tmp_path)
    img = r.floats("f.bin", 32)
    auto = r.smv("a.img")[2].astype(float)
    assert r.value("intfile_scale") == pytest.approx(55000 / img.max(), rel=1e-5)
    assert auto.max() == 55000 + 40
    lines, pgm = read_pgm(tmp_path / "a.pgm")
    assert lines[0] == "P5" and lines[1] == "32 32" and lines[3] == "255"
    pscale = float(lines[2].split("scaled by")[1])
    assert pscale == pytest.approx(r.value("pgm_scale"), rel=1e-5)
    assert pscale == pytest.approx(250 / (5 * r.value("rmsd")), rel=1e-4)
    want = np.floor(np.minimum(255, img * pscale))
    assert np.abs(pgm - want).max() <= 1 and np.mean(pgm == want) > 0.99

    r = run(base + ["-intfile", "b.img", "-scale", 1000, "-adc", 10, "-pgmfile", "b.pgm", "-pgmscale", 3], tmp_path)
    fixed = r.smv("b.img")[2].astype(float)
    want = np.clip(np.floor(img * 1000 + 10 + 0.5), 0, 65535)
    assert np.abs(fixed - want).max() <= 1 and (fixed == 65535).any()
    lines, pgm = read_pgm(tmp_path / "b.pgm")
    assert float(lines[2].split("scaled by")[1]) == 3
    assert np.abs(pgm - np.floor(np.minimum(255, img * 3))).max() <= 1


@at("AT-CLI-007", "noise images repeat for one -seed and change with another")
def test_noise_determinism(tmp_path):
    base = CELL + ["-default_F", 30, "-N", 1, "-detpixels", 32, "-nopgm", "-noisefile", "n.img"]

    def noise(seed):
        r = run(base + ["-seed", seed], tmp_path)
        return r.smv("n.img")[2].copy(), r.stdout

    a, out_a = noise(11)
    b, out_b = noise(11)
    c, _ = noise(12)
    assert np.array_equal(a, b)
    assert "photons on noise image" in out_a
    assert out_a.split("photons on noise image")[0].split()[-1] == out_b.split("photons on noise image")[0].split()[-1]
    assert not np.array_equal(a, c)


@at("AT-CLI-008", "-dmin removes high-angle contributions only")
def test_dmin_lowers_total(tmp_path):
    base = CELL + ["-default_F", 1, "-N", 1, "-lambda", 1, "-distance", 50, "-detpixels", 64, "-oversample", 1]
    full = _img(tmp_path / "a", base)
    cut = _img(tmp_path / "b", base + ["-dmin", 15])
    assert cut.sum() < full.sum()
    kept = cut > 0
    assert kept.any() and (~kept).any()
    np.testing.assert_array_equal(cut[kept], full[kept])
    # what was removed lies further from the beam than what was kept
    ss, ff = np.mgrid[:64, :64]
    r = np.hypot(ss - 32.5, ff - 32.5)
    assert r[~kept].min() > r[kept].max() - 1.5


def _img(folder, args, n=64):
    from conformance._nb import image
    folder.mkdir()
    return image(args, folder, n)


@at("AT-CLI-009", "no structure factors at all: usage error, non-zero exit, no image")
def test_missing_inputs(tmp_path):
    r = run(CELL + ["-detpixels", 16, "-floatfile", "f.bin"], tmp_path, ok=False)
    assert r.rc != 0
    assert "-hkl" in r.text
    assert not (tmp_path / "f.bin").exists()


#: printed by nanoBragg ("12-5-23", single-threaded) for MISSET_ARGS -misset random
#: -misset_seed S: the angles are a property of the program, so they are constants here
MISSET_RANDOM = {5: (142.144470, 55.074207, 35.266329), 12345: (105.720755, -34.951318, -97.823571)}
MISSET_ARGS = ["-cell", 70, 80, 90, 75, 85, 95, "-default_F", 100, "-N", 3, "-lambda", 1, "-distance", 60,
               "-detpixels", 32, "-oversample", 1]


@at("AT-CLI-010", "-misset random: nanoBragg's orientation for -misset_seed, printed and applied")
@pytest.mark.parametrize("seed", sorted(MISSET_RANDOM))
def test_misset_random(tmp_path, seed):
    import re
    from conformance._nb import image
    d = tmp_path / "random"
    d.mkdir()
    r = run(MISSET_ARGS + ["-misset", "random", "-misset_seed", seed, "-floatfile", "f.bin", "-nonoise", "-nopgm"], d)
    m = re.search(r"random orientation misset angles: (\S+) (\S+) (\S+) deg", r.stdout)
    assert m, "no 'random orientation misset angles' line"
    angles = tuple(float(x) for x in m.groups())
    assert angles == pytest.approx(MISSET_RANDOM[seed], abs=1.5e-6)
    # the printed angles are the ones applied: giving them back gives the same image
    rand = r.floats("f.bin", 32)
    again = _img(tmp_path / "given", MISSET_ARGS + ["-misset", *m.groups()], 32)
    assert rand.max() > 0
    np.testing.assert_allclose(again, rand, rtol=0, atol=1e-4 * rand.max())
