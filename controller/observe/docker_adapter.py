"""Docker engine adapter for observation: one list call per pass, inspect only what changed.

Owns the Docker side of a snapshot: :func:`make_client` (also used by the executor), a per-thread
count of API requests (:class:`CallCounter`), and :class:`DockerObserver`, which lists every
container (``GET /containers/json?all=1``, the low-level ``client.api.containers(all=True)``) and
keeps the parsed inspect result of each container in a cache keyed by id.

**When is a container inspected again?** The list result has no start time, pid or restart count,
so the cache must be invalidated by something the list *does* carry:

* a new id, or an id whose list ``State`` differs from the cached inspect's state;
* ``restarting`` and ``removing`` containers, every pass (they are transient and rare);
* a running or paused container whose ``Status`` (``Up 5 minutes``) gives an uptime shorter than
  the cached ``StartedAt`` implies: a restart between two passes leaves ``State=running`` but
  resets the uptime. Docker prints the uptime with units.HumanDuration, so the check uses the upper
  bound of the printed interval plus a small slack (:func:`status_upper_bound_s`);
* an exited container whose exit code or "... ago" finish time disagrees with the cache (it was
  started and exited again between passes);
* any entry older than ``max_age_s`` (a safety net for changes the text cannot reveal, such as a
  restart that happened days into a long uptime and was missed while no pass ran); each container
  gets a fixed fraction between half and all of it, so the refreshes are spread over passes;
* :meth:`DockerObserver.invalidate` (the daemon loop calls it on Docker events: ``start``, ``die``,
  ``restart``, ``rename``...), or a ``Status`` text this module cannot parse.

A container whose inspect fails is left out of that pass and the DOCKER domain is reported
unavailable (its configuration, GPUs included, is unknown); containers whose cache is still valid
are returned as usual. Bounded cost when the engine struggles: after ``MAX_TIMEOUTS_PER_PASS``
timeouts, or one connection failure, the remaining inspects wait for the next pass; containers that
failed before are inspected last and only after a back-off (10 s doubling to 5 min, cleared by
:meth:`DockerObserver.invalidate`), so one wedged container (seen on dockerd 20.10 after a shim
died: every inspect of it hangs) neither starves the others nor costs a timeout every pass.

**Runtimes.** Whether ``NVIDIA_VISIBLE_DEVICES`` grants GPUs depends on the container's runtime,
and a runtime other than ``nvidia`` or runc is judged by the engine's configuration (``docker info``
``Runtimes``: name -> binary). That table is read only when a container needs it (it sets the
variable under such a runtime), then kept for ``max_age_s``; a failed read is retried after
``RUNTIMES_RETRY_S`` and, meanwhile, :func:`controller.observe.gpu_refs.is_nvidia_runtime` falls
back on the runtime's name. When a re-read table differs (or first arrives after a failed read),
every cached inspect is dropped.

Names come from the list result every pass (``docker rename`` needs no inspect); labels, image,
``HostConfig`` and ``Config.Env`` are immutable for a container's life, except the resource limits
``docker update`` changes: its ``update`` event invalidates the entry (the daemon loop), and the
executor re-reads the limits fresh before and after its own update.

Errors are classified here once: the engine unreachable, or a request that times out, becomes an
error string for the DOCKER domain (no exception escapes :meth:`DockerObserver.observe`); a
container removed between list and inspect is simply gone. Every request has the client's timeout.
Must not create, stop or remove anything.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import docker.errors
import requests

from controller.observe.gpu_refs import (
    EngineRuntimes,
    RawGpuRefs,
    engine_runtimes,
    extract_gpu_refs,
    needs_engine_runtimes,
)
from controller.observe.mounts import workspace_mounted
from controller.observe.resources import parse_limits
from controller.snapshot import CREATED_UNKNOWN, DOCKER_ZERO_TIME, ContainerId, ContainerState, ResourceLimits

STATUS_SLACK_S = 1.0  # the engine formats Status a moment before we read the clock
# After this many inspect timeouts in one pass the rest wait for the next pass.
MAX_TIMEOUTS_PER_PASS = 2
# Concurrent inspects on a cold pass; the Docker SDK's connection pool holds 10.
INSPECT_PARALLELISM = 8
# A container whose inspect keeps failing is retried after 10 s, 20 s, 40 s ... at most 5 min.
RETRY_BASE_S = 10.0
RETRY_MAX_S = 300.0
DEFAULT_MAX_AGE_S = 900.0
# After a failed `docker info`, the runtime table is asked for again this much later.
RUNTIMES_RETRY_S = 60.0

_SECOND = 1.0
_MINUTE = 60.0
_HOUR = 3600.0
_DAY = 86400.0
_UNIT_S = {
    "second": _SECOND,
    "minute": _MINUTE,
    "hour": _HOUR,
    "day": _DAY,
    "week": 7 * _DAY,
    "month": 30 * _DAY,
    "year": 365 * _DAY,
}
_DURATION = re.compile(r"(?:(?P<n>\d+) (?P<unit>second|minute|hour|day|week|month|year)s?|(?P<word>.+))\Z")
_UP = re.compile(r"Up (?P<d>.+?)(?: \((?:Paused|healthy|unhealthy|health: starting)\))?\Z")
_EXITED = re.compile(r"Exited \((?P<code>-?\d+)\) (?P<d>.+) ago\Z")


def make_client(base_url: str | None, timeout_s: float) -> Any:
    """A ``docker.DockerClient``; ``base_url=None`` reads DOCKER_HOST etc. from the environment.

    The API version is negotiated with the engine (one ``/version`` request), so it works with old
    and new engines alike. Raises ``docker.errors.DockerException`` when the engine cannot be reached.
    """
    if base_url is None:
        client = docker.from_env(timeout=timeout_s)
    else:
        client = docker.DockerClient(base_url=base_url, timeout=timeout_s)
    # requests would look for proxy settings and .netrc on every request: ~20 % of an inspect.
    client.api.trust_env = False
    return client


class CallCounter:
    """Counts the HTTP requests a Docker client sends, per thread (the events stream runs elsewhere)."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def count(self) -> int:
        return int(getattr(self._local, "count", 0))

    def add(self, n: int = 1) -> None:
        self._local.count = self.count + n

    def install(self, client: Any) -> None:
        api = client.api
        original = api.send

        def counting_send(request: Any, **kwargs: Any) -> Any:
            # Counted before sending: a request that times out still cost a round trip.
            self.add()
            return original(request, **kwargs)

        # APIClient is a requests.Session whose request() calls self.send(); every call passes here.
        api.send = counting_send


