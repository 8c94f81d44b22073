"""Shared fixtures: the array namespaces under test."""

from __future__ import annotations

import importlib
import os

import pytest


def _backends():
    names = ["numpy", "array_api_strict"]
    try:
        import cupy  # noqa: F401
        if cupy.cuda.runtime.getDeviceCount() > 0:
            names.append("cupy")
    except Exception:
        pass
    wanted = os.environ.get("NBXP_TEST_BACKENDS")
    if wanted:
        names = [n for n in names if n in wanted.split(",")]
    return names


@pytest.fixture(params=_backends())
def xp(request):
    """An array-API namespace: NumPy (through array-api-compat), array-api-strict (catches
    calls outside the standard, which is how we know CuPy will run the same code), and CuPy
    when a GPU is present.  NBXP_TEST_BACKENDS=numpy,... narrows the list."""
    if request.param == "numpy":
        import array_api_compat.numpy as xnp
        return xnp
    if request.param == "cupy":
        import array_api_compat.cupy as xcp
        return xcp
    return importlib.import_module(request.param)
