"""The planner's fast value builders are pydantic's own ``model_construct`` and ``model_copy``.

:mod:`controller.plan.values` sets a model's internals directly; these tests fail when a pydantic
upgrade changes what those internals are (equality, dumps, copies, hashing of frozen models).
"""

from __future__ import annotations

from datetime import UTC, datetime

from controller.memory import Attempt, ContainerMemory, ControllerMemory, ProcessSighting, Sample
from controller.plan.types import Action, ActionKind, DeferReason, Deferred, Reason, StopParams, Target
from controller.plan.values import built, replaced

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AT2 = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
TARGET = {
    "container": "train",
    "container_id": "c" * 64,
    "expected_state": "running",
    "expected_started_at": AT,
    "pid": None,
    "pid_start_time": None,
    "gpu": None,
    "user": "alice",
    "ledger_entry": None,
}


def test_built_is_model_construct() -> None:
    fast, slow = built(Target, dict(TARGET)), Target.model_construct(**TARGET)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert fast.model_dump(mode="json") == slow.model_dump(mode="json")
    assert fast.model_fields_set == slow.model_fields_set
    values = {
        "kind": ActionKind.STOP_CONTAINER,
        "target": fast,
        "reason": Reason.IDLE_TIMEOUT,
        "message": "stop train",
        "evidence": {"timeout_s": 60.0},
        "due_at": AT,
        "key": "k",
        "params": StopParams(grace_s=30.0, remove=True),
    }
    a = built(Action, dict(values))
    assert a == Action.model_construct(**values)
    assert Action.model_validate_json(a.model_dump_json()) == a
    d = built(
        Deferred,
        {
            "target": fast,
            "rule": Reason.IDLE_TIMEOUT,
            "why": DeferReason.NOT_DUE,
            "message": "m",
            "due_at": None,
            "evidence": {},
        },
    )
    assert Deferred.model_validate_json(d.model_dump_json()) == d


def test_replaced_is_model_copy() -> None:
    sighting = ProcessSighting(pid=7, start_time=1.5, first_seen_at=AT, last_seen_at=AT, sightings=2)
    changes = {"sightings": 3, "last_seen_at": AT2, "reported": True}
    fast, slow = replaced(sighting, changes), sighting.model_copy(update=changes)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump(mode="json") == slow.model_dump(mode="json")
    assert sighting.sightings == 2 and sighting.last_seen_at == AT, "the original is unchanged"


def test_the_slotted_records_are_built_and_copied_as_validated_ones() -> None:
    """Samples and memory records are slotted (controller.snapshot.Slotted): built unvalidated from
    typed values and copied field by field, they equal the validated construction."""
    sample = Sample.built({"at": AT, "cpu_usage_ns": 1, "net_bytes": 2, "idle": True, "detail": "idle"})
    assert sample == Sample(at=AT, cpu_usage_ns=1, net_bytes=2, idle=True, detail="idle")
    mem = ContainerMemory(container_id="c", name="a", samples=(sample,), last_state="running")
    copied = mem.model_copy(update={"name": "b", "samples": (), "last_state": ""})
    assert copied == ContainerMemory(container_id="c", name="b")
    assert mem.name == "a" and mem.samples == (sample,), "the original is unchanged"
    assert ContainerMemory(**copied.model_dump()) == copied
    assert not hasattr(mem, "__dict__") and not hasattr(sample, "__dict__")
    # A record of a later version (a field this one does not know) still loads, as a model's did.
    raw = {"container_id": "c", "name": "a", "later_field": 1, "samples": [{"at": AT.isoformat(), "x": 2}]}
    loaded = ControllerMemory.model_validate({"containers": {"c": raw}}).containers["c"]
    assert loaded == ContainerMemory(container_id="c", name="a", samples=(Sample(at=AT),))


def test_values_built_with_every_field_share_one_fields_set_that_nothing_changes() -> None:
    """``built`` hands every complete value one set of field names; pydantic only ever adds to a
    model's fields set and copies it on ``model_copy``, so no value can change another's."""
    first, second = built(Target, dict(TARGET)), built(Target, {**TARGET, "container": "other"})
    assert first.model_fields_set == second.model_fields_set == set(Target.model_fields)
    assert first.model_fields_set is second.model_fields_set, "one set, shared"
    copied = first.model_copy(update={"user": "bob"})
    assert copied.model_fields_set == set(Target.model_fields)
    assert first.model_fields_set is not copied.model_fields_set, "a copy has a set of its own"
    partial = built(Target, {"container": "train", "container_id": "c"})
    assert partial.model_fields_set == {"container", "container_id"}, "an incomplete one: its keys"
    assert second.model_fields_set == set(Target.model_fields), "unchanged by the others"


def test_replaced_keeps_every_field_set_and_adds_to_a_partial_set() -> None:
    attempt = Attempt(failures=1)
    partial = replaced(attempt, {"last_error": "boom"})
    assert partial.model_fields_set == attempt.model_copy(update={"last_error": "boom"}).model_fields_set
    assert partial.model_fields_set == {"failures", "last_error"}
    full = built(Attempt, dict(attempt.__dict__))
    assert replaced(full, {"last_error": "boom"}).model_fields_set == set(Attempt.model_fields)
