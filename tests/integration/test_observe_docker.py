"""The observer against the real Docker engine: states, GPU routes, classification, API cost, outages.

GPU references are resolved against the stand-in NVML (``fake_nvml``) read by the real
``NvmlObserver``; containers are real, created with the ``make_container`` fixtures.
"""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.types
import pytest

from controller import labels as L
from controller.observe import HostObserver, ObserveConfig, observe_host
from controller.observe.gpu_refs import TRUNCATED
from controller.observe.nvml import NvmlObserver
from controller.snapshot import (
    ContainerObs,
    ContainerState,
    Domain,
    GpuRefSource,
    OwnerRule,
    Snapshot,
    TypeRule,
)
from crd_like_specs.vocabulary import ContainerType
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import FakeNvml, NoGpus, gpu_uuid, mig_uuid

pytestmark = pytest.mark.docker


def config(tmp_path: Path, **overrides: Any) -> ObserveConfig:
    return ObserveConfig(ledger_path=tmp_path / "ledger.json", **overrides)


def find(snapshot: Snapshot, container: Any) -> ContainerObs:
    found = snapshot.container(container.id)
    assert found is not None, f"container {container.name} missing from the snapshot"
    return found


def gpus_request(ids: list[str] | None = None, count: int = 0) -> list[Any]:
    return [docker.types.DeviceRequest(driver="nvidia", count=count, device_ids=ids, capabilities=[["gpu"]])]


def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


# --- one shared set of containers (starting one is slow; the tests below only read) -----------------


@pytest.fixture(scope="module")
def world(module_containers: ContainerFactory) -> dict[str, Any]:
    make = module_containers
    tid = make.test_id
    g0, g1, m10, m11 = gpu_uuid(0), gpu_uuid(1), mig_uuid(1, 0), mig_uuid(1, 1)
    w: dict[str, Any] = {
        "created": make(start=False, cgroup_parent="/ds01.slice"),
        # Running, as uid 65534 with no other ownership evidence, holding GPU 1 through --gpus:
        # the no-op hook stands in for the NVIDIA toolkit, so it really starts here.
        "running": make(user="65534", network_mode="none", device_requests=gpus_request([g1])),
        "paused": make(network_mode="none"),
        "exited": make("sh -c 'exit 3'", network_mode="none"),
        # GPU routes (created only: the inspect data is what matters).
        "gpu_uuid": make(start=False, device_requests=gpus_request([g0])),
        "gpu_all": make(start=False, device_requests=gpus_request(count=-1)),
        "gpu_index": make(start=False, device_requests=gpus_request(["0", "1"])),
        "gpu_slot": make(start=False, device_requests=gpus_request(["1:1", m10])),
        "gpu_count": make(start=False, device_requests=gpus_request(count=2)),
        "gpu_mapped": make(start=False, devices=["/dev/null:/dev/nvidia1", "/dev/null:/dev/nvidiactl"]),
        "gpu_labels": make(start=False, labels={
            L.DS01_GPU_UUID: g0, L.DS01_GPU_UUIDS: f"{m10},{m11}",
            L.DS01_GPU_SLOT: "1.1", L.DS01_GPU_SLOTS: "0,1:0",
        }),
        "gpu_unknown": make(start=False, labels={L.DS01_GPU_UUIDS: "GPU-not-here,7,banana"}),
        "gpu_inert_env": make(start=False, environment={"NVIDIA_VISIBLE_DEVICES": "0"}),
        # Ownership and type rules.
        "own_labels": make(start=False, labels={
            L.DS01_USER: "alice", L.DS01_CONTAINER_TYPE: "compose", L.DS01_MANAGED: "true",
        }),
        "own_aime": make(start=False, labels={
            L.AIME_USER: "bob", L.DS01_INTERFACE: "vscode", L.AIME_DS01_MANAGED: "TRUE",
        }),
        "own_devfolder": make(start=False, labels={
            L.DEVCONTAINER_LOCAL_FOLDER: "/home/carol/proj", L.DS01_PROTECTED: "true",
        }),
        "own_compose": make(start=False, labels={
            L.COMPOSE_WORKING_DIR: "/home/dave/app", L.COMPOSE_PROJECT: "app", L.DS01_MONITORING: "True",
        }),
        "own_aime_name": make(start=False, name=f"proj-{tid}._.1"),
        "own_vsc": make(start=False, name=f"vsc-{tid}"),
    }  # fmt: skip
    w["paused"].pause()
    w["exited"].wait(timeout=30)
    return w


