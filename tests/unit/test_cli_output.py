"""Golden outputs of every ``ds01ctl get`` and ``describe`` form, and of ``plan``, on a fixed host.

The host is :mod:`tests.unit.cli_world`. Set ``DS01_UPDATE_GOLDEN=1`` to rewrite the files after
an intended change, then read the diff.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.act.events import tail
from controller.cli.describe import describe_container, describe_gpu, describe_user
from controller.cli.get import GetOptions, parse_selector, run_get
from controller.cli.planview import plan_text
from controller.cli.view import View
from tests.fixtures.local_zone import utc_clock  # noqa: F401 (the fixture)
from tests.unit import cli_world as w

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "cli" / "golden"
SHUFFLED = (4, 2, 0, 3, 1)


pytestmark = pytest.mark.usefixtures("utc_clock")  # clock times in the output are local


@pytest.fixture
def events_log(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    w.write_events(path)
    return path


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("DS01_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with DS01_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def get(kind: str, **opts: object) -> Callable[[View], str]:
    def render(view: View) -> str:
        if kind == "events":
            assert view.event_source is not None
            view.events = tail(Path(view.event_source.describe()), 50)
        text, _ = run_get(kind, view, GetOptions(**opts))  # type: ignore[arg-type]
        return text

    return render


FORMS: dict[str, Callable[[View], str]] = {
    "get_containers": get("containers"),
    "get_containers_all_wide": get("containers", show_all=True, output="wide"),
    "get_containers_owner_alice": get("containers", owner="alice"),
    "get_containers_selector": get(
        "containers", show_all=True, selector=parse_selector(["ds01.managed=true"])
    ),
    "get_gpus": get("gpus"),
    "get_gpus_wide": get("gpus", output="wide"),
    "get_processes": get("processes"),
    "get_allocations": get("allocations"),
    "get_policies": get("policies"),
    "get_policies_wide": get("policies", output="wide"),
    "get_events": get("events"),
    "describe_container_alice": lambda v: describe_container(v, "alice-train"),
    "describe_container_bob": lambda v: describe_container(v, "bob-notebook"),
    "describe_container_carol": lambda v: describe_container(v, "carol-old"),
    "describe_container_dave": lambda v: describe_container(v, "dave-new"),
    "describe_container_eve": lambda v: describe_container(v, "eve-web"),
    "describe_gpu_0": lambda v: describe_gpu(v, "0"),
    "describe_gpu_1": lambda v: describe_gpu(v, "1"),
    "describe_gpu_1_0": lambda v: describe_gpu(v, "1.0"),
    "describe_gpu_2": lambda v: describe_gpu(v, w.b.GPU2),
    "describe_user_alice": lambda v: describe_user(v, "alice"),
    "describe_user_frank": lambda v: describe_user(v, "frank"),
    "plan": lambda v: plan_text(v.plan) if v.plan else "",
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_golden(name: str, events_log: Path) -> None:
    check_golden(name, FORMS[name](w.view(events_log)))


@pytest.mark.parametrize("name", sorted(FORMS))
def test_output_does_not_depend_on_the_order_of_the_snapshot(name: str, events_log: Path) -> None:
    assert FORMS[name](w.view(events_log, order=SHUFFLED)) == FORMS[name](w.view(events_log))


def test_describe_without_memory_says_timers_are_unavailable(events_log: Path) -> None:
    text = describe_container(w.view(events_log, with_memory=False), "alice-train")
    check_golden("describe_container_alice_no_memory", text)
    assert "idle time unavailable (timers unavailable: state directory" in text


@pytest.mark.parametrize("name", sorted(FORMS))
def test_no_control_character_reaches_the_output(name: str, events_log: Path) -> None:
    text = FORMS[name](w.view(events_log))
    assert not any(ch < " " and ch != "\n" for ch in text), repr(text)
    assert "\u202e" not in text and "\x9b" not in text


def test_gpu_states_never_call_unknown_free() -> None:
    from controller.snapshot import Domain

    snap = w.b.snapshot(
        containers=[w.b.running("holder", gpus=[w.b.GPU0], sig=w.b.signals(w.T0))],
        gpus=[
            w.b.gpu(0),
            w.b.gpu(1).model_copy(update={"processes_unknown": "NVML_ERROR_UNKNOWN"}),
            w.b.gpu(2).model_copy(update={"mig_enabled": True, "utilization_percent": None}),
            w.b.gpu(3),
        ],
    )
    view = View(snapshot=snap, now=w.T0)
    text, _ = run_get("gpus", view, GetOptions())
    states = {line.split()[0]: line.split()[-1] for line in text.splitlines()[1:]}
    assert states == {"0": "held", "1": "unknown", "2": "unavailable", "3": "free"}

    down = w.b.snapshot(
        containers=[w.b.running("holder", gpus=[w.b.GPU0], sig=w.b.signals(w.T0))],
        gpus=[w.b.gpu(0)],
        down=[Domain.NVML],
    )
    text, _ = run_get("gpus", View(snapshot=down, now=w.T0), GetOptions(output="wide"))
    (row,) = [line.split() for line in text.splitlines()[1:]]
    assert row[0] == "unknown" and row[1] == w.b.GPU0 and row[-1] == "unavailable" and "holder" in row


def test_with_docker_down_no_process_is_called_an_orphan_and_no_gpu_free() -> None:
    from controller.snapshot import Domain

    snap = w.b.snapshot(
        gpus=[w.b.gpu(0, processes=(77,))],
        processes=[w.b.process(77, w.b.GPU0, container_id="a" * 64)],
        down=[Domain.DOCKER],
    )
    view = View(snapshot=snap, now=w.T0)
    procs, _ = run_get("processes", view, GetOptions())
    (row,) = [line.split() for line in procs.splitlines()[1:]]
    assert row[0] == "77" and row[4] == "unknown" and row[-1] == "unknown"
    gpus, _ = run_get("gpus", view, GetOptions())
    assert [line.split()[-1] for line in gpus.splitlines()[1:]] == ["unknown"]


def test_a_tripped_release_breaker_shows_in_get_allocations_and_describe() -> None:
    from controller.memory import Breaker

    v = w.view()
    assert v.memory is not None
    tripped = Breaker(tripped=True, tripped_at=w.b.T0, reason="this pass would release 9 of 10 ledger rows")
    v.memory = v.memory.model_copy(update={"release_breaker": tripped})
    text, _ = run_get("allocations", v, GetOptions())
    first = text.splitlines()[0]
    assert first.startswith("release breaker: TRIPPED at ") and "9 of 10 ledger rows" in first
    assert "sudo ds01ctl breaker reset" in first
    data = json.loads(run_get("allocations", v, GetOptions(output="json"))[0])
    assert data["release_breaker"]["tripped"] is True
    for text in (describe_gpu(v, "2"), describe_user(v, "alice")):
        ledger = text.split("Ledger", 1)[1]
        assert "release breaker: TRIPPED" in ledger.splitlines()[1]
    # Closed: nothing is added to the usual output.
    assert "release breaker" not in run_get("allocations", w.view(), GetOptions())[0]


def test_a_row_the_plan_cannot_judge_is_unknown_not_leaked() -> None:
    from controller.memory import ControllerMemory
    from controller.plan.planner import plan as make_plan

    renamed = w.b.running("train-old", gpus=[w.b.GPU0], sig=w.b.signals(w.b.T0))
    rows = w.b.ledger(w.b.ledger_entry("train", w.b.GPU0), w.b.ledger_entry(f"{1:064x}", w.b.GPU1))
    snap = w.b.snapshot(containers=[renamed], gpus=[w.b.gpu(0), w.b.gpu(1)], ledger=rows)
    p = make_plan(snap, w.b.desired(), ControllerMemory(), w.b.T0)
    v = w.view()
    v.snapshot, v.plan, v.memory = snap, p, p.memory
    items = json.loads(run_get("allocations", v, GetOptions(output="json"))[0])["items"]
    assert {i["gpu"]: i["verdict"] for i in items} == {w.b.GPU0: "unknown", w.b.GPU1: "leaked"}


def test_describe_says_which_setting_decides_the_idle_stop(events_log: Path) -> None:
    """An idle span longer than the idle timeout: describe names both settings and their sources."""
    import dataclasses

    from controller.plan.desired import StaticDesired
    from desired_state.effective import Sourced
    from tests.fixtures import builders as b

    def policy(c: object, _now: object) -> object:
        return b.policy(
            idle_timeout_s=Sourced(value=14.4, source="LifecyclePolicy/ds01"),
            idle_min_duration_s=Sourced(value=300.0, source="built-in default"),
        )

    view = dataclasses.replace(w.view(events_log), desired=StaticDesired(policy, b.global_policy()))  # type: ignore[arg-type]
    text = describe_container(view, "alice-train")
    assert (
        "note: idleMinDuration 5m (built-in default) is longer than the idle timeout 14.4s "
        "(LifecyclePolicy/ds01)" in text
    )
    assert "idleMinDuration decides, not the idle timeout" in text


def test_one_time_convention_local_with_zone_or_utc_on_request(
    events_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every time a person reads is local with its zone, no microseconds; --utc switches all."""
    import re

    from controller.cli.render import set_utc

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    v = w.view(events_log)
    texts = [describe_container(v, "alice-train"), plan_text(v.plan) if v.plan else "", get("events")(v)]
    for text in texts:
        assert not re.search(r"\d{2}:\d{2}:\d{2}(\.\d+)?Z", text), text  # no ISO UTC stamps
        assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d", text), text  # no microseconds
    describe = texts[0]
    assert "started 5h ago (2026-03-02 02:00:00 EST)" in describe
    assert "stop and remove due 07:08 EST (in 8m)" in describe
    assert texts[1].startswith("Plan at 2026-03-02 07:00:00 EST")
    assert "2026-03-02 06:56:00 EST" in texts[2]
    set_utc(True)
    try:
        describe = describe_container(v, "alice-train")
    finally:
        set_utc(False)
    assert "started 5h ago (2026-03-02 07:00:00 UTC)" in describe
    assert "stop and remove due 12:08 UTC" in describe


