"""``nbxp-trace-diff A.trace B.trace``: two ``-trace_pixel`` logs, quantity by quantity.

Either log may come from nanoBragg's instrumented build (``TRACE_C``, ``TRACE:``) or from
nbxp (``TRACE_PY``); other lines (the programs' normal printout) are ignored.  Lines are
paired by channel (main, ``_PHI``, ``_SOURCE2``, ``CONFIG``, ...) and tag, the n-th
occurrence of a tag in A with the n-th in B, so the per-sub-path blocks of an oversampled
pixel pair up in loop order.  Every number of a pair is compared:

    |a - b| <= rtol * scale + atol + (print rounding of a and b)

where ``scale`` is the largest magnitude in the number's group (a vector or matrix printed
as one run of numbers counts as one quantity, so a component that is zero in one program
and 1e-19 in the other is not a difference) and the print rounding is half a unit in the
last printed digit: 15 significant digits for ``%.15g`` lines, 6 for the crystal set-up
block that nanoBragg prints with ``%g`` (bare ``TRACE:`` lines).

Prints the first quantity that differs, how many do, and the scaling chain that turns the
accumulated intensity into photons (I_before_scaling, r_e^2, fluence, steps,
capture_fraction, polar, omega, final) with relative differences.  Exit status: 0 when
every paired quantity agrees, 1 when one differs, 2 when an input cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

_PREFIX = re.compile(r"^\s*TRACE(?:_(?P<prog>C|PY)(?=[_:\s]|$))?(?:_(?P<chan>[A-Z][A-Z0-9_]*[A-Z0-9]|[A-Z]))?:?\s?(?P<rest>.*)$")
# a number that stands alone (not the 0 of "a0" or the 2 of "cos_2theta"), C's nan/inf included
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)(?![\w.])", re.I)
_SEPARATOR = re.compile(r"^[\s,;]*$")

#: the tags of the final scaling, in the order nanoBragg applies them
SCALING_CHAIN = ("I_before_scaling", "r_e_sqr", "fluence_photons_per_m2", "steps", "capture_fraction",
                 "polar", "omega_pixel", "I_pixel_final", "floatimage_accumulated")


class TraceError(Exception):
    """An input that cannot be read as a trace; the message names the file."""


@dataclass
class TraceLine:
    lineno: int
    text: str
    channel: str
    name: str
    template: str
    numbers: list[str]
    groups: list[int]  # group number of each number (a run separated only by spaces/commas)
    digits: int  # significant digits the program printed (6 for %g, 15 for %.15g)
    prog: str = ""  # "C", "PY" or "" (bare TRACE:)
    occurrence: int = 0

    @property
    def key(self):
        return (self.channel, self.name, self.occurrence)

    @property
    def label(self) -> str:
        lead = f"{self.channel} " if self.channel else ""
        return f"{lead}{self.name}" + (f" #{self.occurrence + 1}" if self.occurrence else "")


@dataclass
class Trace:
    path: str
    lines: list[TraceLine] = field(default_factory=list)

    def last(self, name: str, channel: str = ""):
        for ln in reversed(self.lines):
            if ln.name == name and ln.channel == channel:
                return ln
        return None


def parse_line(text: str, lineno: int = 0) -> TraceLine | None:
    """A trace line split into channel, tag, template and numbers; None if not a trace line."""
    m = _PREFIX.match(text)
    if not m:
        return None
    chan = m.group("chan") or ""
    rest = m.group("rest").rstrip()
    numbers, groups, parts = [], [], []
    last, group = 0, -1
    for n in _NUMBER.finditer(rest):
        gap = rest[last:n.start()]
        if group < 0 or not _SEPARATOR.match(gap):
            group += 1
        parts.append(gap)
        parts.append("#")
        numbers.append(n.group())
        groups.append(group)
        last = n.end()
    parts.append(rest[last:])
    template = " ".join("".join(parts).split())
    cut = len(template)
    for ch in "=#[":
        i = template.find(ch)
        if i >= 0:
            cut = min(cut, i)
    name = template[:cut].strip().rstrip(":").strip() or template
    # nanoBragg prints its crystal set-up block (bare "TRACE:") with %g
    bare = m.group("prog") is None and not chan
    return TraceLine(lineno, text.rstrip("\n"), chan, name, template, numbers, groups, 6 if bare else 15,
                     m.group("prog") or "")


def read_trace(path: str) -> Trace:
    try:
        with open(path, encoding="utf-8", errors="strict") as fh:
            raw = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a text file"
        raise TraceError(f"cannot read {path}: {reason}") from None
    trace = trace_from_lines(raw.splitlines(), path)
    if not trace.lines:
        raise TraceError(f"{path}: no TRACE lines in it")
    return trace


def trace_from_lines(lines, path: str = "<lines>") -> Trace:
    """A :class:`Trace` from text lines (non-trace lines are skipped; line numbers count
    every line), numbering repeated tags in order of appearance."""
    trace = Trace(path)
    seen: dict = {}
    for i, text in enumerate(lines, start=1):
        ln = parse_line(text, i)
        if ln is None:
            continue
        k = (ln.channel, ln.name)
        ln.occurrence = seen.get(k, 0)
        seen[k] = ln.occurrence + 1
        trace.lines.append(ln)
    return trace


def _value(s: str) -> float:
    return float(s.lower().lstrip("+").replace("infinity", "inf"))


def _half_ulp(x: float, digits: int) -> float:
    """Half a unit in the last place of ``x`` printed with ``digits`` significant digits."""
    if x == 0.0 or not math.isfinite(x):
        return 0.0
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(x))) - (digits - 1))


def rel_diff(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|) (0 when both are zero or equal, inf for nan against a number)."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def compare_lines(la: TraceLine, lb: TraceLine, rtol: float, atol: float) -> list[dict]:
    """The differences between two paired lines (empty when they agree)."""
    base = {"quantity": la.label, "line_a": la.lineno, "line_b": lb.lineno}
    if la.template != lb.template or len(la.numbers) != len(lb.numbers):
        return [dict(base, kind="text", a=la.text, b=lb.text, rel_diff=None)]
    va = [_value(s) for s in la.numbers]
    vb = [_value(s) for s in lb.numbers]
    digits = min(la.digits, lb.digits)
    scale: dict[int, float] = {}
    for g, x, y in zip(la.groups, va, vb):
        m = max(abs(x) if math.isfinite(x) else 0.0, abs(y) if math.isfinite(y) else 0.0)
        scale[g] = max(scale.get(g, 0.0), m)
    out = []
    for i, (g, x, y) in enumerate(zip(la.groups, va, vb)):
        if x == y or (math.isnan(x) and math.isnan(y)):
            continue
        # both printed values are rounded: one unit in the last place apart is agreement
        # (the factor absorbs the rounding of this very subtraction)
        printed = (_half_ulp(x, digits) + _half_ulp(y, digits)) * (1.0 + 1e-9)
        ok = math.isfinite(x) and math.isfinite(y) and abs(x - y) <= rtol * scale[g] + atol + printed
        if not ok:
            where = f"[{i}]" if len(va) > 1 else ""
            out.append(dict(base, kind="value", quantity=la.label + where, a=la.numbers[i], b=lb.numbers[i],
                            rel_diff=rel_diff(x, y)))
    return out


def _fixed_labels(T: Trace) -> bool:
    """Whether ``T`` is nanoBragg's trace of a beam-pivot run, whose pivot block prints
    fixed MOSFLM text and axes (:data:`FIXED_LABELS`) whatever the convention."""
    return any(ln.prog == "C" and ln.name == "beam_center_m" and ln.template.startswith("beam_center_m=X:")
               for ln in T.lines)


#: lines of nanoBragg's beam-pivot block that are constants in its source, not the run's values
FIXED_LABELS = ("detector_convention", "initial_fdet", "initial_sdet", "initial_odet", "convention_mapping")


def diff_traces(A: Trace, B: Trace, rtol: float = 1e-9, atol: float = 0.0) -> dict:
    """Pair the two traces and compare every paired quantity (see the module docstring)."""
    index_b = {ln.key: ln for ln in B.lines}
    keys_a = {ln.key for ln in A.lines}
    fixed = _fixed_labels(A) or _fixed_labels(B)
    diffs, labels, pairs, values = [], [], 0, 0
    for la in A.lines:
        lb = index_b.get(la.key)
        if lb is None:
            continue
        pairs += 1
        values += len(la.numbers)
        found = compare_lines(la, lb, rtol, atol)
        if found and fixed and la.channel == "" and la.name in FIXED_LABELS and la.prog != lb.prog:
            labels.append({"quantity": la.label, "line_a": la.lineno, "line_b": lb.lineno, "a": la.text, "b": lb.text})
            continue
        diffs += found
    chain = []
    for tag in SCALING_CHAIN:
        la, lb = A.last(tag), B.last(tag)
        row = {"tag": tag, "a": la.numbers[0] if la and la.numbers else None,
               "b": lb.numbers[0] if lb and lb.numbers else None, "rel_diff": None}
        if row["a"] is not None and row["b"] is not None:
            row["rel_diff"] = rel_diff(_value(row["a"]), _value(row["b"]))
        chain.append(row)
    only = lambda T, other: [{"line": ln.lineno, "quantity": ln.label} for ln in T.lines if ln.key not in other]  # noqa: E731
    return {
        "a": A.path, "b": B.path, "rtol": rtol, "atol": atol,
        "paired_lines": pairs, "paired_values": values,
        "only_in_a": only(A, index_b), "only_in_b": only(B, keys_a),
        "differences": diffs, "first_difference": diffs[0] if diffs else None, "fixed_labels": labels,
        "scaling_chain": chain, "agree": not diffs,
    }


def _fmt_rel(r) -> str:
    return "-" if r is None else ("inf" if math.isinf(r) else f"{r:.3g}")


def report(result: dict, show_all: bool = False) -> str:
    out = [f"A: {result['a']}", f"B: {result['b']}",
           f"paired {result['paired_lines']} lines ({result['paired_values']} numbers); "
           f"only in A: {len(result['only_in_a'])}, only in B: {len(result['only_in_b'])}"]
    for side in ("only_in_a", "only_in_b"):
        items = result[side]
        if items:
            shown = ", ".join(f"{d['quantity']} (line {d['line']})" for d in items[:5])
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            out.append(f"  {side.replace('_', ' ')}: {shown}{more}")
    if result["fixed_labels"]:
        names = ", ".join(d["quantity"] for d in result["fixed_labels"])
        out.append(f"  not compared: {names} (nanoBragg prints MOSFLM's there whatever the convention)")
    diffs = result["differences"]
    if not diffs:
        out.append(f"every paired quantity agrees (rtol {result['rtol']:g}, atol {result['atol']:g})")
    else:
        d = diffs[0]
        out.append(f"first difference: {d['quantity']} (line {d['line_a']} of A, line {d['line_b']} of B)")
        if d["kind"] == "text":
            out += [f"  A: {d['a']}", f"  B: {d['b']}"]
        else:
            out.append(f"  A: {d['a']}   B: {d['b']}   relative difference {_fmt_rel(d['rel_diff'])}")
        out.append(f"{len(diffs)} quantities differ beyond rtol {result['rtol']:g}")
        if show_all:
            for d in diffs[1:]:
                out.append(f"  {d['quantity']}: A {d['a']}  B {d['b']}  rel {_fmt_rel(d['rel_diff'])}"
                           if d["kind"] == "value" else f"  {d['quantity']}: text differs")
    out.append("")
    out.append(f"{'scaling chain':<24} {'A':>24} {'B':>24} {'rel diff':>10}")
    for row in result["scaling_chain"]:
        out.append(f"{row['tag']:<24} {row['a'] or '-':>24} {row['b'] or '-':>24} {_fmt_rel(row['rel_diff']):>10}")
    return "\n".join(out)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit status 2 (the caller prints it)
        raise TraceError(message)


def get_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nbxp-trace-diff", allow_abbrev=False,
        description="Compare two -trace_pixel logs (nanoBragg's TRACE_C or nbxp's TRACE_PY) quantity by quantity.",
        epilog="Exit status: 0 every paired quantity agrees, 1 one differs, 2 an input cannot be read.")
    p.add_argument("a", metavar="A.trace")
    p.add_argument("b", metavar="B.trace")
    p.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance (default 1e-9)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--all", action="store_true", help="list every difference, not only the first")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    try:
        args = parser.parse_args(argv)
        if not (args.rtol >= 0 and args.atol >= 0):
            raise TraceError("--rtol and --atol must be numbers >= 0")
        A, B = read_trace(args.a), read_trace(args.b)
    except SystemExit:  # -h: argparse has printed the help
        return 0
    except TraceError as e:
        print(f"nbxp-trace-diff: error: {e}", file=sys.stderr)
        return 2
    result = diff_traces(A, B, args.rtol, args.atol)
    text = json.dumps(_jsonable(result), indent=1) if args.json else report(result, show_all=args.all)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # the reader has gone (| head): the exit status still tells
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if result["agree"] else 1


def _jsonable(obj):
    """Infinite relative differences as the string "inf" (JSON has no infinity)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
