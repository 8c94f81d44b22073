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

from .io.smv import header_values  # noqa: F401  (the SMV header's geometry; used below and by scripts)


def get_parser():
    """The argparse description of nbxp's flags (used for -h and the man page)."""
    from .flags import get_parser as _gp
    return _gp()


#: mosaic-domain counts whose set-up takes more than about a second
SLOW_DOMAINS = 100_000


def _writable(path: str, flag: str) -> None:
    from .io.dataset import check_writable
    check_writable(path, flag)


def run(argv: list[str], out=None) -> int:
    from .api import resolve_namespace
    from .io import atomic_write
    from .engine import render
    from .experiment import build_experiment
    from .flags import parse_args
    from .report import summary_lines

    out = sys.stdout if out is None else out  # looked up per call, so a redirected stdout is honoured
    parsed = parse_args(argv)
    s, cfg = parsed.state, parsed.config
    if s.workers is not None or s.scheduler is not None or s.resume:
        from .distributed import check_cli_request  # frames on Dask, or resumed (issue 16)
        check_cli_request(s)
    if s.frames is not None or s.stills is not None or s.truth is not None:
        return run_series(parsed, out)
    if cfg.detector.panels is not None:
        return run_series(parsed, out, single=True)
    outputs = [(s.floatfile, "-floatfile"), (s.intfile, "-intfile")]
    outputs += [(s.pgmfile, "-pgmfile")] if s.write_pgm else []
    outputs += [(s.noisefile, "-noisefile")] if s.calculate_noise else []
    _check_write_hkl(s)
    for path, flag in outputs:
        _writable(path, flag)
    if s.trace_pixel is not None:
        from .trace import check_pixel
        check_pixel(cfg, *s.trace_pixel)
    from .gpu import choose_backend, to_host_float32
    backend, why = choose_backend(s.backend, s.dtype)
    xp = resolve_namespace(__import__("cupy") if backend == "cupy" else np)
    domains = cfg.crystal.mosaic_domains or 0
    if domains > SLOW_DOMAINS and s.progress and sys.stderr.isatty() and (cfg.crystal.mosaic_spread or 0) > 0:
        # nanoBragg's domain generator is serial (~10 us a domain here): say so before the wait
        print(f"nbxp: drawing {domains} mosaic domains with nanoBragg's serial generator "
              f"(about {domains * 1.4e-5:.0f} s) ...", file=sys.stderr, flush=True)
    exp = build_experiment(cfg, xp=xp, dtype=getattr(xp, s.dtype))
    p = lambda line: print(line, file=out)  # noqa: E731
    for w in s.warnings:
        p(w)
    _announce_structure_factors(s, cfg, p)
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
    bad = int(img32.size - np.count_nonzero(np.isfinite(img32)))
    if bad:
        p(f"WARNING: {bad} pixels are infinite or NaN (beyond float32): the intensity scale overflows; "
          "check -fluence/-flux, -default_F or the -hkl values, -N and -water")
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
    _write_structure_factors(s, cfg, p)
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


def _panel_requests(s, requests, npanels: int, notes: list) -> list:
    """A multi-panel run's outputs: those whose format holds several panels; an output left
    at its default name in a format that holds one panel (intimage.img, image.pgm, ...) is
    dropped with a note, one the user named is kept (and refused, naming it, by
    :func:`nbxp.io.dataset.check_geometry`)."""
    from .io import dataset
    given = {name for _, name in s.given}
    keep = []
    for flag, kind, name in requests:
        fmt = dataset.output_format(kind, name, flag)
        if flag not in given and dataset.multi_panel_problem(fmt, npanels):
            notes.append(f"{flag}: {name} not written ({fmt} holds one panel; name a .h5/.nxs file"
                         + (" or a .bin file" if kind == dataset.FLOAT else "") + " for this detector)")
            continue
        keep.append((flag, kind, name))
    return keep


