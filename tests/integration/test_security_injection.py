"""Terminal and log injection: user-written text through observe -> plan -> events -> ds01ctl -> metrics.

A real container carries hostile label keys and values (ANSI escapes, OSC title sequences, carriage
returns, newlines that would forge a table row or a JSON event line, a NUL byte, bidi overrides, C1
controls, a 64 KiB value) and a hostile ``NVIDIA_VISIBLE_DEVICES``; a real host process, listed by
the stand-in NVML as a GPU process, has an argv with the same kind of bytes plus invalid UTF-8.
Docker does restrict container names, so the name is ordinary.

Followed end to end: the real observer, the planner, the event log (awareness events, dry-run
outcomes, and an event carrying the raw labels and command line), ``ds01ctl`` run as a process
(``get containers`` table and JSON, ``get processes``, ``describe container``, ``get events``),
the terminal notice written to a real pseudo-terminal, and the Prometheus rendering. Nothing a
user wrote may move the cursor, forge a line or a row, break a JSON line, or crash a pass.
"""

from __future__ import annotations

import json
import os
import pty
import pwd
import re
import select
import subprocess
import sys
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller import labels as L
from controller.act.dry_run import DryRunExecutor
from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.inventory import awareness_events, build_inventory
from controller.act.notify import Session, TerminalNotifier
from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.observe.cgroups import attribute
from controller.observe.nvml import NvmlObserver
from controller.ops.metrics import Metrics
from controller.pass_metrics import record_metrics
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan as make_plan
from controller.settings import Settings
from controller.snapshot import CgroupScope, GpuRefSource, Snapshot
from controller.wiring import build_controller
from desired_state.load import load_spec_text
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import NVML_STATE_ENV, FakeNvml, gpu_uuid

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
MARK = "PWNED"  # appears in every hostile value, so its surroundings can be checked
# Clear screen, home, window title, a carriage return that would overwrite the line, a newline
# followed by a fake table row and a fake JSON event, an RTL override, an 8-bit CSI.
HOSTILE = (
    f"\x1b[2J\x1b[H\x1b]0;{MARK}-title\x07ok\rFAKE {MARK}\n"
    f'{{"event_type":"forged","user":"root","details":{{"m":"{MARK}"}}}}\n'
    f"\u202e{MARK}-rtl\x9b31m\x00nul"
)
LABELS = {
    "note": HOSTILE,
    f"key\x1b[1m{MARK}\r\nkey": "value",
    L.DS01_USER: f"alice\x1b[31m{MARK}",  # not a plausible login name: decides nothing
    "big": "A" * 65536 + HOSTILE,
}
ARGV_TAIL = [HOSTILE.replace("\x00", ""), os.fsdecode(b"\xff\xfe\xc3(" + MARK.encode())]
VISIBLE_DEVICES = f"GPU-\x1b[31m{MARK}\r\nFAKE,0"

# Control characters a terminal acts on, C1 controls, bidi overrides, lone surrogates. \n and \t
# are the output's own line and cell separators.
FORBIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)

POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: security-injection
spec:
  settings:
    gracePeriod: 0s
  containerTypes:
    docker:
      maxRuntime: 1s
  safety:
    maxDestructiveActionsPerPass: 1000
"""


def assert_inert(text: str, where: str) -> None:
    bad = FORBIDDEN.search(text)
    assert bad is None, f"{where}: control character {bad.group()!r} in output: {text[:400]!r}"
    for line in text.splitlines():
        stripped = line.strip()
        # A forged line would start with the hostile text; a sanitised value stays inside its row.
        assert not stripped.startswith(("FAKE", '{"event_type":"forged"', "PWNED")), (where, line)


@dataclass
class World:
    container: Any
    pid: int
    snapshot: Snapshot
    env: dict[str, str]
    events: Path
    tmp: Path


@pytest.fixture(scope="module")
def world(
    module_containers: ContainerFactory, nvml_lib: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One hostile container, one hostile host GPU process, observed once (shared: tests only read)."""
    tmp = tmp_path_factory.mktemp("injection")
    fake = FakeNvml(state_path=tmp / "nvml-state", lib_dir=nvml_lib)
    fake.set_gpus(1)
    c = module_containers(
        ["sh", "-c", "sleep 300; :", *ARGV_TAIL],
        labels=LABELS,
        network_mode="none",
        # The variable is the route (no --gpus request, which would override it): its hostile token
        # is kept as evidence, and "0" gives the container GPU 0.
        runtime="nvidia",
        environment={"NVIDIA_VISIBLE_DEVICES": VISIBLE_DEVICES},
    )
    proc = subprocess.Popen(["sh", "-c", "sleep 300; :", *ARGV_TAIL])
    try:
        fake.add_process(gpu_uuid(0), proc.pid)
        fake.write()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(NVML_STATE_ENV, str(fake.state_path))
            config = ObserveConfig(ledger_path=tmp / "ledger.json")
            with HostObserver(config, nvml=NvmlObserver(timeout_s=10)) as observer:
                snap = observer.observe()
        specs = tmp / "specs"
        specs.mkdir()
        (specs / "policy.yaml").write_text(POLICY)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
        env.update(fake.env())
        events = tmp / "events.jsonl"
        env.update(
            {
                "DS01_SPECS": str(specs),
                "DS01_STATE_DIR": str(tmp / "state"),
                "DS01_EVENTS_LOG": str(events),
                "DS01_LEDGER": str(tmp / "ledger.json"),
                "NO_COLOR": "1",
            }
        )
        yield World(c, proc.pid, snap, env, events, tmp)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def ds01ctl(w: World, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        cwd=REPO,
        env=w.env,
        capture_output=True,
        timeout=120,
    )
    # Decoded strictly: the output is valid UTF-8 whatever the input bytes were.
    out, err = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    assert result.returncode == 0, (args, err)
    assert "Traceback" not in err
    assert_inert(out, " ".join(args))
    assert_inert(err, " ".join(args) + " (stderr)")
    return out


