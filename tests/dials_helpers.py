"""Run DIALS on nbxp's files and compare what it finds with the truth (reusable helpers).

DIALS runs as commands under the system Python (Debian's package); these helpers only start
them and parse the ``.expt`` JSON they write, so they need neither dxtbx nor cctbx here.
Tests that use them carry :data:`requires_dials` (skipped when ``dials.import`` is absent).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

DIALS_IMPORT = shutil.which("dials.import")
requires_dials = pytest.mark.skipif(DIALS_IMPORT is None, reason="DIALS (dials.import) is not on PATH")

#: photon-count images carry no ADC offset: DIALS' default dispersion threshold then finds
#: too few spots (../shared/notes/dials.md); these spot-finder settings work on them
SPOTFINDER = ("spotfinder.threshold.dispersion.global_threshold=40", "spotfinder.filter.min_spot_size=2")


#: the simulated geometry is the truth: refining detector and beam against a narrow wedge
#: trades the distance against the cell (a 10 degree scan drifted 0.13 mm, the cell 0.18%)
FIX_GEOMETRY = ("refinement.parameterisation.detector.fix=all", "refinement.parameterisation.beam.fix=all")


def dials_env(workdir: Path) -> dict:
    """The environment for DIALS commands: the project's PYTHONPATH removed (DIALS runs under
    the system Python) and an empty ``xfel_mono_sim_ext`` module on its path, which Debian's
    cctbx lacks and DIALS' stills indexer imports (its users are pure Python)."""
    stub = Path(workdir).resolve() / "dials_stub"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "xfel_mono_sim_ext.py").write_text("# empty stand-in for a compiled module Debian's cctbx lacks\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(stub)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run(cmd: list[str], workdir: Path, *, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one DIALS command in ``workdir``; a failure raises with the end of its output."""
    proc = subprocess.run([str(c) for c in cmd], cwd=workdir, env=dials_env(workdir), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{tail}")
    return proc


def load_expt(path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def geometry(doc: dict, i: int = 0) -> dict:
    """Experiment ``i``'s geometry from a parsed ``.expt``: wavelength (A), beam direction
    (sample to source), panel axes/origin (mm), pixel size (mm), image size, distance (mm,
    |origin . normal| as dxtbx gives it), beam centre (fast, slow px), rotation axis and scan (None for stills)."""
    e = doc["experiment"][i]
    beam = doc["beam"][e["beam"]]
    panel = doc["detector"][e["detector"]]["panels"][0]
    f, s, o = (np.array(panel[k], dtype=float) for k in ("fast_axis", "slow_axis", "origin"))
    n = np.cross(f, s)
    n /= np.linalg.norm(n)
    direction = np.array(beam["direction"], dtype=float)
    # where the incident beam (-direction) meets the panel plane
    D = np.column_stack([f, s, direction])
    bf, bs, _ = np.linalg.solve(D, -o)
    out = {"wavelength": beam["wavelength"], "direction": direction, "fast_axis": f, "slow_axis": s,
           "origin": o, "pixel_size": tuple(panel["pixel_size"]), "image_size": tuple(panel["image_size"]),
           "distance": abs(float(o @ n)), "beam_centre_px": (bf / panel["pixel_size"][0], bs / panel["pixel_size"][1]),
           "rotation_axis": None, "scan": None}
    if e.get("goniometer") is not None and doc["goniometer"]:
        out["rotation_axis"] = np.array(doc["goniometer"][e["goniometer"]]["rotation_axis"], dtype=float)
    if e.get("scan") is not None and doc["scan"]:
        sc = doc["scan"][e["scan"]]
        out["scan"] = {"image_range": tuple(sc["image_range"]), "oscillation": tuple(sc["oscillation"])}
    return out


def real_space(doc: dict, i: int = 0) -> np.ndarray:
    """Experiment ``i``'s crystal as real-space rows a, b, c (A)."""
    c = doc["crystal"][doc["experiment"][i]["crystal"]]
    return np.array([c["real_space_a"], c["real_space_b"], c["real_space_c"]], dtype=float)


def cell_parameters(real: np.ndarray) -> tuple[float, ...]:
    """(a, b, c, alpha, beta, gamma) in A and degrees of real-space rows."""
    a, b, c = real
    ang = lambda u, v: math.degrees(math.acos(float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))))  # noqa: E731
    return (float(np.linalg.norm(a)), float(np.linalg.norm(b)), float(np.linalg.norm(c)),
            ang(b, c), ang(c, a), ang(a, b))


def misorientation(found: np.ndarray, truth: np.ndarray) -> float:
    """Angle (degrees) of the rotation taking the truth's lattice onto the found one, after
    the integer change of basis (sign flips, permutations) that relates the two settings."""
    C = found @ np.linalg.inv(truth)
    Ci = np.rint(C)
    if abs(abs(np.linalg.det(Ci)) - 1) > 1e-6 or np.max(np.abs(C - Ci)) > 0.2:
        return 180.0  # not the same lattice
    t = Ci @ truth  # the truth in the found basis: found = t @ Q.T
    Q = np.linalg.lstsq(t, found, rcond=None)[0].T
    u, _, vt = np.linalg.svd(Q)  # nearest rotation
    R = u @ vt
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2))))


