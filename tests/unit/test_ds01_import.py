"""DS01 import: the real resource-limits.yaml, lossless and the same as the hand-written CRD-like specs."""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crd_like_specs.kinds import LifecyclePolicy, SpecModel
from crd_like_specs.vocabulary import ContainerType
from desired_state.ds01_import import import_ds01, main
from desired_state.errors import PolicyLoadError
from desired_state.load import builtin_lifecycle, builtin_policy, dump_documents, load_policy, load_spec_text
from desired_state.policy_set import PolicySet
from desired_state.resolve import global_policy, resolve_effective_policy
from desired_state.validate import validate_paths, validation_warnings

DATA = Path(__file__).resolve().parents[1] / "data"
DS01_DIR = DATA / "ds01"
EQUIVALENT = DATA / "policy" / "ds01-equivalent.yaml"
NOW = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.fixture
def real_file_only(tmp_path: Path) -> Path:
    """The shipped resource-limits.yaml alone: no members, overrides or exemptions."""
    shutil.copy(DS01_DIR / "resource-limits.yaml", tmp_path / "resource-limits.yaml")
    return tmp_path


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_import_equals_the_hand_written_crd_documents(tmp_path: Path) -> None:
    imported = import_ds01(DS01_DIR)
    specs = tmp_path / "specs"
    specs.mkdir()
    # The equivalent refers to the members files as ../ds01/groups/*.members: keep that layout.
    shutil.copytree(DS01_DIR, tmp_path / "ds01")
    shutil.copy(EQUIVALENT, specs / "policy.yaml")
    hand_written = load_policy(specs_dir=specs)
    assert imported.documents() == hand_written.documents()
    assert imported == hand_written


def test_import_dump_load_is_unchanged() -> None:
    imported = import_ds01(DS01_DIR)
    again = load_spec_text(dump_documents(imported.documents()))
    assert again.documents() == imported.documents()


def test_the_converter_prints_loadable_specs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DS01_DIR)]) == 0
    printed = capsys.readouterr().out
    assert load_spec_text(printed) == import_ds01(DS01_DIR)
    assert main([]) == 2


def _written_leaves(model: SpecModel, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    out: dict[tuple[str, ...], object] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, SpecModel):
            out.update(_written_leaves(value, (*prefix, name)))
        elif isinstance(value, dict) and value and all(isinstance(v, SpecModel) for v in value.values()):
            for key, item in value.items():
                out.update(_written_leaves(item, (*prefix, name, str(key))))
        else:
            out[(*prefix, name)] = value
    return out


def test_builtin_default_equals_ds01s_shipped_file(real_file_only: Path) -> None:
    imported = import_ds01(real_file_only)
    builtin = builtin_policy()
    # the groups are identical documents (no members either way)
    assert imported.groups == builtin.groups
    # every key the shipped file sets has the same value in the built-in LifecyclePolicy
    assert imported.lifecycle is not None
    shipped = _written_leaves(imported.lifecycle.spec)
    ours = _written_leaves(builtin_lifecycle().spec)
    assert len(shipped) > 50
    assert {k: ours.get(k, "<missing>") for k in shipped} == shipped


@pytest.mark.parametrize("owner", ["sam", "nobody", "unknown", "root"])
@pytest.mark.parametrize("ctype", list(ContainerType))
def test_no_configuration_behaves_like_the_shipped_file(
    real_file_only: Path, owner: str, ctype: ContainerType
) -> None:
    imported = import_ds01(real_file_only)
    a = resolve_effective_policy(imported, owner=owner, container_type=ctype, name="c", labels={}, now=NOW)
    b = resolve_effective_policy(
        builtin_policy(), owner=owner, container_type=ctype, name="c", labels={}, now=NOW
    )
    values_a = {k: v.value for k, v in a if hasattr(v, "value")}
    values_b = {k: v.value for k, v in b if hasattr(v, "value")}
    assert values_a == values_b


def test_members_files_merge_with_inline_members_and_sort(tmp_path: Path) -> None:
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        groups:
          researcher:
            members: [zed, rita]
            idle_timeout_h: 1
    """,
    )
    write(tmp_path, "groups/researcher.members", "# comment\nrita\n  ann  # trailing comment\n\n")
    policy = import_ds01(tmp_path)
    assert policy.groups[0].spec.members == ["ann", "rita", "zed"]


def test_optional_files_may_be_missing_and_comment_only_sections_are_empty(tmp_path: Path) -> None:
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        defaults:
          # everything commented out
        groups:
          student:
            # comment-only group
          researcher:
            aggregate:
              # nothing
            policies:
              # nothing
        gpu_allocation:
          # slots_per_gpu: 1
        policies:
        container_types:
          docker:
        monitoring:
        user_overrides:
    """,
    )
    write(tmp_path, "user-overrides.yaml", "# nobody yet\n")
    write(tmp_path, "lifecycle-exemptions.yaml", "exemptions:\n")
    policy = import_ds01(tmp_path)
    assert [g.metadata.name for g in policy.groups] == ["student", "researcher"]
    assert policy.overrides == () and policy.exemptions == ()
    assert policy.lifecycle is not None and policy.lifecycle.spec.default_group == "student"


