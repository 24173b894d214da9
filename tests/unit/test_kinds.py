"""The CRD-like kinds: shapes, strictness, unset versus null, the built-in default and the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from crd_like_specs.kinds import (
    API_VERSION,
    KINDS,
    ContainerSelector,
    Exemption,
    LifecyclePolicy,
    Settings,
    SpecModel,
    TypeSettings,
    UserGroup,
)
from crd_like_specs.vocabulary import ContainerType
from desired_state.load import builtin_lifecycle, builtin_policy, load_policy

EXAMPLES = Path(__file__).resolve().parents[2] / "crd_like_specs" / "examples"


def doc(kind: str, spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def errors_of(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [(tuple(e["loc"]), e["type"]) for e in info.value.errors()]


def test_examples_validate_and_cover_every_kind() -> None:
    policy = load_policy(specs_dir=EXAMPLES)
    kinds = {d.kind for d in policy.documents()}
    assert kinds == set(KINDS)
    researcher = policy.group("researcher")
    assert researcher is not None
    # inline members and the members file are merged; the file's comment is not a member
    assert researcher.spec.members == ["alice", "bob", "h.baker@school.example"]


def test_example_files_are_commented() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        assert path.read_text().lstrip().startswith("#"), f"{path.name} should explain itself"


def test_unset_and_null_are_different_policies() -> None:
    unset = Settings.model_validate({})
    never = Settings.model_validate({"idleTimeout": None})
    assert unset.idle_timeout is None and never.idle_timeout is None
    assert unset != never
    assert "idle_timeout" in never.model_fields_set and "idle_timeout" not in unset.model_fields_set
    assert never.model_dump(mode="json", exclude_unset=True) == {"idleTimeout": None}


def test_durations_are_seconds_in_python_and_strings_in_yaml() -> None:
    s = Settings.model_validate({"idleTimeout": "1.5h", "sigtermGrace": "45s"})
    assert s.idle_timeout == 5400.0 and s.sigterm_grace == 45.0
    assert s.model_dump(mode="json", exclude_unset=True) == {"idleTimeout": "90m", "sigtermGrace": "45s"}


@pytest.mark.parametrize(
    ("data", "loc", "kind"),
    [
        ({"idleTimeout": 48}, ("idleTimeout",), "duration"),
        ({"idleTimeout": 0}, ("idleTimeout",), "duration"),
        ({"idleTimeout": True}, ("idleTimeout",), "duration"),
        ({"idleTimeout": "-1h"}, ("idleTimeout",), "duration"),
        ({"gracePeriod": None}, ("gracePeriod",), "not_null"),
        ({"gpuIdleThresholdPct": None}, ("gpuIdleThresholdPct",), "not_null"),
        ({"gpuIdleThresholdPct": "5"}, ("gpuIdleThresholdPct",), "float_type"),
        ({"gpuIdleThresholdPct": 101}, ("gpuIdleThresholdPct",), "less_than_equal"),
        ({"idleDetectionWindow": 2.0}, ("idleDetectionWindow",), "int_type"),
        ({"idleDetectionWindow": 0}, ("idleDetectionWindow",), "greater_than_equal"),
        ({"removeAfterIdleStop": "yes"}, ("removeAfterIdleStop",), "bool_type"),
        ({"keepalivePath": "workspace/.keep-alive"}, ("keepalivePath",), "string_pattern_mismatch"),
        ({"idle_timeout": "1h"}, ("idle_timeout",), "extra_forbidden"),  # snake_case is DS01's dialect
        ({"idleExempt": True}, ("idleExempt",), "extra_forbidden"),  # only per container type
    ],
)
def test_settings_are_strict(data: dict[str, Any], loc: tuple[str, ...], kind: str) -> None:
    assert (loc, kind) in errors_of(Settings, data)


def test_zero_needs_a_unit_and_is_then_accepted() -> None:
    assert Settings.model_validate({"idleTimeout": "0s"}).idle_timeout == 0.0


def test_type_settings_carry_idle_exempt() -> None:
    t = TypeSettings.model_validate({"idleExempt": True, "maxRuntime": "168h"})
    assert t.idle_exempt is True and t.max_runtime == 604800.0


def test_unknown_container_type_is_rejected() -> None:
    found = errors_of(LifecyclePolicy, doc("LifecyclePolicy", {"containerTypes": {"vscode": {}}}))
    assert any(loc[:3] == ("spec", "containerTypes", "vscode") for loc, _ in found)


def test_every_known_container_type_is_accepted() -> None:
    spec = {"containerTypes": {t.value: {"sigtermGrace": "10s"} for t in ContainerType}}
    policy = LifecyclePolicy.model_validate(doc("LifecyclePolicy", spec))
    assert set(policy.spec.container_types) == set(ContainerType)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"gpuReset": {"command": ["nvidia-smi", "-r"]}}, "reset_command"),  # would reset every GPU
        ({"protect": [{}]}, "empty_selector"),  # an empty selector would match everything
        ({"protect": None}, "not_null"),
        ({"safety": {"breakerMaxFraction": 1.5}}, "less_than_equal"),
        ({"hostGpuProcesses": "kill"}, "enum"),
        ({"trustLabels": "true"}, "bool_type"),
    ],
)
def test_lifecycle_policy_rejects_unsafe_or_wrong_globals(data: dict[str, Any], kind: str) -> None:
    assert kind in {k for _, k in errors_of(LifecyclePolicy, doc("LifecyclePolicy", data))}


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        (
            {"user": "a", "exemptFrom": ["idle"], "reason": "r", "expiresAt": "2026-01-01T00:00:00"},
            "timezone_aware",
        ),
        ({"user": "a", "exemptFrom": ["idle", "idle"], "reason": "r", "expiresAt": None}, "duplicate"),
        ({"user": "a", "exemptFrom": [], "reason": "r", "expiresAt": None}, "too_short"),
        ({"user": "a", "exemptFrom": ["sleep"], "reason": "r", "expiresAt": None}, "enum"),
        ({"user": "a", "exemptFrom": ["idle"], "reason": "r"}, "missing"),  # permanence must be explicit
        ({"user": "a", "exemptFrom": ["idle"], "expiresAt": None}, "missing"),
    ],
)
def test_exemptions_are_explicit(spec: dict[str, Any], kind: str) -> None:
    assert kind in {k for _, k in errors_of(Exemption, doc("Exemption", spec))}


def test_metadata_name_and_api_version_are_checked() -> None:
    bad_name = doc("UserGroup", {}, name="has space")
    assert (("metadata", "name"), "string_pattern_mismatch") in errors_of(UserGroup, bad_name)
    wrong_version = {**doc("UserGroup", {}), "apiVersion": "v1"}
    assert (("apiVersion",), "literal_error") in errors_of(UserGroup, wrong_version)


def test_selector_needs_a_key() -> None:
    assert ContainerSelector.model_validate({"owner": "alice"}).owner == "alice"
    with pytest.raises(ValidationError):
        ContainerSelector.model_validate({"reason": "nothing to match"})


def _unset_fields(model: SpecModel, prefix: str = "") -> list[str]:
    missing = []
    for name, info in type(model).model_fields.items():
        if name not in model.model_fields_set:
            missing.append(prefix + name)
            continue
        value = getattr(model, name)
        if (
            isinstance(value, SpecModel)
            and info.annotation is not None
            and name != "ds01"
            and name != "resources"
        ):
            missing.extend(_unset_fields(value, f"{prefix}{name}."))
    return missing


def test_builtin_lifecycle_sets_every_key_it_is_the_bottom_layer_for() -> None:
    spec = builtin_lifecycle().spec
    # resources and ds01 are DS01's preserved settings: the built-in carries exactly DS01's keys
    assert _unset_fields(spec) == []
    assert set(spec.settings.model_fields_set) == set(Settings.model_fields)


def test_builtin_policy_has_ds01s_groups_without_members() -> None:
    policy = builtin_policy()
    assert [g.metadata.name for g in policy.groups] == ["student", "researcher", "faculty", "admin"]
    assert all(g.spec.members == [] for g in policy.groups)
    assert policy.default_group_name == "student"
    assert policy.lifecycle is None and policy.origin == "built-in default"


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    from desired_state.errors import unwrap_model

    seen.add(model)
    for info in model.model_fields.values():
        for candidate in (unwrap_model(info.annotation), _item_model(info.annotation)):
            if candidate is not None and candidate not in seen:
                _models(candidate, seen)
    return seen


def _item_model(annotation: Any) -> type[BaseModel] | None:
    from desired_state.errors import item_type, unwrap_model

    return unwrap_model(item_type(annotation))


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_field_is_described_and_unknown_keys_are_forbidden(kind: str) -> None:
    models = _models(KINDS[kind], set())
    assert len(models) >= 3
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__
        undocumented = [name for name, info in model.model_fields.items() if not info.description]
        assert undocumented == [], f"{model.__name__}: {undocumented}"
