"""Rule 5: leaked allocation-ledger rows and duplicate holders of one full GPU."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.memory import ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import Deferred, Plan
from controller.snapshot import (
    CgroupScope,
    ContainerObs,
    ContainerState,
    Domain,
    GpuRef,
    GpuRefSource,
    GpuUuid,
    Ledger,
    LedgerEntry,
    OwnerRule,
    ProcessState,
)
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
        one = running_on("a", b.GPU0).model_copy(update={"id": "abcdabcdabcd" + "1" * 52})
        two = running_on("b", b.GPU0).model_copy(update={"id": "abcdabcdabcd" + "2" * 52})
        p = once(one, two, ledger=b.ledger(b.ledger_entry("abcdabcdabcd", b.GPU1)))
        assert [a.kind.value for a in p.actions if a.reason.value == "LeakedAllocation"] == []
        assert ("LeakedAllocation", "UnknownSignal", "abcdabcdabcd") in b.deferred_summary(p)

    def test_a_short_hex_name_is_a_name_not_the_prefix_of_another_containers_id(self) -> None:
        # `docker run --name cafe` (the row), then `docker rename cafe cafe-old`: still on GPU0. An
        # unrelated container's id starts with "cafe". Taken for an id prefix, the row was that
        # container's, which no longer references GPU0: released, while cafe-old holds the GPU.
        renamed = running_on("cafe-old", b.GPU0)
        other = b.exited("someone-else", id="cafe" + "0" * 60, gpus=[b.GPU1], owner="bob")
        p = once(renamed, other, ledger=b.ledger(b.ledger_entry("cafe", b.GPU0)))
        assert [a for a in p.actions if a.reason.value == "LeakedAllocation"] == []
        ((d,),) = [[d for d in p.deferred if d.rule.value == "LeakedAllocation"]]
        assert d.why.value == "UnknownSignal" and "cafe-old" in d.message, d.message
        # Four to eleven hex digits are never taken for an id: a row naming "cafe" names no container.
        p = once(other, ledger=b.ledger(b.ledger_entry("cafe", b.GPU0)))
        ((release,),) = [[a for a in p.actions if a.reason.value == "LeakedAllocation"]]
        assert release.target.container_id is None, "the row was tied to the unrelated container"

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


def leaked_rule(p: Plan) -> list[tuple[str, str, str]]:
    """(kind or why, rule, target) for the ledger rule only."""
    acts = [
        (a.kind.value, a.reason.value, a.target.label())
        for a in p.actions
        if a.reason.value == "LeakedAllocation"
    ]
    defs = [
        (d.why.value, d.rule.value, d.target.label())
        for d in p.deferred
        if d.rule.value == "LeakedAllocation"
    ]
    return acts + defs


def ledger_deferral(p: Plan) -> Deferred:
    (d,) = [d for d in p.deferred if d.rule.value == "LeakedAllocation"]
    return d


def with_owner(c: ContainerObs, owner: str, rule: OwnerRule = OwnerRule.LABEL_DS01_USER) -> ContainerObs:
    return c.model_copy(update={"owner": owner, "owner_rule": rule})


def unverified(uuid: str) -> GpuRef:
    """A reference as the observer leaves it while NVML is down: the UUID kept, the GPU unknown."""
    is_mig = uuid.startswith("MIG-")
    return GpuRef(
        raw=uuid,
        source=GpuRefSource.DEVICE_REQUEST,
        uuid=GpuUuid(uuid),
        parent_uuid=None if is_mig else GpuUuid(uuid),
        is_mig=is_mig,
        unresolved_reason="NVML unavailable: UUID not verified against the host's devices",
    )


class TestRenamedHolder:
    """`docker rename train train-old`: the row still says 'train'; the id is what survives."""

    def test_renamed_running_holder_keeps_its_row(self) -> None:
        renamed = running_on("train-old", b.GPU0).model_copy(update={"id": b.cid("train")})
        p = once(renamed, ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]
        d = ledger_deferral(p)
        assert "renamed" in d.message and "train-old" in d.message
        assert d.evidence["possible_holders"][0]["id"] == renamed.id

    def test_name_reused_by_a_new_container_while_the_renamed_one_holds(self) -> None:
        renamed = running_on("train-old", b.GPU0).model_copy(update={"id": b.cid("train")})
        reused = running_on("train", b.GPU2).model_copy(update={"id": "f" * 64})
        p = once(renamed, reused, ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]

    def test_every_possible_renamed_holder_is_named(self) -> None:
        # Two containers of the row's user hold its GPU, and the row names neither: the row's
        # container may have become either, so the message names both (not the first by id alone).
        renamed = running_on("train-old", b.GPU0).model_copy(update={"id": "e" * 64})
        other = running_on("train-copy", b.GPU0).model_copy(update={"id": "a" * 64})
        p = once(renamed, other, ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]
        d = ledger_deferral(p)
        assert "train-old (eeeeeeeeeeee, running) holds" in d.message
        assert "train-copy (aaaaaaaaaaaa, running) holds" in d.message
        assert "any of them may be the same container renamed" in d.message
        assert [h["name"] for h in d.evidence["possible_holders"]] == ["train-copy", "train-old"]

    def test_stopped_renamed_holder_also_keeps_its_row(self) -> None:
        renamed = b.exited("train-old", gpus=[b.GPU0])
        p = once(renamed, ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]

    def test_row_naming_the_id_is_certain(self) -> None:
        # An id does not change with a rename: the container with that id is gone for certain.
        other = running_on("other", b.GPU0)
        p = once(other, ledger=b.ledger(b.ledger_entry(b.cid("gone"), b.GPU0)))
        assert [k for k, *_ in leaked_rule(p)] == ["ReleaseAllocation"]

    def test_holder_of_another_user_by_label_is_not_the_renamed_container(self) -> None:
        bob = with_owner(running_on("bob-train", b.GPU0), "bob")
        p = once(bob, ledger=b.ledger(b.ledger_entry("train", b.GPU0, user="alice")))
        assert [k for k, *_ in leaked_rule(p)] == ["ReleaseAllocation"]

    @pytest.mark.parametrize(
        ("row_user", "label"),
        [
            ("h.baker@example.org", "h.baker"),
            ("h.baker@example.org", "h_baker"),  # DS01's sanitised form strips the domain
            ("h.baker", "h.baker@example.org"),
            ("h.baker", "h_baker"),
        ],
    )
    def test_the_login_and_sanitised_forms_of_one_user_are_one_user(self, row_user: str, label: str) -> None:
        """The allocator wrote the login (with its domain); the label carries the sanitised form:
        the renamed container is the row's, still holding the GPU (released before)."""
        renamed = with_owner(running_on("train-old", b.GPU0), label).model_copy(update={"id": b.cid("train")})
        p = once(renamed, ledger=b.ledger(b.ledger_entry("train", b.GPU0, user=row_user)))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_owner_from_the_name_does_not_rule_a_holder_out(self) -> None:
        # The name-derived owner changes with the name: it proves nothing about a rename.
        bob = with_owner(running_on("bob-train", b.GPU0), "bob", OwnerRule.NAME_UID)
        p = once(bob, ledger=b.ledger(b.ledger_entry("train", b.GPU0, user="alice")))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_untrusted_labels_do_not_rule_a_holder_out(self) -> None:
        bob = with_owner(running_on("bob-train", b.GPU0), "bob")
        snap = b.snapshot(containers=[bob], gpus=GPUS, ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        p = plan(snap, b.desired(glob=b.global_policy(trust_labels=False)), ControllerMemory(), b.T0)
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_holder_recorded_by_its_own_row_frees_the_stale_one(self) -> None:
        # GPU0 went to 'eval', which has its own row: releasing the stale 'train' row frees nothing.
        holder = running_on("eval", b.GPU0)
        rows = b.ledger(b.ledger_entry("train", b.GPU0), b.ledger_entry("eval", b.GPU0))
        p = once(holder, ledger=rows)
        assert [(k, t) for k, _, t in leaked_rule(p)] == [("ReleaseAllocation", "train")]

    def test_a_row_of_another_user_recording_the_holder_does_not_free_the_stale_one(self) -> None:
        # 'eval' holds GPU0 and a row of bob's names it: it may still be alice's 'train' under a new
        # name (the name 'eval' reused), and releasing alice's row would count her GPU against bob.
        holder = with_owner(running_on("eval", b.GPU0), "alice")
        rows = b.ledger(
            b.ledger_entry("train", b.GPU0, user="alice"), b.ledger_entry("eval", b.GPU0, user="bob")
        )
        p = once(holder, ledger=rows)
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]
        assert "may be the same container renamed" in ledger_deferral(p).message

    def test_holder_of_another_gpu_does_not_block(self) -> None:
        p = once(running_on("train-old", b.GPU1), ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        assert [k for k, *_ in leaked_rule(p)] == ["ReleaseAllocation"]


class TestNotationsWithNvmlDown:
    """NVML down: a MIG slot and its full GPU cannot be compared; two full-GPU UUIDs can."""

    def nvml_down(self, c: ContainerObs, row: LedgerEntry) -> Plan:
        return once(c, ledger=b.ledger(row), down=(Domain.NVML,))

    def test_full_gpu_row_against_a_mig_holder_defers(self) -> None:
        c = b.running("train", gpus=[unverified(b.mig_uuid(1, 0))], sig=b.signals(b.T0))
        p = self.nvml_down(c, b.ledger_entry("train", b.GPU1))
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]
        assert "NVML is unavailable" in ledger_deferral(p).message

    def test_mig_row_against_a_full_gpu_holder_defers(self) -> None:
        c = b.running("train", gpus=[unverified(b.GPU1)], sig=b.signals(b.T0))
        p = self.nvml_down(c, b.ledger_entry("train", b.mig_uuid(1, 0)))
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]

    def test_gone_container_and_a_mig_holder_of_the_same_user_defers(self) -> None:
        c = b.running("train-old", gpus=[unverified(b.mig_uuid(1, 0))], sig=b.signals(b.T0))
        p = self.nvml_down(c, b.ledger_entry("train", b.GPU1))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_index_row_defers(self) -> None:
        c = b.running("train", gpus=[unverified(b.GPU1)], sig=b.signals(b.T0))
        p = self.nvml_down(c, b.ledger_entry("train", "1", uuid=False))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_two_different_full_gpus_are_still_a_leak(self) -> None:
        c = b.running("train", gpus=[unverified(b.GPU0)], sig=b.signals(b.T0))
        p = self.nvml_down(c, b.ledger_entry("train", b.GPU1))
        assert [k for k, *_ in leaked_rule(p)] == ["ReleaseAllocation"]

    def test_same_uuid_is_held(self) -> None:
        c = b.running("train", gpus=[unverified(b.mig_uuid(1, 0))], sig=b.signals(b.T0))
        p = self.nvml_down(c, b.ledger_entry("train", b.mig_uuid(1, 0).lower()))
        assert leaked_rule(p) == []