def test_legacy_aliases_are_honoured(tmp_path: Path) -> None:
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        defaults:
          max_gpu_slots: 2
          max_gpus_per_container: 3
          cpus: 8
        groups:
          a:
            max_mig_instances: 5
            max_mig_per_container: 1
          b:
            max_gpus_per_user: null
        gpu_allocation:
          mig_instances_per_gpu: 7
        policies:
          sigterm_grace_seconds: 20
    """,
    )
    policy = import_ds01(tmp_path)
    lifecycle = policy.lifecycle
    assert lifecycle is not None
    res = lifecycle.spec.resources
    assert (res.max_gpu_equivalents, res.max_gpu_slots_per_container, res.max_cpus) == (2.0, 3, 8.0)
    a, b = policy.groups
    assert (a.spec.resources.max_gpu_equivalents, a.spec.resources.max_gpu_slots_per_container) == (5.0, 1)
    assert b.spec.resources.max_gpu_equivalents is None
    assert "max_gpu_equivalents" in b.spec.resources.model_fields_set  # null (unlimited), not unset
    gpu = lifecycle.spec.ds01.gpu_allocation
    assert gpu is not None and gpu.slots_per_gpu == 7
    assert lifecycle.spec.settings.sigterm_grace == 20.0


def test_old_unsuffixed_keys_with_units_are_read_as_what_they_say(tmp_path: Path) -> None:
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        defaults:
          max_runtime: "24h"
          idle_timeout: 30m
          container_hold_after_stop: null
        policies:
          grace_period: 45m
        container_types:
          docker:
            max_runtime: 2d
    """,
    )
    lifecycle = import_ds01(tmp_path).lifecycle
    assert lifecycle is not None
    s = lifecycle.spec.settings
    assert (s.max_runtime, s.idle_timeout, s.container_hold_after_stop, s.grace_period) == (
        86400.0,
        1800.0,
        None,
        2700.0,
    )
    assert lifecycle.spec.container_types[ContainerType.DOCKER].max_runtime == 172800.0


def test_non_lifecycle_keys_are_preserved(tmp_path: Path) -> None:
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        defaults:
          memory: 16g
          storage_tmp: 50G
          io_read_bps: 500M
          priority: 3
        enforcement: {aggregate_limits: false, cgroup_driver: cgroupfs}
        access_control:
          admin_users: [root]
          wrapper: {enforcement_mode: monitoring, debug_level: 2, unknown_commands: deny}
        bare_metal_access: {default_grant_duration_h: 2, exempt_users: []}
        groups:
          g:
            aggregate: {cpu_quota: "200%", memory_max: 8G, tasks_max: null}
    """,
    )
    policy = import_ds01(tmp_path)
    lifecycle = policy.lifecycle
    assert lifecycle is not None
    res = lifecycle.spec.resources
    assert (res.memory, res.storage_tmp, res.io_read_bps, res.priority) == ("16g", "50G", "500M", 3)
    ds01 = lifecycle.spec.ds01
    assert ds01.enforcement is not None and ds01.enforcement.cgroup_driver == "cgroupfs"
    assert ds01.access_control is not None and ds01.access_control.wrapper is not None
    assert ds01.access_control.wrapper.unknown_commands == "deny"
    assert ds01.bare_metal_access is not None and ds01.bare_metal_access.default_grant_duration == 7200.0
    aggregate = policy.groups[0].spec.resources.aggregate
    assert aggregate is not None and (aggregate.cpu_quota, aggregate.tasks_max) == ("200%", None)
    # and nothing is lost on the way through YAML
    assert load_spec_text(dump_documents(policy.documents())) == policy


def test_infrastructure_containers_become_protect_by_prefix(real_file_only: Path) -> None:
    policy = import_ds01(real_file_only)
    for name, protected in [
        ("ds01-grafana", True),
        ("ds01-grafana-2", True),
        ("my-ds01-grafana", False),
        ("web", False),
    ]:
        eff = resolve_effective_policy(
            policy, owner="x", container_type="docker", name=name, labels={}, now=NOW
        )
        assert eff.protected.value is protected, name
    eff = resolve_effective_policy(
        policy, owner="x", container_type="docker", name="ds01-prometheus", labels={}, now=NOW
    )
    assert eff.protected.source.startswith("LifecyclePolicy/ds01 protect[0]")


def test_keys_ds01_declared_but_never_read_are_honoured(tmp_path: Path) -> None:
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        policies:
          keepalive_max_duration_h: 12
          created_container_timeout_m: 5
    """,
    )
    eff = resolve_effective_policy(
        import_ds01(tmp_path), owner="a", container_type="atomic", name="c", labels={}, now=NOW
    )
    assert (
        eff.keepalive_max_age_s.value == 43200.0 and eff.keepalive_max_age_s.source == "LifecyclePolicy/ds01"
    )
    assert eff.created_container_timeout_s.value == 300.0


