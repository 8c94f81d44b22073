"""Differentiable parameters: ``simulate(cfg, params={...})`` and :func:`loss_and_grad`.

A parameter is named by the dotted path of a :class:`~nbxp.config.SimConfig` field
(``"detector.distance"``, ``"crystal.cell"``, ...) and given as an array of the namespace
(torch, JAX, ...) in the field's SI units and shape, standing in for the field's value.

The set-up runs in two phases:

- the **host phase** is :func:`nbxp.experiment.build_experiment` itself, on a copy of the
  configuration whose fields hold plain-float copies of the parameters: every discrete
  choice (convention, pivot, step counts, oversampling, interpolation, domain count, random
  draws, ROI/mask, header values) is made there, and is frozen for that evaluation;
- the **assembly phase** (:func:`assemble`) recomputes, from the parameter arrays and by
  namespace operations only, every array of the experiment that depends on them: the
  detector frame (and the close distance the solid angle uses), the cell and orientations
  (misset, phi, mosaic), the wavelengths, fluence, background, crystal size and structure
  factors.  Nothing there is skipped at special values (a rotation of 0, F^2 = 1), no host
  copy of a parameter-derived value is taken, and no array is updated in place.

Where nanoBragg rounds (its single-precision mosaic-domain matrices) the value comes from the
host and the derivative from the smooth formula (:func:`host_valued`).

Under a JAX trace (``jax.grad``) the parameters have no host value: the host phase then
takes the configuration's own values of those fields (the decisions are those of ``cfg``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from . import crystal as xtal
from .config import AVOGADRO, R_E_SQR, SimConfig
from .errors import ConfigError

#: the differentiable fields: dotted path -> shape of the stand-in ('grid': the HKL grid's)
FIELDS = {
    "detector.distance": (), "detector.close_distance": (),
    "detector.Xbeam": (), "detector.Ybeam": (), "detector.Xclose": (), "detector.Yclose": (),
    "detector.ORGX": (), "detector.ORGY": (),
    "detector.rotx": (), "detector.roty": (), "detector.rotz": (), "detector.twotheta": (),
    "beam.wavelength": (), "beam.fluence": (),
    "crystal.cell": (6,), "crystal.misset": (3,), "crystal.amat": (3, 3),
    "crystal.phi0": (), "crystal.osc": (), "crystal.phistep": (), "crystal.mosaic_spread": (),
    "crystal.Na": (), "crystal.Nb": (), "crystal.Nc": (),
    "default_F": (), "hkl.F": "grid",
}


def _namespace_name(xp) -> str:
    return getattr(xp, "__name__", "")


def host_copy(value):
    """A plain float (0-d) or float64 NumPy array copy of ``value``, or None when it has no
    host value (a JAX tracer)."""
    try:
        if hasattr(value, "detach"):  # torch: drop the graph before copying
            value = value.detach().cpu()
        a = np.asarray(value, dtype=np.float64)
    except Exception:  # a traced value (jax.grad): the host phase uses the config's own
        try:
            a = np.asarray(np.from_dlpack(value), dtype=np.float64)
        except Exception:
            return None
    return float(a) if a.ndim == 0 else a


def host_valued(smooth, host, *, xp):
    """An array whose value is ``host`` (a host array, e.g. nanoBragg's single-precision
    rounding of a formula) and whose derivative is that of ``smooth`` (the formula): the
    straight-through construction smooth + (host - stop_gradient(smooth))."""
    h = xp.asarray(np.asarray(host, dtype=np.float64), dtype=smooth.dtype)
    name = _namespace_name(xp)
    if "torch" in name:
        return smooth + (h - smooth.detach())
    if "jax" in name:
        import jax
        return smooth + (h - jax.lax.stop_gradient(smooth))
    return h


def _get(cfg, path):
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _with(obj, path, value):
    head, _, rest = path.partition(".")
    if not rest:
        return replace(obj, **{head: value})
    return replace(obj, **{head: _with(getattr(obj, head), rest, value)})


def check_params(cfg: SimConfig, params: dict) -> None:
    """Refuse (ConfigError, one line) a parameter that is not a differentiable field, has the
    wrong shape, or stands in for a field this configuration does not use."""
    if not isinstance(params, dict) or not params:
        raise ConfigError("params: expected a non-empty dict of dotted SimConfig field paths to arrays")
    if getattr(cfg.detector, "panels", None):
        raise ConfigError("params: differentiable parameters are for the one-panel detector (detector.panels is set)")
    for key, v in params.items():
        if key not in FIELDS:
            raise ConfigError(f"params: {key!r} is not a differentiable field (one of {', '.join(FIELDS)})")
        want = FIELDS[key]
        if want == "grid":
            if cfg.hkl is None or cfg.hkl.count == 0:
                raise ConfigError("params: 'hkl.F' needs a structure-factor grid (cfg.hkl)")
            want = tuple(cfg.hkl.F.shape)
        shape = tuple(v.shape) if hasattr(v, "shape") else tuple(np.shape(v))
        if shape != want:
            raise ConfigError(f"params: {key!r} must have shape {want}, not {shape}")
    cr = cfg.crystal
    if "crystal.cell" in params and cr.amat is not None:
        raise ConfigError("params: 'crystal.cell' stands in for -cell, but this crystal is given by an A matrix "
                          "(use 'crystal.amat' or 'crystal.misset')")
    if "crystal.amat" in params and cr.amat is None:
        raise ConfigError("params: 'crystal.amat' needs a crystal given by an A matrix (-mat)")
    for i, ax in enumerate("abc"):
        if f"crystal.N{ax}" in params and getattr(cr, f"size_{ax}") > 0:
            raise ConfigError(f"params: 'crystal.N{ax}' is set by the crystal size size_{ax}; give size_{ax} = 0")


def host_config(cfg: SimConfig, params: dict) -> SimConfig:
    """``cfg`` with each parameter's field replaced by a plain-float copy of its value (the
    configuration the host phase decides from); a value without a host copy keeps cfg's."""
    out = cfg
    for key, v in params.items():
        h = host_copy(v)
        if h is None:
            continue
        if key == "crystal.cell":
            h = tuple(float(x) for x in h)
        elif key == "crystal.misset":
            h = tuple(float(x) for x in h)
        elif key == "hkl.F":
            out = replace(out, hkl=replace(out.hkl, F=np.asarray(h, dtype=np.float64)))
            continue
        out = _with(out, key, h)
    if "crystal.misset" in params and out.crystal.misset is None:
        out = _with(out, "crystal.misset", (0.0, 0.0, 0.0))
    return out