class TestUnknownNotationWithNvmlUp:
    LEGACY = f"MIG-{b.GPU1}/1/0"

    def legacy_row(self, container: str = "train") -> LedgerEntry:
        # What the observer makes of it: NVML knows no device by that name, so no UUID.
        return b.ledger_entry(container, self.LEGACY, uuid=False)

    def test_legacy_mig_notation_is_not_a_resolved_uuid(self) -> None:
        c = b.running("train", gpus=[b.ref(b.mig_uuid(1, 0), parent=b.GPU1)], sig=b.signals(b.T0))
        p = once(c, ledger=b.ledger(self.legacy_row()))
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", "train")]
        assert "unknown notation" in ledger_deferral(p).message
        assert ledger_deferral(p).evidence["gpu_unresolved"] == "NVML reports no device by this name"

    def test_same_text_in_the_container_is_held(self) -> None:
        odd = GpuRef(raw=self.LEGACY, source=GpuRefSource.LABEL_GPU_UUID, unresolved_reason="unknown")
        c = b.running("train", gpus=[odd], sig=b.signals(b.T0))
        assert leaked_rule(once(c, ledger=b.ledger(self.legacy_row()))) == []

    def test_the_same_reference_written_another_way_is_held(self) -> None:
        # No reference has the row's very text: the normalised comparison still finds the second.
        other = GpuRef(raw="nvidia0", source=GpuRefSource.LABEL_GPU_UUID, unresolved_reason="unknown")
        odd = GpuRef(
            raw=f" {self.LEGACY.upper()} ", source=GpuRefSource.LABEL_GPU_UUID, unresolved_reason="unknown"
        )
        c = b.running("train", gpus=[other, odd], sig=b.signals(b.T0))
        assert leaked_rule(once(c, ledger=b.ledger(self.legacy_row()))) == []

    def test_gone_container_with_gpu_holders_around_defers(self) -> None:
        c = running_on("train-old", b.GPU0)
        p = once(c, ledger=b.ledger(self.legacy_row()))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_gone_container_and_no_gpu_holder_is_released(self) -> None:
        p = once(ledger=b.ledger(self.legacy_row()))
        assert [k for k, *_ in leaked_rule(p)] == ["ReleaseAllocation"]


