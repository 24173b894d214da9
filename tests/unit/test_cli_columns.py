"""NEXT and IDLE say what the plan says, with the real planner: a grace period is not a stop, NVML
down is unknown rather than a countdown, and a container doing nothing is not "active"."""

from __future__ import annotations

import json

from controller.cli.describe import describe_container
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.memory import ControllerMemory
from controller.plan.desired import StaticDesired
from controller.plan.planner import plan as make_plan
from controller.snapshot import Domain
from tests.fixtures import builders as b

GRACE = {"grace_period_s": 30 * 60.0, "idle_timeout_s": 60 * 60.0, "max_runtime_s": None}


def _view(*, busy: bool, down: tuple[Domain, ...] = (), started_min: float = 1.0) -> View:
    """Two passes 30 s apart over one GPU container started ``started_min`` minutes ago."""
    desired: StaticDesired = b.desired(b.policy(**GRACE))
    memory = ControllerMemory()
    p = None
    for i, at in enumerate((b.ago(seconds=30), b.T0)):
        cpu_ns = (i * 30_000_000_000) if busy else 1_000_000  # 100 % of a core, or nothing
        util = 87.0 if busy else 0.0
        c = b.running(
            "job",
            gpus=[b.GPU0],
            started_at=b.ago(minutes=started_min),
            created_at=b.ago(minutes=started_min),
            sig=b.signals(at, cpu_usage_ns=cpu_ns, net_bytes=0, gpu_pct={b.GPU0: util}),
        )
        snap = b.snapshot(observed_at=at, containers=[c], gpus=[b.gpu(0)], down=down)
        p = make_plan(snap, desired, memory, at)
        memory = p.memory
    assert p is not None
    return View(snapshot=snap, now=b.T0, plan=p, memory=memory, desired=desired)


def _row(view: View) -> dict[str, str]:
    text, _ = run_get("containers", view, GetOptions(show_all=True))
    header, row = text.splitlines()[:2]
    cols = header.split()
    starts = [header.index(h) for h in cols]
    return {
        h: row[s : (starts[i + 1] if i + 1 < len(cols) else None)].strip()
        for i, (h, s) in enumerate(zip(cols, starts, strict=True))
    }


def test_a_busy_container_in_its_grace_period_shows_no_stop() -> None:
    view = _view(busy=True)
    row = _row(view)
    assert row["IDLE"] == "active"
    assert not row["NEXT"].startswith(("stop", "warn")), row
    assert row["NEXT"] == "grace ends in 29m"
    item = json.loads(run_get("containers", view, GetOptions(show_all=True, output="json"))[0])["items"][0]
    assert item["next"]["action"] == "grace ends" and item["next"]["deferred_because"] == "GracePeriod"


def test_with_nvml_down_next_is_unknown_not_a_countdown() -> None:
    for started_min in (1.0, 45.0):  # in the grace period, and after it
        row = _row(_view(busy=True, down=(Domain.NVML,), started_min=started_min))
        assert row["NEXT"] == "unknown", (started_min, row)


def test_a_sleeping_container_is_idle_not_active() -> None:
    view = _view(busy=False)
    row = _row(view)
    assert row["IDLE"] == "idle (grace)"
    text = describe_container(view, "job")
    timers = text.split("Timers:")[1].splitlines()[1]
    assert "active" not in timers and "idle, not counted during the grace period" in timers


def test_gpus_column_without_nvml_never_prints_two_gpus_as_the_same_string() -> None:
    a, c = "GPU-00000000-0000-4000-8000-00000000fa4e", "GPU-00000000-0000-4000-8000-00000000fb11"
    containers = [
        b.running("one", gpus=[a], sig=b.signals(b.T0)),
        b.running("two", gpus=[c], sig=b.signals(b.T0)),
    ]
    snap = b.snapshot(containers=containers, down=(Domain.NVML,))
    view = View(snapshot=snap, now=b.T0)
    text, _ = run_get("containers", view, GetOptions(show_all=True))
    rows = {line.split()[0]: line.split()[4] for line in text.splitlines()[1:]}
    assert rows["one"] != rows["two"]
    assert a.startswith(rows["one"]) and c.startswith(rows["two"])


def test_next_without_a_plan_is_unknown_spelled_out() -> None:
    view = _view(busy=True)
    view.plan = None
    assert _row(view)["NEXT"] == "unknown"


