"""The GPU path: backend choice and the launch of the CUDA render kernel.

:func:`render_kernel` is :func:`nbxp.engine.render` for an experiment built on CuPy: the
experiment's arrays (detector frame, sources, orientations, F grid) are already on the
device, made by the same array-API code as on the CPU; this module packs them into the
kernel's buffers, launches ``nbxp/kernels/nbxp_render.cu`` over the ROI in chunks of
pixels, and returns the image as an array of the same namespace (on the device).  Nothing
is copied to the host but a few scalars when interpolation is on.

The code here uses only the array API and NumPy scalars, and takes the module class as a
parameter, so the tests run it on NumPy or array-api-strict arrays against
:class:`nbxp.kernels.cpu.CpuRawModule` (the CPU build of the same kernel).
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from . import kernels
from .config import R_E_SQR
from .errors import NbxpError
from .engine import InterpolationState, rendered_masks
from .physics import SHAPE_GAUSS, SHAPE_ROUND, SHAPE_SQUARE, SHAPE_TOPHAT, polarization_frame

log = logging.getLogger("nbxp")

BACKENDS = ("auto", "numpy", "cpu", "cupy")
#: threads per block: the kernel's __launch_bounds__ (a multiple of the warp size)
BLOCK = kernels.constants()["NBXP_MAX_BLOCK"]
#: sub-path evaluations per launch (about 0.1 s of GPU time at most), and pixel bounds
CHUNK_EVALUATIONS = 1 << 28
CHUNK_PIXELS = (1 << 18, 1 << 22)


class BackendError(NbxpError):
    """The requested backend cannot run here (a user-input error: --backend / backend=)."""


def gpu_status() -> tuple[bool, str]:
    """(usable, why): a GPU is usable when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA installation
        return False, "CuPy is not installed" if isinstance(e, ImportError) \
            else f"CuPy does not import ({type(e).__name__}: {e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"no usable CUDA device ({type(e).__name__}: {e})"
    if n <= 0:
        return False, "no CUDA device"
    return True, f"{n} CUDA device{'s' if n > 1 else ''}"


def usable_gpu() -> bool:
    return gpu_status()[0]


def cpu_kernel_status(dtype=None) -> tuple[bool, str]:
    """(usable, why) for the compiled CPU kernel (:mod:`nbxp.kernels.cpu_simd`); with a
    ``dtype`` it is built for that precision now (once per machine: it is cached)."""
    from .kernels import cpu_simd
    why = cpu_simd.why_unavailable()
    if why is None and dtype is not None:
        try:
            cpu_simd.library(dtype)
        except cpu_simd.NativeUnavailable as e:
            why = str(e)
    if why is not None:
        return False, why
    return True, f"built with {os.path.basename(cpu_simd.compiler()[0])}"


def choose_backend(backend: str | None, dtype=None, *, gpu: bool = True) -> tuple[str, str]:
    """``(name, reason)``: 'numpy', 'cpu' or 'cupy' for a requested backend 'auto', 'numpy',
    'cpu' or 'cupy' (None means 'numpy').

    'auto' takes CuPy on a usable GPU (not with ``gpu=False``), else the compiled CPU kernel
    where a C++ compiler builds it (for ``dtype``, when given), else the NumPy engine; the
    reason says why.  Asking for 'cupy' without a usable GPU, or 'cpu' where the kernel
    cannot be built, raises :class:`BackendError`."""
    backend = "numpy" if backend is None else str(backend).lower()
    if backend not in BACKENDS:
        raise BackendError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "numpy":
        return "numpy", "requested"
    if backend == "cpu":
        ok, why = cpu_kernel_status(dtype)
        if not ok:
            raise BackendError(f"--backend cpu: the compiled CPU kernel is not available: {why}")
        return "cpu", "requested"
    if backend == "cupy" or gpu:
        ok, why = gpu_status()
    else:
        ok, why = False, "not asked for"
    if backend == "cupy":
        if not ok:
            raise BackendError(f"--backend cupy: no usable GPU: {why} (pip install \"nbxp[gpu]\" on a machine "
                               "with an NVIDIA GPU and driver)")
        return "cupy", "requested"
    if ok:
        return "cupy", f"auto: {why}"
    cpu_ok, cpu_why = cpu_kernel_status(dtype)
    head = f"auto: no usable GPU: {why}" if gpu else "auto"
    if cpu_ok:
        return "cpu", f"{head}; CPU kernel {cpu_why}"
    return "numpy", f"{head}; no CPU kernel: {cpu_why}"