def test_override_file_entry_replaces_the_inline_entry(tmp_path: Path) -> None:
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        user_overrides:
          alice: {idle_timeout_h: 5, max_runtime_h: 5}
          bob: {idle_timeout_h: 2}
    """,
    )
    write(tmp_path, "user-overrides.yaml", "alice: {idle_timeout_h: 7}\n")
    policy = import_ds01(tmp_path)
    by_user = {o.spec.user: o for o in policy.overrides}
    assert by_user["alice"].spec.settings.idle_timeout == 7 * 3600.0
    assert "max_runtime" not in by_user["alice"].spec.settings.model_fields_set  # whole entry replaced
    assert by_user["bob"].spec.settings.idle_timeout == 2 * 3600.0


def test_exemption_records_become_exemptions(tmp_path: Path) -> None:
    shutil.copy(DS01_DIR / "resource-limits.yaml", tmp_path)
    write(
        tmp_path,
        "lifecycle-exemptions.yaml",
        """
        exemptions:
          - username: a.b@school.lan
            exempt_from: [idle_timeout, max_runtime_h]
            reason: old and new spellings
            expires_on: 2030-01-01T00:00:00Z
            requested_by: a.b
            metadata: {ticket_ref: T-1, project: 7}
          - username: c
            exempt_from: [idle_timeout_h]
            reason: no expiry key means permanent
    """,
    )
    first, second = import_ds01(tmp_path).exemptions
    assert first.metadata.name == "a_b-0"
    assert [e.value for e in first.spec.exempt_from] == ["idle", "max_runtime"]
    assert first.spec.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert first.metadata.annotations == {"ticket_ref": "T-1", "project": "7"}
    assert second.spec.expires_at is None and "expires_at" in second.spec.model_fields_set


def test_ds01_and_specs_together_form_one_policy(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write(
        specs,
        "grant.yaml",
        """
        apiVersion: ds01.io/v1alpha1
        kind: Exemption
        metadata: {name: sam-demo}
        spec: {user: sam, exemptFrom: [idle], reason: demo day, expiresAt: null}
    """,
    )
    policy = load_policy(specs_dir=specs, ds01_config_dir=DS01_DIR)
    assert isinstance(policy, PolicySet) and isinstance(policy.lifecycle, LifecyclePolicy)
    assert "sam-demo" in {e.metadata.name for e in policy.exemptions}
    eff = resolve_effective_policy(policy, owner="sam", container_type="atomic", name="c", labels={}, now=NOW)
    assert [e.name for e in eff.exemptions] == ["sam-demo"]
    assert eff.idle_timeout_s.value == 1800
    assert eff.idle_timeout_s.source == "LifecyclePolicy/ds01; waived by Exemption/sam-demo"
    # a LifecyclePolicy in the specs layers over DS01's (tests below); two in the specs stay an error
    for name in ("mine", "theirs"):
        write(
            specs,
            f"{name}.yaml",
            f"apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nmetadata: {{name: {name}}}\n",
        )
    with pytest.raises(PolicyLoadError, match="a second LifecyclePolicy"):
        load_policy(specs_dir=specs, ds01_config_dir=DS01_DIR)


OVERLAY = """
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  trustLabels: false
  protect:
    - {name: "db-*", reason: shared database}
  settings: {warnLead: 2m, idleMinDuration: 1m}
  gpuReset: {policy: never}
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata: {name: researcher}
spec:
  settings: {maxRuntime: 36h}
