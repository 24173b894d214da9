"""A small simulated GPU host for tests of the acting daemon without an engine.

``FakeHost`` holds containers (a state, a StartedAt, one GPU, cumulative CPU counters, busy or
idle) and a simulated wall clock. Two honest fakes read and change it:

- ``FakeHost.api`` stands for the executor's Docker seam (``client.api`` of docker-py): inspect,
  a list by id, stop and remove answer as the engine does: 404 (``docker.errors.NotFound``) for
  an unknown id, 409 for removing a running container, a stop that returns once the container has
  exited (304 Not Modified for one that was not running). A container whose main process ignores
  SIGTERM exits only when the stop's grace runs out: that takes ``term_ignored_s`` real seconds
  here (``stop_gate`` can hold it longer, like a hung engine).
- ``FakeHost.observer`` stands for :class:`controller.observe.host.HostObserver`: a snapshot of the
  running and exited containers with their activity read at the simulated time.

Every stop is logged (``stops``: name, real start and end), with the most stops seen in flight at once.
"""

from __future__ import annotations

import threading
import time
import types
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import docker.errors

from controller.snapshot import ContainerObs, Snapshot
from tests.fixtures import builders as b


def _docker_time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f000Z") if at is not None else "0001-01-01T00:00:00Z"


@dataclass
class FakeContainer:
    name: str
    id: str
    gpu: str
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None
    busy: bool = False
    ignores_term: bool = True
    counters: b.Counters = field(default_factory=b.Counters)
    read_at: datetime | None = None


@dataclass
class StopRecord:
    name: str
    started: float
    ended: float | None = None


class FakeApi:
    """The part of docker-py's ``APIClient`` the executor uses."""

    timeout = 5

    def __init__(self, host: FakeHost) -> None:
        self._host = host

    def _find(self, cid: str) -> FakeContainer:
        for c in self._host.containers.values():
            if c.id == cid or c.name == cid or c.id.startswith(cid):  # as the engine resolves them
                return c
        raise docker.errors.NotFound(f"No such container: {cid}")

    def inspect_container(self, cid: str) -> dict[str, Any]:
        with self._host.lock:
            c = self._find(cid)
            return {
                "Id": c.id,
                "Name": "/" + c.name,
                "State": {
                    "Status": c.status,
                    "StartedAt": _docker_time(c.started_at),
                    "FinishedAt": _docker_time(c.finished_at),
                    "Pid": 4242 if c.status == "running" else 0,
                },
            }

    def containers(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``docker ps`` (``-a`` with ``all``), filtered by ``id`` as the engine filters: an id
        matches a value that is itself or a pattern found in it (a prefix, here)."""
        ids = list((filters or {}).get("id") or [])
        with self._host.lock:
            return [
                {"Id": c.id, "Names": ["/" + c.name], "State": c.status}
                for c in self._host.containers.values()
                if (all or c.status == "running") and (not ids or any(c.id.startswith(i) for i in ids))
            ]

    def stop(self, cid: str, timeout: int) -> None:
        """docker-py's ``stop``: the engine's 304 (not running) is no error, and is not told."""
        self._stop(cid, timeout)

    def _url(self, pathfmt: str, *args: str) -> str:
        return pathfmt.format(*args)

    def _post(self, url: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        """``POST /containers/{id}/stop?t=``, answered as the engine answers it: 204 when the
        container was running (once it has exited), 304 (Not Modified) when it was not."""
        _, what, cid, op = url.split("/")
        assert (what, op) == ("containers", "stop"), url
        return types.SimpleNamespace(status_code=self._stop(cid, int(params["t"])))

    def _raise_for_status(self, response: Any) -> None:
        pass  # the host's answers are successes; its errors are raised as docker-py raises them

    def _stop(self, cid: str, timeout: int) -> int:
        host = self._host
        with host.lock:
            c = self._find(cid)
            if c.status != "running":
                return 304
            record = StopRecord(c.name, time.monotonic())
            host.stops.append(record)
            host.in_flight += 1
            host.max_in_flight = max(host.max_in_flight, host.in_flight)
            ignores = c.ignores_term and c.status == "running"
        try:
            if ignores:
                time.sleep(host.term_ignored_s)  # SIGTERM ignored: the engine waits out the grace
                host.stop_gate.wait()
            with host.lock:
                c.status = "exited"
                c.finished_at = host.now
                hook = host.on_stopped
            if hook is not None:
                hook(c, timeout)
        finally:
            with host.lock:
                host.in_flight -= 1
                record.ended = time.monotonic()
        return 204

    def remove_container(self, cid: str, v: bool = False, force: bool = False) -> None:
        with self._host.lock:
            c = self._find(cid)
            if c.status == "running" and not force:
                raise docker.errors.APIError(
                    "conflict", explanation=f"cannot remove container {c.name}: container is running"
                )
            del self._host.containers[c.name]


class FakeClient:
    def __init__(self, host: FakeHost) -> None:
        self.api = FakeApi(host)


class FakeObserver:
    """What :class:`~controller.loop.Controller` needs of the observer."""

    def __init__(self, host: FakeHost) -> None:
        self._host = host
        self.observations = 0

    def observe(self) -> Snapshot:
        self.observations += 1
        return self._host.snapshot()

    def export_inspect_cache(self) -> bytes:
        return b"{}"

    def close(self) -> None:
        pass


class FakeHost:
    def __init__(self, *, now: datetime = b.T0, term_ignored_s: float = 0.5, gpu_count: int = 8) -> None:
        self.now = now
        self.lock = threading.Lock()
        self.containers: dict[str, FakeContainer] = {}
        self.stops: list[StopRecord] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.term_ignored_s = term_ignored_s
        self.stop_gate = threading.Event()
        self.stop_gate.set()
        self.on_stopped: Any = None  # called with (container, stop timeout) after each stop
        self.gpus = [b.gpu(i) for i in range(gpu_count)]
        self.client = FakeClient(self)
        self.api = self.client.api
        self.observer = FakeObserver(self)

    def clock(self) -> datetime:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += timedelta(seconds=seconds)

    def add(self, name: str, *, started_ago_s: float = 7200.0, busy: bool = False) -> FakeContainer:
        gpu = self.gpus[len(self.containers)].uuid
        c = FakeContainer(
            name=name,
            id=b.cid(name),
            gpu=gpu,
            started_at=self.now - timedelta(seconds=started_ago_s),
            busy=busy,
        )
        self.containers[name] = c
        return c

    def stopped(self) -> list[str]:
        return [r.name for r in self.stops]

    def snapshot(self) -> Snapshot:
        with self.lock:
            now = self.now
            observed: list[ContainerObs] = []
            for c in self.containers.values():
                if c.status != "running":
                    observed.append(
                        b.exited(
                            c.name, id=c.id, gpus=[c.gpu], started_at=c.started_at, finished_at=c.finished_at
                        )
                    )
                    continue
                if c.read_at is not None:
                    c.counters.step((now - c.read_at).total_seconds(), cpu_pct=100.0 if c.busy else 0.1)
                c.read_at = now
                sig = c.counters.read(now, gpu_pct={c.gpu: 90.0 if c.busy else 0.0})
                observed.append(b.running(c.name, id=c.id, gpus=[c.gpu], started_at=c.started_at, sig=sig))
            return b.snapshot(observed_at=now, containers=observed, gpus=self.gpus)
