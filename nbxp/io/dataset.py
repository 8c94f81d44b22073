"""The series writer: a rotation scan or still series to SMV, raw float, CBF or NeXus files.

Output names and formats (what ``nbxp --frames/--stills`` writes):

* The format follows the extension of ``-floatfile``, ``-intfile`` and ``-noisefile``:
  ``.img``/``.smv`` SMV per frame (the header's PHI/OSC_START/OSC_RANGE are the frame's),
  ``.bin`` raw float32 per frame, ``.cbf`` miniCBF per frame (:mod:`nbxp.io.cbf`),
  ``.h5``/``.nxs`` one NeXus/NXmx file for the whole series (:mod:`nbxp.io.nexus`).  Other
  extensions keep nanoBragg's meaning of the flag (raw float for -floatfile, SMV for the
  others).  ``-pgmfile`` stays PGM, per frame.
* In a per-frame name, a run of ``#`` is the 1-based frame number zero-padded to that width
  (``scan_#####.cbf`` -> ``scan_00001.cbf``, DIALS' template convention); a per-frame name
  without ``#`` gets ``_#####`` before its extension (wider for more than 99999 frames).
* Integer images for CBF/NeXus are int32: the noise image holds photon counts as a
  photon-counting detector records them (no ADC offset unless ``-adc`` is given, clipped
  only at :data:`nbxp.images.COUNT_SATURATION`, the saturation value recorded in the file);
  the noiseless ``-intfile`` image is float * scale (+ explicit ``-adc``), rounded, int32.
  The float image may go to NeXus (float32); SMV and CBF cannot hold it.
* Everything that cannot be written is refused before rendering (:func:`plan`), and every
  file is written whole or not at all (temporary name, then rename): a failure leaves the
  frames finished before it and nothing half-written.

Files of the formats modules are imported only when asked for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from . import InputError, atomic_write

FLOAT, INT, NOISE, PGM = "float", "int", "noise", "pgm"
SMV, RAW, CBF, NEXUS, PGMFMT = "SMV", "raw float32", "CBF", "NeXus", "PGM"
_EXT = {".img": SMV, ".smv": SMV, ".bin": RAW, ".cbf": CBF, ".h5": NEXUS, ".nxs": NEXUS}
_RUN = re.compile(r"#+")


def check_writable(path: str, flag: str) -> None:
    """Refuse ``path`` when its directory is missing or not writable, or it is a directory."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d) or not os.access(d, os.W_OK):
        raise InputError(f"{flag}: cannot write {path}: directory {d} is not writable")
    if os.path.isdir(path):
        raise InputError(f"{flag}: cannot write {path}: it is a directory")


def output_format(kind: str, path: str, flag: str) -> str:
    """The format an output of ``kind`` (float, int, noise, pgm) is written in, from its name;
    refuses a format that cannot hold that kind of image."""
    if kind == PGM:
        return PGMFMT
    fmt = _EXT.get(os.path.splitext(path)[1].lower())
    if kind == FLOAT:
        if fmt in (SMV, CBF):
            raise InputError(f"{flag}: {path}: {fmt} files hold integers, not the float image "
                             "(use .bin, or .h5/.nxs for NeXus float32)")
        return fmt or RAW
    if fmt == RAW:
        raise InputError(f"{flag}: {path}: .bin is the raw float format; integer images go to .img/.smv (SMV), "
                         ".cbf or .h5/.nxs")
    return fmt or SMV


@dataclass
class Output:
    """One requested output of a series: ``flag``, image ``kind``, ``format``, and the name
    ``template`` with its run of ``#`` (None for a NeXus file, one for the series)."""

    flag: str
    kind: str
    format: str
    given: str
    template: str
    added: bool = False  # '_#####' was added to the name
    single: bool = False  # a single image (no series): the name as given

    @property
    def per_frame(self) -> bool:
        return self.format != NEXUS and not self.single

    def path(self, index: int) -> str:
        """The file of frame ``index`` (0-based)."""
        if not self.per_frame:
            return self.template
        m = list(_RUN.finditer(self.template))[0]
        return self.template[:m.start()] + str(index + 1).zfill(m.end() - m.start()) + self.template[m.end():]

    def matches(self, path: str) -> bool:
        """Whether ``path`` (any spelling) is one of this output's files."""
        real = os.path.realpath(path)
        mine = os.path.realpath(self.template)
        if not self.per_frame:
            return real == mine
        d, base = os.path.split(mine)
        if os.path.dirname(real) != d:
            return False
        rx = "".join(r"\d{%d}" % len(p) if p.startswith("#") else re.escape(p) for p in re.split(r"(#+)", base) if p)
        return re.fullmatch(rx, os.path.basename(real)) is not None