"""


def test_specs_layer_over_the_ds01_import_key_by_key(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write(specs, "site.yaml", OVERLAY)
    policy = load_policy(specs_dir=specs, ds01_config_dir=DS01_DIR)
    ds01_alone = import_ds01(DS01_DIR)
    assert policy.lifecycle is not None and policy.lifecycle.metadata.name == "site"
    # keys only the specs write come from the specs
    eff = resolve_effective_policy(
        policy,
        owner="alice",
        container_type="atomic",
        name="db-main",
        labels={"ds01.protected": "true"},
        now=NOW,
    )
    assert eff.protected.value is True and eff.protected.source.startswith("LifecyclePolicy/site protect[0]")
    assert eff.warn_lead_s.value == 120 and eff.warn_lead_s.source == "LifecyclePolicy/site"
    assert eff.idle_min_duration_s.value == 60 and eff.idle_min_duration_s.source == "LifecyclePolicy/site"
    gp = global_policy(policy)
    assert gp.trust_labels.value is False and gp.trust_labels.source == "LifecyclePolicy/site"
    assert gp.gpu_reset_policy.value == "never" and gp.gpu_reset_policy.source == "LifecyclePolicy/site"
    labelled = resolve_effective_policy(
        policy, owner="alice", container_type="atomic", name="x", labels={"ds01.protected": "true"}, now=NOW
    )
    assert labelled.protected.value is False  # trustLabels: false from the specs
    # keys only DS01's file writes still come from DS01's file (its groups, members, timeouts)
    alone = resolve_effective_policy(
        ds01_alone, owner="alice", container_type="atomic", name="x", labels={}, now=NOW
    )
    assert eff.idle_timeout_s == alone.idle_timeout_s and eff.idle_timeout_s.source == "LifecyclePolicy/ds01"
    assert policy.default_group_name == ds01_alone.default_group_name
    # a UserGroup of the same name overrides the keys it sets, and keeps DS01's members and the rest
    researcher = policy.group("researcher")
    assert researcher is not None
    assert researcher.spec.members == ds01_alone.group("researcher").spec.members  # type: ignore[union-attr]
    member = "ravi"
    assert member in (researcher.spec.members or [])
    r_eff = resolve_effective_policy(
        policy, owner=member, container_type="atomic", name="c", labels={}, now=NOW
    )
    r_alone = resolve_effective_policy(
        ds01_alone, owner=member, container_type="atomic", name="c", labels={}, now=NOW
    )
    assert (
        r_eff.max_runtime_s.value == 36 * 3600
        and r_eff.max_runtime_s.source == "UserGroup/researcher (site.yaml)"
    )
    assert r_eff.idle_timeout_s.value == r_alone.idle_timeout_s.value
    assert r_eff.idle_timeout_s.source == "UserGroup/researcher (resource-limits.yaml)"
    # both layers stay on record for `get policies`
    shown = {str(src) for src in policy.sources}
    assert any(
        t.startswith("LifecyclePolicy/site from") and "layered over LifecyclePolicy/ds01" in t for t in shown
    )
    assert any(t.startswith("LifecyclePolicy/ds01 from") for t in shown)


def test_validate_gives_the_daemons_answer_for_ds01_plus_specs(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write(specs, "site.yaml", OVERLAY)
    assert validate_paths([DS01_DIR, specs]) == []
    assert validate_paths([DS01_DIR, specs / "site.yaml"]) == []
    # a reference that does not resolve after layering is an error with the specs file and line
    write(
        specs,
        "site.yaml",
        OVERLAY.replace("trustLabels: false", "trustLabels: false\n  defaultGroup: nobody"),
    )
    messages = validate_paths([DS01_DIR, specs])
    assert len(messages) == 1 and "defaultGroup 'nobody' names no UserGroup" in messages[0]
    assert messages[0].startswith(f"{specs / 'site.yaml'}:7")
    with pytest.raises(PolicyLoadError, match="defaultGroup 'nobody'"):
        load_policy(specs_dir=specs, ds01_config_dir=DS01_DIR)


def test_the_real_file_needs_no_extras_and_has_no_errors(real_file_only: Path) -> None:
    policy = load_policy(ds01_config_dir=real_file_only)
    assert policy.origin == f"DS01 config {real_file_only}"
    assert [s.kind for s in policy.sources].count("UserGroup") == 4


def test_validate_warns_where_one_setting_decides_instead_of_another(tmp_path: Path) -> None:
    """DS01's idle_timeout_h: 0.004 (14.4s) under the built-in 5m idleMinDuration: the span decides."""
    config = tmp_path / "ds01"
    config.mkdir()
    text = (DS01_DIR / "resource-limits.yaml").read_text()
    (config / "resource-limits.yaml").write_text(
        text.replace("  idle_timeout_h: 0.5 ", "  idle_timeout_h: 0.004 ", 1)
    )
    assert validate_paths([config]) == []
    warnings = validation_warnings([config], now=NOW)
    spans = [
        w
        for w in warnings
        if w.startswith(
            "warning: idleMinDuration 5m (built-in default) is longer than the idle timeout 14.4s "
            "(LifecyclePolicy/ds01)"
        )
    ]
    assert len(spans) == 1 and "idleMinDuration decides" in spans[0]
    assert f"[{config / 'resource-limits.yaml'}:" in spans[0]
    # a specs file on top: its warnLead longer than the timeouts, both files named
    specs = tmp_path / "specs"
    write(specs, "site.yaml", OVERLAY.replace("warnLead: 2m", "warnLead: 1h"))
    lead = [w for w in validation_warnings([config, specs], now=NOW) if w.startswith("warning: warnLead 1h")]
    assert lead and all(f"{specs / 'site.yaml'}:" in w for w in lead)
    assert any(str(config / "resource-limits.yaml") in w for w in lead)
    # the cap is a figure for people: 20% of 14.4s reads 2.88s, not a float's last digits
    assert any("capped at 20% of the timeout, 2.88s (for " in w for w in lead), lead
    # nothing to say about the shipped file alone
    assert validation_warnings([DS01_DIR], now=NOW) == []


