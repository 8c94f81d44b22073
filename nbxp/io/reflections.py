"""What the structure-factor readers share: recognising a file by its content, gzip,
gemmi's import, the record every reader returns, and the choice of a data column.

Recognition is by content, never by the name: gzip (magic ``1f 8b``) is undone first; an
MTZ file starts with ``MTZ `` (CCP4 MTZ format, word 1); a CIF's first non-comment line
starts with ``data_`` (CIF 1.1 syntax), and it is a structure-factor file when it has
``_refln`` items, a coordinate file when it has ``_atom_site`` items; a PDB coordinate file
starts with one of the PDB format's record names; anything else is nanoBragg's text.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import InputError

_PDB_RECORDS = ("HEADER", "TITLE ", "COMPND", "SOURCE", "KEYWDS", "EXPDTA", "AUTHOR", "REVDAT", "JRNL  ",
                "REMARK", "CRYST1", "ATOM  ", "HETATM", "MODEL ", "SCALE1", "ORIGX1", "SEQRES", "OBSLTE",
                "SPLIT ", "CAVEAT", "NUMMDL", "MDLTYP", "DBREF ", "HELIX ", "SHEET ", "MTRIX1", "ANISOU")


def read_bytes(path: str, flag: str) -> bytes:
    """The content of ``path``, decompressed when it is gzip data."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise InputError(f"{flag}: cannot read {path}: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{flag}: {path} is damaged gzip data ({e})") from None
    return raw


def kind_of(data: bytes) -> str:
    """'mtz', 'sf-cif', 'model-cif', 'cif' (neither), 'pdb' or 'text'."""
    if data[:4] == b"MTZ ":
        return "mtz"
    head = data[:65536]
    for line in head.splitlines():
        s = line.strip()
        if not s or s.startswith(b"#"):
            continue
        if s[:5].lower() == b"data_":
            if re.search(rb"(?m)^\s*_refln[._]", data):
                return "sf-cif"
            if re.search(rb"(?m)^\s*_atom_site[._]", data):
                return "model-cif"
            return "cif"
        break
    records = {r.rstrip() for r in _PDB_RECORDS}
    for line in head.splitlines()[:50]:
        if line[:6].decode("latin-1").upper().rstrip() in records:
            return "pdb"
    return "text"


def need_gemmi(path: str, flag: str, what: str):
    """The gemmi module, or a one-line error saying why it is needed and how to get it."""
    try:
        import gemmi
    except ImportError:
        raise InputError(f"{flag}: {path} is {what}; reading it needs gemmi, which is not installed "
                         "(pip install 'nbxp[sf]')") from None
    return gemmi


def first_line(e: BaseException) -> str:
    """gemmi's message, one line (its parser errors can span several)."""
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


@dataclass
class Reflections:
    """Amplitudes as a file (or a model) gives them, before expansion to P1.

    ``hkl`` (n, 3) int; ``F_plus`` (n,) amplitudes at ``hkl`` (NaN: not measured);
    ``F_minus`` (n,) amplitudes at ``-hkl`` for anomalous data, else None.  ``spacegroup``
    and ``cell`` are gemmi objects.  ``label`` says which column(s) were used.
    """

    hkl: np.ndarray
    F_plus: np.ndarray
    F_minus: Optional[np.ndarray]
    spacegroup: object
    cell: object
    kind: str
    label: str
    notes: list = field(default_factory=list)


# ----------------------------------------------------------------------------- columns

#: automatic choice, in order: the usual names of mean amplitudes, then of intensities
PREFERRED_F = ("FP", "F", "FOBS", "FMEAN", "F_MEAS", "F_MEAS_AU", "F-OBS", "FO")
PREFERRED_I = ("IMEAN", "I", "IOBS", "I-OBS", "INTENSITY_MEAS")

#: what each column kind is; MTZ's type letters (CCP4 MTZ format, column types)
USABLE = {"F": "amplitude", "J": "intensity", "G": "anomalous amplitude", "K": "anomalous intensity",
          "D": "anomalous difference"}
REFUSED = {"P": "a phase", "W": "a weight", "A": "a Hendrickson-Lattman coefficient", "Q": "a standard deviation",
           "L": "a standard deviation", "M": "a standard deviation", "H": "a Miller index", "I": "an integer column",
           "Y": "an M/ISYM column", "B": "a batch number", "R": "not an amplitude or intensity",
           "MAP": "a map coefficient (FWT, DELFWT, ...), not a measured amplitude"}


def is_map_coefficient(label: str) -> bool:
    """FWT, DELFWT, 2FOFCWT, FOFCWT, pdbx_FWT, FWT_ANO ...: weighted map coefficients."""
    return "FWT" in label.upper() or bool(re.match(r"^(2?FOFC|2FO-FC|FO-FC)", label.upper()))


@dataclass
class Column:
    label: str
    kind: str      # a key of USABLE or REFUSED
    group: int     # MTZ dataset (anomalous partners are looked for in the same one)
    order: int


@dataclass
class Choice:
    """``labels``: (main,) or (plus, minus) for G/K pairs, or (F, D) for an F with its
    anomalous difference; ``kind``: 'F', 'J', 'GG', 'KK' or 'FD'."""

    kind: str
    labels: tuple

    @property
    def description(self) -> str:
        what = {"F": "amplitudes", "J": "intensities, F = sqrt(max(I, 0))", "GG": "anomalous amplitudes to h and -h",
                "KK": "anomalous intensities to h and -h, F = sqrt(max(I, 0))",
                "FD": "amplitude and anomalous difference, F(+-h) = F +- D/2"}[self.kind]
        return "/".join(self.labels) + f" ({what})"