def run_series(parsed, out=sys.stdout, single: bool = False) -> int:
    """--frames/--stills: the series is :func:`nbxp.series.prepare_series`'s, the files
    :class:`nbxp.io.dataset.SeriesWriter`'s; this prints and drives them.  ``single``: the
    one image of a multi-panel detector without --frames/--stills (a series of one frame at
    -phi with the run's own -osc, written under the names as given)."""
    from .flags import UsageError
    from .gpu import choose_backend
    from .io import dataset
    from .report import summary_lines
    from .series import ROTATION, Series, prepare_series

    s, cfg = parsed.state, parsed.config
    if not single and s.frames is None and s.stills is None:
        raise UsageError("--truth: needs --frames N or --stills N (--frames 1 for one image)")
    if s.frames is not None and s.stills is not None:
        raise UsageError("--frames and --stills: a series is either a rotation scan or still shots")
    n = 1 if single else (s.frames if s.frames is not None else s.stills)
    requests = [("-floatfile", dataset.FLOAT, s.floatfile), ("-intfile", dataset.INT, s.intfile)]
    requests += [("-pgmfile", dataset.PGM, s.pgmfile)] if s.write_pgm else []
    requests += [("-noisefile", dataset.NOISE, s.noisefile)] if s.calculate_noise else []
    dropped: list[str] = []
    if cfg.detector.panels is not None:
        requests = _panel_requests(s, requests, len(cfg.detector.panels), dropped)
    inputs = [s.hklfile, s.pdbfile, s.matfile, s.imgfile, s.maskfile, s.sourcefile, s.stolfile, "Fdump.bin",
              s.geometry]
    outputs = dataset.plan(requests, n, inputs, s.truth, single=single)
    _check_write_hkl(s)
    backend, why = choose_backend(s.backend, s.dtype)
    if single:
        from .api import backend_choice, resolve_dtype, resolve_namespace
        from .experiment import build_experiment
        module, renderer = backend_choice(None, backend, s.dtype)
        ns = resolve_namespace(module)
        exp = build_experiment(cfg, xp=ns, dtype=resolve_dtype(ns, s.dtype))
        # frame 0 of a "scan" at -phi with the run's own oscillation: exactly the single image
        series = Series(cfg, exp, ROTATION, 1, int(cfg.seed), renderer=renderer,
                        fast_math=True if s.fast_math else None)
    else:
        series = prepare_series(cfg, frames=s.frames, stills=s.stills, orientation_seed=s.orientation_seed,
                                backend=backend, dtype=s.dtype, fast_math=True if s.fast_math else None)
    dataset.check_geometry(outputs, series.exp)
    if s.truth is not None:
        from .io import expt
        reason = expt.unsupported(series.exp)
        if reason:
            raise UsageError(f"--truth: {s.truth}: {reason}")

    p = lambda line: print(line, file=out)  # noqa: E731
    for w in s.warnings:
        p(w)
    for line in s.geometry_lines + dropped:
        p(line)
    _announce_structure_factors(s, cfg, p)
    for line in summary_lines(series.exp, cfg, s):
        p(line)
    p(f"nbxp backend: {backend} ({why})")
    rtd = 180.0 / math.pi
    if single:
        p(f"one image of a detector of {len(series.exp.panels)} panels at phi {series.phi0 * rtd:g} deg "
          f"(osc {series.osc * rtd:g} deg); noise seed {series.seed}")
    elif series.kind == "rotation":
        p(f"rotation scan: {n} frames of {series.osc * rtd:g} degrees from phi {series.phi0 * rtd:g} "
          f"({series.exp.sampling.phisteps} phi steps each)")
    else:
        p(f"still shots: {n}, random orientations from orientation seed {series.orientation_seed}")
    if not single:
        p(f"noise seed of frame i (from 0): {series.seed} + i")
    for o in outputs:
        p(f"{o.flag}: {o.format}, " + (f"one file per frame: {o.template}" if o.per_frame else f"one file: {o.template}")
          + (f" (no '#' in {o.given}: _##### added; # = frame number from 1)" if o.added else ""))
    out.flush()
    if s.workers is not None or s.scheduler is not None or s.resume:
        from .distributed import run_cli_series  # the same frames and files, on Dask (issue 16)
        return run_cli_series(parsed, series, outputs, p, out, finish=lambda: _write_structure_factors(s, cfg, p))
    tile = {} if s.tile_mb is None else {"tile_bytes": int(s.tile_mb * 2**20)}
    with dataset.SeriesWriter(series, outputs, scale=s.intfile_scale, pgm_scale=s.pgm_scale, adc=s.adc,
                              adc_given=s.adc_given) as writer, frame_bar(n, s.progress) as bar:
        say = p if bar is None else (lambda line: bar.write(line, file=out))
        for frame in series.frames(threads=s.threads, float32_image=True, **tile):
            rep = writer.write(frame)
            if single:
                for line in rep.stats.lines():
                    say(line)
                say(f"intfile_scale = {rep.scale:g}")
                if rep.photons is not None:
                    say(f"{rep.photons:.0f} photons on noise image ({rep.overloads} overloads)")
                for o in outputs:
                    say(f"writing {o.template} ({o.format}, {o.flag})")
                continue
            panel = f" (panel {rep.stats.names[rep.stats.panel]})" if hasattr(rep.stats, "panel") else ""
            line = (f"frame {frame.index + 1}/{n}: phi {frame.phi * rtd:g} deg, max_I {rep.stats.max_I:g}{panel}, "
                    f"noise seed {frame.seed}")
            if rep.photons is not None:
                line += f", {rep.photons:.0f} photons ({rep.overloads} overloads)"
            say(line + (": " + " ".join(rep.files) if rep.files else ""))
            if frame.interpolation is not None and frame.interpolation.trigger is not None:
                say(f"WARNING: frame {frame.index + 1}: out of range for three point interpolation; "
                    "nearest-neighbour F from there on")
            if bar is not None:
                bar.update(1)
    for o in outputs:
        if not o.per_frame and not single:
            p(f"wrote {o.template} ({n} frames)")
    _write_structure_factors(s, cfg, p)
    if s.truth is not None:
        dataset.write_truth(s.truth, series)
        p(f"wrote the ground truth to {s.truth}")
    return 0


