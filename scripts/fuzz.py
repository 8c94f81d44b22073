#!/usr/bin/env python3
"""Large fuzz run of the nbxp command: thousands of malformed command lines and files.

usage: python scripts/fuzz.py [--cases 3000] [--seed 1] [--subprocess 200] [--bound 30] [--show 20]

Cases come from ``tests/fuzzing.py`` (the generator and the rules ``tests/test_fuzz.py``
checks in CI at a smaller size).  Most run in this process through ``nbxp.cli.main``, each
in a fresh empty folder; ``--subprocess`` of them also run as ``python -m nbxp``.  Prints
the counts by kind and of each broken rule (tracebacks, internal errors, runs over the time
bound, partial or changed files, messages that name no flag or file) and exits 1 when any
rule is broken.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests import fuzzing  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--subprocess", type=int, default=200, help="how many of the cases also run as python -m nbxp")
    ap.add_argument("--bound", type=float, default=30.0, help="time bound of one run (s)")
    ap.add_argument("--show", type=int, default=20, help="failing cases to print")
    a = ap.parse_args()

    kinds, rules, failing = collections.Counter(), collections.Counter(), []
    refused = accepted = 0
    every = max(1, a.cases // max(a.subprocess, 1)) if a.subprocess else 0
    slowest = (0.0, None)
    t0 = time.time()
    for i, case in enumerate(fuzzing.cases(a.cases, a.seed)):
        kinds[case.kind.split(":")[0] + (":" + case.kind.split(":")[1] if ":" in case.kind else "")] += 1
        runs = [("in-process", fuzzing.run_inprocess)]
        if every and i % every == 0:
            runs.append(("subprocess", fuzzing.run_subprocess))
        for how, fn in runs:
            with tempfile.TemporaryDirectory() as d:
                o = fn(case, d, a.bound)
            found = fuzzing.problems(case, o, a.bound)
            refused += o.rc != 0
            accepted += o.rc == 0
            if o.seconds > slowest[0]:
                slowest = (o.seconds, case)
            for f in found:
                rules[f.split(":")[0].split(" (")[0]] += 1
            if found:
                failing.append((how, case, found))
    n_runs = refused + accepted
    print(f"fuzz: {a.cases} cases, {n_runs} runs ({n_runs - a.cases} as subprocesses) in {time.time() - t0:.0f} s; "
          f"{refused} refused, {accepted} accepted; slowest run {slowest[0]:.2f} s"
          + (f" ({slowest[1].describe()})" if slowest[1] is not None else ""))
    print("kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    counts = {"traceback": 0, "internal error": 0, "over the time bound": 0, "folder changed by a failed run": 0,
              "invalid input accepted": 0, "not one 'nbxp": 0, "the message names none of": 0}
    for k, v in rules.items():
        for c in counts:
            if k.startswith(c):
                counts[c] += v
    print("broken rules: " + ", ".join(f"{k.rstrip(' of')}: {v}" for k, v in counts.items()))
    for how, case, found in failing[:a.show]:
        print(f"  {how}: {case.describe()}\n      " + "\n      ".join(found))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
