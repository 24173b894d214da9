"""Fuzzing user-chosen text through the whole controller: observation, planning, events, ``ds01ctl``.

Hypothesis draws container names (within Docker's charset), label keys and values, the
``NVIDIA_VISIBLE_DEVICES`` value, GPU device ids, a process command line and a user name: any
Unicode (controls, C1, bidi overrides, lone surrogates, NUL), mixed with known escape sequences and
long runs. Each example goes through

1. the pure observation functions on synthetic inspect data: :func:`classify` and
   :func:`extract_gpu_refs` / :func:`resolve_gpu_refs`;
2. two planning passes with the real policy resolution (labels trusted or not);
3. the event log (awareness events, dry-run outcomes, an event carrying the raw values), written
   to a temporary file;
4. ``ds01ctl``'s rendering: ``get containers`` (table, wide, JSON), ``get processes``,
   ``describe container`` and ``get events``.

Nothing may raise; no rendered text may contain a control character (other than the newline that
ends a line), a C1 control, a bidi override or a lone surrogate; every event line is valid UTF-8
JSON, one object, shorter than 4096 bytes; a table has exactly one row per container.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import labels as L
from controller.act.dry_run import DryRunExecutor
from controller.act.events import EventLog, tail
from controller.act.inventory import awareness_events
from controller.cli.describe import describe_container
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.memory import ControllerMemory
from controller.observe.classify import classify
from controller.observe.gpu_refs import extract_gpu_refs, resolve_gpu_refs
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from controller.snapshot import ContainerObs, GpuProcessObs, GpuUuid, Snapshot
from desired_state.load import load_spec_text
from tests.fixtures import builders as b

FORBIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)

FRAGMENTS = [
    "\x1b[2J",
    "\x1b[H",
    "\x1b]0;title\x07",
    "\x1b]8;;http://x\x1b\\",
    "\x9b31m",
    "\x1bP+q\x1b\\",
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\u202e",
    "\u2066",
    "\ud800",
    "\x85",
    "\u2028",
    '{"event_type":"forged"}',
    "\t|\t",
    "GPU-",
    "MIG-",
    "all",
    "0",
    "1.0",
    "x" * 5000,
    "é",
    "😀",
]
hostile_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=40)), max_size=6).map("".join)
docker_name = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}", fullmatch=True)
label_keys = st.one_of(
    st.sampled_from(
        [
            L.DS01_USER,
            L.AIME_USER,
            L.DS01_CONTAINER_TYPE,
            L.DS01_INTERFACE,
            L.DS01_PROTECTED,
            L.DS01_MONITORING,
            L.DS01_MANAGED,
            L.DS01_GPU_UUID,
            L.DS01_GPU_UUIDS,
            L.DS01_GPU_SLOT,
            L.DS01_GPU_SLOTS,
            L.DEVCONTAINER_LOCAL_FOLDER,
            L.COMPOSE_WORKING_DIR,
        ]
    ),
    hostile_text,
)

POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: fuzz
spec:
  trustLabels: %s
  settings:
    gracePeriod: 0s
    idleDetectionWindow: 1
    idleMinDuration: 0s
    createdContainerTimeout: 0s
  containerTypes:
    docker:
      idleTimeout: 1s
      maxRuntime: 1s
"""
DESIRED = {trust: PolicySetDesired(load_spec_text(POLICY % str(trust).lower())) for trust in (True, False)}
GPUS = [b.gpu(0), b.gpu(1, mig_slots=2)]


def assert_inert(text: str, where: str) -> None:
    bad = FORBIDDEN.search(text)
    assert bad is None, f"{where}: {bad.group()!r} in {text[:300]!r}"


def inspect_data(labels: dict[str, str], visible: str, device_ids: list[str]) -> dict[str, Any]:
    return {
        "Config": {"Labels": labels, "Env": [f"NVIDIA_VISIBLE_DEVICES={visible}", "PATH=/bin"]},
        "HostConfig": {
            "Runtime": "nvidia",
            "DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": device_ids, "Capabilities": [["gpu"]]}],
        },
    }


