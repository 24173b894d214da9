"""The planner's fast value builders are pydantic's own ``model_construct`` and ``model_copy``.

:mod:`controller.plan.values` sets a model's internals directly; these tests fail when a pydantic
upgrade changes what those internals are (equality, dumps, copies, hashing of frozen models).
"""

from __future__ import annotations

from datetime import UTC, datetime

from controller.memory import ContainerMemory, Sample
from controller.plan.types import Action, ActionKind, DeferReason, Deferred, Reason, StopParams, Target
from controller.plan.values import built, replaced

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
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
    sample = built(Sample, {"at": AT, "cpu_usage_ns": 1, "net_bytes": 2, "idle": True, "detail": "idle"})
    assert sample == Sample(at=AT, cpu_usage_ns=1, net_bytes=2, idle=True, detail="idle")
    mem = ContainerMemory(container_id="c", name="a", samples=(sample,), last_state="running")
    changes = {"name": "b", "samples": (), "last_state": ""}
    fast, slow = replaced(mem, changes), mem.model_copy(update=changes)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump(mode="json") == slow.model_dump(mode="json")
    assert mem.name == "a" and mem.samples == (sample,), "the original is unchanged"


def test_values_built_with_every_field_share_one_fields_set_that_nothing_changes() -> None:
    """``built`` hands every complete value one set of field names; pydantic only ever adds to a
    model's fields set and copies it on ``model_copy``, so no value can change another's."""
    first, second = built(Target, dict(TARGET)), built(Target, {**TARGET, "container": "other"})
    assert first.model_fields_set == second.model_fields_set == set(Target.model_fields)
    copied = first.model_copy(update={"user": "bob"})
    assert copied.model_fields_set == set(Target.model_fields)
    assert first.model_fields_set is not copied.model_fields_set, "a copy has a set of its own"
    partial = built(Target, {"container": "train", "container_id": "c"})
    assert partial.model_fields_set == {"container", "container_id"}, "an incomplete one: its keys"
    assert second.model_fields_set == set(Target.model_fields), "unchanged by the others"


def test_replaced_keeps_every_field_set_and_adds_to_a_partial_set() -> None:
    mem = ContainerMemory(container_id="c", name="a")
    partial = replaced(mem, {"name": "b"})
    assert partial.model_fields_set == mem.model_copy(update={"name": "b"}).model_fields_set
    assert partial.model_fields_set == {"container_id", "name"}
    full = built(ContainerMemory, dict(mem.__dict__))
    assert replaced(full, {"name": "b"}).model_fields_set == set(ContainerMemory.model_fields)