class TestRenameGuardEvidence:
    """Only an owner label rules a holder out; weaker owner evidence keeps the row."""

    def test_main_process_uid_does_not_rule_a_holder_out(self) -> None:
        # A container made for alice whose main process runs as root: the uid proves nothing.
        root = with_owner(running_on("train-old", b.GPU0), "root", OwnerRule.PROCESS_UID)
        p = once(root, ledger=b.ledger(b.ledger_entry("train", b.GPU0, user="alice")))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_sanitised_forms_of_one_user_are_the_same_user(self) -> None:
        same = with_owner(running_on("train-old", b.GPU0), "a-smith")
        p = once(same, ledger=b.ledger(b.ledger_entry("train", b.GPU0, user="a.smith")))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]

    def test_a_holder_with_an_unresolved_reference_may_be_the_renamed_container(self) -> None:
        odd = b.running("train-old", gpus=[b.unresolved_ref("7")], sig=b.signals(b.T0))
        p = once(odd, ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]
        assert ledger_deferral(p).evidence["possible_holders"][0]["holds"] == "cannot tell"

    def test_an_all_gpus_holder_may_be_the_renamed_container(self) -> None:
        every = b.running("train-old", all_gpus=True, sig=b.signals(b.T0))
        p = once(every, ledger=b.ledger(b.ledger_entry("train", b.GPU0)))
        assert [k for k, *_ in leaked_rule(p)] == ["UnknownSignal"]


