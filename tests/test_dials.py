"""DIALS, the real client, reads and processes a rotation scan made by the nbxp command
(SMV; CBF and NeXus once nbxp.io.cbf / nbxp.io.nexus are there) and a series of still shots.

Skipped where ``dials.import`` is not on PATH (``apt-get install dials`` provides it, see the
README); a few minutes on two busy cores (the stills: about four).  DIALS runs as commands under the system Python,
and ``/usr/bin/python3`` (with dxtbx) reads its ``.expt`` files back.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import nbxp
from nbxp.series import spindle_rotation

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("dials.import") is None, reason="DIALS is not installed")]

CELL = (50.0, 60.0, 70.0, 90.0, 90.0, 90.0)
# a small, realistic scan: 20 frames of 0.5 degree, 512x512 pixels of 0.1 mm at 100 mm, a few
# hundred spots per frame; -misset so no axis is special; a Gaussian crystal, since the side
# lobes of a square one become spots of their own in photon counts without the ADC offset,
# and the indexer then finds no lattice (seen with the CBF and NeXus counts)
ARGS = ["-cell", *map(str, CELL), "-misset", "10", "20", "30", "-default_F", "100", "-gauss_xtal", "-N", "10",
        "-lambda", "1",
        "-distance", "100", "-detpixels", "512", "-pixel", "0.1", "-osc", "0.5", "-phisteps", "5", "-seed", "1"]
NFRAMES = 20

DUMP = r"""
import json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
e = ExperimentListFactory.from_json_file(sys.argv[1], check_format=False)
out = []
for x in e:
    d, b = x.detector[0], x.beam
    r = dict(distance=d.get_distance(), pixel=list(d.get_pixel_size()), size=list(d.get_image_size()),
             centre=list(d.get_beam_centre_px(b.get_s0())), wavelength=b.get_wavelength(),
             s0=list(b.get_s0()), fast=list(d.get_fast_axis()), slow=list(d.get_slow_axis()),
             sweeps=len(e.imagesets()))
    if x.goniometer is not None:
        r["axis"] = list(x.goniometer.get_rotation_axis())
    if x.scan is not None:
        r["range"] = list(x.scan.get_image_range()); r["osc"] = list(x.scan.get_oscillation())
    if x.crystal is not None:
        c = x.crystal
        r["cell"] = list(c.get_unit_cell().parameters())
        r["real"] = [list(v) for v in c.get_real_space_vectors()]
    out.append(r)
