#!/usr/bin/env python
"""Write docs/nbxp.1, the nbxp man page, from the argparse parser (argparse-manpage).

Run it after changing a flag: ``python scripts/make_manpage.py``.  tests/test_manpage.py
fails while docs/nbxp.1 and the parser disagree.  View the page with ``man docs/nbxp.1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANPAGE = ROOT / "docs" / "nbxp.1"


def render() -> str:
    """The man page text for the current parser (deterministic: no date, fixed width)."""
    from argparse_manpage.manpage import Manpage

    from nbxp.flags import get_parser

    # argparse wraps text to the terminal width; fix it so the page does not depend on who
    # runs the script
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        page = Manpage(get_parser())
        page.date = "nbxp"            # a date line would change the file on every run
        page.source = "nbxp"
        page.manual = "nbxp manual"
        page.description = "nanoBragg-compatible diffraction image simulator"
        return str(page)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def main() -> int:
    sys.path.insert(0, str(ROOT))
    MANPAGE.write_text(render())
    print(f"wrote {MANPAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
