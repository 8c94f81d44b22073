"""miniCBF, NeXus/NXmx and .expt writers, and the DIALS-frame models they share.

Files are read back with fabio, h5py and json (the NeXus geometry by evaluating its NXmx
transformation chain here, as NXmx defines it); DIALS' own reading is in
test_dials_formats.py.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import nbxp
from nbxp.experiment import build_experiment
from nbxp.models import NEXUS_FROM_DIALS, describe, lab_to_dials
from nbxp.vectors import rotate_axis

h5py = pytest.importorskip("h5py")
fabio = pytest.importorskip("fabio")

BASE = ("-cell 50 60 70 80 85 95 -default_F 100 -N 3 -lambda 1.2 -distance 120 -pixel 0.172 "
        "-detpixels_f 60 -detpixels_s 40 -Xbeam 3.1 -Ybeam 4.7 -misset 10 20 30").split()

#: geometries miniCBF cannot hold (the reason names something of each)
NOT_MINICBF = {
    "twotheta": ["-twotheta", "15"],
    "rotz": ["-detector_rotz", "3"],
    "rotx": ["-detector_rotx", "2"],
    "adxv": ["-adxv"],
    "dials": ["-dials"],
    "spindle": ["-spindle_axis", "0.2", "0", "1"],
    "spindle_tilt": ["-spindle_axis", "0", "0.2", "1"],
    "curved": ["-curved_det"],
}


def make(extra=(), dtype=np.float64):
    return build_experiment(nbxp.config_from_args(BASE + list(extra)), xp=np, dtype=dtype)


def leftovers(d):
    return sorted(p for p in os.listdir(d) if p.startswith("."))


# -- models -----------------------------------------------------------------------------------

def test_mosflm_frame_is_nanobraggs_dials_mapping():
    exp = make()
    d = describe(exp)
    p = d.detector[0]
    # nanoBragg's own DIALS_ORIGIN header value (mm), computed independently in geometry.py
    np.testing.assert_allclose(p.origin, exp.geom.dials_origin, atol=1e-9)
    np.testing.assert_allclose(p.fast_axis, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(p.slow_axis, [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(d.goniometer.rotation_axis, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(d.beam.direction, [0, 0, 1], atol=1e-12)
    assert d.beam.wavelength == pytest.approx(1.2)
    assert p.pixel_size == pytest.approx((0.172, 0.172))
    assert p.image_size == (60, 40)
    assert p.distance == pytest.approx(120.0)
    # no half-pixel shift: nbxp's Fbeam/Sbeam over the pixel size
    bx, by = p.beam_centre_px(d.beam)
    assert bx == pytest.approx(exp.geom.Fbeam / exp.geom.pixel_size, abs=1e-9)
    assert by == pytest.approx(exp.geom.Sbeam / exp.geom.pixel_size, abs=1e-9)


@pytest.mark.parametrize("extra", [[], ["-xds"], ["-adxv"], ["-denzo"], ["-dials"], ["-twotheta", "20"],
                                   ["-detector_rotx", "5", "-detector_roty", "-3", "-detector_rotz", "7"],
                                   ["-beam_vector", "0.1", "0.2", "1", "-spindle_axis", "1", "0.3", "0",
                                    "-fdet_vector", "1", "0", "0", "-sdet_vector", "0", "1", "0"]])
def test_frame_is_a_proper_rotation_sending_beam_to_minus_z(extra):
    exp = make(extra)
    d = describe(exp)
    R = d.to_dials
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    beam = np.asarray(exp.geom.beam, dtype=float)
    np.testing.assert_allclose(R @ beam, [0, 0, -1], atol=1e-12)
    # the spindle lies in the x-z plane with a positive x (x is the principal goniometer axis)
    ax = d.goniometer.rotation_axis
    assert abs(ax[1]) < 1e-12 and ax[0] > 0
    # every pixel's lab position maps to the same point of the DIALS panel
    g, p = exp.geom, d.detector[0]
    for fi, si in ((0, 0), (59, 0), (13, 37)):
        lab = np.asarray(g.pix0) + (fi + 0.5) * g.pixel_size * np.asarray(g.fdet) + (si + 0.5) * g.pixel_size * np.asarray(g.sdet)
        dials = p.origin + (fi + 0.5) * p.pixel_size[0] * p.fast_axis + (si + 0.5) * p.pixel_size[1] * p.slow_axis
        np.testing.assert_allclose(R @ lab * 1e3, dials, atol=1e-9)


@pytest.mark.parametrize("extra", [[], ["-xds"], ["-dials"], ["-spindle_axis", "0", "0", "-1"]])
def test_phi_rotation_is_dials_right_handed_goniometer_rotation(extra):
    # the engine's own phi-rotated cell (exp.orient, phi0 = 25 deg) must be the DIALS crystal
    # turned right-handedly by 25 deg about the goniometer axis: a reversed axis fails here
    exp = make(extra + ["-phi", "25", "-osc", "0"])
    d = describe(exp)
    phi = math.radians(25)
    axis = d.goniometer.rotation_axis
    turned = rotate_axis(d.crystal.real_space, axis, phi, xp=np)
    engine = np.asarray(exp.orient[0]) * 1e10 @ d.to_dials.T
    np.testing.assert_allclose(turned, engine, atol=1e-9)


def test_crystal_is_the_cell_and_its_reciprocal():
    exp = make()
    d = describe(exp)
    from tests.dials_helpers import cell_parameters
    # the cell nbxp simulated and prints (nanoBragg's construction bends a triclinic cell's
    # angles by up to ~0.02 degree; the truth is what was simulated)
    np.testing.assert_allclose(cell_parameters(d.crystal.real_space), exp.cell_params[0], atol=1e-9)
    np.testing.assert_allclose(cell_parameters(d.crystal.real_space), (50, 60, 70, 80, 85, 95), atol=0.02)
    # the vectors the engine renders with (Miller indices are a.q, b.q, c.q), not the
    # reciprocal cell nanoBragg regenerates with the user's volume (dual only to ~1e-4)
    np.testing.assert_allclose(np.asarray(exp.orient[0]) * 1e10, (np.asarray(exp.cell_real, dtype=float) * 1e10), atol=1e-9)


def test_rotated_crystal_for_still_shots():
    exp = make()
    d = describe(exp)
    Q = lab_to_dials([0.3, 0.2, 1.0], [1, 0, 0], [0, 1, 0])  # any proper rotation
    shot = d.rotated_crystal(Q)
    # rotate in nbxp's frame, then map: the same vectors
    expect = ((np.asarray(exp.cell_real, dtype=float) * 1e10) @ Q.T) @ d.to_dials.T
    np.testing.assert_allclose(shot.real_space, expect, atol=1e-12)


def test_polarization_from_kahn_factor():
    d = describe(make(["-polar", "0.8"]))
    assert d.beam.polarization_fraction == pytest.approx(0.9)
    # MOSFLM's E-vector (0,0,1) is DIALS' +x: the plane's normal is y
    np.testing.assert_allclose(d.beam.polarization_normal, [0, 1, 0], atol=1e-12)
    assert describe(make()).beam.polarization_fraction == pytest.approx(0.5)


def test_two_theta_beam_centre_is_the_beam_panel_intersection():
    d = describe(make(["-twotheta", "20"]))
    p = d.detector[0]
    bx, by = p.beam_centre_px(d.beam)
    hit = p.origin + bx * p.pixel_size[0] * p.fast_axis + by * p.pixel_size[1] * p.slow_axis
    # on the incident beam (-z) and in the panel's plane
    assert abs(hit[0]) < 1e-9 and abs(hit[1]) < 1e-9 and hit[2] < 0
    assert np.dot(hit - p.origin, p.normal) == pytest.approx(0.0, abs=1e-9)


# -- miniCBF ----------------------------------------------------------------------------------

def cbf_header(path) -> dict:
    img = fabio.open(str(path))
    out = {}
    for line in img.header["_array_data.header_contents"].splitlines():
        line = line.strip().lstrip("#").strip()
        key, _, value = line.partition(" ")
        out[key] = value
    return img, out


def test_cbf_round_trip_data_and_header(tmp_path):
    exp = make(["-detector_thick", "320"])
    rng = np.random.default_rng(1)
    data = rng.integers(0, 3_000_000, size=(40, 60)).astype(np.int32)  # beyond 16 bits
    data[0, 0] = -1
    from nbxp.io.cbf import write_cbf
    path = tmp_path / "scan_00003.cbf"
    write_cbf(str(path), data, exp, start_angle=math.radians(1.5), angle_increment=math.radians(0.25),
              exposure=0.1, saturation=1_048_575)
    raw = path.read_bytes()
    assert raw.startswith(b"###CBF")
    assert b"x-CBF_BYTE_OFFSET" in raw and b"PILATUS" not in raw.upper()
    img, h = cbf_header(path)
    assert img.data.dtype == np.int32
    np.testing.assert_array_equal(img.data, data)
    assert img.header["_array_data.header_convention"] == "GENERIC_MINI"
    assert h["Detector:"] == "nbxp simulated detector, S/N 00-0000"
    assert h["Pixel_size"] == "0.000172 m x 0.000172 m"
    assert h["Wavelength"] == "1.2 A"
    assert h["Detector_distance"] == "0.12 m"
    bx, by = (float(v) for v in h["Beam_xy"].split("pixels")[0].strip("() ").split(","))
    assert bx == pytest.approx(exp.geom.Fbeam / exp.geom.pixel_size, abs=1e-6)
    assert by == pytest.approx(exp.geom.Sbeam / exp.geom.pixel_size, abs=1e-6)
    assert h["Start_angle"] == "1.5 deg."
    assert float(h["Angle_increment"].split()[0]) == pytest.approx(0.25)
    assert h["Exposure_period"] == "0.1 s"
    assert h["Count_cutoff"] == "1048575 counts"
    assert h["Silicon"] == "sensor, thickness 0.00032 m"
    assert leftovers(tmp_path) == []
    assert "data_scan_00003" in raw[:300].decode("ascii")


def test_cbf_without_sensor_has_no_thickness_line(tmp_path):
    from nbxp.io.cbf import write_cbf
    write_cbf(str(tmp_path / "a.cbf"), np.zeros((40, 60), np.int32), make(), start_angle=0.0,
              angle_increment=0.0, exposure=1.0, saturation=100)
    _, h = cbf_header(tmp_path / "a.cbf")
    assert "Silicon" not in h  # thickness 0 would crash DIALS' reader


@pytest.mark.parametrize("name", sorted(NOT_MINICBF))
def test_cbf_refuses_geometry_it_cannot_hold(tmp_path, name):
    from nbxp.io.cbf import unsupported, write_cbf
    exp = make(NOT_MINICBF[name])
    why = unsupported(exp)
    assert why and "NeXus" in why and (".h5" in why or ".nxs" in why)
    target = tmp_path / "x.cbf"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="NeXus"):
        write_cbf(str(target), np.zeros((40, 60), np.int32), exp, start_angle=0.0, angle_increment=0.0,
                  exposure=1.0, saturation=1)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


@pytest.mark.parametrize("extra", [[], ["-denzo"], ["-xds"], ["-mosflm", "-phi", "10"]])
def test_cbf_accepts_geometry_it_describes(extra):
    from nbxp.io.cbf import unsupported
    assert unsupported(make(extra)) is None


def test_cbf_names_the_reason():
    from nbxp.io.cbf import unsupported
    assert "two-theta 15" in unsupported(make(NOT_MINICBF["twotheta"]))
    assert "ADXV" in unsupported(make(["-adxv"]))
    assert "curved" in unsupported(make(["-curved_det"]))
    assert "spindle axis that is not perpendicular" in unsupported(make(NOT_MINICBF["spindle"]))
    assert "spindle not along" in unsupported(make(NOT_MINICBF["spindle_tilt"]))


def test_cbf_refuses_non_int32(tmp_path):
    from nbxp.io.cbf import write_cbf
    for bad in (np.zeros((40, 60), np.float32), np.zeros((40, 60), np.int64), [[0] * 60] * 40):
        with pytest.raises(TypeError):
            write_cbf(str(tmp_path / "a.cbf"), bad, make(), start_angle=0.0, angle_increment=0.0, exposure=1.0,
                      saturation=1)
    with pytest.raises(ValueError, match="shape"):
        write_cbf(str(tmp_path / "a.cbf"), np.zeros((60, 40), np.int32), make(), start_angle=0.0,
                  angle_increment=0.0, exposure=1.0, saturation=1)
    assert os.listdir(tmp_path) == []


def test_cbf_failure_leaves_old_file(tmp_path, monkeypatch):
    import fabio.cbfimage
    from nbxp.io.cbf import write_cbf

    def broken(self, fname):
        with open(fname, "wb") as fh:
            fh.write(b"###CBF half")
        raise OSError("disk full")
    monkeypatch.setattr(fabio.cbfimage.CbfImage, "write", broken)
    target = tmp_path / "a.cbf"
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        write_cbf(str(target), np.zeros((40, 60), np.int32), make(), start_angle=0.0, angle_increment=0.0,
                  exposure=1.0, saturation=1)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_cbf_permissions_follow_umask(tmp_path):
    from nbxp.io.cbf import write_cbf
    old = os.umask(0o027)
    try:
        write_cbf(str(tmp_path / "a.cbf"), np.zeros((40, 60), np.int32), make(), start_angle=0.0,
                  angle_increment=0.0, exposure=1.0, saturation=1)
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "a.cbf").st_mode & 0o777) == 0o640


# -- NeXus ------------------------------------------------------------------------------------

def chain_matrix(f, path) -> np.ndarray:
    """The 4x4 transformation NXmx defines for the depends_on chain starting at ``path``
    (mm, degrees), evaluated independently of the writer: T = T1 T2 ... applied right to left
    from the last dependency."""
    M = np.eye(4)
    while path and path != ".":
        ds = f[path]
        kind = ds.attrs["transformation_type"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        v = np.asarray(ds.attrs["vector"], dtype=float)
        val = float(np.atleast_1d(ds[()])[0])
        units = ds.attrs["units"]
        A = np.eye(4)
        if kind == "rotation":
            assert units in ("deg", "degrees")
            A[:3, :3] = rotate_axis(np.eye(3), v, math.radians(val), xp=np).T
        else:
            assert units == "mm"
            A[:3, 3] = v * val
        if "offset" in ds.attrs:
            A[:3, 3] += np.asarray(ds.attrs["offset"], dtype=float)
        M = A @ M
        dep = ds.attrs["depends_on"]
        dep = dep.decode() if isinstance(dep, bytes) else dep
        path = dep if dep.startswith("/") or dep == "." else ds.parent.name + "/" + dep
    return M


def read_back_geometry(f):
    """The panel (McStas frame) a reader builds from the NXmx chain: origin, fast, slow."""
    mod = f["/entry/instrument/detector/module"]
    fp = mod["fast_pixel_direction"]
    dep = fp.attrs["depends_on"]
    dep = dep.decode() if isinstance(dep, bytes) else dep
    A = chain_matrix(f, dep)
    R = A[:3, :3]
    return (A[:3, 3], R @ np.asarray(fp.attrs["vector"], float),
            R @ np.asarray(mod["slow_pixel_direction"].attrs["vector"], float))


def write_nexus(path, exp, frames, *, stills=False, dtype=np.int32, saturation=12345, start=0.1, step=0.02):
    from nbxp.io.nexus import NexusWriter
    with NexusWriter(str(path), exp, nframes=len(frames), dtype=dtype, start_angle=start, angle_increment=step,
                     stills=stills, exposure=0.5, saturation=saturation) as w:
        for i, fr in enumerate(frames):
            w.write(i, fr)


def units_everywhere(f):
    """Every dataset that holds a length, angle or time carries a units attribute."""
    need = ("wavelength", "thickness", "time", "distance", "pixel_size", "omega", "module_offset",
            "pixel_direction", "translation", "rotation", "beam_center")
    missing = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and any(k in name.split("/")[-1] for k in need):
            if "units" not in obj.attrs:
                missing.append(name)
    f.visititems(visit)
    return missing


@pytest.mark.parametrize("extra", [[], ["-detector_thick", "450"], ["-adxv", "-twotheta", "15", "-detector_rotz", "3"],
                                   ["-xds", "-detector_rotx", "4", "-detector_roty", "-2"],
                                   ["-detector_rotz", "180"], ["-dials", "-twotheta", "180"],
                                   ["-fdet_vector", "0", "0.2", "1", "-sdet_vector", "0", "-1", "0.2"]])
def test_nexus_rotation_series_round_trip(tmp_path, extra):
    exp = make(extra)
    d = describe(exp)
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 5_000_000, size=(40, 60)).astype(np.int32) for _ in range(3)]
    path = tmp_path / "scan.nxs"
    write_nexus(path, exp, frames)
    assert leftovers(tmp_path) == []
    with open(path, "rb") as fh:
        head = fh.read(9)
    assert head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] <= 3  # superblock HDF5 1.10 reads
    with h5py.File(path, "r") as f:
        assert f["/entry"].attrs["NX_class"] == "NXentry"
        assert f["/entry/definition"][()] == b"NXmx"
        ds = f["/entry/data/data"]
        assert ds.shape == (3, 40, 60) and ds.dtype == np.int32 and ds.chunks == (1, 40, 60)
        assert ds.compression == "gzip" and ds.shuffle
        np.testing.assert_array_equal(ds[()], np.stack(frames))
        assert f["/entry/instrument/beam/incident_wavelength"][()] == pytest.approx(1.2)
        assert f["/entry/instrument/beam/incident_wavelength"].attrs["units"] == "angstrom"
        det = f["/entry/instrument/detector"]
        assert det["sensor_material"][()] == b"Silicon"
        thick = float(det["sensor_thickness"][()])
        assert thick == pytest.approx(450e-6 if "-detector_thick" in extra else 1e-6)
        assert det["sensor_thickness"].attrs["units"] == "m"
        assert det["saturation_value"][()] == 12345
        assert det["frame_time"][()] == pytest.approx(0.5)
        mod = det["module"]
        assert list(mod["data_size"][()]) == [40, 60]  # slow, fast
        assert mod["fast_pixel_direction"][()] == pytest.approx(0.172)
        # the chain places the panel exactly where the models say (McStas frame)
        origin, fast, slow = read_back_geometry(f)
        p = d.detector[0]
        np.testing.assert_allclose(origin, NEXUS_FROM_DIALS @ p.origin, atol=1e-9)
        np.testing.assert_allclose(fast, NEXUS_FROM_DIALS @ p.fast_axis, atol=1e-12)
        np.testing.assert_allclose(slow, NEXUS_FROM_DIALS @ p.slow_axis, atol=1e-12)
        # omega scan about the spindle, one start angle per frame and the ends
        assert f["/entry/sample/depends_on"][()] == b"/entry/sample/transformations/omega"
        om = f["/entry/sample/transformations/omega"]
        np.testing.assert_allclose(om[()], np.degrees(0.1 + 0.02 * np.arange(3)), atol=1e-12)
        np.testing.assert_allclose(f["/entry/sample/transformations/omega_end"][()],
                                   np.degrees(0.1 + 0.02 * np.arange(1, 4)), atol=1e-12)
        np.testing.assert_allclose(om.attrs["vector"], NEXUS_FROM_DIALS @ d.goniometer.rotation_axis, atol=1e-12)
        assert om.attrs["units"] == "deg"
        assert units_everywhere(f) == []


def test_nexus_stills_have_no_rotation_and_float_frames(tmp_path):
    exp = make()
    frames = [np.full((40, 60), 0.25 * i, np.float32) for i in range(4)]
    path = tmp_path / "stills.h5"
    write_nexus(path, exp, frames, stills=True, dtype=np.float32, saturation=None)
    with h5py.File(path, "r") as f:
        assert "depends_on" not in f["/entry/sample"]
        assert "transformations" not in f["/entry/sample"]
        assert "saturation_value" not in f["/entry/instrument/detector"]
        ds = f["/entry/data/data"]
        assert ds.dtype == np.float32
        np.testing.assert_array_equal(ds[3], frames[3])


def test_nexus_abort_and_incomplete_leave_nothing(tmp_path):
    from nbxp.io.nexus import NexusWriter
    exp = make()
    path = tmp_path / "s.nxs"
    with pytest.raises(RuntimeError):
        with NexusWriter(str(path), exp, nframes=2, dtype=np.int32, start_angle=0.0, angle_increment=0.1,
                         stills=False, exposure=1.0) as w:
            w.write(0, np.zeros((40, 60), np.int32))
            raise RuntimeError("simulation failed")
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="never written"):
        with NexusWriter(str(path), exp, nframes=2, dtype=np.int32, start_angle=0.0, angle_increment=0.1,
                         stills=False, exposure=1.0) as w:
            w.write(1, np.zeros((40, 60), np.int32))
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_nexus_refuses_bad_frames(tmp_path):
    from nbxp.io.nexus import NexusWriter
    exp = make()
    with pytest.raises(TypeError):
        NexusWriter(str(tmp_path / "a.nxs"), exp, nframes=1, dtype=np.float64, start_angle=0.0,
                    angle_increment=0.0, stills=True, exposure=1.0)
    with pytest.raises(ValueError, match="curved"):
        NexusWriter(str(tmp_path / "a.nxs"), make(["-curved_det"]), nframes=1, dtype=np.int32, start_angle=0.0,
                    angle_increment=0.0, stills=True, exposure=1.0)
    skewed = make(["-fdet_vector", "0", "0.2", "1", "-sdet_vector", "0", "-1", "0.3"])
    with pytest.raises(ValueError, match="perpendicular"):
        NexusWriter(str(tmp_path / "a.nxs"), skewed, nframes=1, dtype=np.int32, start_angle=0.0,
                    angle_increment=0.0, stills=True, exposure=1.0)
    from nbxp.io.expt import write_expt
    with pytest.raises(ValueError, match="perpendicular"):
        write_expt(str(tmp_path / "a.expt"), skewed, start_angle=0.0, angle_increment=0.0, nframes=1)
    assert os.listdir(tmp_path) == []
    w = NexusWriter(str(tmp_path / "a.nxs"), exp, nframes=1, dtype=np.int32, start_angle=0.0,
                    angle_increment=0.0, stills=True, exposure=1.0)
    with pytest.raises(TypeError, match="round"):
        w.write(0, np.zeros((40, 60), np.float32))
    with pytest.raises(ValueError, match="shape"):
        w.write(0, np.zeros((60, 40), np.int32))
    with pytest.raises(IndexError):
        w.write(1, np.zeros((40, 60), np.int32))
    w.abort()
    assert os.listdir(tmp_path) == []


# -- .expt ------------------------------------------------------------------------------------

def test_expt_rotation_scan(tmp_path):
    from nbxp.io.expt import write_expt
    exp = make(["-detector_thick", "450"])
    d = describe(exp)
    path = tmp_path / "truth.expt"
    write_expt(str(path), exp, start_angle=math.radians(3), angle_increment=math.radians(0.5), nframes=20, exposure=0.2)
    doc = json.loads(path.read_text())
    assert doc["__id__"] == "ExperimentList" and len(doc["experiment"]) == 1
    e = doc["experiment"][0]
    assert (e["beam"], e["detector"], e["goniometer"], e["scan"], e["crystal"]) == (0, 0, 0, 0, 0)
    b = doc["beam"][0]
    assert b["wavelength"] == pytest.approx(1.2)
    np.testing.assert_allclose(b["direction"], [0, 0, 1], atol=1e-12)
    p = doc["detector"][0]["panels"][0]
    np.testing.assert_allclose(p["origin"], exp.geom.dials_origin, atol=1e-9)
    assert p["image_size"] == [60, 40] and p["pixel_size"] == pytest.approx([0.172, 0.172])
    assert p["thickness"] == pytest.approx(0.45)
    assert p["px_mm_strategy"]["type"] == "ParallaxCorrectedPxMmStrategy"
    assert p["mu"] == pytest.approx(exp.mu * 1e-3)
    np.testing.assert_allclose(doc["goniometer"][0]["rotation_axis"], [1, 0, 0], atol=1e-12)
    s = doc["scan"][0]
    assert s["image_range"] == [1, 20]
    assert s["oscillation"] == pytest.approx([3.0, 0.5])
    assert s["exposure_time"] == pytest.approx([0.2] * 20)
    c = doc["crystal"][0]
    assert c["space_group_hall_symbol"] == " P 1"
    real = np.array([c["real_space_a"], c["real_space_b"], c["real_space_c"]])
    np.testing.assert_allclose(real, d.crystal.real_space, atol=1e-12)
    np.testing.assert_allclose(real, (np.asarray(exp.cell_real, dtype=float) * 1e10) @ d.to_dials.T, atol=1e-12)


def test_expt_stills_one_experiment_per_shot(tmp_path):
    from nbxp.io.expt import write_expt
    from tests.dataset_helpers import random_rotations
    exp = make()
    d = describe(exp)
    rots = random_rotations(5, 3)
    path = tmp_path / "truth.expt"
    write_expt(str(path), exp, start_angle=0.0, angle_increment=0.0, nframes=5, crystal_rotations=rots)
    doc = json.loads(path.read_text())
    assert len(doc["experiment"]) == 5 and len(doc["crystal"]) == 5
    assert doc["goniometer"] == [] and doc["scan"] == []
    for i, e in enumerate(doc["experiment"]):
        assert "goniometer" not in e and "scan" not in e and e["crystal"] == i
        c = doc["crystal"][i]
        real = np.array([c["real_space_a"], c["real_space_b"], c["real_space_c"]])
        np.testing.assert_allclose(real, ((np.asarray(exp.cell_real, dtype=float) * 1e10) @ rots[i].T) @ d.to_dials.T, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        write_expt(str(tmp_path / "bad.expt"), exp, start_angle=0.0, angle_increment=0.0, nframes=1,
                   crystal_rotations=np.eye(3))
    assert not (tmp_path / "bad.expt").exists()


def test_expt_refuses_curved(tmp_path):
    from nbxp.io.expt import write_expt
    with pytest.raises(ValueError, match="curved"):
        write_expt(str(tmp_path / "t.expt"), make(["-curved_det"]), start_angle=0.0, angle_increment=0.0, nframes=1)
    assert os.listdir(tmp_path) == []


def test_models_from_float32_experiment_match_float64():
    d32, d64 = describe(make(dtype=np.float32)), describe(make())
    np.testing.assert_allclose(d32.detector[0].origin, d64.detector[0].origin, atol=1e-4)
    np.testing.assert_allclose(d32.crystal.real_space, d64.crystal.real_space, atol=1e-12)  # kept in float64
    from nbxp.io.cbf import unsupported
    assert unsupported(make(dtype=np.float32)) is None


def test_models_from_any_namespace(xp):
    # the writers convert what they need to host float64 (NumPy, array-api-strict, CuPy)
    dt = xp.float64 if hasattr(xp, "float64") else None
    exp = build_experiment(nbxp.config_from_args(BASE + ["-twotheta", "10"]), xp=xp, dtype=dt)
    ref = describe(make(["-twotheta", "10"]))
    d = describe(exp)
    np.testing.assert_allclose(d.detector[0].origin, ref.detector[0].origin, atol=1e-9)
    np.testing.assert_allclose(d.detector[0].slow_axis, ref.detector[0].slow_axis, atol=1e-12)
    np.testing.assert_allclose(d.crystal.real_space, ref.crystal.real_space, atol=1e-9)


def test_nexus_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_nexus(tmp_path / "s.nxs", make(), [np.zeros((40, 60), np.int32)])
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "s.nxs").st_mode & 0o777) == 0o644
