"""Writing a file whole, privately when asked, and never through a symbolic link.

Drafts and catalogues are written where a user says. A plain ``open(path, "w")``
follows a symbolic link planted at that path, and a reader (or a crash) can see a file
half written. :func:`write_text` writes a temporary file in the same directory and
renames it over the destination: the rename replaces a directory entry, so it never
writes through a link, and readers see either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["PRIVATE", "write_text"]

#: Permissions of files that hold data about users: readable by their owner only.
PRIVATE = 0o600


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it process-wide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename.

    ``mode`` is the file's permission bits, whatever the umask; None gives what a new
    file normally gets (``0o666`` less the umask). The parent directory is created if
    needed. Returns the path written.

    Raises ValueError, naming the path, when the destination is a symbolic link or
    not a regular file; OSError when the file cannot be written (nothing is left
    behind then).
    """
    target = Path(path)
    try:
        existing = os.lstat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and stat.S_ISLNK(existing.st_mode):
        msg = (
            f"{str(target)!r} is a symbolic link; refusing to write through it. Remove the "
            "link or choose another path."
        )
        raise ValueError(msg)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        msg = f"{str(target)!r} exists and is not a regular file; choose another path."
        raise ValueError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with O_EXCL and mode 0600: no one else can open it
    # between its creation and the rename.
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), (0o666 & ~_umask()) if mode is None else mode)
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target
