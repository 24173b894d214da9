"""``ds01ctl`` as a process against the real Docker engine and the stand-in NVML.

Each test runs ``python -m controller.cli`` in a subprocess (as an admin would run ``ds01ctl``), with
the stand-in ``libnvidia-ml.so.1`` on its library path and every ``DS01_*`` path in a temporary
directory. Containers are real (``make_container``) and labelled for the test; the commands are
narrowed to them with ``-l ds01.test=...`` or by name, because the engine may be shared.

Only read-only commands and ``reconcile --dry-run`` run here: nothing may act on another test's
containers.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker.types
import pytest

from controller import labels as L
from tests.fixtures.docker_host import TEST_LABEL, ContainerFactory
from tests.fixtures.nvml import NVML_ERROR_UNKNOWN, FakeNvml, gpu_uuid

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 180

# Idle detection that decides on the second observation: no grace, a window of one sample.
POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: cli-test
spec:
  defaultGroup: testers
  settings:
    idleTimeout: 1h
    maxRuntime: 24h
    gracePeriod: 0s
    idleDetectionWindow: 1
    idleMinDuration: 0s
    createdContainerTimeout: 2h
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: testers
spec:
  order: 10
  members: []
  settings:
    idleDetectionWindow: 1
"""


@dataclass
class Cli:
    env: dict[str, str]
    root: Path

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller.cli", *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )


@pytest.fixture
def cli(fake_nvml: FakeNvml, tmp_path: Path) -> Cli:
    fake_nvml.set_gpus(2)
    fake_nvml.write()
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "policy.yaml").write_text(POLICY)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    env.update(fake_nvml.env())
    env.update(
        {
            "DS01_SPECS": str(specs),
            "DS01_STATE_DIR": str(state),
            "DS01_EVENTS_LOG": str(tmp_path / "events.jsonl"),
            "DS01_LEDGER": str(tmp_path / "ledger.json"),
            "DS01_ENV_FILE": "",  # never the host's /etc/ds01/controller.env
            "NO_COLOR": "1",
        }
    )
    return Cli(env=env, root=tmp_path)


def gpu_request(uuid: str) -> list[Any]:
    return [docker.types.DeviceRequest(driver="nvidia", device_ids=[uuid], capabilities=[["gpu"]])]


def gpu_container(make: ContainerFactory, owner: str = "alice", **kw: Any) -> Any:
    # No network: nothing here needs one, and its counter is then a known zero.
    return make(
        "sleep 600",
        labels={L.DS01_USER: owner, L.DS01_CONTAINER_TYPE: "atomic"},
        device_requests=gpu_request(gpu_uuid(0)),
        network_mode="none",
        **kw,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result
    assert len(lines) == 1 and lines[0].startswith("ds01ctl: "), result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def plan_items(result: subprocess.CompletedProcess[str], container_id: str) -> list[dict[str, Any]]:
    data = json.loads(result.stdout)
    return [
        i for i in [*data["actions"], *data["deferred"]] if i["target"].get("container_id") == container_id
    ]


def rule_of(item: dict[str, Any]) -> str:
    return str(item.get("reason") or item.get("rule"))


# --- get / describe ---------------------------------------------------------------------------


def test_get_containers_shows_a_gpu_container_with_owner_and_type(
    cli: Cli, make_container: ContainerFactory
) -> None:
    c = gpu_container(make_container)
    selector = f"{TEST_LABEL}={make_container.test_id}"
    result = cli("get", "containers", "-l", selector)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "OWNER", "TYPE", "STATE", "GPUS", "IDLE", "NEXT", "AGE"]
    assert len(rows) == 1
    name, owner, ctype, state, gpus, *_ = rows[0].split()
    assert (name, owner, ctype, state, gpus) == (c.name, "alice", "atomic", "running", "0")

    data = json.loads(cli("get", "containers", c.name, "-o", "json").stdout)
    (item,) = data["items"]
    assert item["id"] == c.id
    assert item["owner_rule"] == "label:ds01.user" and item["type_rule"] == "label:ds01.container_type"
    assert [(g["slot"], g["uuid"]) for g in item["gpus"]] == [("0", gpu_uuid(0))]

    text = cli("describe", "container", c.id[:12]).stdout
    assert f"Name:        {c.name}" in text
    assert "Owner:       alice   (decided by label:ds01.user)" in text
    assert "Group:       testers   (defaultGroup of LifecyclePolicy/cli-test" in text
    assert "idle timeout                    1h                       LifecyclePolicy/cli-test" in text
    assert "idle window (samples)           1                        UserGroup/testers" in text
    assert "Decision:" in text and "Timers:" in text

    gpus = cli("get", "gpus", "0", "-o", "json")
    assert gpus.returncode == 0, gpus.stderr
    (gpu0,) = json.loads(gpus.stdout)["items"]
    assert gpu0["uuid"] == gpu_uuid(0) and c.name in gpu0["holders"]
    assert gpu0["state"] in ("held", "idle-held")


