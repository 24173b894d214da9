"""The benchmark host: real containers on the Docker engine, created fast and always removed.

Owns every container the suite creates. Each one carries ``ds01.bench=<run id>``; :meth:`BenchHost.cleanup`
removes exactly those (and :func:`cleanup_all_runs` any left by an earlier, killed run), so the suite
never touches a container it did not create. Creation and removal go through the Docker SDK on a
thread pool because the engine handles concurrent requests far faster than one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.types import DeviceRequest

BENCH_LABEL = "ds01.bench"
IMAGE = "ds01-test/busybox:latest"
SLEEP_COMMAND = ["sleep", "100000"]
# Shares of the host beside the running containers, as the issue describes a realistic host.
EXITED_SHARE = 0.20
CREATED_SHARE = 0.05
# Every GPU_EVERY-th container asks for a GPU (full GPU or MIG device), the rest are CPU-only.
GPU_EVERY = 3
USERS = 25
CONTAINER_TYPES = ("devcontainer", "compose", "docker", "atomic")
# Busybox "sleep" needs almost nothing; a cap keeps 600 containers from mattering to the host.
MEM_LIMIT = "16m"
# No network: Docker 20.10's libnetwork can deadlock the whole engine when many bridge endpoints
# are created and deleted concurrently (moby/moby#42545, #46661, fixed only in later releases).
# The observer's cost does not depend on it (it reads /proc/<pid>/net/dev either way).
NETWORK_MODE = "none"
# Enough concurrency to keep the engine busy on 2 cores without queueing hundreds of requests.
DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class GpuDevice:
    """A device a container can be given with ``--gpus device=<uuid>``: a full GPU or a MIG device."""

    uuid: str
    parent_uuid: str
    parent_index: int
    is_mig: bool


@dataclass
class Member:
    """One container the suite created."""

    name: str
    kind: str  # running | exited | created
    seq: int
    gpu: GpuDevice | None
    id: str = ""
    pid: int | None = None


class Interrupted(Exception):
    """Creation was stopped because the run is being torn down."""


class BenchHost:
    """Grows a host to a given number of running containers (plus exited and created ones)."""

    def __init__(
        self,
        client: docker.DockerClient,
        run_id: str,
        devices: Sequence[GpuDevice],
        workers: int = DEFAULT_WORKERS,
        log: Callable[[str], None] = print,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.devices = list(devices)
        self.workers = workers
        self.log = log
        self.members: list[Member] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # --- what exists ---------------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[Member]:
        return [m for m in self.members if m.kind == kind]

    @property
    def running(self) -> list[Member]:
        return self.of_kind("running")

    def labels_for(self, seq: int, gpu: GpuDevice | None) -> dict[str, str]:
        labels = {
            BENCH_LABEL: self.run_id,
            "ds01.managed": "true",
            "ds01.user": f"benchuser{seq % USERS:02d}",
            "ds01.container_type": CONTAINER_TYPES[seq % len(CONTAINER_TYPES)],
        }
        if gpu is not None:
            labels["ds01.gpu.uuid"] = gpu.uuid
            labels["ds01.gpu.allocated"] = "true"
        return labels

    # --- growth --------------------------------------------------------------------------------
    def grow_to(self, running: int) -> float:
        """Create containers until the host has ``running`` running ones, 20 % more exited and 5 % more
        created. Returns the wall time it took."""
        import time

        started = time.monotonic()
        targets = {
            "running": running,
            "exited": round(running * EXITED_SHARE),
            "created": round(running * CREATED_SHARE),
        }
        todo: list[Member] = []
        for kind, target in targets.items():
            have = len(self.of_kind(kind))
            for _ in range(max(0, target - have)):
                seq = len(self.members) + len(todo)
                gpu = self.devices[(seq // GPU_EVERY) % len(self.devices)] if seq % GPU_EVERY == 0 else None
                name = f"bench-{self.run_id}-{kind[0]}{seq:04d}"
                todo.append(Member(name=name, kind=kind, seq=seq, gpu=gpu))
        self._run_all(self._create, todo)
        self.members.extend(todo)
        return time.monotonic() - started

    def _run_all(self, fn: Callable[[Member], None], items: Iterable[Member]) -> None:
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bench-docker")
        try:
            futures = [pool.submit(fn, m) for m in items]
            for f in futures:
                f.result()
        except BaseException:
            # Ctrl-C or a failed request: queued work stops at once; in-flight requests finish, so
            # the cleanup that follows finds every container that was created.
            self._stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _create(self, m: Member) -> None:
        if self._stop.is_set():
            raise Interrupted(m.name)
        kwargs: dict[str, Any] = {
            "name": m.name,
            "labels": self.labels_for(m.seq, m.gpu),
            "mem_limit": MEM_LIMIT,
            "network_mode": NETWORK_MODE,
            "detach": True,
        }
        if m.gpu is not None:
            kwargs["device_requests"] = [DeviceRequest(device_ids=[m.gpu.uuid], capabilities=[["gpu"]])]
        if m.kind == "created":
            c = self.client.containers.create(IMAGE, SLEEP_COMMAND, **kwargs)
            m.id = c.id
            return
        if m.kind == "exited":
            c = self.client.containers.run(IMAGE, ["true"], **kwargs)
            c.wait(timeout=60)
            m.id = c.id
            return
        c = self.client.containers.run(IMAGE, SLEEP_COMMAND, **kwargs)
        m.id = c.id
        # run() returns the container as created; its main PID is only known after the start.
        m.pid = int(self.client.api.inspect_container(c.id)["State"]["Pid"]) or None

    # --- changes for the "N containers changed" measurement -----------------------------------------
    def kill(self, members: Sequence[Member]) -> None:
        """Kill running members (they become exited); the observer must notice N changes."""

        def one(m: Member) -> None:
            self.client.api.kill(m.id)
            self.client.api.wait(m.id, timeout=60)
            m.pid = None

        self._run_all(one, members)

    def start(self, members: Sequence[Member]) -> None:
        """Start killed members again (new main PIDs)."""

        def one(m: Member) -> None:
            self.client.api.start(m.id)
            m.pid = int(self.client.api.inspect_container(m.id)["State"]["Pid"]) or None

        self._run_all(one, members)

    # --- teardown ------------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Remove every container of this run (by label, so stragglers of an interrupted creation too)."""
        self._stop.set()
        return remove_labelled(self.client, f"{BENCH_LABEL}={self.run_id}", self.workers)


