"""Container operations for the executor: fresh inspect, a list by id, stop, remove, each verified.

Every call goes through the low-level Docker API client with an HTTP timeout, has its errors
classified once (:func:`controller.act.errors.classify`) and is retried by tenacity only when
the error is transient. Removal is confirmed by *observing* the container gone (a 404 on a new
inspect), never by trusting an exit code: DS01 once reported containers removed that were not
(notes §5, bug 7).

Called by the real executor. Decides nothing; the precondition logic lives in the executor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from controller.act.errors import GoneError, PermanentError, TransientError, classify, may_have_acted
from controller.observe.mounts import workspace_mounted, workspace_source
from controller.observe.resources import parse_limits
from controller.snapshot import ResourceLimits

DOCKER_ZERO_TIME_PREFIX = "0001-01-01"
# The engine's answer to a stop of a container that is not running.
NOT_MODIFIED = 304
# The engine's 409 to a removal of a container it is removing already, compared in lower case.
_REMOVAL_IN_PROGRESS = "is already in progress"
# The states a stop is waited out of: still running, or being removed by the engine (``--rm``).
_SETTLING = frozenset({"running", "restarting", "removing"})
_T = TypeVar("_T")

_retry_transient = retry(
    retry=retry_if_exception_type(TransientError),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.2, max=2.0),
    reraise=True,
)


def parse_docker_time(value: object) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds, as a UTC datetime (microseconds); None for 'never'."""
    if not isinstance(value, str) or not value or value.startswith(DOCKER_ZERO_TIME_PREFIX):
        return None
    text = value.rstrip("Z")
    offset = ""
    if len(value) > len(text):
        offset = "+00:00"
    else:  # an explicit offset: keep it apart from the fraction
        for sign in ("+", "-"):
            idx = text.rfind(sign)
            if idx > 10:
                text, offset = text[:idx], text[idx:]
                break
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6].ljust(6, '0')}"  # truncate nanoseconds; never round
    try:
        at = datetime.fromisoformat(text + offset)
    except ValueError:
        return None
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Inspected:
    """The fields of a fresh inspect the executor's preconditions read."""

    id: str
    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    pid: int | None
    # The host path mounted at /workspace (bind or volume): where a notice is left for an owner
    # who is not logged in (see controller.act.notify.append_alert_file).
    workspace: str | None = None
    limits: ResourceLimits | None = None
    # A host directory or volume is mounted at /workspace, whether or not its path shows (None: the
    # inspect lists no mounts): what the owner's notice says is kept.
    workspace_mounted: bool | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Inspected:
        state = data.get("State") or {}
        pid = state.get("Pid")
        host_config = data.get("HostConfig")
        return cls(
            id=str(data.get("Id", "")),
            name=str(data.get("Name", "")).lstrip("/"),
            status=str(state.get("Status", "")),
            started_at=parse_docker_time(state.get("StartedAt")),
            finished_at=parse_docker_time(state.get("FinishedAt")),
            pid=pid if isinstance(pid, int) and pid > 0 else None,
            workspace=workspace_source(data.get("Mounts")),
            limits=parse_limits(host_config) if isinstance(host_config, dict) else None,
            workspace_mounted=workspace_mounted(data.get("Mounts")),
        )


@dataclass(frozen=True)
class Listed:
    """One row of a container list (``docker ps -a``): what a re-check of other containers reads."""

    id: str
    name: str
    status: str  # created, running, paused, restarting, removing, exited, dead

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Listed:
        names = data.get("Names") or []
        first = names[0] if isinstance(names, list) and names else ""
        return cls(id=str(data.get("Id", "")), name=str(first).lstrip("/"), status=str(data.get("State", "")))


