"""End to end: the daemon, acting, converges a mixed host to exactly what the policy says.

Real engine (a private dockerd), real processes and cgroups, the stand-in NVML; the daemon runs
as a process with second-scale durations (``fast_policy``: idle 4 s, window 2 samples, grace 0 s,
warn lead 1 s, created timeout 1 s, GPU hold 1 s, ledger reservation 1 s) and a 0.5 s interval.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
import pytest

from controller import labels as L
from controller.plan.types import DESTRUCTIVE_KINDS
from tests.fixtures.daemon import CONTROLLER, DaemonHandle, DaemonRunner, details
from tests.fixtures.docker_host import ContainerFactory, OrphanProcess
from tests.fixtures.nvml import GIB, FakeNvml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CONVERGE_TIMEOUT_S = 30.0
GPU_COUNT = 10
X = 2  # the GPU shared by the busy container's process and the orphan
STALE = 9  # memory in use, no process, no holder: the one GPU that must be reset
DS01CTL = CONTROLLER.with_name("ds01ctl")


def gpu_request(uuid: str) -> dict[str, Any]:
    """What ``docker create --gpus device=<uuid>`` sends."""
    return {"device_requests": [docker.types.DeviceRequest(device_ids=[uuid], capabilities=[["gpu"]])]}


def exists(client: Any, cid: str) -> bool:
    try:
        client.api.inspect_container(cid)
    except docker.errors.NotFound:
        return False
    return True


def state(client: Any, cid: str) -> dict[str, Any]:
    return dict(client.api.inspect_container(cid)["State"])


def process_gone(pid: int) -> bool:
    """Gone, or a zombie (killed; its parent, this test process, has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def for_container(cid: str) -> Any:
    return lambda e: details(e).get("container_id", "").startswith(cid[:12])


def test_daemon_converges_a_mixed_host(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
    fake_nvml: FakeNvml,
    orphan_cgroup_process: OrphanProcess,
) -> None:
    gpus = fake_nvml.set_gpus(GPU_COUNT)
    uuid = [g.uuid for g in gpus]
    gpus[X].util_percent = 90
    gpus[STALE].mem_used_bytes = 2 * GIB
    alice = {L.DS01_USER: "alice"}

    created = e2e_containers(start=False, labels=alice, **gpu_request(uuid[0]))
    idle = e2e_containers(labels=alice, **gpu_request(uuid[1]))
    busy = e2e_containers(labels=alice, **gpu_request(uuid[X]))
    cpu_busy = e2e_containers(
        ["sh", "-c", "yes > /dev/null"], labels=alice, nano_cpus=200_000_000, **gpu_request(uuid[3])
    )
    devcontainer = e2e_containers(
        labels={L.DEVCONTAINER_LOCAL_FOLDER: "/home/alice/x"}, **gpu_request(uuid[4])
    )
    keepalive = e2e_containers(
        ["sh", "-c", "touch /workspace/.keep-alive && exec sleep 300"], labels=alice, **gpu_request(uuid[5])
    )
    exited = e2e_containers("true", labels=alice, **gpu_request(uuid[6]))
    exited.wait(timeout=30)
    protected = e2e_containers(labels={**alice, L.DS01_PROTECTED: "true"}, **gpu_request(uuid[7]))
    leaked_row = {
        "gpu": uuid[8],
        "container": "e2e-never-existed",
        "user": "bob",
        "allocated_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    }
    controller_daemon.write_ledger([leaked_row])
    busy_pid = state(e2e_docker, busy.id)["Pid"]
    orphan = orphan_cgroup_process
    fake_nvml.add_process(uuid[X], pid=orphan.pid)
    fake_nvml.add_process(uuid[X], pid=busy_pid)
    fake_nvml.write()

    d = controller_daemon.start()

    # Each expected action shows up in the event log, with its reason.
    removed_created = d.wait_for_event("container.remove", for_container(created.id), CONVERGE_TIMEOUT_S)
    assert details(removed_created)["reason"] == "created_never_started"
    removed_exited = d.wait_for_event("container.remove", for_container(exited.id), CONVERGE_TIMEOUT_S)
    assert details(removed_exited)["reason"] == "gpu_hold_expired"
    released = d.wait_for_event(
        "gpu.release", lambda e: details(e).get("container") == "e2e-never-existed", CONVERGE_TIMEOUT_S
    )
    assert details(released)["reason"] == "leaked_allocation"
    killed = d.wait_for_event(
        "process.kill", lambda e: details(e).get("pid") == orphan.pid, CONVERGE_TIMEOUT_S
    )
    assert details(killed)["reason"] == "orphaned_process"
    # The real driver drops a dead process from its list; the stand-in is told so.
    assert process_gone(orphan.pid)
    reap(orphan.pid)
    fake_nvml.remove_process(orphan.pid)
    fake_nvml.write()
    alert = d.wait_for_event(
        "controller.alert",
        lambda e: details(e).get("reason") == "gpu_dirty" and details(e).get("gpu") == uuid[X],
        CONVERGE_TIMEOUT_S,
    )
    # The positive control for "not reset": the reset command does run, where a reset is safe.
    reset = d.wait_for_event("gpu.health_check", lambda e: details(e).get("gpu") == uuid[STALE])
    assert details(reset)["status"] == "cleaned"
    gpus[STALE].mem_used_bytes = 0
    fake_nvml.write()
    stop = d.wait_for_event("maintenance.idle_kill", for_container(idle.id), CONVERGE_TIMEOUT_S)
    assert details(stop)["reason"] == "idle_timeout"
    assert details(stop)["removed"] is True

    # Let a few more passes run: the end state must be stable, not just reached.
    d.wait_for_passes(4)
    events = d.events()

    # --- containers -----------------------------------------------------------------------
    assert not exists(e2e_docker, created.id)
    assert not exists(e2e_docker, idle.id)
    assert not exists(e2e_docker, exited.id)
    untouched = {"busy": busy, "cpu-busy": cpu_busy, "devcontainer": devcontainer, "keep-alive": keepalive}
    untouched["protected"] = protected
    for what, c in untouched.items():
        s = state(e2e_docker, c.id)
        assert s["Running"], f"the {what} container was stopped"
        assert s["StartedAt"] == c.attrs["State"]["StartedAt"], f"the {what} container was restarted"
    remaining = {c["Id"] for c in e2e_docker.api.containers(all=True, filters={"label": L.DS01_TEST})}
    assert remaining == {c.id for c in untouched.values()}
    for what, c in untouched.items():
        acted = [
            e
            for e in events
            if for_container(c.id)(e)
            and e["event_type"]
            in ("maintenance.idle_kill", "container.remove", "container.stop", "controller.warning")
        ]
        assert not acted, f"the {what} container was acted on: {acted}"

    # --- the idle container: warned, then stopped and removed, exactly once ----------------
    warnings = [e for e in events if e["event_type"] == "controller.warning" and for_container(idle.id)(e)]
    assert warnings, "the idle container was stopped without a warning"
    assert all(w["timestamp"] < stop["timestamp"] for w in warnings)
    assert len({details(w)["warning_key"] for w in warnings}) == len(warnings), "a warning was sent twice"
    assert len([e for e in events if e["event_type"] == "maintenance.idle_kill"]) == 1
    # The GPUs of every removed container are released.
    released_gpus = {details(e)["gpu"] for e in events if e["event_type"] == "gpu.release"}
    assert {uuid[0], uuid[1], uuid[6], uuid[8]} <= released_gpus
    removals = [e for e in events if e["event_type"] == "container.remove"]
    assert sorted(details(e)["container_id"] for e in removals) == sorted([created.id, exited.id])

    # --- ledger, processes, GPUs -----------------------------------------------------------
    ledger = json.loads(controller_daemon.paths.ledger.read_text())
    assert ledger["allocations"] == []
    assert state(e2e_docker, busy.id)["Pid"] == busy_pid
    assert not process_gone(busy_pid)
    assert [e for e in events if e["event_type"] == "process.kill"] == [killed]
    resets = controller_daemon.paths.reset_marker.read_text().split()
    assert resets == [uuid[STALE]], "a GPU other than the stale one was reset (GPU X under a live process?)"
    assert "held by live containers" in json.dumps(details(alert)["evidence"]["blockers"])
    assert [details(e)["gpu"] for e in events if e["event_type"] == "gpu.health_check"] == [uuid[STALE]]
    assert not [
        e for e in events if e["event_type"] in ("controller.action_failed", "controller.breaker_tripped")
    ]

    assert d.stop() == 0
    assert "Traceback" not in d.log()

    # --- nothing destructive left to do, and each survivor is left alone for its own reason ---
    plan = assert_nothing_destructive_planned(controller_daemon, d)
    why = {
        (x["target"]["container_id"], x["why"])
        for x in plan["deferred"]
        if x["rule"] == "IdleTimeout" and x["target"]["container_id"]
    }
    assert (keepalive.id, "KeepAlive") in why
    assert (protected.id, "Protected") in why
    # Active containers have no idle stop pending; an idle-exempt devcontainer has no idle limit.
    for c in (busy, cpu_busy, devcontainer):
        assert c.id not in {cid for cid, _ in why}, why


def assert_nothing_destructive_planned(runner: DaemonRunner, d: DaemonHandle) -> dict[str, Any]:
    before = len(d.events())
    once = runner.run_once()
    assert once.returncode == 0, once.stderr
    assert "Traceback" not in once.stderr
    dry = [e for e in d.events()[before:] if e["event_type"] == "controller.dry_run"]
    destructive = {k.value for k in DESTRUCTIVE_KINDS}
    assert not [e for e in dry if details(e)["kind"] in destructive], dry
    p = runner.paths
    plan = subprocess.run(
        [
            str(DS01CTL),
            "plan",
            "-o",
            "json",
            "--specs",
            str(p.specs_dir),
            "--state-dir",
            str(p.state_dir),
            "--events-log",
            str(p.events_log),
            "--ledger",
            str(p.ledger),
        ],
        env=runner.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    data: dict[str, Any] = json.loads(plan.stdout)
    assert not [a for a in data["actions"] if a["kind"] in destructive], data["actions"]
    return data