def test_plan_by_default_leaves_evidence_and_not_due_items_to_wide() -> None:
    v = w.view()
    assert v.plan is not None
    text = plan_text(v.plan, wide=False)
    assert "evidence:" not in text and "elapsed_s" not in text
    # alice's idle stop and carol's removal are not due; bob's is held by his keep-alive: shown.
    assert "~ IdleTimeout bob-notebook  [KeepAlive; no due time]" in text
    assert "alice-train  [NotDue" not in text
    assert "  ... and 2 not due yet (ds01ctl plan -o wide lists them, with the evidence)" in text
    assert text.rstrip().endswith("(-o wide: evidence)")
    wide = plan_text(v.plan, wide=True)
    assert "alice-train  [NotDue" in wide and "evidence: clock_start=" in wide


def test_output_name_and_no_headers_as_kubectl() -> None:
    v = w.view()
    names, _ = run_get("containers", v, GetOptions(output="name", show_all=True))
    assert names.splitlines()[0] == "container/alice-train"
    assert all(line.startswith("container/") for line in names.splitlines())
    gpus, _ = run_get("gpus", v, GetOptions(output="name"))
    assert gpus.splitlines()[0] == "gpu/0"
    policies, _ = run_get("policies", v, GetOptions(output="name"))
    assert "lifecyclepolicy/default" in policies.splitlines()
    table, _ = run_get("containers", v, GetOptions(show_all=True))
    bare, _ = run_get("containers", v, GetOptions(show_all=True, no_headers=True))
    assert bare == table.split("\n", 1)[1] and not bare.startswith("NAME")