@dataclass(frozen=True, slots=True)
class DockerContainer:
    """One container: list fields (fresh every pass) and parsed inspect fields (cached)."""

    id: ContainerId
    name: str
    image: str
    labels: Mapping[str, str]
    state: ContainerState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    pid: int | None
    restart_count: int
    exit_code: int | None
    cgroup_parent: str
    network_mode: str
    gpu_refs: RawGpuRefs
    limits: ResourceLimits | None = None
    workspace_mounted: bool | None = None


@dataclass(slots=True)
class _Cached:
    container: DockerContainer
    inspected_at: datetime


@dataclass(slots=True)
class _Failure:
    count: int
    retry_at: datetime


@dataclass(frozen=True, slots=True)
class DockerObservation:
    containers: tuple[DockerContainer, ...]
    error: str | None
    inspected: tuple[ContainerId, ...] = field(default=())


def parse_docker_time(value: object) -> datetime | None:
    """Docker's RFC 3339 time; the zero time (``0001-01-01T00:00:00Z``) and junk mean None."""
    if not isinstance(value, str) or not value or value == DOCKER_ZERO_TIME or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def duration_upper_bound_s(text: str) -> float | None:
    """Upper bound of a units.HumanDuration text ("5 minutes", "About an hour"); None if unknown."""
    match = _DURATION.match(text)
    if match is None:
        return None
    word = match.group("word")
    if word is not None:
        return {"Less than a second": 1.0, "About a minute": 2 * _MINUTE, "About an hour": 1.5 * _HOUR}.get(
            word
        )
    n = int(match.group("n"))
    unit = _UNIT_S[match.group("unit")]
    if unit == _HOUR:
        return (n + 0.5) * _HOUR  # hours are rounded, not truncated
    if unit >= _DAY:
        return (n + 1) * unit + 0.5 * _HOUR  # computed from rounded hours
    return (n + 1) * unit


