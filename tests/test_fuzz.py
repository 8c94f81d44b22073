"""Fuzzing the nbxp command with malformed command lines and files (tests/fuzzing.py).

Every case starts from a small valid run and breaks one thing; the answer must be a normal
run or one ``nbxp: error:`` line naming the flag or file, with a non-zero status, no
traceback, no file left behind or changed, within a time bound.  Most cases go through
``nbxp.cli.main`` in this process (a few milliseconds each); a sample runs as the real
``python -m nbxp`` to check the same through the interpreter and the exit status.  The
large run (thousands of cases) is ``scripts/fuzz.py``.
"""

from __future__ import annotations

import collections

import pytest

from . import fuzzing

#: seconds one run may take; the valid runs here take milliseconds, the bound catches
#: hangs and runaway set-ups (the machine running CI may be slow and shared)
BOUND_INPROCESS = 20.0
BOUND_SUBPROCESS = 60.0


def _check(cases, run, bound, tmp_path_factory):
    failures, kinds = [], collections.Counter()
    for case in cases:
        kinds[case.kind.split(":")[0]] += 1
        d = tmp_path_factory.mktemp("fuzz")
        o = run(case, str(d), bound)
        found = fuzzing.problems(case, o, bound)
        if found:
            failures.append(f"{case.describe()}\n    " + "\n    ".join(found))
    assert not failures, f"{len(failures)} of {sum(kinds.values())} cases broke a rule:\n" + "\n".join(failures[:15])
    return kinds


def test_fuzz_inprocess(tmp_path_factory):
    kinds = _check(fuzzing.cases(1500, seed=20261201), fuzzing.run_inprocess, BOUND_INPROCESS, tmp_path_factory)
    # the generator really covers every mutation family
    for k in ("malformed", "extreme", "missing", "unknown", "truncated", "duplicated", "stray", "hkl", "mat", "src",
              "img", "mask", "fdump"):
        assert kinds[k] >= 10, (k, kinds)


def test_fuzz_subprocess(tmp_path_factory):
    _check(fuzzing.cases(20, seed=7), fuzzing.run_subprocess, BOUND_SUBPROCESS, tmp_path_factory)


@pytest.mark.parametrize("argv,names", [
    (["-cell", "50", "-default_F", "1", "-detpixels", "4", "-distance", "abc"], ("-distance",)),
    (["-cell", "50", "-default_F", "1", "-detpixels", "4", "-frob", "1"], ("-frob",)),
])
def test_fuzz_rules_catch_a_bad_answer(argv, names, tmp_path):
    # the checker itself: a refusal that names the wrong thing, or a file left behind, or
    # a traceback, is reported
    case = fuzzing.Case("probe", argv, bad=True, names=names)
    o = fuzzing.run_inprocess(case, str(tmp_path), BOUND_INPROCESS)
    assert fuzzing.problems(case, o, BOUND_INPROCESS) == []
    wrong = fuzzing.Case("probe", argv, bad=True, names=("-nothing-like-this",))
    assert any("names none" in p for p in fuzzing.problems(wrong, o, BOUND_INPROCESS))
    o.after = dict(o.after, **{"floatimage.bin": b"partial"})
    assert any("folder changed" in p for p in fuzzing.problems(case, o, BOUND_INPROCESS))
    o.stderr = "Traceback (most recent call last):\n  ...\nZeroDivisionError\n"
    assert "traceback" in fuzzing.problems(case, o, BOUND_INPROCESS)
    ok = fuzzing.Case("probe", ["-cell", "50", "-default_F", "1", "-detpixels", "4"], bad=True)
    assert "invalid input accepted (exit 0)" in fuzzing.problems(ok, fuzzing.run_inprocess(ok, str(tmp_path), 60), 60)
