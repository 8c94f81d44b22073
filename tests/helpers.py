"""Test helpers: reference-data locations and conversions between namespaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"


def to_numpy(a) -> np.ndarray:
    """Host NumPy copy of an array of any namespace."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.from_dlpack(a)


requires_reference = pytest.mark.skipif(not (REFERENCE / "cases").is_dir(),
                                        reason="../shared/reference is not beside this checkout")
