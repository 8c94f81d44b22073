"""Three-vector helpers on any array-API namespace.

Vectors are arrays whose last axis has length 3 (x, y, z in the lab frame); every helper
broadcasts over leading axes.  Rotation angles are radians.  The rotation conventions are
nanoBragg's: ``rotate_xyz`` applies right-handed rotations about the lab x, then y, then z
axes; ``rotate_axis`` is Rodrigues' formula about a unit axis.
"""

from __future__ import annotations

import math
import numbers


def dot(a, b, *, xp):
    return xp.sum(a * b, axis=-1)


def cross(a, b, *, xp):
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return xp.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def norm(a, *, xp):
    return xp.sqrt(dot(a, a, xp=xp))


def unitize(a, *, xp):
    """``a / |a|`` (zero where ``|a| == 0``) and ``|a|``."""
    n = norm(a, xp=xp)
    safe = xp.where(n == 0, xp.ones_like(n), n)
    u = xp.where(n[..., None] == 0, xp.zeros_like(a), a / safe[..., None])
    return u, n


def rotate_xyz(v, rotx: float, roty: float, rotz: float, *, xp):
    """Rotate ``v`` about lab x by ``rotx``, then y by ``roty``, then z by ``rotz``.

    An angle may be a Python float (skipped when 0, as nanoBragg does) or a 0-d array of
    ``xp`` (a differentiable parameter: always applied, so the derivative at 0 survives).
    """
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    if _is_array(rotx) or rotx != 0:
        c, s = _cos_sin(rotx, xp)
        y, z = y * c - z * s, y * s + z * c
    if _is_array(roty) or roty != 0:
        c, s = _cos_sin(roty, xp)
        x, z = x * c + z * s, -x * s + z * c
    if _is_array(rotz) or rotz != 0:
        c, s = _cos_sin(rotz, xp)
        x, y = x * c - y * s, x * s + y * c
    return xp.stack([x, y, z], axis=-1)


def _is_array(a) -> bool:
    """True for an array (a parameter carrying a derivative), False for a host number."""
    return not isinstance(a, numbers.Real)


def _cos_sin(a, xp):
    if _is_array(a):
        return xp.cos(a), xp.sin(a)
    return math.cos(a), math.sin(a)


def rotate_axis(v, axis, phi, *, xp):
    """Rotate ``v`` right-handedly by ``phi`` about ``axis`` (taken as given, not unitized).

    ``phi`` may be a Python float or an array broadcasting against ``v[..., 0]``.
    """
    if isinstance(phi, (int, float)):
        s, c = math.sin(phi), math.cos(phi)
    else:
        s, c = xp.sin(phi), xp.cos(phi)
    ax, ay, az = axis[..., 0], axis[..., 1], axis[..., 2]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    d = (ax * vx + ay * vy + az * vz) * (1.0 - c)
    return xp.stack([
        ax * d + vx * c + (-az * vy + ay * vz) * s,
        ay * d + vy * c + (az * vx - ax * vz) * s,
        az * d + vz * c + (-ay * vx + ax * vy) * s,
    ], axis=-1)
