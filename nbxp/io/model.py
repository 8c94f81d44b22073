"""Atomic models (PDB or mmCIF coordinates), read with gemmi.

Old PDB files that carry the entry code and a line number in columns 73-80 (before the
segment identifier and charge columns existed) make gemmi stop on a bad charge field; they
are read again with the lines cut at column 72, gemmi's option for such files.  Strict NCS
operators (MTRIX/_struct_ncs_oper not marked as given) are applied, so the model is the
whole asymmetric unit.
"""

from __future__ import annotations

from . import InputError
from .reflections import first_line, need_gemmi


def read_model(path: str, data: bytes, kind: str, flag: str = "-pdb"):
    """A gemmi Structure with atoms, a crystal cell and a space group gemmi knows; notes
    about what was done to read it are in ``st.info['nbxp_notes']`` (a ';'-joined string)."""
    gemmi = need_gemmi(path, flag, "an atomic model")
    notes = []
    try:
        if kind == "pdb":
            try:
                st = gemmi.read_pdb_string(data)
            except (RuntimeError, ValueError):
                st = gemmi.read_pdb_string(data, max_line_length=72)
                notes.append("old PDB format: columns 73-80 ignored")
        else:
            doc = gemmi.cif.read_string(data.decode("utf-8", "replace"))
            # the first block with coordinates (a file may also carry others, e.g. restraints)
            blocks = [b for b in doc if b.find_mmcif_category("_atom_site.")] or list(doc)[:1]
            if not blocks:
                raise InputError(f"{flag}: {path} is an empty CIF file")
            st = gemmi.make_structure_from_block(blocks[0])
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{flag}: {path} is not a readable {'PDB' if kind == 'pdb' else 'mmCIF'} "
                         f"coordinate file ({first_line(e)})") from None
    st.remove_empty_chains()
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise InputError(f"{flag}: {path} holds no atoms")
    if len(st) > 1:
        notes.append(f"first of {len(st)} models used")
        while len(st) > 1:
            del st[1]
    if not st.cell.is_crystal():
        raise InputError(f"{flag}: {path} has no crystal unit cell (CRYST1 missing or 1 1 1): "
                         "not a crystal model, so it has no structure factors")
    sg = st.find_spacegroup()
    if sg is None:
        raise InputError(f"{flag}: {path}: space group {st.spacegroup_hm!r} is not one gemmi knows")
    if any(not op.given for op in st.ncs):
        n = sum(not op.given for op in st.ncs)
        st.expand_ncs(gemmi.HowToNameCopiedChain.Dup)
        notes.append(f"{n} NCS operators applied")
    st.info["nbxp_notes"] = "; ".join(notes)
    return st
