"""The act layer's exception tree, and the one place Docker and OS errors are classified.

Every adapter in :mod:`controller.act` turns what the Docker SDK, ``requests`` or the OS raise
into one of these, once, at the boundary. Retries (tenacity) look only at the class:
:class:`TransientError` may succeed if tried again soon (connection refused, a timeout, a 5xx
from the engine); :class:`PermanentError` will not (bad request, permission denied). A target
that no longer exists is :class:`GoneError`, which callers of idempotent actions turn into
"already done".

Must not be imported by the planner (it is an adapter concern).
"""

from __future__ import annotations

import errno

import docker.errors
import requests.exceptions


class ActError(Exception):
    """Base of every error the act layer raises."""


class TransientError(ActError):
    """Worth retrying: the engine or the OS may answer differently in a moment."""


class PermanentError(ActError):
    """Retrying will not help; record the failure and back off."""


class GoneError(PermanentError):
    """The target (container, process) does not exist any more."""


class ConflictError(PermanentError):
    """The engine refused because of the target's current state (HTTP 409)."""


_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET, errno.EBUSY}
)


def classify(exc: BaseException, what: str) -> ActError:
    """Turn a Docker SDK, ``requests`` or OS error into the act layer's own error.

    ``what`` names the operation and target ("stop container web-1"); it starts the message.
    """
    if isinstance(exc, ActError):
        return exc
    if isinstance(exc, docker.errors.NotFound):
        return GoneError(f"{what}: not found ({_explain(exc)})")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code
        if status is not None and status >= 500:
            # Docker answers 500 for daemon-side trouble (containerd busy, a hung shim).
            return TransientError(f"{what}: engine error {status} ({_explain(exc)})")
        if status == 409:
            return ConflictError(f"{what}: conflict ({_explain(exc)})")
        return PermanentError(f"{what}: refused with {status} ({_explain(exc)})")
    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        return TransientError(f"{what}: engine unreachable or slow ({type(exc).__name__})")
    if isinstance(exc, docker.errors.DockerException):
        return PermanentError(f"{what}: {_explain(exc)}")
    if isinstance(exc, TimeoutError):
        return TransientError(f"{what}: timed out")
    if isinstance(exc, ProcessLookupError | FileNotFoundError):
        return GoneError(f"{what}: {exc.strerror or 'no such process or file'}")
    if isinstance(exc, OSError):
        if exc.errno in _TRANSIENT_ERRNOS:
            return TransientError(f"{what}: {exc.strerror or exc}")
        return PermanentError(f"{what}: {exc.strerror or exc}")
    return PermanentError(f"{what}: unexpected {type(exc).__name__}: {exc}")


def may_have_acted(exc: BaseException) -> bool:
    """Whether the engine may have carried out a request that failed with ``exc``: it answered with
    an engine error (5xx), or did not answer in time. A connection that could not be made (refused,
    a connect timeout, one the engine had closed) carried nothing."""
    if isinstance(exc, requests.exceptions.ConnectionError):  # a ConnectTimeout is one too
        return False
    if isinstance(exc, docker.errors.APIError):
        return exc.status_code is not None and exc.status_code >= 500
    return isinstance(exc, requests.exceptions.Timeout | TimeoutError)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        text = exc.explanation
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if text:
            return str(text)
    return str(exc)
