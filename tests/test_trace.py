"""-trace_pixel and nbxp-trace-diff: nbxp's per-pixel trace against nanoBragg's instrumented
build (../shared/reference/traces*), and the diff tool on its own."""

from __future__ import annotations

import gzip
import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nbxp.flags import parse_args
from nbxp.tools import trace_diff as td
from nbxp.trace import trace_lines

from .helpers import REFERENCE, requires_reference

TRACES = sorted((REFERENCE / "traces").glob("*.trace")) if (REFERENCE / "traces").is_dir() else []
MORE = sorted((REFERENCE / "traces_more").glob("*.trace")) if (REFERENCE / "traces_more").is_dir() else []
_NAME = re.compile(r"(.*)\.s(\d+)_f(\d+)\.trace$")

#: the lines of pilatus_roi that depend on its phi = 0 step, where nanoBragg reuses the
#: previous pixel's rotation and nbxp rotates freshly (docs/decisions.md)
PHI0_DEFECT = {"rot_a_angstroms", "rot_b_angstroms", "rot_c_angstroms", "hkl_frac", "hkl_rounded",
               "F_latt_a", "F_latt_b", "F_latt_c", "F_latt", "F_cell", "PHI phi_tic",
               "I_before_scaling", "I_pixel_final", "floatimage_accumulated"}


def _case(path):
    case, s, f = _NAME.match(path.name).groups()
    args = shlex.split(json.loads((REFERENCE / "cases" / case / "case.json").read_text())["args"])
    return case, int(s), int(f), args


def _run_nbxp(args, cwd, *extra):
    for a in args:
        if (REFERENCE / "inputs" / a).is_file():
            shutil.copy(REFERENCE / "inputs" / a, cwd)
    cmd = [sys.executable, "-m", "nbxp", *args, "-floatfile", "float.bin", "-intfile", "int.img", "-nopgm",
           "-nonoise", "-noprogress", *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _trace_diff(a, b, *opts):
    r = subprocess.run([sys.executable, "-m", "nbxp.tools.trace_diff", str(a), str(b), "--json", *opts],
                       capture_output=True, text=True)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


def _base(quantity: str) -> str:
    return re.sub(r"( #\d+)?(\[\d+\])?$", "", quantity)


# ----------------------------------------------------------------------------- acceptance

@requires_reference
@pytest.mark.reference
@pytest.mark.parametrize("path", TRACES, ids=[p.name for p in TRACES])
def test_cli_trace_matches_nanobragg(path, tmp_path):
    """The nbxp command's -trace_pixel output against nanoBragg's, through nbxp-trace-diff:
    every paired quantity within 1e-9 relative, every line paired."""
    case, s, f, args = _case(path)
    run = _run_nbxp(args, tmp_path, "-trace_pixel", str(s), str(f))
    assert run.returncode == 0, run.stderr
    mine = tmp_path / "nbxp.trace"
    mine.write_text(run.stdout)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("TRACE")]
    assert len(lines) == len([ln for ln in path.read_text().splitlines() if ln.startswith("TRACE")])
    assert all(ln.startswith(("TRACE_PY", "TRACE_CONFIG")) for ln in lines)

    rc, res, err = _trace_diff(path, mine)
    assert res is not None, err
    assert res["only_in_a"] == [] and res["only_in_b"] == []
    assert res["paired_values"] > 300
    if case != "pilatus_roi":
        assert rc == 0, res["first_difference"]
        assert res["differences"] == []
        chain = {row["tag"]: row for row in res["scaling_chain"]}
        assert chain["I_pixel_final"]["rel_diff"] < 1e-9
        assert chain["floatimage_accumulated"]["rel_diff"] == 0.0  # the very float nanoBragg wrote
        return

    # pilatus_roi: only the phi = 0 step (nanoBragg's carried-over rotation) differs
    assert rc == 1
    differing = {_base(d["quantity"]) for d in res["differences"]}
    assert differing <= PHI0_DEFECT
    assert {"hkl_frac", "I_before_scaling"} <= differing
    phi_lines = [d for d in res["differences"] if d["quantity"].startswith("PHI")]
    assert phi_lines and all(d["line_a"] == phi_lines[0]["line_a"] for d in phi_lines)  # the phi_tic=0 line only
    # and nbxp's value is the defect-free reference image at that pixel
    spec = np.frombuffer(gzip.open(REFERENCE / "cases" / case / "float_spec.bin.gz").read(), np.float32)
    det = parse_args(args, cwd=str(tmp_path)).config.detector
    final = [ln for ln in lines if "floatimage_accumulated" in ln][0]
    assert float(final.split()[-1]) == pytest.approx(float(spec[s * det.fpixels + f]), rel=1e-7)


