"""The typed evidence readers: present, missing, wrong type, and the shape of old records."""

from __future__ import annotations

from typing import Any

import pytest

from controller.plan.types import GpuEvidence, GpuRefEvidence, OwnerEvidence, ProcessEvidence

GPU0 = "GPU-00000000-0000-0000-0000-000000000000"
GPU1 = "GPU-11111111-1111-1111-1111-111111111111"
MIG = "MIG-22222222-2222-2222-2222-222222222222"


# --- gpus --------------------------------------------------------------------------------------
def test_gpus_present_as_the_planner_writes_them() -> None:
    ev = GpuEvidence.from_evidence(
        {
            "gpus": [
                {"raw": "0", "uuid": GPU0, "source": "device_requests", "mig": False},
                {"raw": MIG, "uuid": MIG, "source": "env", "mig": True},
            ],
            "all_gpus": False,
            "physical_gpus": [GPU0, GPU1],
        }
    )
    assert ev.gpus == (
        GpuRefEvidence(raw="0", uuid=GPU0, source="device_requests", mig=False),
        GpuRefEvidence(raw=MIG, uuid=MIG, source="env", mig=True),
    )
    assert ev.devices() == [GPU0, MIG], "the references win over the physical GPUs"


def test_gpus_missing_reads_empty() -> None:
    ev = GpuEvidence.from_evidence({})
    assert (ev.gpus, ev.physical_gpus, ev.devices()) == ((), (), [])
    assert GpuEvidence.from_evidence(None).devices() == []


@pytest.mark.parametrize("value", [None, 3, "GPU-x", {"uuid": GPU0}, True])
def test_gpus_of_the_wrong_type_read_empty(value: Any) -> None:
    assert GpuEvidence.from_evidence({"gpus": value}).gpus == ()


def test_gpu_entries_of_the_wrong_type_are_left_out() -> None:
    ev = GpuEvidence.from_evidence(
        {"gpus": [7, None, "", {"raw": 5, "uuid": None, "source": 1, "mig": "yes"}, {"uuid": GPU1}]}
    )
    assert ev.gpus == (
        GpuRefEvidence(raw=None, uuid=None, source=None, mig=None),
        GpuRefEvidence(raw=None, uuid=GPU1, source=None, mig=None),
    )
    assert ev.devices() == [GPU1]


def test_gpus_in_an_old_record_are_bare_names() -> None:
    # An intent rebuilt from the event log (salvage) carries the device names only.
    ev = GpuEvidence.from_evidence({"gpus": [GPU0, GPU1, GPU0]})
    assert [r.raw for r in ev.gpus] == [GPU0, GPU1, GPU0]
    assert ev.devices() == [GPU0, GPU1]


def test_a_reference_without_uuid_names_the_raw_device() -> None:
    ev = GpuEvidence.from_evidence({"gpus": [{"raw": "all", "uuid": None, "source": "env", "mig": False}]})
    assert ev.devices() == ["all"]


# --- physical_gpus -----------------------------------------------------------------------------
def test_physical_gpus_present_when_no_reference() -> None:
    ev = GpuEvidence.from_evidence({"gpus": [], "physical_gpus": [GPU1, GPU0, GPU1]})
    assert ev.physical_gpus == (GPU1, GPU0, GPU1)
    assert ev.devices() == [GPU1, GPU0]


def test_physical_gpus_missing_reads_empty() -> None:
    assert GpuEvidence.from_evidence({"gpus": []}).physical_gpus == ()


@pytest.mark.parametrize("value", [None, GPU0, 1, {GPU0: True}])
def test_physical_gpus_of_the_wrong_type_read_empty(value: Any) -> None:
    assert GpuEvidence.from_evidence({"physical_gpus": value}).physical_gpus == ()


def test_physical_gpus_old_record_tuple_and_bad_entries() -> None:
    # Evidence built in Python (not read back from JSON) may hold tuples; junk entries are dropped.
    ev = GpuEvidence.from_evidence({"physical_gpus": (GPU0, None, 3, "")})
    assert ev.physical_gpus == (GPU0,)