# --- every state ------------------------------------------------------------------------------------


def test_every_container_state(
    world: dict[str, Any],
    module_containers: ContainerFactory,
    make_container: ContainerFactory,
    tmp_path: Path,
) -> None:
    # Its own: a container in a restart loop is re-inspected every pass, which other tests would see.
    restarting = make_container("sh -c 'exit 1'", network_mode="none", restart_policy={"Name": "always"})
    wait_for(lambda: (restarting.reload(), restarting.attrs["RestartCount"])[1] >= 1, timeout_s=30)
    with HostObserver(config(tmp_path), nvml=NoGpus()) as observer:
        snap = observer.observe()
    assert snap.domain_ok(Domain.DOCKER), snap.domain_error(Domain.DOCKER)

    c = find(snap, world["created"])
    assert (c.state, c.started_at, c.finished_at, c.pid, c.exit_code) == (
        ContainerState.CREATED,
        None,
        None,
        None,
        None,
    )
    assert c.name == world["created"].name and c.image == "ds01-test/busybox:latest"
    assert c.labels[L.DS01_TEST] == module_containers.test_id
    assert c.cgroup_parent == "/ds01.slice"
    assert abs((c.created_at - datetime.now(UTC)).total_seconds()) < 600

    r = find(snap, world["running"])
    assert r.state == ContainerState.RUNNING and r.finished_at is None and r.started_at is not None
    assert r.pid == world["running"].attrs["State"]["Pid"] and r.pid > 0
    assert r.signals is not None and r.restart_count == 0

    p = find(snap, world["paused"])
    assert p.state == ContainerState.PAUSED and p.pid is not None and p.signals is None

    e = find(snap, world["exited"])
    # (Docker may record FinishedAt a few ms before StartedAt for an instant exit: no ordering check.)
    assert (e.state, e.exit_code, e.pid) == (ContainerState.EXITED, 3, None)
    assert e.started_at is not None and e.finished_at is not None

    rs = find(snap, restarting)
    assert rs.restart_count >= 1
    assert rs.state in {ContainerState.RESTARTING, ContainerState.RUNNING, ContainerState.EXITED}
    if rs.state == ContainerState.RESTARTING:
        assert rs.exit_code == 1 and rs.pid is None
    # "dead" needs a removal that failed inside the engine; a healthy engine cannot be made to produce
    # it on demand, so its parsing is covered by tests/unit/test_observe_parsing.py.


# --- GPU references, every route -------------------------------------------------------------------


@pytest.fixture
def two_gpus_one_mig(fake_nvml: FakeNvml) -> FakeNvml:
    fake_nvml.set_gpus(2)
    fake_nvml.add_mig(1, profile="3g.40gb")  # 1:0
    fake_nvml.add_mig(1, profile="2g.20gb")  # 1:1
    fake_nvml.write()
    return fake_nvml


def refs_of(snap: Snapshot, container: Any) -> list[tuple[str, GpuRefSource, str | None, str | None]]:
    return [(r.raw, r.source, r.uuid, r.unresolved_reason) for r in find(snap, container).gpu_refs]


