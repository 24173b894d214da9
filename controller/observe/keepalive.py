"""Find a container's keep-alive file inside its root, safely (no links followed, nothing read).

Owns one hostile-input problem: the keep-alive file (default ``/workspace/.keep-alive``) lives in a
filesystem the container's user controls, and the controller runs as root on the host. A symlink
(``/workspace/.keep-alive -> /etc/shadow``, or ``/workspace -> /``) must never make the controller
look at a host path, a FIFO must never block it, and a hard link to some other file must not count.

How: the caller hands in a directory fd of ``/proc/<pid>`` (already checked to be the container's
main process); this module opens ``root`` below it (the container's ``/``) and resolves the path
relative to that fd:

* preferred: ``openat2(O_PATH|O_NOFOLLOW, RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)``
  through ``syscall(437)``; a symlink anywhere on the path fails with ``ELOOP`` (or, as the last
  component, yields an ``O_PATH`` fd of the link itself);
* fallback (kernel < 5.6, or a seccomp filter that refuses the call): walk component by component
  with ``O_PATH|O_DIRECTORY|O_NOFOLLOW`` relative to the previous directory fd, then open the last
  component with ``O_PATH|O_NOFOLLOW``.

The final fd is only ``fstat``-ed: a symlink or ``st_nlink > 1`` gives ``LINK``, anything but a
regular file gives ``NOT_REGULAR``, a regular file gives ``PRESENT`` with its mtime and inode. The
content is never read. Called by :mod:`controller.observe.signals`. It must not use any host path
other than the ``/proc/<pid>`` fd it is given.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from datetime import UTC, datetime

from controller.snapshot import KeepAlive, KeepAliveState

SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall table unification)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
_EAGAIN_RETRIES = 3


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """``openat2`` through libc's ``syscall``; ``available`` drops to False after ENOSYS/EPERM."""

    def __init__(self) -> None:
        self.available = True
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._syscall = libc.syscall
            self._syscall.restype = ctypes.c_long
        except (OSError, AttributeError):
            self.available = False

    def open(self, dir_fd: int, path: str) -> int:
        how = _OpenHow(
            flags=os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode=0,
            resolve=RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        )
        fd = int(
            self._syscall(
                ctypes.c_long(SYS_OPENAT2),
                ctypes.c_int(dir_fd),
                ctypes.c_char_p(os.fsencode(path)),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd


_OPENAT2 = _Openat2()


def validate_keepalive_path(path: str) -> str:
    """Check a configured keep-alive path: absolute, no empty, ``.`` or ``..`` components, no NUL."""
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"keepalive_path {path!r} must be an absolute path inside the container")
    parts = path.strip("/").split("/")
    if not parts or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"keepalive_path {path!r} must not contain empty, '.' or '..' components")
    return path


def read_keepalive(proc_pid_fd: int, path: str, *, use_openat2: bool | None = None) -> KeepAlive:
    """Stat the keep-alive file of the process whose ``/proc/<pid>`` directory fd is given.

    ``use_openat2``: None picks openat2 when the kernel has it; False forces the component walk.
    """
    relative = validate_keepalive_path(path).strip("/")
    try:
        root_fd = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc_pid_fd)
    except OSError as exc:
        return KeepAlive(state=KeepAliveState.UNKNOWN, detail=f"cannot open the container root: {exc}")
    try:
        if use_openat2 is not False and _OPENAT2.available:
            result = _via_openat2(root_fd, relative)
            if result is not None:
                return result
            if use_openat2 is True:
                return KeepAlive(state=KeepAliveState.UNKNOWN, detail="openat2 is not available")
        return _via_walk(root_fd, relative)
    finally:
        os.close(root_fd)


def _via_openat2(root_fd: int, relative: str) -> KeepAlive | None:
    for _ in range(_EAGAIN_RETRIES):
        try:
            fd = _OPENAT2.open(root_fd, relative)
        except OSError as exc:
            if exc.errno in {errno.ENOSYS, errno.EPERM}:
                _OPENAT2.available = False  # fall back for the life of the process
                return None
            if exc.errno == errno.EAGAIN:
                continue  # a concurrent rename; the kernel asks us to retry
            return _from_error(exc)
        return _from_fd(fd)
    return KeepAlive(state=KeepAliveState.UNKNOWN, detail="openat2 kept returning EAGAIN")


def _via_walk(root_fd: int, relative: str) -> KeepAlive:
    *dirs, last = relative.split("/")
    fd = os.dup(root_fd)
    try:
        for component in dirs:
            try:
                next_fd = os.open(
                    component, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except OSError as exc:
                if exc.errno == errno.ENOTDIR and _is_symlink(component, fd):
                    # O_DIRECTORY may win over O_NOFOLLOW in the error it reports.
                    return KeepAlive(state=KeepAliveState.LINK, detail=f"{component!r} is a symbolic link")
                return _from_error(exc)
            os.close(fd)
            fd = next_fd
        try:
            final_fd = os.open(last, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            return _from_error(exc)
        return _from_fd(final_fd)
    finally:
        os.close(fd)


def _is_symlink(component: str, dir_fd: int) -> bool:
    try:
        # lstat relative to a directory inside the container: never a host path.
        return stat.S_ISLNK(os.stat(component, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _from_error(exc: OSError) -> KeepAlive:
    if exc.errno == errno.ELOOP:
        return KeepAlive(state=KeepAliveState.LINK, detail="a symbolic link on the path")
    if exc.errno == errno.ENOENT:
        return KeepAlive(state=KeepAliveState.ABSENT)
    if exc.errno == errno.ENOTDIR:
        return KeepAlive(state=KeepAliveState.ABSENT, detail="a parent on the path is not a directory")
    return KeepAlive(
        state=KeepAliveState.UNKNOWN, detail=f"{errno.errorcode.get(exc.errno or 0, '?')}: {exc}"
    )


def _from_fd(fd: int) -> KeepAlive:
    try:
        st = os.fstat(fd)
    except OSError as exc:
        return KeepAlive(state=KeepAliveState.UNKNOWN, detail=f"fstat failed: {exc}")
    finally:
        os.close(fd)
    if stat.S_ISLNK(st.st_mode):
        return KeepAlive(state=KeepAliveState.LINK, detail="the keep-alive file is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        return KeepAlive(state=KeepAliveState.NOT_REGULAR, detail=f"file type {_kind(st.st_mode)}")
    if st.st_nlink > 1:
        return KeepAlive(
            state=KeepAliveState.LINK,
            detail=f"a hard link ({st.st_nlink} names for one file)",
            inode=st.st_ino,
        )
    return KeepAlive(state=KeepAliveState.PRESENT, mtime=_mtime(st.st_mtime), inode=st.st_ino)


_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _mtime(seconds: float) -> datetime:
    """The file's mtime; one outside the calendar (tmpfs keeps any 64-bit time) as its nearest end.

    The user sets it (``touch -d``): a time past the year 9999 is still a future mtime, capped by
    the first sighting like any other, and one before year 1 is a stale file, never an unreadable
    one (an unknown keep-alive would hold the idle stop off for ever)."""
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return _LATEST if seconds > 0 else _EARLIEST


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "other"