def shared_engine_policy() -> str:
    """POLICY for a forecast on the shared engine: other tests' containers on the stand-in GPUs
    must not change this test's times. No high-demand reduction (they would raise the demand and
    halve the idle timeout), and neither the breaker nor the budget holds back a pass in which
    their stops fall due with this test's."""
    return POLICY.replace(
        "  defaultGroup: testers\n",
        "  defaultGroup: testers\n  safety:\n    maxDestructiveActionsPerPass: 1000\n"
        "    breakerMinContainers: 1000\n",
    ).replace(
        "    idleDetectionWindow: 1\n    idleMinDuration",
        "    highDemandIdleReduction: 1.0\n    idleDetectionWindow: 1\n    idleMinDuration",
    )


def forecast_steps(
    result: subprocess.CompletedProcess[str], container_id: str
) -> list[tuple[str, str, float]]:
    """(kind, reason, seconds after the observation) of each predicted action on the container."""
    data = json.loads(result.stdout)
    t0 = datetime.fromisoformat(data["observed_at"])
    return [
        (
            p["action"]["kind"],
            p["action"]["reason"],
            (datetime.fromisoformat(p["pass_at"]) - t0).total_seconds(),
        )
        for p in data["actions"]
        if p["action"]["target"].get("container_id") == container_id
    ]


def test_plan_at_forecasts_the_warnings_and_the_stop_of_an_idle_gpu_container(
    cli: Cli, make_container: ContainerFactory
) -> None:
    (cli.root / "specs" / "policy.yaml").write_text(shared_engine_policy())
    c = gpu_container(make_container)
    # Two dry-run passes give the memory a baseline and then an idle sample (sleep uses no CPU).
    for _ in range(2):
        r = cli("reconcile", "--dry-run")
        assert r.returncode == 0, r.stderr + r.stdout
        assert r.stdout.startswith("Reconcile pass (dry-run: nothing changed)")
        time.sleep(1.1)

    now = cli("plan", "-o", "json")
    assert now.returncode in (0, 2), now.stderr
    now_rules = {(rule_of(i), i.get("why")) for i in plan_items(now, c.id)}
    assert ("IdleTimeout", "NotDue") in now_rules, now_rules
    assert not any(i.get("kind") == "StopContainer" for i in plan_items(now, c.id))

    later = cli("plan", "--at", "+2h", "-o", "json")
    assert later.returncode == 2, later.stderr
    data = json.loads(later.stdout)
    assert data["assumptions"] and data["passes"] > 1 and not data["truncated"]
    steps = forecast_steps(later, c.id)
    # Idle timeout 1h: warnings at 80 % (48m) and 95 % (57m) of the streak, the stop at 1h (the
    # lead, 10m after the first warning, is earlier), each a hair after its due time.
    assert [(k, r) for k, r, _ in steps] == [
        ("WarnOwner", "IdleWarning"),
        ("WarnOwner", "IdleWarning"),
        ("StopContainer", "IdleTimeout"),
    ], steps
    (stop,) = [
        p["action"]
        for p in data["actions"]
        if p["action"]["kind"] == "StopContainer" and p["action"]["target"]["container_id"] == c.id
    ]
    idle_since_s = (
        datetime.fromisoformat(stop["evidence"]["idle_since"]) - datetime.fromisoformat(data["observed_at"])
    ).total_seconds()
    assert idle_since_s <= 0, stop["evidence"]  # the streak began with the dry-run passes
    for (_, _, at_s), expected_s in zip(steps, (48 * 60, 57 * 60, 3600), strict=True):
        assert 0 <= at_s - (idle_since_s + expected_s) <= 1, (steps, idle_since_s)

    table = cli("plan", "--at", "+2h")
    assert table.returncode == 2
    assert table.stdout.startswith("Forecast from ")
    assert "Assuming:" in table.stdout and "signals held as observed" in table.stdout
    assert f"WarnOwner {c.name}  [IdleWarning]" in table.stdout
    # removeAfterIdleStop (the built-in default): the stop removes the container, and says so.
    assert f"StopContainer and remove {c.name}  [IdleTimeout]" in table.stdout
    # plan changed nothing: the container runs.
    c.reload()
    assert c.status == "running"

    described = cli("describe", "container", c.name)
    assert described.returncode == 0, described.stderr
    # The engine is shared: crowded by other tests' containers, describe says why it has no forecast.
    assert "Forecast:" in described.stdout, described.stdout
    assert (
        "if it stays idle" in described.stdout or "running GPU containers (more than 100)" in described.stdout
    )


