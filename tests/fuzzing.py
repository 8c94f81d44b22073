"""Malformed command lines and files for the nbxp command, and the rules its answers obey.

Shared by ``tests/test_fuzz.py`` (a CI-sized run) and ``scripts/fuzz.py`` (thousands of
cases).  A seeded generator (:func:`cases`) starts from a small valid run and applies one
mutation: a malformed or extreme number, a missing value, an unknown, truncated or
duplicated flag, a stray word, or a malformed ``-hkl``, ``-mat``, ``-sourcefile``, ``-img``,
``-mask`` or ``Fdump.bin`` file.  Each case says whether its input is certainly invalid and
which names a refusal must mention.  :func:`run_inprocess` runs a case through
``nbxp.cli.main`` (fast: no interpreter start-up) and :func:`run_subprocess` through the
real ``python -m nbxp``; :func:`problems` lists every broken rule:

* no traceback and no internal error;
* invalid input ends with a non-zero status;
* a non-zero status comes with exactly one ``nbxp: error:`` line on stderr that names the
  flag or the file, and the working folder is left exactly as it was (no output file, no
  partial file, nothing overwritten);
* no run takes longer than the time bound.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

#: a valid run that takes a few milliseconds: 6x6 pixels, one sub-pixel, two unit cells
#: (so tricubic interpolation is on), every output file written
BASE = ["-cell", "50", "60", "70", "80", "90", "100", "-default_F", "10", "-N", "2", "-lambda", "1",
        "-distance", "50", "-detpixels", "6", "-oversample", "1", "-seed", "3"]

#: valid additions to BASE, so mutations also meet mosaic domains, sources, phi steps,
#: sensor layers, other conventions and both precisions (each still takes milliseconds)
FEATURES = [["-mosaic", "0.5", "-mosaic_dom", "2"], ["-divergence", "0.2", "-divsteps", "2", "-square_div"],
            ["-dispersion", "1", "-dispsteps", "2"], ["-phi", "0", "-osc", "1", "-phisteps", "2"],
            ["-roi", "1", "4", "1", "4"], ["-detector_thick", "100", "-thicksteps", "2"], ["-xds"],
            ["-twotheta", "5"], ["-round_xtal"], ["-nointerpolate"], ["--dtype", "float32"], ["-curved_det"],
            ["-oversample_omega", "-oversample_polar"], ["-water", "10"], ["-dmin", "5"], ["-misset", "random"],
            ["-misset", "10", "20", "30"], ["-polar", "0.9"], ["-gauss_xtal"], ["-nonoise", "-nopgm"]]

#: values no number parser of nbxp's accepts
MALFORMED = ["abc", "", " ", "1,5", "0x1A", "1e", "e5", "+-1", "1.2.3", "nan", "NaN", "--", "1 2", "½", "1e5e5",
             "12abc", "-", ".", "+", "0b101"]
#: values that parse but are out of any useful range (must be refused or run quickly)
EXTREME = ["0", "-1", "-0", "99999999999", "-99999999999", "1e300", "-1e300", "1e-300", "1e400", "-1e400", "inf",
           "-inf", "4.9e-324", "2147483648", "1e19"]

#: flags whose value is a file name or a word (any token, one starting with '-' too, is taken as it)
FILE_FLAGS = {"-hkl", "-mat", "-img", "-mask", "-sourcefile", "-stol", "-floatfile", "-intfile", "-pgmfile",
              "-noisefile", "-stolout", "-pdb", "-write_hkl", "-hkl_column", "-hkl_block", "--truth",
              "--geometry", "--scheduler"}
CHOICE_FLAGS = {"-pivot", "--dtype", "--backend", "-misset"}
#: nbxp flags not worth fuzzing here: they select hardware (a GPU), print a trace, or connect to
#: a Dask cluster (an unreachable address waits out Dask's connect timeout, tested apart)
SKIP_FLAGS = {"--backend", "-trace_pixel", "-dump_pixel", "-printout_pixel", "-printout", "--scheduler"}


@dataclass
class Case:
    """One command line with its input files (name -> bytes) and what must hold."""

    kind: str
    argv: list
    files: dict = field(default_factory=dict)
    bad: bool = False     # certainly invalid: must exit non-zero
    names: tuple = ()     # a refusal must name one of these (flag or file)

    def describe(self) -> str:
        return f"[{self.kind}] nbxp {' '.join(repr(a) if (not a or ' ' in a) else a for a in self.argv)}" + (
            f"  files: {', '.join(sorted(self.files))}" if self.files else "")


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    before: dict
    after: dict


# ------------------------------------------------------------------ the flag table

def _flag_table():
    from nbxp.flags import FLAGS, NBXP_FLAGS
    numeric, other = [], []
    for f in FLAGS + NBXP_FLAGS:
        name = f.names[0]
        if name in SKIP_FLAGS:
            continue
        if f.nargs == 0:
            other.append((name, 0))
        elif name in FILE_FLAGS or name in CHOICE_FLAGS:
            continue
        else:
            numeric.append((name, 6 if f.nargs == -1 else 3 if f.nargs == -2 else f.nargs))
    return numeric, other


def _flag_like(token: str) -> bool:
    """Whether nbxp takes ``token`` as a flag (a help request prints the usage, exit 0)."""
    return token in ("-h", "-help", "--help") or _matches_any(token)


def _matches_any(token: str) -> bool:
    from nbxp.flags import FLAGS, NBXP_FLAGS
    return any(f.matches(token) for f in (NBXP_FLAGS if token.startswith("--") else FLAGS))


# ------------------------------------------------------------------ valid inputs to start from

def hkl_text(rnd: random.Random) -> str:
    rows = [f"{h} {k} {l} {rnd.uniform(1, 100):.2f}" for h in range(-2, 3) for k in range(-2, 3) for l in range(-2, 3)]
    return "\n".join(rows) + "\n"


def mat_text(rnd: random.Random) -> str:
    q, _ = np.linalg.qr(np.array([[rnd.gauss(0, 1) for _ in range(3)] for _ in range(3)]))
    a = q @ np.diag([1 / 50.0, 1 / 60.0, 1 / 70.0])  # columns a*, b*, c* (1/A) at lambda = 1 A
    return "\n".join(" ".join(f"{v:.8f}" for v in row) for row in a) + "\n"


def sources_text(rnd: random.Random) -> str:
    return "".join(f"{-10:g} {rnd.uniform(-1e-4, 1e-4):.3g} {rnd.uniform(-1e-4, 1e-4):.3g} 1 {rnd.uniform(0.9e-10, 1.1e-10):.4g}\n"
                   for _ in range(3))


def smv_bytes(w: int = 6, h: int = 6, extra: str = "", head_bytes: int = 512, data=None, pad: bool = True) -> bytes:
    head = (f"{{\nHEADER_BYTES={head_bytes};\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1={w};\n"
            f"SIZE2={h};\nPIXEL_SIZE=0.1;\nDISTANCE=50;\nWAVELENGTH=1;\nBEAM_CENTER_X=0.3;\nBEAM_CENTER_Y=0.3;\n"
            f"{extra}}}\f").encode("latin-1")
    if pad:
        head = head.ljust(head_bytes, b" ")
    if data is None:
        data = np.ones((h, w), "<u2")
        data[0, :2] = 0
    return head + np.asarray(data, "<u2").tobytes()


def fdump_bytes(padded: bool = True, newline: bool = True, lo=(-1, -1, -1), hi=(1, 1, 1), values=None) -> bytes:
    shape = tuple(b - a + 1 for a, b in zip(lo, hi))
    F = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float64).reshape(shape) if values is None else values
    if padded:
        P = np.zeros(tuple(n + 1 for n in shape))
        P[:shape[0], :shape[1], :shape[2]] = F
        F = P
    head = f"{lo[0]} {hi[0]} {lo[1]} {hi[1]} {lo[2]} {hi[2]}" + ("\n" if newline else "") + "\f"
    return head.encode() + np.ascontiguousarray(F).tobytes()


# ------------------------------------------------------------------ mutations

def _with_value(argv, flag, values):
    return list(argv) + [flag] + list(values)


def _cmdline_case(rnd: random.Random, numeric, zero) -> Case:
    kind = rnd.choice(["malformed", "extreme", "missing", "missing_mid", "unknown", "truncated", "duplicated",
                       "stray", "swapped", "dup_bad"])
    base = list(BASE)
    while rnd.random() < 0.4:
        base += rnd.choice(FEATURES)
    flag, nargs = rnd.choice(numeric)
    good = ["1"] * nargs
    if kind == "malformed":
        vals = list(good)
        vals[rnd.randrange(nargs)] = rnd.choice(MALFORMED)
        # a value starting with '-' ends a list such as -cell's and is reported as itself
        return Case(kind, _with_value(base, flag, vals), bad=True, names=(flag, *(v for v in vals if v[:1] == "-")))
    if kind == "extreme":
        # (BASE fixes -oversample 1: with nanoBragg's automatic choice a crystal clipped to
        # the beam, 0.1 mm, asks for 600^2 sub-pixels, a feasible run of minutes)
        vals = [rnd.choice(EXTREME) if rnd.random() < 0.7 else "0.001" for _ in range(nargs)]
        argv = _with_value(base, flag, vals)
        names = [flag, *vals]
        if rnd.random() < 0.3:  # and a second one
            flag2, n2 = rnd.choice(numeric)
            vals2 = [rnd.choice(EXTREME) for _ in range(n2)]
            argv = _with_value(argv, flag2, vals2)
            names += [flag2, *vals2]
        # a value such as -inf may read as the next flag: the message may name it instead
        return Case(kind, argv, names=tuple(names))
    if kind == "missing":
        return Case(kind, base + [flag], bad=True, names=(flag,))
    if kind == "missing_mid":
        # the value is swallowed by the next flag's name: a number is expected, a flag is found
        nxt = rnd.choice(["-nonoise", "-nopgm", "-N", "-distance"])
        argv = base[:2] + [flag] + [nxt] + base[2:]
        return Case(kind, argv, bad=flag not in ("-cell",), names=(flag, nxt))
    if kind == "unknown":
        letters = "abcdefghijklmnopqrstuvwxyz_"
        tok = "-" + "".join(rnd.choice(letters) for _ in range(rnd.randint(1, 12)))
        if rnd.random() < 0.3:
            tok = "-" + tok
        return Case(kind, base + [tok, "1"], bad=not _flag_like(tok), names=(tok, "1"))
    if kind == "truncated":
        name = rnd.choice([f for f, _ in numeric] + [f for f, _ in zero])
        tok = name[:rnd.randint(2, max(2, len(name) - 1))]
        return Case(kind, base + [tok, "1"], bad=not _flag_like(tok), names=(tok, "1"))
    if kind == "duplicated":
        i = rnd.randrange(7, len(BASE) - 1, 2)  # a one-value flag of BASE, after -cell's six
        return Case(kind, base + BASE[i:i + 2], names=(BASE[i],))
    if kind == "dup_bad":
        vals = ["1"] * nargs
        vals[0] = rnd.choice(MALFORMED)
        return Case(kind, _with_value(base, flag, good) + [flag] + vals, bad=True, names=(flag,))
    if kind == "stray":
        word = rnd.choice(["x", "100", "stray", "floatimage.bin", "1e5"])
        at = [i for i, t in enumerate(base) if t.startswith("-") and not t[1:2].isdigit()] + [len(base)]
        i = rnd.choice(at)
        return Case(kind, base[:i] + [word] + base[i:], bad=True, names=(word,))
    # swapped: two tokens exchanged
    argv = list(base)
    i, j = rnd.randrange(len(argv)), rnd.randrange(len(argv))
    argv[i], argv[j] = argv[j], argv[i]
    return Case(kind, argv, names=tuple(argv))  # whatever token ends up misplaced


def _file_case(rnd: random.Random) -> Case:
    which = rnd.choice(["-hkl", "-mat", "-sourcefile", "-img", "-mask", "Fdump.bin"])
    name = {"-hkl": "in.hkl", "-mat": "in.mat", "-sourcefile": "in.src", "-img": "in.img", "-mask": "in.mask",
            "Fdump.bin": "Fdump.bin"}[which]
    base = [a for a in BASE]
    junk = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 600)))
    if which == "-hkl":
        good = hkl_text(rnd)
        lines = good.splitlines()
        variants = {
            "junk": (junk, True), "empty": (b"", True), "comments": (b"# nothing\n\n", True),
            "word": ("\n".join(lines[:5] + ["1 2 x 4"] + lines[5:]).encode(), True),
            "short": ("\n".join(lines[:3] + ["1 2 3"] + lines[3:]).encode(), True),
            "inf": ("\n".join(lines[:3] + ["1 2 3 inf"]).encode(), True),
            "nan": ("\n".join(lines[:3] + ["nan 2 3 4"]).encode(), True),
            "1e400": ("\n".join(lines + ["0 0 0 1e400"]).encode(), True),
            "huge_range": ("\n".join(lines + ["20000 -20000 20000 1"]).encode(), True),
            "huge_index": ("\n".join(lines + ["1e12 0 0 1"]).encode(), True),
            "utf16": (good.encode("utf-16"), True),
            "crlf": (good.replace("\n", "\r\n").encode(), False), "tabs": (good.replace(" ", "\t").encode(), False),
            "columns": ("\n".join(x + " 0.5 17" for x in lines).encode(), False),
            "cut": (good.encode()[:rnd.randint(1, len(good) - 1)], False),
        }
        v = rnd.choice(sorted(variants))
        content, bad = variants[v]
        return Case(f"hkl:{v}", base + ["-hkl", name], {name: content}, bad=bad, names=(name,))
    if which == "-mat":
        good = mat_text(rnd)
        nums = good.split()
        zeros = " ".join(["0"] * 9)
        rows = good.splitlines()
        variants = {
            "junk": (junk, True), "empty": (b"", True), "eight": (" ".join(nums[:8]).encode(), True),
            "word": (" ".join(nums[:4] + ["x"] + nums[5:]).encode(), True),
            "zeros": (zeros.encode(), True), "1e400": (" ".join(nums[:8] + ["1e400"]).encode(), True),
            "nan": (" ".join(["nan"] + nums[1:]).encode(), True), "inf": (" ".join(nums[:2] + ["inf"] + nums[3:]).encode(), True),
            "coplanar": ("\n".join([rows[0], rows[1], rows[0]]).encode(), True),
            "zero_column": ("\n".join(" ".join(["0"] + r.split()[1:]) for r in rows).encode(), True),
            "tiny": (" ".join(f"{float(x) * 1e-300:g}" for x in nums).encode(), True),
            "utf16": (good.encode("utf-16"), True),
            "extra": ((good + "\n1 2 3\nMOSFLM\n").encode(), False),
        }
        v = rnd.choice(sorted(variants))
        content, bad = variants[v]
        return Case(f"mat:{v}", _without_cell(base) + ["-mat", name],
                    {name: content}, bad=bad, names=(name,))
    if which == "-sourcefile":
        good = sources_text(rnd)
        rows = good.splitlines()
        variants = {
            "junk": (junk, True), "empty": (b"", True), "word": ("a b c\n".encode(), True),
            "inf": ((rows[0] + "\n-10 inf 0 1 1e-10\n").encode(), True),
            "origin": ((rows[0] + "\n0 0 0 1 1e-10\n").encode(), True),
            "zero_lambda": ((rows[0] + "\n-10 0 0 1 0\n").encode(), True),
            "neg_lambda": ((rows[0] + "\n-10 0 0 1 -1e-10\n").encode(), True),
            "nan": ("nan 0 0\n".encode(), True),
            "comments": (("# x y z\n" + good).encode(), False), "three_columns": ("-10 0 0\n".encode(), False),
            "many_columns": ((rows[0] + " 7 8 9\n").encode(), False),
        }
        v = rnd.choice(sorted(variants))
        content, bad = variants[v]
        return Case(f"src:{v}", base + ["-sourcefile", name], {name: content}, bad=bad, names=(name,))
    if which in ("-img", "-mask"):
        good = smv_bytes()
        variants = {
            "junk": (junk, True), "empty": (b"", True), "truncated": (good[:rnd.randint(512, len(good) - 1)], True),
            "head_only": (good[:300], True), "size0": (smv_bytes(0, 6, data=np.zeros((0, 6))), True),
            "huge_size": (smv_bytes(extra="SIZE1=99999999;\n"), True),
            "pixel0": (smv_bytes(extra="PIXEL_SIZE=0;\n"), True), "distance0": (smv_bytes(extra="DISTANCE=0;\n"), True),
            "wavelength_neg": (smv_bytes(extra="WAVELENGTH=-1;\n"), True),
            "distance_word": (smv_bytes(extra="DISTANCE=far;\n"), True),
            "1e999": (smv_bytes(extra="BEAM_CENTER_X=1e999;\n"), True),
            "size_inf": (smv_bytes(extra="SIZE1=1e999;\n"), True),
            "header_bytes_inf": (smv_bytes(extra="HEADER_BYTES=1e999;\n"), True),
            "header_bytes_neg": (smv_bytes(extra="HEADER_BYTES=-5;\n"), True),
            "header_bytes": (smv_bytes(head_bytes=1024)[:1050], True),
            "wrong_magic": (b"{\nHEADRR" + good[8:], True),
            "other_size": (smv_bytes(5, 4), which == "-mask"), "big_endian": (
                smv_bytes(extra="BYTE_ORDER=big_endian;\n"), False),
        }
        v = rnd.choice(sorted(variants))
        content, bad = variants[v]
        # -detpixels of the base would override an image's size: leave it to the file
        argv = _without(base, "-detpixels", 1) + [which, name]
        if which == "-mask" and v == "other_size":
            argv += ["-detpixels", "6"]
        return Case(f"{which[1:]}:{v}", argv, {name: content}, bad=bad, names=(name,))
    # Fdump.bin, read when -hkl is absent
    variants = {
        "junk": (junk, True), "empty": (b"", True), "no_formfeed": (b"-1 1 -1 1 -1 1\n" + bytes(8 * 27), True),
        "five_ints": (b"-1 1 -1 1 -1\n\f" + bytes(8 * 27), True),
        "short": (fdump_bytes()[:-8], True), "long": (fdump_bytes() + bytes(8), True),
        "empty_range": (b"1 0 0 0 0 0\n\f" + bytes(64), True),
        "huge_range": (b"-99999 99999 -99999 99999 -99999 99999\n\f" + bytes(64), True),
        "nan": (fdump_bytes(values=np.full((3, 3, 3), np.nan)), True),
        "padded": (fdump_bytes(), False), "unpadded": (fdump_bytes(padded=False), False),
        "no_newline": (fdump_bytes(newline=False), False),
        "no_newline_unpadded": (fdump_bytes(padded=False, newline=False), False),
    }
    v = rnd.choice(sorted(variants))
    content, bad = variants[v]
    return Case(f"fdump:{v}", _without(base, "-default_F", 1), {name: content}, bad=bad, names=(name,))


def _without(argv, flag, nvalues):
    out, i = [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 1 + nvalues
            continue
        out.append(argv[i])
        i += 1
    return out


def _without_cell(argv):
    return _without(argv, "-cell", 6)


def cases(n: int, seed: int = 0):
    """``n`` cases from a seeded generator: about half command-line, half file mutations."""
    numeric, zero = _flag_table()
    rnd = random.Random(seed)
    for _ in range(n):
        yield _cmdline_case(rnd, numeric, zero) if rnd.random() < 0.5 else _file_case(rnd)


# ------------------------------------------------------------------ running

def _listing(d: str) -> dict:
    out = {}
    for name in os.listdir(d):
        p = os.path.join(d, name)
        with open(p, "rb") as fh:
            out[name] = fh.read()
    return out


def _prepare(case: Case, d: str) -> dict:
    for name, content in case.files.items():
        with open(os.path.join(d, name), "wb") as fh:
            fh.write(content)
    return _listing(d)


class _Timeout(BaseException):
    """Raised by the alarm inside a run that passed the time bound (not an Exception, so the
    command's own handlers cannot swallow it)."""


def run_inprocess(case: Case, d: str, bound: float) -> Outcome:
    """Run ``case`` through ``nbxp.cli.main`` in the empty folder ``d``; a run still going
    after ``bound`` seconds is stopped and reported with rc None."""
    from nbxp import cli
    before = _prepare(case, d)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()

    def alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, alarm)
    t0 = time.perf_counter()
    rc = None
    try:
        os.chdir(d)
        signal.setitimer(signal.ITIMER_REAL, bound)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(case.argv))
            except SystemExit as e:  # noqa: PERF203
                rc = e.code if isinstance(e.code, int) else 1
    except _Timeout:
        rc = None
    except BaseException as e:  # noqa: BLE001 -- an escaping exception is a finding
        import traceback
        err.write("Traceback (escaped cli.main):\n" + "".join(traceback.format_exception(e)))
        rc = -1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
    return Outcome(rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0, before, _listing(d))


