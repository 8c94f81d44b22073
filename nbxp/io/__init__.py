"""File formats nanoBragg reads and writes, one small module each (host NumPy only)."""


from ..errors import NbxpError


class InputError(NbxpError):
    """A user-supplied file or value is unusable; the message names it and says why."""


def atomic_write(path: str, payload) -> None:
    """Write ``payload`` (bytes-like, or a list of bytes-like pieces such as a header and a
    contiguous NumPy array, written without copying) to a temporary file beside ``path`` and
    rename it into place, so a failure never leaves a half-written file.

    The file gets the permissions a plain ``open(path, "wb")`` would give it: those of the
    file it replaces, else 0666 less the umask (a temporary file alone would be 0600,
    unreadable to the other users and services that process images).
    """
    import os
    import stat
    import tempfile
    d = os.path.dirname(os.path.abspath(path)) or "."
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            for piece in (payload if isinstance(payload, (list, tuple)) else [payload]):
                fh.write(memoryview(piece).cast("B"))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
