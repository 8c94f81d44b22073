"""docs/nbxp.1 must be what argparse-manpage makes of today's parser."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("make_manpage", ROOT / "scripts" / "make_manpage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_manpage_matches_parser():
    fresh = _generator().render()
    stored = (ROOT / "docs" / "nbxp.1").read_text()
    assert fresh == stored, ("docs/nbxp.1 is out of date with the flags in nbxp/flags.py; "
                             "regenerate it with: python scripts/make_manpage.py")


def test_manpage_documents_every_flag():
    from nbxp.flags import FLAGS, NBXP_FLAGS
    page = _generator().render()
    assert page.startswith(".TH NBXP ")
    for f in FLAGS + NBXP_FLAGS:
        # roff escapes '-' as '\-'
        assert any(n.replace("-", "\\-") in page for n in f.names), f"{f.names[0]} missing from the man page"