class DockerOps:
    """Verified container operations over ``docker.DockerClient`` (its ``.api`` low-level client).

    The client must be built with a ``timeout``: every request then has one, and ``stop``'s HTTP
    timeout is the client's plus the stop timeout (docker-py adds them), so the engine always
    answers before the request gives up.
    """

    def __init__(self, docker_client: Any, *, verify_timeout_s: float = 10.0) -> None:
        self._api = docker_client.api
        if getattr(self._api, "timeout", None) is None:
            raise ValueError("the Docker client needs a timeout (docker.DockerClient(timeout=...))")
        self._verify_timeout_s = verify_timeout_s

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        @_retry_transient
        def attempt() -> _T:
            try:
                return fn()
            except Exception as exc:
                raise classify(exc, what) from exc

        return attempt()

    def inspect(self, container_id: str) -> Inspected | None:
        """A fresh inspect; None when the container does not exist."""
        try:
            data = self._call(
                f"inspect container {container_id[:12]}", lambda: self._api.inspect_container(container_id)
            )
        except GoneError:
            return None
        return Inspected.from_api(data)

    def list_by_id(self, container_ids: Sequence[str]) -> dict[str, Listed]:
        """The containers of ``container_ids`` that exist now, by the id asked for: one list call
        filtered by id (``docker ps -a --filter id=...``). An id missing from the answer names no
        container. No ids: no call (an empty filter would list every container)."""
        wanted = list(dict.fromkeys(container_ids))
        if not wanted:
            return {}
        rows = self._call(
            f"list {len(wanted)} container(s) by id",
            lambda: self._api.containers(all=True, filters={"id": wanted}),
        )
        found: dict[str, Listed] = {}
        for row in rows or ():
            listed = Listed.from_api(row)
            # The engine's id filter matches a prefix (a pattern, in fact): only the id asked for,
            # or one it is a prefix of, is that container.
            for cid in wanted:
                if listed.id.startswith(cid):
                    found[cid] = listed
        return found

    def stop(self, container_id: str, *, timeout_s: int) -> bool:
        """``docker stop -t timeout_s``: True when this call stopped the container, False when it
        was not running (someone stopped it first); a container already gone raises :class:`GoneError`.

        The engine answers 304 Not Modified to the stop of a container that is not running, which
        docker-py's ``stop`` takes for success and does not tell: the request is posted as docker-py
        posts it, and its status read. A 304 or a 404 to a retry is this call's stop all the same
        when a request before it reached the engine (:func:`may_have_acted`): that one may have
        stopped the container (and the engine removed an ``--rm`` one) and then not been answered.
        """
        api = self._api
        what = f"stop container {container_id[:12]}"
        acted = False  # a request before this one may have been carried out

        def post() -> bool:
            nonlocal acted
            try:
                response = api._post(
                    api._url("/containers/{0}/stop", container_id),
                    params={"t": timeout_s},
                    timeout=api.timeout + timeout_s,  # as docker-py's: the engine answers before it
                )
                api._raise_for_status(response)
            except Exception as exc:
                err = classify(exc, what)
                if acted and isinstance(err, GoneError):
                    return True
                acted = acted or may_have_acted(exc)
                raise err from exc
            return response.status_code != NOT_MODIFIED or acted

        return self._call(what, post)

    def remove(self, container_id: str) -> None:
        """``docker rm`` without force (a running container is refused by the engine).

        A container already gone raises :class:`GoneError`, one being removed :class:`ConflictError`
        (someone else's removal), unless a request before reached the engine (:func:`may_have_acted`):
        then they are this call's removal, as the engine goes on deleting a large writable layer
        after the request stopped waiting. The caller verifies the container gone.
        """
        what = f"remove container {container_id[:12]}"
        acted = False  # a request before this one may have been carried out

        def delete() -> None:
            nonlocal acted
            try:
                self._api.remove_container(container_id, v=False, force=False)
            except Exception as exc:
                err = classify(exc, what)
                if acted and (isinstance(err, GoneError) or _REMOVAL_IN_PROGRESS in str(err).lower()):
                    return
                acted = acted or may_have_acted(exc)
                raise err from exc

        self._call(what, delete)

    def update(self, container_id: str, body: dict[str, int]) -> None:
        """``docker update`` of the resource limits in ``body`` (API names: ``Memory``, ``PidsLimit``...).

        The low-level ``update_container`` knows neither ``NanoCpus`` nor ``PidsLimit``, so the
        request is posted as the engine documents it (``POST /containers/{id}/update``).
        """
        api = self._api

        def post() -> None:
            response = api._post_json(api._url("/containers/{0}/update", container_id), data=body)
            api._result(response, True)

        self._call(f"update container {container_id[:12]}", post)

    def wait_gone(self, container_id: str) -> Inspected | None:
        """Inspect until the container is gone (404) or the verify timeout passes.

        Returns None when gone, else the last inspect (still present: the caller reports failure).
        """
        deadline = time.monotonic() + self._verify_timeout_s
        while True:
            seen = self.inspect(container_id)
            # "removing" is the engine still deleting; anything else will not go away by itself.
            if seen is None or seen.status != "removing" or time.monotonic() >= deadline:
                return seen
            time.sleep(0.1)

    def wait_not_running(self, container_id: str) -> Inspected | None:
        """Inspect after a stop until it is no longer running; None when it is gone.

        A container run with ``--rm`` is removed by the engine once it has stopped: its
        ``removing`` is waited out like ``running``, so such a stop is seen to have taken the
        container with it (None), not to have left it in place.
        """
        deadline = time.monotonic() + self._verify_timeout_s
        while True:
            seen = self.inspect(container_id)
            if seen is None or seen.status not in _SETTLING or time.monotonic() >= deadline:
                return seen
            time.sleep(0.1)


__all__ = [
    "DockerOps",
    "GoneError",
    "Inspected",
    "Listed",
    "PermanentError",
    "TransientError",
    "parse_docker_time",
]
