"""Rule 5: leaked allocation-ledger rows and duplicate holders of one full GPU."""

from __future__ import annotations

from controller.memory import ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import Plan
from controller.snapshot import ContainerObs, ContainerState, Domain, Ledger
from tests.fixtures import builders as b

GPUS = (b.gpu(0), b.gpu(1, mig_slots=2))


def once(
    *containers: ContainerObs,
    ledger: Ledger | None = None,
    down: tuple[Domain, ...] = (),
    memory: ControllerMemory | None = None,
) -> Plan:
    snap = b.snapshot(containers=containers, gpus=GPUS, ledger=ledger, down=down)
    return plan(snap, b.desired(), memory or ControllerMemory(), b.T0)


def running_on(name: str, *gpus: str, state: ContainerState = ContainerState.RUNNING) -> ContainerObs:
    sig = b.signals(b.T0, gpu_pct=dict.fromkeys(gpus, 99.0))
    return b.container(name, state=state, gpus=gpus, started_at=b.ago(minutes=5), sig=sig)


class TestLeakedLedgerRows:
    def test_row_for_missing_container_released_after_window(self) -> None:
        row = b.ledger_entry("gone", b.GPU0, allocated_at=b.ago(minutes=6))
        p = once(ledger=b.ledger(row))
        assert b.summary(p) == [("ReleaseAllocation", "LeakedAllocation", "gone")]
        a = p.actions[0]
        assert a.target.ledger_entry == {
            "gpu": b.GPU0,
            "gpu_uuid": b.GPU0,
            "container": "gone",
            "user": "alice",
            "allocated_at": b.ago(minutes=6).isoformat(),
        }
        assert a.target.container_id is None
        assert a.due_at == b.ago(minutes=1)
        assert a.key == f"ReleaseAllocation:gone:{b.GPU0}:{b.ago(minutes=6).isoformat()}"

    def test_row_inside_reservation_window_waits(self) -> None:
        # The allocator writes the row before `docker run` creates the container.
        p = once(ledger=b.ledger(b.ledger_entry("starting", b.GPU0, allocated_at=b.ago(minutes=1))))
        assert p.actions == ()
        assert b.deferred_summary(p) == [("LeakedAllocation", "NotDue", "starting")]
        assert p.deferred[0].due_at == b.at(minutes=4)

    def test_row_matching_a_holder_by_name_id_or_prefix_is_kept(self) -> None:
        c = running_on("train", b.GPU0)
        rows = [
            b.ledger_entry("train", b.GPU0),
            b.ledger_entry(c.id, b.GPU0),
            b.ledger_entry(c.id[:12], b.GPU0),
            b.ledger_entry("train", "0", uuid=False),  # index notation
        ]
        p = once(c, ledger=b.ledger(*rows))
        assert p.actions == ()
        assert [d for d in p.deferred if d.rule.value == "LeakedAllocation"] == []

    def test_stopped_holder_still_holds(self) -> None:
        c = b.exited("done", gpus=[b.GPU0], finished_at=b.ago(minutes=1))
        p = once(c, ledger=b.ledger(b.ledger_entry("done", b.GPU0)))
        assert [a for a in p.actions if a.reason.value == "LeakedAllocation"] == []

    def test_row_for_container_no_longer_referencing_the_gpu(self) -> None:
        c = running_on("train", b.GPU0)
        p = once(c, ledger=b.ledger(b.ledger_entry("train", b.mig_uuid(1, 0))))
        assert b.summary(p) == [("ReleaseAllocation", "LeakedAllocation", "train")]
        assert p.actions[0].target.container_id == c.id
        assert "no longer references" in p.actions[0].message

    def test_mig_slot_notation_matches_a_mig_holder(self) -> None:
        c = b.running(
            "mig",
            gpus=[b.ref(b.mig_uuid(1, 1), parent=b.GPU1)],
            started_at=b.ago(minutes=5),
            sig=b.signals(b.T0),
        )
        p = once(
            c,
            ledger=b.ledger(
                b.ledger_entry("mig", "1.1", uuid=False), b.ledger_entry("mig", "1:1", uuid=False)
            ),
        )
        assert [a.reason.value for a in p.actions] == []

    def test_unresolved_reference_is_not_proof_of_a_leak(self) -> None:
        c = b.running("odd", gpus=[b.unresolved_ref("7")], started_at=b.ago(hours=1), sig=b.signals(b.T0))
        p = once(c, ledger=b.ledger(b.ledger_entry("odd", b.GPU0)))
        assert [a.reason.value for a in p.actions if a.reason.value == "LeakedAllocation"] == []
        assert ("LeakedAllocation", "UnknownSignal", "odd") in b.deferred_summary(p)

    def test_ambiguous_id_prefix_is_not_a_missing_container(self) -> None:
        one = running_on("a", b.GPU0).model_copy(update={"id": "abcd" + "1" * 60})
        two = running_on("b", b.GPU0).model_copy(update={"id": "abcd" + "2" * 60})
        p = once(one, two, ledger=b.ledger(b.ledger_entry("abcd", b.GPU1)))
        assert [a.kind.value for a in p.actions if a.reason.value == "LeakedAllocation"] == []
        assert ("LeakedAllocation", "UnknownSignal", "abcd") in b.deferred_summary(p)

    def test_monitoring_container_row_is_still_released(self) -> None:
        c = running_on("prom", b.GPU0)
        snap = b.snapshot(containers=[c], gpus=GPUS, ledger=b.ledger(b.ledger_entry("prom", b.GPU1)))
        p = plan(snap, b.desired(b.policy(monitoring=True)), ControllerMemory(), b.T0)
        assert b.summary(p) == [("ReleaseAllocation", "LeakedAllocation", "prom")]

    def test_unreadable_ledger_releases_nothing_and_alerts_once(self) -> None:
        bad = b.ledger(b.ledger_entry("gone", b.GPU0), error="line 3: not JSON")
        p1 = once(ledger=bad)
        assert b.summary(p1) == [("AlertAdmin", "LedgerUnreadable", "host")]
        assert b.deferred_summary(p1) == [("LeakedAllocation", "DomainUnavailable", "host")]
        p2 = once(ledger=bad, memory=b.record_outcomes(p1))
        assert p2.actions == ()
        assert b.deferred_summary(p2) == [("LeakedAllocation", "DomainUnavailable", "host")]

    def test_ledger_domain_down_alerts(self) -> None:
        p = once(ledger=b.ledger(b.ledger_entry("gone", b.GPU0)), down=(Domain.LEDGER,))
        assert b.summary(p) == [("AlertAdmin", "LedgerUnreadable", "host")]

    def test_no_ledger_configured_is_silent(self) -> None:
        snap = b.snapshot(gpus=GPUS, with_ledger_domain=False)
        p = plan(snap, b.desired(), ControllerMemory(), b.T0)
        assert p.actions == ()
        assert p.deferred == ()

    def test_docker_down_releases_nothing(self) -> None:
        p = once(ledger=b.ledger(b.ledger_entry("gone", b.GPU0)), down=(Domain.DOCKER,))
        assert p.actions == ()
        assert ("LeakedAllocation", "DomainUnavailable", "host") in b.deferred_summary(p)

    def test_duplicate_rows_release_once(self) -> None:
        row = b.ledger_entry("gone", b.GPU0)
        p = once(ledger=b.ledger(row, row))
        assert b.summary(p) == [("ReleaseAllocation", "LeakedAllocation", "gone")]