@requires_reference
@pytest.mark.reference
@pytest.mark.parametrize("path", MORE, ids=[p.name for p in MORE])
def test_more_traces_match(path):
    """The 41 further traces, through the library: every quantity within 1e-9 (beam-pivot
    runs in other conventions: nanoBragg's fixed MOSFLM labels are reported, not compared)."""
    case, s, f, args = _case(path)
    cfg = parse_args(args, cwd=str(REFERENCE / "inputs")).config
    res = td.diff_traces(td.read_trace(str(path)), td.trace_from_lines(trace_lines(cfg, s, f)))
    assert res["differences"] == [], res["first_difference"]
    # interp_fallback: nanoBragg's one-time warning swallowed one of its own trace lines
    assert len(res["only_in_a"]) == 0 and len(res["only_in_b"]) <= (1 if case == "interp_fallback" else 0)
    if case in ("conv_adxv", "conv_denzo"):
        assert {d["quantity"] for d in res["fixed_labels"]} >= {"detector_convention", "convention_mapping"}


@requires_reference
@pytest.mark.reference
def test_trace_geometry_agrees_with_engine():
    """The detector block (recomputed step by step) ends where the engine's detector is."""
    for path in TRACES + MORE:
        case, s, f, args = _case(path)
        cfg = parse_args(args, cwd=str(REFERENCE / "inputs")).config
        T = td.trace_from_lines(trace_lines(cfg, s, f))
        final = T.last("pix0_vector") or T.last("pix0_after_twotheta")
        engine = T.last("pix0_vector_meters")
        a, b = (np.array([float(x) for x in ln.numbers]) for ln in (final, engine))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15 * np.abs(b).max(), err_msg=case)


# ----------------------------------------------------------------------------- behaviour

CUBIC = "-cell 100 100 100 90 90 90 -default_F 100 -detpixels 32 -pixel 0.1 -distance 100 -lambda 6.2 -N 5".split()


def _lines(args, s, f, **kw):
    return trace_lines(parse_args(args).config, s, f, **kw)


def test_trace_values_of_a_simple_pixel():
    """Numbers worked out by hand for the cubic cell: pixel (16, 20) of a 32x32 detector."""
    T = td.trace_from_lines(_lines(CUBIC, 16, 20))
    v = lambda name: [float(x) for x in T.last(name).numbers]  # noqa: E731
    # MOSFLM beam centre at 1.65 mm + half a pixel; sub-pixel centre at (20.5, 16.5) pixels
    assert v("pixel_pos_meters") == pytest.approx([0.1, 0.0017 - 16.5e-4, 20.5e-4 - 0.0017], abs=1e-15)
    R = np.sqrt(0.1 ** 2 + 0.00005 ** 2 + 0.00035 ** 2)
    assert v("R_distance_meters")[0] == pytest.approx(R, rel=1e-14)
    assert v("omega_pixel")[0] == pytest.approx(1e-8 / R ** 2 * 0.1 / R, rel=1e-14)
    d = np.array(v("diffracted_vec"))
    S = (d - [1, 0, 0]) / 6.2e-10  # 1/m; d is printed to 15 digits, so compare as vectors
    np.testing.assert_allclose(v("scattering_vec_A_inv"), S, rtol=0, atol=1e-12 * np.abs(S).max())
    h = v("hkl_frac")
    np.testing.assert_allclose(h, S * 100e-10, rtol=0, atol=1e-12 * np.abs(S * 100e-10).max())
    lat = [np.sin(5 * np.pi * x) / np.sin(np.pi * x) for x in h]
    assert v("F_latt") == pytest.approx([np.prod(lat)], rel=1e-12)
    assert v("F_cell") == [100.0]
    I = v("I_before_scaling")[0]
    assert I == pytest.approx(100.0 ** 2 * np.prod(lat) ** 2, rel=1e-12)
    final = 7.94079248018965e-30 * 1.25932015286227e29 * I * v("polar")[0] * v("omega_pixel")[0]
    assert v("I_pixel_final")[0] == pytest.approx(final, rel=1e-12)
    assert T.last("steps").numbers == ["1"]
    assert T.last("tracing pixel (spixel", channel="CONFIG").numbers == ["16", "20"]