def test_hostile_values_are_observed_as_written(world: World) -> None:
    c = world.snapshot.container(world.container.id)
    assert c is not None
    # The observer keeps the data (it is evidence) and decides nothing from it.
    assert c.labels["note"] == HOSTILE and len(c.labels["big"]) > 65536
    assert c.owner != f"alice\x1b[31m{MARK}" and "\x1b" not in c.owner
    env_refs = [r for r in c.gpu_refs if r.source == GpuRefSource.VISIBLE_DEVICES_ENV]
    # The unresolvable reference is kept as evidence, its control characters made visible.
    assert any(MARK in r.raw and not r.resolved and "\x1b" not in r.raw for r in env_refs), env_refs
    p = next(p for p in world.snapshot.processes if p.pid == world.pid)
    assert MARK in p.cmdline


def test_the_event_log_stays_one_valid_json_object_per_line(world: World) -> None:
    snap = world.snapshot
    desired = PolicySetDesired(load_spec_text(POLICY))
    # Judged an hour later: past its one-second runtime limit, so the owner gets a warning.
    later = snap.observed_at + timedelta(hours=1)
    the_plan = make_plan(snap, desired, ControllerMemory(), later)
    ours = world.container.id
    log = EventLog(world.events)
    # Awareness events (discovery of the container and of the host GPU process, seen once before).
    seen_once = build_inventory(snap, None, min_age_s=0)
    seen_once["containers"] = {}
    for event_type, user, details in awareness_events(seen_once, snap, min_age_s=0):
        if details.get("container_id") == ours[:12] or details.get("pid") == world.pid:
            log.write(event_type, user=user, details=details)
    # What the executor would write for our container's actions.
    mine = the_plan.model_copy(
        update={"actions": [a for a in the_plan.actions if a.target.container_id == ours]}
    )
    assert mine.actions, "the policy gives the container a runtime warning"
    DryRunExecutor(log).execute(mine, ControllerMemory(), later)
    # And an event carrying the raw hostile values themselves.
    c = snap.container(ours)
    p = next(p for p in snap.processes if p.pid == world.pid)
    assert c is not None
    log.write(
        "controller.warning",
        user=c.labels[L.DS01_USER],
        details={"labels": dict(c.labels), "cmdline": p.cmdline, "refs": [r.raw for r in c.gpu_refs]},
    )

    raw = world.events.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and len(lines) >= 4
    for line in lines[:-1]:
        assert len(line) + 1 < 4096
        event = json.loads(line.decode("utf-8"))  # strict UTF-8, one object per line
        assert isinstance(event, dict) and event["event_type"] != "forged"

        def walk(value: Any) -> None:
            if isinstance(value, str):
                assert FORBIDDEN.search(value) is None, value
            elif isinstance(value, dict):
                for k, v in value.items():
                    walk(k)
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        walk(event)
    assert MARK.encode() in raw  # the hostile text is recorded (cleaned), not dropped

    # ds01ctl reads it back without letting anything through.
    out = ds01ctl(world, "get", "events", "--tail", "50")
    assert MARK in out


def test_ds01ctl_tables_json_and_describe_are_inert(world: World) -> None:
    name = world.container.name
    selector = f"{L.DS01_TEST}={world.container.labels[L.DS01_TEST]}"
    table = ds01ctl(world, "get", "containers", "--all", "-l", selector, "-o", "wide")
    assert len(table.splitlines()) == 2 and name in table.splitlines()[1]  # a header and one row

    data = json.loads(ds01ctl(world, "get", "containers", name, "-o", "json"))
    text = json.dumps(data, ensure_ascii=False)
    assert FORBIDDEN.search(text) is None and MARK in text

    procs = ds01ctl(world, "get", "processes", str(world.pid))
    rows = procs.splitlines()
    # "host", or "foreign" where the tests themselves run inside a sandbox's cgroup (/process_api/...).
    sandboxed = attribute(Path("/proc/self/cgroup").read_text()).scope is CgroupScope.FOREIGN
    assert len(rows) == 2 and str(world.pid) in rows[1] and ("foreign" if sandboxed else "host") in rows[1]

    described = ds01ctl(world, "describe", "container", name)
    note = [line for line in described.splitlines() if MARK in line]
    assert note, described
    # Each hostile value stays on its own label line, cut to a bounded length.
    assert all(len(line) < 400 for line in described.splitlines())


