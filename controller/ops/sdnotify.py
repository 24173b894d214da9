"""A tiny systemd notify client (the ``sd_notify(3)`` datagram protocol), with no dependencies.

Owns: reading ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` and sending the state
datagrams (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``).
Called by: the daemon loop (:mod:`controller.loop`), which decides *when* to send each one: READY
once it can serve, WATCHDOG after a pass completes or while its actions progress within their
deadlines (so a hung pass stops the pings and lets systemd restart the service), STOPPING on
shutdown.
Must not: raise, block for long, or do anything when the process is not run by systemd. A broken
or missing socket is logged once and every later call is a quiet no-op returning ``False``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

from loguru import logger

ENV_NOTIFY_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"

# systemd shows STATUS= in `systemctl status`; it has no hard limit but a status line is one line.
MAX_STATUS_CHARS = 200
# A notify datagram is tiny; a blocked send (systemd's queue full) must never stall the loop.
SEND_TIMEOUT_S = 1.0


def _one_line(text: str, max_chars: int = MAX_STATUS_CHARS) -> str:
    """A newline in STATUS= would start a new assignment (e.g. a forged READY=1): flatten it."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(flat) > max_chars:
        flat = flat[: max_chars - 1] + "…"
    return flat


def _socket_address(raw: str) -> str | None:
    """The AF_UNIX address for a NOTIFY_SOCKET value: a path, or '@name' for the abstract namespace."""
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    return None  # e.g. "vsock:..." (newer systemd in VMs): not supported, treated as absent


class Notifier:
    """Sends service state to systemd when run under a ``Type=notify`` unit; otherwise does nothing.

    ``env`` and ``pid`` exist for tests; by default the process environment and ``os.getpid()``.
    Every method returns ``True`` when a datagram was sent, ``False`` otherwise, and never raises.
    """

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        environ = os.environ if env is None else env
        self._pid = os.getpid() if pid is None else pid
        self._raw_socket = environ.get(ENV_NOTIFY_SOCKET, "")
        self._address = _socket_address(self._raw_socket) if self._raw_socket else None
        self._watchdog_usec = environ.get(ENV_WATCHDOG_USEC, "")
        self._watchdog_pid = environ.get(ENV_WATCHDOG_PID, "")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._complained = False
        if self._raw_socket and self._address is None:
            self._complain(f"{ENV_NOTIFY_SOCKET}={self._raw_socket!r} is not a path or @abstract name")

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given (i.e. the process runs under a notify-type unit)."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """The service is up. Sent once, after start-up has finished."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self._send(fields)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status`` (e.g. the last pass summary)."""
        return self._send([f"STATUS={_one_line(text)}"])

    def watchdog(self) -> bool:
        """Proof of life: a pass completed, or its actions are progressing within their deadlines."""
        return self._send(["WATCHDOG=1"])

    def stopping(self) -> bool:
        """The service has begun shutting down."""
        return self._send(["STOPPING=1"])

    def reloading(self) -> bool:
        """The service is re-reading its configuration; send ``ready()`` again when done.

        ``MONOTONIC_USEC`` is required by ``Type=notify-reload`` (systemd 253+) and ignored by older
        versions, so it is always sent.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(["RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}"])

    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout systemd expects pings within, or None when no watchdog applies.

        None when ``WATCHDOG_USEC`` is unset, unparsable or not positive, or when ``WATCHDOG_PID`` names
        another process (the variables were inherited by a child of the real service).
        """
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != self._pid:
                    return None
            except ValueError:
                self._complain(f"{ENV_WATCHDOG_PID}={self._watchdog_pid!r} is not a process id")
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            self._complain(f"{ENV_WATCHDOG_USEC}={self._watchdog_usec!r} is not an integer")
            return None
        if usec <= 0:
            return None
        return usec / 1_000_000

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, fields: list[str]) -> bool:
        if self._address is None:
            return False
        payload = "\n".join(fields).encode("utf-8", errors="replace")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.settimeout(SEND_TIMEOUT_S)
                    self._sock = sock
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                # Keep trying on later calls (systemd may come back after a daemon-reexec), but say
                # it only once: the loop calls this every pass.
                self._complain_locked(f"cannot send {fields[0]} to {self._raw_socket}: {exc}")
                return False
        return True

    def _complain(self, message: str) -> None:
        with self._lock:
            self._complain_locked(message)

    def _complain_locked(self, message: str) -> None:
        if not self._complained:
            self._complained = True
            logger.warning("systemd notify: {} (further notify errors are not logged)", message)