def test_trace_is_the_image_value(tmp_path):
    """What the trace ends with is what the engine wrote into the float image."""
    args = CUBIC + ["-oversample", "2", "-mosaic", "0.5", "-mosaic_dom", "3", "-phi", "0", "-osc", "1",
                    "-phisteps", "2", "-detector_thick", "100", "-detector_abs", "200", "-thicksteps", "2"]
    run = _run_nbxp(args, tmp_path, "-trace_pixel", "12", "9")
    assert run.returncode == 0, run.stderr
    img = np.fromfile(tmp_path / "float.bin", np.float32).reshape(32, 32)
    T = td.trace_from_lines(run.stdout.splitlines())
    assert float(T.last("I_pixel_final").numbers[0]) == pytest.approx(float(img[12, 9]), rel=1e-6)
    assert np.float32(T.last("floatimage_accumulated").numbers[0]) == img[12, 9]  # printed with %.15g
    # 2 layers x 2x2 sub-pixels: one geometry block each; 2 phi steps x 3 domains per block
    assert len([ln for ln in T.lines if ln.name == "pixel_pos_meters"]) == 8
    assert len([ln for ln in T.lines if ln.channel == "PHI"]) == 16
    assert T.last("steps").numbers == [str(2 * 3 * 2 * 2)]


def test_float32_run_traces_the_same_physics(tmp_path):
    """The trace is computed on the host in float64 whatever the engine's precision: a
    float32 run differs only in the stored float (to float32 accuracy)."""
    r64 = _run_nbxp(CUBIC, tmp_path, "-trace_pixel", "16", "20")
    r32 = _run_nbxp(CUBIC, tmp_path, "-trace_pixel", "16", "20", "--dtype", "float32")
    assert r64.returncode == 0 and r32.returncode == 0
    res = td.diff_traces(td.trace_from_lines(r64.stdout.splitlines()), td.trace_from_lines(r32.stdout.splitlines()))
    assert {d["quantity"] for d in res["differences"]} <= {"floatimage_accumulated"}
    loose = td.diff_traces(td.trace_from_lines(r64.stdout.splitlines()),
                           td.trace_from_lines(r32.stdout.splitlines()), rtol=1e-5)
    assert loose["agree"]


def test_pixel_outside_roi_prints_only_setup():
    lines = _lines(CUBIC + ["-roi", "0", "10", "0", "10"], 16, 20)
    assert lines[-1] == "TRACE_CONFIG: tracing pixel (spixel=16, fpixel=20)"
    assert not any("I_pixel_final" in ln for ln in lines)
    assert any("pix0_vector=" in ln for ln in lines)


def test_bad_trace_pixel_is_one_line_error(tmp_path):
    for extra in (["-trace_pixel", "32", "0"], ["-trace_pixel", "-1", "3"], ["-trace_pixel", "3"],
                  ["-trace_pixel", "3", "x"]):
        run = _run_nbxp(CUBIC, tmp_path, *extra)
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and "-trace_pixel" in run.stderr and "Traceback" not in run.stderr
        assert not (tmp_path / "float.bin").exists()