def build_differentiable(cfg: SimConfig, params: dict, *, xp, dtype):
    """The :class:`~nbxp.experiment.Experiment` of ``cfg`` whose arrays depend on
    ``params`` through namespace operations (host phase, then :func:`assemble`)."""
    from .experiment import build_experiment
    check_params(cfg, params)
    P = {k: _as_param(v, xp=xp, dtype=dtype) for k, v in params.items()}
    host = host_config(cfg, P)
    exp = build_experiment(host, xp=xp, dtype=dtype)
    return assemble(exp, host, P, xp=xp, dtype=dtype)


def _as_param(v, *, xp, dtype):
    if hasattr(v, "dtype") and v.dtype == dtype:
        return v
    return xp.asarray(v, dtype=dtype)


def assemble(exp, cfg: SimConfig, P: dict, *, xp, dtype):
    """The assembly phase: ``exp`` (built by the host phase from ``cfg``) with every array
    that depends on the parameters ``P`` recomputed from them by namespace operations."""
    from .geometry import build_detector, convention_axes
    from .physics import StructureFactors
    from .sources import wavelength_factors

    det, beam, cr = cfg.detector, cfg.beam, cfg.crystal
    exp.differentiable = True

    # detector frame: pix0, axes, and the close distance of the solid angle
    dvals = {k.split(".", 1)[1]: v for k, v in P.items() if k.startswith("detector.")}
    if dvals:
        axes = convention_axes(det.convention, {
            "beam": beam.beam_vector, "fdet": det.fdet_vector, "sdet": det.sdet_vector,
            "odet": det.odet_vector, "twotheta_axis": det.twotheta_axis,
            "polar": beam.polar_vector, "spindle": cr.spindle_axis})
        fr = build_detector(det, axes, xp=xp, dtype=dtype, notes=[], values=dvals)
        exp.geom = replace(exp.geom, pix0=fr.pix0, fdet=fr.fdet, sdet=fr.sdet, odet=fr.odet,
                           close_distance=fr.close_distance, distance=fr.distance)

    # cell and orientations
    wl = P.get("beam.wavelength", beam.wavelength)
    cell_keys = ("crystal.cell", "crystal.misset", "crystal.amat", "crystal.phi0", "crystal.osc",
                 "crystal.phistep", "crystal.mosaic_spread")
    if any(k in P for k in cell_keys) or ("beam.wavelength" in P and cr.amat is not None):
        lengths = V_user = None
        recip = None
        if cr.cell is not None:
            if "crystal.cell" in P:
                recip, V_user, lengths = xtal.standard_setting_pure(_cell_stand_in(cr.cell, P["crystal.cell"]), xp=xp)
            else:
                r_h, V_user, lengths = xtal.standard_setting(
                    (cr.cell[0] * 1e10, cr.cell[1] * 1e10, cr.cell[2] * 1e10, *cr.cell[3:6]), [])
                recip = xp.asarray(r_h, dtype=dtype)
        if cr.amat is not None:
            A = P.get("crystal.amat")
            A = xp.asarray(np.asarray(cr.amat, dtype=float), dtype=dtype) if A is None else A
            recip = xp.permute_dims(A, (1, 0)) * (1e-10 / wl)
        misset = cr.misset
        if misset == "random":
            misset = xtal.random_misset(cr.misset_seed if cr.misset_seed is not None else cfg.seed)
        if "crystal.misset" in P:
            m = P["crystal.misset"]
            misset = (m[0], m[1], m[2])
        elif not isinstance(misset, tuple):
            misset = None
        vecs = xtal.cell_vectors_pure(recip, misset, lengths if cr.cell is not None else None, V_user, xp=xp)
        sampling = exp.sampling
        phis = None
        if any(k in P for k in ("crystal.phi0", "crystal.osc", "crystal.phistep")):
            phi0 = P.get("crystal.phi0", sampling.phi0)
            if "crystal.phistep" in P:
                step = P["crystal.phistep"]
            elif "crystal.osc" in P and (cr.phistep is None or cr.phistep <= 0) and cr.osc is not None and cr.osc >= 0:
                # the step nanoBragg derives from the oscillation range
                step = P["crystal.osc"] / sampling.phisteps
            else:
                step = sampling.phistep
            phis = phi0 + step * xp.arange(sampling.phisteps, dtype=dtype)
        umats = exp.mosaic_umats
        if umats is None and "crystal.mosaic_spread" in P:
            # without a spread nanoBragg renders one unrotated domain: no draws to scale
            raise ConfigError("params: 'crystal.mosaic_spread' needs a positive spread (-mosaic) and its domains")
        if umats is not None and "crystal.mosaic_spread" in P:
            axes_m, scales = xtal.mosaic_draws(sampling, cr.mosaic_seed)
            smooth = xtal.mosaic_matrices_smooth(P["crystal.mosaic_spread"], axes_m, scales, xp=xp, dtype=dtype)
            umats = host_valued(smooth, umats, xp=xp)
        elif umats is not None:
            umats = xp.asarray(umats, dtype=dtype)
        spindle = xp.asarray(exp.spindle_unit, dtype=dtype)
        orient = xtal.orientations(vecs.real * 1e-10, spindle, sampling, cr.mosaic_seed, xp=xp, dtype=dtype,
                                   umats=umats, phis=phis)
        exp.orient = orient
        exp.orient_rows = xp.reshape(xp.permute_dims(orient, (1, 0, 2)), (-1, 3))
        exp.recip = vecs.reciprocal

    # crystal size: a stand-in replaces a size of at least one cell (nanoBragg clamps below)
    N = list(exp.N)
    for i, ax in enumerate("abc"):
        if f"crystal.N{ax}" in P and getattr(cr, f"N{ax}") >= 1.0:
            N[i] = P[f"crystal.N{ax}"]
    exp.N = tuple(N)

    # sources' wavelengths
    if "beam.wavelength" in P:
        scale, offset = wavelength_factors(beam)
        exp.lambdas = wl * xp.asarray(scale, dtype=dtype) + xp.asarray(offset, dtype=dtype)

    # fluence and the water background it scales
    if "beam.fluence" in P:
        fl = P["beam.fluence"]
        exp.fluence = fl
        if exp.I_bg != 0.0:
            from .experiment import WATER_F, WATER_MW
            cube = cfg.water_size ** 3
            exp.I_bg = WATER_F ** 2 * R_E_SQR * fl * cube * 1e6 * AVOGADRO / WATER_MW

    # structure factors
    if "default_F" in P or "hkl.F" in P:
        F = exp.F
        grid = F.grid
        if "hkl.F" in P:
            grid = xp.reshape(P["hkl.F"], (-1,))
        new = StructureFactors(grid, F.shape, F.mins, F.count, P.get("default_F", F.default_F), xp=xp)
        new.pure = True
        if new.count > 0:
            new._padded_grid()  # built here, once: part of the assembly, not of a tile
        exp.F = new
    return exp