def status_upper_bound_s(status: str) -> tuple[str, float, int | None] | None:
    """("up", bound, None) for "Up ..." or ("exited", bound, code); None when not parseable."""
    up = _UP.match(status)
    if up is not None:
        bound = duration_upper_bound_s(up.group("d"))
        return None if bound is None else ("up", bound, None)
    exited = _EXITED.match(status)
    if exited is not None:
        bound = duration_upper_bound_s(exited.group("d"))
        return None if bound is None else ("exited", bound, int(exited.group("code")))
    return None


def cache_still_valid(cached: DockerContainer, state: str, status: str, now: datetime) -> bool:
    """Whether the list entry (``State``, ``Status``) is consistent with the cached inspect."""
    if state != cached.state.value:
        return False
    if cached.state in {ContainerState.CREATED, ContainerState.DEAD}:
        return True  # nothing observable changes until the state does
    if cached.state in {ContainerState.RESTARTING, ContainerState.REMOVING}:
        return False
    parsed = status_upper_bound_s(status)
    if parsed is None:
        return False
    kind, bound_s, code = parsed
    if cached.state in {ContainerState.RUNNING, ContainerState.PAUSED}:
        if kind != "up" or cached.started_at is None:
            return False
        return (now - cached.started_at).total_seconds() <= bound_s + STATUS_SLACK_S
    if cached.state == ContainerState.EXITED:
        if kind != "exited" or cached.finished_at is None or code != cached.exit_code:
            return False
        return (now - cached.finished_at).total_seconds() <= bound_s + STATUS_SLACK_S
    return False


