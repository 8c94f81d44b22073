"""``nbxp-compare``: run two nanoBragg-compatible programs on one command line and compare
their float images.

    nbxp-compare [--a PROG] [--b PROG] [--outdir DIR] [options] -- <nanoBragg arguments>

``--a`` defaults to nanoBragg (``$NB_C_BIN``, else ``nanoBragg`` on the PATH), ``--b`` to
nbxp; a PROG may carry its own arguments (``--b "nbxp --dtype float32"``).  Each program runs
in its own folder under the output folder (so their default output files do not collide),
with ``-floatfile`` appended so its raw float32 image lands at a known path; arguments that
name existing files are made absolute so inputs are still found.

The output folder (default: a new ``nbxp-compare-<date>-<time>`` in the current folder)
receives each program's stdout and stderr, both float images, PNG previews (linear from 0 to
the 99.5th percentile of both images; ``--diff-png`` adds B - A on a blue-white-red scale)
and ``summary.json`` with ``correlation``, ``mse``, ``rmse``, ``max_abs_diff``, ``sum_a``,
``sum_b`` and ``sum_ratio`` (B/A), over the frame or ``--roi``.

Image shapes come from the programs' own printout (nanoBragg and nbxp print ``(FxS
pixels)``), else from the arguments, else a square of the file's size.  Different shapes
are an error unless ``--resample`` interpolates B onto A's pixel grid (bilinear, pixel
centres; values are interpolated, not re-binned, so sums then differ by the area ratio).

Exit status: 0 compared (and correlation >= ``--threshold`` if given), 1 usage error, 2 a
program failed, 3 correlation below the threshold, 4 shapes differ, 5 input/output error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np

EXIT_OK, EXIT_USAGE, EXIT_PROGRAM, EXIT_THRESHOLD, EXIT_SHAPE, EXIT_IO = 0, 1, 2, 3, 4, 5

#: nanoBragg's output-file flags (their values are written, never read, so stay relative)
_OUTPUT_FLAGS = ("-floatfile", "-floatimage", "-intfile", "-intimage", "-pgmfile", "-pgmimage",
                 "-noisefile", "-noiseimage")
_PIXELS = re.compile(r"\((\d+)x(\d+) pixels\)")


class CompareError(Exception):
    """A failure with its exit status; the message is one line for stderr."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- running

def default_a() -> list[str]:
    path = os.environ.get("NB_C_BIN") or shutil.which("nanoBragg")
    if not path:
        raise CompareError("--a not given and NB_C_BIN is not set (the path of a nanoBragg executable)", EXIT_USAGE)
    return [path]


def default_b() -> list[str]:
    return [sys.executable, "-m", "nbxp"]


def absolute_inputs(args: list[str], cwd: str) -> list[str]:
    """``args`` with every value that names an existing file made absolute (except the
    values of output-file flags), so a program run in another folder finds its inputs."""
    out = []
    for i, a in enumerate(args):
        prev = args[i - 1] if i else ""
        is_output = any(f in prev for f in _OUTPUT_FLAGS)
        if not a.startswith("-") and not is_output and os.path.exists(os.path.join(cwd, a)):
            a = os.path.abspath(os.path.join(cwd, a))
        out.append(a)
    return out


def run_program(label: str, cmd: list[str], args: list[str], outdir: str, timeout: float | None) -> dict:
    """Run one program in ``outdir/<label>_run`` with its float image forced to
    ``outdir/<label>.float.bin``; stdout and stderr go to ``<label>.stdout.txt`` and
    ``<label>.stderr.txt``."""
    rundir = os.path.join(outdir, f"{label}_run")
    os.makedirs(rundir, exist_ok=True)
    if os.path.exists("Fdump.bin") and "-hkl" not in " ".join(args):
        # nanoBragg reads Fdump.bin from its working folder when no -hkl is given
        shutil.copy("Fdump.bin", rundir)
    floatfile = os.path.abspath(os.path.join(outdir, f"{label}.float.bin"))
    full = cmd + args + ["-floatfile", floatfile]
    out_path = os.path.abspath(os.path.join(outdir, f"{label}.stdout.txt"))
    err_path = os.path.abspath(os.path.join(outdir, f"{label}.stderr.txt"))
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            proc = subprocess.run(full, cwd=rundir, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                  timeout=timeout)
        except FileNotFoundError:
            raise CompareError(f"--{label}: cannot run {cmd[0]!r}: no such program", EXIT_PROGRAM) from None
        except PermissionError:
            raise CompareError(f"--{label}: cannot run {cmd[0]!r}: permission denied", EXIT_PROGRAM) from None
        except subprocess.TimeoutExpired:
            raise CompareError(f"--{label}: {_name(cmd)} did not finish within {timeout:g} s", EXIT_PROGRAM) from None
    info = {"command": shlex.join(full), "returncode": proc.returncode, "stdout": out_path, "stderr": err_path,
            "floatfile": floatfile}
    if proc.returncode != 0:
        last = _last_line(err_path) or _last_line(out_path)
        raise CompareError(f"--{label}: {_name(cmd)} exited with status {proc.returncode}" + (f": {last}" if last else "")
                           + f" (see {err_path})", EXIT_PROGRAM)
    if not os.path.isfile(floatfile):
        raise CompareError(f"--{label}: {_name(cmd)} wrote no float image ({floatfile})", EXIT_PROGRAM)
    return info