def test_no_trace_no_trace_lines_and_engine_untouched(tmp_path):
    run = _run_nbxp(CUBIC, tmp_path)
    assert run.returncode == 0 and "TRACE" not in run.stdout
    import nbxp.engine
    assert "trace" not in inspect.getsource(nbxp.engine).lower()  # tracing lives outside the hot path


def test_interpolation_state_is_taken_from_the_render(tmp_path):
    """With interpolation on, the traced pixel interpolates only before the fallback."""
    hkl = tmp_path / "small.hkl"
    hkl.write_text("".join(f"{h} {k} {l} {10 + abs(h) + 2 * abs(k) + 3 * abs(l)}\n"
                           for h in range(-3, 4) for k in range(-3, 4) for l in range(-3, 4)))
    args = (f"-hkl {hkl} -cell 70 80 90 75 85 95 -interpolate -lambda 5 -distance 100 -detpixels 64 "
            "-pixel 0.1 -N 3").split()
    on = td.trace_from_lines(_lines(args, 32, 32, interpolation_trigger=None))  # never switched off
    off = td.trace_from_lines(_lines(args, 32, 32, interpolation_trigger=0))  # switched off at pixel 0
    h = [float(x) for x in on.last("hkl_frac").numbers]
    near = 10 + sum(m * abs(round(x)) for m, x in zip((1, 2, 3), h))
    assert float(off.last("F_cell").numbers[0]) == near
    assert float(on.last("F_cell").numbers[0]) != near


# ----------------------------------------------------------------------------- the diff tool

def test_parse_line_forms():
    ln = td.parse_line("TRACE_C:beam_center_m=X:1.65e-06 Y:1.65e-06 pixel_mm:0.1")
    assert (ln.channel, ln.name, ln.numbers, ln.digits, ln.prog) == ("", "beam_center_m", ["1.65e-06", "1.65e-06", "0.1"], 15, "C")
    assert ln.groups == [0, 1, 2]
    ln = td.parse_line("TRACE_PY_PHI phi_tic=3 phi_deg=0.03 k_frac=-3.9 F_latt_b=-4.1 F_latt=-5.7")
    assert (ln.channel, ln.name, ln.prog) == ("PHI", "phi_tic", "PY") and len(ln.numbers) == 5
    ln = td.parse_line("TRACE:   Before conversion: a = [100, 6.12323e-15, 6.12323e-15] |a| = 100 Angstroms")
    assert (ln.name, ln.digits, ln.groups) == ("Before conversion: a", 6, [0, 0, 0, 1])
    ln = td.parse_line("TRACE_C:Rx=[1 0 0; 0 1 -0; 0 0 1]")
    assert ln.name == "Rx" and ln.groups == [0] * 9
    ln = td.parse_line("TRACE_C:convention_mapping=Fbeam←Ybeam_mm(+0.5px),Sbeam←Xbeam_mm(+0.5px),beam_vec=[1 0 0]")
    assert ln.numbers == ["1", "0", "0"] and "(+0.5px)" in ln.template
    assert td.parse_line("TRACE_CONFIG: tracing pixel (spixel=16, fpixel=20)").channel == "CONFIG"
    assert td.parse_line("TRACE_C_SOURCE2: F_cell 100").channel == "SOURCE2"
    assert td.parse_line("TRACE_C: cos_2theta nan").numbers == ["nan"]
    assert td.parse_line("writing float.bin") is None


def _write(path, text):
    path.write_text(text)
    return path