class DockerObserver:
    """Lists containers and keeps their inspect results; owns no client lifecycle beyond its own."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        max_age_s: float = DEFAULT_MAX_AGE_S,
        counter: CallCounter | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._max_age = timedelta(seconds=max_age_s)
        self._cache: dict[str, _Cached] = {}
        self._failures: dict[str, _Failure] = {}
        # Ids invalidated while a pass runs: its (possibly older) inspect result is not cached.
        self._dirty: set[str] = set()
        self._dirty_all = False
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self.counter = counter or CallCounter()
        # The engine's runtime table, when read, and when it may be read again.
        self._runtimes: EngineRuntimes | None = None
        self._runtimes_due: datetime | None = None

    @property
    def client(self) -> Any:
        """The Docker client, created on first use; raises DockerException when unreachable."""
        with self._client_lock:  # the events thread and the pass may both ask first
            if self._client is None:
                client = self._client_factory()
                # The factory negotiated the API version: one request this thread made.
                self.counter.add()
                self.counter.install(client)
                self._client = client
            return self._client

    def invalidate(self, container_id: str | None = None) -> None:
        """Forget one container's inspect (an id or id prefix), or every one (None)."""
        with self._lock:
            if container_id is None:
                self._cache.clear()
                self._failures.clear()
                self._dirty_all = True
                return
            self._dirty.add(container_id)
            for key in [k for k in self._cache if k.startswith(container_id)]:
                del self._cache[key]
            for key in [k for k in self._failures if k.startswith(container_id)]:
                del self._failures[key]

    def export_cache(self) -> bytes:
        """The inspect cache, serialised: the daemon saves it so a cold ``ds01ctl`` need not re-inspect."""
        with self._lock:
            entries = [(c.container, c.inspected_at) for c in self._cache.values()]
        return pickle.dumps((CACHE_FORMAT, entries), protocol=pickle.HIGHEST_PROTOCOL)

    def import_cache(self, data: bytes) -> int:
        """Seed the cache from :meth:`export_cache` output; returns how many entries were taken.

        Entries are still validated against the next list call like any cached inspect (state,
        status, age), so a stale file costs re-inspects, never wrong data. Only the types this
        module writes can be loaded (an allow-listed unpickler), and callers read the file only
        from a directory they trust.
        """
        try:
            fmt, entries = _CacheUnpickler(io.BytesIO(data)).load()
        except Exception:  # an unreadable or foreign file: start cold, as without it
            return 0
        if fmt != CACHE_FORMAT or not isinstance(entries, list):
            return 0
        taken = 0
        with self._lock:
            for entry in entries:
                if (
                    isinstance(entry, tuple)
                    and len(entry) == 2
                    and isinstance(entry[0], DockerContainer)
                    and isinstance(entry[1], datetime)
                ):
                    self._cache.setdefault(entry[0].id, _Cached(entry[0], entry[1]))
                    taken += 1
        return taken

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                # Closing a broken connection is not an error worth raising.
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None

    def observe(self) -> DockerObservation:
        with self._lock:
            self._dirty.clear()
            self._dirty_all = False
        try:
            client = self.client
            listed = client.api.containers(all=True)
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            return DockerObservation(containers=(), error=_describe(exc, "list containers"))
        listed_at = datetime.now(UTC)
        if not isinstance(listed, list):
            return DockerObservation(
                containers=(), error="list containers: unexpected answer from the engine"
            )

        by_id: dict[str, DockerContainer] = {}
        order: list[str] = []
        pending: list[tuple[str, Mapping[str, Any]]] = []
        for entry in listed:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("Id"), str):
                continue
            cid = entry["Id"]
            order.append(cid)
            state, status = str(entry.get("State", "")), str(entry.get("Status", ""))
            with self._lock:
                cached = self._cache.get(cid)
            if (
                cached is not None
                and listed_at - cached.inspected_at <= self._max_age * _spread(cid)
                and cache_still_valid(cached.container, state, status, listed_at)
            ):
                by_id[cid] = _with_list_fields(cached.container, entry)
            else:
                pending.append((cid, entry))

        inspected, errors = self._inspect_all(client, pending, by_id, listed_at)
        seen = set(order)
        with self._lock:
            for gone in [k for k in self._cache if k not in seen]:
                del self._cache[gone]
            for gone in [k for k in self._failures if k not in seen]:
                del self._failures[gone]
        return DockerObservation(
            containers=tuple(by_id[cid] for cid in order if cid in by_id),
            error="; ".join(errors) if errors else None,
            inspected=tuple(inspected),
        )

    def engine_runtimes(self, client: Any) -> EngineRuntimes | None:
        """The engine's runtime table (``docker info``), read at most once per ``max_age_s``.

        None while it cannot be read. A table that changed invalidates every cached inspect: the
        GPU references of a container under a re-configured runtime may differ.
        """
        now = datetime.now(UTC)
        if self._runtimes_due is not None and now < self._runtimes_due:
            return self._runtimes
        try:
            info = client.api.info()
        except (docker.errors.DockerException, requests.RequestException, OSError):
            self._runtimes_due = now + timedelta(seconds=RUNTIMES_RETRY_S)
            return self._runtimes
        if not isinstance(info, Mapping):
            self._runtimes_due = now + timedelta(seconds=RUNTIMES_RETRY_S)
            return self._runtimes
        table = engine_runtimes(info)
        # Containers parsed with another table, or without one after a failed read, are re-read.
        if self._runtimes_due is not None and table != self._runtimes:
            with self._lock:
                self._cache.clear()
        self._runtimes = table
        self._runtimes_due = now + self._max_age
        return table

    def _inspect_all(
        self,
        client: Any,
        pending: list[tuple[str, Mapping[str, Any]]],
        out: dict[str, DockerContainer],
        now: datetime,
    ) -> tuple[list[ContainerId], list[str]]:
        inspected: list[ContainerId] = []
        errors: list[str] = []
        # Containers whose inspect failed before go last, and wait out a back-off: one wedged
        # container (its lock held inside the engine, every inspect of it hanging) must neither
        # starve the others nor cost a timeout on every pass.
        with self._lock:  # invalidate() runs on the events thread
            failures = dict(self._failures)
        pending.sort(key=lambda item: failures[item[0]].count if item[0] in failures else 0)
        ready: list[tuple[str, Mapping[str, Any], _Failure | None]] = []
        for cid, entry in pending:
            failure = failures.get(cid)
            if failure is not None and now < failure.retry_at:
                errors.append(
                    f"inspect {cid[:12]}: failed {failure.count} times; next try after "
                    f"{failure.retry_at:%H:%M:%S}"
                )
                continue
            ready.append((cid, entry, failure))
        if not ready:
            return inspected, errors
        # A cold pass (start-up, ds01ctl) inspects every container: do it a few at a time, so
        # 500 containers cost ~500/INSPECT_PARALLELISM round trips of wall time, not 500.
        workers = min(INSPECT_PARALLELISM, len(ready))
        timeouts = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inspect") as pool:
            for start in range(0, len(ready), workers):
                if timeouts >= MAX_TIMEOUTS_PER_PASS:
                    errors.append(
                        f"{len(ready) - start} containers not inspected: the engine stopped answering"
                    )
                    break
                chunk = ready[start : start + workers]
                results = list(pool.map(lambda item: _inspect_one(client, item[0]), chunk))
                # Requests made on pool threads are counted here, on the observing thread.
                self.counter.add(len(chunk))
                runtimes = self._runtimes
                if any(isinstance(raw, Mapping) and needs_engine_runtimes(raw) for raw, _ in results):
                    runtimes = self.engine_runtimes(client)
                engine_gone = False
                for (cid, entry, failure), (raw, exc) in zip(chunk, results, strict=True):
                    if exc is None and raw is None:
                        continue  # removed between list and inspect: it is gone
                    if isinstance(exc, requests.ConnectionError):
                        # The engine went away: every further request would fail the same way.
                        errors.append(_describe(exc, f"inspect {cid[:12]}"))
                        engine_gone = True
                        continue
                    if exc is not None:
                        if isinstance(exc, requests.Timeout):
                            timeouts += 1
                        count = failure.count + 1 if failure is not None else 1
                        delay_s = min(RETRY_BASE_S * 2 ** (count - 1), RETRY_MAX_S)
                        with self._lock:
                            self._failures[cid] = _Failure(
                                count, datetime.now(UTC) + timedelta(seconds=delay_s)
                            )
                        errors.append(_describe(exc, f"inspect {cid[:12]}"))
                        continue
                    parsed = parse_inspect(raw, entry, runtimes)
                    if parsed is None:
                        errors.append(f"inspect {cid[:12]}: unexpected answer from the engine")
                        continue
                    inspected.append(parsed.id)
                    with self._lock:
                        self._failures.pop(cid, None)
                        if not (self._dirty_all or any(cid.startswith(d) for d in self._dirty)):
                            self._cache[cid] = _Cached(parsed, datetime.now(UTC))
                    out[cid] = parsed
                if engine_gone:
                    left = len(ready) - start - len(chunk)
                    errors.append(f"{left} containers not inspected: the engine went away")
                    break
        return inspected, errors