def _cell_stand_in(host_cell, t):
    """The six cell entries (A, rad) from the stand-in ``t`` (m, rad), with nanoBragg's
    defaults for non-positive entries decided on the host (b, c = a; angles 90 deg)."""
    a, b, c, al, be, ga = (t[i] for i in range(6))
    a, b, c = a * 1e10, b * 1e10, c * 1e10
    h = list(host_cell) + [0.0] * 6
    b = a if h[1] <= 0 else b
    c = a if h[2] <= 0 else c
    al = math.pi / 2 if h[3] <= 0 else al
    be = math.pi / 2 if h[4] <= 0 else be
    ga = math.pi / 2 if h[5] <= 0 else ga
    return a, b, c, al, be, ga


# -- rendering -------------------------------------------------------------------------------

def render_pure(exp, *, tile_bytes=None):
    """The image (spixels, fpixels) of a differentiable experiment: the engine's tiles in
    order, joined by concatenation and placed by a gather (no item assignment).  For a
    multi-panel experiment the list of per-panel images, as :func:`nbxp.engine.render` gives
    it (the panels in order, sharing the interpolation state)."""
    from .engine import DEFAULT_TILE_BYTES, InterpolationState, rendered_mask, tile_size, tile_values, tiles
    xp = exp.xp
    state = InterpolationState(active=exp.interpolate)
    images = []
    for p in range(len(exp.panels)):
        view = exp.panel_view(p)  # the experiment itself for nanoBragg's one panel
        P = tile_size(view, DEFAULT_TILE_BYTES if tile_bytes is None else tile_bytes)
        vals = [tile_values(view, xp.asarray(ids), state) for ids in tiles(view, P)]
        vals = xp.concat(vals) if vals else xp.zeros((0,), dtype=exp.dtype)
        images.append(place_pure(view, vals, rendered_mask(view)))
    return images if exp.multi_panel else images[0]


