"""Geometry files (``--geometry``): CrystFEL ``.geom`` and DIALS/dxtbx JSON read into panels,
checked against geometry computed independently here; multi-panel runs through the command
line (spot positions predicted by plane intersection in NumPy), their outputs read back with
h5py, and bad input refused in one line with nothing written.  No DIALS needed
(tests/test_dials_panels.py runs DIALS on these files)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nbxp
from nbxp.experiment import build_experiment
from nbxp.flags import UsageError, parse_args
from nbxp.io import InputError
from nbxp.io.geometry import read_geometry
from nbxp.models import lab_to_dials

#: CrystFEL's lab frame (z along the beam, y up, x completing) in nanoBragg's MOSFLM frame
#: (beam +x, y up, spindle +z): up stays up, the beam is the beam, so x_CrystFEL = up x beam
#: = (0, 1, 0) x (1, 0, 0) = -z_MOSFLM.  v_mosflm = C @ v_crystfel
C = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
MOSFLM_R = lab_to_dials((1, 0, 0), (0, 0, 1), (0, 0, 1))

#: a flat 4-panel slab: four 60x30 panels, stacked along ss in the data, side by side in
#: pairs with gaps in the lab, 0.2 mm pixels (res 5000) at 60 mm, 12.4 keV
FOUR = """
; 4-panel slab test geometry
photon_energy = 12398.42 eV
clen = 60 mm
res = 5000
adu_per_eV = 0.00025
p0/min_fs = 0
p0/max_fs = 59
p0/min_ss = 0
p0/max_ss = 29
p0/fs = +1.0x
p0/ss = +1.0y
p0/corner_x = -62
p0/corner_y = -32
p1/min_fs = 0
p1/max_fs = 59
p1/min_ss = 30
p1/max_ss = 59
p1/fs = +1.0x
p1/ss = +1.0y
p1/corner_x = 2
p1/corner_y = -32
p2/min_fs = 0
p2/max_fs = 59
p2/min_ss = 60
p2/max_ss = 89
p2/fs = +1.0x
p2/ss = +1.0y
p2/corner_x = -62
p2/corner_y = 2
p3/min_fs = 0
p3/max_fs = 59
p3/min_ss = 90
p3/max_ss = 119
p3/fs = +1.0x
p3/ss = +1.0y
p3/corner_x = 2
p3/corner_y = 2
bad_beamstop/min_x = -3
bad_beamstop/max_x = 3
bad_beamstop/min_y = -3
bad_beamstop/max_y = 3
bad_row/min_fs = 0
bad_row/max_fs = 59
bad_row/min_ss = 45
bad_row/max_ss = 45
bad_row/panel = p1
group_all = p0,p1,p2,p3
"""

#: a Jungfrau-like layout written for these tests: 2x2 modules of 64x32 pixels of 0.3 mm
#: (res 3333.33) with gaps, half of them turned by 180 degrees as in real Jungfrau
#: geometries, one turned 90 degrees, small in-plane rotations (CSPAD-style fs/ss), one
#: module tilted out of the plane (a z component) and per-module coffsets; rigid groups,
#: data-location keys and a no_index-free layout as real files have
JUNGFRAU = """
; Jungfrau-like 4-module detector (written for nbxp's tests)
photon_energy = 12.39842 keV
clen = 0.065
res = 3333.3333
adu_per_photon = 1
data = /entry/data/data
dim0 = %
dim1 = ss
dim2 = fs
mask_good = 0x0
mask_bad = 0xffff
rigid_group_m = m0,m1
rigid_group_collection_all = m
m0/min_fs = 0
m0/max_fs = 63
m0/min_ss = 0
m0/max_ss = 31
m0/fs = +0.999998x +0.002000y
m0/ss = -0.002000x +0.999998y
m0/corner_x = -70.0
m0/corner_y = 3.0
m0/coffset = 0.0
m1/min_fs = 0
m1/max_fs = 63
m1/min_ss = 32
m1/max_ss = 63
m1/fs = -1.0x
m1/ss = -1.0y
m1/corner_x = 69.5
m1/corner_y = 36.0
m1/coffset = 0.002
m2/min_fs = 0
m2/max_fs = 63
m2/min_ss = 64
m2/max_ss = 95
m2/fs = -0.999800x +0.000000y +0.019996z
m2/ss = +0.0x -1.0y
m2/corner_x = -2.0
m2/corner_y = -4.0
m2/coffset = -0.001
m3/min_fs = 0
m3/max_fs = 63
m3/min_ss = 96
m3/max_ss = 127
m3/fs = +0.0x +1.0y
m3/ss = -1.0x +0.0y
m3/corner_x = 4.0
m3/corner_y = -70.0
m3/mask_edge_pixels = 1
"""

CRYSTAL = ["-cell", "60", "60", "60", "90", "90", "90", "-misset", "10", "20", "30", "-default_F", "100",
           "-gauss_xtal", "-N", "8", "-oversample", "1", "-seed", "5"]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def crystfel_panels(text):
    """Each panel of a .geom text as (origin m, fast, slow, nf, ns, pixel) in the MOSFLM frame,
    parsed here with nothing but the crystfel_geometry(5) definitions."""
    glob, panels = {}, {}
    for line in text.splitlines():
        line = line.split(";")[0].strip()
        if "=" not in line:
            continue
        k, v = (t.strip() for t in line.split("=", 1))
        if "/" in k:
            name, key = k.split("/")
            if not name.startswith(("bad", "rigid")):
                panels.setdefault(name, dict(glob))[key] = v
        else:
            glob[k] = v
    clen = {"60 mm": 0.060, "0.065": 0.065}[glob["clen"]]
    out = {}
    for name, d in panels.items():
        px = 1.0 / float(d["res"])
        vec = {}
        for key in ("fs", "ss"):
            comp = dict.fromkeys("xyz", 0.0)
            for term in d[key].split():
                comp[term[-1]] = float(term[:-1]) if term[:-1] not in ("+", "-", "") else float(term[:-1] + "1")
            v = np.array([comp["x"], comp["y"], comp["z"]])
            vec[key] = C @ (v / np.linalg.norm(v))
        corner = np.array([float(d["corner_x"]) * px, float(d["corner_y"]) * px, clen + float(d.get("coffset", 0))])
        out[name] = (C @ corner, vec["fs"], vec["ss"], int(d["max_fs"]) - int(d["min_fs"]) + 1,
                     int(d["max_ss"]) - int(d["min_ss"]) + 1, px)
    return out


# ------------------------------------------------------------------------------ readers

@pytest.mark.parametrize("text", [FOUR, JUNGFRAU], ids=["four", "jungfrau"])
def test_crystfel_panels_match_the_definitions(tmp_path, text):
    path = write(tmp_path, "d.geom", text)
    spec = read_geometry(str(path), to_dials=MOSFLM_R)
    want = crystfel_panels(textwrap.dedent(text))
    assert [p.name for p in spec.panels] == list(want)
    for p in spec.panels:
        o, f, s, nf, ns, px = want[p.name]
        np.testing.assert_allclose(p.origin, o, atol=1e-12)
        np.testing.assert_allclose(p.fast, f, atol=1e-5)  # 1e-5: the slow axis is made exactly perpendicular
        np.testing.assert_allclose(p.slow, s, atol=1e-5)
        assert abs(np.dot(p.fast, p.slow)) < 1e-12
        assert (p.fpixels, p.spixels) == (nf, ns)
        assert p.pixel_size == pytest.approx(px, rel=1e-12)
    np.testing.assert_allclose(spec.beam, (1.0, 0.0, 0.0), atol=1e-15)  # CrystFEL's +z is MOSFLM's beam
    assert spec.wavelength == pytest.approx(1.0e-10, rel=1e-5)  # 12398.42 eV
    assert spec.spindle is None


def test_crystfel_bad_regions_and_defaults(tmp_path):
    spec = read_geometry(str(write(tmp_path, "four.geom", FOUR)), to_dials=MOSFLM_R)
    masks = {p.name: p.mask for p in spec.panels}
    # the fs/ss bad row: data row 45 is panel p1's row 15, all 60 pixels
    assert not masks["p1"][15].any()
    # the x/y beam stop: pixel centres within 3 pixels of the lab origin; p0's pixel (fs, ss)
    # has its centre at x = -62 + fs + 0.5, y = -32 + ss + 0.5: only fs 59, ss 29 (-2.5, -2.5)
    bad0 = np.argwhere(~masks["p0"])
    assert {tuple(int(v) for v in x) for x in bad0} == {(29, 59)}
    assert (~masks["p3"]).sum() == 1 * 1  # x = 2.5, y = 2.5 only
    assert spec.adu_per_photon == pytest.approx(0.00025 * 12398.42, rel=1e-6)
    assert any("is nbxp's slab" in n for n in spec.notes)
    jf = read_geometry(str(write(tmp_path, "jf.geom", JUNGFRAU)))
    m3 = jf.panels[3].mask
    assert not m3[0].any() and not m3[-1].any() and not m3[:, 0].any() and m3[1:-1, 1:-1].all()


def test_crystfel_global_defaults_only_for_later_panels(tmp_path):
    text = """
    clen = 0.1 m
    res = 5000
    a/min_fs = 0
    a/max_fs = 9
    a/min_ss = 0
    a/max_ss = 9
    a/fs = x
    a/ss = y
    a/corner_x = 0
    a/corner_y = 0
    res = 10000
    coffset = 1 mm
    b/min_fs = 0
    b/max_fs = 9
    b/min_ss = 10
    b/max_ss = 19
    b/fs = x
    b/ss = y
    b/corner_x = 0
    b/corner_y = 0
    """
    a, b = read_geometry(str(write(tmp_path, "g.geom", text))).panels
    assert a.pixel_size == pytest.approx(2e-4) and b.pixel_size == pytest.approx(1e-4)
    # clen is the whole detector's (crystfel_geometry(5): given once), wherever it stands
    late = textwrap.dedent(text).replace("clen = 0.1 m\n", "") + "clen = 100 mm\n"
    a2, b2 = read_geometry(str(write(tmp_path, "late.geom", late))).panels
    assert (a2.origin, b2.origin) == (a.origin, b.origin)
    # identity to_dials: nbxp's frame is DIALS'; CrystFEL z (0.1 m, + coffset for b) is -z there
    assert a.origin[2] == pytest.approx(-0.1) and b.origin[2] == pytest.approx(-0.101)


#: (lines replacing FOUR's p2 block start, message expected)
BAD = {
    "unknown key": ("p2/min_fx = 0", "line {n}: unknown panel key 'p2/min_fx'"),
    "zero vector": ("p2/fs = 0.0x +0.0y", "p2: fs must be a unit vector"),
    "max below min": ("p2/max_fs = -1", "line {n}: panel p2: max_fs -1 < min_fs 0"),
    "bad vector": ("p2/ss = up", "ss: expected a vector"),
    "clen path": ("clen = /LCLS/detector_1/EncoderValue", "clen names a data-file location"),
    "mixed bad region": ("bad_row/min_x = 1", "mixes x/y and fs/ss"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_crystfel_bad_input_names_the_line(tmp_path, case):
    line, msg = BAD[case]
    lines = textwrap.dedent(FOUR).splitlines()
    key = line.split("=")[0].strip()
    if key == "clen":
        at = [i for i, x in enumerate(lines) if x.startswith("clen")][0]
        lines[at] = line
        msg = f"line {at + 1}: " + msg
    else:
        at = lines.index("p2/min_fs = 0")
        same = [i for i, x in enumerate(lines) if x.split("=")[0].strip() == key]
        if same:
            at = same[0]
            lines[at] = line
        else:
            lines.insert(at, line)
    msg = msg.format(n=at + 1)
    path = tmp_path / "bad.geom"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        read_geometry(str(path))
    assert msg in str(e.value) and str(path) in str(e.value)


def test_crystfel_missing_res_names_the_panel(tmp_path):
    text = "clen = 0.1\nq/min_fs = 0\nq/max_fs = 3\nq/min_ss = 0\nq/max_ss = 3\nq/fs = x\nq/ss = y\n" \
           "q/corner_x = 0\nq/corner_y = 0\n"
    with pytest.raises(InputError, match=r"panel q \(line 2\): no 'res'"):
        read_geometry(str(write(tmp_path, "r.geom", text)))


def dxtbx_node(fast, slow, origin, **kw):
    d = {"name": kw.pop("name", ""), "type": "", "fast_axis": list(fast), "slow_axis": list(slow),
         "origin": list(origin), "raw_image_offset": [0, 0], "image_size": kw.pop("image_size", [0, 0]),
         "pixel_size": kw.pop("pixel_size", [0.0, 0.0]), "trusted_range": [0.0, 0.0], "thickness": 0.0,
         "material": "", "mu": 0.0, "identifier": "", "mask": [], "gain": 1.0, "pedestal": 0.0,
         "px_mm_strategy": {"type": "SimplePxMmStrategy"}}
    d.update(kw)
    return d


def test_dxtbx_hierarchy_is_composed_as_dxtbx_does(tmp_path):
    """The detector dxtbx 3.11 wrote for root frame ((1,0,0), (0,-1,0), (-10,10,-100)), a group
    ((0,1,0), (1,0,0), (5,6,7)) and a panel ((1,0,0), (0,1,0), (1,2,3)) in it (local frames):
    dxtbx's own Panel.get_fast_axis/get_slow_axis/get_origin gave (0,-1,0), (1,0,0),
    (-3,3,-104) (tests/test_dials_panels.py repeats this with dxtbx itself)."""
    # mask rectangle (f0, f1, s0, s1), half-open: dxtbx 3.11's Panel.add_mask(1, 3, 2, 4) on a
    # 6x5 panel gave get_untrusted_rectangle_mask() False at rows 2-3, columns 1-2
    panel = dxtbx_node((1, 0, 0), (0, 1, 0), (1, 2, 3), name="a", image_size=[10, 20], pixel_size=[0.1, 0.1],
                       mask=[[1, 3, 2, 4]])
    group = dxtbx_node((0, 1, 0), (1, 0, 0), (5, 6, 7), children=[{"panel": 0}])
    root = dxtbx_node((1, 0, 0), (0, -1, 0), (-10, 10, -100), children=[group])
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"panels": [panel], "hierarchy": root}))
    [p] = read_geometry(str(path)).panels
    np.testing.assert_allclose(p.fast, (0, -1, 0), atol=1e-15)
    np.testing.assert_allclose(p.slow, (1, 0, 0), atol=1e-15)
    np.testing.assert_allclose(p.origin, (-3e-3, 3e-3, -104e-3), atol=1e-15)
    assert (p.fpixels, p.spixels, p.pixel_size) == (10, 20, pytest.approx(1e-4))
    assert {tuple(int(v) for v in x) for x in np.argwhere(~p.mask)} == {(2, 1), (2, 2), (3, 1), (3, 2)}


def test_expt_round_trip_through_the_truth_writer(tmp_path):
    """A multi-panel experiment written as .expt by nbxp (all panels) reads back as the same
    panels in nbxp's frame, for another convention's frame too."""
    from nbxp.io.expt import experiment_list
    spec = read_geometry(str(write(tmp_path, "jf.geom", JUNGFRAU)), to_dials=MOSFLM_R)
    for conv in ("-mosflm", "-xds"):
        args = [*CRYSTAL, "--geometry", str(tmp_path / "jf.geom"), conv]
        cfg = nbxp.config_from_args(args)
        exp = build_experiment(cfg, xp=np, dtype=np.float64)
        doc = experiment_list(exp, start_angle=0.0, angle_increment=0.01, nframes=1)
        assert len(doc["detector"][0]["panels"]) == 4
        (tmp_path / "t.expt").write_text(json.dumps(doc))
        R = lab_to_dials(*(np.asarray(v) for v in ((1, 0, 0), (0, 0, 1), (0, 0, 1)))) if conv == "-mosflm" \
            else lab_to_dials((0, 0, 1), (1, 0, 0), (1, 0, 0))
        back = read_geometry(str(tmp_path / "t.expt"), to_dials=R)
        for p, q in zip(cfg.detector.panels, back.panels):
            np.testing.assert_allclose(q.origin, p.origin, atol=1e-15)
            np.testing.assert_allclose(q.fast, p.fast, atol=1e-15)
            np.testing.assert_allclose(q.slow, p.slow, atol=1e-15)
        np.testing.assert_allclose(back.beam, cfg.beam.beam_vector, atol=1e-15)
        assert back.wavelength == pytest.approx(cfg.beam.wavelength, rel=1e-15)
        if conv == "-mosflm":  # the file's frame is DIALS': MOSFLM's and DIALS' x/y/z differ
            np.testing.assert_allclose(np.asarray(spec.panels[0].origin), cfg.detector.panels[0].origin, atol=1e-15)


# ------------------------------------------------------------------------------ flags

def test_detector_flags_with_geometry_are_refused(tmp_path):
    g = str(write(tmp_path, "four.geom", FOUR))
    for flag in (["-distance", "100"], ["-detpixels", "512"], ["-Xbeam", "10"], ["-twotheta", "5"],
                 ["-pixel", "0.1"], ["-detector_rotx", "1"], ["-fdet_vector", "0", "0", "1"], ["-curved_det"]):
        with pytest.raises(UsageError, match=rf"^{flag[0]} and --geometry: "):
            parse_args([*CRYSTAL, "--geometry", g, *flag])
    # the beam and the spindle may come from flags; they win and the printout says so
    p = parse_args([*CRYSTAL, "--geometry", g, "-lambda", "1.5"])
    assert p.config.beam.wavelength == pytest.approx(1.5e-10)
    assert any("1.5 A: from -lambda (the file says 1 A)" in line for line in p.state.geometry_lines)
    p = parse_args([*CRYSTAL, "--geometry", g])
    assert p.config.beam.wavelength == pytest.approx(1.0e-10, rel=1e-5)
    assert any("from " + g in line and "wavelength" in line for line in p.state.geometry_lines)


def run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "nbxp", *args, "-noprogress"], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("case", ["unknown key", "detector flag", "smv", "cbf", "inconsistent", "zero vector",
                                  "missing res"])
def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path, case):
    text, extra = FOUR, []
    if case == "unknown key":
        text = FOUR + "p3/colour = blue\n"
    elif case == "inconsistent":
        text = FOUR.replace("p3/max_ss = 119", "p3/max_ss = 80")
    elif case == "zero vector":
        text = FOUR.replace("p2/ss = +1.0y", "p2/ss = 0y")
    elif case == "missing res":
        text = FOUR.replace("res = 5000", "").replace("p0/fs = +1.0x", "p0/fs = +1.0x\np0/res = 5000")
    elif case == "detector flag":
        extra = ["-distance", "80"]
    elif case == "smv":
        extra = ["-intfile", "int.img"]
    else:
        extra = ["--frames", "2", "-osc", "0.5", "-noisefile", "scan_#.cbf"]
    write(tmp_path, "d.geom", text)
    before = set(p.name for p in tmp_path.iterdir())
    r = run_cli([*CRYSTAL, "--geometry", "d.geom", *extra], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbxp: error: "), r.stderr
    want = {"unknown key": f"line {len(textwrap.dedent(text).splitlines())}: unknown panel key 'p3/colour'", "inconsistent": "max_ss 80 < min_ss 90",
            "detector flag": "-distance and --geometry", "smv": "-intfile: int.img: SMV holds one panel",
            "cbf": "-noisefile: scan_#.cbf: CBF holds one panel", "zero vector": "panel p2: ss must be a unit vector",
            "missing res": f"panel p1 (line {textwrap.dedent(text).splitlines().index('p1/min_fs = 0') + 1}): "
                           "no 'res'"}[case]
    assert want in lines[0]
    assert set(p.name for p in tmp_path.iterdir()) == before


# ------------------------------------------------------------------------------ rendering

def brightest_spots(images, panels, cell_real, wavelength, beam):
    """For each panel: its brightest pixel, the reflection the independent geometry puts
    there (nearest integer hkl), and where that reflection's ray meets the panel (plane
    intersection): the maximum of a spot lies where the Ewald sphere passes closest to the
    reciprocal-lattice point, along k_in + q_hkl."""
    out = []
    A = np.asarray(cell_real, dtype=float)  # rows a, b, c (m): h = A @ q
    beam = np.asarray(beam, float)
    for img, (o, f, s, nf, ns, px) in zip(images, panels):
        assert img.shape == (ns, nf)
        j, i = np.unravel_index(int(np.argmax(img)), img.shape)
        pos = o + (i + 0.5) * px * f + (j + 0.5) * px * s
        q = (pos / np.linalg.norm(pos) - beam) / wavelength
        h = A @ q
        hkl = np.rint(h)
        k = beam / wavelength + np.linalg.solve(A, hkl)
        u = k / np.linalg.norm(k)
        a, b, _ = np.linalg.solve(np.column_stack([f, s, -u]), -o)
        out.append(dict(peak=(i + 0.5, j + 0.5), frac=float(np.max(np.abs(h - hkl))), hkl=hkl,
                        predicted=(a / px, b / px), value=float(img[j, i]), median=float(np.median(img))))
    return out


@pytest.mark.parametrize("text", [FOUR, JUNGFRAU], ids=["four", "jungfrau"])
def test_cli_spots_land_where_the_panel_geometry_puts_them(tmp_path, text):
    """The CLI renders a CrystFEL geometry; on every panel the brightest pixel is a
    reflection (integer hkl through the geometry computed here) and lies within one pixel of
    where that reflection's ray meets the panel."""
    write(tmp_path, "d.geom", text)
    r = run_cli([*CRYSTAL, "--geometry", "d.geom", "-floatfile", "slab.bin", "-noisefile", "noise.h5"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "one image of a detector of 4 panels" in r.stdout and "-intfile: intimage.img not written" in r.stdout
    want = crystfel_panels(textwrap.dedent(text))
    panels = list(want.values())
    slab = np.fromfile(tmp_path / "slab.bin", dtype=np.float32).reshape(-1, panels[0][3])
    rows = np.cumsum([0] + [p[4] for p in panels])
    images = [slab[rows[k]:rows[k + 1]] for k in range(4)]
    exp = build_experiment(nbxp.config_from_args([*CRYSTAL, "--geometry", str(tmp_path / "d.geom")]),
                           xp=np, dtype=np.float64)
    spots = brightest_spots(images, panels, exp.cell_real, 1e-10, (1.0, 0.0, 0.0))
    for k, sp in enumerate(spots):
        assert sp["value"] > 20 * max(sp["median"], 1e-3), (k, sp)  # a spot, not background
        assert sp["frac"] < 0.25, (k, sp)  # on a reciprocal-lattice point
        assert abs(sp["predicted"][0] - sp["peak"][0]) <= 1.0 and abs(sp["predicted"][1] - sp["peak"][1]) <= 1.0, \
            (k, sp)
    # masked pixels are zeros in the file, and the per-panel statistics are printed
    if text is FOUR:
        assert not images[1][15].any()
    assert "panel p0: max_I" in r.stdout or "panel m0: max_I" in r.stdout
    # the NeXus file holds the slab and one module per panel
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "noise.h5") as f:
        det = f["/entry/instrument/detector"]
        mods = sorted(k for k in det if k.startswith("module_"))
        assert len(mods) == 4
        assert f["/entry/data/data"].shape == (1, *slab.shape)
        assert [tuple(det[m]["data_origin"][()]) for m in mods] == [(int(rows[k]), 0) for k in range(4)]
        assert "depends_on" not in f["/entry/sample"]  # no -osc: a still


def test_mask_and_roi_apply_per_panel(tmp_path):
    """-mask (an SMV of the slab's shape) and -roi (each panel's own pixels) work with
    --geometry; excluded pixels are zeros in the slab."""
    write(tmp_path, "four.geom", FOUR)
    w, h = 60, 120
    head = (f"{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1={w};\n"
            f"SIZE2={h};\nPIXEL_SIZE=0.1;\nDISTANCE=50;\n}}\f")
    m = np.ones((h, w), "<u2")
    m[70:75, 10:20] = 0  # panel p2's rows 10..14
    (tmp_path / "m.img").write_bytes(head.encode().ljust(512, b" ") + m.tobytes())
    r = run_cli([*CRYSTAL, "--geometry", "four.geom", "-mask", "m.img", "-roi", "0", "49", "0", "29",
                 "-floatfile", "slab.bin", "-nonoise"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "-mask m.img: its pixels" in r.stdout
    slab = np.fromfile(tmp_path / "slab.bin", np.float32).reshape(h, w)
    assert not slab[70:75, 10:20].any() and not slab[:, 50:].any()
    r = run_cli([*CRYSTAL, "--geometry", "four.geom", "-floatfile", "full.bin", "-nonoise"], tmp_path)
    full = np.fromfile(tmp_path / "full.bin", np.float32).reshape(h, w)
    on = np.ones((h, w), bool)
    on[70:75, 10:20] = False
    on[:, 50:] = False
    np.testing.assert_array_equal(slab[on], full[on])  # everything else as without them
    assert full[~on].max() > 0


def test_detector_statistics_pool_the_panels():
    """The whole detector's figures are image_stats of the slab (one image made of the
    panels), the brightest panel's maximum its own."""
    from nbxp.stats import image_stats, panel_stats
    rng = np.random.default_rng(3)
    imgs = [rng.gamma(0.5, 3.0, size=(7 + k, 9)).astype(np.float32) for k in range(3)]
    imgs[1][2, 4] = 1e3
    masks = [rng.random(im.shape) > 0.1 for im in imgs]
    rois = [(0, 9, 0, im.shape[0]) for im in imgs]
    st = panel_stats(imgs, masks, rois, [1e-4] * 3, 2, ["a", "b", "c"])
    whole = image_stats(np.concatenate(imgs), np.concatenate(masks), (0, 9, 0, 30), 1e-4, 2)
    for k in ("mean", "rms", "rmsd"):
        assert getattr(st.total, k) == pytest.approx(getattr(whole, k), rel=1e-12)
    assert st.max_I == whole.max_I == 1e3 and st.names[st.panel] == "b"
    assert (st.total.max_I_x, st.total.max_I_y) == (st.panels[1].max_I_x, st.panels[1].max_I_y)
    assert st.lines()[0].endswith("on panel b") and len(st.lines()) == 5