def test_describe_user_previews_the_policy_of_a_user_without_containers() -> None:
    v = w.view()
    text = describe_user(v, "newstudent")
    assert text.startswith("note: 'newstudent' has no containers")
    assert "Name:" in text and "Policy:" in text
    with pytest.raises(Exception, match="not a login name"):
        describe_user(v, "no such/user")


def test_sort_by_next_and_idle() -> None:
    v = w.view()

    def order(key: str) -> list[str]:
        text, _ = run_get("containers", v, GetOptions(show_all=True, sort_by=key))
        return [line.split()[0] for line in text.splitlines()[1:]]

    # dave-new is removed now; alice's warning is due in 5 min; carol's removal in 3 h; the rest never.
    assert order("next")[:3] == ["dave-new", "alice-train", "carol-old"]
    assert order("idle")[0] == "alice-train"
    assert order("name") == sorted(order("name"))
    assert order("age")[:2] == ["eve-web", "bob-notebook"]  # created 10 and 3 days ago


def test_sort_by_next_follows_the_forecast_the_next_column_shows() -> None:
    # Two idle GPU containers without a max runtime: aa-new in its grace period (the plan's step:
    # "grace ends 12:05"), bb-old idle since 11:55 (warning 12:07). On a small host NEXT shows the
    # forecast: aa-new "warning 12:29, ...", bb-old "warning 12:07, ...". --sort-by next ordered by
    # the plan's grace end, listing aa-new first, while the column said bb-old comes first.
    from controller.cli.forecastview import forecast_for_view
    from tests.fixtures import builders as b

    pol = b.policy(idle_timeout_s=1800.0, grace_period_s=1800.0, idle_detection_window=1, max_runtime_s=None)
    passes = b.Passes(b.desired(pol))
    busy = b.Counters()
    for m in range(-20, 1):
        t = b.at(minutes=m)
        busy.step(60, cpu_pct=50 if m < -5 else 0)
        new = b.running(
            "aa-new", gpus=[b.GPU0], started_at=b.ago(minutes=25), sig=b.signals(t, gpu_pct={b.GPU0: 0.0})
        )
        old = b.running(
            "bb-old", gpus=[b.GPU1], started_at=b.ago(hours=3), sig=busy.read(t, gpu_pct={b.GPU1: 0.0})
        )
        snap = b.snapshot(observed_at=t, containers=[new, old], gpus=[b.gpu(0), b.gpu(1)])
        p = passes.run(snap)
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    view.forecast = forecast_for_view(view, 30.0, small_hosts_only=True)
    rows = [
        line.split() for line in run_get("containers", view, GetOptions(sort_by="next"))[0].splitlines()[1:]
    ]
    assert [(r[0], r[r.index("warning") + 1]) for r in rows] == [("bb-old", "12:07"), ("aa-new", "12:29")], (
        rows
    )