def place_pure(exp, vals, mask: np.ndarray):
    """:func:`nbxp.engine.place` as a gather: the image with ``vals`` at the pixels of the
    host bool image ``mask`` (row-major) and zeros elsewhere."""
    xp, g = exp.xp, exp.geom
    npix = g.fpixels * g.spixels
    if vals.shape[0] == npix:
        return xp.reshape(vals, (g.spixels, g.fpixels))
    index = np.zeros(npix, dtype=np.int64)
    flat = mask.reshape(-1)
    index[flat] = 1 + np.arange(int(np.count_nonzero(flat)))
    ext = xp.concat([xp.zeros((1,), dtype=exp.dtype), vals])
    return xp.reshape(xp.take(ext, xp.asarray(index), axis=0), (g.spixels, g.fpixels))


def resolve_params_namespace(params: dict, xp=None, backend=None):
    """The array-API namespace a differentiable simulation runs on: ``xp`` (resolved), else
    that of the parameter arrays.  The compiled CPU and CUDA kernels are forward-only."""
    from .api import resolve_namespace
    if backend is not None and str(backend).lower() not in ("numpy", "auto"):
        raise ConfigError(f"params: backend={backend!r} is forward-only; differentiable parameters run on the "
                          "array-API engine (give xp=torch or xp=jax.numpy)")
    if xp is None:
        first = next(iter(params.values()))
        if not hasattr(first, "__array_namespace__") and not hasattr(first, "detach"):
            raise ConfigError("params: give xp= or parameter values that are arrays of a namespace (torch, JAX)")
        from array_api_compat import array_namespace
        ns = array_namespace(first)
    else:
        ns = resolve_namespace(xp)
    if _namespace_name(ns).endswith("cupy"):
        raise ConfigError("params: CuPy renders with the forward-only CUDA kernel; use xp=torch or xp=jax.numpy")
    return ns


