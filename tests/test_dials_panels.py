"""DIALS and dxtbx, the real clients, against nbxp's geometry files and multi-panel outputs.

* dxtbx builds a hierarchical detector and writes its JSON; nbxp's reader resolves the same
  global panel frames dxtbx reports.
* A one-panel ``.expt`` that ``dials.import`` made of an nbxp NeXus image, given back to
  nbxp with ``--geometry``, reproduces the image of the flags that made it (the parity
  rule), for a default detector and a two-theta/rotated one.
* A detector of 2x2 modules with gaps and small tilts (CrystFEL ``.geom``), rendered by the
  command line as a 20-frame NeXus scan, imports in DIALS with the input's panel geometry
  and indexes with the simulated cell and orientation.

Skipped where ``dials.import`` is not on PATH; about two minutes on two busy cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.dials_helpers import DIALS_IMPORT, FIX_GEOMETRY, SPOTFINDER, cell_errors, import_find_index, \
    misorientation, real_space, run

pytestmark = [pytest.mark.slow, pytest.mark.skipif(DIALS_IMPORT is None, reason="DIALS (dials.import) is not on PATH")]

#: dxtbx's view of an experiment list: every panel's global frame, beam and axis
DUMP = r"""
import json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
from dxtbx.model import Detector
if sys.argv[1] == "detector":
    d = Detector.from_dict(json.load(open(sys.argv[2])))
    beam = gonio = None
else:
    x = ExperimentListFactory.from_json_file(sys.argv[2], check_format=False)[0]
    d, beam, gonio = x.detector, x.beam, x.goniometer
out = {"panels": [dict(name=p.get_name(), origin=list(p.get_origin()), fast=list(p.get_fast_axis()),
                       slow=list(p.get_slow_axis()), size=list(p.get_image_size()),
                       pixel=list(p.get_pixel_size())) for p in d]}
if beam is not None:
    out["direction"] = list(beam.get_sample_to_source_direction()); out["wavelength"] = beam.get_wavelength()
if gonio is not None:
    out["axis"] = list(gonio.get_rotation_axis())
print(json.dumps(out))
"""

#: a dxtbx detector with a two-level hierarchy (quadrants of 2 panels, turned and tilted)
BUILD = r"""
import json, math, sys
from dxtbx.model import Detector
from scitbx import matrix
d = Detector()
root = d.hierarchy()
root.set_local_frame((1, 0, 0), (0, -1, 0), (-20.0, 21.0, -150.0))
k = 0
for q in range(2):
    g = root.add_group()
    a = math.radians(90 * q + 3)
    g.set_local_frame((math.cos(a), math.sin(a), 0.0), (-math.sin(a), math.cos(a), 0.0), (5.0 + 30 * q, 6.0, 1.5 * q))
    for m in range(2):
        p = g.add_panel()
        t = math.radians(2.0 * (m + 1))
        p.set_local_frame((math.cos(t), 0.0, math.sin(t)), (0.0, 1.0, 0.0), (0.5, 12.0 * m + 0.25, -0.2 * m))
        p.set_image_size((40, 30)); p.set_pixel_size((0.172, 0.172)); p.set_name("q%dm%d" % (q, m))
        k += 1