def probe_engine(client: docker.DockerClient, run_id: str) -> float:
    """Create, start and remove one container; returns the seconds it took. Raises when the engine
    does not answer, so a wedged engine stops the run before hundreds of requests queue up."""
    import time

    started = time.monotonic()
    c = client.containers.run(
        IMAGE,
        ["true"],
        name=f"bench-{run_id}-probe",
        labels={BENCH_LABEL: run_id},
        network_mode=NETWORK_MODE,
        detach=True,
    )
    c.wait(timeout=30)
    c.remove(force=True)
    return time.monotonic() - started


class CleanupError(RuntimeError):
    """The engine failed a removal: the rest were not sent (how many were removed, how many left)."""

    def __init__(self, message: str, removed: int) -> None:
        super().__init__(message)
        self.removed = removed


def remove_labelled(client: docker.DockerClient, label_filter: str, workers: int = DEFAULT_WORKERS) -> int:
    """Force-remove all containers matching ``label_filter``; repeat once for any created meanwhile.

    The first removal the engine fails (a wedged engine answers each request only with the client's
    timeout) cancels the ones not sent yet and raises :class:`CleanupError`: hundreds of requests
    queued behind a wedged engine would each wait out that timeout, an hour and more in all."""
    removed = 0
    for _ in range(3):
        ids = [c["Id"] for c in client.api.containers(all=True, filters={"label": label_filter})]
        if not ids:
            break

        def rm(cid: str) -> None:
            try:
                client.api.remove_container(cid, force=True, v=True)
            except docker.errors.NotFound:
                pass  # already gone: what we wanted

        failed: Future[None] | None = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-rm") as pool:
            futures = {pool.submit(rm, cid): cid for cid in ids}
            for done in as_completed(futures):
                if done.exception() is not None:
                    failed = done
                    for f in futures:
                        f.cancel()  # those not sent yet; the ones in flight finish
                    break
        # The pool has drained here: every future sent is done.
        removed += sum(1 for f in futures if not f.cancelled() and f.exception() is None)
        if failed is not None:
            exc = failed.exception()
            raise CleanupError(
                f"the engine did not remove container {futures[failed][:12]} "
                f"({type(exc).__name__}: {exc}); {sum(f.cancelled() for f in futures)} removals not "
                "sent; remove the rest with `python -m bench --cleanup` once `docker info` answers",
                removed,
            ) from exc
    return removed


def cleanup_all_runs(client: docker.DockerClient) -> int:
    """Remove containers left by any earlier benchmark run (label ``ds01.bench`` with any value)."""
    return remove_labelled(client, BENCH_LABEL)
