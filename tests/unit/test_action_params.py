"""Typed action params: one model per kind, stable JSON, and old records still readable.

Before the params were typed, a stop's ``params.timeout_s`` was the SIGTERM grace while a reset's
``timeout_s`` was the command's time limit and the ladder's evidence ``timeout_s`` the idle limit.
A stop now says ``grace_s``; an intent recorded by the previous version (memory file or event
log) must still recover with its grace.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from controller.act.salvage import memory_from_events
from controller.act.schedule import action_deadline_s, start_line
from controller.memory import ControllerMemory
from controller.plan.types import (
    PARAMS_BY_KIND,
    Action,
    ActionKind,
    AlertParams,
    KillParams,
    ResetParams,
    StopParams,
    WarnParams,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CID = "c" * 64
KEY = f"StopContainer:{CID}:2026-03-01T10:00:00+00:00:IdleTimeout"

# An intent exactly as the previous version wrote it into the memory file.
OLD_INTENT_ACTION = {
    "kind": "StopContainer",
    "target": {
        "container": "train",
        "container_id": CID,
        "expected_state": "running",
        "expected_started_at": "2026-03-01T10:00:00+00:00",
        "user": "alice",
    },
    "reason": "IdleTimeout",
    "message": "stop train (owner alice): idle for 1h, limit 1h",
    "evidence": {"timeout_s": 3600.0, "gpus": []},
    "due_at": "2026-03-01T11:00:00+00:00",
    "key": KEY,
    "params": {"timeout_s": 45.0, "remove": True},
}


def test_every_action_kind_has_one_params_model() -> None:
    assert set(PARAMS_BY_KIND) == set(ActionKind)
    assert len(set(PARAMS_BY_KIND.values())) == len(ActionKind)


def test_params_mapping_becomes_the_model_of_its_kind() -> None:
    a = Action.model_validate({**OLD_INTENT_ACTION, "kind": "KillProcess", "params": {"grace_s": 3}})
    assert a.params == KillParams(grace_s=3.0)
    r = Action.model_validate({**OLD_INTENT_ACTION, "kind": "ResetGpu", "params": {"timeout_s": 20}})
    assert r.params == ResetParams(timeout_s=20.0), "a reset's timeout_s stays the reset's time limit"
    w = Action.model_validate({**OLD_INTENT_ACTION, "kind": "WarnOwner", "params": {"warning_key": "w"}})
    assert w.params_as(WarnParams).warning_key == "w"
    assert w.params_as(StopParams) == StopParams(), "another kind's params read as defaults"
    alert = Action.model_validate({**OLD_INTENT_ACTION, "kind": "AlertAdmin", "params": {}})
    assert alert.params == AlertParams()


def test_stop_json_names_the_grace_grace_s() -> None:
    a = Action.model_validate({**OLD_INTENT_ACTION, "params": {"grace_s": 30, "remove": False}})
    # Every field of the kind, always present: the quota's counted ids are null on a stop of any other rule.
    assert a.model_dump(mode="json")["params"] == {
        "grace_s": 30.0,
        "remove": False,
        "quota_counted_ids": None,
    }


def test_old_memory_file_intent_recovers_with_its_grace() -> None:
    raw = {"intents": {KEY: {"action": OLD_INTENT_ACTION, "started_at": "2026-03-01T11:00:05+00:00"}}}
    mem = ControllerMemory.model_validate_json(json.dumps(raw))
    action = Action.model_validate(mem.intents[KEY].action)
    assert action.params == StopParams(grace_s=45.0, remove=True)
    assert "SIGTERM grace 45 s" in start_line(action)
    assert action_deadline_s(action) == action_deadline_s(
        Action.model_validate({**OLD_INTENT_ACTION, "params": {"grace_s": 45.0, "remove": True}})
    )


def test_old_event_log_intent_recovers_with_its_grace() -> None:
    started = {
        "timestamp": "2026-03-01T11:00:05+00:00",
        "event_type": "controller.action_started",
        "user": "alice",
        "details": {
            "action": "StopContainer",
            "kind": "StopContainer",
            "key": KEY,
            "reason": "idle_timeout",
            "container": "train",
            "container_id": CID,
            "phase": "started",
            "intent_at": "2026-03-01T11:00:05+00:00",
            "message": "stop train",
            "params": {"timeout_s": 45.0, "remove": True},
            "expected_state": "running",
            "expected_started_at": "2026-03-01T10:00:00+00:00",
        },
    }
    mem = memory_from_events([started], NOW)
    assert KEY in mem.intents, "the old started line still rebuilds its intent"
    action = Action.model_validate(mem.intents[KEY].action)
    assert action.params == StopParams(grace_s=45.0, remove=True)
