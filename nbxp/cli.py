"""The ``nbxp`` command: nanoBragg's flags in, nanoBragg's files and printout out.

This module is a thin layer: it parses flags (:mod:`nbxp.flags`), calls the same
:func:`nbxp.api.simulate` machinery a library user calls, prints nanoBragg's summary and
statistics, and writes the files.  Errors in the input end in one line on stderr naming the
flag or file, a non-zero exit status, and no output file written.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np


def get_parser():
    """The argparse description of nbxp's flags (used for -h and the man page)."""
    from .flags import get_parser as _gp
    return _gp()


def _atomic_write(path: str, payload: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_memory(fpixels: int, spixels: int) -> None:
    need = fpixels * spixels * (8 + 4 + 8 + 1)  # image, float32 copy, gather index, selection
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > avail:
        from .flags import UsageError
        raise UsageError(f"-detpixels: a {fpixels}x{spixels} detector needs about {need / 2**30:.1f} GiB, "
                         f"more than the {avail / 2**30:.1f} GiB of free memory")


def _writable(path: str, flag: str) -> None:
    from .flags import UsageError
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d) or not os.access(d, os.W_OK):
        raise UsageError(f"{flag}: cannot write {path}: directory {d} is not writable")
    if os.path.isdir(path):
        raise UsageError(f"{flag}: cannot write {path}: it is a directory")


def run(argv: list[str], out=sys.stdout) -> int:
    from .api import resolve_namespace
    from .engine import render
    from .experiment import build_experiment
    from .flags import parse_args
    from .report import summary_lines
    from .stats import image_stats

    parsed = parse_args(argv)
    s, cfg = parsed.state, parsed.config
    _writable(s.floatfile, "-floatfile")
    _check_memory(cfg.detector.fpixels, cfg.detector.spixels)
    xp = resolve_namespace(np)
    exp = build_experiment(cfg, xp=xp, dtype=xp.float64)
    p = lambda line: print(line, file=out)  # noqa: E731
    for w in s.warnings:
        p(w)
    for line in summary_lines(exp, cfg, s):
        p(line)
    out.flush()
    img, interp = render(exp)
    if interp.trigger is not None:
        _, h, k, l, h0, k0, l0 = interp.trigger
        p(f"WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: {h:g},{k:g},{l:g},{h0},{k0},{l0} ")
        p("WARNING: further warnings will not be printed! ")
    img32 = np.asarray(img, dtype=np.float64).astype(np.float32)
    rendered = np.zeros(img32.shape, dtype=bool)
    fmin, fmax, smin, smax = exp.roi
    rendered[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1] = True
    if exp.mask is not None:
        rendered &= exp.mask
    st = image_stats(img32, rendered, exp.roi, exp.geom.pixel_size, exp.oversample)
    p("")
    p(f"writing {s.floatfile} as {img32.size} 4-byte floats")
    _atomic_write(s.floatfile, img32.astype("<f4").tobytes())
    for line in st.lines():
        p(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help", "-help") for a in argv):
        get_parser().print_help()
        return 0 if argv else 2
    from .flags import UsageError
    from .io import InputError
    try:
        return run(argv)
    except (UsageError, InputError, ValueError) as e:
        print(f"nbxp: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("nbxp: error: out of memory (try a smaller detector or -roi)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nbxp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