def test_every_gpu_route_is_resolved(
    world: dict[str, Any], two_gpus_one_mig: FakeNvml, tmp_path: Path
) -> None:
    g0, g1, m10, m11 = gpu_uuid(0), gpu_uuid(1), mig_uuid(1, 0), mig_uuid(1, 1)
    with HostObserver(config(tmp_path), nvml=NvmlObserver(timeout_s=10)) as observer:
        snap = observer.observe()
    assert snap.domain_ok(Domain.NVML), snap.domain_error(Domain.NVML)
    dr, dm = GpuRefSource.DEVICE_REQUEST, GpuRefSource.DEVICE_MAPPING

    assert refs_of(snap, world["gpu_uuid"]) == [(g0, dr, g0, None)]
    assert refs_of(snap, world["running"]) == [(g1, dr, g1, None)]
    assert find(snap, world["gpu_all"]).all_gpus and find(snap, world["gpu_all"]).gpu_refs == ()
    assert refs_of(snap, world["gpu_index"]) == [("0", dr, g0, None), ("1", dr, g1, None)]
    assert refs_of(snap, world["gpu_slot"]) == [("1:1", dr, m11, None), (m10, dr, m10, None)]
    slot_ref = find(snap, world["gpu_slot"]).gpu_refs[0]
    assert slot_ref.is_mig and slot_ref.parent_uuid == g1
    assert refs_of(snap, world["gpu_count"]) == [("0", dr, g0, None), ("1", dr, g1, None)]
    assert refs_of(snap, world["gpu_mapped"]) == [("1", dm, g1, None)]
    assert refs_of(snap, world["gpu_labels"]) == [
        (g0, GpuRefSource.LABEL_GPU_UUID, g0, None),
        (m10, GpuRefSource.LABEL_GPU_UUIDS, m10, None),
        (m11, GpuRefSource.LABEL_GPU_UUIDS, m11, None),
        # "1.1" (ds01.gpu_slot) and "0", "1:0" (ds01.gpu.slots) name the same devices: kept once.
    ]
    assert [(r.uuid, r.unresolved_reason is not None) for r in find(snap, world["gpu_unknown"]).gpu_refs] == [
        (None, True),
        (None, True),
        (None, True),
    ]
    # Under runc, NVIDIA_VISIBLE_DEVICES is inert text.
    assert not find(snap, world["gpu_inert_env"]).has_gpu
    held = {(a.container_id, a.gpu_uuid) for a in snap.implied_allocations}
    assert (world["gpu_uuid"].id, g0) in held and (world["gpu_labels"].id, m11) in held
    # The running GPU container's utilisation comes from NVML, per device: GPU 1 is in MIG mode,
    # where NVML reports none, so it is unknown with NVML's reason (never 0).
    signals = find(snap, world["running"]).signals
    assert signals is not None and [u.uuid for u in signals.gpu_util] == [g1]
    assert signals.gpu_util[0].percent is None and "MIG" in (signals.gpu_util[0].unknown_reason or "")


def test_visible_devices_under_the_nvidia_runtime(
    make_container: ContainerFactory, two_gpus_one_mig: FakeNvml, tmp_path: Path, docker_client: Any
) -> None:
    if "nvidia" not in docker_client.info().get("Runtimes", {}):
        pytest.skip("this engine was started without --add-runtime nvidia=runc (see scripts/host-setup.sh)")
    some = make_container(
        start=False, runtime="nvidia", environment={"NVIDIA_VISIBLE_DEVICES": f"0,{mig_uuid(1, 1)}"}
    )
    every = make_container(start=False, runtime="nvidia", environment={"NVIDIA_VISIBLE_DEVICES": "all"})
    none = make_container(start=False, runtime="nvidia", environment={"NVIDIA_VISIBLE_DEVICES": "void"})
    with HostObserver(config(tmp_path), nvml=NvmlObserver(timeout_s=10)) as observer:
        snap = observer.observe()
    env = GpuRefSource.VISIBLE_DEVICES_ENV
    assert refs_of(snap, some) == [("0", env, gpu_uuid(0), None), (mig_uuid(1, 1), env, mig_uuid(1, 1), None)]
    assert find(snap, every).all_gpus
    assert not find(snap, none).has_gpu