def test_ds01_durations_reach_the_kinds_as_seconds_not_as_text(
    real_file_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DS01's bare numbers are converted once, to seconds: the kinds never parse back a "30m" the
    importer wrote, and the provenance ``describe`` shows is unchanged."""
    from crd_like_specs import kinds

    parsed: list[str] = []
    real_parse = kinds.parse_duration

    def spy(text: str) -> float:
        parsed.append(text)
        return real_parse(text)

    monkeypatch.setattr(kinds, "parse_duration", spy)
    policy = import_ds01(real_file_only)
    assert parsed == []
    docker = resolve_effective_policy(
        policy, owner="nobody", container_type=ContainerType.DOCKER, name="c", labels={}, now=NOW
    )
    assert docker.idle_timeout_s.value == 1800
    assert docker.idle_timeout_s.source == "container type docker (LifecyclePolicy/ds01)"


def test_a_zero_idle_timeout_or_max_runtime_is_no_limit_as_in_ds01(tmp_path: Path) -> None:
    """DS01's scripts skip a container whose idle timeout or max runtime is 0: read as 0 s, a busy
    job of that user was warned and stopped 30 s later."""
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        defaults:
          max_runtime_h: 24
          idle_timeout_h: 0.5
        groups:
          student:
            idle_timeout_h: 0
        user_overrides:
          olga:
            max_runtime_h: 0
        container_types:
          docker:
            max_runtime_h: 0.0
    """,
    )
    policy = import_ds01(tmp_path)
    (student,) = policy.groups
    assert (
        student.spec.settings.idle_timeout is None
        and "idle_timeout" in student.spec.settings.model_fields_set
    )
    (olga,) = policy.overrides
    assert olga.spec.settings.max_runtime is None and "max_runtime" in olga.spec.settings.model_fields_set
    lifecycle = policy.lifecycle
    assert lifecycle is not None and lifecycle.spec.container_types[ContainerType.DOCKER].max_runtime is None
    eff = resolve_effective_policy(
        policy, owner="olga", container_type=ContainerType.COMPOSE, name="", labels={}, now=NOW
    )
    assert eff.max_runtime_s.value is None


@pytest.mark.parametrize(
    "key", ["gpu_hold_after_stop_h", "container_hold_after_stop_h", "created_container_timeout_m"]
)
def test_a_zero_hold_is_an_error_naming_the_file_line_and_fix(tmp_path: Path, key: str) -> None:
    """(created_container_timeout_m: 0 removed every created container at first sight, one that
    compose was about to start included.)"""
    section = "policies" if key == "created_container_timeout_m" else "defaults"
    write(tmp_path, "resource-limits.yaml", f"{section}:\n  max_runtime_h: 24\n  {key}: 0\n")
    with pytest.raises(PolicyLoadError) as caught:
        import_ds01(tmp_path)
    text = str(caught.value)
    assert "resource-limits.yaml" in text and ":3" in text and f"0 is unclear in {key}" in text
    assert f"{key}: null" in text


