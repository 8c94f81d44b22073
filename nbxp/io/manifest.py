"""The resume manifest of a series: which frames are complete, with their files' checksums.

A JSON-lines file beside the outputs (``docs/formats.md``-style description here, as the
file is nbxp's own):

* line 1, the header: ``{"nbxp_manifest": 1, "series": TOKEN, "kind": ..., "count": N,
  "outputs": [[flag, format, template], ...]}``; TOKEN is a digest of everything the files
  depend on (settings, noise seed, renderer, scales, output names), so a manifest is only
  ever applied to the series that wrote it;
* one line per completed frame, appended when its files are in place: ``{"index": i,
  "files": [[name, sha256, bytes], ...], "image_sha256": ..., ...}``, names relative to
  the manifest's directory.

Each line is written by a single ``write()`` on a file opened with ``O_APPEND``, so a client
killed at any moment leaves whole lines (a torn last line, possible only if the machine
itself goes down, is ignored when read).  A frame counts as complete on ``--resume`` only
when every file it lists exists with that size and SHA-256; a later line for the same frame
supersedes an earlier one.  Host-side only; no array namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

from . import InputError, atomic_write

VERSION = 1
#: read size for hashing (large reads keep a file system's read-ahead busy)
_CHUNK = 4 << 20


def sha256_file(path: str) -> str:
    """The SHA-256 hex digest of a file's bytes (hashlib releases the GIL on large blocks,
    so several files hash in parallel on threads)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(_CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def file_entry(path: str) -> list:
    """[path, sha256, bytes] of a finished file."""
    return [path, sha256_file(path), os.path.getsize(path)]


def default_path(template: str) -> str:
    """The manifest beside the first output: its name with the frame-number run and the
    extension dropped, plus ``.manifest.jsonl`` (``scan_#####.cbf`` -> ``scan.manifest.jsonl``)."""
    d, base = os.path.split(template)
    root = os.path.splitext(base)[0].replace("#", "").rstrip("_.-") or "series"
    return os.path.join(d, root + ".manifest.jsonl")


def entry_is_complete(entry: dict, base: str = ".") -> bool:
    """Whether every file of a frame entry exists with its recorded size and SHA-256 (names
    relative to ``base``, the manifest's directory)."""
    try:
        for name, digest, size in entry["files"]:
            path = os.path.join(base, name)
            if os.path.getsize(path) != size or sha256_file(path) != digest:
                return False
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return True


def read(path: str) -> tuple[dict | None, dict[int, dict]]:
    """(header, {frame index: last entry}) of a manifest; (None, {}) when there is none.
    Lines that do not parse (a torn last line) are skipped."""
    try:
        with open(path, "rb") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None, {}
    except OSError as e:
        raise InputError(f"--resume: cannot read the manifest {path}: {e.strerror}") from None
    header, entries = None, {}
    for i, raw in enumerate(lines):
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if i == 0:
            if not isinstance(doc, dict) or doc.get("nbxp_manifest") != VERSION:
                raise InputError(f"--resume: {path} is not an nbxp series manifest (version {VERSION})")
            header = doc
        elif isinstance(doc, dict) and isinstance(doc.get("index"), int):
            entries[doc["index"]] = doc
    return header, entries


class Manifest:
    """The manifest of one run: opened fresh (header only) or, on resume, rewritten with the
    entries that are still complete; :meth:`append` records a finished frame."""

    def __init__(self, path: str, header: dict, *, resume: bool = False, hash_threads: int = 4):
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.header = dict(header, nbxp_manifest=VERSION)
        self.done: dict[int, dict] = {}
        self.stale: list[int] = []  # frames listed but no longer complete on disk
        if resume:
            old, entries = read(path)
            if old is not None:
                mine = {k: self.header[k] for k in ("series", "kind", "count", "outputs")}
                theirs = {k: old.get(k) for k in mine}
                if json.loads(json.dumps(mine)) != theirs:
                    why = "outputs" if theirs["outputs"] != json.loads(json.dumps(mine["outputs"])) else \
                        "settings (flags, noise seed, renderer or scales)"
                    raise InputError(f"--resume: {path} was written by another series (its {why} differ; without "
                                     "-seed the noise seed changes every run): remove it, or resume with the same "
                                     "flags")
                items = sorted(entries.items())
                with ThreadPoolExecutor(max_workers=max(1, hash_threads)) as pool:
                    ok = list(pool.map(lambda kv: entry_is_complete(kv[1], self.base), items))
                for (i, e), good in zip(items, ok):
                    if good and 0 <= i < int(self.header["count"]):
                        self.done[i] = e
                    else:
                        self.stale.append(i)
        self._fd = None  # the file is (re)written when the first frame of this run is in

    def _open(self) -> None:
        """Write the header and the entries still complete (atomically), then append."""
        lines = [json.dumps(self.header)] + [json.dumps(self.done[i]) for i in sorted(self.done)]
        atomic_write(self.path, ("\n".join(lines) + "\n").encode())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, entry: dict) -> None:
        """Record a finished frame (one line, one ``write()``).  The first one of a run
        writes the file: a run that fails before any frame (no cluster, bad input) leaves an
        earlier manifest as it was."""
        if self._fd is None:
            self._open()
        line = (json.dumps(entry) + "\n").encode()
        n = os.write(self._fd, line)
        if n != len(line):  # a short write on a full disk: the torn line is skipped by read()
            raise OSError(28, f"short write to the manifest {self.path}")
        self.done[int(entry["index"])] = entry

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