def test_plan_at_forecasts_the_max_runtime_warnings_and_the_stop_at_one_hour(
    cli: Cli, make_container: ContainerFactory
) -> None:
    (cli.root / "specs" / "policy.yaml").write_text(
        shared_engine_policy()
        .replace("maxRuntime: 24h", "maxRuntime: 1h")
        .replace("idleTimeout: 1h", "idleTimeout: 5h")
    )
    c = gpu_container(make_container)
    c.reload()
    started = datetime.fromisoformat(c.attrs["State"]["StartedAt"][:26].rstrip("Z") + "+00:00")
    result = cli("plan", "--at", "+2h", "-o", "json")
    assert result.returncode == 2, result.stderr
    data = json.loads(result.stdout)
    runtime = [
        (p["action"]["kind"], p["action"]["reason"], datetime.fromisoformat(p["pass_at"]))
        for p in data["actions"]
        if p["action"]["target"].get("container_id") == c.id and "Runtime" in p["action"]["reason"]
    ]
    assert [(k, r) for k, r, _ in runtime] == [
        ("WarnOwner", "MaxRuntimeWarning"),
        ("WarnOwner", "MaxRuntimeWarning"),
        ("StopContainer", "MaxRuntimeExceeded"),
    ], runtime
    for (_, _, at), minutes in zip(runtime, (45, 54, 60), strict=True):
        assert abs((at - started).total_seconds() - minutes * 60) <= 2, (runtime, started)
    messages = [
        p["action"]["message"] for p in data["actions"] if p["action"]["reason"] == "MaxRuntimeWarning"
    ]
    assert any("running for 45m (75% of 1h)" in m for m in messages), messages
    assert any("running for 54m (90% of 1h)" in m for m in messages), messages


def test_plan_with_a_stricter_candidate_policy_shows_the_difference_and_performs_none(
    cli: Cli, make_container: ContainerFactory
) -> None:
    c = gpu_container(make_container)
    time.sleep(1.5)
    candidate = cli.root / "strict.yaml"
    # Both policies on the shared engine: other tests' containers do not trip the breaker.
    (cli.root / "specs" / "policy.yaml").write_text(shared_engine_policy())
    candidate.write_text(
        shared_engine_policy()
        .replace("maxRuntime: 24h", "maxRuntime: 1s")
        .replace("name: cli-test", "name: strict")
    )
    events_before = (cli.root / "events.jsonl").read_bytes() if (cli.root / "events.jsonl").exists() else b""

    installed = cli("plan", "-o", "json")
    assert installed.returncode in (0, 2), installed.stderr
    assert not [i for i in plan_items(installed, c.id) if "kind" in i]

    strict = cli("plan", "--policy", str(candidate), "--at", "+5m", "-o", "json")
    assert strict.returncode == 2, strict.stderr
    data = json.loads(strict.stdout)
    mine = [ch for ch in data["changes"] if ch["container_id"] == c.id]
    assert [(ch["change"], ch["candidate_reason"]) for ch in mine] == [("newly", "MaxRuntimeExceeded")]
    assert mine[0]["current_at"] is None
    assert [(k, r) for k, r, _ in forecast_steps(_only(strict, "candidate"), c.id)][:2] == [
        ("WarnOwner", "MaxRuntimeWarning"),
        ("StopContainer", "MaxRuntimeExceeded"),
    ]

    text = cli("plan", "--policy", str(candidate), "--at", "+5m")
    assert text.stdout.startswith(f"Candidate policy {candidate} against the installed one")
    line = next(x for x in text.stdout.splitlines() if c.name in x)
    assert line.lstrip().startswith(f"newly stopped     {c.name} (alice): now not before the horizon"), line
    assert line.endswith("[MaxRuntimeExceeded]"), line

    c.reload()
    assert c.status == "running"
    after = (cli.root / "events.jsonl").read_bytes() if (cli.root / "events.jsonl").exists() else b""
    assert after == events_before