_PAIR = [("(+)", "(-)"), ("PLUS", "MINUS"), ("plus", "minus"), ("Plus", "Minus"), ("+", "-"), ("_P", "_M")]


def _partner(col: Column, columns: list[Column]) -> Optional[tuple[Column, Column]]:
    """The (plus, minus) pair ``col`` belongs to (same kind, same dataset), or None."""
    same = [c for c in columns if c.kind == col.kind and c.group == col.group and c is not col]
    by_label = {c.label: c for c in same}
    for p, m in _PAIR:
        if p in col.label and col.label.replace(p, m) in by_label:
            return col, by_label[col.label.replace(p, m)]
        if m in col.label and col.label.replace(m, p) in by_label:
            return by_label[col.label.replace(m, p)], col
    if len(same) == 1:
        return (col, same[0]) if col.order < same[0].order else (same[0], col)
    return None


def _pairs(columns: list[Column], kind: str) -> list[tuple[Column, Column]]:
    out = []
    for c in columns:
        if c.kind == kind:
            pr = _partner(c, columns)
            if pr is not None and pr not in out:
                out.append(pr)
    return out


def _f_for_d(d: Column, columns: list[Column]) -> Optional[Column]:
    """The amplitude an anomalous difference belongs to: the nearest F before it in its
    dataset (CCP4 programs write F, SIGF, DANO, SIGDANO)."""
    before = [c for c in columns if c.kind == "F" and c.group == d.group and c.order < d.order]
    return before[-1] if before else None


def choose_column(columns: list[Column], wanted: Optional[str], anomalous: bool, path: str, flag: str) -> Choice:
    """The column(s) to read: ``wanted`` if given (checked), else the automatic choice."""
    usable = [c for c in columns if c.kind in USABLE]

    def listing():
        return ", ".join(f"{c.label} ({USABLE[c.kind]})" for c in usable) or "none"

    if wanted is not None:
        match = [c for c in columns if c.label == wanted] or [c for c in columns if c.label.upper() == wanted.upper()]
        if not match:
            raise InputError(f"-hkl_column: {path} has no column {wanted!r}; usable columns: {listing()}")
        c = match[0]
        if c.kind not in USABLE:
            raise InputError(f"-hkl_column: column {c.label} of {path} is {REFUSED[c.kind]}; "
                             f"usable columns: {listing()}")
        if c.kind in ("G", "K"):
            pr = _partner(c, columns)
            if pr is None:
                raise InputError(f"-hkl_column: {path}: no partner column for the anomalous column {c.label}")
            return Choice(c.kind * 2, (pr[0].label, pr[1].label))
        if c.kind == "D":
            f = _f_for_d(c, columns)
            if f is None:
                raise InputError(f"-hkl_column: {path}: no amplitude before the anomalous difference {c.label}")
            return Choice("FD", (f.label, c.label))
        return Choice(c.kind, (c.label,))

    Fs = [c for c in usable if c.kind == "F"]
    Js = [c for c in usable if c.kind == "J"]
    if anomalous:
        for kind in ("G", "K"):
            prs = _pairs(columns, kind)
            if prs:
                return Choice(kind * 2, (prs[0][0].label, prs[0][1].label))
        for d in (c for c in usable if c.kind == "D"):
            f = _f_for_d(d, columns)
            if f is not None:
                return Choice("FD", (f.label, d.label))
    for cands, names, kind in ((Fs, PREFERRED_F, "F"), (Js, PREFERRED_I, "J")):
        for name in names:
            hit = [c for c in cands if c.label.upper() == name]
            if hit:
                return Choice(kind, (hit[0].label,))
        if len(cands) == 1:
            return Choice(kind, (cands[0].label,))
        if cands:
            raise InputError(f"{flag}: {path} has several {USABLE[kind]} columns and none of the usual names; "
                             f"choose one with -hkl_column: {listing()}")
    for kind in ("G", "K"):
        prs = _pairs(columns, kind)
        if len(prs) == 1:
            return Choice(kind * 2, (prs[0][0].label, prs[0][1].label))
    raise InputError(f"{flag}: {path} has no amplitude or intensity column to use; choose one with "
                     f"-hkl_column: {listing()}")


def anomalous_note(choice: Choice, anomalous: bool) -> list[str]:
    """A note when anomalous data were asked for and the file has none."""
    if anomalous and choice.kind in ("F", "J"):
        return ["-anomalous: no anomalous columns here; Friedel mates are equal"]
    return []


def amplitudes(choice: Choice, get) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(F at h, F at -h or None) from the chosen columns; ``get(label)`` gives a float array
    with NaN where a value is missing."""
    def root(I):
        # spot intensity stays proportional to the measured I: F = sqrt(I), negatives to 0
        return np.sqrt(np.maximum(I, 0.0), where=np.isfinite(I), out=np.full(I.shape, np.nan))

    k = choice.kind
    if k == "F":
        return get(choice.labels[0]), None
    if k == "J":
        return root(get(choice.labels[0])), None
    if k == "GG":
        return get(choice.labels[0]), get(choice.labels[1])
    if k == "KK":
        return root(get(choice.labels[0])), root(get(choice.labels[1]))
    F, D = get(choice.labels[0]), get(choice.labels[1])
    # without a difference the reflection is Friedel-symmetric: F at h, its mate derived
    plus = np.where(np.isfinite(D), F + D / 2.0, F)
    minus = np.where(np.isfinite(D), F - D / 2.0, np.nan)
    return plus, minus