def _check_write_hkl(s) -> None:
    """-write_hkl needs data to expand and a place to write them."""
    if s.write_hkl:
        if s.sf is None:
            from .flags import UsageError
            raise UsageError("-write_hkl: needs structure factors from an MTZ, mmCIF or model (-hkl or -pdb)")
        _writable(s.write_hkl, "-write_hkl")


def _announce_structure_factors(s, cfg, p) -> None:
    """What was read (MTZ/mmCIF/model summary) and nanoBragg's Fdump.bin line.  Fdump.bin
    is announced where nanoBragg writes it but written with the other outputs
    (:func:`_write_structure_factors`), so a run that fails leaves no file behind."""
    if s.sf is not None:
        from .report import structure_factor_lines
        for line in structure_factor_lines(s.sf, s.sf_lines):
            p(line)
    if s.hklfile or s.pdbfile:
        p("writing dump file for next time: Fdump.bin")
    elif cfg.hkl is not None:
        p("reading Fs from Fdump.bin")


def _write_structure_factors(s, cfg, p) -> None:
    """-write_hkl's P1 list and Fdump.bin, after the render."""
    from .io.fdump import write_fdump
    if s.write_hkl:
        from .io.hkl import write_hkl
        h, F = s.sf.listing()
        p(f"writing {len(F)} P1 structure factors to {s.write_hkl}")
        write_hkl(s.write_hkl, h, F)
    if s.hklfile or s.pdbfile:
        try:
            write_fdump("Fdump.bin", cfg.hkl)
        except OSError as e:
            p(f"WARNING: unable to open dump file: Fdump.bin ({e.strerror})")


@contextlib.contextmanager
def frame_bar(total: int, wanted: bool):
    """One tqdm bar over the frames of a series (stderr, only on a terminal)."""
    if not wanted or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm
    with tqdm(total=total, unit="frame", file=sys.stderr, leave=False, desc="series") as bar:
        yield bar


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


#: exit status of an internal error (a defect in nbxp, not in the input): sysexits' EX_SOFTWARE
EXIT_INTERNAL = 70
#: set this environment variable to see the traceback of an internal error
TRACEBACK_ENV = "NBXP_TRACEBACK"


def main(argv: list[str] | None = None) -> int:
    """Run the command; exit 0 on success, 2 for bad input (one ``nbxp: error:`` line naming
    the flag or file), 1 when memory runs out, 130 on Ctrl-C and :data:`EXIT_INTERNAL` for
    an internal error (any other exception: a defect in nbxp, reported as one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help", "-help") for a in argv):
        get_parser().print_help()
        return 0 if argv else 2
    from .errors import NbxpError
    import warnings
    try:
        with warnings.catch_warnings():
            # NumPy's overflow/invalid-value warnings would print source lines; an image
            # that overflows is reported by run() in one WARNING line instead
            warnings.simplefilter("ignore", RuntimeWarning)
            return run(argv)
    except NbxpError as e:
        print(f"nbxp: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("nbxp: error: out of memory (try a smaller detector or -roi)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nbxp: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- anything else is nbxp's fault, not the input's
        if os.environ.get(TRACEBACK_ENV):
            import traceback
            traceback.print_exc()
        what = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        print(f"nbxp: internal error: {what} -- this is a bug in nbxp, not in your input; please report it "
              f"with the command line and the traceback ({TRACEBACK_ENV}=1 shows it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