def _only(result: subprocess.CompletedProcess[str], key: str) -> subprocess.CompletedProcess[str]:
    """One forecast of a ``plan --policy -o json`` answer, as if printed alone."""
    return subprocess.CompletedProcess(result.args, 0, json.dumps(json.loads(result.stdout)[key]), "")


# --- bad input and degraded views -------------------------------------------------------------


def test_unknown_container_and_unknown_kind(cli: Cli) -> None:
    assert_one_line(
        cli("describe", "container", "no-such-container-xyz"), "'no-such-container-xyz' not found"
    )
    assert_one_line(cli("get", "containers", "no-such-container-xyz"), "not found", "--all")
    assert_one_line(cli("get", "volumes"), "unknown resource kind 'volumes'")
    assert_one_line(cli("describe", "gpu", "9"), "GPU '9' not found")


def test_malformed_at(cli: Cli) -> None:
    assert_one_line(cli("plan", "--at", "tomorrow-ish"), "cannot read the time 'tomorrow-ish'", "+2h")


def test_docker_down_is_one_line_or_a_degraded_view(cli: Cli) -> None:
    down = {"DOCKER_HOST": "unix:///nonexistent.sock"}
    assert_one_line(
        cli("get", "containers", env=down), "cannot reach the Docker engine at unix:///nonexistent.sock"
    )
    assert_one_line(cli("plan", env=down), "cannot reach the Docker engine at unix:///nonexistent.sock")
    # The GPUs are still known from NVML; the view says what is missing.
    gpus = cli("get", "gpus", env=down)
    assert gpus.returncode == 0, gpus.stderr
    assert [line.split()[0] for line in gpus.stdout.splitlines()[1:]] == ["0", "1"]
    assert "warning: cannot reach the Docker engine at unix:///nonexistent.sock" in gpus.stderr
    assert "Traceback" not in gpus.stderr
    # ... but not who holds them: unknown, never "-" (none) or free.
    assert [line.split()[-3:] for line in gpus.stdout.splitlines()[1:]] == [["unknown", "0", "unknown"]] * 2
    items = json.loads(cli("get", "gpus", "-o", "json", env=down).stdout)["items"]
    assert [(i["holders"], i["state"]) for i in items] == [(None, "unknown")] * 2
    gpu = cli("describe", "gpu", "0", env=down)
    assert gpu.returncode == 0, gpu.stderr
    holders = gpu.stdout.split("\nHolders:\n")[1].split("\nProcesses:")[0]
    assert holders == (
        "  unknown: the containers cannot be listed (cannot reach the Docker engine at "
        "unix:///nonexistent.sock: no such socket)"
    )
    assert "State:        unknown (Docker is unavailable: its holders cannot be listed)" in gpu.stdout
    assert "<none>" not in holders and "no rule concerns this GPU" not in gpu.stdout
    # A user is described by their containers: that fails, as describe container does.
    assert_one_line(
        cli("describe", "user", "alice", env=down),
        "cannot reach the Docker engine at unix:///nonexistent.sock",
    )


