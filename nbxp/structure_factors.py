"""Structure factors from the files crystallographers have: merged MTZ, structure-factor
mmCIF, atomic models (PDB/mmCIF coordinates), and nanoBragg's own text list.

nbxp's grid (:class:`nbxp.config.HKLGrid`) is P1: every reflection the crystal can show
must be on it.  Data files hold the asymmetric unit of the space group, so they are
expanded here:

* every symmetry mate: |F(hR)| = |F(h)| for each rotation R of the point group (the phase
  shift of the translation part does not change the amplitude);
* every Friedel mate: |F(-h)| = |F(h)| (Friedel's law), unless the data are anomalous pairs,
  whose F(-h) is measured (Bijvoet mates: F(+) at h, F(-) at -h, each with its own symmetry
  mates);
* the file's own values win over derived ones, symmetry mates over Friedel mates;
* systematic absences (h fixed by a rotation whose translation gives a non-integral phase
  h.t) are 0, also where the file lists nothing, so ``-default_F`` does not light them up;
* reflections that are not measured keep ``-default_F``, as in nanoBragg.

gemmi's own P1 expansion (``Mtz.expand_to_p1``) yields the symmetry mates only, without
Friedel mates (tests/test_structure_factors.py checks this), hence this module.

F of a model is gemmi's density + FFT route: atoms (IT92 form factors, B, anisotropic U,
occupancies) are put on a grid with an extra blur that keeps the sampling accurate, the map
is Fourier transformed and the blur divided out again.  f' (Cromer-Liberman, gemmi's
implementation) enters as an addend to each element's form factor; f'' as the transform of
a second, "imaginary" density of the same atoms with a constant form factor f''
(F = F_real + i F_imag), so F(h) and F(-h) differ.

All lengths here are SI (metres) except where gemmi's Angstrom values are passed to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .config import HKLGrid
from .io import InputError
from .io.reflections import Reflections, kind_of, read_bytes

#: h c in eV m, to turn a wavelength into the photon energy Cromer-Liberman takes
HC_EV_M = 12398.419843320026e-10
#: grid sampling of the density, points per d_min/2 (gemmi's default is 1.5): at 2 the
#: FFT route agrees with direct summation to ~1e-4 relative for the strong reflections
#: (1e-3 or worse at 1.5), for about twice the cost
RATE = 2.0
#: bulk-solvent model (flat mask): electron density k_sol (e/A^3) and B_sol (A^2), the
#: usual starting values of refinement programs
K_SOL, B_SOL = 0.35, 46.0


@dataclass
class StructureFactorSet:
    """Amplitudes on the full P1 set, from a file or a model.

    ``hkl`` (n, 3) int32 P1 indices, each once, Friedel/Bijvoet mates included; ``F`` (n,)
    amplitudes (the file's units; electrons for a model), 0 at systematic absences.
    ``cell``: a, b, c (m), alpha, beta, gamma (rad), or None for a text list.
    ``d_max``/``d_min`` (m): resolution range of the data; ``completeness``: fraction of the
    unique reflections (Laue group) to ``d_min`` that are present; ``n_asu``: distinct
    reflections given (before expansion).
    """

    hkl: np.ndarray
    F: np.ndarray
    path: str
    kind: str
    label: str
    spacegroup: str
    cell: Optional[tuple]
    n_asu: int
    d_max: float
    d_min: float
    completeness: float
    n_absent: int
    notes: list = field(default_factory=list)
    _hall: str = ""
    #: systematic absences in the box of the last :meth:`grid` (set to 0 there)
    n_absent_grid: int = 0

    def grid(self, default_F: float = 0.0) -> HKLGrid:
        """The dense grid nbxp renders from: the bounding box of ``hkl``, ``default_F``
        where nothing is known, 0 at every systematic absence inside the box."""
        lo = self.hkl.min(axis=0).astype(np.int64)
        hi = self.hkl.max(axis=0).astype(np.int64)
        shape = tuple(int(x) for x in hi - lo + 1)
        if np.prod(shape) > 2**31:
            raise InputError(f"{self.path}: the index range {shape} is too large for a grid")
        F = np.full(shape, float(default_F))
        absent = self._box_absences(lo, shape)
        if absent is not None:
            F[absent] = 0.0
            self.n_absent_grid = int(absent.sum())
        i = self.hkl.astype(np.int64) - lo
        F[i[:, 0], i[:, 1], i[:, 2]] = self.F
        return HKLGrid(F=F, h_min=int(lo[0]), k_min=int(lo[1]), l_min=int(lo[2]), count=len(self.F))

    def listing(self) -> tuple[np.ndarray, np.ndarray]:
        """(hkl, F) of every grid point that does not take ``-default_F``: the expanded set
        plus the absences inside its box, so nanoBragg reading it builds the same grid."""
        lo = self.hkl.min(axis=0).astype(np.int64)
        shape = tuple(int(x) for x in self.hkl.max(axis=0).astype(np.int64) - lo + 1)
        absent = self._box_absences(lo, shape)
        if absent is None:
            return self.hkl, self.F
        have = np.zeros(shape, dtype=bool)
        i = self.hkl.astype(np.int64) - lo
        have[i[:, 0], i[:, 1], i[:, 2]] = True
        extra = np.argwhere(absent & ~have) + lo
        return (np.concatenate([self.hkl, extra.astype(self.hkl.dtype)]),
                np.concatenate([self.F, np.zeros(len(extra))]))

    def _box_absences(self, lo, shape):
        if not self._hall:
            return None
        import gemmi
        ops = gemmi.symops_from_hall(self._hall)
        if not _has_translations(ops):
            return None
        idx = np.empty(tuple(shape) + (3,), dtype=np.int32)
        for j in range(3):
            ax = [None, None, None]
            ax[j] = slice(None)
            idx[..., j] = (np.arange(shape[j], dtype=np.int32) + int(lo[j]))[tuple(ax)]
        return ops.systematic_absences(idx.reshape(-1, 3)).reshape(shape)


def _has_translations(ops) -> bool:
    return len(ops.cen_ops) > 1 or any(any(t != 0 for t in op.tran) for op in ops.sym_ops)


def _rotations(ops) -> np.ndarray:
    """The distinct rotation matrices of the point group, integer (k, 3, 3), identity first;
    h' = h R (row vector) as gemmi's Op.apply_to_hkl."""
    rots = []
    for op in ops.sym_ops:
        R = np.array(op.rot, dtype=np.int64) // op.DEN
        if not any(np.array_equal(R, x) for x in rots):
            rots.append(R)
    eye = [i for i, R in enumerate(rots) if np.array_equal(R, np.eye(3, dtype=np.int64))]
    rots.insert(0, rots.pop(eye[0]))
    return np.stack(rots)


_OFF, _M = 1 << 20, 1 << 21


def _key(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.int64) + _OFF
    return (h[:, 0] * _M + h[:, 1]) * _M + h[:, 2]


def _unkey(k: np.ndarray) -> np.ndarray:
    l = k % _M
    k = k // _M
    return np.stack([k // _M, k % _M, l], axis=1) - _OFF


def expand(hkl: np.ndarray, F_plus: np.ndarray, F_minus: Optional[np.ndarray], ops) -> tuple[np.ndarray, np.ndarray]:
    """P1 (hkl, F) from the given reflections: symmetry mates, Friedel mates, file values
    winning; NaN values are not measured and give nothing.  Absences are not zeroed here."""
    rots = _rotations(ops)
    keys, vals, prio = [], [], []
    sets = [(hkl, F_plus)] + ([(-hkl, F_minus)] if F_minus is not None else [])
    for h, F in sets:
        ok = np.isfinite(F)
        h, F = h[ok], F[ok]
        for j, R in enumerate(rots):
            hr = h @ R
            # priority: 3 the file's own value, 2 a symmetry mate, 1 a Friedel mate of the
            # file's value, 0 a Friedel mate of a symmetry mate
            keys += [_key(hr), _key(-hr)]
            vals += [F, F]
            prio += [np.full(len(F), 3 if j == 0 else 2, np.int8), np.full(len(F), 1 if j == 0 else 0, np.int8)]
    if not keys:
        return np.zeros((0, 3), np.int32), np.zeros(0)
    keys, vals, prio = np.concatenate(keys), np.concatenate(vals), np.concatenate(prio)
    order = np.lexsort((prio, keys))  # stable: among equals the later listing wins
    ks = keys[order]
    last = np.ones(len(ks), dtype=bool)
    last[:-1] = ks[1:] != ks[:-1]
    pick = order[last]
    return _unkey(keys[pick]).astype(np.int32), vals[pick].astype(np.float64)


def _unique_count(hkl: np.ndarray, rots: np.ndarray) -> int:
    """Number of distinct reflections of the Laue group (rotations and inversion) among
    ``hkl``: each index is named by the largest key of its orbit."""
    best = np.full(len(hkl), np.iinfo(np.int64).min)
    for R in rots:
        hr = hkl @ R
        best = np.maximum(best, np.maximum(_key(hr), _key(-hr)))
    return int(len(np.unique(best)))


def expand_to_p1(refl: Reflections, path: str, d_min: Optional[float] = None,
                 flag: str = "-hkl") -> StructureFactorSet:
    """The :class:`StructureFactorSet` of ``refl`` (``d_min`` in m cuts the data; ``flag``
    names the option in messages)."""
    ops = refl.spacegroup.operations()
    cell = refl.cell
    hkl = np.asarray(refl.hkl, dtype=np.int64)
    Fp = np.asarray(refl.F_plus, dtype=np.float64)
    Fm = None if refl.F_minus is None else np.asarray(refl.F_minus, dtype=np.float64)
    # (0,0,0) is the forward beam, not a reflection: drop it (nanoBragg's F000 comes from
    # the list when given; data files do not measure it)
    keep = np.any(hkl != 0, axis=1)
    if d_min is not None:
        keep &= cell.calculate_d_array(hkl.astype(np.float64)) >= d_min * 1e10 * (1 - 1e-9)
    hkl, Fp = hkl[keep], Fp[keep]
    Fm = None if Fm is None else Fm[keep]
    measured = np.isfinite(Fp) if Fm is None else (np.isfinite(Fp) | np.isfinite(Fm))
    if not measured.any():
        cut = f" to {d_min * 1e10:g} A" if d_min is not None else ""
        raise InputError(f"{flag}: {path}: {refl.label.split(' (')[0]} holds no values{cut} (all missing)")
    d = cell.calculate_d_array(hkl[measured].astype(np.float64))
    n_asu = int(len(np.unique(_key(hkl[measured]))))
    p1, F = expand(hkl, Fp, Fm, ops)
    absent = ops.systematic_absences(p1.astype(np.int32))
    F[absent] = 0.0
    d_min_A = float(d.min())
    # against every unique, not systematically absent reflection to d_min (gemmi's count,
    # borderline reflections included as in the data's own d_min)
    import gemmi
    given = hkl[measured]
    given = given[~ops.systematic_absences(given.astype(np.int32))]
    possible = gemmi.count_reflections(cell, refl.spacegroup, d_min_A * (1 - 1e-9))
    completeness = _unique_count(given, _rotations(ops)) / possible if possible else 0.0
    c = cell
    return StructureFactorSet(
        hkl=p1, F=F, path=path, kind=refl.kind, label=refl.label, spacegroup=refl.spacegroup.xhm(),
        cell=(c.a * 1e-10, c.b * 1e-10, c.c * 1e-10, np.radians(c.alpha), np.radians(c.beta), np.radians(c.gamma)),
        n_asu=n_asu, d_max=float(d.max()) * 1e-10, d_min=d_min_A * 1e-10, completeness=completeness,
        n_absent=int(absent.sum()), notes=list(refl.notes), _hall=refl.spacegroup.hall)


# ----------------------------------------------------------------------------- models

def model_reflections(st, d_min: float, wavelength: Optional[float] = None, fprime: bool = True,
                      anomalous: bool = False, solvent: bool = False) -> Reflections:
    """|F| of the gemmi Structure ``st`` on its asymmetric unit to ``d_min`` (m).

    ``wavelength`` (m): f' (and with ``anomalous`` f'') of every element at that photon
    energy (Cromer-Liberman); None or ``fprime=False``: f0 only.  ``solvent``: add a flat
    bulk-solvent contribution (mask of gemmi's SolventMasker, k_sol 0.35 e/A^3, B_sol 46 A^2).
    """
    import gemmi
    d_A = d_min * 1e10
    model = st[0]
    notes = []
    elements = sorted({cra.atom.element.name for cra in model.all()})
    energy = HC_EV_M / wavelength if wavelength else None
    fp_fpp = {}
    if energy is not None and (fprime or anomalous):
        for el in elements:
            z = gemmi.Element(el).atomic_number
            fp_fpp[el] = gemmi.cromer_liberman(z=z, energy=energy) if 0 < z <= 92 else (0.0, 0.0)

    def density(calc, addend):
        calc.d_min = d_A
        calc.rate = RATE
        calc.grid.setup_from(st)
        calc.set_refmac_compatible_blur(model)
        for el in elements:
            calc.addends.set(gemmi.Element(el), addend(el))
        calc.put_model_density_on_grid(model)
        return calc

    dc = density(gemmi.DensityCalculatorX(), lambda el: fp_fpp[el][0] if fprime and el in fp_fpp else 0.0)
    fgrid = gemmi.transform_map_to_f_phi(dc.grid, half_l=True)
    asu = fgrid.prepare_asu_data(dmin=d_A, unblur=dc.blur)
    hkl = np.array(asu.miller_array, dtype=np.int64)
    Fr = np.array(asu.value_array, dtype=np.complex128)
    if solvent:
        Fr = Fr + _solvent(gemmi, st, dc, hkl, d_A)
        notes.append(f"bulk solvent: k_sol {K_SOL} e/A^3, B_sol {B_SOL} A^2")
    if anomalous:
        if energy is None:
            raise ValueError("anomalous structure factors need the wavelength")
        # the imaginary density: same atoms, a constant form factor f''.  gemmi's neutron
        # calculator has constant form factors (scattering lengths b); the addend turns b
        # into f''.
        dn = gemmi.DensityCalculatorN()
        dn.d_min = d_A
        dn.rate = RATE
        dn.grid.setup_from(st)
        dn.blur = dc.blur
        for el in elements:
            b = gemmi.Element(el).neutron92.get_coefs()[0]
            dn.addends.set(gemmi.Element(el), fp_fpp[el][1] - b)
        dn.put_model_density_on_grid(model)
        g2 = gemmi.transform_map_to_f_phi(dn.grid, half_l=True)
        a2 = g2.prepare_asu_data(dmin=d_A, unblur=dn.blur)
        Fi = _aligned(hkl, np.array(a2.miller_array, dtype=np.int64), np.array(a2.value_array, dtype=np.complex128))
        F_plus = np.abs(Fr + 1j * Fi)
        F_minus = np.abs(np.conj(Fr) + 1j * np.conj(Fi))
    else:
        F_plus, F_minus = np.abs(Fr), None
    what = "f0"
    if fp_fpp and fprime:
        what += " + f'"
    if anomalous:
        what += " + i f''"
    if energy is not None and (fprime or anomalous):
        what += f" at {energy:.1f} eV"
    return Reflections(hkl=hkl, F_plus=F_plus, F_minus=F_minus, spacegroup=st.find_spacegroup(), cell=st.cell,
                       kind="model", label=f"computed to {d_A:.3g} A ({what}; density + FFT)", notes=notes)


def _aligned(hkl, other_hkl, other_vals):
    """``other_vals`` reordered to ``hkl`` (both ASU lists of the same reflections)."""
    ka, kb = _key(hkl), _key(other_hkl)
    ob = np.argsort(kb)
    pos = np.searchsorted(kb[ob], ka)
    pos = np.clip(pos, 0, len(kb) - 1)
    out = other_vals[ob][pos]
    out[kb[ob][pos] != ka] = 0.0
    return out


def _solvent(gemmi, st, dc, hkl, d_A):
    """k_sol exp(-B_sol s^2/4) F_mask at ``hkl`` (s = 1/d), mask 1 in the solvent."""
    mask = gemmi.FloatGrid()
    mask.setup_from(st)
    mask.set_size(*dc.grid.shape)
    masker = gemmi.SolventMasker(gemmi.AtomicRadiiSet.Refmac)
    masker.put_mask_on_float_grid(mask, st[0])
    fm = gemmi.transform_map_to_f_phi(mask, half_l=True).prepare_asu_data(dmin=d_A)
    Fm = _aligned(hkl, np.array(fm.miller_array, dtype=np.int64), np.array(fm.value_array, dtype=np.complex128))
    s2 = st.cell.calculate_1_d2_array(hkl.astype(np.float64))
    return K_SOL * np.exp(-B_SOL * s2 / 4.0) * Fm


def model_dmin(corner_d: float, cell) -> float:
    """-sf_dmin's default (m): the detector's corner resolution ``corner_d`` (m) widened by
    two reciprocal-lattice steps (nearest-index rounding reaches half a step beyond the
    corner, tricubic interpolation two) and 2% for mosaic spread and spot size."""
    rstar = max(cell.reciprocal().a, cell.reciprocal().b, cell.reciprocal().c)  # 1/A
    return 1.0 / (1.02 / (corner_d * 1e10) + 2.0 * rstar) * 1e-10


# ----------------------------------------------------------------------------- entry point

def structure_factors(path: str, *, column: Optional[str] = None, block: Optional[str] = None,
                      dmin: Optional[float] = None, wavelength: Optional[float] = None, anomalous: bool = False,
                      fprime: bool = True, solvent: bool = False, corner_d: Optional[float] = None,
                      flag: Optional[str] = None) -> StructureFactorSet:
    """Structure factors of ``path`` on the full P1 set, recognised by content: MTZ,
    structure-factor mmCIF, PDB/mmCIF model, or nanoBragg text (taken as P1, as it is).

    ``column``: MTZ label or ``_refln`` tag (default: the automatic choice, see
    :func:`nbxp.io.reflections.choose_column`); ``block``: mmCIF block name.
    ``dmin`` (m): resolution limit (required for a model unless ``corner_d`` (m), the
    detector's corner resolution, is given: then :func:`model_dmin`).  ``wavelength`` (m):
    for a model, f' (``fprime``) and, with ``anomalous``, f'' at this wavelength; for data,
    ``anomalous`` prefers anomalous pairs in the automatic column choice.  ``solvent``: bulk
    solvent for a model.  ``flag`` names the command-line flag in messages.

    >>> sf = nbxp.structure_factors("data.mtz")          # doctest: +SKIP
    >>> grid = sf.grid(default_F=0.0)                    # doctest: +SKIP
    """
    data = read_bytes(path, flag or "structure_factors")
    kind = kind_of(data)
    if flag is None:
        flag = "-pdb" if kind in ("pdb", "model-cif") else "-hkl"
    if flag == "-pdb" and kind in ("mtz", "sf-cif"):
        raise InputError(f"-pdb: {path} is a{'n MTZ' if kind == 'mtz' else ' structure-factor mmCIF'} file, "
                         "not a model; give it with -hkl")
    if flag == "-pdb" and kind not in ("pdb", "model-cif"):
        raise InputError(f"-pdb: {path} is not a PDB or mmCIF coordinate file")
    if flag == "-hkl" and kind in ("pdb", "model-cif"):
        raise InputError(f"-hkl: {path} is an atomic model ({'PDB' if kind == 'pdb' else 'mmCIF'} coordinates); "
                         "give it with -pdb")
    if kind == "mtz":
        from .io.mtz import read_mtz
        return expand_to_p1(read_mtz(path, data, column, anomalous, flag), path, dmin, flag)
    if kind == "sf-cif":
        from .io.sfcif import read_sfcif
        return expand_to_p1(read_sfcif(path, data, column, block, anomalous, flag), path, dmin, flag)
    if kind == "cif":
        raise InputError(f"{flag}: {path} is a CIF file with neither _refln nor _atom_site items")
    if kind in ("pdb", "model-cif"):
        from .io.model import read_model
        st = read_model(path, data, kind, flag)
        if dmin is None:
            if corner_d is None:
                raise ValueError("structure_factors: a model needs dmin (m)")
            dmin = model_dmin(corner_d, st.cell)
        try:
            refl = model_reflections(st, dmin, wavelength, fprime, anomalous, solvent)
        except RuntimeError as e:  # gemmi's own errors (e.g. a grid it cannot set up)
            from .io.reflections import first_line
            raise InputError(f"{flag}: {path}: cannot compute structure factors ({first_line(e)})") from None
        refl.kind = "PDB model" if kind == "pdb" else "mmCIF model"
        extra = st.info["nbxp_notes"]
        refl.notes = ([extra] if extra else []) + refl.notes
        return expand_to_p1(refl, path, None, flag)
    # nanoBragg's text list: P1 as given, no symmetry
    from .io.hkl import read_hkl_rows
    a = read_hkl_rows(path)
    hkl = np.trunc(a[:, :3]).astype(np.int32)
    return StructureFactorSet(hkl=hkl, F=a[:, 3].copy(), path=path, kind="text", label="h k l F", spacegroup="P 1",
                              cell=None, n_asu=len(a), d_max=float("nan"), d_min=float("nan"),
                              completeness=float("nan"), n_absent=0)


def cell_warnings(file_cell: tuple, given: tuple, path: str, flag: str) -> list[str]:
    """Warnings when ``given`` (a, b, c in m, angles in rad) differs from the file's cell by
    more than 0.5% in an edge or 0.5 degree in an angle."""
    fa = np.array(file_cell[:3]) * 1e10
    ga = np.array(given[:3]) * 1e10
    fang, gang = np.degrees(file_cell[3:]), np.degrees(given[3:])
    rel = np.abs(ga - fa) / fa
    dang = np.abs(gang - fang)
    if rel.max() <= 0.005 and dang.max() <= 0.5:
        return []
    fmt = lambda e, a: " ".join(f"{x:g}" for x in list(e) + list(a))  # noqa: E731
    given_txt = f"-cell {fmt(ga, gang)}" if flag == "-cell" else f"the cell of {flag} ({fmt(ga, gang)})"
    out = [f"WARNING: {given_txt} differs from the cell of {path} ({fmt(fa, fang)}) by up to "
           f"{100 * rel.max():.2g}% and {dang.max():.2g} degrees; the file's indices are used as they are"]
    if np.allclose(np.sort(ga), np.sort(fa), rtol=0.005) and not np.allclose(ga, fa, rtol=0.005):
        out.append("WARNING: the same edges in another order: the file is probably in a different setting")
    elif rel.max() > 0.05 or dang.max() > 5:
        out.append("WARNING: that is not a small refinement difference: probably a different setting or crystal")
    return out
