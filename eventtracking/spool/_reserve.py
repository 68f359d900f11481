"""Free space kept back, so that a spool on a full disk can still be drained.

Draining a SQLite spool writes, so on a full disk a spool that filled it during an
outage could never be delivered. ``docs/mongodb.rst`` ("Size and disk space") tells
users the two things that keep room: adding rows is refused while less than the
reserve's size is free (:meth:`DiskReserve.room_for`), and a *reserve* file beside the
spool is given back when a draining write fails for a full disk (the write is then
tried again), and made again once the file system has room for it twice over.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from eventtracking.spool._files import create_private_file

__all__ = ["DiskReserve"]

_CHUNK = 1 << 20
# How often room_for() looks whether the reserve is still there: another process may
# have given it back. Remaking it is never urgent; a look costs a system call.
_LOOK_INTERVAL = 1.0
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskReserve:
    """``size`` bytes of disk held in the file ``path``; ``size=0`` keeps no reserve."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._directory = str(path.parent)
        self._next_look = 0.0

    def present(self) -> bool:
        """Whether the reserve holds its full size now (always True when ``size`` is 0)."""
        if not self.size:
            return True
        try:
            return os.lstat(self.path).st_size >= self.size
        except FileNotFoundError:
            return False

    def room_for(self, incoming: int) -> bool:
        """Whether ``incoming`` more bytes leave the reserve's size free on the file system
        (always True when ``size`` is 0). Remakes the reserve when it went missing and
        there is room for it."""
        if not self.size:
            return True
        free = _free_bytes(self._directory)
        if free is not None and free - incoming < self.size:
            return False
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + _LOOK_INTERVAL
            self.ensure()
        return True

    def ensure(self) -> bool:
        """Make the reserve unless it is there; False when the file system lacks room.

        There is room when the file system has at least twice ``size`` free: the
        reserve, and as much again for the spool to grow into.
        """
        if self.present():
            return True
        free = _free_bytes(self._directory)
        if free is not None and free < 2 * self.size:
            return False
        create_private_file(self.path)
        try:
            fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:  # released meanwhile by another process: try next time
            return False
        try:
            _allocate(fd, self.size)
        except OSError as exc:
            if exc.errno not in _NO_ROOM:
                raise
            allocated = False
        else:
            allocated = True
        finally:
            os.close(fd)
        if not allocated:
            self.release()  # a part of a reserve would only take space
        return allocated

    def release(self) -> bool:
        """Delete the reserve, giving its space back; False when there was none."""
        if not self.size:
            return False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True


def _free_bytes(directory: str) -> int | None:
    """Bytes an unprivileged user may still write on ``directory``'s file system."""
    try:
        usage = os.statvfs(directory)
    except (AttributeError, OSError):  # no statvfs here: writing will tell
        return None
    return usage.f_bavail * usage.f_frsize


def _allocate(fd: int, size: int) -> None:
    """Give the file ``size`` bytes of real blocks (not a sparse hole)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            # EINVAL/EOPNOTSUPP: the file system cannot preallocate; write instead.
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
    os.lseek(fd, 0, os.SEEK_SET)
    zeros = bytes(_CHUNK)
    left = size
    while left > 0:
        left -= os.write(fd, zeros[: min(left, _CHUNK)])
    os.fsync(fd)