# /2: with the resource limits; /3: a device request the nvidia driver serves by its capabilities
# holds GPUs (an entry parsed before would show such a container GPU-less); /4: with whether
# /workspace is mounted (an entry parsed before would say "not known"); /5: a volume there whose path
# does not show is mounted (an entry parsed before would say it is not)
CACHE_FORMAT = "ds01-inspect-cache/5"
_CACHE_ALLOWED = {
    ("controller.observe.docker_adapter", "DockerContainer"),
    ("controller.observe.gpu_refs", "RawGpuRefs"),
    ("controller.observe.gpu_refs", "RawGpuRef"),
    ("controller.snapshot", "ContainerState"),
    ("controller.snapshot", "GpuRefSource"),
    ("controller.snapshot", "ResourceLimits"),
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("builtins", "frozenset"),
    ("builtins", "set"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


class _CacheUnpickler(pickle.Unpickler):
    """Loads only the value types of an inspect cache; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CACHE_ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of an inspect cache")
        return super().find_class(module, name)


def _inspect_one(client: Any, cid: str) -> tuple[object, BaseException | None]:
    """One inspect: (result, None), (None, None) when the container is gone, or (None, error)."""
    try:
        return client.api.inspect_container(cid), None
    except docker.errors.NotFound:
        return None, None
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        return None, exc


def parse_inspect(
    raw: object, entry: Mapping[str, Any], runtimes: EngineRuntimes | None = None
) -> DockerContainer | None:
    """Build a :class:`DockerContainer` from an inspect result plus its list entry.

    ``runtimes``: the engine's runtime table (None: not known), for ``NVIDIA_VISIBLE_DEVICES``.
    """
    if not isinstance(raw, Mapping) or not isinstance(raw.get("Id"), str):
        return None
    state_obj = _mapping(raw.get("State"))
    host_config = _mapping(raw.get("HostConfig"))
    try:
        state = ContainerState(str(state_obj.get("Status", entry.get("State", ""))))
    except ValueError:
        return None
    labels = _labels(entry.get("Labels"))
    created = parse_docker_time(raw.get("Created"))
    if created is None:
        epoch = entry.get("Created")
        created = datetime.fromtimestamp(epoch, tz=UTC) if isinstance(epoch, int) else CREATED_UNKNOWN
    pid_value = state_obj.get("Pid")
    pid = pid_value if isinstance(pid_value, int) and pid_value > 0 else None
    if state not in {ContainerState.RUNNING, ContainerState.PAUSED}:
        pid = None
    finished = parse_docker_time(state_obj.get("FinishedAt"))
    exit_value = state_obj.get("ExitCode")
    exit_code = (
        exit_value
        if isinstance(exit_value, int)
        and state in {ContainerState.EXITED, ContainerState.DEAD, ContainerState.RESTARTING}
        else None
    )
    restart = raw.get("RestartCount")
    return DockerContainer(
        id=ContainerId(raw["Id"]),
        name=_name(entry, raw),
        image=str(entry.get("Image") or _mapping(raw.get("Config")).get("Image") or ""),
        labels=labels,
        state=state,
        created_at=created,
        started_at=parse_docker_time(state_obj.get("StartedAt")),
        finished_at=finished,
        pid=pid,
        restart_count=restart if isinstance(restart, int) else 0,
        exit_code=exit_code,
        cgroup_parent=str(host_config.get("CgroupParent") or ""),
        network_mode=str(host_config.get("NetworkMode") or ""),
        gpu_refs=extract_gpu_refs(raw, labels, runtimes),
        limits=parse_limits(host_config),
        workspace_mounted=workspace_mounted(raw.get("Mounts")),
    )


def _spread(cid: str) -> float:
    """A fixed factor in [0.5, 1.0) per container, so cache refreshes do not all fall on one pass."""
    try:
        return 0.5 + (int(cid[:8], 16) % 1000) / 2000
    except ValueError:
        return 1.0


def _with_list_fields(cached: DockerContainer, entry: Mapping[str, Any]) -> DockerContainer:
    name = _name(entry, None)
    if name and name != cached.name:
        return replace(cached, name=name)
    return cached


def _name(entry: Mapping[str, Any], raw: Mapping[str, Any] | None) -> str:
    names = entry.get("Names")
    if isinstance(names, list):
        stripped = [n[1:] if n.startswith("/") else n for n in names if isinstance(n, str)]
        # Legacy links add names like "/other/alias"; the container's own name has no slash.
        own = [n for n in stripped if "/" not in n]
        if own:
            return own[0]
        if stripped:
            return stripped[0]
    if raw is not None and isinstance(raw.get("Name"), str):
        return str(raw["Name"]).lstrip("/")
    return ""


def _labels(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _describe(exc: BaseException, what: str) -> str:
    text = str(exc) or type(exc).__name__
    return f"{what}: {type(exc).__name__}: {text[:500]}"


def inspect_cache_readable(data: bytes) -> bool:
    """Whether ``data`` is an inspect cache this module wrote (the daemon's start-up check)."""
    try:
        fmt, entries = _CacheUnpickler(io.BytesIO(data)).load()
    except Exception:  # truncated, foreign or corrupt: not readable
        return False
    return fmt == CACHE_FORMAT and isinstance(entries, list)
