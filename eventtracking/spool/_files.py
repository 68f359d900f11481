"""The spool's files on disk: private to their user, never in a shared place.

The rules, and why, are told to users in ``docs/mongodb.rst`` ("Private files"): the
directory is the running user's and nobody else may write to it, the spool files are
that user's regular files, private to them, and what this module creates is created
0700 (directory) and 0600 (files) whatever the umask. A location that breaks a rule
raises :class:`UnsafeSpoolError`, which names the path and the fix; nothing existing is
re-permissioned. Where the platform has no POSIX ownership (no :func:`os.geteuid`),
only what can be checked is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eventtracking.exceptions import ImproperlyConfigured

__all__ = [
    "UnsafeSpoolError",
    "check_directory",
    "check_file",
    "create_private_file",
    "directory_lock",
    "make_private_directory",
]

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafeSpoolError(ImproperlyConfigured):
    """The spool directory or a spool file could be read or changed by another user.

    ``path`` is the offending directory or file. The message says how to fix it.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(message)
        self.path = Path(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, str(self))


def _euid() -> int | None:
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid is not None else None


def _name(uid: int) -> str | None:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return None


def _user(uid: int) -> str:
    """A user's name and id, for messages (the id alone when it has no name)."""
    name = _name(uid)
    return f"user {name!r} (uid {uid})" if name else f"uid {uid}"


def check_directory(path: Path) -> None:
    """Raise :class:`UnsafeSpoolError` unless ``path`` is a directory of this user that
    nobody else can write to.

    A symbolic link to such a directory is fine: what counts is the directory written to.
    Raises FileNotFoundError when it does not exist.
    """
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        msg = f"The spool directory {path} is not a directory. Set spool_dir to a directory."
        raise UnsafeSpoolError(path, msg)
    euid = _euid()
    if euid is not None and info.st_uid != euid:
        msg = (
            f"The spool directory {path} belongs to {_user(info.st_uid)}, not to "
            f"{_user(euid)}, who runs this process: that user could read the spooled "
            "events, and add forged ones that would be delivered as this process's. "
            "Set spool_dir to a directory of your own (leave it unset for the default; "
            "a missing directory is created with mode 0700)."
        )
        raise UnsafeSpoolError(path, msg)
    if info.st_mode & 0o022:
        who = "other users" if info.st_mode & 0o002 else "its group"
        msg = (
            f"The spool directory {path} is writable by {who} (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): they could replace the spool file, read "
            "the spooled events, and add forged ones that would be delivered as this "
            "process's. Set spool_dir to a directory that only you can write to (leave "
            "it unset for the default; a missing directory is created with mode 0700), "
            f"or, if nobody else needs to write there, run: chmod go-w {path}"
        )
        raise UnsafeSpoolError(path, msg)


def check_file(path: Path) -> bool:
    """Whether ``path`` exists; raise :class:`UnsafeSpoolError` when it does but is not a
    regular file of this user that only this user can read and write."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        msg = (
            f"The spool file {path} is a symbolic link. The spool writes only files of "
            "its own: remove the link, or set spool_dir to the directory it points into."
        )
        raise UnsafeSpoolError(path, msg)
    if not stat.S_ISREG(info.st_mode):
        msg = f"The spool file {path} is not a regular file. Remove it or choose another spool_dir."
        raise UnsafeSpoolError(path, msg)
    euid = _euid()
    if euid is not None and info.st_uid != euid:
        msg = (
            f"The spool file {path} belongs to {_user(info.st_uid)}, not to {_user(euid)}, "
            "who runs this process, so its events may have been written by someone else. "
            "Move it out of the spool directory (or, if it is yours, run: chown "
            f"{_name(euid) or euid} {path})."
        )
        raise UnsafeSpoolError(path, msg)
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        what = "readable" if mode & 0o044 else "accessible"
        msg = (
            f"The spool file {path} is {what} by other users (mode {mode:04o}), and it "
            "holds events with personal data. Run: chmod 600 "
            f"{path}"
        )
        raise UnsafeSpoolError(path, msg)
    return True


def make_private_directory(path: Path) -> None:
    """Create ``path`` with mode 0700, and its missing parents too, unless it exists,
    then check it with :func:`check_directory`.

    Parents are private as well: under ``umask 0`` the usual mode would leave
    ``~/.cache/eventtracking`` open to everyone. Existing directories are left as
    they are.
    """
    missing = [parent for parent in path.parents if not parent.exists()]
    for directory in [*reversed(missing), path]:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        # The umask may have taken bits the owner needs; it never adds any, so the
        # directory was never more open than this in between.
        os.chmod(directory, 0o700)
    check_directory(path)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600, whatever the umask; False if it exists.

    Never follows a symbolic link at ``path``.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def directory_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on directory ``path`` between processes and threads.

    An advisory :func:`fcntl.flock` on the directory itself, so there is no lock file.
    Waits at most ``timeout`` seconds, then raises TimeoutError naming the directory.
    """
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    msg = (
                        f"The spool directory {path} stayed locked by another process for "
                        f"over {timeout:g} s"
                    )
                    raise TimeoutError(msg) from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # releases the lock