def test_a_zero_in_an_old_unsuffixed_key_reads_as_in_the_suffixed_one(tmp_path: Path) -> None:
    """The old keys with a unit in the value skipped the zero rules: `max_runtime: "0h"`, no limit
    to DS01's scripts as `max_runtime_h: 0` is, stopped every container right after its start, and
    `idle_timeout: 0m` every one at its first idle reading."""
    write(
        tmp_path,
        "resource-limits.yaml",
        """
        defaults:
          max_runtime: "0h"
          idle_timeout: 0m
        container_types:
          docker:
            max_runtime: 0s
    """,
    )
    policy = import_ds01(tmp_path)
    for ctype in (ContainerType.ATOMIC, ContainerType.DOCKER):
        eff = resolve_effective_policy(policy, owner="ann", container_type=ctype, name="", labels={}, now=NOW)
        assert (eff.max_runtime_s.value, eff.idle_timeout_s.value) == (None, None), ctype


@pytest.mark.parametrize(
    ("key", "suffixed"),
    [
        ("gpu_hold_after_stop", "gpu_hold_after_stop_h"),
        ("container_hold_after_stop", "container_hold_after_stop_h"),
        ("created_container_timeout", "created_container_timeout_m"),
    ],
)
def test_a_zero_hold_in_an_old_unsuffixed_key_is_an_error_too(
    tmp_path: Path, key: str, suffixed: str
) -> None:
    """`container_hold_after_stop: "0h"` removed every stopped container at once (and
    `created_container_timeout: 0m` every created one, compose's about to start included), where
    the same 0 in the suffixed key is an error."""
    section, other = (
        ("policies", "grace_period_m: 30")
        if key == "created_container_timeout"
        else ("defaults", "max_runtime_h: 24")
    )
    write(tmp_path, "resource-limits.yaml", f"{section}:\n  {other}\n  {key}: 0h\n")
    with pytest.raises(PolicyLoadError) as caught:
        import_ds01(tmp_path)
    text = str(caught.value)
    assert "resource-limits.yaml:3" in text and f"0 is unclear in {key}" in text
    assert f"{suffixed}: null" in text


@pytest.mark.parametrize(
    "name", ["user-overrides.yaml", "lifecycle-exemptions.yaml", "groups/researcher.members"]
)
def test_a_dangling_link_for_an_optional_ds01_file_is_an_error_not_an_absent_file(
    tmp_path: Path, name: str
) -> None:
    """Read as absent, a redeployed store behind symlinks turned researchers into students and
    dropped every override and exemption, with no error (DS01's 42a2b4f failure, again)."""
    write(tmp_path, "resource-limits.yaml", "groups:\n  researcher:\n    idle_timeout_h: 4\n")
    link = tmp_path / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path / "gone" / Path(name).name)
    with pytest.raises(PolicyLoadError) as caught:
        import_ds01(tmp_path)
    text = str(caught.value)
    assert str(link) in text and "a symbolic link to" in text and "which does not exist" in text


@pytest.mark.parametrize("broken", ["a link to nothing", "a file"])
def test_a_groups_directory_that_cannot_be_read_is_an_error_not_groups_without_members(
    tmp_path: Path, broken: str
) -> None:
    """The members files are DS01's one source of membership. A ``groups`` link whose store is gone
    (or a ``groups`` that is a file) read as "no members files" put every researcher in the
    default group, with its shorter timeouts and lower limits, and no error."""
    write(tmp_path, "resource-limits.yaml", "groups:\n  student: {}\n  researcher:\n    idle_timeout_h: 4\n")
    write(tmp_path, "store/researcher.members", "ann\n")
    (tmp_path / "groups").symlink_to(tmp_path / "store")
    assert import_ds01(tmp_path).group("researcher").spec.members == ["ann"]  # type: ignore[union-attr]
    (tmp_path / "groups").unlink()
    if broken == "a file":
        (tmp_path / "groups").write_text("ann\n")
    else:
        (tmp_path / "groups").symlink_to(tmp_path / "gone")
    with pytest.raises(PolicyLoadError) as caught:
        import_ds01(tmp_path)
    text = str(caught.value)
    assert f"{tmp_path / 'groups'}: " in text
    assert ("which does not exist" if broken == "a link to nothing" else "not a directory") in text


def test_an_infrastructure_list_with_every_entry_commented_out_keeps_the_monitoring_stack_protected(
    tmp_path: Path,
) -> None:
    """YAML reads the list with every entry commented out as null: imported as an explicit empty
    list, it replaced the built-in prefixes and unprotected ds01-grafana. An explicit [] still does."""

    def protected(infrastructure: str) -> bool:
        write(tmp_path, "resource-limits.yaml", f"defaults: {{}}\nmonitoring:\n  {infrastructure}\n")
        eff = resolve_effective_policy(
            import_ds01(tmp_path),
            owner="x",
            container_type="docker",
            name="ds01-grafana-1",
            labels={},
            now=NOW,
        )
        return bool(eff.protected.value)

    assert protected("infrastructure_containers:\n    # - ds01-grafana\n    # - ds01-prometheus")
    assert protected("infrastructure_label: ds01.infra")
    assert not protected("infrastructure_containers: []")