def frame_template(path: str, flag: str, nframes: int) -> tuple[str, bool]:
    """(template, added): ``path`` with its run of ``#``, or with ``_#####`` added before the
    extension when it has none."""
    runs = _RUN.findall(os.path.basename(path))
    if len(runs) > 1:
        raise InputError(f"{flag}: {path} has more than one run of '#' (one run is the frame number)")
    if _RUN.search(os.path.dirname(path)):
        raise InputError(f"{flag}: {path}: '#' (the frame number) may only appear in the file name")
    digits = len(str(nframes))
    if runs:
        if len(runs[0]) < digits:
            raise InputError(f"{flag}: {path}: {nframes} frames need at least {digits} '#' for the frame number")
        return path, False
    root, ext = os.path.splitext(path)
    return root + "_" + "#" * max(5, digits) + ext, True


def plan(requests, nframes: int, inputs=(), truth: str | None = None, single: bool = False) -> list[Output]:
    """Check the outputs of a series before anything is rendered and return them.

    ``requests``: (flag, kind, name) per output; ``inputs``: the files the run reads (none may
    be overwritten); ``truth``: the ground-truth file name, if any.  Raises
    :class:`~nbxp.io.InputError` (one line naming the flag) for an unwritable directory, a
    format that cannot hold the image, a bad ``#`` run, two outputs sharing files, or an
    output that would overwrite an input.  ``single``: one image, not a series (a
    multi-panel single run): every name is used as given.
    """
    outs: list[Output] = []
    for flag, kind, name in requests:
        fmt = output_format(kind, name, flag)
        if single:
            tpl, added = name, False
        elif fmt == NEXUS:
            if "#" in os.path.basename(name):
                raise InputError(f"{flag}: {name}: a NeXus file holds the whole series; its name takes no '#'")
            tpl, added = name, False
        else:
            tpl, added = frame_template(name, flag, nframes)
        check_writable(tpl, flag)
        outs.append(Output(flag, kind, fmt, name, tpl, added, single))
    named = [(o.flag, o) for o in outs]
    for i, (fa, a) in enumerate(named):
        for fb, b in named[i + 1:]:
            if a.matches(b.path(0)) or b.matches(a.path(0)):
                raise InputError(f"{fa} and {fb}: both would write {a.path(0)}")
    if truth is not None:
        check_writable(truth, "--truth")
        for o in outs:
            if o.matches(truth):
                raise InputError(f"--truth: {truth} is also an output of {o.flag}")
    for src in inputs:
        if not src:
            continue
        for o in outs:
            if o.matches(src):
                raise InputError(f"{o.flag}: {o.template} would overwrite the input file {src}")
        if truth is not None and os.path.realpath(truth) == os.path.realpath(src):
            raise InputError(f"--truth: {truth} would overwrite the input file {src}")
    return outs


def multi_panel_problem(fmt: str, npanels: int) -> str | None:
    """Why ``fmt`` cannot hold the image of a detector of ``npanels`` panels; None when it
    can.  SMV, miniCBF and PGM hold one pixel array with one panel's geometry (DIALS cannot
    impose a multi-panel geometry on such files either, ../shared/notes/dials.md), so a
    multi-panel image goes to NeXus (one module per panel) or raw float (the slab)."""
    if npanels > 1 and fmt in (SMV, CBF, PGMFMT):
        return (f"{fmt} holds one panel; a detector of {npanels} panels is written as NeXus (.h5/.nxs, one "
                "module per panel) or raw float (.bin, the panels stacked along slow)")
    return None


def check_geometry(outputs, exp) -> None:
    """Refuse CBF or NeXus output when the format cannot describe the geometry, and SMV,
    CBF and PGM for a multi-panel detector (before anything is rendered), in one line
    naming the flag and the file."""
    npanels = len(exp.panels) if getattr(exp, "multi_panel", False) else 1
    for o in outputs:
        why = multi_panel_problem(o.format, npanels)
        if why:
            raise InputError(f"{o.flag}: {o.given}: {why}")
        if o.format == CBF:
            from . import cbf as module
        elif o.format == NEXUS:
            from . import nexus as module
        else:
            continue
        why = module.unsupported(exp)
        if why:
            raise InputError(f"{o.flag}: {o.given}: {why}")


@dataclass
class FrameReport:
    """What :meth:`SeriesWriter.write` did with one frame (for the printout)."""

    index: int
    stats: object
    scale: float
    photons: float | None = None
    overloads: int | None = None
    files: list = field(default_factory=list)