def test_nvml_down_degrades_the_gpu_view(
    cli: Cli, fake_nvml: FakeNvml, make_container: ContainerFactory
) -> None:
    c = gpu_container(make_container)
    fake_nvml.remove_state_file()  # the stand-in's nvmlInit then fails: driver not loaded
    gpus = cli("get", "gpus")
    assert gpus.returncode == 0, gpus.stderr
    assert "warning: GPU state unavailable (NVML:" in gpus.stderr
    assert gpus.stdout.splitlines()[0].split()[-1] == "STATE"
    data = json.loads(cli("get", "gpus", "-o", "json").stdout)
    held = [(i["uuid"], i["state"]) for i in data["items"] if c.name in i["holders"]]
    assert held == [(gpu_uuid(0), "unavailable")]
    assert all(i["state"] == "unavailable" for i in data["items"])
    # Its processes are unknown as in the table (PROCESSES 'unknown'): null with why, never [].
    assert {(json.dumps(i["processes"]), i["processes_unknown"].split(":")[0]) for i in data["items"]} == {
        ("null", "NVML unavailable")
    }
    processes = cli("get", "processes", "-o", "json")
    assert processes.returncode == 0, processes.stderr
    listed = json.loads(processes.stdout)
    assert listed["items"] is None
    (unlisted,) = listed["processes_unknown"]
    assert (unlisted["gpu"], unlisted["uuid"]) == (None, None)
    assert unlisted["reason"].startswith("NVML unavailable: nvmlInit failed: Driver Not Loaded"), unlisted
    containers = cli("get", "containers", c.name)
    assert containers.returncode == 0, containers.stderr
    assert containers.stdout.splitlines()[1].split()[:4] == [c.name, "alice", "atomic", "running"]
    assert "Traceback" not in containers.stderr


def test_a_device_nvml_cannot_list_has_unknown_processes_not_none(
    cli: Cli, fake_nvml: FakeNvml, make_container: ContainerFactory
) -> None:
    """NVML answers, but not GPU 1's process list: its processes are unknown in every output."""
    c = gpu_container(make_container)
    fake_nvml.add_process(gpu_uuid(0), pid=os.getpid(), used_mem_bytes=1 << 30)
    fake_nvml.fail_call("nvmlDeviceGetComputeRunningProcesses", NVML_ERROR_UNKNOWN, device_uuid=gpu_uuid(1))
    fake_nvml.write()
    gpus = cli("get", "gpus")
    assert gpus.returncode == 0, gpus.stderr
    assert [line.split()[0] + " " + line.split()[-2] for line in gpus.stdout.splitlines()[1:]] == [
        "0 1",
        "1 unknown",
    ]
    items = {i["slot"]: i for i in json.loads(cli("get", "gpus", "-o", "json").stdout)["items"]}
    assert items["0"]["processes"] == [os.getpid()] and items["0"]["processes_unknown"] is None
    assert items["1"]["processes"] is None
    why = "nvmlDeviceGetComputeRunningProcesses(GPU 1) failed: Unknown Error (NVML_ERROR_UNKNOWN)"
    assert items["1"]["processes_unknown"] == why
    processes = cli("get", "processes")
    assert f"warning: GPU processes unknown on GPU 1: {why}" in processes.stderr.splitlines()
    listed = json.loads(cli("get", "processes", "-o", "json").stdout)
    assert [i["pid"] for i in listed["items"]] == [os.getpid()]
    assert listed["processes_unknown"] == [{"gpu": "1", "uuid": gpu_uuid(1), "reason": why}]
    gpu1 = cli("describe", "gpu", "1")
    assert gpu1.returncode == 0, gpu1.stderr
    assert gpu1.stdout.split("\nProcesses:\n")[1].split("\nLedger:")[0] == f"  unknown ({why})"
    assert_one_line(cli("get", "processes", "4194305"), "whether pid 4194305 is a GPU process is unknown")
    assert c.name in cli("describe", "user", "alice").stdout