def simulate_params(config, params, *, xp=None, dtype=None, backend=None, tile_bytes=None, experiment_out=None):
    """:func:`nbxp.simulate` with ``params``: the image as an array carrying the graph."""
    from .api import resolve_dtype
    ns = resolve_params_namespace(params, xp, backend)
    dt = resolve_dtype(ns, dtype)
    exp = build_differentiable(config, params, xp=ns, dtype=dt)
    img = render_pure(exp, tile_bytes=tile_bytes)
    if experiment_out is not None:
        experiment_out.append(exp)
    return img


# -- loss and gradient, tile by tile ---------------------------------------------------------

def _graph_slots(exp):
    """(owner, attribute) pairs of the experiment's values that may depend on parameters:
    what the engine reads from the assembly phase."""
    g = exp.geom
    slots = [(g, "pix0"), (g, "fdet"), (g, "sdet"), (g, "odet"), (g, "close_distance"), (g, "distance"),
             (exp, "lambdas"), (exp, "incident"), (exp, "orient_rows"), (exp, "recip"), (exp, "fluence"),
             (exp, "I_bg"), (exp.F, "default_F"), (exp.F, "grid"), (exp.F, "_padded")]
    return slots


def _loss_terms(v, t, loss, *, xp):
    if loss == "mse":
        r = v - t
        return r * r
    # Poisson negative log-likelihood up to a constant: I - T log I (0 log 0 = 0)
    pos = t > 0
    logv = xp.log(xp.where(pos, v, xp.ones_like(v)))
    return v - xp.where(pos, t * logv, xp.zeros_like(v))


