"""MTZ reflection files (CCP4's binary format), read with gemmi.

Only merged files: an MTZ with batch headers holds unmerged observations.  Column types are
MTZ's own letters (F amplitude, J intensity, G/K anomalous pairs, D anomalous difference, ...);
missing values (MNF) come back from gemmi as NaN.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import numpy as np

from . import InputError
from .reflections import (Column, Reflections, amplitudes, anomalous_note, choose_column, first_line,
                          is_map_coefficient, need_gemmi)


def read_mtz(path: str, data: bytes, column: Optional[str] = None, anomalous: bool = False,
             flag: str = "-hkl") -> Reflections:
    """The chosen column(s) of the MTZ file ``path`` (``data``: its decompressed content)."""
    gemmi = need_gemmi(path, flag, "an MTZ file")
    try:
        with open(path, "rb") as fh:
            plain = fh.read(4) == b"MTZ "
        if plain:
            mtz = gemmi.read_mtz_file(path)
        else:
            # gemmi decompresses only files named .gz: hand it the decompressed bytes
            with tempfile.TemporaryDirectory() as d:
                tmp = os.path.join(d, "data.mtz")
                with open(tmp, "wb") as fh:
                    fh.write(data)
                mtz = gemmi.read_mtz_file(tmp)
    except (RuntimeError, ValueError, OSError) as e:
        raise InputError(f"{flag}: {path} is not a readable MTZ file ({first_line(e)})") from None
    if mtz.nreflections == 0:
        raise InputError(f"{flag}: {path} holds no reflections")
    if len(mtz.batches) > 0:
        raise InputError(f"{flag}: {path} is an unmerged MTZ file (it has batches); merge it first")
    if mtz.spacegroup is None:
        raise InputError(f"{flag}: {path}: space group {mtz.spacegroup_name.strip()!r} is not one gemmi knows")
    cols = []
    for i, c in enumerate(mtz.columns):
        kind = c.type if c.type in "FJGKDPWAQLMHIYBR" else "R"
        if kind == "F" and is_map_coefficient(c.label):
            kind = "MAP"
        cols.append(Column(c.label, kind, c.dataset_id, i))
    choice = choose_column(cols, column, anomalous, path, flag)
    F_plus, F_minus = amplitudes(choice, lambda lab: np.array(mtz.column_with_label(lab).array, dtype=np.float64))
    hkl = np.array(mtz.make_miller_array(), dtype=np.int64)
    ds = mtz.column_with_label(choice.labels[0]).dataset
    cell = ds.cell if ds.cell.is_crystal() else mtz.cell
    if not cell.is_crystal():
        raise InputError(f"{flag}: {path} has no unit cell")
    return Reflections(hkl=hkl, F_plus=F_plus, F_minus=F_minus, spacegroup=mtz.spacegroup, cell=cell,
                       kind="MTZ", label=choice.description, notes=anomalous_note(choice, anomalous))