json.dump(d.to_dict(), open(sys.argv[1], "w"))
"""


def dxtbx(script, *args):
    p = subprocess.run(["/usr/bin/python3", "-c", script, *map(str, args)], capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout) if p.stdout.strip() else None


def nbxp_cli(args, cwd):
    p = subprocess.run([sys.executable, "-m", "nbxp", *args, "-noprogress"], cwd=cwd, capture_output=True,
                       text=True, timeout=1200)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:])
    return p.stdout


def test_reader_resolves_a_dxtbx_hierarchy_as_dxtbx_does(tmp_path):
    from nbxp.io.geometry import read_geometry
    dxtbx(BUILD, tmp_path / "det.json")
    ref = dxtbx(DUMP, "detector", tmp_path / "det.json")
    spec = read_geometry(str(tmp_path / "det.json"))  # identity frame: nbxp's vectors are DIALS'
    assert len(spec.panels) == len(ref["panels"]) == 4
    for p, r in zip(spec.panels, ref["panels"]):
        assert p.name == r["name"]
        np.testing.assert_allclose(np.asarray(p.origin) * 1e3, r["origin"], atol=1e-9)
        np.testing.assert_allclose(p.fast, r["fast"], atol=1e-12)
        np.testing.assert_allclose(p.slow, r["slow"], atol=1e-12)
        assert [p.fpixels, p.spixels] == r["size"] and p.pixel_size * 1e3 == pytest.approx(r["pixel"][0])


#: the crystal and sampling of the one-panel round trip (the detector flags come per case)
XTAL = ["-cell", "50", "60", "70", "90", "90", "90", "-misset", "10", "20", "30", "-default_F", "100", "-gauss_xtal",
        "-N", "10", "-lambda", "1.2", "-oversample", "1", "-phisteps", "2", "-osc", "0.5", "-seed", "1"]
DETECTORS = {
    "default": ["-distance", "100", "-detpixels_f", "200", "-detpixels_s", "160", "-pixel", "0.2"],
    "twotheta": ["-distance", "90", "-detpixels_f", "200", "-detpixels_s", "160", "-pixel", "0.2", "-twotheta", "12",
                 "-detector_rotx", "1.5", "-detector_rotz", "-2", "-Xbeam", "12", "-Ybeam", "19"],
}


@pytest.mark.parametrize("det", list(DETECTORS))
def test_dials_import_of_nbxp_nexus_reproduces_the_flags_image(tmp_path, det):
    flags = [*XTAL, *DETECTORS[det]]
    nbxp_cli([*flags, "--frames", "1", "-nopgm", "-floatfile", "flags_#.bin", "-intfile", "int_#.img",
              "-noisefile", "scan.nxs"], tmp_path)
    run(["dials.import", tmp_path / "scan.nxs", "output.experiments=imported.expt"], tmp_path)
    ref = dxtbx(DUMP, "expt", tmp_path / "imported.expt")
    out = nbxp_cli([*XTAL, "--geometry", "imported.expt", "-floatfile", "geometry.bin", "-nonoise", "-nopgm",
                    "-intfile", "geometry.h5"], tmp_path)
    assert "from imported.expt" in out and "polarization: from the flags" in out
    x = np.fromfile(tmp_path / "geometry.bin", dtype=np.float32).astype(np.float64)
    y = np.fromfile(tmp_path / "flags_1.bin", dtype=np.float32).astype(np.float64)
    assert x.shape == y.shape
    maxrel = float(np.abs(x - y).max() / np.abs(y).max())
    corr = float(np.corrcoef(x, y)[0, 1])
    print(f"{det}: maxrel {maxrel:.3g}, corr {corr:.12f}, sum ratio {x.sum() / y.sum():.9f}")
    assert maxrel <= 1e-5, (maxrel, corr)  # the parity rule's "exact"
    # and the file nbxp writes from that geometry holds it back: dxtbx reads the same panel
    run(["dials.import", tmp_path / "geometry.h5", "output.experiments=again.expt"], tmp_path)
    again = dxtbx(DUMP, "expt", tmp_path / "again.expt")
    for a, b in zip(again["panels"], ref["panels"]):
        np.testing.assert_allclose(a["origin"], b["origin"], atol=1e-6)
        np.testing.assert_allclose(a["fast"], b["fast"], atol=1e-9)
        np.testing.assert_allclose(a["slow"], b["slow"], atol=1e-9)


#: 2x2 modules of 240x240 pixels of 0.1 mm with gaps of 2-3 mm, each turned a little in its
#: plane (0.3-0.6 degree) and tilted 1-2 degrees out of it, at 100 mm with 1 A
MODULES = """
photon_energy = 12398.42 eV
clen = 0.100 m
res = 10000
{panels}
"""
PANEL = """
{n}/min_fs = 0
{n}/max_fs = 239
{n}/min_ss = {ss0}
{n}/max_ss = {ss1}
{n}/fs = {fs}
{n}/ss = {ss}
{n}/corner_x = {cx}
{n}/corner_y = {cy}
{n}/coffset = {co}
"""


def module_geometry() -> str:
    blocks = []
    layout = [(-252, -255, 0.3, 1.0, 0.0), (13, -251, -0.4, 0.0, 1.5), (-249, 12, 0.6, -1.2, 0.0),
              (15, 14, -0.5, 0.0, -2.0)]
    for k, (cx, cy, rot, tilt_y, tilt_x) in enumerate(layout):
        a, ty, tx = np.radians(rot), np.radians(tilt_y), np.radians(tilt_x)
        # in-plane rotation, then a tilt about the module's slow (y) or fast (x) direction
        f = np.array([np.cos(a), np.sin(a), 0.0])
        s = np.array([-np.sin(a), np.cos(a), 0.0])
        f = f * np.cos(ty) + np.array([0, 0, 1.0]) * np.sin(ty)
        s = s * np.cos(tx) + np.array([0, 0, 1.0]) * np.sin(tx)
        s = s - (s @ f) * f
        f, s = f / np.linalg.norm(f), s / np.linalg.norm(s)
        vec = lambda v: " ".join(f"{c:+.10f}{ax}" for c, ax in zip(v, "xyz"))  # noqa: E731
        blocks.append(PANEL.format(n=f"m{k}", ss0=240 * k, ss1=240 * k + 239, fs=vec(f), ss=vec(s), cx=cx, cy=cy,
                                   co=0.001 * k))
    return textwrap.dedent(MODULES).format(panels="".join(textwrap.dedent(b) for b in blocks))


SCAN = ["-cell", "50", "60", "70", "90", "90", "90", "-misset", "10", "20", "30", "-default_F", "100", "-gauss_xtal",
        "-N", "10", "-oversample", "1", "-osc", "0.5", "-phisteps", "5", "-seed", "1"]
CELL = (50.0, 60.0, 70.0, 90.0, 90.0, 90.0)


def test_multi_panel_nexus_scan_imports_and_indexes(tmp_path):
    from nbxp.io.geometry import read_geometry
    from nbxp.models import lab_to_dials
    (tmp_path / "modules.geom").write_text(module_geometry())
    out = nbxp_cli([*SCAN, "--geometry", "modules.geom", "--frames", "20", "-floatfile", "float.h5", "-nopgm",
                    "-intfile", "int.h5", "-noisefile", "scan.nxs", "--truth", "truth.expt"], tmp_path)
    assert "max_I" in out and "(panel m" in out
    res = import_find_index([tmp_path / "scan.nxs"], tmp_path, unit_cell=CELL, find_args=SPOTFINDER,
                            index_args=FIX_GEOMETRY)
    imported = dxtbx(DUMP, "expt", tmp_path / "imported.expt")
    # the input's panels in DIALS' frame (the reader with an identity frame)
    want = read_geometry(str(tmp_path / "modules.geom")).panels
    assert len(imported["panels"]) == 4
    worst_o = worst_a = 0.0
    for p, d in zip(want, imported["panels"]):
        worst_o = max(worst_o, float(np.abs(np.asarray(p.origin) * 1e3 - d["origin"]).max()))
        worst_a = max(worst_a, float(np.abs(np.asarray(p.fast) - d["fast"]).max()),
                      float(np.abs(np.asarray(p.slow) - d["slow"]).max()))
    assert worst_o <= 1e-3 and worst_a <= 1e-6, (worst_o, worst_a)
    np.testing.assert_allclose(imported["direction"], (0, 0, 1), atol=1e-9)
    assert imported["wavelength"] == pytest.approx(1.0, rel=1e-6)
    assert lab_to_dials((1, 0, 0), (0, 0, 1), (0, 0, 1)) @ np.array([0, 0, 1.0]) == pytest.approx(imported["axis"])
    assert res["indexed"] is not None, res["index_log"][-3000:]
    truth = json.loads((tmp_path / "truth.expt").read_text())
    assert len(truth["detector"][0]["panels"]) == 4
    found, true = real_space(res["indexed"]), real_space(truth)
    rel, ang = cell_errors(found, true)
    mis = misorientation(found, true)
    print(f"multi-panel scan: origins {worst_o:.2g} mm, axes {worst_a:.2g}; cell {100 * rel:.3f}% / {ang:.3f} deg, "
          f"orientation {mis:.3f} deg")
    assert rel <= 1e-3 and ang <= 0.1 and mis <= 0.1


#: cctbx's CrystFEL reader (xfel/euxfel/read_geom.py, used by its .geom -> NeXus converter,
#: which writes these vectors unchanged as NeXus/McStas vectors with clen as a translation
#: along +z); it needs the rigid groups before the panels
CCTBX_READ = r"""
import json, sys
sys.path.insert(0, "/usr/lib/python3/dist-packages/xfel/euxfel")
from read_geom import read_geom
h = read_geom(sys.argv[1])
out = {"clen_mm": h.detector_distance, "panels": {}}
def walk(node):
    for name, child in node.items():
        if isinstance(child, dict) and "fast" in child:
            out["panels"][name] = [list(child["origin"]), list(child["fast"]), list(child["slow"])]
        else:
            walk(child)