# --- container_id ------------------------------------------------------------------------------
def test_container_id_present() -> None:
    ev = ProcessEvidence.from_evidence({"container_id": "abc123", "cgroup": "/docker/abc123"})
    assert (ev.container_id, ev.has_container_id, ev.container_id_type) == ("abc123", True, None)
    assert ev.container_id_or("other") == "abc123"


def test_container_id_null_is_a_host_process() -> None:
    ev = ProcessEvidence.from_evidence({"container_id": None})
    assert (ev.container_id, ev.has_container_id, ev.container_id_type) == (None, True, None)
    assert ev.container_id_or("target") is None, "null is a host process, not a missing key"


def test_container_id_missing_in_an_old_record_takes_the_fallback() -> None:
    ev = ProcessEvidence.from_evidence({"pid": 42})
    assert (ev.container_id, ev.has_container_id, ev.container_id_type) == (None, False, None)
    assert ev.container_id_or("target") == "target"
    assert ProcessEvidence.from_evidence(None).container_id_or(None) is None


@pytest.mark.parametrize(("value", "name"), [(5, "int"), (["abc"], "list"), ({"id": "x"}, "dict")])
def test_container_id_of_the_wrong_type_is_named_not_raised(value: Any, name: str) -> None:
    ev = ProcessEvidence.from_evidence({"container_id": value})
    assert (ev.container_id, ev.has_container_id, ev.container_id_type) == (None, True, name)
    assert ev.container_id_or("target") is None


# --- cgroup ------------------------------------------------------------------------------------
def test_cgroup_present() -> None:
    assert ProcessEvidence.from_evidence({"cgroup": "/system.slice/docker-abc.scope"}).cgroup == (
        "/system.slice/docker-abc.scope"
    )


def test_cgroup_missing_reads_none() -> None:
    assert ProcessEvidence.from_evidence({"container_id": "abc"}).cgroup is None


@pytest.mark.parametrize("value", [None, 1, ["/docker/abc"], {"path": "/"}])
def test_cgroup_of_the_wrong_type_reads_none(value: Any) -> None:
    assert ProcessEvidence.from_evidence({"cgroup": value}).cgroup is None


def test_process_evidence_old_record_shape() -> None:
    # A KillProcess written before the cgroup was recorded: only the container id.
    ev = ProcessEvidence.from_evidence({"pid": 7, "container_id": "abc"})
    assert (ev.container_id, ev.cgroup) == ("abc", None)


# --- owner -------------------------------------------------------------------------------------
def test_owner_present() -> None:
    assert OwnerEvidence.from_evidence({"owner": "alice", "limit": 2}).owner == "alice"


def test_owner_missing_reads_none() -> None:
    assert OwnerEvidence.from_evidence({"limit": 2}).owner is None
    assert OwnerEvidence.from_evidence(None).owner is None


@pytest.mark.parametrize("value", [None, "", 1000, ["alice"]])
def test_owner_of_the_wrong_type_reads_none(value: Any) -> None:
    assert OwnerEvidence.from_evidence({"owner": value}).owner is None


def test_owner_old_record_shape() -> None:
    # A breaker's alert carries no owner: only the breaker and when it tripped.
    assert (
        OwnerEvidence.from_evidence({"breaker": "stops", "tripped_at": "2026-03-02T12:00:00Z"}).owner is None
    )


def test_get_alerts_filters_by_the_owner_evidence() -> None:
    from controller.cli.alerts import _owner
    from controller.plan.open_alerts import OpenAlert

    def alert(evidence: dict[str, Any]) -> OpenAlert:
        return OpenAlert(
            reason="GpuQuotaExceeded", key="k", target="t", message="m", since=None, evidence=evidence
        )

    assert _owner(alert({"owner": "alice"})) == "alice"
    assert _owner(alert({"owner": 7})) is None
    assert _owner(alert({})) is None
