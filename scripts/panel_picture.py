#!/usr/bin/env python
"""The picture of a multi-panel image in docs/panels.md, from a real run of the command.

Writes a CrystFEL geometry of 4x2 modules (gaps, in-plane turns, small tilts, two modules
turned by 180 degrees as in Jungfrau-style layouts), runs ``nbxp --geometry`` on it (one
rotation image of a lysozyme-like cell), and draws two views with
Pillow: the raw float slab as the file holds it (panels stacked along slow, in file order)
and every pixel placed where the geometry puts it, as seen from the sample (DIALS' x to the
right, y up; the panel outlines drawn).  Log intensity.

    python scripts/panel_picture.py [docs/panels.png]

Needs only nbxp's dependencies (NumPy, Pillow); the run takes about half a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

NAME = "eight.geom"
FLAGS = ["-cell", "79", "79", "38", "90", "90", "90", "-misset", "12", "25", "40", "-default_F", "100",
         "-gauss_xtal", "-N", "12", "-osc", "1.0", "-phisteps", "5", "-mosaic", "0.2", "-mosaic_dom", "8", "-oversample", "1",
         "-seed", "7", "-noprogress", "-nonoise", "-nopgm"]


def geometry() -> str:
    """8 modules of 160x80 pixels of 0.2 mm (res 5000) at 120 mm, 12.4 keV, stacked along ss."""
    lines = ["; 4x2 modules written by scripts/panel_picture.py", "photon_energy = 12398.42 eV", "clen = 0.12 m",
             "res = 5000", "rigid_group_all = " + ",".join(f"m{k}" for k in range(8))]
    k = 0
    for row in range(4):
        for col in range(2):
            turn = np.radians(0.8 * (k % 3 - 1))
            f = np.array([np.cos(turn), np.sin(turn), 0.0])
            s = np.array([-np.sin(turn), np.cos(turn), 0.0])
            tilt = np.radians(1.5 * (col - 0.5))
            f = f * np.cos(tilt) + np.array([0.0, 0.0, np.sin(tilt)])
            s = s - (s @ f) * f
            f, s = f / np.linalg.norm(f), s / np.linalg.norm(s)
            cx, cy = -166 + col * 172, -176 + row * 88
            if row % 2:  # turned by 180 degrees: the first pixel at the opposite corner
                f, s = -f, -s
                cx, cy = cx + 160, cy + 80
            vec = lambda v: " ".join(f"{c:+.8f}{a}" for c, a in zip(v, "xyz"))  # noqa: E731
            lines += [f"m{k}/min_fs = 0", f"m{k}/max_fs = 159", f"m{k}/min_ss = {80 * k}",
                      f"m{k}/max_ss = {80 * k + 79}", f"m{k}/fs = {vec(f)}", f"m{k}/ss = {vec(s)}",
                      f"m{k}/corner_x = {cx}", f"m{k}/corner_y = {cy}", f"m{k}/coffset = {0.0005 * (k % 2)}"]
            k += 1
    return "\n".join(lines) + "\n"


def colour(v: np.ndarray) -> np.ndarray:
    """Log intensity in 0..1 to RGB (dark blue - white - orange), uint8."""
    stops = np.array([[10, 10, 40], [40, 70, 160], [235, 235, 235], [250, 150, 40], [120, 20, 0]], float)
    x = np.clip(v, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    t = (x - i)[..., None]
    return (stops[i] * (1 - t) + stops[i + 1] * t).astype(np.uint8)


def main(out: str = "docs/panels.png") -> None:
    from PIL import Image, ImageDraw

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sys.path.insert(0, root)
    from nbxp.io.geometry import read_geometry

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, NAME), "w") as fh:
            fh.write(geometry())
        subprocess.run([sys.executable, "-m", "nbxp", *FLAGS, "--geometry", NAME, "-floatfile", "slab.bin"],
                       cwd=d, check=True, stdout=subprocess.DEVNULL)
        spec = read_geometry(os.path.join(d, NAME))  # identity frame: DIALS' lab frame
        width = spec.panels[0].fpixels
        slab = np.fromfile(os.path.join(d, "slab.bin"), dtype=np.float32).reshape(-1, width).astype(np.float64)

    hi = np.percentile(slab, 99.95)
    lo = hi * 1e-3
    scaled = np.log(np.clip(slab, lo, None) / lo) / np.log(hi / lo)

    # left: the slab as stored (rows = slow); right: the lab view, pixel centres projected
    # onto DIALS' x/y (the detector seen from the sample), 2 canvas pixels per detector pixel
    left = Image.fromarray(colour(scaled))
    scale = 2.0 / (spec.panels[0].pixel_size * 1e3)  # canvas pixels per mm
    pts, vals, rows = [], [], 0
    for p in spec.panels:
        o, f, s = (np.asarray(v) * k for v, k in ((p.origin, 1e3), (p.fast, 1.0), (p.slow, 1.0)))
        px = p.pixel_size * 1e3
        jj, ii = np.mgrid[0:p.spixels, 0:p.fpixels]
        xyz = o + ((ii + 0.5) * px)[..., None] * f + ((jj + 0.5) * px)[..., None] * s
        pts.append(xyz[..., :2].reshape(-1, 2))
        vals.append(scaled[rows:rows + p.spixels, :p.fpixels].reshape(-1))
        rows += p.spixels
    pts, vals = np.concatenate(pts), np.concatenate(vals)
    lo_xy = pts.min(axis=0) - 4
    size = np.ceil((pts.max(axis=0) + 4 - lo_xy) * scale).astype(int)
    canvas = np.full((size[1], size[0], 3), 255, np.uint8)
    cx = ((pts[:, 0] - lo_xy[0]) * scale).astype(int)
    cy = (size[1] - 1 - (pts[:, 1] - lo_xy[1]) * scale).astype(int)  # y up
    rgb = colour(vals)
    for dx in range(-1, 2):  # 3x3 canvas pixels each: no holes where a module is turned
        for dy in range(-1, 2):
            canvas[np.clip(cy - dy, 0, size[1] - 1), np.clip(cx + dx, 0, size[0] - 1)] = rgb
    right = Image.fromarray(canvas)
    draw = ImageDraw.Draw(right)
    for p in spec.panels:
        o, f, s = np.asarray(p.origin) * 1e3, np.asarray(p.fast), np.asarray(p.slow)
        L, H = p.fpixels * p.pixel_size * 1e3, p.spixels * p.pixel_size * 1e3
        corners = [o, o + L * f, o + L * f + H * s, o + H * s, o]
        xy = [((c[0] - lo_xy[0]) * scale, size[1] - 1 - (c[1] - lo_xy[1]) * scale) for c in corners]
        draw.line(xy, fill=(90, 90, 90), width=1)
        draw.text(xy[0], p.name, fill=(200, 30, 30))  # at the first pixel's corner
    pic = Image.new("RGB", (left.width + 20 + right.width, max(left.height, right.height) + 24), "white")
    pic.paste(left, (0, 24))
    pic.paste(right, (left.width + 20, 24))
    d = ImageDraw.Draw(pic)
    d.text((0, 4), "slab: panels stacked along slow", fill=(0, 0, 0))
    d.text((left.width + 20, 4), "lab view from the sample (DIALS x right, y up); name at each first pixel",
           fill=(0, 0, 0))
    pic.save(out, optimize=True)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