class TestDuplicateHolders:
    def test_two_running_containers_on_one_full_gpu(self) -> None:
        a, c = running_on("a", b.GPU0), running_on("c", b.GPU0)
        p = once(a, c)
        assert b.summary(p) == [("AlertAdmin", "DuplicateGpuHolder", b.GPU0)]
        assert p.actions[0].key == f"AlertAdmin:DuplicateGpuHolder:{b.GPU0}:{'+'.join(sorted([a.id, c.id]))}"

    def test_alert_is_one_shot(self) -> None:
        a, c = running_on("a", b.GPU0), running_on("c", b.GPU0)
        first = once(a, c)
        assert once(a, c, memory=b.record_outcomes(first)).actions == ()

    def test_mig_slices_and_stopped_holders_are_not_duplicates(self) -> None:
        m1 = b.running("m1", gpus=[b.ref(b.mig_uuid(1, 0), parent=b.GPU1)], sig=b.signals(b.T0))
        m2 = b.running("m2", gpus=[b.ref(b.mig_uuid(1, 1), parent=b.GPU1)], sig=b.signals(b.T0))
        p = once(m1, m2, running_on("r", b.GPU0), running_on("x", b.GPU0, state=ContainerState.EXITED))
        assert [a for a in p.actions if a.reason.value == "DuplicateGpuHolder"] == []