def is_cupy(xp) -> bool:
    return getattr(xp, "__name__", "").endswith("cupy")


def to_host_float32(img) -> np.ndarray:
    """A C-contiguous host float32 copy of an image of any namespace (converted on the
    device first for CuPy, halving the transfer of a float64 image)."""
    if type(img).__module__.startswith("cupy"):
        return np.ascontiguousarray(img.astype("float32").get())
    if not isinstance(img, np.ndarray) and hasattr(img, "__dlpack__"):
        img = np.from_dlpack(img)
    return np.ascontiguousarray(np.asarray(img), dtype=np.float32)


def _shape_code(shape: str) -> int:
    c = kernels.constants()
    return {SHAPE_SQUARE: c["NBXP_SHAPE_SQUARE"], SHAPE_ROUND: c["NBXP_SHAPE_ROUND"],
            SHAPE_GAUSS: c["NBXP_SHAPE_GAUSS"], SHAPE_TOPHAT: c["NBXP_SHAPE_TOPHAT"]}[shape]


def kernel_flags(exp) -> int:
    """The kernel's ``flags`` bits for an experiment (interpolation excluded: the launch
    loop sets it per pass)."""
    c = kernels.constants()
    views = [exp.panel_view(p) for p in range(len(exp.panels))]
    bits = {
        "NBXP_CURVED": exp.geom.curved,
        "NBXP_POINT_PIXEL": exp.geom.point_pixel,
        "NBXP_CAPTURE": any(_captures(v) for v in views),
        "NBXP_POLAR": not (exp.nopolar and not exp.oversample_polar),
        "NBXP_OVERSAMPLE_OMEGA": exp.oversample_omega,
        "NBXP_OVERSAMPLE_POLAR": exp.oversample_polar,
        "NBXP_OVERSAMPLE_THICK": exp.oversample_thick,
        "NBXP_MASK": any(v.mask is not None for v in views),
        "NBXP_HKL": exp.F.count != 0,
        "NBXP_INTEGER_N": all(float(n) == math.floor(n) for n in exp.N),
    }
    return sum(c[k] for k, on in bits.items() if on)


def _captures(exp) -> bool:
    """Whether a (one-panel) experiment's sensor absorbs: the engine's capture test."""
    return bool(exp.oversample_thick or exp.thickness != 0.0)


def roi_box(exp) -> tuple[int, int, int, int]:
    """(f0, s0, width, height) of the ROI rectangle of a one-panel experiment (or panel view)
    clipped to the panel (width or height 0 when it is empty); kernel positions run
    row-major over it."""
    g = exp.geom
    fmin, fmax, smin, smax = exp.roi
    f0, f1 = max(fmin, 0), min(fmax, g.fpixels - 1)
    s0, s1 = max(smin, 0), min(smax, g.spixels - 1)
    return f0, s0, max(f1 - f0 + 1, 0), max(s1 - s0 + 1, 0)


def panel_layout(exp) -> np.ndarray:
    """The kernel's ``layout`` table (host int64 (npanels, NBXP_LAYOUT_SIZE)): per panel the
    first ROI position and their count (the panels' ROI rectangles one after another, in
    order), its first global pixel (:attr:`Experiment.panel_offsets`), fpixels, the ROI
    rectangle's corner and width, and the sensor layers."""
    c = kernels.constants()
    offsets = exp.panel_offsets
    out = np.zeros((len(exp.panels), c["NBXP_LAYOUT_SIZE"]), dtype=np.int64)
    pos = 0
    for p in range(len(exp.panels)):
        v = exp.panel_view(p)
        f0, s0, w, h = roi_box(v)
        row = out[p]
        row[c["NBXP_LAYOUT_POS_START"]], row[c["NBXP_LAYOUT_POS_COUNT"]] = pos, w * h
        row[c["NBXP_LAYOUT_PIXEL_START"]], row[c["NBXP_LAYOUT_FPIXELS"]] = offsets[p], v.geom.fpixels
        row[c["NBXP_LAYOUT_F0"]], row[c["NBXP_LAYOUT_S0"]] = f0, s0
        row[c["NBXP_LAYOUT_ROI_W"]], row[c["NBXP_LAYOUT_THICKSTEPS"]] = max(w, 1), v.thicksteps
        pos += w * h
    return out