def test_a_spec_exemption_named_like_an_imported_one_is_a_duplicate_not_a_replacement(tmp_path: Path) -> None:
    """Merged over DS01's `erin-0` (idle and max runtime until December), a spec `Exemption/erin-0`
    for cleanup replaced its exemptFrom: erin's running job lost its exemption, with no error."""
    ds01_dir, specs = tmp_path / "ds01", tmp_path / "specs"
    write(ds01_dir, "resource-limits.yaml", "defaults: {}\n")
    write(
        ds01_dir,
        "lifecycle-exemptions.yaml",
        """
        exemptions:
          - username: erin
            exempt_from: [idle_timeout_h, max_runtime_h]
            reason: grant
            expires_on: 2026-12-31T23:59:59Z
        """,
    )
    write(
        specs,
        "e.yaml",
        """
        apiVersion: ds01.io/v1alpha1
        kind: Exemption
        metadata: {name: erin-0}
        spec: {user: erin, exemptFrom: [cleanup], reason: r, expiresAt: 2026-12-20T00:00:00Z}
        """,
    )
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(specs_dir=specs, ds01_config_dir=ds01_dir)
    (error,) = caught.value.errors
    assert error.file is not None and Path(error.file).name == "e.yaml"
    assert "duplicate Exemption name 'erin-0'" in str(error) and "lifecycle-exemptions.yaml" in str(error)
    write(specs, "e.yaml", (specs / "e.yaml").read_text().replace("erin-0", "erin-cleanup"))
    policy = load_policy(specs_dir=specs, ds01_config_dir=ds01_dir)
    assert sorted((e.metadata.name, tuple(e.spec.exempt_from)) for e in policy.exemptions) == [
        ("erin-0", ("idle", "max_runtime")),
        ("erin-cleanup", ("cleanup",)),
    ]