def test_idle_of_a_running_container_without_a_gpu_is_not_unknown() -> None:
    # Only GPU containers are sampled (and idle-stopped): a web server without a GPU never has an
    # idle reading, and IDLE said "unknown" for it, pass after pass, as for an unreadable signal.
    passes = b.Passes(b.desired(b.policy()))
    web = b.running("web", started_at=b.ago(days=2))
    for t in (b.ago(seconds=30), b.T0):
        snap = b.snapshot(observed_at=t, containers=[web.model_copy(update={"signals": b.signals(t)})])
        p = passes.run(snap)
    assert web.id not in p.memory.containers or not p.memory.containers[web.id].samples
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=passes.desired)
    (row,) = run_get("containers", view, GetOptions(show_all=True))[0].splitlines()[1:]
    assert row.split()[5] == "-", row
    (item,) = json.loads(run_get("containers", view, GetOptions(output="json", show_all=True))[0])["items"]
    assert item["idle"] == {"state": "no-gpu", "since": None}


def test_a_creation_or_keepalive_touch_after_now_is_ahead_not_0s() -> None:
    # Docker's Created and a keep-alive file's mtime are wall-clock times: written while the clock
    # was ahead (or set ahead with touch -d), they are after now. AGE and KEEPALIVE said "0s", as if
    # the container had just been created and the file just touched.
    import dataclasses
    from datetime import timedelta

    from tests.unit import cli_world as w

    view = w.view()
    later = view.now + timedelta(hours=2, minutes=30)
    containers = []
    for c in view.snapshot.containers:
        if c.name == "dave-new":
            c = c.model_copy(update={"created_at": later})
        if c.name == "bob-notebook" and c.signals is not None:
            ka = b.keepalive(mtime=later + timedelta(days=3))
            c = c.model_copy(update={"signals": c.signals.model_copy(update={"keepalive": ka})})
        containers.append(c)
    view = dataclasses.replace(
        view, snapshot=view.snapshot.model_copy(update={"containers": tuple(containers)})
    )
    text, _ = run_get("containers", view, GetOptions(show_all=True, output="wide"))
    header, *rows = text.splitlines()
    cols = header.split()
    starts = [header.index(h) for h in cols]
    table = {
        row.split()[0]: {
            h: row[s : (starts[i + 1] if i + 1 < len(cols) else None)].strip()
            for i, (h, s) in enumerate(zip(cols, starts, strict=True))
        }
        for row in rows
    }
    assert table["dave-new"]["AGE"] == "in 2h", table["dave-new"]
    assert table["bob-notebook"]["KEEPALIVE"] == "in 3d", table["bob-notebook"]
    assert table["alice-train"]["AGE"] == "6h"  # a time past is its age, as before


def test_describe_says_a_time_after_now_is_after_now_not_0s_ago() -> None:
    # describe said "Created: 0s ago (14:30)", "created 0s ago, never started" and "touched 0s
    # ago" of times after now (the wall clock stepped back since Docker or the file recorded them).
    import dataclasses
    from datetime import timedelta

    from tests.unit import cli_world as w

    view = w.view()
    later = view.now + timedelta(hours=2, minutes=30)
    containers = []
    for c in view.snapshot.containers:
        if c.name == "dave-new":
            c = c.model_copy(update={"created_at": later})
        if c.name == "bob-notebook" and c.signals is not None:
            ka = b.keepalive(mtime=later + timedelta(days=3))
            sig = c.signals.model_copy(update={"keepalive": ka})
            c = c.model_copy(update={"signals": sig, "started_at": later})
        containers.append(c)
    view = dataclasses.replace(
        view, snapshot=view.snapshot.model_copy(update={"containers": tuple(containers)})
    )

    dave = describe_container(view, "dave-new")
    assert "Created:     2h after now (2026-03-02 " in dave, dave
    assert "created 2h after now, never started" in dave, dave
    bob = describe_container(view, "bob-notebook")
    assert "running, started 2h after now (2026-03-02 " in bob, bob
    assert "touched 3d after now" in bob, bob
    assert "touched 0s ago" not in bob and "created 0s ago" not in dave
    alice = describe_container(view, "alice-train")
    assert "Created:     6h ago (2026-03-02 " in alice, alice  # a time past, as before