def position_pixel(layout: np.ndarray, i: int) -> int:
    """The global pixel index of kernel position ``i`` (the kernel's find_panel and
    render_pixel, on the host)."""
    c = kernels.constants()
    starts = layout[:, c["NBXP_LAYOUT_POS_START"]]
    row = layout[int(np.searchsorted(starts, i, side="right")) - 1]
    k = int(i) - int(row[c["NBXP_LAYOUT_POS_START"]])
    w = int(row[c["NBXP_LAYOUT_ROI_W"]])
    return int(row[c["NBXP_LAYOUT_PIXEL_START"]]) + (int(row[c["NBXP_LAYOUT_S0"]]) + k // w) * int(
        row[c["NBXP_LAYOUT_FPIXELS"]]) + int(row[c["NBXP_LAYOUT_F0"]]) + k % w


def max_layers(exp) -> int:
    """The most sensor layers of any panel (a pixel's sub-path count uses it)."""
    return max(exp.panel_view(p).thicksteps for p in range(len(exp.panels)))


def chunk_pixels(exp) -> int:
    per_pixel = max_layers(exp) * exp.oversample ** 2 * exp.incident.shape[0] * exp.orient.shape[0]
    lo, hi = CHUNK_PIXELS
    return int(min(max(CHUNK_EVALUATIONS // max(per_pixel, 1), lo), hi))


def device_buffers(exp) -> dict:
    """The kernel's input arrays, made on the experiment's namespace (no host copies but the
    host mask and layout).  ``frames``: one row of NBXP_FRAME_SIZE reals per panel (its
    frame, pixel and sub-pixel sizes, close distance, distance, layer step, mu, capture);
    ``layout``: :func:`panel_layout`; ``mask``: the panels' masks concatenated in the
    global pixel index."""
    xp, dt = exp.xp, exp.dtype
    c = kernels.constants()
    Fgrid = exp.F.grid  # the experiment's own copy: no second grid on the device
    E_in, B_in = polarization_frame(exp.incident, exp.polar_axis, xp=xp)
    sources = xp.concat([exp.incident, exp.lambdas[:, None], E_in, B_in], axis=1)  # (S, 10)
    views = [exp.panel_view(p) for p in range(len(exp.panels))]
    rows = []
    for v in views:
        g = v.geom
        scal = np.zeros(c["NBXP_FRAME_SIZE"] - c["NBXP_FRAME_PIXEL_SIZE"], dtype=np.float64)
        scal[:7] = (g.pixel_size, g.pixel_size / v.oversample, g.close_distance, g.distance, v.thickstep, v.mu,
                    1.0 if _captures(v) else 0.0)
        rows.append(xp.concat([g.pix0, g.fdet, g.sdet, g.odet, g.beam, xp.asarray(scal, dtype=dt)]))
    frames = xp.concat(rows)
    if any(v.mask is not None for v in views):
        host = np.concatenate([np.ones(v.geom.spixels * v.geom.fpixels, dtype=np.uint8) if v.mask is None
                               else np.ascontiguousarray(v.mask, dtype=np.uint8).reshape(-1) for v in views])
        mask = xp.asarray(host)
    else:
        mask = xp.zeros((1,), dtype=xp.uint8)
    return dict(Fgrid=xp.reshape(Fgrid, (-1,)), sources=xp.reshape(sources, (-1,)),
                orient=xp.reshape(exp.orient, (-1,)), frames=frames, layout=xp.asarray(panel_layout(exp)),
                recip=xp.reshape(exp.recip, (-1,)), mask=mask)


def render_kernel(exp, *, raw_module=None, progress=None, block: int = BLOCK, chunk: int | None = None,
                  kernel=None):
    """The float image (spixels, fpixels) of ``exp`` from the CUDA kernel, as an array of
    ``exp.xp``, and the :class:`~nbxp.engine.InterpolationState` at the end; for a
    multi-panel experiment the list of per-panel images (one launch covers every panel:
    the kernel finds each position's panel in its ``layout`` table).

    ``raw_module``: the RawModule class (default ``cupy.RawModule``; the tests pass the CPU
    stand-in).  ``chunk``: pixels per launch (default: about 2^28 sub-path evaluations).
    ``progress(n)`` is called after each launch with the pixels it rendered.
    ``kernel``: a compiled kernel with ``cupy.RawKernel``'s calling convention to launch
    instead of ``nbxp_render`` from ``raw_module`` (the CPU entry,
    :class:`nbxp.kernels.cpu_simd.CpuSimdKernel`).
    """
    xp, dt, g = exp.xp, exp.dtype, exp.geom
    real = np.float32 if kernels.real_name(dt) == "float" else np.float64
    if kernel is None:
        kernel = kernels.get_kernel(dt, raw_module)
    c = kernels.constants()
    buf = device_buffers(exp)
    layout = panel_layout(exp)
    npos = int(layout[:, c["NBXP_LAYOUT_POS_COUNT"]].sum())
    offsets = exp.panel_offsets
    chunk = int(chunk or chunk_pixels(exp))
    image = xp.zeros((int(offsets[-1]),), dtype=dt)
    state = InterpolationState(active=exp.interpolate and exp.F.count != 0)
    interpolating = state.active
    first_oor = xp.zeros((min(chunk, npos) if interpolating else 1,), dtype=xp.int32)
    trigger = xp.zeros((3,), dtype=dt)
    flags = kernel_flags(exp)
    hr, kr, lr = exp.F.shape
    hmin, kmin, lmin = exp.F.mins
    i32, i64, r = np.int32, np.int64, real
    fixed = (
        i32(len(exp.panels)), i32(exp.oversample), i32(exp.incident.shape[0]), i32(exp.orient.shape[0]),
        i32(hr), i32(kr), i32(lr), i32(hmin), i32(kmin), i32(lmin), i32(_shape_code(exp.shape)),
    )
    reals = (
        r(exp.dmin), r(exp.kahn), r(exp.N[0]), r(exp.N[1]), r(exp.N[2]),
        r(exp.fudge), r(exp.F.default_F), r(exp.I_bg), r(R_E_SQR * exp.fluence / exp.steps),
    )
    # host copy of which ROI positions are rendered, only to count them for the progress bar
    counted = None
    if progress is not None and any(v.mask is not None for v in (exp.panel_view(p) for p in range(len(exp.panels)))):
        parts = []
        for m, (f0, s0, w, h) in zip(rendered_masks(exp), (roi_box(exp.panel_view(p)) for p in range(len(exp.panels)))):
            parts.append(m[s0:s0 + h, f0:f0 + w].reshape(-1))
        counted = np.concatenate(parts)

    def launch(start: int, n: int, switch_pixel: int, switch_sub: int, extra_flags: int):
        grid = (max(1, -(-n // block)),)
        kernel(grid, (block,), (
            image, first_oor, trigger, buf["Fgrid"], buf["sources"], buf["orient"], buf["frames"], buf["layout"],
            buf["recip"], buf["mask"], i64(start), i64(n), i64(switch_pixel), i32(switch_sub), *fixed,
            i32(flags | extra_flags), *reals))

    interp = c["NBXP_INTERPOLATE"]
    for start in range(0, npos, chunk):
        n = min(chunk, npos - start)
        if not interpolating:
            launch(start, n, 0, 0, 0)
        else:
            # pass 1: tricubic everywhere, each pixel records its first out-of-range evaluation
            launch(start, n, npos, 0, interp)
            rec = first_oor[:n]
            hit = rec >= 0
            if bool(xp.any(hit)):
                p = int(xp.argmax(xp.astype(hit, xp.int8)))
                sub = int(rec[p])
                P = start + p
                # pass 2: pixels from the first hit on, switched off at (P, sub)
                launch(P, n - p, P, sub, interp)
                interpolating = state.active = False
                hkl = xp.asarray(trigger, copy=True)
                hkl0 = xp.ceil(hkl - 0.5)
                pixel = position_pixel(layout, P)
                state.trigger = (pixel, *(float(hkl[i]) for i in range(3)), *(int(hkl0[i]) for i in range(3)))
        if progress is not None:
            progress(n if counted is None else int(np.count_nonzero(counted[start:start + n])))
    if not exp.multi_panel:
        return xp.reshape(image, (g.spixels, g.fpixels)), state
    return [xp.reshape(image[int(offsets[p]):int(offsets[p + 1])], (q.spixels, q.fpixels))
            for p, q in enumerate(exp.panels)], state