def test_a_spec_group_left_over_nothing_by_a_renamed_ds01_group_is_an_error(tmp_path: Path) -> None:
    """The specs change DS01's researcher group (no members of their own: DS01's stay). DS01's
    group renamed to researchers, the spec's group layered over nothing and applied to nobody,
    silently: researchers lost their longer timeout, and their jobs were stopped sooner."""
    write(tmp_path, "resource-limits.yaml", "groups:\n  student: {}\n  researcher:\n    members: [ann]\n")
    specs = tmp_path / "specs"
    write(
        specs,
        "site.yaml",
        """
        apiVersion: ds01.io/v1alpha1
        kind: UserGroup
        metadata: {name: researcher}
        spec:
          settings: {idleTimeout: 4h}
    """,
    )
    assert load_policy(specs_dir=specs, ds01_config_dir=tmp_path).group("researcher") is not None
    write(tmp_path, "resource-limits.yaml", "groups:\n  student: {}\n  researchers:\n    members: [ann]\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(specs_dir=specs, ds01_config_dir=tmp_path)
    (error,) = caught.value.errors
    assert error.file == str(specs / "site.yaml") and error.line == 4 and error.field == "metadata.name"
    assert "applies to nobody" in str(error) and "student, researchers" in str(error)
    assert validate_paths([tmp_path, specs]) == [str(error)]
    # A group of the specs' own, with members (or none on purpose), or the defaultGroup, is fine.
    write(specs, "site.yaml", (specs / "site.yaml").read_text() + "  members: []\n")
    assert load_policy(specs_dir=specs, ds01_config_dir=tmp_path).group("researcher") is not None


def test_validate_warns_of_a_members_file_no_group_reads(real_file_only: Path) -> None:
    # A group renamed in resource-limits.yaml (phd -> researcher) leaves groups/phd.members read by
    # nobody: its logins silently lost the group's settings.
    config = real_file_only
    write(config, "groups/researcher.members", "carol\n")
    write(config, "groups/phd.members", "alice\nbob\n")
    assert validate_paths([config]) == []
    warnings = [w for w in validation_warnings([config], now=NOW) if "is read by no group" in w]
    assert len(warnings) == 1
    assert str(config / "groups" / "phd.members") in warnings[0]
    assert "has no group 'phd'" in warnings[0] and "researcher.members" not in warnings[0]
    # named by a spec's membersFile, it is read after all: nothing to say
    specs = config / "specs"
    write(
        specs,
        "phd.yaml",
        f"""\
        apiVersion: ds01.io/v1alpha1
        kind: UserGroup
        metadata: {{name: phd}}
        spec:
          order: 5
          membersFile: {config / "groups" / "phd.members"}
        """,
    )
    assert validate_paths([config, specs]) == []
    assert [w for w in validation_warnings([config, specs], now=NOW) if "is read by no group" in w] == []


@pytest.mark.parametrize("word", ["never", "none", "Indefinite"])
def test_never_in_an_old_unsuffixed_key_is_an_error_whose_fix_keeps_no_limit(
    tmp_path: Path, word: str
) -> None:
    """DS01 reads "never" as no limit: the fix says null, as the suffixed key's does, never a number
    (which would set a limit the admin did not mean)."""
    write(tmp_path, "resource-limits.yaml", f"defaults:\n  max_runtime_h: 24\n  idle_timeout: {word}\n")
    with pytest.raises(PolicyLoadError) as caught:
        import_ds01(tmp_path)
    text = str(caught.value)
    assert "resource-limits.yaml:3" in text and "idle_timeout: null" in text, text
    assert "<number>" not in text, text


def test_a_null_default_grant_duration_is_no_end_as_ds01_reads_null(tmp_path: Path) -> None:
    # DS01 reads a null duration as never: a grant given without a length has no end.
    text = (DS01_DIR / "resource-limits.yaml").read_text()
    assert "default_grant_duration_h: 24 " in text
    write(
        tmp_path,
        "resource-limits.yaml",
        text.replace("default_grant_duration_h: 24 ", "default_grant_duration_h: null"),
    )
    assert validate_paths([tmp_path]) == []
    lifecycle = import_ds01(tmp_path).lifecycle
    assert lifecycle is not None and lifecycle.spec.ds01.bare_metal_access is not None
    access = lifecycle.spec.ds01.bare_metal_access
    assert access.default_grant_duration is None and "default_grant_duration" in access.model_fields_set
    dumped = dump_documents(import_ds01(tmp_path).documents())
    assert "defaultGrantDuration: null" in dumped
    assert load_spec_text(dumped) == import_ds01(tmp_path)


def test_ds01_s_config_directory_above_runtime_is_named_with_the_directory_to_use(tmp_path: Path) -> None:
    # DS01 keeps resource-limits.yaml in config/runtime/ (label-schema.yaml stays in config/): an
    # admin pointing at config/ was told to add kind: to DS01's label schema, or "check the path".
    config = tmp_path / "config"
    shutil.copytree(DS01_DIR, config / "runtime")
    write(config, "label-schema.yaml", "labels:\n  ds01.user: {description: owner}\n")
    for errors in (validate_paths([config]), _load_errors(config)):
        assert len(errors) == 1, errors
        assert f"{config / 'resource-limits.yaml'}: " in errors[0]
        assert "kind" not in errors[0]
        assert f"--ds01-config {config / 'runtime'}" in errors[0]
    assert validate_paths([config / "runtime"]) == []


def _load_errors(ds01_dir: Path) -> list[str]:
    with pytest.raises(PolicyLoadError) as exc:
        load_policy(ds01_config_dir=ds01_dir)
    return [str(e) for e in exc.value.errors]


@pytest.mark.parametrize(
    ("old", "new", "field", "fix"),
    [
        ("grace_period_m: 30 ", "grace_period_m: null", "policies.grace_period_m", "grace_period_m: 30"),
        (
            "sigterm_grace_s: 60               # SIGTERM",
            "sigterm_grace_s: null             # SIGTERM",
            "policies.sigterm_grace_s",
            "sigterm_grace_s: 60",
        ),
    ],
)
def test_a_null_grace_in_ds01_s_file_is_told_a_bare_number_not_a_spec_duration(
    tmp_path: Path, old: str, new: str, field: str, fix: str
) -> None:
    # A unit-suffixed key takes a bare number: '30m' there is refused as a string with a unit.
    text = (DS01_DIR / "resource-limits.yaml").read_text()
    assert text.count(old) == 1
    write(tmp_path, "resource-limits.yaml", text.replace(old, new))
    errors = validate_paths([tmp_path])
    assert len(errors) == 1, errors
    assert f"{tmp_path / 'resource-limits.yaml'}:" in errors[0] and field in errors[0]
    assert fix in errors[0] and "'30m'" not in errors[0] and "'90s'" not in errors[0]