def _name(cmd: list[str]) -> str:
    """How a command is called in messages: nbxp for ``python -m nbxp``, else its words."""
    return cmd[-1] if cmd[:2] == [sys.executable, "-m"] else shlex.join(cmd)


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


# ----------------------------------------------------------------------------- images

def expected_shape(args: list[str], cwd: str) -> tuple[int, int] | None:
    """(spixels, fpixels) that the nanoBragg arguments ask for, or None if nbxp cannot
    parse them (the programs may still run)."""
    try:
        from ..flags import parse_args
        det = parse_args(list(args), cwd=cwd).config.detector
        return det.spixels, det.fpixels
    except Exception:  # any reason the arguments are not nbxp's: fall back to other clues
        return None


def read_float_image(path: str, stdout_path: str, hint: tuple[int, int] | None, label: str) -> np.ndarray:
    """The raw float32 image as (spixels, fpixels) float64; the shape comes from the
    program's '(FxS pixels)' printout, else ``hint``, else a square."""
    try:
        data = np.fromfile(path, dtype="<f4")
    except (OSError, ValueError) as e:
        raise CompareError(f"--{label}: cannot read {path}: {e}", EXIT_IO) from None
    n = data.size
    if os.path.getsize(path) != 4 * n or n == 0:
        raise CompareError(f"--{label}: {path} is not a float32 image ({os.path.getsize(path)} bytes)", EXIT_IO)
    candidates = []
    try:
        with open(stdout_path, encoding="utf-8", errors="replace") as fh:
            for m in _PIXELS.finditer(fh.read()):
                candidates.append((int(m.group(2)), int(m.group(1))))
    except OSError:
        pass
    if hint is not None:
        candidates.append(hint)
    side = math.isqrt(n)
    candidates.append((side, side))
    for s, f in candidates:
        if s * f == n:
            return data.astype(np.float64).reshape(s, f)
    raise CompareError(f"--{label}: cannot tell the shape of {path} ({n} floats)", EXIT_IO)


