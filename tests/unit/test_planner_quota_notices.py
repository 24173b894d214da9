"""What the owner is told when beyond a quota, or when a limit waits because the container uses too
much: the full notice (what is over, with the figures and the quota's source; what happens next and
when; what to do; where to see more), not only the one-line plan message."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from controller.act.notify import Session, TerminalNotifier, notice_text
from controller.plan.types import Action, ActionKind, Reason
from tests.fixtures import builders as b
from tests.fixtures.notices import pty, read_all  # noqa: F401  (pty: a fixture)
from tests.unit.test_planner_quotas import boxes, of, pol, quotas, run
from tests.unit.test_planner_resources import GiB, box
from tests.unit.test_planner_resources import run as run_resources

CET = timezone(timedelta(hours=1), "CET")


def warning(actions: list[Action]) -> tuple[Action, str]:
    (warn,) = actions
    assert warn.params is not None
    return warn, notice_text(warn.params.model_dump(), warn.message, tz=CET)


def test_report_mode_container_quota_notice_says_what_is_over_and_that_nothing_is_stopped() -> None:
    p = run(boxes(4), pol(quotas(containers=3)))
    warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.CONTAINER_QUOTA_EXCEEDED))
    assert text != warn.message and len(text.splitlines()) >= 4
    assert "You (alice) run 4 containers" in text and "your quota is 3 (UserGroup/student)" in text
    assert "Nothing is stopped" in text and "Please stop one" in text
    assert "beyond the quota: alice-3" in text
    assert "docker stop" in text and "/workspace" in text
    assert "ds01ctl describe user alice" in text and "ds01ctl describe container alice-3" in text
    assert warn.params is not None and warn.params.model_dump()["stop_expected_at"] is None


def test_stop_mode_notice_gives_the_stop_time_what_is_kept_and_lost() -> None:
    p = run(boxes(4), pol(quotas(containers=3)), quota_enforce="stop")
    warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.CONTAINER_QUOTA_EXCEEDED))
    stop_at = b.T0 + timedelta(minutes=10)  # the owner's warnLead
    assert warn.params is not None
    assert datetime.fromisoformat(str(warn.params.model_dump()["stop_expected_at"])) == stop_at
    assert "Your container alice-3 will be stopped at" in text
    assert f"stopped at {stop_at.astimezone(CET).strftime('%Y-%m-%d %H:%M')} CET" in text
    assert "You (alice) run 4 containers" in text and "your quota is 3 (UserGroup/student)" in text
    # The container hold removes the stopped container: the notice says when, not "kept".
    assert (
        "What is kept: your files under /workspace and the stopped container for 30m after the stop" in text
    )
    assert "(then it is removed)" in text
    assert "What is lost: its running processes" in text
    assert "keep-alive" in text  # it does not hold off a quota stop
    assert "ds01ctl describe user alice" in text and "ds01ctl describe container alice-3" in text
    assert "{stop_at}" not in text


def test_gpu_quota_notice_gives_each_containers_share() -> None:
    gpus = [b.gpu(i) for i in range(3)]
    containers = [
        b.running(f"alice-{i}", owner="alice", gpus=[g.uuid], started_at=b.ago(hours=3 - i))
        for i, g in enumerate(gpus)
    ]
    p = run(containers, pol(quotas(gpus=2)), gpus=gpus)
    _warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.GPU_QUOTA_EXCEEDED))
    assert "hold 3 GPUs" in text and "your quota is 2 (UserGroup/student)" in text
    assert "alice-0 1, alice-1 1, alice-2 1" in text
    assert "beyond the quota: alice-2" in text and "ds01ctl describe user alice" in text


def test_gpu_slots_notice_says_to_start_again_with_fewer() -> None:
    gpus = [b.gpu(i) for i in range(3)]
    c = b.running("alice-big", owner="alice", gpus=[g.uuid for g in gpus])
    p = run([c], pol(quotas(slots=2)), gpus=gpus, quota_enforce="stop")
    _warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.GPU_SLOTS_ABOVE_SPEC))
    assert "Your container alice-big holds 3 GPU units" in text and "at most 2 per container" in text
    assert "(UserGroup/student)" in text and "start it again with at most 2" in text
    assert "will be stopped at" in text and "ds01ctl describe container alice-big" in text


def test_a_memory_limit_that_waits_for_the_usage_tells_the_owner_what_it_means() -> None:
    # 7.5 GiB in use, the spec says 8 GiB: below 7.5 GiB + 10 %, so the limit waits.
    p = run_resources(box(name="alice-big", used=int(7.5 * GiB)))
    warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.LIMITS_BELOW_USAGE))
    assert text != warn.message
    assert "Your container alice-big uses 7.5GiB of memory" in text
    assert "memory limit of 8GiB (UserGroup/student)" in text and "10 %" in text
    assert "Nothing is stopped" in text and "applied in place" in text
    assert "killed" in text  # what the limit means once applied
    assert "ds01ctl describe container alice-big" in text and "ds01ctl describe user alice" in text


def test_a_pids_limit_that_waits_for_the_usage_tells_the_owner_what_it_means() -> None:
    p = run_resources(box(name="alice-forks", tasks=1000))
    _warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.LIMITS_BELOW_USAGE))
    assert "Your container alice-forks runs 1000 processes and threads" in text
    assert "pids limit of 1024 (UserGroup/student)" in text
    assert "Nothing is stopped" in text and "ds01ctl describe container alice-forks" in text


def test_a_quota_notice_reaches_a_real_terminal(pty: tuple[int, str]) -> None:  # noqa: F811
    import os
    import pwd

    master, tty = pty
    p = run(boxes(4), pol(quotas(containers=3)), quota_enforce="stop")
    _warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.CONTAINER_QUOTA_EXCEEDED))
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert TerminalNotifier(sessions=lambda: [Session(me, tty)]).notify(me, text) == 1
    shown = read_all(master).decode()
    assert "Your container alice-3 will be stopped at" in shown and " CET" in shown
    assert "What is kept: your files under /workspace and the stopped container for 30m" in shown
    assert "ds01ctl describe user alice" in shown


def test_a_notice_for_many_containers_names_a_few_and_counts_the_rest() -> None:
    p = run(boxes(30), pol(quotas(containers=3)))
    _warn, text = warning(of(p, ActionKind.WARN_OWNER, Reason.CONTAINER_QUOTA_EXCEEDED))
    assert "You (alice) run 30 containers (alice-0, " in text and "and 22 more); your quota is 3" in text
    assert all(len(line) <= 300 for line in text.splitlines())  # a terminal line is cut at 300
