"""The ``nbxp`` command: nanoBragg's flags in, nanoBragg's files and printout out.

This module is a thin layer: it parses flags (:mod:`nbxp.flags`), calls the same
:func:`nbxp.api.simulate` machinery a library user calls, prints nanoBragg's summary and
statistics, and writes the files.  Errors in the input end in one line on stderr naming the
flag or file, a non-zero exit status, and no output file written.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np


def get_parser():
    """The argparse description of nbxp's flags (used for -h and the man page)."""
    from .flags import get_parser as _gp
    return _gp()


def _check_memory(fpixels: int, spixels: int) -> None:
    need = fpixels * spixels * (8 + 4 + 2 + 2)  # float64 values, float32 image, SMV image, ROI and mask
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
    from .io.fdump import write_fdump
    from .io import atomic_write
    from .engine import render
    from .experiment import build_experiment
    from .flags import parse_args
    from .report import summary_lines

    parsed = parse_args(argv)
    s, cfg = parsed.state, parsed.config
    outputs = [(s.floatfile, "-floatfile"), (s.intfile, "-intfile")]
    outputs += [(s.pgmfile, "-pgmfile")] if s.write_pgm else []
    outputs += [(s.noisefile, "-noisefile")] if s.calculate_noise else []
    for path, flag in outputs:
        _writable(path, flag)
    _check_memory(cfg.detector.fpixels, cfg.detector.spixels)
    if s.trace_pixel is not None:
        from .trace import check_pixel
        check_pixel(cfg, *s.trace_pixel)
    from .gpu import choose_backend, to_host_float32
    backend, why = choose_backend(s.backend, s.dtype)
    xp = resolve_namespace(__import__("cupy") if backend == "cupy" else np)
    exp = build_experiment(cfg, xp=xp, dtype=getattr(xp, s.dtype))
    p = lambda line: print(line, file=out)  # noqa: E731
    for w in s.warnings:
        p(w)
    if s.hklfile:
        p("writing dump file for next time: Fdump.bin")
        try:
            write_fdump("Fdump.bin", cfg.hkl)
        except OSError as e:
            p(f"WARNING: unable to open dump file: Fdump.bin ({e.strerror})")
    elif cfg.hkl is not None:
        p("reading Fs from Fdump.bin")
    for line in summary_lines(exp, cfg, s):
        p(line)
    p(f"nbxp backend: {backend} ({why})")
    out.flush()
    with progress_bar(exp, s.progress) as tick:
        tile = {} if s.tile_mb is None else {"tile_bytes": int(s.tile_mb * 2**20)}
        img, interp = render(exp, threads=s.threads, progress=tick, backend=backend,
                             fast_math=True if s.fast_math else None, float32_image=True, **tile)
    if interp.trigger is not None:
        _, h, k, l, h0, k0, l0 = interp.trigger
        p(f"WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: {h:g},{k:g},{l:g},{h0},{k0},{l0} ")
        p("WARNING: further warnings will not be printed! ")
    img32 = to_host_float32(img)  # the only device-to-host copy of a GPU run
    del img  # a float64 image is the largest array of a run; nothing below needs it
    if s.trace_pixel is not None:
        # computed apart from the engine (host float64, nanoBragg's loop order), so the
        # render above carries no tracing cost
        from .trace import trace_lines
        ts, tf = s.trace_pixel
        for line in trace_lines(cfg, ts, tf, interpolation_trigger=None if interp.trigger is None else interp.trigger[0],
                                image_value=float(img32[ts, tf])):
            p(line)
    # files are written on a second thread (write() releases the GIL) while the statistics
    # and integer images are computed; each write stays atomic, and every one has ended
    # (or raised) before run() returns
    from concurrent.futures import ThreadPoolExecutor
    writer = ThreadPoolExecutor(max_workers=1)
    try:
        return _finish(s, cfg, exp, img32, p, writer, [writer.submit(atomic_write, s.floatfile, img32)])
    finally:
        writer.shutdown(wait=True)


def _finish(s, cfg, exp, img32, p, writer, writes) -> int:
    """Statistics, the integer, PGM and noise images and their files, after the float image
    (its write already submitted to ``writer``)."""
    from . import images
    from .engine import rendered_mask
    from .io.pgm import write_pgm
    from .io.smv import nanobragg_header, write_smv
    from .stats import image_stats
    rendered = rendered_mask(exp)
    fmin, fmax, smin, smax = exp.roi
    st = image_stats(img32, rendered, exp.roi, exp.geom.pixel_size, exp.oversample)
    box = np.zeros(img32.shape, dtype=bool)
    box[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1] = True
    p("")
    p(f"writing {s.floatfile} as {img32.size} 4-byte floats")
    for line in st.lines():
        p(line)
    header = nanobragg_header(header_values(exp))
    scale = images.int_scale(s.intfile_scale, st.max_I)
    p(f"intfile_scale = {scale:g}")
    p(f"writing {s.intfile} as 2-byte integers")
    writes.append(writer.submit(write_smv, s.intfile, images.int_image(img32, box, scale, s.adc), header))
    if s.write_pgm:
        pscale = images.pgm_scale(s.pgm_scale, scale, st.rmsd)
        p(f"pgm_scale = {pscale:g}")
        p(f"writing {s.pgmfile} as 1-byte integers")
        writes.append(writer.submit(write_pgm, s.pgmfile, images.pgm_image(img32, box, pscale), pscale))
    if s.calculate_noise:
        noisy, photons, overloads = images.noise_image(img32, box, cfg.seed, s.adc)
        p(f"{photons:.0f} photons on noise image ({overloads} overloads)")
        p(f"writing {s.noisefile} as 2-byte integers")
        writes.append(writer.submit(write_smv, s.noisefile, noisy, header))
    for w in writes:
        w.result()  # a failed write raises here, as it did inline
    return 0


@contextlib.contextmanager
def progress_bar(exp, wanted: bool):
    """A tqdm bar on stderr counting rendered pixels; silent with -noprogress, when stderr
    is not a terminal, or for runs shorter than about two seconds (tqdm's delay)."""
    if not wanted or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm
    fmin, fmax, smin, smax = exp.roi
    g = exp.geom
    total = (min(fmax, g.fpixels - 1) - max(fmin, 0) + 1) * (min(smax, g.spixels - 1) - max(smin, 0) + 1)
    if exp.mask is not None:
        total = int(exp.mask[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1].sum())
    with tqdm(total=total, unit="px", unit_scale=True, delay=2.0, file=sys.stderr, leave=False,
              desc="rendering") as bar:
        yield bar.update


def header_values(exp) -> dict:
    """The geometry an SMV header records, in nanoBragg's header units."""
    g = exp.geom
    rtd = 180.0 / math.pi
    return dict(fpixels=g.fpixels, spixels=g.spixels, pixel_mm=g.pixel_size * 1000.0,
                distance_mm=g.distance * 1000.0, wavelength_A=exp.wavelength * 1e10,
                Xbeam_mm=g.Xbeam * 1000.0, Ybeam_mm=g.Ybeam * 1000.0, Fbeam_mm=g.Fbeam * 1000.0,
                Sbeam_mm=g.Sbeam * 1000.0, detsize_s_mm=g.detsize_s * 1000.0, dials_origin=g.dials_origin,
                ORGX=g.ORGX, ORGY=g.ORGY, close_distance_mm=g.close_distance * 1000.0,
                phi_deg=exp.sampling.phi0 * rtd, osc_deg=exp.sampling.osc * rtd, twotheta_deg=g.twotheta * rtd)


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