def read_terminal(master: int) -> str:
    chunks = b""
    while select.select([master], [], [], 0.2)[0]:
        chunk = os.read(master, 65536)
        if not chunk:
            break
        chunks += chunk
    return chunks.decode("utf-8")


def assert_terminal_safe(text: str) -> None:
    # The notifier's own CRLF line ends are the only carriage returns; nothing else is a control
    # character (no escape sequence, no lone CR to overwrite the header, no bidi override).
    body = text.replace("\r\n", "\n")
    bad = FORBIDDEN.search(body)
    assert bad is None, (bad.group(), text[:300])
    assert body.lstrip("\n").startswith("*** ds01-controller ")


def test_terminal_notices_cannot_drive_the_terminal(world: World, docker_client: Any, tmp_path: Path) -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)  # no output processing: the bytes read are exactly the bytes written
    try:
        terminal = os.ttyname(slave).removeprefix("/dev/")
        c = world.snapshot.container(world.container.id)
        assert c is not None
        notifier = TerminalNotifier(sessions=lambda: [Session(c.owner, terminal)])
        os.fchown(slave, pwd.getpwnam(c.owner).pw_uid, -1)
        os.fchmod(slave, 0o620)  # as a login leaves it (mesg y)

        # The real path: the planner's warning for the hostile container, delivered by the executor.
        later = world.snapshot.observed_at + timedelta(hours=1)
        the_plan = make_plan(
            world.snapshot, PolicySetDesired(load_spec_text(POLICY)), ControllerMemory(), later
        )
        warn = [
            a
            for a in the_plan.actions
            if a.target.container_id == c.id
            and a.kind.value == "WarnOwner"
            and a.reason.value == "MaxRuntimeWarning"
        ]
        assert warn, the_plan.actions
        executor = RealExecutor(
            docker_client, EventLog(tmp_path / "ev.jsonl"), notifier, tmp_path / "ledger.json"
        )
        report = executor.execute(the_plan.model_copy(update={"actions": warn}), ControllerMemory(), later)
        assert [o.outcome.value for o in report.outcomes] == ["done"], report.outcomes
        assert_terminal_safe(read_terminal(master))

        # Defence in depth: even raw user text handed to the notifier cannot drive the terminal.
        delivered = notifier.notify(c.owner, f"{c.name}: {c.labels['note']} {c.labels['big']}")
        assert delivered == 1
        text = read_terminal(master)
        assert MARK in text
        assert_terminal_safe(text)
    finally:
        os.close(master)
        os.close(slave)


def test_metrics_carry_no_user_text(world: World) -> None:
    snap = world.snapshot
    desired = PolicySetDesired(load_spec_text(POLICY))
    the_plan = make_plan(snap, desired, ControllerMemory(), snap.observed_at)
    report = DryRunExecutor(None).execute(the_plan, ControllerMemory(), snap.observed_at)
    metrics = Metrics(version="test")
    record_metrics(metrics, snap, the_plan, report, 0.5, the_plan.memory)
    text = metrics.render().decode("utf-8")
    assert MARK not in text and FORBIDDEN.search(text) is None
    families = list(text_string_to_metric_families(text))  # still a valid exposition
    assert any(f.name == "ds01_containers" for f in families)


def test_a_full_daemon_pass_over_the_hostile_container_completes(world: World, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "policy.yaml").write_text(POLICY)
    events = tmp_path / "events.jsonl"
    settings = Settings(
        specs=specs,
        state_dir=tmp_path / "state",
        events_log=events,
        ledger=tmp_path / "ledger.json",
        dry_run=True,  # the engine is shared: plan and report, never act
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(NVML_STATE_ENV, world.env[NVML_STATE_ENV])
        controller = build_controller(settings)
        try:
            result = controller.run_pass()
        finally:
            controller.observer.close()
    assert result.snapshot.container(world.container.id) is not None
    assert any(p.pid == world.pid for p in result.snapshot.processes)
    assert_inert(result.summary, "pass summary")
    for line in events.read_bytes().split(b"\n")[:-1] if events.exists() else []:
        assert len(line) + 1 < 4096
        assert_inert(json.dumps(json.loads(line.decode("utf-8")), ensure_ascii=False), "dry-run event")
