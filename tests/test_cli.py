"""The nbxp command: nanoBragg's flag semantics, the CLI/library agreement, and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import nbxp
import nbxp.errors
from nbxp.flags import UsageError, parse_args

BASE = ["-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "5", "-lambda", "6.2",
        "-distance", "100", "-detpixels", "48", "-pixel", "0.1"]


def run_nbxp(args, cwd):
    return subprocess.run([sys.executable, "-m", "nbxp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def cfg_of(*extra, base=BASE):
    return parse_args(list(base) + list(extra)).config


# ---------------------------------------------------------------- CLI and library agree

def test_cli_and_library_give_the_same_image(tmp_path):
    args = BASE + ["-mosaic", "0.5", "-mosaic_dom", "3", "-phi", "0.5", "-osc", "1", "-phisteps", "2",
                   "-detector_rotz", "3", "-polar", "0.9", "-oversample", "2"]
    p = run_nbxp(args + ["-floatfile", "f.bin", "-noprogress"], tmp_path)
    assert p.returncode == 0, p.stderr
    cli = np.fromfile(tmp_path / "f.bin", np.float32).reshape(48, 48)
    lib = np.asarray(nbxp.simulate(nbxp.config_from_args(args))).astype(np.float32)
    assert lib.max() > 0
    np.testing.assert_array_equal(cli, lib)
    assert "max_I = " in p.stdout and "mean= " in p.stdout


def test_default_float_file_name(tmp_path):
    p = run_nbxp(BASE, tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "floatimage.bin").stat().st_size == 48 * 48 * 4


def test_help_is_grouped_with_units(tmp_path):
    p = run_nbxp(["-h"], tmp_path)
    assert p.returncode == 0
    for text in ("detector:", "beam:", "crystal:", "-distance", "(mm, default 100)", "-lambda", "-mosaic_domains"):
        assert text in p.stdout


# ---------------------------------------------------------------- nanoBragg's flag semantics

def test_units_are_converted_to_si():
    c = cfg_of("-Xbeam", "5", "-twotheta", "10", "-mosaic", "1", "-dispersion", "2", "-divergence", "0.5")
    assert c.detector.distance == pytest.approx(0.1)
    assert c.detector.pixel_size == pytest.approx(1e-4)
    assert c.detector.Xbeam == pytest.approx(5e-3)
    assert c.detector.twotheta == pytest.approx(math.radians(10))
    assert c.crystal.mosaic_spread == pytest.approx(math.radians(1))
    assert c.beam.wavelength == pytest.approx(6.2e-10)
    assert c.beam.dispersion == pytest.approx(0.02)
    assert c.beam.hdivrange == pytest.approx(5e-4) and c.beam.vdivrange == pytest.approx(5e-4)
    assert c.crystal.cell[0] == pytest.approx(100e-10) and c.crystal.cell[3] == pytest.approx(math.pi / 2)


def test_energy_sets_wavelength():
    assert cfg_of("-energy", "12398.42").beam.wavelength == pytest.approx(1e-10)


def test_later_flags_win_and_N_versus_Na():
    c = cfg_of("-Na", "3", "-N", "7", "-Nc", "2")
    assert (c.crystal.Na, c.crystal.Nb, c.crystal.Nc) == (7, 7, 2)


def test_detpixels_win_over_detsize():
    c = cfg_of("-detsize", "20")
    assert (c.detector.fpixels, c.detector.spixels) == (48, 48)
    c = parse_args(["-cell", "50", "-default_F", "1", "-detsize", "12.84", "-pixel", "0.1"]).config
    assert c.detector.fpixels == 128 and c.detector.detsize_f == pytest.approx(0.01284)


def test_flux_exposure_beamsize_set_fluence():
    c = cfg_of("-flux", "1e12", "-exposure", "0.1", "-beamsize", "0.05")
    assert c.beam.fluence == pytest.approx(1e12 * 0.1 / (0.05e-3) ** 2)
    assert cfg_of().beam.fluence == pytest.approx(1.25932015286227e29)


def test_pivot_rules():
    assert cfg_of("-twotheta", "5").detector.pivot == "SAMPLE"
    assert cfg_of("-twotheta", "5", "-Xbeam", "4").detector.pivot == "BEAM"
    assert cfg_of("-close_distance", "90").detector.pivot == "SAMPLE"
    assert cfg_of("-pivot", "sample").detector.pivot == "SAMPLE"
    c = cfg_of("-xds")
    assert c.detector.convention == "XDS" and c.detector.pivot == "SAMPLE"


def test_vectors_select_custom_convention_and_a_later_convention_resets():
    assert cfg_of("-fdet_vector", "0", "0", "1").detector.convention == "CUSTOM"
    assert cfg_of("-fdet_vector", "0", "0", "1", "-mosflm").detector.convention == "MOSFLM"


def test_substring_spellings_as_nanoBragg():
    c = cfg_of("-mosaic_spread", "0.6", "-mosaic_domains", "4", "-wavelength", "2")
    assert c.crystal.mosaic_domains == 4
    assert c.crystal.mosaic_spread == pytest.approx(math.radians(0.6))
    assert c.beam.wavelength == pytest.approx(2e-10)


def test_twotheta_axis_also_reads_twotheta_as_nanoBragg_does():
    c = cfg_of("-twotheta", "12", "-twotheta_axis", "1", "0", "0")
    assert c.detector.twotheta_axis == (1.0, 0.0, 0.0)
    assert c.detector.twotheta == pytest.approx(math.radians(1.0))


def test_misset_angles_and_negative_values():
    c = cfg_of("-misset", "-10", "20.5", "-30")
    assert c.crystal.misset == pytest.approx(tuple(math.radians(a) for a in (-10, 20.5, -30)))
    assert cfg_of("-misset", "random").crystal.misset == "random"


def test_cell_defaults_fill_missing_values():
    c = parse_args(["-cell", "50", "-default_F", "1"]).config
    assert c.crystal.cell[0] == pytest.approx(50e-10)
    exp = []
    nbxp.simulate(parse_args(["-cell", "50", "-default_F", "1", "-detpixels", "4"]).config, experiment_out=exp)
    cp, _ = exp[0].cell_params
    assert cp == pytest.approx((50, 50, 50, 90, 90, 90))


def test_xtalsize_sets_cell_counts():
    exp = []
    nbxp.simulate(cfg_of("-xtalsize", "0.00071"), experiment_out=exp)
    assert exp[0].N == (71.0, 71.0, 71.0)  # ceil(0.71 um / 100 A)


def test_auto_oversample_and_interpolation_defaults():
    exp = []
    nbxp.simulate(parse_args(["-cell", "100", "-default_F", "1", "-N", "5", "-lambda", "1", "-distance", "50",
                              "-detpixels", "8"]).config, experiment_out=exp)
    # ceil(3 * 500 A / (1 A * 50 mm / 0.1 mm)) = 3
    assert exp[0].oversample == 3
    assert not exp[0].interpolate
    assert nbxp.flags.parse_args(BASE + ["-N", "2"]).config.interpolate is None


def test_detector_abs_inf_switches_absorption_off():
    c = cfg_of("-detector_thick", "100", "-detector_abs", "inf")
    assert c.detector.thickness == 0.0 and c.detector.mu == 0.0
    c = cfg_of("-detector_abs", "320", "-detector_thick", "450", "-thicksteps", "4")
    assert c.detector.mu == pytest.approx(1 / 320e-6) and c.detector.thicksteps == 4


def test_abbreviations_are_not_accepted():
    with pytest.raises(UsageError, match="unknown flag -dist"):
        parse_args(BASE + ["-dist", "100"])


def test_pix0_vector_is_accepted_with_a_warning_and_changes_nothing():
    p = parse_args(BASE + ["-pix0_vector", "0.1", "0.2", "0.3"])
    assert any("no effect" in w for w in p.state.warnings)
    a = np.asarray(nbxp.simulate(parse_args(BASE + ["-fdet_vector", "0", "0", "1"]).config))
    b = np.asarray(nbxp.simulate(parse_args(BASE + ["-fdet_vector", "0", "0", "1", "-pix0_vector", "0.1", "0.2",
                                                    "0.3"]).config))
    np.testing.assert_array_equal(a, b)


def test_img_header_sets_geometry_and_mask_flips_y(tmp_path):
    from nbxp.io.smv import header_value
    head = ("{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=20;\nSIZE2=10;\n"
            "PIXEL_SIZE=0.2;\nDISTANCE=80;\nWAVELENGTH=1.5;\nBEAM_CENTER_X=1.0;\nBEAM_CENTER_Y=0.5;\n"
            "CLOSE_DISTANCE=79;\n}\f")
    raw = head.encode().ljust(512, b" ") + np.ones(200, "<u2").tobytes()
    (tmp_path / "h.img").write_bytes(raw)
    assert header_value(head, "DISTANCE") == 79  # last occurrence, as nanoBragg's lookup finds it
    c = parse_args(["-img", "h.img", "-cell", "50", "-default_F", "1"], cwd=str(tmp_path)).config
    assert (c.detector.fpixels, c.detector.spixels) == (20, 10)
    assert c.detector.pixel_size == pytest.approx(2e-4)
    assert c.detector.distance == pytest.approx(0.079)
    assert c.beam.wavelength == pytest.approx(1.5e-10)
    assert c.detector.Ybeam == pytest.approx(0.5e-3)
    c = parse_args(["-mask", "h.img", "-cell", "50", "-default_F", "1"], cwd=str(tmp_path)).config
    assert c.detector.Ybeam == pytest.approx(10 * 0.2e-3 - 0.5e-3)
    assert c.detector.mask.shape == (10, 20)
    c = parse_args(["-img", "h.img", "-cell", "50", "-default_F", "1", "-lambda", "2"], cwd=str(tmp_path)).config
    assert c.beam.wavelength == pytest.approx(2e-10)  # flags win over headers


# ---------------------------------------------------------------- bad input

BAD = [
    (["-frobnicate"], "unknown flag -frobnicate"),
    (["-distanse", "100"], "did you mean -distance"),
    (["-distance"], "-distance: expected 1 value"),
    (["-distance", "abc"], "-distance: expected a number, got 'abc'"),
    (["-distance", "0"], "-distance: expected a positive number"),
    (["-distance", "-5"], "-distance: expected a positive number"),
    (["-pixel", "0"], "-pixel: expected a positive number"),
    (["-lambda", "0"], "-lambda: expected a positive number"),
    (["-detpixels", "0"], "-detpixels: expected a positive number of pixels"),
    (["-N", "2.5"], "-N: expected an integer"),
    (["-roi", "1", "2"], "-roi: expected 4 values"),
    (["-hkl", "missing.hkl"], "-hkl: cannot read missing.hkl"),
    (["-hkl", "bad.hkl"], "-hkl: bad.hkl line 2"),
    (["-mat", "bad.mat"], "-mat: bad.mat must start with nine numbers"),
    (["-sourcefile", "bad.src"], "-sourcefile: bad.src line 1"),
    (["-img", "bad.hkl"], "-img: bad.hkl does not look like an SMV"),
    (["-detpixels", "40000"], "-detpixels: this run needs about"),
    (["-detpixels", "400000"], "-detpixels/-pixel: 400000x400000 pixels is too large"),
    (["-floatfile", "nodir/x.bin"], "-floatfile: cannot write nodir/x.bin"),
    (["stray"], "unexpected argument 'stray'"),
    # degenerate crystals, refused by the crystal set-up before anything divides by a volume
    (["-mat", "zero.mat"], "-mat zero.mat: the A matrix is singular"),
    (["-mat", "flat.mat"], "-mat flat.mat: the A matrix is singular: its reciprocal vectors a*, b*, c* are coplanar"),
    (["-mat", "huge.mat"], "-mat: huge.mat: number 9 of the A matrix (1e400) is not finite"),
    (["-cell", "100", "100", "100", "120", "120", "120"], "-cell: the angles 120 120 120 deg give no real cell"),
    (["-cell", "100", "100", "100", "200", "200", "200"], "-cell: the angle alpha = 200 deg is not below 180"),
    (["-cell", "0", "100", "100", "90", "90", "90"], "-cell: the cell edge a must be positive"),
    (["-pixel", "1e-322"], "-pixel: 1e-322 is out of range"),  # positive in mm, 0 in m
    # counts whose arrays cannot fit: refused before they are allocated
    (["-phisteps", "99999999999"], "-phisteps/-osc/-phistep: this run needs about"),
    (["-mosaic", "1", "-mosaic_dom", "100000000"], "-mosaic_domains: this run needs about"),
    (["-oversample", "99999999"], "-oversample: this run needs about"),
    (["-divergence", "1", "-divsteps", "10000000"], "-divsteps/-hdivsteps/-vdivsteps/-dispsteps: this run needs"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(e) for e, _ in BAD])
def test_bad_input_is_one_line_error_and_writes_nothing(extra, message, tmp_path):
    (tmp_path / "bad.hkl").write_text("1 2 3 4\n1 2 x 4\n")
    (tmp_path / "bad.mat").write_text("0.1 0.2 0.3\n0.4 0.5\n")
    (tmp_path / "bad.src").write_text("a b c\n")
    (tmp_path / "zero.mat").write_text("0 0 0\n0 0 0\n0 0 0\n")
    (tmp_path / "flat.mat").write_text("0.01 0 0.02\n0 0.01 0\n0 0 0\n")
    (tmp_path / "huge.mat").write_text("0.01 0 0\n0 0.01 0\n0 0 1e400\n")
    (tmp_path / "floatimage.bin").write_bytes(b"keep")
    inputs = sorted(os.listdir(tmp_path))
    p = run_nbxp(BASE + extra, tmp_path)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbxp: error: ") and message in lines[0], p.stderr
    assert (tmp_path / "floatimage.bin").read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == inputs


def test_memory_refusal_is_fast_and_allocates_nothing(tmp_path):
    import resource
    # the estimate comes before the arrays: the refused child stays at start-up size
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = run_nbxp(BASE + ["-phisteps", "99999999999", "-mosaic", "1", "-mosaic_dom", "100000000"], tmp_path)
    assert p.returncode == 2 and "-phisteps/-osc/-phistep, -mosaic_domains: this run needs about" in p.stderr
    assert "GiB available" in p.stderr and os.listdir(tmp_path) == []
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kib < 1_000_000 or peak_kib == before  # under 1 GB (the arrays would need 10^6 GB)


def test_memory_estimate_counts_and_limits():
    from nbxp.errors import ConfigError
    from nbxp.resources import check_fits, setup_parts
    kw = dict(pixels=64, phisteps=10**6, domains=1, sources=1, thicksteps=1, oversample=1, itemsize=8,
              interpolate=False)
    parts = setup_parts(**kw)
    orient = next(p for p in parts if p.what.startswith("orientations"))
    assert orient.nbytes == 10**6 * (9 * 8 * 3 + 40) + 72  # three float64 copies, the phi list, one domain
    tiles = parts[-1]
    threads = int(tiles.what.split(":")[1].split(" x ")[0])
    assert tiles.nbytes == threads * 40 * 8 * 10**6  # one pixel of 10^6 sub-paths per thread
    # a large run that fits is let through; the same run with less memory is refused,
    # naming the flag whose count makes it large
    need = check_fits(parts, avail=100 * 2**30)
    assert need == sum(p.nbytes for p in parts)
    with pytest.raises(ConfigError, match=r"^-phisteps/-osc/-phistep: this run needs about 0\.\d GiB"):
        check_fits(parts, avail=need / 2)
    # counts beyond any float stay finite
    huge = setup_parts(**dict(kw, oversample=10**400))
    assert all(math.isfinite(p.nbytes) for p in huge)


def test_large_feasible_run_shows_its_progress_bar(tmp_path):
    # 64 x 64 pixels x 100000 phi steps fits in memory but takes minutes on the NumPy engine
    # (the compiled kernel can finish it inside tqdm's delay): it is not refused, and on a
    # terminal its progress bar appears (tqdm, after its 2 s delay)
    import pty
    import select
    import signal
    import time
    pid, fd = pty.fork()
    if pid == 0:  # the child: nbxp on the pty's terminal, 100 columns wide (tqdm draws nothing at 0)
        import fcntl
        import struct
        import termios
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.chdir(tmp_path)
        os.execv(sys.executable, [sys.executable, "-m", "nbxp", *BASE, "-detpixels", "64", "-phisteps", "100000",
                                  "-osc", "1", "--threads", "1", "--backend", "numpy", "-nonoise", "-nopgm"])
    seen, t0 = b"", time.time()
    try:
        while time.time() - t0 < 90 and b"px/s" not in seen and b"rendering" not in seen:
            r, _, _ = select.select([fd], [], [], 1.0)
            if r:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    assert b"error" not in seen, seen[-500:]
    assert b"rendering" in seen, seen[-500:]


class _Boom(ValueError):
    pass


@pytest.mark.parametrize("exc,rc,start", [
    (UsageError("-distance: expected a number"), 2, "nbxp: error: -distance: expected a number"),
    (nbxp.errors.ConfigError("-cell: no cell"), 2, "nbxp: error: -cell: no cell"),
    (_Boom("a bug"), 70, "nbxp: internal error: _Boom: a bug"),
    (ZeroDivisionError("float division by zero"), 70, "nbxp: internal error: ZeroDivisionError"),
])
def test_user_errors_and_internal_errors_are_told_apart(exc, rc, start, monkeypatch, capsys):
    import nbxp.cli as cli

    def fail(argv, out=None):
        raise exc
    monkeypatch.setattr(cli, "run", fail)
    monkeypatch.delenv("NBXP_TRACEBACK", raising=False)
    assert cli.main(BASE) == rc
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(start)
    if rc == 70:
        assert "bug in nbxp" in err[0] and "NBXP_TRACEBACK=1" in err[0]
        monkeypatch.setenv("NBXP_TRACEBACK", "1")
        assert cli.main(BASE) == rc
        assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_error_types_share_one_base_and_keep_their_names():
    from nbxp.errors import NbxpError
    from nbxp.gpu import BackendError
    from nbxp.io import InputError
    for cls in (UsageError, InputError, BackendError, nbxp.errors.ConfigError):
        assert issubclass(cls, NbxpError) and issubclass(cls, ValueError)
    assert not issubclass(NbxpError, UsageError)


def test_no_structure_factors_is_an_error(tmp_path):
    p = run_nbxp(["-cell", "100", "-detpixels", "8"], tmp_path)
    assert p.returncode != 0 and "give -hkl FILE or -default_F" in p.stderr
    p = run_nbxp(["-default_F", "1", "-detpixels", "8"], tmp_path)
    assert p.returncode != 0 and "no crystal" in p.stderr


# -misset random: nanoBragg's orientation for the same seed.  Expected values produced here by
# nanoBragg ("12-5-23" sources, built single-threaded) with
#   nanoBragg <MISSET_ARGS> -misset random -misset_seed S [-mosaic 0.5 -mosaic_dom 3]
#             -floatfile f.bin -intfile i.img
# the angle lines copied from its printout, f.bin gzipped into tests/data/misset_random/.
MISSET_ARGS = ["-cell", "70", "80", "90", "75", "85", "95", "-default_F", "100", "-N", "3", "-lambda", "1",
               "-distance", "60", "-detpixels", "32", "-nonoise", "-nopgm", "-noprogress", "-seed", "1"]
MISSET_NB = [
    ("5", [], "142.144470 55.074207 35.266329", "seed5"),
    ("12345", [], "105.720755 -34.951318 -97.823571", "seed12345"),
    ("99999", [], "-69.009444 9.510557 36.094130", "seed99999"),
    ("77", ["-mosaic", "0.5", "-mosaic_dom", "3"], "-50.433049 15.844024 15.618692", "seed77_mosaic"),
]
DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("seed,extra,angles,name", MISSET_NB, ids=[m[3] for m in MISSET_NB])
def test_misset_random_gives_nanoBragg_angles_and_image(seed, extra, angles, name, tmp_path):
    import gzip
    p = run_nbxp(MISSET_ARGS + extra + ["-misset", "random", "-misset_seed", seed, "-floatfile", "a.bin"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"random orientation misset angles: {angles} deg" in p.stdout.splitlines()
    mine = np.fromfile(tmp_path / "a.bin", np.float32).astype(np.float64)
    with gzip.open(os.path.join(DATA, "misset_random", f"{name}.float.bin.gz")) as fh:
        ref = np.frombuffer(fh.read(), np.float32).astype(np.float64)
    assert ref.max() > 0
    assert np.abs(mine - ref).max() <= 1e-5 * ref.max()  # the parity rule "exact"


def test_misset_random_printed_angles_repeat_it(tmp_path):
    p1 = run_nbxp(MISSET_ARGS + ["-misset", "random", "-misset_seed", "5", "-floatfile", "a.bin"], tmp_path)
    line = next(x for x in p1.stdout.splitlines() if x.startswith("random orientation misset angles"))
    p2 = run_nbxp(MISSET_ARGS + ["-misset", *line.split(":")[1].split()[:3], "-floatfile", "b.bin"], tmp_path)
    assert p1.returncode == p2.returncode == 0
    a, b = (np.fromfile(tmp_path / f, np.float32) for f in ("a.bin", "b.bin"))
    assert a.max() > 0 and np.abs(a - b).max() <= 1e-4 * a.max()  # angles printed to 1e-6 deg


def test_umat_to_misset_inverts_the_misset_rotation():
    from nbxp.crystal import random_misset, umat_to_misset, uniform_misset
    from nbxp.vectors import rotate_xyz
    for angles in ((0.3, -1.1, 2.5), (-2.9, 0.7, -0.2), (1.0, 1.5707, 0.4)):
        R = rotate_xyz(np.eye(3), *angles, xp=np).T  # columns: the rotated unit vectors
        np.testing.assert_allclose(umat_to_misset(R), angles, atol=1e-9)
    assert random_misset(5) != random_misset(6)
    # the uniform sampler: the rotated z axis is uniform on the sphere, so its z
    # component is uniform on [-1, 1] (mean 0, variance 1/3)
    zs = []
    for seed in range(1, 1501):
        R = rotate_xyz(np.eye(3), *uniform_misset(seed), xp=np).T
        zs.append(R[2, 2])
    assert abs(np.mean(zs)) < 0.05 and abs(np.var(zs) - 1 / 3) < 0.03


# ---------------------------------------------------------------- threads and precision

def test_image_does_not_depend_on_threads_or_tile_size():
    from nbxp.api import resolve_namespace
    from nbxp.engine import render
    from nbxp.experiment import build_experiment
    cfg = cfg_of("-mosaic", "0.5", "-mosaic_dom", "3", "-oversample", "2", "-dmin", "20")
    xp = resolve_namespace(np)
    ref, _ = render(build_experiment(cfg, xp=xp, dtype=xp.float64), threads=1)
    assert np.asarray(ref).max() > 0
    for threads, budget in ((2, 1 << 22), (2, 1 << 14), (3, 1 << 19)):  # bytes per tile
        img, _ = render(build_experiment(cfg, xp=xp, dtype=xp.float64), threads=threads, tile_bytes=budget)
        np.testing.assert_array_equal(np.asarray(img), np.asarray(ref))


def test_tile_memory_flag_keeps_the_image(tmp_path):
    args = BASE + ["-mosaic", "0.5", "-mosaic_dom", "2", "-detpixels", "48", "-nonoise", "-nopgm"]
    outs = []
    for extra in ([], ["--tile-mb", "0.05", "--threads", "2"]):
        p = run_nbxp(args + extra + ["-floatfile", f"f{len(outs)}.bin"], tmp_path)
        assert p.returncode == 0, p.stderr
        outs.append(np.fromfile(tmp_path / f"f{len(outs)}.bin", np.float32))
    np.testing.assert_array_equal(outs[0], outs[1])
    for bad in ("0", "-3", "lots"):
        p = run_nbxp(args + ["--tile-mb", bad, "-floatfile", "bad.bin"], tmp_path)
        assert p.returncode == 2 and "--tile-mb" in p.stderr and p.stderr.count("\n") == 1
        assert not (tmp_path / "bad.bin").exists()


def test_simulate_threads_and_tile_bytes_keep_the_image():
    cfg = cfg_of("-mosaic", "0.5", "-mosaic_dom", "2")
    ref = np.asarray(nbxp.simulate(cfg))
    np.testing.assert_array_equal(np.asarray(nbxp.simulate(cfg, threads=2, tile_bytes=1 << 15)), ref)


def test_float32_engine_agrees_with_float64(tmp_path):
    args = BASE + ["-misset", "10", "20", "30", "-phisteps", "3", "-osc", "0.5", "-detpixels", "64"]
    for dt in ("float64", "float32"):
        p = run_nbxp(args + ["--dtype", dt, "--threads", "2", "-floatfile", f"{dt}.bin", "-nonoise", "-nopgm"],
                     tmp_path)
        assert p.returncode == 0, p.stderr
    a = np.fromfile(tmp_path / "float64.bin", np.float32).astype(np.float64)
    b = np.fromfile(tmp_path / "float32.bin", np.float32).astype(np.float64)
    assert np.corrcoef(a, b)[0, 1] >= 0.9999
    assert b.sum() / a.sum() == pytest.approx(1.0, abs=1e-3)
    assert not np.array_equal(a, b)  # really ran in single precision


@pytest.mark.parametrize("extra,message", [
    (["--threads", "0"], "--threads: expected a positive number of threads"),
    (["--dtype", "float16"], "--dtype: expected float32 or float64"),
    (["--thread", "2"], "unknown flag --thread"),
])
def test_bad_nbxp_options(extra, message, tmp_path):
    p = run_nbxp(BASE + extra, tmp_path)
    assert p.returncode != 0 and message in p.stderr and os.listdir(tmp_path) == []