def test_unreadable_state_directory_gives_the_live_view_without_timers(
    cli: Cli, make_container: ContainerFactory
) -> None:
    c = gpu_container(make_container)
    os.chown(cli.root / "state", 4242, 4242)  # not root's, not ours: the store refuses to trust it
    result = cli("get", "containers", c.name)
    assert result.returncode == 0, result.stderr
    assert "warning: timers unavailable" in result.stderr and "owned by uid 4242" in result.stderr
    assert result.stdout.splitlines()[1].split()[5] == "unknown"  # IDLE
    text = cli("describe", "container", c.name)
    assert text.returncode == 0
    assert "idle time unavailable (timers unavailable" in text.stdout
    # The breaker, the actions in flight and the alerts sent are in that record too: a tripped
    # breaker was shown as closed, and `get alerts` said "No open admin alerts".
    plan = cli("plan")
    assert "the controller's record cannot be read: a tripped breaker" in plan.stderr, plan.stderr
    alerts = cli("get", "alerts")
    assert alerts.returncode == 0, alerts.stderr
    assert "open alerts unknown: the controller's record cannot be read" in alerts.stderr
    assert "No open admin alerts" not in alerts.stderr


# --- one configuration for the daemon and ds01ctl -----------------------------------------------


def test_ds01ctl_reads_the_daemons_env_file_and_warns_when_its_policy_differs(
    cli: Cli, fake_nvml: FakeNvml
) -> None:
    """The daemon is started as its unit starts it (the env file's variables, $DS01_CONTROLLER_ARGS
    as flags); ds01ctl, given only that file, sees the same policy, and says so loudly when not."""
    root = cli.root
    specs, state = root / "specs", root / "state"
    env_file = root / "controller.env"
    env_file.write_text(
        "# as deploy/controller.env\n"
        f'DS01_CONTROLLER_ARGS="--dry-run --specs {specs}"\n'
        f"DS01_STATE_DIR={state}\n"
        f"DS01_EVENTS_LOG={root / 'events.jsonl'}\n"
        f"DS01_LEDGER={root / 'ledger.json'}\n"
    )
    bare = {k: v for k, v in cli.env.items() if not k.startswith("DS01_")}
    daemon_env = {
        **bare,
        "DS01_STATE_DIR": str(state),
        "DS01_EVENTS_LOG": str(root / "events.jsonl"),
        "DS01_LEDGER": str(root / "ledger.json"),
    }
    daemon = subprocess.run(
        [sys.executable, "-m", "controller.main", "run", "--once", "--dry-run", "--specs", str(specs)],
        cwd=REPO,
        env=daemon_env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert daemon.returncode == 0, daemon.stderr
    status = json.loads((state / "policy-status.json").read_text())
    assert status["policy"]["specs"] == str(specs)

    def ds01ctl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller.cli", *args],
            cwd=REPO,
            env={**bare, **env},
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    same = ds01ctl("get", "policies", DS01_ENV_FILE=str(env_file))
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[0] == f"policy: specs {specs}"
    assert "NOT the running controller's" not in same.stdout + same.stderr

    # Without the file, ds01ctl would plan with the built-in default: it says so on every view.
    other = ds01ctl("get", "policies", DS01_ENV_FILE="", DS01_STATE_DIR=str(state))
    assert other.returncode == 0, other.stderr
    assert "WARNING: ds01ctl's policy is NOT the running controller's" in other.stdout
    plan = ds01ctl("plan", DS01_ENV_FILE="", DS01_STATE_DIR=str(state))
    assert plan.returncode in (0, 2), plan.stderr
    assert "warning: ds01ctl's policy is NOT the running controller's" in plan.stderr
    assert f"the controller runs specs {specs}" in plan.stderr


# --- get -w in a real terminal --------------------------------------------------------------------


def _screen(session: str) -> str:
    done = subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout


def _wait_for_screen(session: str, predicate: Any, what: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(session)
        if predicate(screen):
            return screen
        time.sleep(0.5)
    raise AssertionError(f"the screen never showed {what}:\n{screen}")


def test_get_containers_watch_updates_the_screen_when_a_container_starts_and_stops(
    cli: Cli, make_container: ContainerFactory
) -> None:
    selector = f"{TEST_LABEL}={make_container.test_id}"
    script = cli.root / "watch.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in cli.env.items() if k.isidentifier())
    script.write_text(
        f"{exports}cd {shlex.quote(str(REPO))}\n"
        f"exec {shlex.quote(sys.executable)} -m controller.cli get containers --all -w"
        f" -l {shlex.quote(selector)}\n"
    )
    session = f"ds01w-{os.getpid()}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "40", f"bash {script}"],
        check=True,
        timeout=30,
    )
    try:
        c = make_container("sleep 600", start=False)
        _wait_for_screen(session, lambda s: c.name in s and "created" in s, f"{c.name} created")
        c.start()
        _wait_for_screen(session, lambda s: c.name in s and "running" in s, f"{c.name} running")
        c.stop(timeout=1)
        screen = _wait_for_screen(session, lambda s: c.name in s and "exited" in s, f"{c.name} exited")
        assert screen.count("NAME") == 1, screen  # redrawn in place, not appended
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], timeout=30, check=False)


