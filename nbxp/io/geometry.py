"""Detector geometry files (``--geometry``): DIALS/dxtbx experiment lists and CrystFEL ``.geom``.

:func:`read_geometry` returns a :class:`nbxp.panels.DetectorSpec`: the panels in nbxp's
laboratory frame, and the beam, wavelength and spindle the file gives.  Standard library and
NumPy only (dxtbx is not needed; the tests compare with it).

**Frames.**  Both formats are converted to DIALS' frame first (dxtbx's imgCIF frame: beam
along -z, x along the goniometer axis; see :mod:`nbxp.models`) and from there to nbxp's lab
frame through the inverse of the one rotation ``R = models.lab_to_dials(beam, spindle,
fdet)`` built from the run's convention axes (``to_dials``), the rotation the writers
describe nbxp's experiment with, so that a NeXus file or ``.expt`` written from a run holds
the file's geometry back.

* **dxtbx JSON** (``.expt``, ``.json``: an ``ExperimentList``, or one detector's
  ``to_dict``): a panel's ``fast_axis``/``slow_axis``/``origin`` are *local* to its parent
  node of the ``hierarchy`` tree (as dxtbx's ``Panel.set_local_frame`` stores them); the
  global frame is composed down from the root as dxtbx composes it: with a parent frame
  (F, S, N = F x S, O), a local vector (a, b, c) is a F + b S + c N and a local origin
  o becomes O + o_1 F + o_2 S + o_3 N.  A detector without a hierarchy has global panels.
  Lengths mm, wavelength A, beam ``direction`` from sample to source.
* **CrystFEL** (``.geom``, crystfel_geometry(5)): the lab frame has +z along the beam, +y
  up and x completing a right-handed set, which is NeXus' McStas frame, so
  ``v_dials = NEXUS_FROM_DIALS @ v_crystfel`` (the same 180 degree turn about y; cctbx's
  ``xfel/euxfel`` converter writes CrystFEL vectors unchanged into NeXus for the same
  reason).  A panel's first-pixel corner is at (corner_x, corner_y) pixels (of that panel's
  ``res``, pixels per metre) in x, y and at ``clen`` + ``coffset`` (m) in z; ``fs``/``ss``
  are lab vectors in pixel units.  The beam travels along +z; a CrystFEL file has no
  goniometer (still shots).

**CrystFEL data layout.**  ``min_fs..max_fs``, ``min_ss..max_ss`` (inclusive) say where a
panel's pixels lie in the file's data array; nbxp keeps the panels in file order and writes
them as its own slab (panels stacked along the slow axis, see ``docs/panels.md``).  The
notes say whether the file's layout is that slab (then a ``.geom`` reads nbxp's raw float
output as it stands).

Bad regions become the panels' masks (False = not simulated, written 0): ``bad*/min_fs ..
/panel`` inclusive in data coordinates; ``bad*/min_x .. max_y`` in lab pixel units (a pixel
whose centre lies inside is bad); ``no_index = 1`` (or ``ignore``) masks the whole panel and
``mask_edge_pixels = n`` its border.  Keys about reading data (``data``, ``dim*``, masks in
the data files, peak lists, ``flag_*``, saturation) and groups (``group_*``,
``rigid_group*``, which move nothing) are accepted and change no geometry.  Unknown keys and
inconsistent panels are an :class:`~nbxp.io.InputError` naming the file and line.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..models import NEXUS_FROM_DIALS
from ..panels import DetectorSpec, PanelSpec
from . import InputError

#: hc in eV*m (CODATA), for photon_energy -> wavelength
HC_EV_M = 12398.419843320026e-10

#: largest deviation of a CrystFEL fs/ss vector from unit length (in pixels) accepted; the
#: vectors are then normalised (files give them to 6-10 digits)
UNIT_TOLERANCE = 1e-3
#: fast/slow axes less perpendicular than this (|cos|) are refused; closer ones are made
#: exactly perpendicular (dxtbx's panel model asserts it), with a note
ORTHO_TOLERANCE = 1e-3

#: sensor thickness (m) at or below which a file's sensor is read as none: nbxp's NeXus
#: writer records 1 um when nothing was simulated, since dxtbx requires a thickness > 0
NO_SENSOR_THICKNESS = 1.0e-6 * (1 + 1e-9)


def read_geometry(path: str, *, to_dials=None, flag: str = "--geometry") -> DetectorSpec:
    """The detector (and beam, wavelength, spindle) of a geometry file, in nbxp's lab frame.

    ``to_dials``: the 3x3 rotation with v_dials = R @ v_nbxp (:func:`nbxp.models.lab_to_dials`
    of the run's convention axes; identity when None, i.e. nbxp's frame is DIALS').  The
    format follows the extension (``.geom`` CrystFEL; ``.expt``/``.json`` dxtbx JSON).
    """
    R = np.eye(3) if to_dials is None else np.asarray(to_dials, dtype=np.float64)
    if not os.path.isfile(path):
        raise InputError(f"{flag}: cannot read {path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise InputError(f"{flag}: cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{flag}: {path}: not a text file (a CrystFEL .geom or a DIALS .expt/.json)") from None
    if ext == ".geom":
        return _crystfel(text, path, R, flag)
    if ext in (".expt", ".json"):
        return _dxtbx(text, path, R, flag)
    raise InputError(f"{flag}: {path}: unknown geometry format (expected .geom for CrystFEL, "
                     ".expt or .json for DIALS/dxtbx)")


# ------------------------------------------------------------------------------- helpers

def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _tuple(v) -> tuple[float, float, float]:
    return tuple(float(x) for x in v)


def _panel(name, origin_d, fast_d, slow_d, fpixels, spixels, pixel_size, R, *, where, notes,
           thickness=None, mu=None, material=None, mask=None) -> PanelSpec:
    """A PanelSpec in nbxp's frame from DIALS-frame vectors (origin in m); checks the axes."""
    f, s = np.asarray(fast_d, dtype=np.float64), np.asarray(slow_d, dtype=np.float64)
    nf, ns = float(np.linalg.norm(f)), float(np.linalg.norm(s))
    if not (nf > 0 and ns > 0) or not np.all(np.isfinite(f)) or not np.all(np.isfinite(s)):
        raise InputError(f"{where}: panel {name}: a zero or non-finite fast/slow axis")
    f, s = f / nf, s / ns
    c = float(f @ s)
    if abs(c) > ORTHO_TOLERANCE:
        raise InputError(f"{where}: panel {name}: fast and slow axes are not perpendicular "
                         f"(angle {math.degrees(math.acos(max(-1.0, min(1.0, c)))):.4g} deg)")
    if c != 0.0:
        s = _unit(s - c * f)
        if abs(c) > 1e-9:
            notes.append(f"panel {name}: slow axis made perpendicular to the fast axis (was off by "
                         f"{math.degrees(abs(math.asin(c))):.2g} deg)")
    o = np.asarray(origin_d, dtype=np.float64)
    if not np.all(np.isfinite(o)):
        raise InputError(f"{where}: panel {name}: a non-finite origin")
    if not (fpixels >= 1 and spixels >= 1):
        raise InputError(f"{where}: panel {name}: no pixels ({fpixels} x {spixels})")
    if not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise InputError(f"{where}: panel {name}: the pixel size must be positive, got {pixel_size!r}")
    Rt = R.T
    return PanelSpec(name=str(name), origin=_tuple(Rt @ o), fast=_tuple(Rt @ f), slow=_tuple(Rt @ s),
                     fpixels=int(fpixels), spixels=int(spixels), pixel_size=float(pixel_size),
                     thickness=thickness, mu=mu, material=material, mask=mask)


def _spec(panels, R, *, beam_d=None, wavelength=None, spindle_d=None, source, notes, adu=None) -> DetectorSpec:
    names = [p.name for p in panels]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{source}: panel names repeat: {', '.join(dup)}")
    Rt = R.T
    return DetectorSpec(panels=tuple(panels),
                        beam=None if beam_d is None else _tuple(Rt @ _unit(beam_d)),
                        wavelength=wavelength,
                        spindle=None if spindle_d is None else _tuple(Rt @ _unit(spindle_d)),
                        source=source, adu_per_photon=adu, notes=tuple(notes))


# ------------------------------------------------------------------------------- dxtbx

def _vec3(d, key, where):
    v = d.get(key)
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != (3,) or not np.all(np.isfinite(a)):
        raise InputError(f"{where}: '{key}' must be three numbers, got {v!r}")
    return a


def _dxtbx(text: str, path: str, R, flag: str) -> DetectorSpec:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{flag}: {path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{flag}: {path}: expected a DIALS experiment list or a detector (a JSON object)")
    where = f"{flag}: {path}"
    notes: list[str] = []
    beam = gonio = None
    if "panels" in doc:  # one detector's to_dict()
        det = doc
    elif "detector" in doc and isinstance(doc.get("detector"), list):
        dets = doc["detector"]
        if not dets:
            raise InputError(f"{where}: the experiment list holds no detector")
        exps = doc.get("experiment") or []
        e0 = exps[0] if exps else {}
        ids = {x.get("detector") for x in exps if isinstance(x, dict)} - {None}
        if len(dets) > 1 or len(ids) > 1:
            notes.append(f"{path}: {len(dets)} detectors; the first experiment's is used")
        det = dets[int(e0.get("detector", 0) or 0)]
        if doc.get("beam"):
            beam = doc["beam"][int(e0.get("beam", 0) or 0)]
        if doc.get("goniometer") and e0.get("goniometer") is not None:
            gonio = doc["goniometer"][int(e0["goniometer"])]
    else:
        raise InputError(f"{where}: neither a DIALS experiment list (with 'detector') nor a detector (with 'panels')")
    raw = det.get("panels")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: the detector has no panels")

    # global frames: compose down the hierarchy (local frames), or take the panels as global
    frames: dict[int, tuple] = {}

    def local(node, F, S, N, O, w):
        f, s, o = _vec3(node, "fast_axis", w), _vec3(node, "slow_axis", w), _vec3(node, "origin", w)
        gf = f[0] * F + f[1] * S + f[2] * N
        gs = s[0] * F + s[1] * S + s[2] * N
        go = O + o[0] * F + o[1] * S + o[2] * N
        return gf, gs, go

    def walk(node, F, S, N, O, depth):
        w = f"{where}: hierarchy node at depth {depth}"
        if depth > 64:
            raise InputError(f"{where}: the panel hierarchy is deeper than 64 levels (a cycle?)")
        if "panel" in node:
            i = node["panel"]
            if not isinstance(i, int) or not 0 <= i < len(raw):
                raise InputError(f"{w}: panel index {i!r} is not one of the {len(raw)} panels")
            if i in frames:
                raise InputError(f"{w}: panel {i} appears twice in the hierarchy")
            frames[i] = local(raw[i], F, S, N, O, f"{where}: panel {i}")
            return
        gf, gs, go = local(node, F, S, N, O, w)
        if np.linalg.norm(gf) == 0 or np.linalg.norm(gs) == 0:
            raise InputError(f"{w}: a zero fast/slow axis")
        gn = np.cross(gf, gs)
        gn = gn / np.linalg.norm(gn)
        for child in node.get("children", []):
            if not isinstance(child, dict):
                raise InputError(f"{w}: a child that is not a JSON object")
            walk(child, gf, gs, gn, go, depth + 1)

    hier = det.get("hierarchy")
    eye = np.eye(3)
    if isinstance(hier, dict):
        walk(hier, eye[0], eye[1], eye[2], np.zeros(3), 0)
        missing = [i for i in range(len(raw)) if i not in frames]
        if missing:
            raise InputError(f"{where}: panels {missing} are not in the hierarchy")
    else:
        for i, p in enumerate(raw):
            frames[i] = local(p, eye[0], eye[1], eye[2], np.zeros(3), f"{where}: panel {i}")

    panels = []
    for i, p in enumerate(raw):
        w = f"{where}: panel {i}"
        size, pix = p.get("image_size"), p.get("pixel_size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) for x in size)):
            raise InputError(f"{w}: 'image_size' must be two integers (fast, slow), got {size!r}")
        if not (isinstance(pix, list) and len(pix) == 2 and all(isinstance(x, (int, float)) for x in pix)):
            raise InputError(f"{w}: 'pixel_size' must be two numbers (fast, slow) in mm, got {pix!r}")
        if not (pix[0] > 0 and abs(pix[0] - pix[1]) <= 1e-9 * pix[0]):
            raise InputError(f"{w}: nbxp simulates square pixels; 'pixel_size' is {pix!r} mm")
        f, s, o = frames[i]
        thick = float(p.get("thickness", 0.0) or 0.0) * 1e-3
        mu = float(p.get("mu", 0.0) or 0.0) * 1e3
        material = p.get("material") or None
        name = p.get("name") or f"panel{i}"
        if 0 < thick <= NO_SENSOR_THICKNESS:
            if i == 0:
                notes.append(f"{path}: a sensor of {thick * 1e6:g} um read as none (nbxp writes 1 um when it "
                             "simulated no sensor, since DIALS' NeXus reader requires one)")
            thick = 0.0
        mask = None
        if p.get("mask"):
            mask = np.ones((size[1], size[0]), dtype=bool)
            for rect in p["mask"]:  # dxtbx: (f0, f1, s0, s1), half-open pixel ranges
                if not (isinstance(rect, list) and len(rect) == 4):
                    raise InputError(f"{w}: a mask rectangle must be (f0, f1, s0, s1), got {rect!r}")
                f0, f1, s0, s1 = (int(x) for x in rect)
                mask[max(s0, 0):max(s1, 0), max(f0, 0):max(f1, 0)] = False
        panels.append(_panel(name, o * 1e-3, f, s, size[0], size[1], pix[0] * 1e-3, R, where=w, notes=notes,
                             thickness=thick if thick > 0 else None, mu=mu if thick > 0 and mu > 0 else None,
                             material=material if thick > 0 else None, mask=mask))

    beam_d = wavelength = spindle_d = None
    if beam is not None:
        d = _vec3(beam, "direction", f"{where}: beam")
        if np.linalg.norm(d) == 0:
            raise InputError(f"{where}: beam: a zero direction")
        beam_d = -_unit(d)  # dxtbx stores sample -> source; nbxp the propagation
        lam = beam.get("wavelength")
        if isinstance(lam, (int, float)) and lam > 0 and math.isfinite(lam):
            wavelength = float(lam) * 1e-10
        elif lam is not None:
            raise InputError(f"{where}: beam: 'wavelength' must be a positive number (A), got {lam!r}")
        if "polarization_fraction" in beam:
            notes.append(f"{path}: the beam's polarization (fraction {beam['polarization_fraction']:g}) is not used; "
                         "-polar/-nopolar set it")
    if gonio is not None:
        if "axes" in gonio and "rotation_axis" not in gonio:
            raise InputError(f"{where}: a multi-axis goniometer; nbxp has one spindle (-spindle_axis)")
        a = _vec3(gonio, "rotation_axis", f"{where}: goniometer")
        S = np.asarray(gonio.get("setting_rotation", np.eye(3).reshape(-1)), dtype=np.float64).reshape(3, 3)
        spindle_d = S @ a  # dxtbx's effective axis: the setting rotation applied to the datum
        if np.linalg.norm(spindle_d) == 0:
            raise InputError(f"{where}: goniometer: a zero rotation axis")
    return _spec(panels, R, beam_d=beam_d, wavelength=wavelength, spindle_d=spindle_d, source=path, notes=notes)


# ------------------------------------------------------------------------------- CrystFEL

#: keys that locate or interpret data in the experiment's files; accepted, no geometry
_DATA_KEYS = re.compile(r"^(data|dim\d+|mask\d?(_data|_file|_goodbits|_badbits)?|mask_file|mask_good|mask_bad|"
                        r"peak_list|peak_list_type|saturation_map|saturation_map_file|max_adu|flag_lessthan|"
                        r"flag_morethan|flag_equal|badrow_direction|bandwidth|photon_energy_bandwidth|"
                        r"photon_energy_scale|detector_shift_x|detector_shift_y)$")
_PANEL_KEYS = {"min_fs", "max_fs", "min_ss", "max_ss", "fs", "ss", "corner_x", "corner_y", "res", "clen",
               "coffset", "adu_per_eV", "adu_per_photon", "no_index", "ignore", "mask_edge_pixels"}
_GLOBAL_ONLY = {"photon_energy", "wavelength", "electron_voltage"}
_BAD_XY = {"min_x", "max_x", "min_y", "max_y"}
_BAD_FS = {"min_fs", "max_fs", "min_ss", "max_ss", "panel"}
_VEC = re.compile(r"([+-]?)((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)?([xyz])")


@dataclass
class _Line:
    value: str
    line: int


@dataclass
class _CfPanel:
    name: str
    first_line: int
    keys: dict = field(default_factory=dict)


def _number(where: str, key: str, v: _Line, units: dict | None = None, default_unit: str | None = None) -> float:
    """A number with an optional unit suffix (``units``: suffix -> factor to SI)."""
    parts = v.value.split()
    unit = None
    if units and len(parts) == 2:
        unit = parts[1]
        if unit not in units:
            raise InputError(f"{where}: line {v.line}: {key}: unknown unit {unit!r} (expected "
                             f"{' or '.join(units)})")
        parts = parts[:1]
    if len(parts) != 1:
        raise InputError(f"{where}: line {v.line}: {key}: expected a number, got {v.value!r}")
    try:
        x = float(parts[0])
    except ValueError:
        raise InputError(f"{where}: line {v.line}: {key}: expected a number, got {v.value!r}") from None
    if not math.isfinite(x):
        raise InputError(f"{where}: line {v.line}: {key}: expected a finite number, got {v.value!r}")
    if units:
        x *= units[unit or default_unit]
    return x


def _integer(where, key, v: _Line) -> int:
    x = _number(where, key, v)
    if x != math.floor(x):
        raise InputError(f"{where}: line {v.line}: {key}: expected an integer, got {v.value!r}")
    return int(x)


def _vector(where, key, v: _Line) -> np.ndarray:
    """A CrystFEL direction such as ``-0.0010058x +0.9999995y`` (lab components, pixels)."""
    s = v.value.replace(" ", "")
    out = np.zeros(3)
    pos, seen = 0, set()
    for m in _VEC.finditer(s):
        if m.start() != pos or m.group(3) in seen:
            break
        out["xyz".index(m.group(3))] = float((m.group(1) or "+") + (m.group(2) or "1"))
        seen.add(m.group(3))
        pos = m.end()
    if pos != len(s) or not seen:
        raise InputError(f"{where}: line {v.line}: {key}: expected a vector such as '+1.0x -0.02y', got {v.value!r}")
    return out


def _truthy(where, key, v: _Line) -> bool:
    t = v.value.strip().lower()
    if t in ("1", "true", "yes"):
        return True
    if t in ("0", "false", "no"):
        return False
    raise InputError(f"{where}: line {v.line}: {key}: expected 0/1 or true/false, got {v.value!r}")


def _crystfel(text: str, path: str, R, flag: str) -> DetectorSpec:
    where = f"{flag}: {path}"
    glob: dict[str, _Line] = {}      # global keys as they stand now
    panels: dict[str, _CfPanel] = {}
    bad: dict[str, dict] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise InputError(f"{where}: line {n}: expected 'key = value', got {line!r}")
        key, value = (t.strip() for t in line.split("=", 1))
        if not key or not value:
            raise InputError(f"{where}: line {n}: expected 'key = value', got {line!r}")
        v = _Line(value, n)
        if key.startswith(("group_", "rigid_group")):
            continue  # groups move nothing (geometry refinement uses them)
        if "/" in key:
            owner, _, param = key.partition("/")
            if "/" in param or not owner:
                raise InputError(f"{where}: line {n}: unknown key {key!r}")
            if owner.startswith("bad"):
                if param not in _BAD_XY | _BAD_FS:
                    raise InputError(f"{where}: line {n}: unknown bad-region key {key!r} (expected "
                                     "min_x/max_x/min_y/max_y, or min_fs/max_fs/min_ss/max_ss with panel)")
                bad.setdefault(owner, {"line": n})[param] = v
                continue
            if owner.startswith(("group", "rigid_group")):
                continue
            if owner == "beam":  # old-style beam/photon_energy etc.
                if param in ("photon_energy", "wavelength"):
                    glob[param] = v
                    continue
                if param in ("fluence", "radius", "divergence", "bandwidth", "photon_energy_scale"):
                    continue
                raise InputError(f"{where}: line {n}: unknown key {key!r}")
            if param not in _PANEL_KEYS and not _DATA_KEYS.match(param):
                hint = " (a global key, not per panel)" if param in _GLOBAL_ONLY else ""
                raise InputError(f"{where}: line {n}: unknown panel key {key!r}{hint}")
            p = panels.get(owner)
            if p is None:
                # global values given so far are this panel's defaults (crystfel_geometry(5))
                p = panels[owner] = _CfPanel(owner, n, {k: x for k, x in glob.items() if k in _PANEL_KEYS})
            p.keys[param] = v
            continue
        if key in _PANEL_KEYS or key in _GLOBAL_ONLY or _DATA_KEYS.match(key):
            glob[key] = v
            continue
        raise InputError(f"{where}: line {n}: unknown key {key!r}")

    if not panels:
        raise InputError(f"{where}: no panels (lines such as 'p0/min_fs = 0')")
    notes: list[str] = []

    # the beam: CrystFEL's is along +z; the wavelength from photon_energy or wavelength
    wavelength = None
    if "electron_voltage" in glob:
        v = glob["electron_voltage"]
        raise InputError(f"{where}: line {v.line}: electron_voltage: nbxp simulates X-rays (give photon_energy)")
    if "photon_energy" in glob and "wavelength" in glob:
        v = glob["wavelength"]
        raise InputError(f"{where}: line {v.line}: give photon_energy or wavelength, not both")
    for key in ("photon_energy", "wavelength"):
        if key not in glob:
            continue
        v = glob[key]
        if v.value.split()[0].startswith("/"):
            notes.append(f"{path}: {key} is read per frame from the data files ({v.value}); "
                         "nbxp takes the wavelength from -lambda/-energy")
            continue
        if key == "photon_energy":
            e = _number(where, key, v, {"eV": 1.0, "keV": 1e3}, "eV")
            if e <= 0:
                raise InputError(f"{where}: line {v.line}: photon_energy must be positive, got {v.value!r}")
            wavelength = HC_EV_M / e
        else:
            wavelength = _number(where, key, v, {"m": 1.0, "A": 1e-10}, "m")
            if wavelength <= 0:
                raise InputError(f"{where}: line {v.line}: wavelength must be positive, got {v.value!r}")

    shift = np.zeros(3)
    for i, key in ((0, "detector_shift_x"), (1, "detector_shift_y")):
        if key in glob:
            v = glob[key]
            if v.value.startswith("/"):
                raise InputError(f"{where}: line {v.line}: {key} names a data-file location ({v.value}); "
                                 "nbxp needs the shift as a number (m or mm)")
            shift[i] = _number(where, key, v, {"m": 1.0, "mm": 1e-3}, "m")

    out = []
    adu = None
    layout = []
    for p in panels.values():
        k = p.keys
        pw = f"{where}: panel {p.name} (line {p.first_line})"
        for need in ("min_fs", "max_fs", "min_ss", "max_ss", "fs", "ss", "corner_x", "corner_y", "res"):
            if need not in k:
                raise InputError(f"{pw}: no '{need}' (neither {p.name}/{need} nor a global {need} before it)")
        if "clen" not in k and "clen" in glob:
            k["clen"] = glob["clen"]  # one camera length for the whole detector, wherever it stands
        if "clen" not in k:
            raise InputError(f"{pw}: no 'clen' (the detector's z position, e.g. 'clen = 0.1 m')")
        mn_fs, mx_fs = _integer(where, "min_fs", k["min_fs"]), _integer(where, "max_fs", k["max_fs"])
        mn_ss, mx_ss = _integer(where, "min_ss", k["min_ss"]), _integer(where, "max_ss", k["max_ss"])
        if mn_fs < 0 or mn_ss < 0:
            v = k["min_fs"] if mn_fs < 0 else k["min_ss"]
            raise InputError(f"{where}: line {v.line}: panel {p.name}: negative pixel index {v.value}")
        if mx_fs < mn_fs:
            raise InputError(f"{where}: line {k['max_fs'].line}: panel {p.name}: max_fs {mx_fs} < min_fs {mn_fs}")
        if mx_ss < mn_ss:
            raise InputError(f"{where}: line {k['max_ss'].line}: panel {p.name}: max_ss {mx_ss} < min_ss {mn_ss}")
        res = _number(where, "res", k["res"])
        if res <= 0:
            raise InputError(f"{where}: line {k['res'].line}: panel {p.name}: res must be positive (pixels per m), "
                             f"got {k['res'].value!r}")
        v = k["clen"]
        if v.value.split()[0].startswith("/"):
            raise InputError(f"{where}: line {v.line}: clen names a data-file location ({v.value}); nbxp needs "
                             "the camera length as a number, e.g. 'clen = 0.1 m'")
        clen = _number(where, "clen", v, {"m": 1.0, "mm": 1e-3}, "m")
        coffset = _number(where, "coffset", k["coffset"], {"m": 1.0, "mm": 1e-3}, "m") if "coffset" in k else 0.0
        fs, ss = _vector(where, "fs", k["fs"]), _vector(where, "ss", k["ss"])
        for key, vec in (("fs", fs), ("ss", ss)):
            L = float(np.linalg.norm(vec))
            if L == 0 or abs(L - 1.0) > UNIT_TOLERANCE:
                raise InputError(f"{where}: line {k[key].line}: panel {p.name}: {key} must be a unit vector "
                                 f"(one pixel long), got length {L:.6g}")
        px = 1.0 / res
        cx = _number(where, "corner_x", k["corner_x"])
        cy = _number(where, "corner_y", k["corner_y"])
        corner_cf = np.array([cx * px, cy * px, clen + coffset]) + shift
        nf, ns = mx_fs - mn_fs + 1, mx_ss - mn_ss + 1
        mask = np.ones((ns, nf), dtype=bool)
        ignored = any(_truthy(where, key, k[key]) for key in ("no_index", "ignore") if key in k)
        if ignored:
            mask[:] = False
            notes.append(f"panel {p.name}: no_index: not simulated (written as 0)")
        if "mask_edge_pixels" in k:
            e = _integer(where, "mask_edge_pixels", k["mask_edge_pixels"])
            if e > 0:
                mask[:e, :] = mask[-e:, :] = mask[:, :e] = mask[:, -e:] = False
        for key in ("adu_per_eV", "adu_per_photon"):
            if key in k:
                a = _number(where, key, k[key])
                if key == "adu_per_eV":
                    a = a * (HC_EV_M / wavelength) if wavelength else None
                if a is not None:
                    if adu is not None and abs(a - adu) > 1e-9 * abs(adu):
                        notes.append(f"panel {p.name}: {key} differs from the first panel's; the first is reported")
                    adu = a if adu is None else adu
        layout.append((mn_fs, mx_fs, mn_ss, mx_ss))
        out.append(dict(name=p.name, corner=corner_cf, fs=fs, ss=ss, nf=nf, ns=ns, px=px, mask=mask,
                        range=(mn_fs, mx_fs, mn_ss, mx_ss), pw=pw))

    # bad regions
    byname = {o["name"]: o for o in out}
    for name, b in bad.items():
        keys = set(b) - {"line"}
        bw = f"{where}: line {b['line']}: bad region {name}"
        if keys & _BAD_XY and keys & _BAD_FS:
            raise InputError(f"{bw}: mixes x/y and fs/ss limits (crystfel_geometry(5) allows one kind)")
        if keys & _BAD_XY:
            miss = _BAD_XY - keys
            if miss:
                raise InputError(f"{bw}: missing {', '.join(sorted(miss))}")
            x0, x1 = (_number(where, k, b[k]) for k in ("min_x", "max_x"))
            y0, y1 = (_number(where, k, b[k]) for k in ("min_y", "max_y"))
            for o in out:
                # pixel centres in lab x/y, in that panel's pixel units
                ff, sg = np.meshgrid(np.arange(o["nf"]) + 0.5, np.arange(o["ns"]) + 0.5)
                cpx = o["corner"][:2] / o["px"]
                x = cpx[0] + ff * o["fs"][0] + sg * o["ss"][0]
                y = cpx[1] + ff * o["fs"][1] + sg * o["ss"][1]
                o["mask"] &= ~((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
        else:
            miss = _BAD_FS - keys
            if miss:
                raise InputError(f"{bw}: missing {', '.join(sorted(miss))}")
            pname = b["panel"].value
            if pname not in byname:
                raise InputError(f"{where}: line {b['panel'].line}: bad region {name}: no panel {pname!r}")
            o = byname[pname]
            f0, f1, s0, s1 = (_integer(where, k, b[k]) for k in ("min_fs", "max_fs", "min_ss", "max_ss"))
            mn_fs, _, mn_ss, _ = o["range"]
            # inclusive data coordinates of the file's array, relative to the panel's block
            o["mask"][max(s0 - mn_ss, 0):max(s1 - mn_ss + 1, 0), max(f0 - mn_fs, 0):max(f1 - mn_fs + 1, 0)] = False

    M = NEXUS_FROM_DIALS  # CrystFEL's frame is McStas': v_dials = M @ v_crystfel
    result = []
    for o in out:
        mask = o["mask"] if not o["mask"].all() else None
        result.append(_panel(o["name"], M @ o["corner"], M @ o["fs"], M @ o["ss"], o["nf"], o["ns"], o["px"], R,
                             where=o["pw"], notes=notes, mask=mask))
    # is the file's data layout nbxp's slab (panels stacked along slow, in file order)?
    row, same = 0, True
    width = max(o["nf"] for o in out)
    for (f0, f1, s0, s1), o in zip(layout, out):
        same &= f0 == 0 and s0 == row and f1 + 1 == width
        row = s1 + 1
    notes.append(f"{path}: {len(result)} panels; the file's data layout "
                 + ("is nbxp's slab (panels stacked along slow in file order)" if same else
                    "differs from nbxp's slab (panels stacked along slow in file order), which the outputs use"))
    return _spec(result, R, beam_d=M @ np.array([0.0, 0.0, 1.0]), wavelength=wavelength, spindle_d=None,
                 source=path, notes=notes, adu=adu)
