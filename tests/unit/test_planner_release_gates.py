"""Ledger releases under the action budget and the release breaker; the reservation window.

Case 5 of the safety review: a release was not a destructive kind, so 40 rows went in one pass
with a budget of 1 and no breaker looked at them. Releases now count against
``maxDestructiveActionsPerPass``, and a breaker of their own trips when one pass would release
more than ``releaseBreakerMaxFraction`` of the ledger (and at least ``releaseBreakerMinRows``
rows); it holds releases back until ``ds01ctl breaker reset``. The stop breaker is unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.memory import Breaker, ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import Plan
from controller.snapshot import ContainerObs, LedgerEntry
from desired_state.effective import GlobalPolicy
from desired_state.load import builtin_policy
from desired_state.resolve import global_policy
from tests.fixtures import builders as b

GPUS = tuple(b.gpu(i) for i in range(4))
NO_RELEASE_BREAKER = {"release_breaker_max_fraction": 1.0}


def leaked_rows(n: int) -> list[LedgerEntry]:
    """n rows whose containers are named by id and gone: certain leaks, due two hours ago."""
    return [b.ledger_entry(f"{i:064x}", b.GPUS[i % 4]) for i in range(n)]


def held(n: int) -> tuple[list[ContainerObs], list[LedgerEntry]]:
    """n created containers, each with a row that its GPU reference backs."""
    cs = [b.created(f"h{i}", gpus=[b.GPUS[i % 4]], created_at=b.ago(minutes=1)) for i in range(n)]
    return cs, [b.ledger_entry(c.name, b.GPUS[i % 4]) for i, c in enumerate(cs)]


def once(
    *containers: ContainerObs,
    rows: list[LedgerEntry],
    memory: ControllerMemory | None = None,
    **glob: object,
) -> Plan:
    snap = b.snapshot(containers=containers, gpus=GPUS, ledger=b.ledger(*rows))
    return plan(snap, b.desired(glob=b.global_policy(**glob)), memory or ControllerMemory(), b.T0)


def kinds(p: Plan) -> list[str]:
    return sorted(a.kind.value for a in p.actions)


def whys(p: Plan, rule: str = "LeakedAllocation") -> list[str]:
    return sorted(d.why.value for d in p.deferred if d.rule.value == rule)


class TestBudget:
    def test_forty_releases_with_a_budget_of_one(self) -> None:
        p = once(rows=leaked_rows(40), max_destructive_actions_per_pass=1, **NO_RELEASE_BREAKER)
        assert kinds(p) == ["ReleaseAllocation"]
        assert whys(p) == ["BudgetExhausted"] * 39

    def test_releases_and_removals_share_one_budget(self) -> None:
        stale = [b.created(f"old{i}", created_at=b.ago(days=1)) for i in range(2)]
        p = once(*stale, rows=leaked_rows(2), max_destructive_actions_per_pass=3, **NO_RELEASE_BREAKER)
        assert len([a for a in p.actions if a.destructive]) == 3
        assert len([d for d in p.deferred if d.why.value == "BudgetExhausted"]) == 1

    def test_an_open_stop_breaker_holds_releases_too(self) -> None:
        mem = ControllerMemory(breaker=Breaker(tripped=True, tripped_at=b.ago(hours=1), reason="test"))
        p = once(rows=leaked_rows(1), memory=mem)
        assert p.actions == ()
        assert whys(p) == ["BreakerOpen"]


class TestReleaseBreaker:
    def test_mass_release_trips_it(self) -> None:
        stale = b.created("old", created_at=b.ago(days=1))
        p = once(stale, rows=leaked_rows(40), max_destructive_actions_per_pass=100)
        # Nothing is released, an admin is told; other destructive actions are not held back.
        assert kinds(p) == ["AlertAdmin", "RemoveContainer"]
        alert = next(a for a in p.actions if a.kind.value == "AlertAdmin")
        assert alert.reason.value == "BreakerTripped" and alert.evidence["breaker"] == "release"
        assert (alert.evidence["would_release"], alert.evidence["ledger_rows"]) == (40, 40)
        assert "ds01ctl breaker reset" in alert.message
        assert whys(p) == ["BreakerOpen"] * 40
        assert all("release breaker open" in d.message for d in p.deferred if d.why.value == "BreakerOpen")
        assert p.memory.release_breaker.tripped and p.memory.release_breaker.tripped_at == b.T0
        assert not p.memory.breaker.tripped

    def test_below_the_minimum_rows_it_does_not_trip(self) -> None:
        p = once(rows=leaked_rows(4))  # 4 of 4, but fewer than releaseBreakerMinRows (5)
        assert kinds(p) == ["ReleaseAllocation"] * 4
        assert not p.memory.release_breaker.tripped

    def test_a_small_share_does_not_trip(self) -> None:
        cs, backed = held(15)
        p = once(*cs, rows=[*backed, *leaked_rows(5)])  # 5 of 20 rows
        assert kinds(p) == ["ReleaseAllocation"] * 5
        assert not p.memory.release_breaker.tripped

    def test_the_share_is_a_policy_key(self) -> None:
        cs, backed = held(15)
        p = once(*cs, rows=[*backed, *leaked_rows(5)], release_breaker_max_fraction=0.2)
        assert "ReleaseAllocation" not in kinds(p) and p.memory.release_breaker.tripped

    def test_stays_tripped_until_reset(self) -> None:
        rows = leaked_rows(10)
        p1 = once(rows=rows)
        p2 = once(rows=rows, memory=b.record_outcomes(p1))
        assert p2.actions == ()
        assert whys(p2) == ["BreakerOpen"] * 10
        assert p2.memory.release_breaker == p1.memory.release_breaker
        reset = b.record_outcomes(p1).with_breakers_reset()
        assert not reset.release_breaker.tripped and not reset.breaker.tripped
        p3 = once(rows=rows, memory=reset)
        assert kinds(p3) == ["AlertAdmin"]  # still a mass release: trips again

    def test_the_stop_breaker_is_unchanged_by_it(self) -> None:
        mem = ControllerMemory(release_breaker=Breaker(tripped=True, tripped_at=b.ago(hours=1), reason="x"))
        stale = b.created("old", created_at=b.ago(days=1))
        p = once(stale, rows=leaked_rows(1), memory=mem)
        assert kinds(p) == ["RemoveContainer"]
        assert whys(p) == ["BreakerOpen"]


def removed_by_the_controller(rows: list[LedgerEntry], at: datetime | None = None) -> ControllerMemory:
    """The memory after the controller removed the containers these rows name (by id), as job0..."""
    memory = ControllerMemory()
    for i, r in enumerate(rows):
        memory = memory.with_controller_removal(r.container, f"job{i}", at or b.ago(minutes=1))
    return memory


class TestOwnRemovals:
    """The rows of containers the controller removed itself count on neither side of the release
    share: a batch it removed together (jobs stopped together, their GPU hold over) leaves a batch
    of leaked rows by design, not through a broken listing."""

    def test_rows_of_its_own_removals_are_released_without_tripping_it(self) -> None:
        rows = leaked_rows(6)
        p = once(rows=rows, memory=removed_by_the_controller(rows))
        assert kinds(p) == ["ReleaseAllocation"] * 6
        assert not p.memory.release_breaker.tripped
        # The same rows with no such record (a listing that came back empty) trip it.
        assert once(rows=rows).memory.release_breaker.tripped

    def test_by_name_and_by_id_prefix(self) -> None:
        rows = [b.ledger_entry(f"{i + 1:012x}" + "f" * 52, b.GPUS[i % 4]) for i in range(6)]
        memory = removed_by_the_controller(rows)
        by_name = [b.ledger_entry(f"job{i}", b.GPUS[i % 4]) for i in range(6)]
        by_prefix = [b.ledger_entry(r.container[:12], r.gpu) for r in rows]
        for named in (by_name, by_prefix):
            p = once(rows=named, memory=memory)
            assert not p.memory.release_breaker.tripped and kinds(p) == ["ReleaseAllocation"] * 6

    def test_they_do_not_dilute_the_share_of_the_others(self) -> None:
        own, others = leaked_rows(12)[:6], leaked_rows(12)[6:]
        cs, backed = held(1)
        p = once(*cs, rows=[*own, *others, *backed], memory=removed_by_the_controller(own))
        # 6 of the 7 rows it did not remove would go at once: 12 of 13 before, still a mass release.
        assert p.memory.release_breaker.tripped
        assert "would release 6 of 7 ledger rows" in p.memory.release_breaker.reason

    def test_a_row_written_after_the_removal_is_not_its_removals(self) -> None:
        # An allocator wrote a row for a new container under a removed one's name after the removal:
        # the record says nothing of it, and it weighs on the breaker like any other.
        memory = removed_by_the_controller(leaked_rows(6), at=b.ago(hours=3))
        new = b.ledger_entry("job0", b.GPU0, allocated_at=b.ago(hours=1))
        old = [b.ledger_entry(f"job{i}", b.GPUS[i % 4], allocated_at=b.ago(days=1)) for i in range(1, 6)]
        rows = [*old, new]
        p = once(rows=rows, memory=memory, release_breaker_min_rows=1, release_breaker_max_fraction=0.0)
        assert p.memory.release_breaker.tripped
        assert "would release 1 of 1 ledger rows" in p.memory.release_breaker.reason

    def test_the_record_is_kept_a_day(self) -> None:
        memory = removed_by_the_controller(leaked_rows(2))
        assert memory.pruned(b.T0).removed == memory.removed
        assert memory.pruned(b.T0 + timedelta(days=1)).removed == {}

    def test_the_record_is_kept_only_while_a_row_names_it(self) -> None:
        """On a host that creates and removes containers all day, the record stays as small as the
        leaks it explains: an allocator writes a row before its container exists, never after."""
        rows = leaked_rows(3)
        memory = removed_by_the_controller([*rows, *leaked_rows(6)[3:]])
        p = once(rows=rows, memory=memory, **NO_RELEASE_BREAKER)
        assert sorted(p.memory.removed) == sorted(r.container for r in rows)
        # Released: no row names them any more, and the next pass forgets them.
        assert once(rows=[], memory=b.record_outcomes(p)).memory.removed == {}
        # While the ledger cannot be read, nothing is forgotten.
        snap = b.snapshot(gpus=GPUS, ledger=b.ledger(*rows).model_copy(update={"error": "ledger.json: bad"}))
        unread = plan(snap, b.desired(), memory, b.T0)
        assert unread.memory.removed == memory.removed


class TestReservationWindow:
    """The allocator writes its row before `docker run`, and `docker run` pulls the image first.

    Decision: the row of a container that does not exist yet counts as held for 30 minutes by
    default (``ledgerReservationWindow``; was 5 minutes), enough for a pull of a large CUDA image
    on a slow link; a row whose container appears in that time is then kept by its reference.
    """

    def builtin(self) -> GlobalPolicy:
        return global_policy(builtin_policy())

    def plan_at(self, minutes_after_allocation: float) -> Plan:
        row = b.ledger_entry("pulling", b.GPU0, allocated_at=b.ago(minutes=minutes_after_allocation))
        snap = b.snapshot(gpus=GPUS, ledger=b.ledger(row))
        return plan(snap, b.desired(glob=self.builtin()), ControllerMemory(), b.T0)

    def test_the_built_in_window_covers_a_slow_pull(self) -> None:
        assert self.builtin().ledger_reservation_window_s.value == 30 * 60
        p = self.plan_at(20)
        assert p.actions == ()
        (d,) = [d for d in p.deferred if d.rule.value == "LeakedAllocation"]
        assert d.why.value == "NotDue" and d.due_at == b.at(minutes=10)
        assert "reservation window of 30m" in d.message

    def test_after_the_window_the_row_is_released(self) -> None:
        assert kinds(self.plan_at(31)) == ["ReleaseAllocation"]

    def test_the_container_appearing_in_the_window_keeps_the_row(self) -> None:
        c = b.created("pulling", gpus=[b.GPU0], created_at=b.ago(minutes=1))
        row = b.ledger_entry("pulling", b.GPU0, allocated_at=b.ago(minutes=25))
        snap = b.snapshot(containers=[c], gpus=GPUS, ledger=b.ledger(row))
        p = plan(snap, b.desired(glob=self.builtin()), ControllerMemory(), b.at(hours=3))
        assert [a for a in p.actions if a.reason.value == "LeakedAllocation"] == []


def test_the_daemon_closes_both_breakers_on_a_reset_request(tmp_path: Path) -> None:
    """`ds01ctl breaker reset` beside a running daemon leaves a request; the daemon consumes it."""
    from controller.act.events import EventLog
    from controller.loop import Controller
    from controller.settings import Settings
    from controller.store import BREAKER_RESET_REQUEST, MemoryStore

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    store = MemoryStore(state)
    tripped = Breaker(tripped=True, tripped_at=b.T0, reason="40 of 40 rows")
    memory = ControllerMemory(release_breaker=tripped)
    store.save(memory)
    (state / BREAKER_RESET_REQUEST).write_text("requested\n")
    unused: Any = None  # the reset touches neither the observer, the policy nor the executor
    controller = Controller(
        settings=Settings(state_dir=state, events_log=tmp_path / "events.jsonl"),
        observer=unused,
        policy=unused,
        executor=unused,
        store=store,
        event_log=EventLog(tmp_path / "events.jsonl"),
        memory=memory,
    )
    controller._consume_breaker_reset()
    assert not store.load().release_breaker.tripped and not controller.memory.release_breaker.tripped
    assert not (state / BREAKER_RESET_REQUEST).exists()
    (event,) = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert (
        event["event_type"] == "controller.breaker_reset"
        and event["details"]["release_was"] == "40 of 40 rows"
    )