def cell_errors(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Largest relative edge error and largest angle error (degrees) between two cells,
    the found one taken in the truth's setting."""
    C = np.rint(found @ np.linalg.inv(truth))
    same = np.linalg.inv(C) @ found
    pf, pt = cell_parameters(same), cell_parameters(truth)
    return (max(abs(pf[i] - pt[i]) / pt[i] for i in range(3)), max(abs(pf[i] - pt[i]) for i in range(3, 6)))


def import_find_index(files, workdir: Path, *, unit_cell, import_args=(),
                      find_args=SPOTFINDER, index_args=FIX_GEOMETRY) -> dict:
    """``dials.import`` + ``dials.find_spots`` + ``dials.index`` (known cell, P1) on ``files``
    in ``workdir``, for a rotation scan (stills: :func:`stills_process`).  Returns the
    parsed ``imported`` and ``indexed`` experiment lists (``indexed`` None when indexing
    failed) and the indexing log."""
    workdir = Path(workdir)
    files = [str(Path(f).resolve()) for f in files]
    run(["dials.import", *files, *import_args, "output.experiments=imported.expt"], workdir)
    imported = load_expt(workdir / "imported.expt")
    run(["dials.find_spots", "imported.expt", *find_args, "output.reflections=strong.refl"], workdir)
    cell = ",".join(f"{v:g}" for v in unit_cell)
    args = ["dials.index", "imported.expt", "strong.refl", f"unit_cell={cell}", "space_group=P1", *index_args]
    proc = subprocess.run(args, cwd=workdir, env=dials_env(workdir), capture_output=True, text=True, timeout=900)
    indexed = load_expt(workdir / "indexed.expt") if (workdir / "indexed.expt").exists() else None
    return {"imported": imported, "indexed": indexed, "index_log": proc.stdout + proc.stderr,
            "index_rc": proc.returncode}


def image_position(doc: dict, i: int, files) -> int:
    """0-based position, in the series ``files`` (as imported), of the image experiment
    ``i`` of an ``.expt`` came from: the frame index inside a NeXus file
    (``single_file_indices``), else the file's place in ``files``."""
    e = doc["experiment"][i]
    iset = doc["imageset"][e["imageset"]]
    files = [str(Path(f).resolve()) for f in files]
    if len(files) == 1:
        return int((iset.get("single_file_indices") or [0])[0])
    images = iset.get("images") or [iset.get("template")]
    k = int((iset.get("single_file_indices") or [0])[0]) if len(images) == 1 else int(e.get("image_index", 0))
    return files.index(str(Path(images[min(k, len(images) - 1)]).resolve()))


def stills_process(files, workdir: Path, *, unit_cell, import_args=(), find_args=SPOTFINDER) -> dict:
    """``dials.import`` then ``dials.stills_process`` (known cell, P1, beam and detector
    fixed, no integration) on a series of still shots.  Returns the parsed ``imported``
    list and ``indexed``: {position in the series: real-space rows} for every shot that
    indexed.  stills_process exits 0 even when nothing indexes, so only its output counts."""
    workdir = Path(workdir)
    files = [str(Path(f).resolve()) for f in files]
    run(["dials.import", *files, *import_args, "output.experiments=imported.expt"], workdir)
    imported = load_expt(workdir / "imported.expt")
    cell = ",".join(f"{v:g}" for v in unit_cell)
    phil = [f"indexing.known_symmetry.unit_cell={cell}", "indexing.known_symmetry.space_group=P1",
            "dispatch.integrate=False", "output.output_dir=stills_out", "output.composite_output=True",
            *FIX_GEOMETRY, *find_args]
    (workdir / "stills_out").mkdir(exist_ok=True)
    proc = run(["dials.stills_process", "imported.expt", *phil], workdir)
    indexed = {}
    for expt in sorted((workdir / "stills_out").glob("*refined.expt")):
        doc = load_expt(expt)
        for i in range(len(doc["experiment"])):
            indexed[image_position(doc, i, files)] = real_space(doc, i)
    return {"imported": imported, "indexed": indexed, "log": proc.stdout + proc.stderr}