def loss_and_grad(cfg: SimConfig, params: dict, target, loss: str = "mse", pixels=None, *, xp=None, dtype=None,
                  tile_bytes=None, threads: int | None = None):
    """The loss of the simulated image against ``target`` and its gradient with respect to
    each parameter, back-propagated tile by tile so memory stays that of one tile.

    ``loss``: 'mse' (mean over the loss pixels of (I - T)^2) or 'poisson' (sum of I - T log I,
    the Poisson negative log-likelihood up to a constant; the model must be positive where
    T > 0).  ``pixels``: the pixels the loss covers, a bool image (spixels, fpixels) or flat
    indices (slow * fpixels + fast); default every simulated pixel (inside ROI and mask).
    ``target``: an image (spixels, fpixels), any array convertible to NumPy.

    Returns (loss as a float, {key: gradient array of the parameter's shape}).  The set-up
    (host phase and assembly) runs once with the graph; each tile is then evaluated from
    detached copies of the assembled arrays, its loss back-propagated to them, and the
    accumulated gradients are finally carried through the assembly to the parameters.
    Tiles run on ``threads`` worker threads (default: every core, as the engine's render);
    each tile's gradient is its own, and they are summed in tile order, so the result does not
    depend on the thread count.  torch only (JAX: ``jax.grad`` of a loss of
    :func:`nbxp.simulate`).
    """
    from concurrent.futures import ThreadPoolExecutor
    from collections import deque
    from .engine import DEFAULT_TILE_BYTES, InterpolationState, default_threads, tile_size, tile_values
    from .api import resolve_dtype
    if loss not in ("mse", "poisson"):
        raise ConfigError(f"loss_and_grad: loss must be 'mse' or 'poisson', not {loss!r}")
    ns = resolve_params_namespace(params, xp, None)
    if "jax" in _namespace_name(ns):
        return _loss_and_grad_jax(cfg, params, target, loss, pixels, xp=ns, dtype=dtype, tile_bytes=tile_bytes)
    if "torch" not in _namespace_name(ns):
        raise ConfigError("loss_and_grad: tile-by-tile back-propagation needs torch or JAX (xp=torch, "
                          "xp=jax.numpy)")
    import torch
    dt = resolve_dtype(ns, dtype)
    leaves = {k: torch.as_tensor(v, dtype=dt).detach().clone().requires_grad_(True) for k, v in params.items()}
    exp = build_differentiable(cfg, leaves, xp=ns, dtype=dt)
    tgt, sel = _loss_pixels(exp, target, pixels)
    n = max(int(sel.size), 1)

    # detached stand-ins for the assembled arrays: each tile's backward stops at them
    slots, originals, copies = [], [], []
    for owner, attr in _graph_slots(exp):
        v = getattr(owner, attr, None)
        if isinstance(v, torch.Tensor) and v.requires_grad:
            c = v.detach().requires_grad_(True)
            setattr(owner, attr, c)
            slots.append((owner, attr))
            originals.append(v)
            copies.append(c)
    N_orig = exp.N
    N_copies = []
    for i, v in enumerate(N_orig):
        if isinstance(v, torch.Tensor) and v.requires_grad:
            N_copies.append((i, v, v.detach().requires_grad_(True)))
    if N_copies:
        N = list(N_orig)
        for i, _, c in N_copies:
            N[i] = c
        exp.N = tuple(N)
    copies_all = copies + [c for _, _, c in N_copies]
    originals_all = originals + [v for _, v, _ in N_copies]

    state = InterpolationState(active=exp.interpolate)
    P = tile_size(exp, DEFAULT_TILE_BYTES if tile_bytes is None else tile_bytes)
    total = 0.0
    scale = 1.0 / n if loss == "mse" else 1.0
    acc = [None] * len(copies_all)

    def one(ids):
        v = tile_values(exp, ns.asarray(ids), state)
        part = ns.sum(_loss_terms(v, torch.as_tensor(tgt[ids], dtype=dt), loss, xp=ns)) * scale
        gs = torch.autograd.grad(part, copies_all, allow_unused=True) if copies_all else ()
        return float(part.detach()), gs

    def add(result):
        nonlocal total
        value, gs = result
        total += value
        for j, gj in enumerate(gs):
            if gj is not None:
                acc[j] = gj if acc[j] is None else acc[j] + gj

    chunks = [sel[t0:t0 + P] for t0 in range(0, sel.size, P)]
    threads = default_threads() if threads is None else max(1, int(threads))
    if threads == 1 or exp.interpolate or len(chunks) <= 1:
        # interpolation's switch-off depends on every evaluation before it: in order
        for ids in chunks:
            add(one(ids))
    else:
        # the tiles' threads replace torch's intra-op threads for the call: both together
        # oversubscribe the cores (measured 20-30x slower on a loaded 2-core machine)
        intra = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                pending = deque()
                for ids in chunks:
                    pending.append(pool.submit(one, ids))
                    while len(pending) >= 2 * threads:  # tiles in flight bound the memory
                        add(pending.popleft().result())
                while pending:
                    add(pending.popleft().result())
        finally:
            torch.set_num_threads(intra)
    for (owner, attr), v in zip(slots, originals):
        setattr(owner, attr, v)
    exp.N = N_orig
    keys = list(leaves)
    pairs = [(o, gr) for o, gr in zip(originals_all, acc) if gr is not None]
    grads = [None] * len(keys)
    if pairs:
        grads = torch.autograd.grad([o for o, _ in pairs], [leaves[k] for k in keys],
                                    grad_outputs=[gr for _, gr in pairs], allow_unused=True)
    return total, {k: (torch.zeros_like(leaves[k]) if gr is None else gr) for k, gr in zip(keys, grads)}


