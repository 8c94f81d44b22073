"""Running the program under test and reading what it writes.

The suite is black-box: it only starts a program with nanoBragg's flags in a scratch folder
and reads the files and the printed summary that come back.  Which program is set by the
environment variable ``NB_PROGRAM`` (a command line, split like a shell would; default: the
``nbxp`` command), so the same tests judge nbxp and nanoBragg itself.

File readers are written here, not imported from nbxp, so that judging another program
does not depend on the code being judged.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: classical electron radius squared (m^2) and the default fluence (photons/m^2); their
#: product is 1 to 1e-15, which is why closed-form intensities below need no fluence flag
R_E_SQR = 7.94079248018965e-30
DEFAULT_FLUENCE = 1.25932015286227e29
AVOGADRO = 6.02214179e23


def program() -> list[str]:
    """The command line that starts the program under test."""
    given = os.environ.get("NB_PROGRAM", "").strip()
    if given:
        return shlex.split(given)
    if shutil.which("nbxp"):
        return ["nbxp"]
    return [sys.executable, "-m", "nbxp"]  # installed but its script not on PATH


def is_nbxp() -> bool:
    """True when the program under test is nbxp (its script or ``python -m nbxp``)."""
    cmd = program()
    return Path(cmd[0]).name == "nbxp" or cmd[1:3] == ["-m", "nbxp"]


@dataclass
class Result:
    """Exit status, printed text and working folder of one run."""

    args: list
    rc: int
    stdout: str
    stderr: str
    cwd: Path

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr

    def floats(self, name: str, fpixels: int, spixels: int | None = None) -> np.ndarray:
        """The raw float image as (slow, fast) float64 (the file is float32, fast-major)."""
        return read_float(self.cwd / name, fpixels, spixels or fpixels)

    def smv(self, name: str):
        return read_smv(self.cwd / name)

    def value(self, key: str) -> float:
        """A number from the printed summary: ``max_I``, ``mean``, ``rms``, ``rmsd``,
        ``intfile_scale``, ``pgm_scale``."""
        m = re.search(rf"(?:^|\s){re.escape(key)}\s*=\s*(\S+)", self.stdout, re.M)
        assert m, f"{key!r} not in the printed summary"
        return float(m.group(1))

    def max_at(self) -> tuple[float, float]:
        """The ``max_I = V at F S`` position (m on the detector plane)."""
        m = re.search(r"max_I\s*=\s*\S+\s+at\s+(\S+)\s+(\S+)", self.stdout)
        assert m, "no 'max_I = ... at ...' line in the printed summary"
        return float(m.group(1)), float(m.group(2))


def run(args, cwd: Path, ok: bool = True, timeout: float = 120) -> Result:
    """Run the program with ``args`` in ``cwd``; with ``ok`` it must exit 0."""
    args = [str(a) for a in args]
    p = subprocess.run(program() + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    r = Result(args, p.returncode, p.stdout, p.stderr, Path(cwd))
    if ok:
        assert p.returncode == 0, f"exit {p.returncode} for {' '.join(args)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return r


def image(args, cwd: Path, fpixels: int, spixels: int | None = None, name: str = "float.bin") -> np.ndarray:
    """Run and return the float image (slow, fast); noise and PGM files are switched off."""
    r = run(list(args) + ["-floatfile", name, "-nonoise", "-nopgm"], cwd)
    return r.floats(name, fpixels, spixels)


# ------------------------------------------------------------------ file formats

def read_float(path, fpixels: int, spixels: int) -> np.ndarray:
    raw = np.fromfile(path, dtype="<f4")
    assert raw.size == fpixels * spixels, f"{path}: {raw.size} floats, expected {fpixels}x{spixels}"
    return raw.reshape(spixels, fpixels).astype(np.float64)


def parse_header(text: str) -> dict[str, str]:
    """SMV header text to an ordered {KEY: value} dict (values without the ';')."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().rstrip(";").strip()
    return out


def read_smv(path):
    """(header dict, raw header bytes, pixels as (SIZE2, SIZE1) uint16) of an SMV file."""
    raw = Path(path).read_bytes()
    assert raw.startswith(b"{"), f"{path} does not start with an SMV header"
    end = raw.index(b"}")
    head = parse_header(raw[:end].decode("ascii"))
    nbytes = int(head["HEADER_BYTES"])
    w, h = int(head["SIZE1"]), int(head["SIZE2"])
    order = "<" if head.get("BYTE_ORDER", "little_endian").startswith("little") else ">"
    assert len(raw) == nbytes + 2 * w * h, f"{path}: {len(raw)} bytes, expected {nbytes} + 2*{w}*{h}"
    data = np.frombuffer(raw[nbytes:], dtype=order + "u2").reshape(h, w)
    return head, raw[:nbytes], data


def write_smv(path, data: np.ndarray, **keys) -> None:
    """A minimal SMV file (512-byte header, little-endian unsigned shorts) for -img/-mask."""
    h, w = data.shape
    text = "{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\n"
    text += f"SIZE1={w};\nSIZE2={h};\n"
    text += "".join(f"{k}={v:g};\n" for k, v in keys.items()) + "}\f"
    Path(path).write_bytes(text.encode("ascii").ljust(512, b" ") + np.asarray(data, "<u2").tobytes())


def read_pgm(path):
    """(header lines, pixels as (height, width) uint8) of a binary PGM written as
    'P5', 'W H', a comment line, '255', then the bytes."""
    raw = Path(path).read_bytes()
    lines, pos = [], 0
    for _ in range(4):
        nl = raw.index(b"\n", pos)
        lines.append(raw[pos:nl].decode("ascii"))
        pos = nl + 1
    w, h = (int(x) for x in lines[1].split())
    data = np.frombuffer(raw[pos:], dtype=np.uint8)
    assert data.size == w * h, f"{path}: {data.size} bytes of pixels, expected {w}x{h}"
    return lines, data.reshape(h, w)


def write_hkl(path, rows, columns: int = 4) -> None:
    """An 'h k l F' text file; extra columns (sigma, phase) are filled with other numbers."""
    with open(path, "w") as fh:
        for i, (h, k, l, F) in enumerate(rows):
            extra = [" %.2f" % (1.5 + i), " %.1f" % (37.0 * i % 360)][: columns - 4]
            fh.write(f"{h} {k} {l} {F:g}" + "".join(extra) + "\n")


def peak(img: np.ndarray, near=None, search: int = 2, radius: int = 1) -> tuple[float, float]:
    """(slow, fast) intensity centroid, in pixel-index units, of the (2 radius + 1)^2 square
    around the brightest pixel of the image, or of the brightest pixel within ``search``
    pixels of ``near``."""
    a = np.asarray(img, float)
    if near is not None:
        s0, f0 = (int(round(v)) for v in near)
        lo_s, lo_f = max(s0 - search, 0), max(f0 - search, 0)
        sub = a[lo_s:s0 + search + 1, lo_f:f0 + search + 1]
        s, f = np.unravel_index(np.argmax(sub), sub.shape)
        s, f = s + lo_s, f + lo_f
    else:
        s, f = np.unravel_index(np.argmax(a), a.shape)
    s0, s1 = max(s - radius, 0), min(s + radius + 1, a.shape[0])
    f0, f1 = max(f - radius, 0), min(f + radius + 1, a.shape[1])
    w = a[s0:s1, f0:f1]
    ss, ff = np.mgrid[s0:s1, f0:f1]
    return float((w * ss).sum() / w.sum()), float((w * ff).sum() / w.sum())
