"""``describe container``'s Timers against what the planner counts: a paused container's runtime,
and the runtime and warning times after a wall-clock step.

The hosts run through the real planner pass by pass (memory carried, warnings delivered).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from controller.cli.describe import describe_container
from controller.cli.view import View
from controller.snapshot import ContainerObs, ContainerState, Snapshot
from tests.fixtures import builders as b
from tests.fixtures.local_zone import utc_clock  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("utc_clock")  # clock times in the output are local


Make = Callable[[datetime], list[ContainerObs]]


def host(make: Make, t: datetime) -> Snapshot:
    return b.snapshot(observed_at=t, containers=make(t), gpus=(b.gpu(0),))


def view_after(passes: b.Passes, snaps: list[Snapshot]) -> View:
    for snap in snaps:
        p = passes.run(snap)
    return View(snapshot=snap, now=p.evaluated_at, plan=p, memory=p.memory, desired=passes.desired)


def section(text: str, head: str, end: str) -> str:
    return text[text.index(head) : text.index(end, text.index(head))]


# --- a paused GPU container -------------------------------------------------------------------

STARTED = b.ago(hours=1, minutes=50)
RUNTIME_2H = b.policy(max_runtime_s=2 * 3600.0, idle_timeout_s=None)


def job(resume_at: datetime) -> Make:
    def make(t: datetime) -> list[ContainerObs]:
        state = ContainerState.PAUSED if t < resume_at else ContainerState.RUNNING
        busy = int((t - STARTED).total_seconds() * 1e9)
        sig = b.signals(t, cpu_usage_ns=busy, gpu_pct={b.GPU0: 90.0})
        return [b.container("job", state=state, gpus=[b.GPU0], started_at=STARTED, sig=sig)]

    return make


def test_a_paused_gpu_container_shows_its_runtime_which_counts_while_paused() -> None:
    # Started 1h50m ago with a max runtime of 2h, paused since before 11:55. A pause does not
    # change StartedAt: the runtime counts on, and the rule acts once it runs again.
    make = job(resume_at=b.at(minutes=30))
    passes = b.Passes(b.desired(RUNTIME_2H))
    view = view_after(passes, [host(make, b.at(minutes=m)) for m in (-5, 0)])
    text = describe_container(view, "job")
    timers = section(text, "Timers:", "Decision:")
    assert "no timer runs" not in timers, timers
    assert (
        "running 1h of 2h (test); the runtime counts while paused, and is acted on once it runs again"
        in timers
    )
    decision = section(text, "Decision:", "Events:")
    assert "no rule is due" not in decision and "until it runs again" in decision, decision
    # What the planner does: nothing while paused; once it runs again (12:30, 2h20m after its
    # start), the warning at once and the stop a warning lead (10m) later.
    acted: dict[tuple[str, str], int] = {}
    for m in range(1, 60):
        for a in passes.run(host(make, b.at(minutes=m))).actions:
            acted.setdefault((a.kind.value, a.reason.value), m)
    assert acted[("WarnOwner", "MaxRuntimeWarning")] == 30
    assert acted[("StopContainer", "MaxRuntimeExceeded")] == 40


# --- a forward wall-clock step ----------------------------------------------------------------

LONG_START = b.ago(hours=20)
STEP_S = 3 * 3600.0
RUNTIME_1D = b.policy(idle_timeout_s=None, max_runtime_s=24 * 3600.0)


def long_job(t: datetime) -> list[ContainerObs]:
    busy = int((t - LONG_START).total_seconds() * 1e9)
    sig = b.signals(t, cpu_usage_ns=busy, gpu_pct={b.GPU0: 80.0})
    return [b.running("long", gpus=[b.GPU0], started_at=LONG_START, sig=sig)]


def stepped(t: datetime) -> Snapshot:
    """The host at wall time ``t``; the wall clock steps 3h forward between 11:59 and 15:00, while
    the monotonic clock advances one minute."""
    mono = t.timestamp() - 1_700_000_000 - (STEP_S if t >= b.at(hours=3) else 0.0)
    return host(long_job, t).model_copy(update={"observed_monotonic_s": mono})


def test_after_a_clock_step_describe_shows_the_runtime_and_warning_times_the_planner_counts() -> None:
    # Started 20h before 12:00 with a max runtime of 1d: warned (75 %) at 11:30. The wall clock
    # then jumps from 11:59 to 15:00: the planner counts 20h of runtime, not 23h.
    passes = b.Passes(b.desired(RUNTIME_1D))
    times = [b.ago(minutes=m) for m in (30, 25, 20, 15, 10, 5, 1)]
    warned = [t for t in times if passes.run(stepped(t)).actions]
    assert warned == [b.ago(minutes=30)]  # 18h of 24h: the 75 % warning, at 11:30
    view = view_after(passes, [stepped(b.at(hours=3))])
    assert view.plan is not None
    (runtime,) = [d for d in view.plan.deferred if d.rule.value == "MaxRuntimeExceeded"]
    assert runtime.evidence["elapsed_s"] == 20 * 3600.0
    timers = section(describe_container(view, "long"), "Timers:", "Decision:")
    assert "running 20h of 1d (test)" in timers and "running 23h" not in timers, timers
    assert "not counted: a forward wall-clock step of 3h since it started" in timers, timers
    assert "warned 11:30 UTC" in timers and "warned 14:30" not in timers, timers


# --- the warning lead the planner gives ---------------------------------------------------------


def test_describe_shows_the_warning_lead_the_planner_gives_capped_at_a_fifth_of_the_timeout() -> None:
    # warnLead 10m, idle timeout 30m: the planner caps the lead at 20 % of the timeout, 6m (the
    # first warning at 80 %, the stop at the timeout). describe's Policy said "warning lead 10m".
    pol = b.policy(idle_timeout_s=1800.0, warn_lead_s=600.0, max_runtime_s=None)
    passes = b.Passes(b.desired(pol))
    started = b.ago(hours=2)
    acted: dict[str, datetime] = {}
    for m in range(0, 45):
        t = b.at(minutes=m)
        sig = b.signals(t, gpu_pct={b.GPU0: 0.0})
        snap = b.snapshot(
            observed_at=t, containers=[b.running("idle", gpus=[b.GPU0], started_at=started, sig=sig)]
        )
        p = passes.run(snap)
        if m == 1:
            view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
        for a in p.actions:
            acted.setdefault(a.kind.value, t)
    assert (acted["StopContainer"] - acted["WarnOwner"]).total_seconds() == 6 * 60
    policy = section(describe_container(view, "idle"), "Policy:", "Resources:")
    (row,) = [line for line in policy.splitlines() if line.strip().startswith("warning lead")]
    assert "6m before an idle stop" in row, row


# --- a running container without a GPU --------------------------------------------------------


def test_a_running_container_without_a_gpu_shows_no_runtime_limit_the_planner_does_not_apply() -> None:
    # Running 30h without a GPU, its policy's max runtime 1d: the runtime and idle rules apply to
    # GPU containers only, and the planner never stops it. Timers said "running 30h of 1d (test)"
    # and "idle timeout 30m", limits it is over or under but which never act on it.
    started = b.ago(hours=30)
    passes = b.Passes(b.desired(b.policy(max_runtime_s=24 * 3600.0)))

    def web(t: datetime) -> list[ContainerObs]:
        return [b.running("web", started_at=started, sig=b.signals(t, cpu_usage_ns=0, net_bytes=0))]

    view = view_after(passes, [host(web, b.at(minutes=m)) for m in (-5, 0)])
    for m in range(1, 120, 5):  # what the planner does with it: nothing
        assert passes.run(host(web, b.at(minutes=m))).actions == ()
    timers = section(describe_container(view, "web"), "Timers:", "Decision:")
    assert " of 1d" not in timers and "idle timeout" not in timers, timers
    assert "not watched for idleness (it holds no GPU)" in timers, timers
    assert "running 30h; no runtime limit applies: it holds no GPU" in timers, timers
