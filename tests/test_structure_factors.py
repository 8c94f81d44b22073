"""Structure factors from MTZ, structure-factor mmCIF and atomic models (nbxp.structure_factors).

Data files are made here with gemmi's own writers; the P1 lists the images are compared
with are expanded here, independently of nbxp's code, with gemmi's per-reflection symmetry
calls (Op.apply_to_hkl, GroupOps.is_systematically_absent).  Real files come from gemmi's
source distribution (GEMMI_TESTS, default /work/scratch/gemmi-sdist/gemmi-*/tests) and
Debian's pymol-data; those tests skip when the files are absent.
"""

from __future__ import annotations

import glob
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gemmi = pytest.importorskip("gemmi")

import nbxp  # noqa: E402
from nbxp.io import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ["-N", "3", "-detpixels", "48", "-pixel", "0.2", "-distance", "40", "-lambda", "1.2",
        "-misset", "11", "23", "37", "-nonoise", "-nopgm", "-noprogress"]


def run_nbxp(args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "nbxp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def image(cwd, name="floatimage.bin"):
    return np.fromfile(Path(cwd) / name, np.float32).astype(np.float64)


def assert_parity(x, y):
    """The parity tool's 'exact' class: max |x - y| <= 1e-5 of the largest value."""
    assert x.shape == y.shape and y.max() > 0
    assert np.abs(x - y).max() <= 1e-5 * np.abs(y).max()


# ----------------------------------------------------------------------------- data made here

def asu_indices(sg, cell, d_min):
    """Every non-absent reflection of the reciprocal ASU to d_min (gemmi's ASU and absences)."""
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    hmax = cell.get_hkl_limits(d_min)
    out = []
    for h in range(-hmax[0], hmax[0] + 1):
        for k in range(-hmax[1], hmax[1] + 1):
            for l in range(-hmax[2], hmax[2] + 1):
                if (h, k, l) != (0, 0, 0) and asu.is_in([h, k, l]) and not ops.is_systematically_absent([h, k, l]) \
                        and cell.calculate_d([h, k, l]) >= d_min * (1 - 1e-9):
                    out.append((h, k, l))
    return np.array(out)


def make_mtz(path, sg_name="P 21 21 21", cell=(21.0, 25.0, 33.0, 90, 90, 90), d_min=3.0, seed=3, columns=None):
    """A merged MTZ of random amplitudes on the ASU; ``columns``: list of (label, type,
    values-function(n, rng)) after H K L (default FP, SIGFP)."""
    sg = gemmi.SpaceGroup(sg_name)
    uc = gemmi.UnitCell(*cell)
    hkl = asu_indices(sg, uc, d_min)
    rng = np.random.default_rng(seed)
    n = len(hkl)
    if columns is None:
        columns = [("FP", "F", lambda n, r: r.uniform(10, 1000, n)), ("SIGFP", "Q", lambda n, r: np.ones(n))]
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = sg
    mtz.set_cell_for_all(uc)
    mtz.add_dataset("synthetic")
    data = [hkl.astype(np.float32)]
    for label, typ, fn in columns:
        mtz.add_column(label, typ)
        data.append(np.asarray(fn(n, rng), dtype=np.float32)[:, None])
    arr = np.hstack(data)
    mtz.set_data(arr)
    mtz.write_to_file(str(path))
    return mtz, hkl, arr


def p1_text(path, hkl, F, sg_name, F_minus=None):
    """The P1 list the data expand to, written independently of nbxp: for each reflection
    every gemmi symmetry mate and Friedel mate (the file's own values first), and every
    systematic absence inside the index box as 0."""
    ops = gemmi.SpaceGroup(sg_name).operations()
    table = {}
    sets = [(hkl, F)] + ([(-hkl, F_minus)] if F_minus is not None else [])
    for hs, Fs in sets:  # the given reflections
        for h, f in zip(hs.tolist(), Fs.tolist()):
            if np.isfinite(f):
                table[tuple(h)] = f
    for hs, Fs in sets:  # symmetry mates
        for h, f in zip(hs.tolist(), Fs.tolist()):
            if np.isfinite(f):
                for op in ops.sym_ops:
                    table.setdefault(tuple(op.apply_to_hkl(h)), f)
    for hs, Fs in sets:  # Friedel mates
        for h, f in zip(hs.tolist(), Fs.tolist()):
            if np.isfinite(f):
                for op in ops.sym_ops:
                    table.setdefault(tuple(-x for x in op.apply_to_hkl(h)), f)
    keys = np.array(list(table))
    lo, hi = keys.min(axis=0), keys.max(axis=0)
    for h in range(lo[0], hi[0] + 1):
        for k in range(lo[1], hi[1] + 1):
            for l in range(lo[2], hi[2] + 1):
                if ops.is_systematically_absent([h, k, l]):
                    table[(h, k, l)] = 0.0
    with open(path, "w") as fh:
        for (h, k, l), f in table.items():
            fh.write(f"{h} {k} {l} {f!r}\n")
    return table


def as_table(sf):
    return {tuple(h): f for h, f in zip(sf.hkl.tolist(), sf.F.tolist())}


# ----------------------------------------------------------------------------- expansion

@pytest.mark.parametrize("sg_name,cell", [("P 21 21 21", (21, 25, 33, 90, 90, 90)),
                                          ("C 1 2 1", (40, 22, 30, 90, 104, 90)),
                                          ("P 31 2 1", (24, 24, 40, 90, 90, 120)),
                                          ("I 4 2 2", (30, 30, 40, 90, 90, 90))])
def test_expansion_is_every_symmetry_and_friedel_mate_with_absences_zero(sg_name, cell, tmp_path):
    _, hkl, arr = make_mtz(tmp_path / "d.mtz", sg_name, cell, d_min=3.0)
    sf = nbxp.structure_factors(str(tmp_path / "d.mtz"))
    ref = p1_text(tmp_path / "p1.hkl", hkl, arr[:, 3].astype(np.float64), sg_name)
    mine = as_table(sf)
    box_extra = {h: f for h, f in ref.items() if h not in mine}
    assert all(f == 0.0 for f in box_extra.values())            # only box absences are extra
    assert all(ref[h] == f for h, f in mine.items())              # same values everywhere else
    assert sf.spacegroup == gemmi.SpaceGroup(sg_name).xhm() and sf.n_asu == len(hkl)
    assert sf.completeness == pytest.approx(1.0)
    # the grid: absences 0, unmeasured default_F, every listed value in place
    g = sf.grid(default_F=7.0)
    lo = np.array([g.h_min, g.k_min, g.l_min])
    for h, f in ref.items():
        assert g.F[tuple(np.array(h) - lo)] == f
    n_default = (g.F == 7.0).sum()
    assert n_default == g.F.size - len(ref) - sum(1 for f in ref.values() if f == 7.0)


def test_completeness_and_resolution_cut(tmp_path):
    cols = [("FP", "F", lambda n, r: np.where(np.arange(n) % 4 == 0, np.nan, r.uniform(1, 9, n)))]
    _, hkl, _ = make_mtz(tmp_path / "d.mtz", "P 31 2 1", (24, 24, 40, 90, 90, 120), d_min=2.5, columns=cols)
    sf = nbxp.structure_factors(str(tmp_path / "d.mtz"))
    n_measured = len(hkl) - len(range(0, len(hkl), 4))
    d = gemmi.UnitCell(24, 24, 40, 90, 90, 120).calculate_d_array(hkl.astype(float))
    measured_dmin = d[np.arange(len(hkl)) % 4 != 0].min()
    full = gemmi.count_reflections(gemmi.UnitCell(24, 24, 40, 90, 90, 120), gemmi.SpaceGroup("P 31 2 1"),
                                   measured_dmin * (1 - 1e-9))
    assert sf.n_asu == n_measured and sf.completeness == pytest.approx(n_measured / full)
    assert sf.d_min == pytest.approx(measured_dmin * 1e-10)
    cut = nbxp.structure_factors(str(tmp_path / "d.mtz"), dmin=4.0e-10)
    assert cut.d_min >= 4.0e-10 and cut.n_asu == int(((d >= 4.0) & (np.arange(len(hkl)) % 4 != 0)).sum())


def test_gemmi_expand_to_p1_lacks_friedel_mates(tmp_path):
    mtz, hkl, _ = make_mtz(tmp_path / "d.mtz", "P 31 2 1", (24, 24, 40, 90, 90, 120))
    mtz.expand_to_p1()
    theirs = {tuple(h) for h in np.array(mtz.make_miller_array()).tolist()}
    ours = set(as_table(nbxp.structure_factors(str(tmp_path / "d.mtz"))))
    assert theirs < ours
    assert ours == theirs | {tuple(-x for x in h) for h in theirs}
    assert any(tuple(-x for x in h) not in theirs for h in theirs)


def test_file_values_win_over_derived_mates(tmp_path):
    # two symmetry-equivalent reflections listed with different values: each keeps its own
    cols = [("FP", "F", lambda n, r: np.arange(1, n + 1) * 10.0)]
    mtz, hkl, arr = make_mtz(tmp_path / "d.mtz", "P 21 21 21", columns=cols)
    h = hkl[5]
    mate = (-h[0], h[1], -h[2])  # 2-fold along b
    extra = np.array([[*mate, 12345.0]], dtype=np.float32)
    mtz.set_data(np.vstack([arr, extra]))
    mtz.write_to_file(str(tmp_path / "d.mtz"))
    t = as_table(nbxp.structure_factors(str(tmp_path / "d.mtz")))
    assert t[tuple(int(x) for x in h)] == arr[5, 3]
    assert t[tuple(int(x) for x in mate)] == 12345.0
    assert t[tuple(-int(x) for x in mate)] == 12345.0     # its Friedel mate follows the file value
    assert t[(int(h[0]), -int(h[1]), -int(h[2]))] == arr[5, 3]  # other mates derived from either
    

def test_intensities_become_sqrt_and_negative_ones_zero(tmp_path):
    cols = [("IMEAN", "J", lambda n, r: np.where(np.arange(n) % 5 == 0, -4.0, r.uniform(1, 1e4, n))),
            ("SIGIMEAN", "Q", lambda n, r: np.ones(n))]
    _, hkl, arr = make_mtz(tmp_path / "i.mtz", columns=cols)
    sf = nbxp.structure_factors(str(tmp_path / "i.mtz"))
    t = as_table(sf)
    for h, I in zip(hkl.tolist(), arr[:, 3].tolist()):
        assert t[tuple(h)] == pytest.approx(math.sqrt(max(I, 0.0)), rel=1e-12)
    assert "IMEAN" in sf.label and "sqrt" in sf.label


def test_anomalous_pairs_go_to_h_and_minus_h(tmp_path):
    # F(+) and F(-) differ; where F(-) is missing, the Friedel mate of F(+) fills in
    nan_every = 7
    cols = [("F(+)", "G", lambda n, r: r.uniform(100, 200, n)),
            ("SIGF(+)", "L", lambda n, r: np.ones(n)),
            ("F(-)", "G", lambda n, r: np.where(np.arange(n) % nan_every == 0, np.nan, r.uniform(300, 400, n))),
            ("SIGF(-)", "L", lambda n, r: np.ones(n))]
    sg = "P 21 21 21"
    _, hkl, arr = make_mtz(tmp_path / "a.mtz", sg, columns=cols)
    sf = nbxp.structure_factors(str(tmp_path / "a.mtz"))
    assert "F(+)/F(-)" in sf.label
    ops = gemmi.SpaceGroup(sg).operations()
    t = as_table(sf)
    for i, (h, fp, fm) in enumerate(zip(hkl.tolist(), arr[:, 3].tolist(), arr[:, 5].tolist())):
        centric = ops.is_reflection_centric(h)
        for op in ops.sym_ops:
            hr = tuple(op.apply_to_hkl(h))
            mr = tuple(-x for x in hr)
            if centric:
                continue  # h and -h are symmetry mates: either value is right
            assert t[hr] == fp
            assert t[mr] == (fp if math.isnan(fm) else fm)
    # the same pair chosen by naming either column
    for lab in ("F(-)", "F(+)"):
        assert as_table(nbxp.structure_factors(str(tmp_path / "a.mtz"), column=lab)) == t


def test_amplitude_with_anomalous_difference(tmp_path):
    cols = [("F", "F", lambda n, r: r.uniform(100, 200, n)), ("SIGF", "Q", lambda n, r: np.ones(n)),
            ("DANO", "D", lambda n, r: r.uniform(-20, 20, n)), ("SIGDANO", "Q", lambda n, r: np.ones(n))]
    _, hkl, arr = make_mtz(tmp_path / "d.mtz", "P 21 21 21", columns=cols)
    mean = as_table(nbxp.structure_factors(str(tmp_path / "d.mtz")))
    anom = as_table(nbxp.structure_factors(str(tmp_path / "d.mtz"), anomalous=True))
    named = as_table(nbxp.structure_factors(str(tmp_path / "d.mtz"), column="DANO"))
    assert anom == named
    ops = gemmi.SpaceGroup("P 21 21 21").operations()
    for h, F, D in zip(hkl.tolist(), arr[:, 3].tolist(), arr[:, 5].tolist()):
        assert mean[tuple(h)] == F and mean[tuple(-x for x in h)] == F
        if not ops.is_reflection_centric(h):
            assert anom[tuple(h)] == pytest.approx(F + D / 2) and anom[tuple(-x for x in h)] == pytest.approx(F - D / 2)


def test_column_choice(tmp_path):
    cols = [("FC", "F", lambda n, r: r.uniform(1, 2, n)), ("FP", "F", lambda n, r: r.uniform(3, 4, n)),
            ("PHIC", "P", lambda n, r: r.uniform(0, 360, n)), ("FWT", "F", lambda n, r: r.uniform(1, 2, n)),
            ("FOM", "W", lambda n, r: r.uniform(0, 1, n)), ("HLA", "A", lambda n, r: r.uniform(0, 1, n))]
    _, _, arr = make_mtz(tmp_path / "m.mtz", columns=cols)
    path = str(tmp_path / "m.mtz")
    assert "FP" in nbxp.structure_factors(path).label            # the usual name wins
    assert nbxp.structure_factors(path).notes == []
    assert any("no anomalous columns" in n for n in nbxp.structure_factors(path, anomalous=True).notes)
    assert "FC" in nbxp.structure_factors(path, column="FC").label
    for lab, why in (("PHIC", "phase"), ("FWT", "map coefficient"), ("FOM", "weight"), ("HLA", "Hendrickson")):
        with pytest.raises(InputError, match=why) as e:
            nbxp.structure_factors(path, column=lab)
        assert "FC (amplitude), FP (amplitude)" in str(e.value) and "FWT (" not in str(e.value)
    with pytest.raises(InputError, match="no column 'NOPE'"):
        nbxp.structure_factors(path, column="NOPE")
    # two amplitudes without a usual name: the choice is the user's
    cols = [("FA", "F", lambda n, r: r.uniform(1, 2, n)), ("FB", "F", lambda n, r: r.uniform(3, 4, n))]
    make_mtz(tmp_path / "two.mtz", columns=cols)
    with pytest.raises(InputError, match="choose one with -hkl_column: FA .*FB"):
        nbxp.structure_factors(str(tmp_path / "two.mtz"))


# ----------------------------------------------------------------------------- images

def test_mtz_image_equals_the_independently_expanded_p1_list(tmp_path):
    sg = "P 31 2 1"
    cell = (24.0, 24.0, 40.0, 90, 90, 120)
    _, hkl, arr = make_mtz(tmp_path / "data.mtz", sg, cell, d_min=2.5)
    p1_text(tmp_path / "p1.hkl", hkl, arr[:, 3].astype(np.float64), sg)
    common = BASE + ["-cell", *map(str, cell), "-default_F", "3"]
    a = run_nbxp(common + ["-hkl", "data.mtz", "-floatfile", "a.bin", "-write_hkl", "w.hkl"], tmp_path)
    assert a.returncode == 0, a.stderr
    b = run_nbxp(common + ["-hkl", "p1.hkl", "-floatfile", "b.bin"], tmp_path)
    assert b.returncode == 0, b.stderr
    x, y = image(tmp_path, "a.bin"), image(tmp_path, "b.bin")
    assert (y > 0).mean() > 0.2 and len(np.unique(y)) > 100   # spots from many reflections
    assert_parity(x, y)
    # the printout says what was read
    out = a.stdout
    assert "structure factors: MTZ data.mtz, FP (amplitudes)" in out
    assert f"space group {gemmi.SpaceGroup(sg).xhm()}" in out
    assert f"{len(hkl)} reflections given" in out and "completeness 100.0% to" in out
    # -write_hkl's list holds the same grid as the independent one
    mine = {tuple(map(int, r[:3])): r[3] for r in np.loadtxt(tmp_path / "w.hkl")}
    ref = {tuple(map(int, r[:3])): r[3] for r in np.loadtxt(tmp_path / "p1.hkl")}
    assert mine == ref
    # without -cell: the file's cell, and the same image
    c = run_nbxp(BASE + ["-default_F", "3", "-hkl", "data.mtz", "-floatfile", "c.bin"], tmp_path)
    assert c.returncode == 0 and "unit cell taken from data.mtz (no -cell or -mat given)" in c.stdout
    assert_parity(image(tmp_path, "c.bin"), y)


def test_sfcif_image_equals_the_independently_expanded_p1_list(tmp_path):
    sg = "C 1 2 1"
    cell = (40.0, 22.0, 30.0, 90, 104, 90)
    mtz, hkl, arr = make_mtz(tmp_path / "data.mtz", sg, cell, d_min=2.5)
    text = gemmi.MtzToCif().write_cif_to_string(mtz)
    import gzip
    (tmp_path / "data-sf.cif.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "data-sf.weird").write_bytes(gzip.compress(text.encode()))  # no .gz: content decides
    p1_text(tmp_path / "p1.hkl", hkl, arr[:, 3].astype(np.float64), sg)
    common = BASE + ["-cell", *map(str, cell), "-default_F", "2"]
    b = run_nbxp(common + ["-hkl", "p1.hkl", "-floatfile", "b.bin"], tmp_path)
    assert b.returncode == 0, b.stderr
    for name in ("data-sf.cif.gz", "data-sf.weird"):
        a = run_nbxp(common + ["-hkl", name, "-floatfile", "a.bin"], tmp_path)
        assert a.returncode == 0, a.stderr
        assert "structure-factor mmCIF" in a.stdout and "F_meas_au" in a.stdout
        assert_parity(image(tmp_path, "a.bin"), image(tmp_path, "b.bin"))


def small_model(sg="P 21 21 21", cell=(21.0, 25.0, 33.0, 90, 90, 90), seed=5, aniso=True):
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*cell)
    st.spacegroup_hm = sg
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    rng = np.random.default_rng(seed)
    for i, el in enumerate(["C", "N", "O", "S", "C", "O", "Fe", "C", "N", "Se"]):
        res = gemmi.Residue()
        res.name = "UNK"
        res.seqid = gemmi.SeqId(i + 1, " ")
        a = gemmi.Atom()
        a.name = el.upper()
        a.element = gemmi.Element(el)
        a.pos = st.cell.orthogonalize(gemmi.Fractional(*rng.uniform(0, 1, 3)))
        a.b_iso = float(rng.uniform(8, 30))
        a.occ = float(rng.uniform(0.5, 1.0))
        if aniso and i % 3 == 0:
            u = a.b_iso / (8 * math.pi ** 2)
            a.aniso = gemmi.SMat33f(u * 1.2, u * 0.9, u, u * 0.1, 0.0, -u * 0.05)
        res.add_atom(a)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


def test_model_matches_gemmi_direct_summation(tmp_path):
    st = small_model()
    (tmp_path / "m.pdb").write_text(st.make_pdb_string())
    lam = 1.0e-10
    sf = nbxp.structure_factors(str(tmp_path / "m.pdb"), dmin=2.0e-10, wavelength=lam)
    st2 = gemmi.read_structure(str(tmp_path / "m.pdb"))
    calc = gemmi.StructureFactorCalculatorX(st2.cell)
    energy = 12398.419843320026 / 1.0
    for el in {a.element.name for r in st2[0]["A"] for a in r}:
        calc.addends.set(gemmi.Element(el), gemmi.cromer_liberman(z=gemmi.Element(el).atomic_number, energy=energy)[0])
    rng = np.random.default_rng(1)
    pick = rng.choice(len(sf.F), 400, replace=False)
    ref = np.array([abs(calc.calculate_sf_from_model(st2[0], h)) for h in sf.hkl[pick].tolist()])
    rel = np.abs(sf.F[pick] - ref) / ref
    big = ref > 0.05 * ref.max()
    assert rel[big].max() <= 1e-3
    assert np.abs(sf.F[pick] - ref).max() <= 1e-3 * ref.max()
    # absences of P212121 (h00 odd) are 0 on the grid
    g = sf.grid(5.0)
    assert g.F[1 - g.h_min, -g.k_min, -g.l_min] == 0.0


def direct_complex_F(st, hkl, fp_fpp):
    """F(h) of the model by direct summation over every symmetry copy of every atom,
    isotropic B, IT92 f0 plus f' + i f'' (numpy only, independent of gemmi's calculators)."""
    ops = st.find_spacegroup().operations()
    cell = st.cell
    out = np.zeros(len(hkl), dtype=complex)
    stol2 = cell.calculate_1_d2_array(hkl.astype(float)) / 4.0
    for cra in st[0].all():
        a = cra.atom
        f0 = np.array([a.element.it92.calculate_sf(x) for x in stol2])
        fp, fpp = fp_fpp[a.element.name]
        T = np.exp(-a.b_iso * stol2)
        x = np.array(cell.fractionalize(a.pos).tolist())
        for op in ops:
            xs = np.array(op.apply_to_xyz(x.tolist()))
            out += a.occ * (f0 + fp + 1j * fpp) * T * np.exp(2j * np.pi * hkl @ xs)
    return out


def test_anomalous_model_bijvoet_mates_differ_as_direct_summation(tmp_path):
    st = small_model(aniso=False)
    (tmp_path / "m.pdb").write_text(st.make_pdb_string())
    lam = 0.98e-10  # near the Se K edge: f'' of Se is large
    sf = nbxp.structure_factors(str(tmp_path / "m.pdb"), dmin=2.2e-10, wavelength=lam, anomalous=True)
    st = gemmi.read_structure(str(tmp_path / "m.pdb"))  # the model as written (PDB rounds occupancies)
    energy = 12398.419843320026 / 0.98
    fp_fpp = {el: gemmi.cromer_liberman(z=gemmi.Element(el).atomic_number, energy=energy)
              for el in ("C", "N", "O", "S", "Fe", "Se")}
    t = as_table(sf)
    rng = np.random.default_rng(2)
    hs = sf.hkl[rng.choice(len(sf.F), 300, replace=False)]
    Fp = np.abs(direct_complex_F(st, hs, fp_fpp))
    Fm = np.abs(direct_complex_F(st, -hs, fp_fpp))
    mine_p = np.array([t[tuple(h)] for h in hs.tolist()])
    mine_m = np.array([t[tuple(-x for x in h)] for h in hs.tolist()])
    assert np.abs(mine_p - Fp).max() <= 1e-3 * Fp.max() and np.abs(mine_m - Fm).max() <= 1e-3 * Fp.max()
    big = Fp > 0.05 * Fp.max()
    assert (np.abs(mine_p - Fp) / Fp)[big].max() <= 1e-3
    bijvoet = np.abs(Fp - Fm)[big] / Fp[big]
    assert bijvoet.max() > 0.01   # the anomalous signal is real ...
    assert (np.abs(mine_p - mine_m)[big] / Fp[big]) == pytest.approx(bijvoet, abs=2e-3)  # ... and reproduced
    # without -anomalous, Friedel's law
    t0 = as_table(nbxp.structure_factors(str(tmp_path / "m.pdb"), dmin=2.2e-10, wavelength=lam))
    assert all(t0[h] == t0[tuple(-x for x in h)] for h in list(t0)[:500])


def test_pdb_image_equals_the_independently_expanded_p1_list(tmp_path):
    st = small_model(sg="P 1 21 1", cell=(20.0, 24.0, 28.0, 90, 100, 90))
    (tmp_path / "m.pdb").write_text(st.make_pdb_string())
    # the ASU amplitudes by gemmi's documented density route, expanded here
    st2 = gemmi.read_structure(str(tmp_path / "m.pdb"))
    dc = gemmi.DensityCalculatorX()
    dc.d_min = 2.5
    dc.rate = 2.0  # nbxp's sampling (structure_factors.RATE)
    dc.grid.setup_from(st2)
    dc.set_refmac_compatible_blur(st2[0])
    dc.put_model_density_on_grid(st2[0])
    asu = gemmi.transform_map_to_f_phi(dc.grid, half_l=True).prepare_asu_data(dmin=2.5, unblur=dc.blur)
    hkl = np.array(asu.miller_array)
    keep = np.any(hkl != 0, axis=1)
    p1_text(tmp_path / "p1.hkl", hkl[keep], np.abs(np.array(asu.value_array))[keep], "P 1 21 1")
    common = BASE + ["-default_F", "1"]
    a = run_nbxp(common + ["-pdb", "m.pdb", "-sf_dmin", "2.5", "-nofprime", "-floatfile", "a.bin"], tmp_path)
    assert a.returncode == 0, a.stderr
    assert "unit cell taken from m.pdb" in a.stdout and "PDB model" in a.stdout
    b = run_nbxp(common + ["-hkl", "p1.hkl", "-cell", "20", "24", "28", "90", "100", "90", "-floatfile", "b.bin"],
                 tmp_path)
    assert b.returncode == 0, b.stderr
    assert_parity(image(tmp_path, "a.bin"), image(tmp_path, "b.bin"))


def test_model_default_resolution_covers_the_detector_corner(tmp_path):
    st = small_model()
    (tmp_path / "m.pdb").write_text(st.make_pdb_string())
    p = run_nbxp(BASE + ["-pdb", "m.pdb", "-floatfile", "a.bin"], tmp_path)
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stdout.splitlines() if "-sf_dmin" in x][0]
    sf_d, corner = float(line.split()[1]), float(line.split("corner's ")[1].split()[0])
    # corner: 48 pixels of 0.2 mm from a centred beam at 40 mm, 1.2 A
    r = math.hypot(24 * 0.2 + 0.1, 24 * 0.2 + 0.1)
    expect = 1.2 / (2 * math.sin(math.atan(r / 40) / 2))
    assert corner == pytest.approx(expect, rel=2e-2)
    rstar = max(st.cell.reciprocal().a, st.cell.reciprocal().b, st.cell.reciprocal().c)
    assert 1 / sf_d == pytest.approx(1.02 / corner + 2 * rstar, rel=1e-2)