print(json.dumps(out))
"""


def dials(cmd, cwd, *args):
    p = subprocess.run([cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    return p.stdout


def read_expt(path):
    p = subprocess.run(["/usr/bin/python3", "-c", DUMP, str(path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def lab_to_dials(exp, d):
    """The rotation M taking nbxp's lab frame to DIALS': it maps nbxp's fast, slow and beam
    directions onto those dxtbx reports."""
    g = exp.geom
    N = np.column_stack([np.asarray(g.fdet, float), np.asarray(g.sdet, float), np.asarray(g.beam, float)])
    s0 = np.asarray(d["s0"]) / np.linalg.norm(d["s0"])
    D = np.column_stack([d["fast"], d["slow"], s0])
    return D @ np.linalg.inv(N)


#: per format: the noise-image name, what dials.import reads, and its extra arguments
FORMATS = {
    "smv": dict(name="scan_#####.img", module=None),
    "cbf": dict(name="scan_#####.cbf", module="nbxp.io.cbf"),
    "nexus": dict(name="scan.nxs", module="nbxp.io.nexus"),
}


@pytest.fixture(scope="module", params=list(FORMATS))
def scan(request, tmp_path_factory):
    fmt = FORMATS[request.param]
    if fmt["module"]:
        pytest.importorskip(fmt["module"])
    d = tmp_path_factory.mktemp(f"dials_{request.param}")
    p = subprocess.run([sys.executable, "-m", "nbxp", *ARGS, "--frames", str(NFRAMES), "-noprogress", "-nopgm",
                        "-floatfile", "float_##.bin", "-intfile", "int_##.img", "-noisefile", fmt["name"]],
                       cwd=d, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    if "#" in fmt["name"]:
        stem, ext = fmt["name"].split("#####")
        files = [f"{stem}{i:05d}{ext}" for i in range(1, NFRAMES + 1)]
    else:
        files = [fmt["name"]]
    series = nbxp.prepare_series(nbxp.config_from_args(ARGS), frames=NFRAMES)
    return d, series, request.param, files


def test_dials_imports_one_sweep_with_the_geometry(scan):
    d, series, fmt, files = scan
    dials("dials.import", d, *files)
    [x] = read_expt(d / "imported.expt")
    g, exp = series.exp.geom, series.exp
    assert x["sweeps"] == 1
    assert x["distance"] == pytest.approx(g.distance * 1e3, abs=1e-6)
    assert x["pixel"] == pytest.approx([g.pixel_size * 1e3] * 2)
    assert x["size"] == [g.fpixels, g.spixels]
    assert x["wavelength"] == pytest.approx(exp.wavelength * 1e10)
    # the direct beam: the SMV reader's convention is half a pixel off nbxp's
    # (../shared/notes/dials.md); CBF and NeXus carry it exactly
    want = (g.Fbeam / g.pixel_size, g.Sbeam / g.pixel_size)
    tol = 0.5 + 1e-9 if fmt == "smv" else 1e-3
    assert abs(x["centre"][0] - want[0]) <= tol and abs(x["centre"][1] - want[1]) <= tol, (x["centre"], want)
    M = lab_to_dials(exp, x)
    np.testing.assert_allclose(M @ M.T, np.eye(3), atol=1e-9)  # the frames really are related by a rotation
    np.testing.assert_allclose(x["axis"], M @ np.asarray(exp.spindle_unit, float), atol=1e-6)
    assert x["range"] == [1, NFRAMES]
    assert x["osc"] == pytest.approx([math.degrees(series.phi0), math.degrees(series.osc)])


def test_dials_indexes_the_cell_and_orientation(scan):
    d, series, fmt, files = scan
    g, exp = series.exp.geom, series.exp
    extra = []
    if fmt == "smv":  # the exact beam centre (the SMV reader's is half a pixel off)
        extra.append(f"fast_slow_beam_centre={g.Fbeam / g.pixel_size:.6f},{g.Sbeam / g.pixel_size:.6f}")
    dials("dials.import", d, *files, *extra, "output.experiments=centred.expt")
    # photon counts without the ADC offset need a threshold (../shared/notes/dials.md)
    threshold = [] if fmt == "smv" else ["spotfinder.threshold.dispersion.global_threshold=40"]
    dials("dials.find_spots", d, "centred.expt", "nproc=2", "spotfinder.filter.min_spot_size=2", *threshold)
    # geometry fixed in refinement: it is known exactly; the cell and orientation come from the spots
    dials("dials.index", d, "centred.expt", "strong.refl", "unit_cell=" + ",".join(map(str, CELL)), "space_group=P1",
          "refinement.parameterisation.detector.fix=all", "refinement.parameterisation.beam.fix=all")
    [x] = read_expt(d / "indexed.expt")
    for got, want in zip(x["cell"][:3], CELL[:3]):
        assert abs(got / want - 1) <= 1e-3, x["cell"]
    for got, want in zip(x["cell"][3:], CELL[3:]):
        assert abs(got - want) <= 0.1, x["cell"]
    # orientation: nbxp's cell vectors at phi 0, in DIALS' frame, against the indexed ones (in P1
    # an indexer may flip the signs of two axes).  nanoBragg's phi sub-steps sit at the start
    # of their sub-intervals (phi_i + k*osc/phisteps), so the spots' centroids lie half a
    # sub-step before the frame centres DIALS assumes: the indexed crystal is the true one
    # turned by -phistep/2 (0.05 degrees here), which the second check resolves.
    M = lab_to_dials(exp, x)
    real = np.asarray(exp.cell_real, float) * 1e10
    half_step = spindle_rotation(np.asarray(exp.spindle_unit, float), -exp.sampling.phistep / 2)
    for R, tol in ((np.eye(3), 0.1), (half_step, 0.03)):
        ours = (M @ R @ real.T).T
        for v, w in zip(ours, np.asarray(x["real"])):
            c = abs(v @ w) / np.linalg.norm(v) / np.linalg.norm(w)
            assert math.degrees(math.acos(min(c, 1.0))) <= tol, (v, w, tol)


# ---------------------------------------------------------------- still shots

#: realistic stills index (../shared/notes/dials.md): Gaussian crystal, mosaicity, bandwidth
STILLS = ["-cell", *map(str, CELL), "-default_F", "100", "-gauss_xtal", "-N", "20", "-mosaic", "0.5",
          "-mosaic_dom", "10", "-dispersion", "0.5", "-dispsteps", "3", "-oversample", "2", "-fluence", "2e30",
          "-lambda", "1", "-distance", "100", "-detpixels", "768", "-pixel", "0.1", "-seed", "3"]
NSHOTS = 6
STILLS_PHIL = """
dispatch.hit_finder.minimum_number_of_reflections=10
dispatch.integrate=False
spotfinder.filter.min_spot_size=2
indexing.known_symmetry.unit_cell={cell}
indexing.known_symmetry.space_group=P1
refinement.parameterisation.beam.fix=all
refinement.parameterisation.detector.fix=all
output.output_dir=out
"""

DUMP_ALL = r"""
import glob, json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
out = []
for f in sorted(glob.glob(sys.argv[1] + "/*_refined.expt")):
    for x in ExperimentListFactory.from_json_file(f, check_format=False):
        d, b = x.detector[0], x.beam
        out.append(dict(real=[list(v) for v in x.crystal.get_real_space_vectors()], fast=list(d.get_fast_axis()),
                        slow=list(d.get_slow_axis()), s0=list(b.get_s0())))
