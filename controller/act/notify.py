"""Notices to users on their logged-in terminals, the way ``write(1)`` and DS01's notifier do.

The user's terminals come from utmp (through ``psutil.users()``). Each is opened as
``/dev/<tty>`` with ``O_WRONLY | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW`` and must be a character
device under ``/dev/pts/`` or a ``/dev/tty*`` owned by that user: a stale or forged utmp entry can
therefore never make the daemon (root) write into a file or into someone else's terminal. The
message is sanitised line by line (no escape sequences reach the terminal) and written with a
short deadline, so a stuck terminal cannot stall a pass. No shell, no subprocess.

``mesg n`` is honoured, whoever runs the controller: a terminal without the group write bit (what
``mesg n`` clears) is not written to, as ``write(1)`` does. Under the shipped unit the kernel would
refuse it anyway (no ``CAP_DAC_OVERRIDE``, writes go through ``SupplementaryGroups=tty``); the check
makes ``ds01ctl reconcile`` run as root behave the same. Such a user still finds every warning in
the event log, and ``ds01ctl describe container NAME`` shows the planned stop.

**After a stop or a removal** the owner gets a notice (:func:`outcome_notice`): what happened, why
(the plan's message with its figures), what is kept (``/workspace``) and lost, and how to start again.

**Users who are not logged in** (no terminal took the notice) find it where DS01 puts it: appended
to ``.ds01-alerts`` in the container's workspace, i.e. ``/workspace/.ds01-alerts`` as seen inside
(:func:`append_alert_file`). That directory is the user's: every component of its host path is
opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to the previous one (a symlink anywhere fails),
the file is opened relative to the directory fd (``O_NOFOLLOW``; created ``O_EXCL`` when absent),
must be a regular file with one link owned by root or the owner, and is kept under
:data:`ALERT_FILE_MAX_BYTES` (truncated first, with a line saying so). A device node, FIFO or
symlink put there is never opened for writing. Under the shipped unit the workspace is read-only to
the daemon (``ProtectSystem=strict``, no ``CAP_DAC_OVERRIDE``/``CAP_CHOWN``): the attempt is then
recorded as not written, with the errno; ``docs/operations.md`` has the drop-in that allows it.

Called by the real executor for WarnOwner actions and after StopContainer/RemoveContainer. Never raises.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import select
import stat
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import NamedTuple, Protocol

import psutil
from loguru import logger

from controller import labels as L
from controller.act.sanitize import clean
from controller.plan.rules.common import files_kept

_TTY_NAME = re.compile(r"^(?:pts/[0-9]{1,6}|tty[A-Za-z0-9]{1,8})$")
# A login name as an owner may be one (controller.observe.classify), DS01's domain logins
# (``first.last@example.org``) included; the terminal's owner decides whose terminal it is.
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}\$?\Z")
MAX_LINES = 20
MAX_LINE_CHARS = 300


# utmp keeps this many bytes of a login name (UT_NAMESIZE): a longer one is listed cut, and is
# compared cut, as write(1) does (``strncmp(..., UT_NAMESIZE)``).
_UT_NAMESIZE = 32


def _same_login(listed: str, user: str) -> bool:
    """Whether a utmp entry's name is ``user``'s: the same name, or its first 32 bytes when it is
    longer (a directory's ``first.last@domain``). The terminal's owner is checked after, either way."""
    if listed == user:
        return True
    cut = user.encode()[:_UT_NAMESIZE]
    return len(cut) == _UT_NAMESIZE and listed.encode()[:_UT_NAMESIZE] == cut


class Session(NamedTuple):
    user: str
    terminal: str


class Notifier(Protocol):
    def notify(self, user: str, message: str, *, severity: str = "WARNING") -> int:
        """Deliver ``message`` to ``user``; return how many terminals got it. Never raises."""
        ...


def _utmp_sessions() -> list[Session]:
    return [Session(u.name, u.terminal or "") for u in psutil.users()]


def notice_text(params: Mapping[str, object], message: str, *, tz: tzinfo | None = None) -> str:
    """The owner's notice: the planner's ``notice`` with ``{stop_at}`` in the server's local time.

    Falls back to ``message`` (the one-line plan message) when the action carries no notice.
    """
    notice = params.get("notice")
    if not isinstance(notice, str) or not notice:
        return message
    stop = params.get("stop_expected_at")
    at = None
    if isinstance(stop, str):
        try:
            at = datetime.fromisoformat(stop.replace("Z", "+00:00"))
        except ValueError:
            at = None
    shown = at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z").strip() if at is not None else "(unknown time)"
    return notice.replace("{stop_at}", shown)


def notice_lines(message: str) -> list[str]:
    """The cleaned lines of a notice, each at most :data:`MAX_LINE_CHARS` long, at most
    :data:`MAX_LINES` of them. A longer line is wrapped, not cut: a long container name must not
    push the stop time out of a warning's first line. A line beyond four lines' worth is cut (``…``)."""
    lines: list[str] = []
    for line in message.splitlines():
        text = clean(line, 4 * MAX_LINE_CHARS)
        if len(text) <= MAX_LINE_CHARS:
            lines.append(text)
        else:
            lines += textwrap.wrap(text, MAX_LINE_CHARS, break_on_hyphens=False)
        if len(lines) >= MAX_LINES:
            return lines[:MAX_LINES]
    return lines


def format_notice(user: str, message: str, *, severity: str, at: datetime) -> bytes:
    """The bytes written to a terminal: a header line, the cleaned message, CRLF line ends."""
    lines = notice_lines(message)
    header = (
        f"*** ds01-controller {clean(severity, 16)} for {clean(user, 64)} "
        f"({at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC) ***"
    )
    # A terminal may be in raw mode: CRLF returns the cursor to column 0 either way.
    text = "\r\n" + header + "\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    return text.encode("utf-8", errors="replace")


class TerminalNotifier:
    """Writes notices to each terminal a user is logged in on."""

    def __init__(
        self,
        *,
        sessions: Callable[[], Sequence[Session]] = _utmp_sessions,
        dev_dir: Path = Path("/dev"),
        write_timeout_s: float = 1.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._sessions = sessions
        self._dev_dir = dev_dir
        self._write_timeout_s = write_timeout_s
        self._clock = clock or (lambda: datetime.now(UTC))

    def notify(self, user: str, message: str, *, severity: str = "WARNING") -> int:
        try:
            return self._notify(user, message, severity)
        except Exception as exc:  # a notice that cannot be delivered must not stop the pass
            logger.warning("notify {}: {}", clean(user, 64), exc)
            return 0

    def _notify(self, user: str, message: str, severity: str) -> int:
        if not _USER_NAME.match(user):
            logger.info("notify: {!r} is not a login name; no terminal to write to", clean(user, 64))
            return 0
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            logger.info("notify: no such user {}", user)
            return 0
        payload = format_notice(user, message, severity=severity, at=self._clock())
        terminals = sorted({s.terminal for s in self._sessions() if _same_login(s.user, user) and s.terminal})
        delivered = 0
        for terminal in terminals:
            if self._write_terminal(terminal, uid, payload):
                delivered += 1
        return delivered

    def _write_terminal(self, terminal: str, uid: int, payload: bytes) -> bool:
        if not _TTY_NAME.match(terminal):
            logger.warning("notify: refusing terminal name {!r}", clean(terminal, 64))
            return False
        path = self._dev_dir / terminal
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            logger.info("notify: cannot open {}: {}", path, exc.strerror)
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISCHR(st.st_mode):
                logger.warning("notify: {} is not a character device; not writing", path)
                return False
            if st.st_uid != uid:
                # utmp is stale: the terminal now belongs to another login.
                logger.info("notify: {} belongs to uid {}, not {}; not writing", path, st.st_uid, uid)
                return False
            if not st.st_mode & stat.S_IWGRP:
                logger.info("notify: {} has messages off (mesg n); not writing", path)
                return False
            return self._write_all(fd, payload)
        finally:
            os.close(fd)

    def _write_all(self, fd: int, payload: bytes) -> bool:
        deadline = time.monotonic() + self._write_timeout_s
        view = memoryview(payload)
        while view:
            try:
                view = view[os.write(fd, view) :]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                logger.info("notify: write failed: {}", exc.strerror)
                return False
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                logger.info("notify: terminal not accepting output within {}s", self._write_timeout_s)
                return False
            select.select([], [fd], [], remaining_s)
        return True


# --- stop and removal notices -----------------------------------------------------------------

ALERT_FILE_NAME = ".ds01-alerts"
ALERT_FILE_MAX_BYTES = 256 * 1024
_DS01_NAME = re.compile(rf"(.+){re.escape(L.AIME_NAME_SEPARATOR)}[0-9]+")  # DS01's ``<name>._.<uid>``
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def outcome_notice(
    *,
    container: str,
    removed: bool,
    was_running: bool,
    why: str,
    at: datetime,
    tz: tzinfo | None = None,
    kept: str = "the stopped container",
    events_readable: bool | None = None,
    workspace_mounted: bool | None = None,
) -> str:
    """The owner's notice after a stop (``was_running``) or a removal: what, why, kept, lost, next.

    ``kept``: what of the stopped container is kept (the planner's ``kept_after_stop`` evidence:
    for how long, before a hold removes it). ``events_readable``: whether the owner can read the
    event log (:func:`readable_by`); where they cannot, the notice does not send them to a command
    that says "permission denied" (None: not known, the command is named). ``workspace_mounted``:
    whether the container had a host directory or volume at ``/workspace``; a removed container
    without one took every file with it, its ``/workspace`` included (None: not known)."""
    shown = at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z").strip()
    name = clean(container, 128)
    if was_running:
        what = f"Your container {name} was stopped" + (" and removed" if removed else "") + f" at {shown}."
    else:
        what = f"Your stopped container {name} was removed at {shown}."
    if removed:
        kept_text = "your files under /workspace."
        lost = "the container itself, with every file outside /workspace"
        if workspace_mounted is False:
            kept_text = "nothing: the container had no /workspace mount, so its files went with it."
            lost = "the container itself, with all its files (/workspace included)"
        if was_running:
            lost += ", and its running processes (unsaved work in memory)"
        # DS01's commands take a container's name without the ``._.<uid>`` its naming appends.
        m = _DS01_NAME.fullmatch(name)
        again = (
            "create it again the way you created it (your usual command, e.g. "
            f"`container deploy {m[1] if m else name}`)"
        )
    else:
        lost = "its running processes (unsaved work in memory)"
        again = f"`docker start {name}` (the container and its files are still there)"
    return "\n".join(
        [
            what,
            f"Why: {why}",
            "What is kept: "
            + (kept_text if removed else f"{files_kept(clean(kept, 200), workspace_mounted)}."),
            f"What is lost: {lost}.",
            f"To start again: {again}.",
            f"More: ds01ctl get events --container {name}"
            if events_readable is not False
            else f"More: the event log is readable by administrators only: ask one to run "
            f"`ds01ctl get events --container {name}`",
        ]
    )


def readable_by(path: Path, login: str) -> bool | None:
    """Whether the user ``login`` may read the file ``path``, by its permission bits and those of
    each directory above it (search); None when it cannot be told: no such user or file, or an
    access control list on the way (the bits are not the whole answer then)."""
    try:
        entry = pwd.getpwnam(login)
        groups = set(os.getgrouplist(login, entry.pw_gid))
    except (KeyError, OSError):
        return None
    if entry.pw_uid == 0:
        return True

    def grants(st: os.stat_result, user_bit: int, group_bit: int, other_bit: int) -> bool:
        if st.st_uid == entry.pw_uid:
            return bool(st.st_mode & user_bit)
        if st.st_gid in groups:
            return bool(st.st_mode & group_bit)
        return bool(st.st_mode & other_bit)

    try:
        chain = [path, *path.parents]
        if any("system.posix_acl_access" in os.listxattr(p) for p in chain):
            return None
        if not grants(path.stat(), stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH):
            return False
        return all(grants(d.stat(), stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH) for d in path.parents)
    except OSError:
        return None


def format_alert_entry(message: str, *, severity: str, at: datetime) -> bytes:
    """One alerts-file entry in DS01's form: a ``--- Alert: <time> ---`` line, the text, a blank line."""
    lines = notice_lines(message)
    stamp = at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    text = f"--- Alert: {stamp} ---\n[{clean(severity, 16)}] ds01-controller\n" + "\n".join(lines) + "\n\n"
    return text.encode("utf-8", errors="replace")


_MAX_TRUSTED_LINKS = 16


def _open_dir_nofollow(path: str) -> int:
    """An ``O_PATH`` fd of the absolute ``path``, walked from ``/`` following no symlink that a
    user could have made: only one owned by root in a directory owned by root that neither its group
    nor others may write, reached through root's directories only (an administrator's ``/home ->
    /data/home``), at most 16 of them. Any other link on the way (a user's, in their home or
    workspace, or root's under a directory a user may write) fails the walk with ELOOP."""
    if not path.startswith("/") or "\0" in path:
        raise OSError(errno.EINVAL, f"not an absolute path: {path!r}")
    parts = [p for p in path.split("/") if p]
    if any(p in {".", ".."} for p in parts):
        raise OSError(errno.EINVAL, f"'.' or '..' in {path!r}")
    fd = os.open("/", _DIR_FLAGS)
    links = 0
    try:
        # Whether every directory walked to reach fd is root's, one a user can neither write nor
        # (sticky) rename entries of: a root-owned directory under a user's writable one may have
        # been put there by the user (moved, or made by root in their container).
        rooted = _root_held(os.fstat(fd))
        while parts:
            part = parts.pop(0)
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not rooted or not _trusted_link(fd, part):
                    raise
                links += 1
                if links > _MAX_TRUSTED_LINKS:
                    raise OSError(errno.ELOOP, f"more than {_MAX_TRUSTED_LINKS} links in {path!r}") from None
                target = os.readlink(part, dir_fd=fd)
                parts = [p for p in target.split("/") if p and p != "."] + parts
                # An absolute target is walked from / (root's), a relative one from the directory
                # holding it.
                if target.startswith("/"):
                    next_fd, rooted = os.open("/", _DIR_FLAGS), True
                else:
                    next_fd = os.dup(fd)
            os.close(fd)
            fd = next_fd
            rooted = rooted and _root_held(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _root_held(st: os.stat_result) -> bool:
    return st.st_uid == 0 and (
        not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or bool(st.st_mode & stat.S_ISVTX)
    )


def _trusted_link(dir_fd: int, name: str) -> bool:
    """Whether ``name`` in ``dir_fd`` is a symlink only root could have made: root's, in a directory
    of root's that its group and others cannot write."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        parent = os.fstat(dir_fd)
    except OSError:
        return False
    return (
        stat.S_ISLNK(st.st_mode)
        and st.st_uid == 0
        and parent.st_uid == 0
        and not parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def append_alert_file(
    workspace: str,
    uid: int,
    gid: int,
    entry: bytes,
    *,
    max_bytes: int = ALERT_FILE_MAX_BYTES,
    name: str = ALERT_FILE_NAME,
) -> str:
    """Append ``entry`` to ``<workspace>/.ds01-alerts`` (the host path of the container's /workspace).

    Returns ``"written"`` or why not (``"not written: ..."``); never raises. The file is created
    ``0600`` and given to ``uid``/``gid`` so its owner can read and delete it.
    """
    try:
        dir_fd = _open_dir_nofollow(workspace)
    except OSError as exc:
        why = "a symbolic link on the path" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror
        return f"not written: {clean(workspace, 200)}: {why}"
    try:
        st = os.fstat(dir_fd)
        if st.st_uid not in (0, uid):
            return f"not written: {clean(workspace, 200)} belongs to uid {st.st_uid}, not the owner"
        return _append_in(dir_fd, name, uid, gid, entry, max_bytes)
    except OSError as exc:
        return f"not written: {exc.strerror or exc}"
    finally:
        os.close(dir_fd)


def _append_in(dir_fd: int, name: str, uid: int, gid: int, entry: bytes, max_bytes: int) -> str:
    try:
        # O_PATH first: a FIFO or a device node put there is looked at, never opened for writing.
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_APPEND
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        try:
            try:
                os.fchown(fd, uid, gid)
            except OSError as exc:
                # A root-owned 0600 file its owner cannot read helps nobody: take it away again.
                os.unlink(name, dir_fd=dir_fd)
                return f"not written: cannot give the file to uid {uid} ({exc.strerror}; CAP_CHOWN)"
            return _write_bounded(fd, entry, max_bytes)
        finally:
            os.close(fd)
    try:
        st = os.fstat(path_fd)
        if stat.S_ISLNK(st.st_mode):
            return "not written: the alerts file is a symbolic link"
        if not stat.S_ISREG(st.st_mode):
            return f"not written: the alerts file is not a regular file (mode {stat.filemode(st.st_mode)})"
        if st.st_nlink != 1:
            return f"not written: the alerts file has {st.st_nlink} links"
        if st.st_uid not in (0, uid):
            return f"not written: the alerts file belongs to uid {st.st_uid}, not the owner"
        # Reopen the very inode looked at (through the fd, not the name: no race with a rename).
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(path_fd)
    try:
        again = os.fstat(fd)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(again.st_mode):
            return "not written: the alerts file changed while it was opened"
        return _write_bounded(fd, entry, max_bytes)
    finally:
        os.close(fd)


def _write_bounded(fd: int, entry: bytes, max_bytes: int) -> str:
    entry = entry[:max_bytes]
    if os.fstat(fd).st_size + len(entry) > max_bytes:
        os.ftruncate(fd, 0)  # O_APPEND writes go to the new end
        os.write(fd, f"--- earlier alerts dropped: the file reached {max_bytes} bytes ---\n\n".encode())
    view = memoryview(entry)
    while view:
        view = view[os.write(fd, view) :]
    return "written"
