"""``ContainerObs`` is a slotted pydantic dataclass, not a model: it must still behave as every
other observed value does (validated, frozen, no unknown fields, the model's JSON and copy)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from controller.snapshot import (
    ContainerObs,
    ContainerState,
    DomainHealth,
    GpuRef,
    GpuRefSource,
    GpuUuid,
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