def test_an_id_prefix_two_containers_share_is_ambiguous_not_missing() -> None:
    from controller.cli.describe import find_container
    from controller.cli.errors import CliError
    from tests.fixtures import builders as b

    one = b.running("one", id="abcd" + "1" * 60)
    two = b.running("two", id="abcd" + "2" * 60)
    view = View(snapshot=b.snapshot(containers=[one, two]), now=b.T0)
    for lookup in (
        lambda: find_container(view, "abcd"),
        lambda: run_get("containers", view, GetOptions(name="abcd")),
    ):
        with pytest.raises(CliError) as err:
            lookup()
        assert "not found" not in str(err.value) and "2 containers" in str(err.value), err.value
    assert find_container(view, "abcd1").name == "one"  # a unique prefix still finds it


def test_get_gpus_owner_and_selector_keep_that_owners_gpus() -> None:
    # "--owner keeps one owner's objects": get gpus --owner alice listed every GPU on the host.
    v = w.view()

    def slots(**kw: object) -> list[str]:
        text, _ = run_get("gpus", v, GetOptions(**kw))  # type: ignore[arg-type]
        return [line.split()[0] for line in text.splitlines()[1:]]

    assert slots() == ["0", "1", "1.0", "1.1", "2"]
    assert slots(owner="alice") == ["0"]  # alice-train's GPU, her process on it
    assert slots(owner="bob") == ["1", "1.0"]  # his MIG device, and the GPU it is part of
    assert slots(owner="mallory") == ["2"]  # a host process of hers
    assert slots(owner="nobody") == []
    assert slots(selector=parse_selector(["ds01.managed=true"])) == ["0"]


def test_get_users_and_allocations_name_one_object_not_every_one() -> None:
    # NAME is "one object"; get users NAME and get allocations NAME ignored it and listed all.
    from controller.cli.errors import CliError

    v = w.view()

    def first_column(kind: str, name: str) -> list[str]:
        text, _ = run_get(kind, v, GetOptions(name=name))
        return [line.split()[0] for line in text.splitlines()[1:]]

    assert first_column("users", "alice") == ["alice"]
    assert first_column("allocations", "0") == ["0"]
    assert first_column("allocations", "1.1") == ["1.1"]
    assert first_column("allocations", w.MIG_1_0) == ["1.0"]
    assert first_column("allocations", w.MIG_1_1[:18]) == ["1.1"]  # a UUID prefix
    for kind, name in (("users", "nobody"), ("allocations", "7")):
        with pytest.raises(CliError, match=f"'{name}'"):
            run_get(kind, v, GetOptions(name=name))
