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

Called by the real executor for WarnOwner actions. Never raises.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import select
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import NamedTuple, Protocol

import psutil
from loguru import logger

from controller.act.sanitize import clean

_TTY_NAME = re.compile(r"^(?:pts/[0-9]{1,6}|tty[A-Za-z0-9]{1,8})$")
_USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}\$?$")
MAX_LINES = 20
MAX_LINE_CHARS = 300


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


def format_notice(user: str, message: str, *, severity: str, at: datetime) -> bytes:
    """The bytes written to a terminal: a header line, the cleaned message, CRLF line ends."""
    lines = [clean(line, MAX_LINE_CHARS) for line in message.splitlines()[:MAX_LINES]]
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
        terminals = sorted({s.terminal for s in self._sessions() if s.user == user and s.terminal})
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
