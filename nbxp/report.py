"""The set-up summary nanoBragg prints before rendering (same wording where scripts parse it)."""

from __future__ import annotations

import math


def summary_lines(exp, cfg, state=None) -> list[str]:
    g = exp.geom
    rtd = 180.0 / math.pi
    vec = lambda v: " ".join(f"{float(v[i]):g}" for i in range(3))  # noqa: E731
    lines = ["nbxp nanocrystal diffraction simulator (nanoBragg-compatible)",
             f"{g.convention.lower()} convention selected.",
             "pivoting detector around sample" if g.pivot == "SAMPLE" else "pivoting detector around direct beam spot"]
    lines += [n for n in exp.notes]
    cp, rp = exp.cell_params
    lines.append("Unit Cell: " + " ".join(f"{x:g}" for x in cp))
    lines.append("Recp Cell: " + " ".join(f"{x:g}" for x in rp))
    Na, Nb, Nc = exp.N
    lines.append(f"crystal is {Na * cp[0] * 1e-4:g} x {Nb * cp[1] * 1e-4:g} x {Nc * cp[2] * 1e-4:g} microns")
    s = exp.sampling
    for i, phi in enumerate(s.phis):
        lines.append(f"phi{i} = {phi * rtd:g}")
    lines.append(f"  created a total of {exp.source_table.shape[0]} sources:")
    for row in exp.source_table:
        lines.append(f"{row[0]:g} {row[1]:g} {row[2]:g}   {row[3]:g} {row[4]:g}")
    lines.append(f"  created a total of {s.mosaic_domains} mosaic domains")
    shape = {"ROUND": "ellipsoidal", "SQUARE": "parallelpiped", "GAUSS": "gaussian", "TOPHAT": "tophat-spot"}[exp.shape]
    lines.append(f"  {shape} xtal: {Na:.0f}x{Nb:.0f}x{Nc:.0f} cells")
    lines.append(f"  wave={exp.wavelength:g} meters")
    lines.append("  polarization effect disabled" if exp.nopolar else f"  Kahn polarization factor: {exp.kahn:f}")
    if g.curved:
        lines.append("  curved detector: all pixels same distance from origin")
    if g.point_pixel:
        lines.append("  pixel obliquity effect disabled")
    lines.append(f"  incident fluence: {exp.fluence:g} photons/m^2")
    lines.append(f"  distance={g.distance:g} detsize={g.detsize_f:g}x{g.detsize_s:g}  pixel={g.pixel_size:g} meters "
                 f"({g.fpixels}x{g.spixels} pixels)")
    lines.append(f"  sensor is {exp.thickness:g} m thick in {exp.thicksteps} layers with mu= {exp.mu:g}")
    lines.append(f"  Xbeam={g.Xbeam:g} Ybeam={g.Ybeam:g}")
    lines.append(f"  Fbeam={g.Fbeam:g} Sbeam={g.Sbeam:g}")
    lines.append(f"  Xclose={g.Xclose:g} Yclose={g.Yclose:g}")
    lines.append(f"  Fclose={g.Fclose:g} Sclose={g.Sclose:g}")
    lines.append(f"  DIRECTION_OF_DETECTOR_X-AXIS= {vec(g.fdet)}")
    lines.append(f"  DIRECTION_OF_DETECTOR_Y-AXIS= {vec(g.sdet)}")
    lines.append(f"  DIRECTION_OF_DETECTOR_Z-AXIS= {vec(g.odet)}")
    lines.append(f"  INCIDENT_BEAM_DIRECTION= {vec(g.beam)}")
    lines.append("  dials origin= " + " ".join(f"{x:g}" for x in g.dials_origin))
    fmin, fmax, smin, smax = exp.roi
    lines.append(f"  roi: {fmin} < x < {fmax} && {smin} < y < {smax}")
    lines.append(f"  {exp.source_table.shape[0]} sources")
    lines.append(f"  {s.mosaic_domains} mosaic domains over mosaic spread of {s.mosaic_spread * rtd:g} degrees")
    lines.append(f"  {s.phisteps} phi steps from {s.phi0 * rtd:g} to {(s.phi0 + s.osc) * rtd:g} degrees")
    extra = "".join(t for t, on in ((" +thick", exp.oversample_thick), (" +polar", exp.oversample_polar),
                                      (" +omega", exp.oversample_omega)) if on)
    lines.append(f"  {exp.oversample}x{exp.oversample} pixel oversample steps{extra}")
    if getattr(exp, "multi_panel", False):
        lines += panel_lines(exp)
    return lines


def panel_lines(exp) -> list[str]:
    """One line per panel of a multi-panel detector: size, pixel, origin (pix0), axes,
    normal distance and where its rows start in the slab (the raw float layout)."""
    from .models import host, panel_names, slab_layout
    geoms = exp.panels
    (rows, width), starts = slab_layout([(g.spixels, g.fpixels) for g in geoms])
    vec = lambda v: " ".join(f"{x:.6g}" for x in host(v))  # noqa: E731
    out = [f"  detector of {len(geoms)} panels, {int(exp.panel_offsets[-1])} pixels; slab {width}x{rows} "
           "(panels stacked along slow in this order)"]
    for name, g, r in zip(panel_names(exp), geoms, starts):
        out.append(f"  panel {name}: {g.fpixels}x{g.spixels} pixels of {g.pixel_size:g} m, slab rows {r}-"
                   f"{r + g.spixels - 1}, pix0= {vec(g.pix0)} fast= {vec(g.fdet)} slow= {vec(g.sdet)} "
                   f"normal distance {g.close_distance:g} m")
    return out


def structure_factor_lines(sf, notes=()) -> list[str]:
    """What was read for the structure factors: file kind, column, space group, reflections
    in the asymmetric unit and in P1, resolution range and completeness."""
    lines = [f"structure factors: {sf.kind} {sf.path}, {sf.label}"]
    if sf.cell is not None:
        cell = " ".join([f"{x * 1e10:g}" for x in sf.cell[:3]] + [f"{math.degrees(x):g}" for x in sf.cell[3:]])
        lines.append(f"  space group {sf.spacegroup}, cell {cell}")
        lines.append(f"  {sf.n_asu} reflections given, {len(sf.F)} in P1 with symmetry and Friedel mates; "
                     f"{sf.n_absent_grid} systematic absences on the grid set to 0")
        lines.append(f"  resolution {sf.d_max * 1e10:.2f} - {sf.d_min * 1e10:.2f} A, completeness "
                     f"{100 * min(sf.completeness, 1.0):.1f}% to {sf.d_min * 1e10:.2f} A")
    lines += [f"  {n}" for n in sf.notes]
    lines += list(notes)
    return lines
