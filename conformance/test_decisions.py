"""Where nbxp deliberately differs from nanoBragg (docs/decisions.md, docs/spec/differences.md).

The nbxp-only tests check nbxp's decision; they are skipped for any other program.  The
-pix0_vector test holds for both programs.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance._nb import image, run

at = pytest.mark.at
CELL = ["-cell", 100, 100, 100, 90, 90, 90]
SPOTS = CELL + ["-N", 5, "-default_F", 100, "-lambda", 1, "-distance", 100, "-oversample", 1, "-nointerpolate",
                "-detpixels", 48]


@at("AT-NBXP-001", "phi = 0 step rotated freshly: steps average single-angle images")
@pytest.mark.nbxp_only
def test_phi_zero_step_is_fresh(tmp_path):
    # nanoBragg skips the rotation when phi = 0 and reuses the previous pixel's last one
    both = image(SPOTS + ["-phi", 0, "-osc", 10, "-phisteps", 2], tmp_path, 48)
    at0 = image(SPOTS + ["-phi", 0, "-osc", 0], tmp_path, 48)
    at5 = image(SPOTS + ["-phi", 5, "-osc", 0], tmp_path, 48)
    assert np.abs(at0 - at5).max() > 0.1 * at0.max()
    np.testing.assert_allclose(both, (at0 + at5) / 2, rtol=1e-5, atol=1e-7 * at0.max())


@at("AT-NBXP-002", "unknown flags and bad numbers: one-line error naming the flag, no files")
@pytest.mark.nbxp_only
@pytest.mark.parametrize("bad,name", [(["-detpixelz", 32], "-detpixelz"), (["-distance", "far"], "-distance"),
                                      (["-distance"], "-distance")])
def test_bad_input_is_an_error(tmp_path, bad, name):
    r = run(SPOTS + ["-floatfile", "f.bin"] + bad, tmp_path, ok=False)
    assert r.rc != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0]
    assert not (tmp_path / "f.bin").exists()


@at("AT-NBXP-003", "-pix0_vector changes nothing (the origin comes from the beam centre)")
def test_pix0_vector_has_no_effect(tmp_path):
    # -pix0_vector selects the CUSTOM convention, as -beam_vector along the default beam does
    custom = image(SPOTS + ["-beam_vector", 1, 0, 0], tmp_path, 48)
    pix0 = image(SPOTS + ["-pix0_vector", 0.1, 0.01, -0.02], tmp_path, 48)
    np.testing.assert_array_equal(pix0, custom)


@at("AT-NBXP-003", "-pix0_vector: nbxp warns that it has no effect")
@pytest.mark.nbxp_only
def test_pix0_vector_warns(tmp_path):
    r = run(SPOTS + ["-pix0_vector", 0.1, 0.01, -0.02, "-nonoise", "-nopgm"], tmp_path)
    assert "-pix0_vector" in r.text and "no effect" in r.text


@at("AT-NBXP-004", "degenerate crystals: one-line error naming the flag or file, no files")
@pytest.mark.nbxp_only
@pytest.mark.parametrize("bad,name", [
    (["-cell", 100, 100, 100, 120, 120, 120], "-cell"),     # angles summing to 360: no volume
    (["-cell", 100, 100, 100, 200, 200, 200], "-cell"),     # nanoBragg's |...| volume accepts these
    (["-mat", "zero.mat"], "zero.mat"),                      # singular A matrix
    (["-mat", "inf.mat"], "inf.mat"),                        # non-finite number
], ids=["flat", "over-180", "singular-mat", "inf-mat"])
def test_degenerate_crystal_is_an_error(tmp_path, bad, name):
    (tmp_path / "zero.mat").write_text("0 0 0\n0 0 0\n0 0 0\n")
    (tmp_path / "inf.mat").write_text("0.01 0 0\n0 0.01 0\n0 0 1e400\n")
    r = run(SPOTS[len(CELL):] + bad + ["-floatfile", "f.bin"], tmp_path, ok=False)
    assert r.rc != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in r.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inf.mat", "zero.mat"]


@at("AT-NBXP-005", "counts whose arrays cannot fit in memory: refused at once, naming the flag")
@pytest.mark.nbxp_only
@pytest.mark.parametrize("bad,name", [(["-phisteps", 99999999999], "-phisteps"),
                                      (["-mosaic", 1, "-mosaic_dom", 100000000], "-mosaic_domains")])
def test_run_too_large_is_an_error(tmp_path, bad, name):
    r = run(SPOTS + bad + ["-floatfile", "f.bin"], tmp_path, ok=False, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.rc != 0 and len(lines) == 1 and name in lines[0] and "memory" in lines[0]
    assert list(tmp_path.iterdir()) == []