class SeriesWriter:
    """Writes the frames of a :class:`nbxp.series.Series` to ``outputs`` (from :func:`plan`),
    one frame at a time; a context manager that completes the NeXus files on success and
    removes them on failure.

    ``scale``/``pgm_scale``: the users' -scale/-pgmscale (0: per frame from the image, as a
    single run chooses them); ``adc``: the SMV offset; ``adc_given``: whether -adc was given
    (then CBF/NeXus integers carry it too).
    """

    def __init__(self, series, outputs, *, scale: float = 0.0, pgm_scale: float = 0.0, adc: float = 40.0,
                 adc_given: bool = False):
        self.series, self.outputs = series, outputs
        self.scale, self.pgm_scale, self.adc, self.adc_given = scale, pgm_scale, adc, adc_given
        self._nexus: dict[int, object] = {}
        from ..engine import rendered_mask
        exp = series.exp
        self.multi = bool(getattr(exp, "multi_panel", False))
        if self.multi:
            from ..engine import rendered_masks
            from ..models import panel_names, slab_layout, to_slab
            views = [exp.panel_view(p) for p in range(len(exp.panels))]
            self.rendered_p = rendered_masks(exp)
            self.rois = [v.roi for v in views]
            self.pixel_sizes = [v.geom.pixel_size for v in views]
            self.names = panel_names(exp)
            boxes = []
            for r, (fmin, fmax, smin, smax) in zip(self.rendered_p, self.rois):
                b = np.zeros(r.shape, dtype=bool)
                b[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1] = True
                boxes.append(b)
            # the slab's ROI box (padding of narrower panels is outside it)
            self.box = to_slab(boxes)
            self.rendered = to_slab(self.rendered_p)
        else:
            self.rendered = rendered_mask(exp)
            fmin, fmax, smin, smax = exp.roi
            self.box = np.zeros(self.rendered.shape, dtype=bool)
            self.box[max(smin, 0):smax + 1, max(fmin, 0):fmax + 1] = True

    # ------------------------------------------------------------------ NeXus lifetime
    def __enter__(self):
        from ..images import COUNT_SATURATION
        s = self.series
        for i, o in enumerate(self.outputs):
            if o.format != NEXUS:
                continue
            from .nexus import NexusWriter
            is_float = o.kind == FLOAT
            w = NexusWriter(o.template, s.exp, nframes=s.count, dtype=np.float32 if is_float else np.int32,
                            start_angle=s.phi0, angle_increment=s.osc,
                            stills=s.kind == "stills" or not s.osc > 0,
                            exposure=s.config.beam.exposure, saturation=None if is_float else COUNT_SATURATION)
            self._nexus[i] = w
        return self

    def __exit__(self, et, ev, tb):
        writers, self._nexus = self._nexus, {}
        if et is None:
            for w in writers.values():
                w.close()
        else:
            for w in writers.values():
                try:
                    w.abort()
                except Exception:  # the original error is the one to report
                    pass
        return False

    # ------------------------------------------------------------------ frames
    def write(self, frame) -> FrameReport:
        """Write every output of ``frame`` (a :class:`nbxp.series.Frame`)."""
        from .. import images
        from ..gpu import to_host_float32
        from ..stats import image_stats
        from .pgm import write_pgm
        from .smv import header_values, nanobragg_header, write_smv
        s, exp = self.series, self.series.exp
        if self.multi:
            from ..models import to_slab
            from ..stats import panel_stats
            imgs = [to_host_float32(im) for im in frame.image]
            st = panel_stats(imgs, self.rendered_p, self.rois, self.pixel_sizes, exp.oversample, self.names)
            img32 = to_slab(imgs)  # what every file holds: the panels stacked along slow
        else:
            img32 = to_host_float32(frame.image)
            st = image_stats(img32, self.rendered, exp.roi, exp.geom.pixel_size, exp.oversample)
        scale = images.int_scale(self.scale, st.max_I)
        rep = FrameReport(frame.index, st, scale)
        header = None
        counts_adc = self.adc if self.adc_given else 0.0
        for i, o in enumerate(self.outputs):
            if o.kind == FLOAT:
                data = img32
            elif o.kind == PGM:
                data = images.pgm_image(img32, self.box, images.pgm_scale(self.pgm_scale, scale, st.rmsd))
            elif o.kind == INT:
                data = images.int_image(img32, self.box, scale, self.adc) if o.format == SMV \
                    else images.int_counts(img32, self.box, scale, counts_adc)
            else:
                if o.format == SMV:
                    data, rep.photons, rep.overloads = images.noise_image(img32, self.box, frame.seed, self.adc)
                else:
                    data, rep.photons, rep.overloads = images.noise_counts(img32, self.box, frame.seed, counts_adc)
            path = o.path(frame.index)
            if o.format == NEXUS:
                self._nexus[i].write(frame.index, data)
                continue
            if o.format == RAW:
                atomic_write(path, data)
            elif o.format == SMV:
                if header is None:
                    header = nanobragg_header(header_values(exp, frame.phi, frame.osc))
                write_smv(path, data, header)
            elif o.format == PGMFMT:
                write_pgm(path, data, images.pgm_scale(self.pgm_scale, scale, st.rmsd))
            elif o.format == CBF:
                from .cbf import write_cbf
                write_cbf(path, data, exp, start_angle=frame.phi, angle_increment=frame.osc,
                          exposure=s.config.beam.exposure, saturation=images.COUNT_SATURATION)
            rep.files.append(path)
        return rep


def write_truth(path: str, series) -> None:
    """The ground truth of ``series`` as a DIALS experiment list (:func:`nbxp.io.expt.write_expt`)."""
    from .expt import write_expt
    rot = series.crystal_rotations() if series.kind == "stills" else None
    write_expt(path, series.exp, start_angle=series.phi0, angle_increment=series.osc, nframes=series.count,
               exposure=series.config.beam.exposure, crystal_rotations=rot)