print(json.dumps(out))
"""


def test_dials_indexes_still_shots_in_their_orientations(tmp_path):
    """Six SMV still shots in random orientations: dials.stills_process indexes them, and each
    indexed crystal is the orientation nbxp gave its shot (the nearest of the six truths,
    each truth matched once) to a fraction of a degree."""
    p = subprocess.run([sys.executable, "-m", "nbxp", *STILLS, "--stills", str(NSHOTS), "--orientation-seed", "4",
                        "-noprogress", "-nopgm", "-floatfile", "f_#.bin", "-intfile", "i_#.img",
                        "-noisefile", "still_#.img"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr
    series = nbxp.prepare_series(nbxp.config_from_args(STILLS), stills=NSHOTS, orientation_seed=4)
    g = series.exp.geom
    files = [f"still_{i}.img" for i in range(1, NSHOTS + 1)]
    dials("dials.import", tmp_path, *files, f"fast_slow_beam_centre={g.Fbeam / g.pixel_size:.6f},"
          f"{g.Sbeam / g.pixel_size:.6f}", "output.experiments=stills.expt")
    shots = read_expt(tmp_path / "stills.expt")
    # one experiment per shot, none with an oscillation (the SMV reader gives each a 1-image scan of width 0)
    assert len(shots) == NSHOTS and all(x.get("osc", [0.0, 0.0])[1] == 0.0 for x in shots)
    (tmp_path / "stub").mkdir()
    # Debian's cctbx lacks this compiled module; the stills indexer only imports it (dials.md)
    (tmp_path / "stub" / "xfel_mono_sim_ext.py").write_text("")
    (tmp_path / "out").mkdir()
    (tmp_path / "stills.phil").write_text(STILLS_PHIL.format(cell=",".join(map(str, CELL))))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "stub"))
    q = subprocess.run(["dials.stills_process", "stills.expt", "stills.phil", "mp.nproc=2"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert q.returncode == 0, q.stderr[-2000:]
    r = subprocess.run(["/usr/bin/python3", "-c", DUMP_ALL, str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    found = {tuple(np.round(np.ravel(c["real"]), 4)): c for c in json.loads(r.stdout)}  # distinct crystals
    assert len(found) >= NSHOTS - 1, len(found)  # most shots index
    M = lab_to_dials(series.exp, next(iter(found.values())))
    real = np.asarray(series.exp.cell_real, float) * 1e10
    truths = [(M @ series.frame_rotation(i) @ real.T).T for i in range(NSHOTS)]
    matched = []
    for c in found.values():
        w = np.asarray(c["real"])
        worst = [max(math.degrees(math.acos(min(1.0, abs(v @ u) / np.linalg.norm(v) / np.linalg.norm(u))))
                     for v, u in zip(t, w)) for t in truths]
        i = int(np.argmin(worst))
        matched.append(i)
        # measured: 0.15-0.43 degrees from about 30 spots per shot (the issue asks 0.2: not yet)
        assert worst[i] <= 0.5, worst
        assert sorted(worst)[1] > 10  # and far from every other shot's orientation
    assert len(set(matched)) == len(matched)


@pytest.mark.parametrize("fmt", ["nexus", "cbf"])
def test_cli_still_series_index_in_their_orientations(fmt, tmp_path):
    """``--stills`` from the command line, as one NeXus file and as CBF frames, with the
    ``--truth`` file written beside them: DIALS imports stills with the simulated geometry,
    most shots index, each within 0.2 degree of the orientation the truth gives it (the
    crystal of ../shared/notes/dials.md's stills section, 50 mosaic domains whose mean sits
    on the truth: tests/test_dials_formats.py checks that precondition)."""
    from tests.dataset_helpers import STILL_ARGS
    from tests.test_dials_formats import check_stills
    name = "shots.nxs" if fmt == "nexus" else "shot_#####.cbf"
    p = subprocess.run([sys.executable, "-m", "nbxp", *STILL_ARGS, "-seed", "3", "--stills", str(NSHOTS),
                        "--orientation-seed", "4", "-noprogress", "-nopgm", "-floatfile", "f_#.bin",
                        "-intfile", "i_#.img", "-noisefile", name, "--truth", "truth.expt"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr
    if fmt == "nexus":
        files, extra = [tmp_path / name], ()
    else:  # a miniCBF header always describes a scan: DIALS is told these are stills
        files = [tmp_path / f"shot_{i:05d}.cbf" for i in range(1, NSHOTS + 1)]
        extra = ("convert_sequences_to_stills=True",)
    check_stills(files, tmp_path, tmp_path / "truth.expt", import_args=extra)
