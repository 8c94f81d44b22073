"""File formats nanoBragg reads and writes, one small module each (host NumPy only)."""


from ..errors import NbxpError


class InputError(NbxpError):
    """A user-supplied file or value is unusable; the message names it and says why."""


def final_mode(path: str) -> int:
    """The permission bits a plain ``open(path, "wb")`` would give: those of the file it
    replaces, else 0666 less the umask."""
    import os
    import stat
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def temporary_beside(path: str) -> tuple[str, int]:
    """A new empty temporary file in ``path``'s directory (hidden name starting with
    ``.<basename>.``) and the permission bits the finished file should get
    (:func:`final_mode`); for writers that need a file name rather than bytes (h5py).
    The caller renames it with :func:`commit_temporary` or removes it."""
    import os
    import tempfile
    d = os.path.dirname(os.path.abspath(path)) or "."
    mode = final_mode(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    os.close(fd)
    return tmp, mode


def commit_temporary(tmp: str, path: str, mode: int) -> None:
    """Give ``tmp`` its final permissions and rename it to ``path`` (atomic on one file
    system)."""
    import os
    os.chmod(tmp, mode)
    os.replace(tmp, path)


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