def test_a_gpus_request_on_a_cuda_image_under_the_nvidia_runtime_is_its_own_gpu(
    make_container: ContainerFactory, two_gpus_one_mig: FakeNvml, tmp_path: Path, docker_client: Any
) -> None:
    """DS01's engine: ``default-runtime: nvidia`` (recorded as ``HostConfig.Runtime``), images
    carrying ``NVIDIA_VISIBLE_DEVICES=all``, ``--gpus device=<UUID>``. The request's value is the
    one the runtime reads: the container holds its one GPU, not every GPU."""
    if "nvidia" not in docker_client.info().get("Runtimes", {}):
        pytest.skip("this engine was started without --add-runtime nvidia=runc (see scripts/host-setup.sh)")
    env = {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VERSION": "12.4"}
    one = make_container(
        start=False, runtime="nvidia", environment=env, device_requests=gpus_request([gpu_uuid(0)])
    )
    every = make_container(start=False, runtime="nvidia", environment=env)
    with HostObserver(config(tmp_path), nvml=NvmlObserver(timeout_s=10)) as observer:
        snap = observer.observe()
    seen = find(snap, one)
    assert not seen.all_gpus and refs_of(snap, one) == [
        (gpu_uuid(0), GpuRefSource.DEVICE_REQUEST, gpu_uuid(0), None)
    ]
    assert find(snap, every).all_gpus  # no request: the variable is the route, and it says all


def test_nvml_down_keeps_uuid_refs_and_flags_index_refs(
    world: dict[str, Any], fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    fake_nvml.remove_state_file()  # the stand-in then fails nvmlInit: driver not loaded
    with HostObserver(config(tmp_path), nvml=NvmlObserver(timeout_s=10)) as observer:
        snap = observer.observe()
    assert not snap.domain_ok(Domain.NVML)
    (by_uuid,) = find(snap, world["gpu_uuid"]).gpu_refs
    assert by_uuid.uuid == gpu_uuid(0) and by_uuid.unresolved_reason is not None
    first, second = find(snap, world["gpu_index"]).gpu_refs
    assert first.uuid is None and second.uuid is None
    assert "NVML unavailable" in (first.unresolved_reason or "")
    signals = find(snap, world["running"]).signals
    assert signals is not None and signals.gpu_util[0].percent is None and signals.gpu_util[0].unknown_reason


# --- classification ---------------------------------------------------------------------------------


def test_every_type_and_owner_rule(world: dict[str, Any], tmp_path: Path) -> None:
    with HostObserver(config(tmp_path), nvml=NoGpus()) as observer:
        snap = observer.observe()
    keys = [
        "own_labels",
        "own_aime",
        "own_devfolder",
        "own_compose",
        "own_aime_name",
        "own_vsc",
        "running",
        "created",
    ]
    got = {k: find(snap, world[k]) for k in keys}
    summary = {k: (c.owner, c.owner_rule, c.container_type, c.type_rule) for k, c in got.items()}
    OR, CT, TR = OwnerRule, ContainerType, TypeRule
    assert summary == {
        "own_labels": ("alice", OR.LABEL_DS01_USER, CT.COMPOSE, TR.LABEL_CONTAINER_TYPE),
        "own_aime": ("bob", OR.LABEL_AIME_USER, CT.DEVCONTAINER, TR.LABEL_INTERFACE),
        "own_devfolder": ("carol", OR.DEVCONTAINER_LOCAL_FOLDER, CT.DEVCONTAINER, TR.DEVCONTAINER_LABEL),
        "own_compose": ("dave", OR.COMPOSE_WORKING_DIR, CT.COMPOSE, TR.COMPOSE_LABEL),
        "own_aime_name": ("daemon", OR.NAME_UID, CT.ATOMIC, TR.AIME_NAME),
        "own_vsc": ("unknown", OR.UNKNOWN, CT.DEVCONTAINER, TR.VSC_NAME),
        # Running, nothing else to go on: the user of its main process (uid 65534).
        "running": ("nobody", OR.PROCESS_UID, CT.DOCKER, TR.DEFAULT),
        "created": ("unknown", OR.UNKNOWN, CT.DOCKER, TR.DEFAULT),
    }
    assert got["own_labels"].managed and got["own_aime"].managed and not got["created"].managed
    assert got["own_devfolder"].protected_label and not got["own_labels"].protected_label
    assert got["own_compose"].monitoring_label and not got["own_labels"].monitoring_label


def test_hostile_labels_do_not_break_the_pass(make_container: ContainerFactory, tmp_path: Path) -> None:
    big = "x" * 200_000
    c = make_container(
        start=False,
        labels={
            L.DS01_USER: "a\x1b[2Jb\n",
            L.DS01_GPU_UUIDS: ",".join(["GPU-x"] * 5000),
            "junk": big,
            L.AIME_USER: big,
        },
    )
    snap = observe_host(config(tmp_path), nvml=NoGpus())
    obs = find(snap, c)
    assert obs.owner == "unknown" and obs.labels["junk"] == big
    # 5000 identical refs: those read (the first 64) kept once, the rest said past the cap; none resolves
    assert [r.raw for r in obs.gpu_refs] == ["GPU-x", TRUNCATED]
    assert all(r.unresolved_reason is not None for r in obs.gpu_refs)


def test_the_workspace_mount_is_observed(make_container: ContainerFactory, tmp_path: Path) -> None:
    """Whether a file under /workspace outlives the container, as the owner's warnings say."""
    (tmp_path / "ws").mkdir()
    bound = make_container(start=False, volumes={str(tmp_path / "ws"): {"bind": "/workspace", "mode": "rw"}})
    elsewhere = make_container(start=False, volumes={str(tmp_path / "ws"): {"bind": "/data", "mode": "rw"}})
    in_memory = make_container(start=False, tmpfs={"/workspace": ""})
    bare = make_container(start=False)
    snap = observe_host(config(tmp_path), nvml=NoGpus())
    assert find(snap, bound).workspace_mounted is True
    assert find(snap, elsewhere).workspace_mounted is False
    assert find(snap, in_memory).workspace_mounted is False
    assert find(snap, bare).workspace_mounted is False


# --- cost: one list call in steady state --------------------------------------------------------------


def test_steady_state_is_one_list_call_and_changes_are_reinspected(
    make_container: ContainerFactory, tmp_path: Path
) -> None:
    c = make_container(start=False, network_mode="none")
    with HostObserver(config(tmp_path), nvml=NoGpus()) as observer:
        first = observer.observe()
        # Client creation (version negotiation) + list + one inspect per container.
        assert first.docker_api_calls == 2 + len(first.containers)
        assert observer.observe().docker_api_calls == 1
        assert observer.observe().docker_api_calls == 1

        observer.invalidate(c.id[:12])
        assert observer.observe().docker_api_calls == 2

        c.start()
        snap = observer.observe()
        assert snap.docker_api_calls == 2  # its State changed: re-inspected
        before = find(snap, c)
        assert before.state == ContainerState.RUNNING and before.pid is not None
        assert observer.observe().docker_api_calls == 1

        # A restart between passes leaves State=running; the shorter uptime in Status reveals it.
        time.sleep(3.5)
        c.restart(timeout=0)
        after = observer.observe()
        assert after.docker_api_calls == 2
        restarted = find(after, c)
        assert restarted.started_at is not None and before.started_at is not None
        assert restarted.started_at > before.started_at and restarted.pid != before.pid

        # A container removed between passes just disappears; nothing is inspected.
        c.remove(force=True)
        gone = observer.observe()
        assert gone.docker_api_calls == 1 and gone.container(c.id) is None


# --- Docker unavailable ---------------------------------------------------------------------------------


def test_docker_socket_missing_is_an_unavailable_domain(tmp_path: Path) -> None:
    snap = observe_host(
        config(tmp_path, docker_base_url=f"unix://{tmp_path}/no-such.sock", docker_timeout_s=2), nvml=NoGpus()
    )
    assert not snap.domain_ok(Domain.DOCKER)
    assert snap.containers == ()
    assert "no-such.sock" in (snap.domain_error(Domain.DOCKER) or "") or "No such file" in (
        snap.domain_error(Domain.DOCKER) or ""
    )
    assert snap.domain_ok(Domain.NVML) and snap.domain_ok(Domain.LEDGER)


@pytest.fixture
def hanging_socket(tmp_path: Path) -> Iterator[Path]:
    """A unix socket that accepts connections and never answers."""
    path = tmp_path / "hang.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def test_docker_that_hangs_times_out(hanging_socket: Path, tmp_path: Path) -> None:
    with HostObserver(
        config(tmp_path, docker_base_url=f"unix://{hanging_socket}", docker_timeout_s=1), nvml=NoGpus()
    ) as obs:
        started = time.monotonic()
        snap = obs.observe()
        elapsed_s = time.monotonic() - started
        # And again: the observer survives and keeps reporting, it does not raise.
        again = obs.observe()
    assert not snap.domain_ok(Domain.DOCKER) and not again.domain_ok(Domain.DOCKER)
    assert "imeout" in (snap.domain_error(Domain.DOCKER) or "")
    assert snap.containers == ()
    assert elapsed_s < 30  # bounded by the 1 s timeout (and its retries), not hanging forever


# --- a wedged container ------------------------------------------------------------------------------
# dockerd 20.10 can leave a container whose every inspect hangs (its lock held after a containerd shim
# died) while list still answers. That cannot be produced on demand, so a few lines of HTTP server on a
# unix socket play such an engine: the real docker client and observer talk to it.

WEDGED, HEALTHY = "a" * 64, "b" * 64


class _WedgedEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    release = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _WedgedEngine

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/version"):
            self._json({"ApiVersion": "1.41", "Version": "20.10.24"})
        elif path.endswith("/containers/json"):
            self._json([
                {"Id": cid, "Names": [f"/{name}"], "Image": "img", "Labels": {}, "State": "created",
                 "Status": "Created", "Created": 1700000000}
                for cid, name in ((WEDGED, "wedged"), (HEALTHY, "healthy"))
            ])  # fmt: skip
        elif WEDGED in path:
            self.server.release.wait(30)
        elif HEALTHY in path:
            self._json({
                "Id": HEALTHY, "Created": "2024-05-01T12:00:00Z", "RestartCount": 0,
                "State": {"Status": "created", "Pid": 0, "ExitCode": 0, "StartedAt": "0001-01-01T00:00:00Z",
                          "FinishedAt": "0001-01-01T00:00:00Z"},
                "HostConfig": {"CgroupParent": "", "NetworkMode": "none"}, "Config": {"Env": []},
            })  # fmt: skip
        else:
            self.send_error(404)


@pytest.fixture
def wedged_engine(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "wedged.sock"
    server = _WedgedEngine(str(path), _Handler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.release.set()
    server.shutdown()
    server.server_close()


def test_a_wedged_container_costs_one_timeout_then_waits_out_a_backoff(
    wedged_engine: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path, docker_base_url=f"unix://{wedged_engine}", docker_timeout_s=1)
    with HostObserver(cfg, nvml=NoGpus()) as observer:
        first = observer.observe()
        # The healthy container is there; the domain says the other one could not be read.
        assert [c.id for c in first.containers] == [HEALTHY]
        assert not first.domain_ok(Domain.DOCKER)
        assert f"inspect {WEDGED[:12]}" in (first.domain_error(Domain.DOCKER) or "")
        assert first.docker_api_calls == 4  # version, list, wedged (timed out), healthy

        started = time.monotonic()
        second = observer.observe()
        assert time.monotonic() - started < 0.9  # no second timeout: the wedged one waits its back-off
        assert second.docker_api_calls == 1 and [c.id for c in second.containers] == [HEALTHY]
        assert "next try after" in (second.domain_error(Domain.DOCKER) or "")

        # A Docker event about it ends the back-off at once.
        observer.invalidate(WEDGED)
        third = observer.observe()
        assert third.docker_api_calls == 2 and not third.domain_ok(Domain.DOCKER)


# --- python -m controller.observe ---------------------------------------------------------------------


def test_snapshot_entry_point_prints_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.observe", "--docker-url", f"unix://{tmp_path}/none.sock",
         "--docker-timeout-s", "2", "--ledger", str(tmp_path / "ledger.json")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    snap = Snapshot.model_validate_json(result.stdout)
    assert not snap.domain_ok(Domain.DOCKER) and snap.domain_ok(Domain.LEDGER)
    bad = subprocess.run(
        [sys.executable, "-m", "controller.observe", "--keepalive-path", "relative/path"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "keepalive_path" in bad.stderr and "Traceback" not in bad.stderr