def observed(
    name: str,
    labels: dict[str, str],
    visible: str,
    device_ids: list[str],
    uid_name: str | None,
    at_s: float,
) -> ContainerObs:
    """What the observer would produce from this inspect data (pure functions only)."""
    verdict = classify(name, labels, 1000, lambda _uid: uid_name)
    refs = resolve_gpu_refs(extract_gpu_refs(inspect_data(labels, visible, device_ids)), GPUS)
    sig = b.signals(b.at(seconds=at_s), cpu_usage_ns=int(at_s * 1000), net_bytes=0, gpu_pct={b.GPU0: 0.0})
    return b.running(name, labels=labels, started_at=b.ago(hours=1), sig=sig).model_copy(
        update={
            "owner": verdict.owner,
            "owner_rule": verdict.owner_rule,
            "container_type": verdict.container_type,
            "type_rule": verdict.type_rule,
            "managed": verdict.managed,
            "protected_label": verdict.protected,
            "monitoring_label": verdict.monitoring,
            "gpu_refs": refs,
        }
    )


def process(cmdline: str, user: str, container_id: str | None) -> GpuProcessObs:
    return b.process(4242, b.GPU0, container_id=container_id, cmdline=cmdline, user=user).model_copy(
        update={"device_uuid": GpuUuid(b.GPU0)}
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
@given(
    names=st.lists(docker_name, min_size=1, max_size=3, unique=True),
    labels=st.dictionaries(label_keys, hostile_text, max_size=6),
    visible=hostile_text,
    device_ids=st.lists(hostile_text, max_size=3),
    uid_name=st.one_of(st.none(), hostile_text),
    cmdline=hostile_text,
    user=hostile_text,
    trust=st.booleans(),
    orphan=st.booleans(),
)
def test_hostile_text_never_crashes_a_pass_nor_escapes_into_any_output(
    names: list[str],
    labels: dict[str, str],
    visible: str,
    device_ids: list[str],
    uid_name: str | None,
    cmdline: str,
    user: str,
    trust: bool,
    orphan: bool,
) -> None:
    desired = DESIRED[trust]
    memory = ControllerMemory()
    snap: Snapshot | None = None
    for at_s in (0.0, 30.0):
        containers = [observed(n, labels, visible, device_ids, uid_name, at_s) for n in names]
        owner_of_process = ("f" * 64) if orphan else containers[0].id
        procs = [process(cmdline, user, owner_of_process)]
        snap = b.snapshot(observed_at=b.at(seconds=at_s), containers=containers, gpus=GPUS, processes=procs)
        p = plan(snap, desired, memory, snap.observed_at)
        memory = p.memory
    assert snap is not None

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        log = EventLog(path)
        for event_type, who, details in awareness_events({"containers": {}, "host_processes": {}}, snap):
            log.write(event_type, user=who, details=details)
        DryRunExecutor(log).execute(p, memory, snap.observed_at)
        log.write(
            "controller.warning",
            user=labels.get(L.DS01_USER, user),
            details={"labels": labels, "cmdline": cmdline, "visible": visible, user: device_ids},
        )
        raw = path.read_bytes()
        assert raw.endswith(b"\n")
        for line in raw.split(b"\n")[:-1]:
            assert len(line) + 1 < 4096
            event = json.loads(line.decode("utf-8"))
            assert isinstance(event, dict)
            assert_inert(json.dumps(event, ensure_ascii=False), "event")

        view = View(
            snapshot=snap,
            now=snap.observed_at + timedelta(seconds=1),
            plan=p,
            memory=memory,
            desired=desired,
            events=tail(path, 100),
        )
        table, _ = run_get("containers", view, GetOptions(show_all=True))
        assert_inert(table, "get containers")
        assert len(table.splitlines()) == len(names) + 1
        wide, _ = run_get("containers", view, GetOptions(show_all=True, output="wide"))
        assert_inert(wide, "get containers -o wide")
        assert len(wide.splitlines()) == len(names) + 1
        machine, _ = run_get("containers", view, GetOptions(show_all=True, output="json"))
        assert len(json.loads(machine)["items"]) == len(names)
        assert_inert(machine, "get containers -o json")
        procs_out, _ = run_get("processes", view, GetOptions())
        assert_inert(procs_out, "get processes")
        assert len(procs_out.splitlines()) == 2
        events_out, _ = run_get("events", view, GetOptions())
        assert_inert(events_out, "get events")
        for n in names:
            assert_inert(describe_container(view, n), f"describe container {n}")