def run_subprocess(case: Case, d: str, bound: float) -> Outcome:
    """Run ``case`` as ``python -m nbxp`` in ``d``; rc None when it passed ``bound`` s."""
    before = _prepare(case, d)
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "nbxp", *case.argv], cwd=d, capture_output=True, text=True,
                           timeout=bound, stdin=subprocess.DEVNULL, errors="replace")
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, so, se = None, str(e.stdout or ""), str(e.stderr or "")
    return Outcome(rc, so, se, time.perf_counter() - t0, before, _listing(d))


def problems(case: Case, o: Outcome, bound: float) -> list[str]:
    """Every rule ``o`` breaks (empty when the answer is right)."""
    bad = []
    if o.rc is None or o.seconds > bound:
        bad.append(f"over the time bound ({o.seconds:.1f} s > {bound:g} s)")
        return bad
    text = o.stdout + o.stderr
    if "Traceback" in text:
        bad.append("traceback")
    if "internal error" in o.stderr:
        bad.append("internal error: " + o.stderr.strip().splitlines()[-1][:200])
    if case.bad and o.rc == 0:
        bad.append("invalid input accepted (exit 0)")
    if o.rc != 0:
        lines = o.stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("nbxp: error: "):
            bad.append(f"not one 'nbxp: error:' line on stderr: {o.stderr.strip()[:300]!r}")
        elif case.names and not any(n and n in lines[0] for n in case.names):
            bad.append(f"the message names none of {case.names}: {lines[0][:200]!r}")
        if o.after != o.before:
            left = sorted(set(o.after) - set(o.before))
            changed = sorted(k for k in o.before if o.after.get(k) != o.before[k])
            bad.append(f"folder changed by a failed run: new {left}, changed {changed}")
    return bad
