"""Every nanoBragg reference case, through the command line and through the library.

Parity rule (../shared/reference/README.md): float image max |difference| <= 1e-5 of the
image maximum, and the printed statistics equal to 6 significant digits.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import nbxp
from nbxp.engine import rendered_mask
from nbxp.stats import image_stats

from .helpers import REFERENCE, requires_reference

CASES = sorted(p.name for p in (REFERENCE / "cases").iterdir()) if (REFERENCE / "cases").is_dir() else []


def _case(name):
    case = json.loads((REFERENCE / "cases" / name / "case.json").read_text())
    return shlex.split(case["args"]), shlex.split(case["auto_added_args"])


def _reference_image(name):
    d = REFERENCE / "cases" / name
    f = d / "float_spec.bin.gz" if (d / "float_spec.bin.gz").exists() else d / "float.bin.gz"
    return np.frombuffer(gzip.open(f).read(), np.float32).astype(np.float64)


def _reference_stats(name):
    d = REFERENCE / "cases" / name
    text = ((d / "stdout_spec.txt") if (d / "stdout_spec.txt").exists() else (d / "stdout.txt")).read_text()
    return _stats_of(text)


def _stats_of(text):
    out = {}
    for line in text.splitlines():
        w = line.replace("=", " = ").split()
        if line.startswith("max_I") and len(w) >= 6:
            out.update(max_I=float(w[2]), max_x=float(w[4]), max_y=float(w[5]))
        if line.startswith("mean=") and len(w) >= 9:
            out.update(mean=float(w[2]), rms=float(w[5]), rmsd=float(w[8]))
    return out


def _assert_stats(mine, ref):
    assert set(ref) <= set(mine)
    for k, v in ref.items():
        assert mine[k] == pytest.approx(v, rel=5e-6, abs=1e-300), k


def _assert_exact(x, y):
    assert x.shape == y.shape
    assert np.abs(x - y).max() <= 1e-5 * max(np.abs(y).max(), 1e-300)


def _workdir(tmp_path, args):
    for f in os.listdir(REFERENCE / "inputs"):
        if f in " ".join(args):
            shutil.copy(REFERENCE / "inputs" / f, tmp_path)
    return tmp_path


@requires_reference
@pytest.mark.parametrize("name", CASES)
def test_cli_matches_reference(name, tmp_path):
    args, added = _case(name)
    d = _workdir(tmp_path, args)
    p = subprocess.run([sys.executable, "-m", "nbxp", *args, *added], cwd=d, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    x = np.fromfile(d / "float.bin", np.float32).astype(np.float64)
    _assert_exact(x, _reference_image(name))
    _assert_stats(_stats_of(p.stdout), _reference_stats(name))


def _case_config(name, tmp_path):
    args, _ = _case(name)
    return nbxp.config_from_args(args, cwd=str(_workdir(tmp_path, args)))


@requires_reference
@pytest.mark.parametrize("name", CASES)
def test_library_matches_reference(name, tmp_path):
    cfg = _case_config(name, tmp_path)
    out = []
    img = nbxp.simulate(cfg, xp=np, experiment_out=out)
    assert img.dtype == np.float64
    exp = out[0]
    assert img.shape == (exp.geom.spixels, exp.geom.fpixels)
    img32 = np.asarray(img).astype(np.float32)
    _assert_exact(img32.reshape(-1).astype(np.float64), _reference_image(name))
    st = image_stats(img32, rendered_mask(exp), exp.roi, exp.geom.pixel_size, exp.oversample)
    _assert_stats(dict(max_I=st.max_I, max_x=st.max_I_x, max_y=st.max_I_y, mean=st.mean, rms=st.rms,
                       rmsd=st.rmsd), _reference_stats(name))


SMALL = ["cli_minimal", "mosaic", "div_disp", "oversample_flags", "interp_fallback", "dmin", "curved_det",
         "shape_round", "shape_gauss", "shape_tophat", "water", "mask", "sourcefile", "pattern_hkl", "roi"]


@requires_reference
@pytest.mark.parametrize("name", SMALL)
def test_array_api_strict_matches_reference(name, tmp_path):
    """The same physics on array-api-strict (no NumPy-only calls) gives the reference image."""
    import array_api_strict as xs
    img = nbxp.simulate(_case_config(name, tmp_path), xp=xs)
    assert type(img).__module__.startswith("array_api_strict")
    x = np.from_dlpack(img).astype(np.float32).reshape(-1).astype(np.float64)
    _assert_exact(x, _reference_image(name))


@requires_reference
@pytest.mark.parametrize("name", ["simple_cubic", "triclinic_P1", "pilatus_roi", "mosaic", "interpolate_auto",
                                  "oversample_flags", "shape_gauss", "div_disp"])
def test_float32_engine_is_close_to_reference(name, tmp_path):
    """Single precision: correlation >= 0.9999 and total within 0.1% (the 'close' class)."""
    img = nbxp.simulate(_case_config(name, tmp_path), xp=np, dtype=np.float32)
    assert img.dtype == np.float32
    x = np.asarray(img, np.float64).reshape(-1)
    y = _reference_image(name)
    assert np.corrcoef(x, y)[0, 1] >= 0.9999
    assert x.sum() / y.sum() == pytest.approx(1.0, abs=1e-3)