def resample(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of ``img`` at the pixel centres of a ``shape`` grid covering
    the same detector area (edges clamped)."""
    def axis(n_out, n_in):
        x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0.0, n_in - 1.0)
        i0 = np.minimum(np.floor(x).astype(np.int64), max(n_in - 2, 0))
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, x - i0

    s0, s1, ws = axis(shape[0], img.shape[0])
    f0, f1, wf = axis(shape[1], img.shape[1])
    top = img[s0][:, f0] * (1 - wf) + img[s0][:, f1] * wf
    bottom = img[s1][:, f0] * (1 - wf) + img[s1][:, f1] * wf
    return top * (1 - ws)[:, None] + bottom * ws[:, None]


def statistics(a: np.ndarray, b: np.ndarray) -> dict:
    """Agreement of two equally shaped images (photons per pixel)."""
    a, b = a.ravel(), b.ravel()
    d = b - a
    sa, sb = float(a.sum()), float(b.sum())
    ca, cb = a - a.mean(), b - b.mean()
    den = math.sqrt(float(ca @ ca) * float(cb @ cb))
    if den > 0:
        corr = float(ca @ cb) / den
    else:
        corr = 1.0 if np.array_equal(a, b) else float("nan")  # constant images: only equality is agreement
    mse = float(np.mean(d * d))
    return {"pixels": int(a.size), "correlation": corr, "mse": mse, "rmse": math.sqrt(mse),
            "max_abs_diff": float(np.max(np.abs(d))), "sum_a": sa, "sum_b": sb,
            "sum_ratio": sb / sa if sa != 0 else None}


def write_png(path: str, rgb_or_gray: np.ndarray) -> None:
    """Write an 8-bit image (H, W) or (H, W, 3) as PNG (Pillow, which fabio already needs)."""
    from PIL import Image
    Image.fromarray(np.ascontiguousarray(rgb_or_gray, dtype=np.uint8)).save(path, format="PNG")


def previews(a: np.ndarray, b: np.ndarray, outdir: str, diff: bool) -> dict:
    """PNG previews: both images linear from 0 to the 99.5th percentile of both together
    (so equal pixels look equal), and optionally B - A from -m to +m (blue-white-red),
    m the 99.5th percentile of |B - A|."""
    both = np.concatenate([a.ravel(), b.ravel()])
    finite = both[np.isfinite(both)]
    top = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    top = top if top > 0 else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    gray = lambda img: np.clip(np.nan_to_num(img, nan=0.0) / top * 255.0 + 0.5, 0, 255)  # noqa: E731
    files = {"a": os.path.join(outdir, "a.png"), "b": os.path.join(outdir, "b.png")}
    write_png(files["a"], gray(a))
    write_png(files["b"], gray(b))
    if diff and a.shape == b.shape:
        d = np.nan_to_num(b - a, nan=0.0)
        m = float(np.percentile(np.abs(d), 99.5))
        m = m if m > 0 else (float(np.abs(d).max()) or 1.0)
        t = np.clip(d / m, -1.0, 1.0)
        rgb = np.empty(d.shape + (3,))
        rgb[..., 0] = np.where(t > 0, 1.0, 1.0 + t)  # red where B > A
        rgb[..., 1] = 1.0 - np.abs(t)
        rgb[..., 2] = np.where(t < 0, 1.0, 1.0 - t)  # blue where B < A
        files["diff"] = os.path.join(outdir, "diff.png")
        write_png(files["diff"], rgb * 255.0 + 0.5)
    files["scale_max"] = top
    return files


# ----------------------------------------------------------------------------- command

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 1 (argparse would print its usage and exit 2)
        raise CompareError(message, EXIT_USAGE)


def get_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nbxp-compare", allow_abbrev=False,
        usage="nbxp-compare [--a PROG] [--b PROG] [--outdir DIR] [options] -- <nanoBragg arguments>",
        description="Run two nanoBragg-compatible programs with the same arguments and compare their float images.",
        epilog="Exit status: 0 ok, 1 usage error, 2 a program failed, 3 correlation below --threshold, "
               "4 shapes differ (see --resample), 5 input/output error.")
    p.add_argument("--a", metavar="PROG", help="first program (default: $NB_C_BIN, nanoBragg)")
    p.add_argument("--b", metavar="PROG", help="second program (default: nbxp)")
    p.add_argument("--outdir", metavar="DIR", help="output folder (default: a new nbxp-compare-<date>-<time>)")
    p.add_argument("--roi", nargs=4, type=int, metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
                   help="compare only fast pixels XMIN..XMAX and slow pixels YMIN..YMAX (inclusive, as -roi)")
    p.add_argument("--threshold", type=float, metavar="R",
                   help="exit with status 3 when the correlation is below R")
    p.add_argument("--resample", action="store_true",
                   help="interpolate B onto A's pixel grid when the shapes differ (default: exit status 4)")
    p.add_argument("--diff-png", action="store_true", help="also write diff.png (B - A)")
    p.add_argument("--timeout", type=float, metavar="S", help="stop a program that runs longer than S seconds")
    return p


def _usage(msg: str) -> CompareError:
    return CompareError(msg, EXIT_USAGE)


def _new_outdir() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"nbxp-compare-{stamp}"
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def _atomic_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def compare(argv: list[str]) -> tuple[int, dict]:
    """Parse ``argv`` (options, ``--``, nanoBragg arguments), run, compare; the exit status
    and the summary (also written to ``summary.json``)."""
    if "--" not in argv:
        if any(a in ("-h", "--help") for a in argv):
            get_parser().print_help()
            return EXIT_OK, {}
        raise _usage("expected '--' and then the nanoBragg arguments")
    cut = argv.index("--")
    parser = get_parser()
    try:
        opts = parser.parse_args(argv[:cut])
    except SystemExit:  # -h: argparse has printed the help
        return EXIT_OK, {}
    nb_args = argv[cut + 1:]
    if not nb_args:
        raise _usage("no nanoBragg arguments after '--'")
    try:
        cmd_a = shlex.split(opts.a) if opts.a else default_a()
        cmd_b = shlex.split(opts.b) if opts.b else default_b()
    except ValueError as e:
        raise _usage(f"--a/--b: {e}") from None
    if not cmd_a or not cmd_b:
        raise _usage("--a/--b: empty program")
    if opts.timeout is not None and not opts.timeout > 0:
        raise _usage(f"--timeout: expected a positive number of seconds, got {opts.timeout:g}")
    if opts.threshold is not None and not math.isfinite(opts.threshold):
        raise _usage("--threshold: expected a finite correlation")
    if opts.roi is not None:
        x0, x1, y0, y1 = opts.roi
        if x0 < 0 or y0 < 0 or x1 < x0 or y1 < y0:
            raise _usage(f"--roi: expected 0 <= XMIN <= XMAX and 0 <= YMIN <= YMAX, got {' '.join(map(str, opts.roi))}")

    args = absolute_inputs(nb_args, os.getcwd())
    hint = expected_shape(args, os.getcwd())
    if opts.roi is not None and hint is not None and (opts.roi[1] >= hint[1] or opts.roi[3] >= hint[0]):
        raise _usage(f"--roi: {' '.join(map(str, opts.roi))} is outside the {hint[1]}x{hint[0]} detector")

    outdir = opts.outdir or _new_outdir()
    try:
        os.makedirs(outdir, exist_ok=True)
        if not os.access(outdir, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise CompareError(f"--outdir: cannot use {outdir}: {e.strerror or e}", EXIT_IO) from None

    runs = {"a": run_program("a", cmd_a, args, outdir, opts.timeout),
            "b": run_program("b", cmd_b, args, outdir, opts.timeout)}
    A = read_float_image(runs["a"]["floatfile"], runs["a"]["stdout"], hint, "a")
    B = read_float_image(runs["b"]["floatfile"], runs["b"]["stdout"], hint, "b")
    summary = {"outdir": os.path.abspath(outdir), "arguments": nb_args, "a": runs["a"], "b": runs["b"],
               "shape_a": list(A.shape), "shape_b": list(B.shape), "resampled": False, "roi": opts.roi,
               "threshold": opts.threshold}
    status = EXIT_OK
    if A.shape != B.shape:
        if not opts.resample:
            summary["status"] = EXIT_SHAPE
            summary["message"] = f"shapes differ: A is {A.shape[1]}x{A.shape[0]}, B is {B.shape[1]}x{B.shape[0]} pixels"
            previews(A, B, outdir, diff=False)
            _atomic_json(os.path.join(outdir, "summary.json"), _json_safe(summary))
            return EXIT_SHAPE, summary
        B = resample(B, A.shape)
        summary["resampled"] = True
    ra, rb = A, B
    if opts.roi is not None:
        x0, x1, y0, y1 = opts.roi
        if x1 >= A.shape[1] or y1 >= A.shape[0]:
            raise _usage(f"--roi: {' '.join(map(str, opts.roi))} is outside the {A.shape[1]}x{A.shape[0]} image")
        ra, rb = A[y0:y1 + 1, x0:x1 + 1], B[y0:y1 + 1, x0:x1 + 1]
    stats = statistics(ra, rb)
    summary.update(stats)
    try:
        pngs = previews(A, B, outdir, diff=opts.diff_png)
    except OSError as e:
        raise CompareError(f"cannot write the previews in {outdir}: {e.strerror or e}", EXIT_IO) from None
    summary["png"] = pngs
    corr = stats["correlation"]
    if opts.threshold is not None and not (corr >= opts.threshold):
        status = EXIT_THRESHOLD
        summary["message"] = f"correlation {corr:.6g} is below the threshold {opts.threshold:g}"
    summary["status"] = status
    try:
        _atomic_json(os.path.join(outdir, "summary.json"), _json_safe(summary))
    except OSError as e:
        raise CompareError(f"cannot write {outdir}/summary.json: {e.strerror or e}", EXIT_IO) from None
    return status, summary


def report(summary: dict) -> str:
    fmt = lambda x: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.8g}"  # noqa: E731
    lines = [f"A: {summary['a']['command']}", f"B: {summary['b']['command']}",
             f"shape A {summary['shape_a'][1]}x{summary['shape_a'][0]}, B {summary['shape_b'][1]}x{summary['shape_b'][0]}"
             + (" (B resampled onto A)" if summary.get("resampled") else "")]
    if "correlation" in summary:
        where = "roi " + " ".join(map(str, summary["roi"])) if summary.get("roi") else "whole frame"
        lines.append(f"over the {where} ({summary['pixels']} pixels):")
        for k in ("correlation", "mse", "rmse", "max_abs_diff", "sum_a", "sum_b", "sum_ratio"):
            lines.append(f"  {k:<13} {fmt(summary[k])}")
    if summary.get("message"):
        lines.append(summary["message"])
    lines.append(f"results in {summary['outdir']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status, summary = compare(argv)
    except CompareError as e:
        print(f"nbxp-compare: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("nbxp-compare: interrupted", file=sys.stderr)
        return 130
    if summary:
        _print(report(summary))
    return status


def _print(text: str) -> None:
    """Print, quietly stopping when the reader has gone (``| head``)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
