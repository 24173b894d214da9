"""Rules 1 and 2: created-never-started and stopped containers. Whole action lists are compared."""

from __future__ import annotations

from datetime import datetime

import pytest

from controller.memory import ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import ActionKind, Plan, RemoveParams
from controller.snapshot import ContainerObs, ContainerState
from desired_state.effective import EffectivePolicy, ExemptFrom
from tests.fixtures import builders as b


def run(
    *containers: ContainerObs,
    pol: EffectivePolicy | None = None,
    per_container: dict[str, EffectivePolicy] | None = None,
    memory: ControllerMemory | None = None,
    now: datetime = b.T0,
) -> Plan:
    gpus = (b.gpu(0), b.gpu(1))
    snap = b.snapshot(observed_at=now, containers=containers, gpus=gpus)
    return plan(snap, b.desired(pol, per_container=per_container), memory or ControllerMemory(), now)


class TestDoNothing:
    def test_empty_host(self) -> None:
        p = run()
        assert p.actions == ()
        assert p.deferred == ()

    def test_fresh_containers_only_wait(self) -> None:
        p = run(
            b.created("new", created_at=b.ago(minutes=5)),
            b.exited("just-stopped", finished_at=b.ago(minutes=5)),
            b.running("web"),  # no GPU: never idle- or runtime-checked
        )
        assert b.summary(p) == []
        assert sorted(b.deferred_summary(p)) == [
            ("CreatedNeverStarted", "NotDue", "new"),
            ("StoppedHoldExpired", "NotDue", "just-stopped"),
        ]


class TestCreatedNeverStarted:
    def test_removed_after_timeout_with_gpus_in_evidence(self) -> None:
        c = b.created("stuck", created_at=b.ago(minutes=31), gpus=[b.GPU1])
        p = run(c)
        assert b.summary(p) == [("RemoveContainer", "CreatedNeverStarted", "stuck")]
        a = p.actions[0]
        assert a.target.container_id == c.id
        assert a.target.expected_state == "created"
        assert a.key == f"RemoveContainer:{c.id}:CreatedNeverStarted"
        assert a.evidence["physical_gpus"] == [b.GPU1]
        assert a.evidence["timeout_s"] == 1800
        assert a.due_at == b.ago(minutes=1)
        assert p.deferred == ()

    def test_younger_than_timeout_is_deferred_until_due(self) -> None:
        p = run(b.created("new", created_at=b.ago(minutes=10)))
        assert b.summary(p) == []
        assert b.deferred_summary(p) == [("CreatedNeverStarted", "NotDue", "new")]
        assert p.deferred[0].due_at == b.at(minutes=20)

    def test_timeout_governs_not_immediate_removal(self) -> None:
        # DS01's release-stale removed never-started GPU containers at once; the timeout governs.
        p = run(b.created("gpu-new", created_at=b.ago(minutes=1), gpus=[b.GPU0]))
        assert b.summary(p) == []

    def test_no_timeout_means_never(self) -> None:
        p = run(b.created("c", created_at=b.ago(days=30)), pol=b.policy(created_container_timeout_s=None))
        assert p.actions == ()
        assert p.deferred == ()

    def test_created_in_the_future_ages_from_first_sighting(self) -> None:
        c = b.created("skewed", created_at=b.at(days=1))
        first = run(c)
        assert b.summary(first) == []
        later = run(c, memory=first.memory, now=b.at(minutes=31))
        assert b.summary(later) == [("RemoveContainer", "CreatedNeverStarted", "skewed")]
        assert later.actions[0].evidence["age_basis"].startswith("first sighting")

    def test_an_unreadable_created_ages_from_first_sighting(self) -> None:
        """Docker's Created could not be read (the observer's CREATED_UNKNOWN, year 1): the
        container was the oldest there is and removed on first sight."""
        from controller.observe.docker_adapter import parse_inspect
        from controller.snapshot import CREATED_UNKNOWN

        raw = {
            "Id": "ab" * 32,
            "Name": "/web-1",
            "Created": "not a time",
            "State": {
                "Status": "created",
                "StartedAt": "0001-01-01T00:00:00Z",
                "FinishedAt": "0001-01-01T00:00:00Z",
            },
            "HostConfig": {},
            "Config": {"Image": "x"},
        }
        observed = parse_inspect(raw, {"Names": ["/web-1"], "State": "created", "Created": None})
        assert observed is not None and observed.created_at == CREATED_UNKNOWN
        c = b.created("web-1", created_at=observed.created_at)
        first = run(c)
        assert b.summary(first) == []
        later = run(c, memory=first.memory, now=b.at(minutes=31))
        assert b.summary(later) == [("RemoveContainer", "CreatedNeverStarted", "web-1")]
        assert later.actions[0].evidence["age_basis"] == "first sighting (Created could not be read)"

    def test_protected_monitoring_and_exempt_are_deferred(self) -> None:
        old = b.ago(hours=5)
        p = run(
            b.created("prot", created_at=old),
            b.created("mon", created_at=old),
            b.created("ex", created_at=old),
            per_container={
                "prot": b.policy(protected=True),
                "mon": b.policy(monitoring=True),
                "ex": b.policy(exemptions=[b.exemption(ExemptFrom.CLEANUP, expires_at=b.at(days=1))]),
            },
        )
        assert b.summary(p) == []
        got = {(d.target.container, d.rule.value, d.why.value) for d in p.deferred}
        assert got == {
            ("prot", "CreatedNeverStarted", "Protected"),
            ("mon", "CreatedNeverStarted", "Monitoring"),
            ("ex", "CreatedNeverStarted", "Exempt"),
        }
        ex = next(d for d in p.deferred if d.target.container == "ex")
        assert ex.due_at == b.at(days=1)

    def test_expired_exemption_no_longer_shields(self) -> None:
        pol = b.policy(exemptions=[b.exemption(ExemptFrom.CLEANUP, expires_at=b.ago(minutes=1))])
        p = run(b.created("ex", created_at=b.ago(hours=5)), pol=pol)
        assert b.summary(p) == [("RemoveContainer", "CreatedNeverStarted", "ex")]

    def test_idle_exemption_does_not_shield_cleanup(self) -> None:
        pol = b.policy(exemptions=[b.exemption(ExemptFrom.IDLE)])
        p = run(b.created("ex", created_at=b.ago(hours=5)), pol=pol)
        assert b.summary(p) == [("RemoveContainer", "CreatedNeverStarted", "ex")]


