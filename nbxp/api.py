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
    if name == "torch":
        # torch's own namespace is not the array API (e.g. no permute_dims); the compat
        # wrapper is, and it returns torch tensors that carry autograd graphs
        import array_api_compat.torch as xt
        return xt
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


def backend_choice(xp=None, backend: str | None = None, dtype=None):
    """What renders a simulation, from ``xp`` and/or ``backend`` ('auto', 'numpy', 'cpu' or
    'cupy'; see :func:`nbxp.gpu.choose_backend`): (the array module to set up on, 'cpu' when
    the compiled CPU kernel renders or None).  With neither, the compiled CPU kernel where it
    can be built, else the NumPy engine; 'auto' picks CuPy only when a usable GPU is present;
    'cupy' without a GPU, or 'cpu' without a compiler, raises :class:`nbxp.gpu.BackendError`.
    Given both, they must agree ('auto' defers to ``xp``).  The choice is logged (logger
    ``nbxp``)."""
    if backend is None:
        if xp is not None:
            return xp, None
        # the library default: the compiled CPU kernel where it can be built, else the
        # NumPy engine; never the GPU unasked (the image stays a NumPy array)
        from .gpu import choose_backend, log
        name, why = choose_backend("auto", _np_dtype(dtype), gpu=False)
        log.info("nbxp backend: %s (%s)", name, why)
        return np, ("cpu" if name == "cpu" else None)
    from .gpu import BackendError, choose_backend, is_cupy, log
    if xp is not None and str(backend).lower() == "auto":
        return xp, None
    name, why = choose_backend(backend, _np_dtype(dtype))
    if xp is not None and is_cupy(resolve_namespace(xp)) != (name == "cupy"):
        raise BackendError(f"backend={backend!r} contradicts xp={getattr(xp, '__name__', xp)!r}")
    if xp is not None and name == "cpu" and getattr(resolve_namespace(xp), "__name__", "") != "numpy":
        raise BackendError(f"backend='cpu' renders NumPy arrays; it contradicts xp={getattr(xp, '__name__', xp)!r}")
    log.info("nbxp backend: %s (%s)", name, why)
    if xp is not None:
        return xp, ("cpu" if name == "cpu" else None)
    if name == "cupy":
        import cupy
        return cupy, None
    return np, ("cpu" if name == "cpu" else None)


def _np_dtype(dtype):
    if dtype is None:
        return np.float64
    if isinstance(dtype, str):
        return np.dtype(dtype)
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.float64


def simulate(config: SimConfig, *, xp=None, dtype=None, backend: str | None = None,
             threads: int | None = None, tile_bytes: int | None = None, experiment_out: list | None = None,
             fast_math: bool | None = None, params: dict | None = None):
    """The float image (photons per pixel) of ``config``, shape (spixels, fpixels); for a
    multi-panel detector (``config.detector.panels``) a list of per-panel images, image p of
    shape (spixels_p, fpixels_p) (:func:`nbxp.panels.slab` stacks them into the raw layout).

    Which code renders it:

    - neither ``xp`` nor ``backend`` (the default): the compiled CPU kernel
      (:mod:`nbxp.kernels.cpu_simd`) where a C++ compiler builds it, else the NumPy engine;
      a NumPy array either way;
    - ``xp``: the array-API engine on that namespace (``numpy``, ``array_api_strict``,
      torch, JAX, ...: passing ``xp=numpy`` explicitly selects the NumPy engine, nbxp's
      specification), or the CUDA kernel for ``cupy`` (the image stays on the device);
    - ``backend``: 'numpy' (the engine), 'cpu' (the compiled kernel; error without a
      compiler), 'cupy' or 'auto' (CuPy on a usable GPU, else 'cpu', else 'numpy').

    ``dtype``: float64 (default) or float32.  ``threads``: CPU worker threads (default:
    every core); ``tile_bytes``: memory for one tile's temporaries in the NumPy engine
    (default :data:`nbxp.engine.DEFAULT_TILE_BYTES`); neither changes the image.
    ``fast_math``: the CPU kernel built with FMA contraction (default: ``$NBXP_FAST_MATH``).
    ``experiment_out``: if a list is given, the resolved :class:`Experiment` is appended.

    ``params``: differentiable parameters, ``{"detector.distance": t, ...}``: each key the
    dotted path of a :class:`SimConfig` field, each value an array of the namespace (torch,
    JAX) in the field's SI units and shape standing in for its value; the image then carries
    the graph (see :mod:`nbxp.params` and docs/gradients.md).  They run on the array-API
    engine (``xp``, default the parameters' namespace); the compiled kernels are
    forward-only and refuse them (ConfigError).
    """
    if params is not None:
        from .params import simulate_params
        return simulate_params(config, params, xp=xp, dtype=dtype, backend=backend, tile_bytes=tile_bytes,
                               experiment_out=experiment_out)
    module, renderer = backend_choice(xp, backend, dtype)
    ns = resolve_namespace(module)
    dt = resolve_dtype(ns, dtype)
    exp = build_experiment(config, xp=ns, dtype=dt)
    kw = {} if tile_bytes is None else {"tile_bytes": int(tile_bytes)}
    if renderer is None and "jax" in getattr(ns, "__name__", ""):
        # JAX arrays are immutable: the tiles are joined and placed without item assignment
        from .params import render_pure
        img = render_pure(exp, **kw)
    else:
        img, _ = render(exp, threads=threads, backend=renderer, fast_math=fast_math, **kw)
    if experiment_out is not None:
        experiment_out.append(exp)
    return img


def config_from_args(args: Sequence[str], cwd: str = ".") -> SimConfig:
    """A :class:`SimConfig` from a nanoBragg argument list , e.g. ``config_from_args(["-cell", "100", "100", "100", "90", "90",
    "90", "-default_F", "100", "-N", "5"])``.  Files named in ``args`` are read relative to
    ``cwd``."""
    from .flags import parse_args
    return parse_args(list(args), cwd=cwd).config