def test_model_formats_ncs_and_old_pdb_lines(tmp_path):
    import gzip
    st = gemmi.read_pdb_string(small_model().make_pdb_string())  # the atoms as PDB holds them
    (tmp_path / "m.pdb").write_text(st.make_pdb_string())
    (tmp_path / "m.cif.gz").write_bytes(gzip.compress(st.make_mmcif_document().as_string().encode()))
    ref = nbxp.structure_factors(str(tmp_path / "m.pdb"), dmin=3e-10)
    cif = nbxp.structure_factors(str(tmp_path / "m.cif.gz"), dmin=3e-10)
    assert cif.kind == "mmCIF model" and np.array_equal(cif.hkl, ref.hkl)
    assert np.allclose(cif.F, ref.F, rtol=1e-6)
    # a block without coordinates before the model's
    (tmp_path / "two.cif").write_text("data_other\n_cell.length_a 5\n\n" + st.make_mmcif_document().as_string())
    two = nbxp.structure_factors(str(tmp_path / "two.cif"), dmin=3e-10)
    assert np.array_equal(two.hkl, ref.hkl) and np.allclose(two.F, ref.F, rtol=1e-6)
    # old PDB lines: entry code and line number in columns 73-80 (charge columns 79-80 hold digits)
    old = []
    for n, line in enumerate(st.make_pdb_string().splitlines(), 1):
        old.append(f"{line[:72]:72s}1ABC{n:4d}" if line.startswith(("ATOM", "HETATM", "ANISOU")) else line)
    (tmp_path / "old.pdb").write_text("\n".join(old) + "\n")
    with pytest.raises(RuntimeError):
        gemmi.read_pdb_string((tmp_path / "old.pdb").read_text())
    o = nbxp.structure_factors(str(tmp_path / "old.pdb"), dmin=3e-10)
    assert any("columns 73-80" in n for n in o.notes)
    assert np.array_equal(o.hkl, ref.hkl) and np.allclose(o.F, ref.F, rtol=1e-6)
    # strict NCS: a second copy by an operator that is not 'given' is generated
    ncs = gemmi.read_pdb_string(st.make_pdb_string())
    op = gemmi.NcsOp()
    op.id = "2"
    op.given = False
    op.tr.mat.fromlist([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    op.tr.vec.fromlist([3.0, 1.0, 2.0])
    ncs.ncs.append(op)
    (tmp_path / "ncs.pdb").write_text(ncs.make_pdb_string())
    full = gemmi.read_pdb_string(ncs.make_pdb_string())
    full.expand_ncs(gemmi.HowToNameCopiedChain.Dup)
    (tmp_path / "full.pdb").write_text(full.make_pdb_string())
    a = nbxp.structure_factors(str(tmp_path / "ncs.pdb"), dmin=3e-10)
    b = nbxp.structure_factors(str(tmp_path / "full.pdb"), dmin=3e-10)
    assert any("NCS" in n for n in a.notes)
    assert np.array_equal(a.hkl, b.hkl) and np.allclose(a.F, b.F, rtol=1e-5)
    assert not np.allclose(a.F, ref.F, rtol=1e-2)


def test_mat_cell_disagreement_warns(tmp_path):
    make_mtz(tmp_path / "d.mtz")  # cell 21 25 33 90 90 90
    lam = 1.2
    for name, edges in (("same.mat", (21.0, 25.0, 33.0)), ("off.mat", (22.0, 25.0, 33.0))):
        A = np.diag([lam / e for e in edges])  # rows: a*, b*, c* components times lambda
        (tmp_path / name).write_text("\n".join(" ".join(f"{x:.10f}" for x in row) for row in A) + "\n")
    ok = run_nbxp(BASE + ["-hkl", "d.mtz", "-mat", "same.mat"], tmp_path)
    assert ok.returncode == 0 and "WARNING" not in ok.stdout, ok.stderr
    off = run_nbxp(BASE + ["-hkl", "d.mtz", "-mat", "off.mat"], tmp_path)
    assert off.returncode == 0 and "WARNING: the cell of -mat (22 25 33 90 90 90) differs from the cell of d.mtz" in off.stdout


def test_cell_disagreement_warns(tmp_path):
    make_mtz(tmp_path / "d.mtz")
    ok = run_nbxp(BASE + ["-hkl", "d.mtz", "-cell", "21.05", "25", "33", "90", "90", "90"], tmp_path)
    assert ok.returncode == 0 and "WARNING" not in ok.stdout
    off = run_nbxp(BASE + ["-hkl", "d.mtz", "-cell", "21.5", "25", "33", "90", "90", "90"], tmp_path)
    assert off.returncode == 0
    assert "WARNING: -cell 21.5 25 33 90 90 90 differs from the cell of d.mtz" in off.stdout
    perm = run_nbxp(BASE + ["-hkl", "d.mtz", "-cell", "25", "21", "33", "90", "90", "90"], tmp_path)
    assert "different setting" in perm.stdout


# ----------------------------------------------------------------------------- bad input

def _bad_files(d: Path):
    make_mtz(d / "good.mtz")
    raw = (d / "good.mtz").read_bytes()
    (d / "trunc.mtz").write_bytes(raw[:len(raw) // 2])
    (d / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (d / "unknown_sg.mtz").write_bytes(raw.replace(b"'P 21 21 21'", b"'Q 9 9 9   '"))
    make_mtz(d / "nan.mtz", columns=[("FP", "F", lambda n, r: np.full(n, np.nan))])
    st = small_model()
    pdb = st.make_pdb_string()
    (d / "good.pdb").write_text(pdb)
    (d / "noatoms.pdb").write_text("\n".join(x for x in pdb.splitlines() if not x.startswith(("ATOM", "HETATM",
                                                                                                    "ANISOU"))))
    (d / "nocell.pdb").write_text("\n".join(x for x in pdb.splitlines() if not x.startswith("CRYST1")))
    (d / "cell111.pdb").write_text(pdb.replace(pdb.splitlines()[0], "CRYST1    1.000    1.000    1.000  90.00  "
                                                                    "90.00  90.00 P 1           1"))
    (d / "badsg.pdb").write_text(pdb.replace("P 21 21 21", "Q 9 9 9   "))
    cif = gemmi.MtzToCif().write_cif_to_string(gemmi.read_mtz_file(str(d / "good.mtz")))
    (d / "badsg-sf.cif").write_text(cif.replace("'P 21 21 21'", "'Q 9 9 9'").replace("_symmetry.Int_Tables_number 19",
                                                                                     ""))
    (d / "plain.cif").write_text("data_x\n_cell.length_a 10\n")
    (d / "good-sf.cif").write_text(cif)
    (d / "p1.hkl").write_text("1 2 3 100\n")


BAD = [
    (["-hkl", "junk.bin"], "junk.bin is not a text file"),
    (["-hkl", "trunc.mtz"], "trunc.mtz is not a readable MTZ file"),
    (["-hkl", "good.mtz", "-hkl_column", "F_nope"], "good.mtz has no column 'F_nope'"),
    (["-hkl", "good.mtz", "-hkl_column", "SIGFP"], "column SIGFP of good.mtz is a standard deviation"),
    (["-hkl", "nan.mtz"], "nan.mtz: FP holds no values"),
    (["-hkl", "unknown_sg.mtz"], "unknown_sg.mtz: space group 'Q 9 9 9' is not one gemmi knows"),
    (["-hkl", "badsg-sf.cif"], "badsg-sf.cif block mtz: space group 'Q 9 9 9' is not one gemmi knows"),
    (["-hkl", "plain.cif"], "plain.cif is a CIF file with neither _refln nor _atom_site"),
    (["-hkl", "good.pdb"], "good.pdb is an atomic model"),
    (["-pdb", "good.mtz"], "good.mtz is an MTZ file, not a model"),
    (["-pdb", "junk.bin"], "junk.bin is not a PDB or mmCIF coordinate file"),
    (["-pdb", "noatoms.pdb"], "noatoms.pdb holds no atoms"),
    (["-pdb", "nocell.pdb"], "nocell.pdb has no crystal unit cell"),
    (["-pdb", "cell111.pdb"], "cell111.pdb has no crystal unit cell"),
    (["-pdb", "badsg.pdb"], "badsg.pdb: space group"),
    (["-hkl", "good.mtz", "-pdb", "good.pdb"], "-hkl and -pdb"),
    (["-default_F", "1", "-cell", "20", "-write_hkl", "x.hkl"], "-write_hkl: needs structure factors"),
    (["-hkl", "p1.hkl", "-cell", "20", "-hkl_column", "FP"], "p1.hkl is an 'h k l F' text list"),
    (["-default_F", "1", "-cell", "20", "-hkl_column", "FP"], "-hkl_column/-hkl_block: they choose data in an -hkl"),
    (["-hkl", "good-sf.cif", "-hkl_block", "nope"], "good-sf.cif has no block 'nope'; its blocks: mtz"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(e) for e, _ in BAD])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(extra, message, tmp_path):
    _bad_files(tmp_path)
    before = sorted(os.listdir(tmp_path))
    p = run_nbxp(BASE + extra + ["-write_hkl", "out.hkl"] * ("-write_hkl" not in extra), tmp_path)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_without_gemmi_text_works_and_data_files_say_why(tmp_path):
    make_mtz(tmp_path / "d.mtz")
    (tmp_path / "p1.hkl").write_text("1 2 3 100\n0 0 1 50\n")
    block = ("import sys; sys.modules['gemmi'] = None; from nbxp.cli import main; sys.exit(main(sys.argv[1:]))")
    run = lambda *a: subprocess.run([sys.executable, "-c", block, *BASE, "-cell", "20", *a], cwd=tmp_path,  # noqa
                                    capture_output=True, text=True, timeout=120)
    ok = run("-hkl", "p1.hkl")
    assert ok.returncode == 0, ok.stderr
    bad = run("-hkl", "d.mtz")
    assert bad.returncode != 0
    assert bad.stderr.strip() == ("nbxp: error: -hkl: d.mtz is an MTZ file; reading it needs gemmi, which is not "
                                  "installed (pip install 'nbxp[sf]')")
    # nbxp itself never imports gemmi for a plain run
    p = subprocess.run([sys.executable, "-c", "import nbxp, nbxp.cli, nbxp.flags, nbxp.structure_factors, sys; "
                        "print('gemmi' in sys.modules)"], capture_output=True, text=True)
    assert p.stdout.strip() == "False"


# ----------------------------------------------------------------------------- real files

def _gemmi_tests():
    d = os.environ.get("GEMMI_TESTS")
    cands = [d] if d else sorted(glob.glob("/work/scratch/gemmi-sdist/gemmi-*/tests"))
    for c in cands:
        if c and os.path.isfile(os.path.join(c, "5e5z.mtz")):
            return Path(c)
    pytest.skip("gemmi's source-distribution test files are not here (set GEMMI_TESTS)")


def _pymol(name):
    for d in ("/usr/share/pymol/data/demo", "/usr/share/pymol/data/tut", "/usr/share/pymol/test/dat"):
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    pytest.skip(f"{name} not found (Debian package pymol-data)")


def test_real_mtz_and_sfcif_of_the_same_entry(tmp_path):
    t = _gemmi_tests()
    mtz = nbxp.structure_factors(str(t / "5wkd_phases.mtz.gz"))
    cif = nbxp.structure_factors(str(t / "r5wkdsf.ent"))
    assert mtz.spacegroup == cif.spacegroup == "C 1 2 1"
    assert set(as_table(mtz)) == set(as_table(cif))                 # the same reflections
    a, b = as_table(mtz), as_table(cif)
    corr = np.corrcoef([a[h] for h in a], [b[h] for h in a])[0, 1]
    assert corr > 0.99                                              # FP rescaled vs F_meas_au
    p = run_nbxp(BASE + ["-hkl", str(t / "5e5z.mtz")], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "P 1 21 1" in p.stdout and "FP (amplitudes)" in p.stdout


def test_real_protein_models():
    tii = _pymol("1tii.pdb")
    sf = nbxp.structure_factors(tii, dmin=2.0e-10, wavelength=1.0e-10)
    assert sf.spacegroup == "P 31 2 1" and sf.completeness == pytest.approx(1.0)
    assert 860_000 < len(sf.F) < 880_000
    # bulk solvent flattens the low-resolution contrast (protein ~0.43 e/A^3 in 0.35 e/A^3
    # solvent) and fades out by exp(-B_sol s^2 / 4) at high resolution
    dry = nbxp.structure_factors(tii, dmin=4.0e-10, wavelength=1.0e-10)
    wet = nbxp.structure_factors(tii, dmin=4.0e-10, wavelength=1.0e-10, solvent=True)
    assert np.array_equal(dry.hkl, wet.hkl) and any("bulk solvent" in n for n in wet.notes)
    d = gemmi.UnitCell(*(x * 1e10 for x in dry.cell[:3]), *np.degrees(dry.cell[3:])).calculate_d_array(
        dry.hkl.astype(float))
    low, high = d > 15, d < 5
    assert (wet.F[low] ** 2).sum() / (dry.F[low] ** 2).sum() < 0.5
    assert 0.9 < (wet.F[high] ** 2).sum() / (dry.F[high] ** 2).sum() < 1.1
    old = nbxp.structure_factors(_pymol("1hpv.pdb"), dmin=4.0e-10)   # columns 73-80 hold line numbers
    assert old.spacegroup == "P 61" and any("columns 73-80" in n for n in old.notes)