walk(h)
print(json.dumps(out))
"""


def test_crystfel_frame_agrees_with_cctbx_converter(tmp_path):
    """nbxp's CrystFEL panels (DIALS' frame) are diag(-1, 1, -1) times what cctbx's reader
    gives in CrystFEL's frame (with clen added along z): CrystFEL's frame is McStas'."""
    from nbxp.io.geometry import read_geometry
    from nbxp.models import NEXUS_FROM_DIALS
    from tests.test_geometry_files import JUNGFRAU
    probe = subprocess.run(["/usr/bin/python3", "-c", "import xfel.euxfel"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("cctbx's xfel package is not installed")
    lines = [x for x in textwrap.dedent(JUNGFRAU).splitlines() if not x.startswith(("rigid", "data", "dim", "mask",
                                                                                      "adu", "photon"))]
    from nbxp.io.geometry import _Line, _vector
    for i, x in enumerate(lines):  # cctbx's parser wants every component, space separated
        if x.split("=")[0].strip().endswith(("/fs", "/ss")):
            key, v = x.split("=")
            c = _vector("", key, _Line(v.strip(), i))
            lines[i] = f"{key}= {c[0]:+.6f}x {c[1]:+.6f}y {c[2]:+.6f}z"
    lines = ["rigid_group_q0 = m0,m1", "rigid_group_q1 = m2,m3", "rigid_group_collection_all = q0,q1"] + \
        [x for x in lines if "mask_edge" not in x]
    path = tmp_path / "jf.geom"
    path.write_text("\n".join(lines) + "\n")
    ref = dxtbx(CCTBX_READ, path)
    mine = {p.name: p for p in read_geometry(str(path)).panels}
    assert set(mine) == set(ref["panels"]) == {"m0", "m1", "m2", "m3"}
    for name, (o, f, s) in ref["panels"].items():
        p = mine[name]
        np.testing.assert_allclose(np.asarray(p.origin) * 1e3, NEXUS_FROM_DIALS @ (np.asarray(o) + [0, 0, ref["clen_mm"]]),
                                   atol=1e-9)
        np.testing.assert_allclose(p.fast, NEXUS_FROM_DIALS @ np.asarray(f), atol=1e-12)
        np.testing.assert_allclose(p.slow, NEXUS_FROM_DIALS @ np.asarray(s), atol=2e-6)  # nbxp re-orthogonalises
