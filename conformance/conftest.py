"""Conformance suite plumbing: acceptance IDs, nbxp-only tests, and the closing table.

Every test carries ``@pytest.mark.at("AT-XXX-NNN", "title")``.  Tests that check a decision
of nbxp's rather than nanoBragg's behaviour also carry ``@pytest.mark.nbxp_only`` and are
skipped when ``NB_PROGRAM`` names another program.  ``pytest conformance`` ends with a table
of ID, title and result.
"""

from __future__ import annotations

import pytest

from conformance._nb import is_nbxp, program

_ROWS: dict[str, list] = {}   # nodeid -> [id, title, result]
_ORDER = ["failed", "error", "passed", "skipped"]


def pytest_configure(config):
    config.addinivalue_line("markers", "at(id, title): the acceptance test this checks (docs/spec/acceptance.md)")
    config.addinivalue_line("markers", "nbxp_only: checks an nbxp decision; skipped unless NB_PROGRAM is nbxp")


def pytest_report_header(config):
    return f"conformance: program under test: {' '.join(program())} ({'nbxp' if is_nbxp() else 'not nbxp'})"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="nbxp-only: checks an nbxp decision, and NB_PROGRAM is not nbxp")
    for item in items:
        m = item.get_closest_marker("at")
        if m is None:
            continue
        title = m.args[1]
        if getattr(item, "callspec", None) is not None:
            title += f" [{item.callspec.id}]"
        if item.get_closest_marker("nbxp_only"):
            title += " (nbxp-only)"
        _ROWS[item.nodeid] = [m.args[0], title, None]
        if item.get_closest_marker("nbxp_only") and not is_nbxp():
            item.add_marker(skip)


def pytest_runtest_logreport(report):
    row = _ROWS.get(report.nodeid)
    if row is None:
        return
    if report.failed:
        row[2] = "failed" if report.when == "call" else "error"
    elif report.skipped and row[2] is None:
        row[2] = "skipped"
    elif report.passed and report.when == "call" and row[2] is None:
        row[2] = "passed"


def pytest_terminal_summary(terminalreporter):
    rows = [r for r in _ROWS.values() if r[2] is not None]
    if not rows:
        return
    tr = terminalreporter
    tr.section("conformance: " + " ".join(program()))
    wid = max(len(r[0]) for r in rows)
    wt = max(len(r[1]) for r in rows)
    tr.write_line(f"{'ID':<{wid}}  {'title':<{wt}}  result")
    for r in rows:
        tr.write_line(f"{r[0]:<{wid}}  {r[1]:<{wt}}  {r[2]}")
    counts = {k: sum(r[2] == k for r in rows) for k in _ORDER}
    tr.write_line(", ".join(f"{v} {k}" for k, v in counts.items() if v))
