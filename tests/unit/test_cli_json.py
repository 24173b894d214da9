"""The machine outputs of ``ds01ctl`` keep their documented shape (docs/cli.md), and the NEXT
column tells the same story as the real planner's plan.

The shapes are checked against small JSON-schema-like descriptions: a dict maps each required key
to its type description; ``[T]`` is a list of T; a tuple is a union; ``ANY`` accepts anything.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli.get import GetOptions, run_get
from controller.cli.planview import plan_json
from controller.cli.render import UNKNOWN
from controller.cli.view import NO_RATE_YET, NOT_SAMPLED, View, next_step
from controller.memory import ControllerMemory
from controller.plan.planner import plan as make_plan
from controller.snapshot import Domain, DomainHealth
from tests.fixtures import builders as b
from tests.unit import cli_world as w

ANY = object()
STR_OR_NONE = (str, type(None))
NUM = (int, float)
NUM_OR_NONE = (int, float, type(None))

TARGET = {
    "container": STR_OR_NONE,
    "container_id": STR_OR_NONE,
    "expected_state": STR_OR_NONE,
    "expected_started_at": STR_OR_NONE,
    "pid": (int, type(None)),
    "pid_start_time": NUM_OR_NONE,
    "gpu": STR_OR_NONE,
    "user": STR_OR_NONE,
    "ledger_entry": (dict, type(None)),
}
ACTION = {
    "kind": str,
    "target": TARGET,
    "reason": str,
    "message": str,
    "evidence": dict,
    "due_at": str,
    "key": str,
    "params": dict,
}
PLAN_SCHEMA = {
    "observed_at": str,
    "evaluated_at": str,
    "actions": [ACTION],
    "deferred": [
        {
            "target": TARGET,
            "rule": str,
            "why": str,
            "message": str,
            "due_at": STR_OR_NONE,
            "evidence": dict,
        }
    ],
    "delivered_alerts": [ACTION],
}
NEXT = {"action": str, "rule": str, "pending": bool, "due_at": STR_OR_NONE, "deferred_because": STR_OR_NONE}
CONTAINER_ITEM = {
    "name": str,
    "id": str,
    "image": str,
    "state": str,
    "owner": str,
    "owner_rule": str,
    "type": str,
    "type_rule": str,
    "managed": bool,
    "labels": dict,
    "gpus": [
        {
            "ref": str,
            "source": str,
            "uuid": STR_OR_NONE,
            "slot": STR_OR_NONE,
            "mig": bool,
            "unresolved_reason": STR_OR_NONE,
        }
    ],
    "all_gpus": bool,
    "created_at": str,
    "started_at": STR_OR_NONE,
    "finished_at": STR_OR_NONE,
    "idle": {"state": str, "since": STR_OR_NONE},
    "next": (NEXT, type(None)),
    "next_unknown": STR_OR_NONE,
    "signals": {
        "cpu_percent": NUM_OR_NONE,
        "cpu_unknown": STR_OR_NONE,
        "net_bytes_per_s": NUM_OR_NONE,
        "net_unknown": STR_OR_NONE,
        "gpu_util_percent": NUM_OR_NONE,
        "gpu_util_unknown": STR_OR_NONE,
        "keepalive": {"state": str, "mtime": STR_OR_NONE, "detail": STR_OR_NONE},
    },
}
GPU_ITEM = {
    "slot": STR_OR_NONE,  # None: NVML down, the index is not known
    "uuid": str,
    "parent_uuid": STR_OR_NONE,
    "model": STR_OR_NONE,
    "mig": STR_OR_NONE,
    "mig_profile": STR_OR_NONE,
    "memory_used_bytes": (int, type(None)),
    "memory_used_unknown": STR_OR_NONE,
    "memory_total_bytes": (int, type(None)),
    "utilization_percent": NUM_OR_NONE,
    "utilization_unknown": STR_OR_NONE,
    "holders": ([str], type(None)),  # None: not known (Docker down)
    "processes": ([int], type(None)),  # None: not known (NVML could not list them)
    "processes_unknown": STR_OR_NONE,
    "state": str,
    "hoarding": (bool, type(None)),
}
PROCESS_ITEM = {
    "pid": int,
    "gpu": str,
    "device_uuid": str,
    "gpu_uuid": str,
    "used_memory_bytes": (int, type(None)),
    "user": STR_OR_NONE,
    "uid": (int, type(None)),
    "container": str,
    "container_id": STR_OR_NONE,
    "command": str,
    "state": str,
    "verdict": str,
}
ALLOCATION_ITEM = {
    "gpu": str,
    "slot": STR_OR_NONE,
    "ledger": [dict],
    "holders": ([dict], type(None)),
    "verdict": str,
}


# A device whose processes NVML could not list (gpu and uuid None: every device, NVML being down).
UNLISTED = {"gpu": STR_OR_NONE, "uuid": STR_OR_NONE, "reason": str}


def envelope(item: Any) -> dict[str, Any]:
    return {"kind": str, "observed_at": str, "evaluated_at": str, "notes": [str], "items": [item]}


def conforms(value: Any, schema: Any, path: str = "$") -> list[str]:
    """Problems of ``value`` against ``schema`` (empty: it conforms). Extra keys are problems too."""
    if schema is ANY:
        return []
    if isinstance(schema, tuple):
        for option in schema:
            if not conforms(value, option, path):
                return []
        return [f"{path}: {value!r} matches none of {schema}"]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        problems = [f"{path}: missing {k}" for k in schema if k not in value]
        problems += [f"{path}: unexpected {k}" for k in value if k not in schema]
        for k, sub in schema.items():
            if k in value:
                problems += conforms(value[k], sub, f"{path}.{k}")
        return problems
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in conforms(v, schema[0], f"{path}[{i}]")]
    if schema is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected bool, got {value!r}"]
    if schema in (int, float) and isinstance(value, bool):
        return [f"{path}: expected a number, got {value!r}"]
    return [] if isinstance(value, schema) else [f"{path}: expected {schema}, got {value!r}"]


@pytest.fixture
def view() -> View:
    return w.view()


def test_plan_json_is_exactly_the_model_dump(view: View) -> None:
    assert view.plan is not None
    data = plan_json(view.plan)
    assert data == view.plan.model_dump(mode="json")
    assert conforms(data, PLAN_SCHEMA) == []
    assert {a["kind"] for a in data["actions"]} == {"RemoveContainer", "KillProcess", "ReleaseAllocation"}
    # JSON round trip: what `plan -o json` prints parses back to the same value.
    assert json.loads(json.dumps(data)) == data


def test_plan_json_cleans_user_strings_without_changing_the_shape(view: View) -> None:
    assert view.plan is not None
    hostile = view.plan.model_copy(
        update={"actions": (view.plan.actions[0].model_copy(update={"message": w.HOSTILE}),)}
    )
    data = plan_json(hostile)
    assert conforms(data, PLAN_SCHEMA) == []
    assert data["actions"][0]["message"] == "evil  FAKE ROW"


@pytest.mark.parametrize(
    ("kind", "item"),
    [
        ("containers", CONTAINER_ITEM),
        ("gpus", GPU_ITEM),
        ("processes", PROCESS_ITEM),
        ("allocations", ALLOCATION_ITEM),
        ("policies", {"kind": str, "name": str, "source": str, "detail": str}),
    ],
)
def test_get_json_and_yaml_shapes(kind: str, item: dict[str, Any], view: View) -> None:
    text, _ = run_get(kind, view, GetOptions(output="json", show_all=True))
    data = json.loads(text)
    schema = envelope(item)
    if kind == "policies":
        schema["policy"] = {
            "origin": str,
            "candidate": bool,
            "error": STR_OR_NONE,
            "daemon_reload_error": STR_OR_NONE,
            "daemon_reload_error_at": STR_OR_NONE,
            "record_error": STR_OR_NONE,
            "daemon_mismatch": STR_OR_NONE,
        }
    if kind == "allocations":
        schema["release_breaker"] = {"tripped": bool, "tripped_at": STR_OR_NONE, "reason": str}
    if kind == "processes":
        schema["processes_unknown"] = [UNLISTED]
    assert conforms(data, schema) == []
    assert data["items"], "the fixed host has objects of every kind"
    text, _ = run_get(kind, view, GetOptions(output="yaml", show_all=True))
    assert yaml.safe_load(text) == data


@pytest.mark.parametrize(("kind", "item"), [("gpus", GPU_ITEM), ("allocations", ALLOCATION_ITEM)])
def test_with_docker_down_the_holders_are_null_not_an_empty_list(
    kind: str, item: dict[str, Any], view: View
) -> None:
    health = tuple(
        DomainHealth(domain=h.domain, ok=False, error="docker failed (test)")
        if h.domain == Domain.DOCKER
        else h
        for h in view.snapshot.health
    )
    down = dataclasses.replace(
        view, snapshot=view.snapshot.model_copy(update={"health": health, "containers": ()})
    )
    data = json.loads(run_get(kind, down, GetOptions(output="json"))[0])
    schema = envelope(item)
    if kind == "allocations":
        schema["release_breaker"] = {"tripped": bool, "tripped_at": STR_OR_NONE, "reason": str}
    assert conforms(data, schema) == []
    assert data["items"] and all(i["holders"] is None for i in data["items"])


@pytest.mark.parametrize("kind", ["gpus", "processes"])
def test_with_nvml_down_the_processes_are_null_not_an_empty_list(kind: str, view: View) -> None:
    health = tuple(
        DomainHealth(domain=h.domain, ok=False, error="nvml failed (test)") if h.domain == Domain.NVML else h
        for h in view.snapshot.health
    )
    down = dataclasses.replace(
        view, snapshot=view.snapshot.model_copy(update={"health": health, "gpus": (), "processes": ()})
    )
    data = json.loads(run_get(kind, down, GetOptions(output="json"))[0])
    if kind == "gpus":
        assert conforms(data, envelope(GPU_ITEM)) == []
        assert data["items"] and all(i["processes"] is None for i in data["items"])
        assert {i["processes_unknown"] for i in data["items"]} == {"NVML unavailable: nvml failed (test)"}
        # The index is not known: null, as a container's GPU slot says it ("?" read as a slot).
        assert {i["slot"] for i in data["items"]} == {None}
    else:
        assert (
            conforms(data, {**envelope(PROCESS_ITEM), "items": type(None), "processes_unknown": [UNLISTED]})
            == []
        )
        assert data["processes_unknown"][0]["reason"] == "NVML unavailable: nvml failed (test)"


def test_container_json_carries_what_the_table_shows(view: View) -> None:
    data = json.loads(run_get("containers", view, GetOptions(output="json"))[0])
    by_name = {i["name"]: i for i in data["items"]}
    assert sorted(by_name) == ["alice-train", "bob-notebook", "carol-old", "dave-new"]
    alice = by_name["alice-train"]
    assert alice["owner"] == "alice" and alice["owner_rule"] == "label:ds01.user"
    assert alice["idle"] == {"state": "idle", "since": "2026-03-02T11:08:00Z"}
    assert alice["next"] == {
        "action": "warn",
        "rule": "IdleTimeout",
        "pending": False,
        "due_at": "2026-03-02T12:05:00Z",
        "deferred_because": "NotDue",
    }
    assert by_name["dave-new"]["next"]["pending"] is True
    assert by_name["bob-notebook"]["next"] is None
    assert [g["slot"] for g in by_name["bob-notebook"]["gpus"]] == ["1.0"]
    # A hostile label value is cleaned in machine output too.
    eve = json.loads(run_get("containers", view, GetOptions(name="eve-web", output="json"))[0])["items"][0]
    assert eve["labels"]["web.note"] == "evil  FAKE ROW"


def test_a_stopped_container_s_keepalive_does_not_apply_in_json_as_in_the_table(view: View) -> None:
    # The JSON said "unknown" of a container not running, whose keep-alive file is never read, while
    # the wide table says "-" (does not apply): not running, as its idle state says.
    data = json.loads(run_get("containers", view, GetOptions(output="json", show_all=True))[0])
    by_name = {i["name"]: i for i in data["items"]}
    table = run_get("containers", view, GetOptions(output="wide", show_all=True))[0].splitlines()
    column = table[0].index("KEEPALIVE")
    cells = {row.split()[0]: row[column:].split()[0] for row in table[1:]}
    for name in ("carol-old", "dave-new"):
        assert by_name[name]["idle"]["state"] == "not-running"
        assert by_name[name]["signals"]["keepalive"] == {
            "state": "not-running",
            "mtime": None,
            "detail": None,
        }
        assert cells[name] == "-"
    assert by_name["bob-notebook"]["signals"]["keepalive"]["state"] == "present"
    assert cells["bob-notebook"] == "5m"


def test_with_no_plan_the_next_step_is_unknown_in_json_as_in_the_table(view: View) -> None:
    # The policy did not load, so nothing was planned: the table's NEXT says "unknown", while the
    # JSON's next was null, which it documents as "no next step".
    from controller.cli.view import PolicyInfo

    broken = dataclasses.replace(
        view, plan=None, desired=None, policy=PolicyInfo(error="lifecyclepolicy.yaml: bad duration")
    )
    data = json.loads(run_get("containers", broken, GetOptions(output="json", show_all=True))[0])
    assert conforms(data, envelope(CONTAINER_ITEM)) == []
    for item in data["items"]:
        assert item["next"] is None
        assert item["next_unknown"] == "no plan: lifecyclepolicy.yaml: bad duration", item["name"]
    table = run_get("containers", broken, GetOptions(show_all=True))[0].splitlines()
    column = table[0].index("NEXT")
    assert {row[column:].split()[0] for row in table[1:]} == {UNKNOWN}
    # Planned: a container with no next step has next null and nothing unknown.
    data = json.loads(run_get("containers", view, GetOptions(name="bob-notebook", output="json"))[0])
    assert (data["items"][0]["next"], data["items"][0]["next_unknown"]) == (None, None)


def test_an_unknown_cpu_or_network_rate_says_why_in_json_as_the_gpu_utilization_does(view: View) -> None:
    # cpu_percent and net_bytes_per_s were null with no reason beside them, where the wide table
    # says "unknown" and gpu_util_percent has its gpu_util_unknown: null read as "no figure", not
    # as unknown, and a stopped container's null (does not apply) read the same.
    def signals(v: View) -> dict[str, dict[str, Any]]:
        data = json.loads(run_get("containers", v, GetOptions(output="json", show_all=True))[0])
        assert conforms(data, envelope(CONTAINER_ITEM)) == []
        return {i["name"]: i["signals"] for i in data["items"]}

    known = signals(view)
    alice = known["alice-train"]
    assert alice["cpu_percent"] is not None and alice["net_bytes_per_s"] is not None
    assert (alice["cpu_unknown"], alice["net_unknown"]) == (None, None)
    # Running without a GPU: the controller never samples it, so no rate comes later either.
    assert known["eve-web"]["cpu_percent"] is None and known["eve-web"]["cpu_unknown"] == NOT_SAMPLED
    assert known["eve-web"]["net_bytes_per_s"] is None and known["eve-web"]["net_unknown"] == NOT_SAMPLED
    # A GPU container with fewer than two samples of this run: no rate yet.
    alice_id = next(c.id for c in view.snapshot.containers if c.name == "alice-train")
    assert view.memory is not None
    cm = view.memory.containers[alice_id]
    first = cm.model_copy(update={"samples": cm.samples[-1:]})
    one = view.memory.model_copy(update={"containers": {**view.memory.containers, alice_id: first}})
    early = signals(dataclasses.replace(view, memory=one))["alice-train"]
    assert (early["cpu_unknown"], early["net_unknown"]) == (NO_RATE_YET, NO_RATE_YET), early
    # Not running: does not apply, nothing unknown.
    for name in ("carol-old", "dave-new"):
        assert (known[name]["cpu_unknown"], known[name]["net_unknown"]) == (None, None), name
    # The controller's memory unreadable: no samples to take a rate from.
    blind = signals(w.view(with_memory=False))["alice-train"]
    assert blind["cpu_percent"] is None and blind["net_bytes_per_s"] is None
    assert blind["cpu_unknown"] and blind["net_unknown"] and "state" in blind["cpu_unknown"], blind
    # A counter the observer could not read: its own reason.
    c = next(c for c in view.snapshot.containers if c.name == "eve-web")
    assert c.signals is not None
    unread = c.model_copy(
        update={
            "signals": c.signals.model_copy(
                update={"cpu_usage_ns": None, "cpu_unknown": "cpu.stat unreadable"}
            )
        }
    )
    snap = view.snapshot.model_copy(
        update={"containers": tuple(x if x.name != "eve-web" else unread for x in view.snapshot.containers)}
    )
    assert (
        signals(dataclasses.replace(view, snapshot=snap))["eve-web"]["cpu_unknown"] == "cpu.stat unreadable"
    )


# --- NEXT against the real planner ------------------------------------------------------------


def test_next_column_follows_the_real_planners_plan() -> None:
    """Whatever the planner decides, NEXT is its first action, else its earliest timed deferral."""
    snap = b.snapshot(
        containers=[
            b.created("never-started", created_at=b.ago(hours=2)),
            b.exited("stopped-gpu", gpus=[b.GPU1], finished_at=b.ago(minutes=20)),
            b.exited("stopped-fresh", finished_at=b.ago(minutes=5)),
            b.running("busy", gpus=[b.GPU0], started_at=b.ago(hours=1), sig=b.signals(b.T0)),
        ],
        gpus=[b.gpu(0), b.gpu(1)],
    )
    the_plan = make_plan(snap, b.desired(), ControllerMemory(), b.T0)
    view = View(snapshot=snap, now=b.T0, plan=the_plan, memory=the_plan.memory, desired=b.desired())
    table, _ = run_get("containers", view, GetOptions(show_all=True))
    next_by_name = {line.split()[0]: " ".join(line.split()[6:-1]) for line in table.splitlines()[1:]}
    for c in snap.containers:
        items = [i for i in (*the_plan.actions, *the_plan.deferred) if i.target.container_id == c.id]
        step = next_step(items)
        assert next_by_name[c.name] == ("-" if step is None else step.text(b.T0)), c.name
    # The planner removes the never-started container now, and the stopped ones after their hold.
    assert next_by_name["never-started"] == "remove now"
    assert next_by_name["stopped-gpu"].startswith("remove")
    assert next_by_name["stopped-fresh"] == "remove in 25m"
    # A running GPU container seen for the first time has no idle verdict yet: nothing is scheduled
    # but the runtime limit, a day away.
    assert next_by_name["busy"] == "warn in 17h"
    runtime = [
        d for d in the_plan.deferred if d.target.container == "busy" and d.rule.value == "MaxRuntimeExceeded"
    ]
    assert [d.due_at for d in runtime] == [b.at(hours=17)]


def test_golden_files_are_plain_text() -> None:
    golden = Path(__file__).resolve().parents[1] / "data" / "cli" / "golden"
    files = sorted(golden.glob("*.txt"))
    assert files
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert "\x1b" not in text and "\r" not in text, f.name


def test_every_idle_state_is_documented() -> None:
    """`idle.state` in -o json takes exactly the values docs/cli.md lists (two were missing)."""
    import re
    from pathlib import Path

    from controller.cli.view import IdleState

    text = " ".join((Path(__file__).parents[2] / "docs" / "cli.md").read_text().split())
    found = re.search(r"`idle` \(`state`: `([^`]+)`", text)
    assert found is not None, "docs/cli.md no longer documents idle.state"
    assert {v.strip() for v in found.group(1).split("|")} == {s.value for s in IdleState}


def test_plan_policy_json_gives_its_times_in_utc_with_a_z_as_every_json_output() -> None:
    # ``plan --policy P -o json``: "until" and "compared_until" were Python's isoformat ("+00:00"),
    # beside forecasts whose times end in Z.
    from datetime import timedelta

    from controller.cli.forecastview import diff_json, run_forecast
    from controller.plan.forecast import compare

    desired = b.desired(b.policy())
    job = b.running("job", gpus=[b.GPU0], started_at=b.ago(hours=2), sig=b.signals(b.T0))
    snap = b.snapshot(containers=[job], gpus=[b.gpu(0)])
    p = make_plan(snap, desired, ControllerMemory(), b.T0)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=desired)
    horizon = b.T0 + timedelta(hours=2)  # --at, as parsed: in UTC
    current = run_forecast(view, horizon, 30.0)
    data = diff_json(compare(current, current, snap.containers), current, current, "strict.yaml", horizon)
    assert data["until"] == "2026-03-02T14:00:00Z", data["until"]
    assert data["compared_until"].endswith("Z") and data["current"]["until"].endswith("Z"), data
    assert json.loads(json.dumps(data)) == data


def test_a_ledger_time_written_with_a_local_offset_is_given_in_utc_with_a_z() -> None:
    # DS01's allocator may write allocated_at in its local time ("...T13:00:00+01:00"); get
    # allocations -o json printed it so, where every JSON time is UTC with a Z.
    from datetime import timedelta, timezone

    east = timezone(timedelta(hours=1))
    row = b.ledger_entry("job", allocated_at=b.ago(hours=2).astimezone(east))
    job = b.running("job", gpus=[b.GPU0], sig=b.signals(b.T0))
    snap = b.snapshot(containers=[job], gpus=[b.gpu(0)], ledger=b.ledger(row))
    p = make_plan(snap, b.desired(b.policy()), ControllerMemory(), b.T0)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=b.desired(b.policy()))
    data = json.loads(run_get("allocations", view, GetOptions(output="json"))[0])
    (item,) = data["items"]
    assert [e["allocated_at"] for e in item["ledger"]] == ["2026-03-02T10:00:00Z"], item


def test_with_nvml_down_a_ledger_row_s_slot_is_null_and_the_table_says_unknown(view: View) -> None:
    health = tuple(
        DomainHealth(domain=h.domain, ok=False, error="nvml failed (test)") if h.domain == Domain.NVML else h
        for h in view.snapshot.health
    )
    down = dataclasses.replace(
        view, snapshot=view.snapshot.model_copy(update={"health": health, "gpus": (), "processes": ()})
    )
    data = json.loads(run_get("allocations", down, GetOptions(output="json"))[0])
    assert data["items"] and {i["slot"] for i in data["items"]} == {None}
    table = run_get("allocations", down, GetOptions())[0]
    assert [row.split()[0] for row in table.splitlines()[1:] if row.strip()] == [UNKNOWN] * len(data["items"])