class TestStoppedContainers:
    def test_gpu_container_removed_after_gpu_hold_from_finished_at(self) -> None:
        c = b.exited("done", gpus=[b.GPU0], created_at=b.ago(days=3), finished_at=b.ago(minutes=16))
        p = run(c)
        assert b.summary(p) == [("RemoveContainer", "GpuHoldExpired", "done")]
        a = p.actions[0]
        assert a.target.expected_state == "exited"
        assert a.key == f"RemoveContainer:{c.id}:{c.finished_at.isoformat()}:GpuHoldExpired"
        assert a.due_at == b.ago(minutes=1)
        assert a.evidence["hold_s"] == 900

    def test_gpu_hold_measured_from_finished_not_created(self) -> None:
        c = b.exited("done", gpus=[b.GPU0], created_at=b.ago(days=3), finished_at=b.ago(minutes=5))
        p = run(c)
        assert b.summary(p) == []
        assert b.deferred_summary(p) == [("GpuHoldExpired", "NotDue", "done")]
        assert p.deferred[0].due_at == b.at(minutes=10)

    def test_non_gpu_container_removed_after_container_hold(self) -> None:
        p = run(
            b.exited("young", finished_at=b.ago(minutes=20)),
            b.exited("old", finished_at=b.ago(minutes=31)),
        )
        assert b.summary(p) == [("RemoveContainer", "StoppedHoldExpired", "old")]
        assert b.deferred_summary(p) == [("StoppedHoldExpired", "NotDue", "young")]

    def test_gpu_container_with_gpu_hold_never_uses_container_hold(self) -> None:
        pol = b.policy(gpu_hold_after_stop_s=None)
        p = run(b.exited("g", gpus=[b.GPU0], finished_at=b.ago(minutes=31)), pol=pol)
        assert b.summary(p) == [("RemoveContainer", "StoppedHoldExpired", "g")]

    @pytest.mark.parametrize(
        ("gpu_hold_s", "hold_s", "expected"),
        [
            (3600.0, 600.0, ("RemoveContainer", "StoppedHoldExpired", "g")),  # the shorter hold applies
            (600.0, 600.0, ("RemoveContainer", "GpuHoldExpired", "g")),  # a tie: the GPU hold's rule
            (600.0, 3600.0, ("RemoveContainer", "GpuHoldExpired", "g")),
        ],
    )
    def test_a_gpu_container_takes_the_shorter_hold_and_the_gpu_hold_wins_a_tie(
        self, gpu_hold_s: float, hold_s: float, expected: tuple[str, str, str]
    ) -> None:
        pol = b.policy(gpu_hold_after_stop_s=gpu_hold_s, container_hold_after_stop_s=hold_s)
        p = run(b.exited("g", gpus=[b.GPU0], finished_at=b.ago(minutes=11)), pol=pol)
        assert b.summary(p) == [expected]
        assert p.actions[0].evidence["hold_s"] == min(gpu_hold_s, hold_s)
        # a minute younger than the shorter hold: nothing is removed yet, and the same rule waits
        young = run(b.exited("g", gpus=[b.GPU0], finished_at=b.ago(minutes=9)), pol=pol)
        assert young.actions == ()
        assert b.deferred_summary(young) == [(expected[1], "NotDue", "g")]

    def test_both_holds_never(self) -> None:
        pol = b.policy(gpu_hold_after_stop_s=None, container_hold_after_stop_s=None)
        p = run(b.exited("g", gpus=[b.GPU0], finished_at=b.ago(days=30)), pol=pol)
        assert p.actions == ()
        assert p.deferred == ()

    def test_dead_is_stopped_paused_is_not(self) -> None:
        p = run(
            b.container("dead", state=ContainerState.DEAD, finished_at=b.ago(hours=2)),
            b.container("paused", state=ContainerState.PAUSED, gpus=[b.GPU0], started_at=b.ago(days=3)),
        )
        assert b.summary(p) == [("RemoveContainer", "StoppedHoldExpired", "dead")]

    def test_missing_finished_at_is_skipped(self) -> None:
        c = b.exited("x", gpus=[b.GPU0]).model_copy(update={"finished_at": None})
        p = run(c)
        assert b.summary(p) == []
        assert b.deferred_summary(p) == [("GpuHoldExpired", "UnknownSignal", "x")]

    def test_cleanup_shields(self) -> None:
        old = b.ago(hours=3)
        p = run(
            b.exited("prot", finished_at=old, gpus=[b.GPU0]),
            b.exited("mon", finished_at=old),
            b.exited("ex", finished_at=old),
            b.exited("ex-runtime", finished_at=old),
            per_container={
                "prot": b.policy(protected=True),
                "mon": b.policy(monitoring=True),
                "ex": b.policy(exemptions=[b.exemption(ExemptFrom.CLEANUP)]),
                "ex-runtime": b.policy(exemptions=[b.exemption(ExemptFrom.MAX_RUNTIME)]),
            },
        )
        assert b.summary(p) == [("RemoveContainer", "StoppedHoldExpired", "ex-runtime")]
        got = {(d.target.container, d.rule.value, d.why.value) for d in p.deferred}
        assert got == {
            ("prot", "GpuHoldExpired", "Protected"),
            ("mon", "StoppedHoldExpired", "Monitoring"),
            ("ex", "StoppedHoldExpired", "Exempt"),
        }

    def test_remove_params_are_plain_remove(self) -> None:
        p = run(b.exited("old", finished_at=b.ago(hours=1)))
        assert [a.params for a in b.actions_of(p, ActionKind.REMOVE_CONTAINER)] == [RemoveParams(force=False)]


def test_a_stopped_container_without_finished_at_is_said_unknown_not_removed() -> None:
    # The hold rule runs its checks only when one may stop it (a restart's mark, no FinishedAt):
    # a container without FinishedAt must still get its deferral, not a removal.
    unknown = b.exited("no-finish", gpus=[b.GPU0]).model_copy(update={"finished_at": None})
    p = run(unknown, b.exited("old", finished_at=b.ago(days=30)))
    assert [a.target.container for a in p.actions if a.kind == ActionKind.REMOVE_CONTAINER] == ["old"]
    (d,) = [d for d in p.deferred if d.target.container == "no-finish"]
    assert d.why.value == "UnknownSignal" and "FinishedAt is unknown" in d.message