def test_diff_tolerances_and_exit_codes(tmp_path):
    a = _write(tmp_path / "a.trace", "TRACE_C: hkl_frac 1 2 3\nTRACE_C: F_latt 10\nTRACE_C: fdet_vec 1 0 1e-19\n"
                                     "TRACE:   V_star = a_star . (b_star x c_star) = 1.23456e-06\n"
                                     "TRACE_C: I_pixel_final 2\n")
    same = _write(tmp_path / "b.trace", "TRACE_PY: hkl_frac 1.0000000001 2 3\nTRACE_PY: F_latt 10\n"
                                        "TRACE_PY: fdet_vec 1 0 0\n"
                                        "TRACE_PY:   V_star = a_star . (b_star x c_star) = 1.23457e-06\n"
                                        "TRACE_PY: I_pixel_final 2.000000001\n")
    rc, res, _ = _trace_diff(a, same)
    # 1e-10 on h: within rtol of the vector; 1e-19 next to 1 is a zero; the %g line (bare
    # TRACE:, 6 digits) one unit apart in its last printed digit: rounding, not a difference
    assert rc == 0 and res["agree"] and res["paired_lines"] == 5 and res["paired_values"] == 9
    two_units = _write(tmp_path / "g.trace", "TRACE_PY:   V_star = a_star . (b_star x c_star) = 1.23458e-06\n")
    rc, res, _ = _trace_diff(a, two_units)
    assert rc == 1 and res["first_difference"]["quantity"] == "V_star"
    rc, res, _ = _trace_diff(a, same, "--rtol", "1e-10")
    assert rc == 1 and res["first_difference"]["quantity"] == "I_pixel_final"
    assert res["first_difference"]["rel_diff"] == pytest.approx(5e-10, rel=1e-3)
    chain = {row["tag"]: row for row in res["scaling_chain"]}
    assert chain["I_pixel_final"]["a"] == "2" and chain["I_before_scaling"]["a"] is None

    differ = _write(tmp_path / "c.trace", "TRACE_PY: hkl_frac 1 2.5 3\nTRACE_PY: F_latt 10\nTRACE_PY: extra 1\n")
    rc, res, _ = _trace_diff(a, differ)
    assert rc == 1
    assert res["first_difference"]["quantity"] == "hkl_frac[1]" and res["first_difference"]["rel_diff"] == 0.2
    assert [d["quantity"] for d in res["only_in_b"]] == ["extra"] and len(res["only_in_a"]) == 3

    text = subprocess.run([sys.executable, "-m", "nbxp.tools.trace_diff", str(a), str(differ)],
                          capture_output=True, text=True)
    assert text.returncode == 1
    assert "first difference: hkl_frac[1]" in text.stdout and "I_before_scaling" in text.stdout

    for bad in (tmp_path / "missing.trace", _write(tmp_path / "empty.trace", "no trace here\n")):
        rc, res, err = _trace_diff(a, bad)
        assert rc == 2 and res is None and err.count("\n") == 1 and str(bad.name) in err
    binary = tmp_path / "bin.trace"
    binary.write_bytes(b"\xff\xfe\x00TRACE")
    rc, _, err = _trace_diff(binary, a)
    assert rc == 2 and "bin.trace" in err and "Traceback" not in err
    rc, _, err = _trace_diff(a, a, "--rtol", "-1")
    assert rc == 2 and err.count("\n") == 1 and "--rtol" in err
    rc, _, err = _trace_diff(a, a, "--bogus")
    assert rc == 2 and err.count("\n") == 1 and "--bogus" in err


def test_text_differences_and_repeats(tmp_path):
    a = _write(tmp_path / "a.trace", "TRACE_C:detector_convention=XDS\nTRACE_C: pixel_pos_meters 1 2 3\n"
                                     "TRACE_C: pixel_pos_meters 4 5 6\n")
    b = _write(tmp_path / "b.trace", "TRACE_PY:detector_convention=DIALS\nTRACE_PY: pixel_pos_meters 1 2 3\n"
                                     "TRACE_PY: pixel_pos_meters 4 5 7\n")
    rc, res, _ = _trace_diff(a, b)
    assert rc == 1
    kinds = [(d["quantity"], d["kind"]) for d in res["differences"]]
    assert kinds == [("detector_convention", "text"), ("pixel_pos_meters #2[2]", "value")]
