"""Library entry points: :func:`simulate` and :func:`config_from_args`."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import SimConfig
from .engine import render
from .experiment import build_experiment


def resolve_namespace(xp=None):
    """An array-API namespace from ``xp``: None or the numpy module -> NumPy (through
    array-api-compat), the cupy module -> CuPy, any array-API namespace as it is."""
    if xp is None:
        xp = np
    name = getattr(xp, "__name__", "")
    if name == "numpy":
        if hasattr(np, "cumulative_prod") and hasattr(np, "permute_dims"):
            # NumPy >= 2.1 is itself an array-API namespace; skipping the compat wrapper
            # saves ~0.3 s of start-up (it clones the whole numpy module)
            return np
        import array_api_compat.numpy as xnp
        return xnp
    if name == "cupy":
        import array_api_compat.cupy as xcp
        return xcp
    if hasattr(xp, "__array_namespace__"):  # an array was passed: use its namespace
        from array_api_compat import array_namespace
        return array_namespace(xp)
    return xp


def resolve_dtype(xp, dtype=None):
    if dtype is None:
        return xp.float64
    if isinstance(dtype, str):
        return getattr(xp, dtype)
    if dtype in (np.float64, np.dtype("float64"), float):
        return xp.float64
    if dtype in (np.float32, np.dtype("float32")):
        return xp.float32
    return dtype


def backend_namespace(xp=None, backend: str | None = None):
    """The array module to simulate on, from ``xp`` and/or ``backend`` ('auto', 'numpy' or
    'cupy'; see :func:`nbxp.gpu.choose_backend`).  'auto' picks CuPy only when a usable GPU is
    present and logs which it used (logger ``nbxp``); 'cupy' without one raises
    :class:`nbxp.gpu.BackendError`.  Given both, they must agree ('auto' defers to ``xp``)."""
    if backend is None:
        return xp
    from .gpu import BackendError, choose_backend, is_cupy, log
    if xp is not None and str(backend).lower() == "auto":
        return xp
    name, why = choose_backend(backend)
    if xp is not None and is_cupy(resolve_namespace(xp)) != (name == "cupy"):
        raise BackendError(f"backend={backend!r} contradicts xp={getattr(xp, '__name__', xp)!r}")
    log.info("nbxp backend: %s (%s)", name, why)
    if xp is not None:
        return xp
    if name == "cupy":
        import cupy
        return cupy
    return np


def simulate(config: SimConfig, *, xp=None, dtype=None, backend: str | None = None,
             threads: int | None = None, tile_bytes: int | None = None, experiment_out: list | None = None):
    """The float image (photons per pixel) of ``config``, shape (spixels, fpixels).

    ``xp``: ``numpy`` (default), ``cupy`` or any array-API namespace; the image is an array of
    that namespace (on the device for CuPy, rendered by the CUDA kernel).  ``backend``:
    'numpy', 'cupy' or 'auto' (CuPy when a usable GPU is present), instead of ``xp``.
    ``dtype``: float64 (default) or float32.
    ``threads``: CPU worker threads (default: every core); ``tile_bytes``: memory for one
    tile's temporaries (default :data:`nbxp.engine.DEFAULT_TILE_BYTES`); neither changes the
    image.
    ``experiment_out``: if a list is given, the resolved :class:`Experiment` is appended.
    """
    ns = resolve_namespace(backend_namespace(xp, backend))
    dt = resolve_dtype(ns, dtype)
    exp = build_experiment(config, xp=ns, dtype=dt)
    img, _ = render(exp, threads=threads, **({} if tile_bytes is None else {"tile_bytes": int(tile_bytes)}))
    if experiment_out is not None:
        experiment_out.append(exp)
    return img


def config_from_args(args: Sequence[str], cwd: str = ".") -> SimConfig:
    """A :class:`SimConfig` from a nanoBragg argument list , e.g. ``config_from_args(["-cell", "100", "100", "100", "90", "90",
    "90", "-default_F", "100", "-N", "5"])``.  Files named in ``args`` are read relative to
    ``cwd``."""
    from .flags import parse_args
    return parse_args(list(args), cwd=cwd).config