def _loss_pixels(exp, target, pixels):
    """(flat host target, sorted flat indices of the loss pixels) for :func:`loss_and_grad`."""
    from .engine import rendered_mask
    g = exp.geom
    tgt = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target, dtype=np.float64)
    if tgt.shape != (g.spixels, g.fpixels):
        raise ConfigError(f"loss_and_grad: target must have shape {(g.spixels, g.fpixels)}, not {tgt.shape}")
    sel = np.flatnonzero(rendered_mask(exp).reshape(-1))
    if pixels is not None:
        pix = np.asarray(pixels)
        if pix.dtype == bool:
            if pix.shape != (g.spixels, g.fpixels):
                raise ConfigError(f"loss_and_grad: a pixels mask must have shape {(g.spixels, g.fpixels)}")
            pix = np.flatnonzero(pix.reshape(-1))
        sel = np.intersect1d(sel, pix.astype(np.int64).reshape(-1))
    return tgt.reshape(-1), sel


def _loss_and_grad_jax(cfg, params, target, loss, pixels, *, xp, dtype, tile_bytes):
    """:func:`loss_and_grad` on JAX: the host phase from the parameters' concrete values, the
    assembly under ``jax.vjp``, each tile's loss and its cotangents for the assembled arrays
    by a jitted ``jax.value_and_grad``, the sum carried back through the assembly's vjp."""
    import copy
    import jax
    from .api import resolve_dtype
    from .engine import DEFAULT_TILE_BYTES, InterpolationState, tile_size, tile_values
    from .experiment import build_experiment
    dt = resolve_dtype(xp, dtype)
    check_params(cfg, params)
    keys = list(params)
    vals = [xp.asarray(params[k], dtype=dt) for k in keys]
    host = host_config(cfg, dict(zip(keys, vals)))
    base = build_experiment(host, xp=xp, dtype=dt)
    if base.interpolate:
        raise ConfigError("loss_and_grad: tricubic interpolation decides its fallback from the values; on JAX "
                          "give -nointerpolate (or use torch)")

    def assembled(*v):
        exp = copy.copy(base)
        exp.F = copy.copy(base.F)
        return assemble(exp, host, dict(zip(keys, v)), xp=xp, dtype=dt)

    exp0 = assembled(*vals)
    slots = [(o, a) for o, a in _graph_slots(exp0) if isinstance(getattr(o, a, None), jax.Array)]
    slot_names = [(("geom" if o is exp0.geom else "F" if o is exp0.F else "exp"), a) for o, a in slots]
    n_idx = [i for i, v in enumerate(exp0.N) if isinstance(v, jax.Array)]

    def arrays_of(e):
        own = {"geom": e.geom, "F": e.F, "exp": e}
        return tuple(getattr(own[w], a) for w, a in slot_names) + tuple(e.N[i] for i in n_idx)

    A, vjp = jax.vjp(lambda *v: arrays_of(assembled(*v)), *vals)
    tgt, sel = _loss_pixels(exp0, target, pixels)
    scale = 1.0 / max(int(sel.size), 1) if loss == "mse" else 1.0
    state = InterpolationState(active=False)

    def tile_loss(arrs, ids, t):
        e = copy.copy(exp0)
        e.geom = copy.copy(exp0.geom)
        e.F = copy.copy(exp0.F)
        own = {"geom": e.geom, "F": e.F, "exp": e}
        for (w, a), v in zip(slot_names, arrs[:len(slot_names)]):
            setattr(own[w], a, v)
        N = list(e.N)
        for i, v in zip(n_idx, arrs[len(slot_names):]):
            N[i] = v
        e.N = tuple(N)
        return xp.sum(_loss_terms(tile_values(e, ids, state), t, loss, xp=xp)) * scale

    step = jax.jit(jax.value_and_grad(tile_loss))
    P = tile_size(exp0, DEFAULT_TILE_BYTES if tile_bytes is None else tile_bytes)
    total, acc = 0.0, None
    for t0 in range(0, sel.size, P):
        ids = sel[t0:t0 + P]
        value, g = step(A, xp.asarray(ids), xp.asarray(tgt[ids], dtype=dt))
        total += float(value)
        acc = g if acc is None else tuple(x + y for x, y in zip(acc, g))
    grads = vjp(acc if acc is not None else tuple(xp.zeros_like(a) for a in A))
    return total, dict(zip(keys, grads))
