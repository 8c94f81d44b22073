"""Structure-factor mmCIF files (the PDB's ``-sf.cif``: ``_refln`` loops), read with gemmi.

A file may hold several blocks (data sets); the first merged one (``_refln``, not
``_diffrn_refln``) is used unless one is named.  Tags are the mmCIF dictionary's
(``_refln.F_meas_au``, ``_refln.intensity_meas``, ``_refln.pdbx_F_plus`` ...); '?' and '.'
values are missing.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import InputError
from .reflections import (Column, Reflections, amplitudes, anomalous_note, choose_column, first_line,
                          is_map_coefficient, need_gemmi)

_KINDS = {"F_meas_au": "F", "F_meas": "F", "F_calc_au": "F", "F_calc": "F", "pdbx_F_calc": "F",
          "intensity_meas": "J", "intensity_calc": "J", "F_squared_meas": "J", "F_squared_calc": "J",
          "pdbx_F_plus": "G", "pdbx_F_minus": "G", "pdbx_I_plus": "K", "pdbx_I_minus": "K",
          "pdbx_anom_difference": "D", "index_h": "H", "index_k": "H", "index_l": "H"}


def _kind(tag: str) -> str:
    if tag in _KINDS:
        return _KINDS[tag]
    t = tag.lower()
    if is_map_coefficient(tag) or "delfwt" in t:
        return "MAP"
    if "phase" in t or t.endswith("phwt") or "phdelwt" in t:
        return "P"
    if "sigma" in t or "esd" in t:
        return "Q"
    if "hl_" in t:
        return "A"
    if "fom" in t or "weight" in t:
        return "W"
    return "R"


def read_sfcif(path: str, data: bytes, column: Optional[str] = None, block: Optional[str] = None,
               anomalous: bool = False, flag: str = "-hkl") -> Reflections:
    gemmi = need_gemmi(path, flag, "a structure-factor mmCIF file")
    try:
        doc = gemmi.cif.read_string(data.decode("utf-8", errors="replace"))
        rbs = gemmi.as_refln_blocks(doc)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{flag}: {path} is not a readable CIF file ({first_line(e)})") from None
    names = [rb.block.name for rb in rbs]
    if block is not None:
        pick = [rb for rb in rbs if rb.block.name == block]
        if not pick:
            raise InputError(f"-hkl_block: {path} has no block {block!r}; its blocks: {', '.join(names) or 'none'}")
        rb = pick[0]
        if not rb.is_merged():
            raise InputError(f"-hkl_block: block {block} of {path} holds no merged _refln loop")
    else:
        merged = [rb for rb in rbs if rb.is_merged()]
        if not merged:
            raise InputError(f"{flag}: {path} has no block with a merged _refln loop")
        rb = merged[0]
    rb.use_unmerged(False)
    if rb.spacegroup is None:
        given = [rb.block.find_value(t) for t in ("_symmetry.space_group_name_H-M", "_space_group.name_H-M_alt",
                                                    "_space_group.name_Hall", "_symmetry.Int_Tables_number")]
        given = [gemmi.cif.as_string(g) for g in given if g]
        what = f"space group {given[0]!r} is not one gemmi knows" if given else "no space group given"
        raise InputError(f"{flag}: {path} block {rb.block.name}: {what}")
    if not rb.cell.is_crystal():
        raise InputError(f"{flag}: {path} block {rb.block.name} has no unit cell")
    labels = list(rb.column_labels())
    cols = [Column(t, _kind(t), 0, i) for i, t in enumerate(labels)]
    choice = choose_column(cols, column, anomalous, path, flag)
    try:
        hkl = np.array(rb.make_miller_array(), dtype=np.int64)
        F_plus, F_minus = amplitudes(choice, lambda t: np.array(rb.make_float_array(t), dtype=np.float64))
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{flag}: {path} block {rb.block.name}: {first_line(e)}") from None
    label = choice.description
    if len(names) > 1:
        label += f", block {rb.block.name} of {len(names)}"
    return Reflections(hkl=hkl, F_plus=F_plus, F_minus=F_minus, spacegroup=rb.spacegroup, cell=rb.cell,
                       kind="structure-factor mmCIF", label=label, notes=anomalous_note(choice, anomalous))