def test_get_alerts_lists_an_open_duplicate_holder_with_its_evidence(
    cli: Cli, make_container: ContainerFactory
) -> None:
    a = gpu_container(make_container)
    c = gpu_container(make_container, owner="bob")  # the same full GPU: DuplicateGpuHolder
    result = cli("get", "alerts", "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "AlertList"
    (mine,) = [i for i in data["items"] if a.id in i["key"] and c.id in i["key"]]
    assert mine["reason"] == "DuplicateGpuHolder" and mine["target"] == gpu_uuid(0)
    assert mine["since"] is None and mine["evidence"]  # raised now, never delivered (no daemon ran)
    table = cli("get", "alerts")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["REASON", "TARGET", "AGE", "MESSAGE"]
    assert "DuplicateGpuHolder" in cli("get", "alerts", "--no-headers").stdout.splitlines()[0]
    # The engine may be shared: another test's container on the same stand-in GPU joins the key.
    names = cli("get", "alerts", "-o", "name").stdout.splitlines()
    assert [
        n for n in names if n.startswith("alert/AlertAdmin:DuplicateGpuHolder:") and a.id in n and c.id in n
    ]
    # One holder stops: it is no longer in any open alert (cleared, when it was the only other one).
    c.stop(timeout=1)
    cleared = json.loads(cli("get", "alerts", "-o", "json").stdout)
    assert not [i for i in cleared["items"] if c.id in i["key"]]


def test_plan_sees_a_pending_breaker_reset_and_a_record_the_daemon_cannot_write(
    cli: Cli, make_container: ContainerFactory
) -> None:
    """`ds01ctl breaker reset` while the daemon runs leaves a request its next pass takes before it
    plans: `plan` showed the removal held by the breaker, and said nothing would change. And a
    daemon that cannot write its record runs no destructive action: `plan` did not say so."""
    from controller.memory import Breaker, ControllerMemory
    from controller.store import BREAKER_RESET_REQUEST, POLICY_STATUS_FILE, MemoryStore

    c = make_container(start=False)  # created, never started: removed once its timeout is over
    state = cli.root / "state"
    MemoryStore(state).save(ControllerMemory(breaker=Breaker(tripped=True, reason="7 of 8 would stop")))

    def items(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
        data = json.loads(result.stdout)  # a forecast: each action with the pass it comes in
        found = [*(a["action"] for a in data["actions"]), *data["deferred"]]
        return [i for i in found if i["target"].get("container_id") == c.id]

    held = cli("plan", "--at", "+2h", "-o", "json")
    assert held.returncode in (0, 2), held.stderr
    assert [i.get("why") for i in items(held)] == ["BreakerOpen"]

    (state / BREAKER_RESET_REQUEST).write_text("requested\n")
    pending = cli("plan", "--at", "+2h", "-o", "json")
    assert "a breaker reset is pending: planned with the breakers closed" in pending.stderr
    (item,) = items(pending)
    assert item.get("kind") == "RemoveContainer" or item.get("why") == "BudgetExhausted", item

    (state / POLICY_STATUS_FILE).write_text(json.dumps({"record_error": "No space left on device"}))
    unwritable = cli("plan", "--at", "+2h")
    assert (
        "the running controller cannot write its record (No space left on device): it runs no "
        "destructive action until it can"
    ) in unwritable.stderr
    assert "dry-run" not in unwritable.stderr
    # A controller in dry-run (the shipped setting) carries out nothing that plan lists: said too.
    dry = cli("plan", "--at", "+2h", env={"DS01_DRY_RUN": "1"})
    assert (
        "the controller runs in dry-run" in dry.stderr and "nothing listed here is carried out" in dry.stderr
    )