class TestContainerStillComputing:
    """The engine does not list the row's container, yet NVML lists a process in its cgroup."""

    def lost(
        self, scope: CgroupScope = CgroupScope.FOREIGN, live_shim: str = "pid 77: containerd-shim"
    ) -> Plan:
        # dockerd lost the container (or another engine runs it) while its shim still runs it:
        # its process computes on the row's GPU, and the row names the container by id.
        cid = b.cid("train")
        proc = b.process(4242, b.GPU0, container_id=cid, scope=scope)
        proc = replace(proc, live_shim=live_shim)
        snap = b.snapshot(gpus=GPUS, processes=[proc], ledger=b.ledger(b.ledger_entry(cid, b.GPU0)))
        return plan(snap, b.desired(), ControllerMemory(), b.T0)

    def test_a_row_whose_container_still_computes_on_its_gpu_is_kept(self) -> None:
        p = self.lost()
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", b.cid("train"))]
        d = ledger_deferral(p)
        assert "pid 4242" in d.message and d.evidence["live_processes"] == [4242]

    def test_a_short_id_row_is_kept_too(self) -> None:
        cid = b.cid("train")
        proc = replace(
            b.process(4242, b.GPU1, container_id=cid, scope=CgroupScope.FOREIGN), live_shim="pid 77"
        )
        snap = b.snapshot(gpus=GPUS, processes=[proc], ledger=b.ledger(b.ledger_entry(cid[:12], b.GPU0)))
        p = plan(snap, b.desired(), ControllerMemory(), b.T0)
        assert leaked_rule(p) == [("UnknownSignal", "LeakedAllocation", cid[:12])]

    def test_a_vanished_process_is_no_evidence(self) -> None:
        cid = b.cid("train")
        proc = b.process(4242, b.GPU0, container_id=cid, state=ProcessState.VANISHED)
        snap = b.snapshot(gpus=GPUS, processes=[proc], ledger=b.ledger(b.ledger_entry(cid, b.GPU0)))
        p = plan(snap, b.desired(), ControllerMemory(), b.T0)
        assert [k for k, *_ in leaked_rule(p)] == ["ReleaseAllocation"]
