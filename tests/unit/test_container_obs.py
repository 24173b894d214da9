"""``ContainerObs`` and the other observed values the planner reads most (GPU references, GPU
processes, activity signals, ledger rows) are slotted pydantic dataclasses, not models: they must
still behave as every other observed value does (validated, frozen, no unknown fields, the model's
JSON, copy and dump)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from controller.snapshot import (
    ActivitySignals,
    ContainerObs,
    ContainerState,
    DomainHealth,
    GpuProcessObs,
    GpuRef,
    GpuRefSource,
    GpuUtilReading,
    GpuUuid,
    KeepAlive,
    KeepAliveState,
    Ledger,
    LedgerEntry,
    Slotted,
    Snapshot,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _obs(**changes: object) -> ContainerObs:
    fields: dict[str, object] = {
        "id": "c" * 64,
        "name": "train",
        "image": "img",
        "labels": {"ds01.user": "alice"},
        "state": "running",
        "created_at": AT,
        "started_at": AT,
        "gpu_refs": (GpuRef(raw="0", source=GpuRefSource.DEVICE_REQUEST, uuid=GpuUuid("GPU-0")),),
    }
    fields.update(changes)
    return ContainerObs(**fields)  # type: ignore[arg-type]


def test_construction_validates_and_coerces() -> None:
    c = _obs(started_at="2026-03-01T12:00:00Z")
    assert c.state is ContainerState.RUNNING  # the string became the enum
    assert c.started_at == AT
    with pytest.raises(ValidationError, match="state"):
        _obs(state="sleeping")
    with pytest.raises(ValidationError, match="Unexpected keyword argument"):
        _obs(colour="blue")  # no unknown fields, as with every observed value


def test_it_is_frozen_and_slotted() -> None:
    c = _obs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "other"  # type: ignore[misc]
    assert not hasattr(c, "__dict__")  # the fields are slots: what makes the planner's reads quick


def test_model_copy_replaces_fields_without_touching_the_original() -> None:
    c = _obs()
    d = c.model_copy(update={"name": "train-old", "state": ContainerState.EXITED, "exit_code": 0})
    assert (d.name, d.state, d.exit_code) == ("train-old", ContainerState.EXITED, 0)
    assert (c.name, c.state, c.exit_code) == ("train", ContainerState.RUNNING, None)
    # Every other field is carried over, and the copy equals the validated construction.
    assert d == dataclasses.replace(c, name="train-old", state=ContainerState.EXITED, exit_code=0)
    assert c.model_copy() == c and c.model_copy() is not c
    with pytest.raises(AttributeError):
        c.model_copy(update={"colour": "blue"})


def test_a_snapshot_dumps_and_loads_it_as_before() -> None:
    c = _obs(finished_at=None, restart_count=2)
    snap = Snapshot(observed_at=AT, health=(DomainHealth(domain="docker", ok=True),), containers=(c,))
    dumped = snap.model_dump(mode="json")["containers"][0]
    # Every field, in the declared order (what `ds01ctl get -o json` and last-pass.json carry).
    assert list(dumped) == [f.name for f in dataclasses.fields(ContainerObs)]
    assert dumped["state"] == "running" and dumped["started_at"] == "2026-03-01T12:00:00Z"
    assert dumped["gpu_refs"][0]["uuid"] == "GPU-0" and dumped["restart_count"] == 2
    back = Snapshot.model_validate_json(snap.model_dump_json())
    assert back == snap and isinstance(back.containers[0], ContainerObs)
    assert back.containers[0].has_gpu and back.containers[0].short_id == "c" * 12


# --- every slotted observed value -----------------------------------------------------------------
# The planner reads these thousands of times a pass; each is a slotted pydantic dataclass for that
# (controller.snapshot.Slotted), and must still behave as the model it was.

_VALUES: dict[type[Slotted], dict[str, object]] = {
    ContainerObs: {"id": "c" * 64, "name": "train", "image": "img", "state": "running", "created_at": AT},
    GpuRef: {"raw": "0", "source": GpuRefSource.DEVICE_REQUEST, "uuid": "GPU-0"},
    GpuProcessObs: {"pid": 4242, "device_uuid": "MIG-1", "gpu_uuid": "GPU-0", "container_id": "c" * 64},
    ActivitySignals: {"read_at": AT, "cpu_usage_ns": 5, "gpu_util": [{"uuid": "GPU-0", "percent": 3.0}]},
    GpuUtilReading: {"uuid": "GPU-0", "percent": 40.0},
    KeepAlive: {"state": KeepAliveState.PRESENT, "inode": 7},
    LedgerEntry: {"gpu": "0", "container": "train", "user": "alice", "allocated_at": AT},
}


@pytest.mark.parametrize("cls", list(_VALUES), ids=lambda cls: cls.__name__)
def test_every_slotted_value_validates_is_frozen_and_slotted(cls: type[Slotted]) -> None:
    value = cls(**_VALUES[cls])  # type: ignore[call-arg]
    assert not hasattr(value, "__dict__")
    first = dataclasses.fields(cast(Any, cls))[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, first, getattr(value, first))
    with pytest.raises(ValidationError, match="Unexpected keyword argument"):
        cls(**_VALUES[cls], colour="blue")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        cls(**{**_VALUES[cls], first: object()})  # type: ignore[call-arg]
    again = cls(**_VALUES[cls])  # type: ignore[call-arg]
    assert value == again
    if cls is not ContainerObs:  # (its labels are a mapping: never hashable, as a model was not)
        assert hash(value) == hash(again)


@pytest.mark.parametrize("cls", list(_VALUES), ids=lambda cls: cls.__name__)
def test_every_slotted_value_copies_and_dumps_as_a_model_would(cls: type[Slotted]) -> None:
    value = cls(**_VALUES[cls])  # type: ignore[call-arg]
    names = [f.name for f in dataclasses.fields(cast(Any, cls))]
    last = names[-1]
    copied = value.model_copy(update={last: None})
    assert getattr(copied, last) is None and copied is not value
    assert all(getattr(copied, n) == getattr(value, n) for n in names[:-1])
    assert value.model_copy() == value
    with pytest.raises(AttributeError):
        value.model_copy(update={"colour": "blue"})
    dumped = value.model_dump(mode="json")
    assert list(dumped) == names  # every field, in the declared order
    # The dump is the one a model holding it gives (what last-pass.json and the event log carry).
    assert TypeAdapter(cls).validate_python(dumped) == value
    assert json.loads(json.dumps(dumped)) == dumped


def test_a_snapshot_with_every_slotted_value_round_trips_through_json() -> None:
    c = _obs(
        signals=ActivitySignals(**_VALUES[ActivitySignals]),  # type: ignore[arg-type]
    )
    snap = Snapshot(
        observed_at=AT,
        health=(DomainHealth(domain="docker", ok=True),),
        containers=(c,),
        processes=(GpuProcessObs(**_VALUES[GpuProcessObs]),),  # type: ignore[arg-type]
        ledger=Ledger(path="ledger.json", entries=(LedgerEntry(**_VALUES[LedgerEntry]),)),  # type: ignore[arg-type]
    )
    back = Snapshot.model_validate_json(snap.model_dump_json())
    assert back == snap
    assert isinstance(back.processes[0], GpuProcessObs) and isinstance(back.ledger.entries[0], LedgerEntry)
    assert back.containers[0].signals is not None
    assert back.containers[0].signals.gpu_util[0] == GpuUtilReading(uuid=GpuUuid("GPU-0"), percent=3.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class _OneField(Slotted):
    only: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _TwoFields(Slotted):
    first: int
    second: str = "b"


def test_the_copy_of_a_slotted_value_of_one_field_and_of_two() -> None:
    one = _OneField(only=1)
    assert one.model_copy() == one and one.model_copy(update={"only": 2}) == _OneField(only=2)
    two = _TwoFields(first=1)
    assert two.model_copy(update={"second": "c"}) == _TwoFields(first=1, second="c")
    assert two.model_copy() == two and two.model_copy() is not two


def test_a_copy_naming_a_field_that_is_not_there_fails_whole_and_leaves_the_original() -> None:
    two = _TwoFields(first=1)
    with pytest.raises(AttributeError, match="colour"):
        two.model_copy(update={"second": "c", "colour": "blue"})
    assert two == _TwoFields(first=1)


def test_built_takes_every_field_and_nothing_else() -> None:
    """``built`` (unvalidated, for the planner) equals the validated construction; a name that is
    not a field, or a field left out, is an error, never a value with a slot unset."""
    assert _TwoFields.built({"first": 1, "second": "c"}) == _TwoFields(first=1, second="c")
    assert _TwoFields.built({"second": "c", "first": 1}) == _TwoFields(first=1, second="c")
    with pytest.raises(AttributeError, match="colour"):
        _TwoFields.built({"first": 1, "second": "c", "colour": "blue"})
    with pytest.raises(AttributeError, match="colour"):
        _TwoFields.built({"first": 1, "colour": "blue"})  # as many names as fields, one not a field
    with pytest.raises(KeyError, match="second"):
        _TwoFields.built({"first": 1})
