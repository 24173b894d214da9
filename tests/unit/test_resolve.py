"""Resolution against DS01's documented behaviour (notes 1.3-1.5), and the precedence properties.

The DS01 config is the real resource-limits.yaml with made-up members, overrides and exemptions
(tests/data/ds01). Each row gives our (idle, runtime) in hours for one user and container type;
where DS01's behaviour was a bug that we deliberately do not reproduce, the row also gives DS01's
value and the reason (the same list is in docs/policy.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crd_like_specs.kinds import API_VERSION
from crd_like_specs.vocabulary import ContainerType
from desired_state.ds01_import import import_ds01
from desired_state.effective import EffectivePolicy, ExemptFrom, GpuResetPolicy
from desired_state.load import builtin_policy, dump_documents, load_spec_text
from desired_state.policy_set import PolicySet
from desired_state.resolve import describe_precedence, global_policy, resolve_effective_policy
from desired_state.validate import validate_paths, validation_warnings

DS01_DIR = Path(__file__).resolve().parents[1] / "data" / "ds01"
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
H = 3600.0
NEVER = None

T = ContainerType


@pytest.fixture(scope="module")
def ds01() -> PolicySet:
    return import_ds01(DS01_DIR)


def resolve(
    policy: PolicySet,
    owner: str,
    ctype: ContainerType | str,
    *,
    name: str = "c",
    labels: dict[str, str] | None = None,
    now: datetime = NOW,
) -> EffectivePolicy:
    return resolve_effective_policy(
        policy, owner=owner, container_type=ctype, name=name, labels=labels or {}, now=now
    )


def hours(value: float | None) -> float | None:
    return None if value is None else value / H


# owner, type, our (idle h, runtime h), DS01's (idle h, runtime h) where it differs, and why
API_BUG = "DS01 gave api/custom a hard-coded 0.25 h idle and a '24h' string read as 0 = no runtime limit"
OVERRIDE_TYPES = "DS01 user overrides reached only atomic/orchestration containers"
OVERRIDE_GROUP = "DS01 dropped the group's settings when a user had an override"
ROWS: list[
    tuple[
        str, ContainerType, tuple[float | None, float | None], tuple[float | None, float | None] | None, str
    ]
] = [
    # student (listed) and unknown owners: defaults, then the type pins
    ("sam", T.ATOMIC, (0.5, 24), None, ""),
    ("sam", T.ORCHESTRATION, (0.5, 24), None, ""),
    ("sam", T.DEVCONTAINER, (NEVER, 168), None, ""),
    ("sam", T.COMPOSE, (0.5, 72), None, ""),
    ("sam", T.DOCKER, (0.5, 48), None, ""),
    ("sam", T.UNKNOWN, (0.25, 24), None, ""),
    ("sam", T.API, (NEVER, 24), (0.25, NEVER), API_BUG),
    ("sam", T.CUSTOM, (0.5, 24), (0.25, NEVER), API_BUG),
    ("nobody", T.ATOMIC, (0.5, 24), None, ""),
    ("unknown", T.DOCKER, (0.5, 48), None, ""),
    # researcher: the group's general settings for ds01-native types, the type pins elsewhere
    ("ravi", T.ATOMIC, (1, 48), None, ""),
    ("ravi", T.ORCHESTRATION, (1, 48), None, ""),
    ("ravi", T.DEVCONTAINER, (NEVER, 168), None, ""),
    ("ravi", T.COMPOSE, (0.5, 72), None, ""),
    ("ravi", T.DOCKER, (0.5, 48), None, ""),
    ("ravi", T.UNKNOWN, (0.25, 24), None, ""),
    ("ravi", T.API, (NEVER, 24), (0.25, NEVER), API_BUG),
    ("ravi", T.CUSTOM, (1, 48), (0.25, NEVER), API_BUG),
    ("h.baker@hertie-school.lan", T.ATOMIC, (1, 48), None, ""),
    ("h_baker", T.ATOMIC, (1, 48), None, ""),  # the sanitised form (e.g. from a cgroup slice name)
    # faculty
    ("fred", T.ATOMIC, (2, 72), None, ""),
    ("fred", T.DEVCONTAINER, (NEVER, 168), None, ""),
    ("fred", T.COMPOSE, (0.5, 72), None, ""),
    ("fred", T.DOCKER, (0.5, 48), None, ""),
    ("fred", T.UNKNOWN, (0.25, 24), None, ""),
    # admin
    ("datasciencelab", T.ATOMIC, (1, 24), None, ""),
    ("datasciencelab", T.DEVCONTAINER, (NEVER, 168), None, ""),
    ("datasciencelab", T.DOCKER, (0.5, 48), None, ""),
    # bob: researcher with an override of max_runtime_h: null
    ("bob", T.ATOMIC, (1, NEVER), (0.5, NEVER), OVERRIDE_GROUP),
    ("bob", T.DOCKER, (0.5, NEVER), (0.5, 48), OVERRIDE_TYPES),
    ("bob", T.COMPOSE, (0.5, NEVER), (0.5, 72), OVERRIDE_TYPES),
    ("bob", T.DEVCONTAINER, (NEVER, NEVER), (NEVER, 168), OVERRIDE_TYPES),
    # olga: in no group, the typical "no limits" override
    ("olga", T.ATOMIC, (NEVER, NEVER), None, ""),
    ("olga", T.DOCKER, (NEVER, NEVER), (0.5, 48), OVERRIDE_TYPES),
    ("olga", T.UNKNOWN, (NEVER, NEVER), (0.25, 24), OVERRIDE_TYPES),
    # k_lee: override keyed by the login name with a domain, matched by the sanitised owner
    ("k_lee", T.ATOMIC, (3, 24), None, ""),
    ("k_lee", T.DOCKER, (3, 48), (0.5, 48), OVERRIDE_TYPES),
    ("k_lee", T.DEVCONTAINER, (NEVER, 168), None, ""),  # idleExempt is not changed by a general key
    # erin: active idle exemption; an expired runtime exemption stays on record and does not apply
    ("erin", T.ATOMIC, (NEVER, 24), None, ""),
    ("erin", T.DOCKER, (NEVER, 48), None, ""),
    ("erin", T.API, (NEVER, 24), (NEVER, NEVER), API_BUG),
    # rita: researcher with a permanent runtime exemption (exemptions reach every type)
    ("rita", T.ATOMIC, (1, NEVER), None, ""),
    ("rita", T.DOCKER, (0.5, NEVER), None, ""),
    ("rita", T.DEVCONTAINER, (NEVER, NEVER), None, ""),
]


@pytest.mark.parametrize(("owner", "ctype", "ours", "ds01_value", "why"), ROWS)
def test_idle_and_runtime_per_user_and_type(
    ds01: PolicySet,
    owner: str,
    ctype: ContainerType,
    ours: tuple[float | None, float | None],
    ds01_value: tuple[float | None, float | None] | None,
    why: str,
) -> None:
    eff = resolve(ds01, owner, ctype)
    # The limit in force: an active exemption keeps the value (listed in eff.exemptions) but waives it.
    idle = None if eff.exemption(ExemptFrom.IDLE) else eff.idle_timeout_s.value
    runtime = None if eff.exemption(ExemptFrom.MAX_RUNTIME) else eff.max_runtime_s.value
    got = (hours(idle), hours(runtime))
    assert got == ours
    if ds01_value is not None:
        assert why and got != ds01_value  # a documented, deliberate difference


@pytest.mark.parametrize(
    ("owner", "group", "thresholds"),
    [
        ("sam", "student", (5, 2.0, 1048576 / 3600, 3)),
        ("nobody", "student", (5, 2.0, 1048576 / 3600, 3)),
        ("ravi", "researcher", (5, 3.0, 1048576 / 3600, 4)),
        ("fred", "faculty", (5, 3.0, 1048576 / 3600, 4)),
        ("datasciencelab", "admin", (5, 2.0, 1048576 / 3600, 3)),  # admin has no policies: the global ones
        ("bob", "researcher", (5, 3.0, 1048576 / 3600, 4)),  # an override keeps the group's policies
        ("olga", "student", (5, 4.0, 1048576 / 3600, 3)),  # her override's policies block
    ],
)
def test_group_and_idle_thresholds(
    ds01: PolicySet, owner: str, group: str, thresholds: tuple[float, ...]
) -> None:
    eff = resolve(ds01, owner, T.ATOMIC)
    assert eff.group.value == group
    got = (
        eff.gpu_idle_threshold_pct.value,
        eff.cpu_idle_threshold_pct.value,
        eff.network_idle_threshold_bytes_per_s.value,
        eff.idle_detection_window.value,
    )
    assert got == thresholds


@pytest.mark.parametrize(
    ("ctype", "grace_s"),
    [(T.DEVCONTAINER, 30), (T.COMPOSE, 45), (T.DOCKER, 60), (T.UNKNOWN, 30), (T.API, 30), (T.ATOMIC, 60)],
)
def test_sigterm_grace_per_type(ds01: PolicySet, ctype: ContainerType, grace_s: float) -> None:
    assert resolve(ds01, "sam", ctype).sigterm_grace_s.value == grace_s


@pytest.mark.parametrize(
    ("owner", "gpu_hold_h", "container_hold_h"),
    [("sam", 0.25, 0.5), ("datasciencelab", 1, 0.5), ("bob", 0.25, NEVER), ("olga", 0.25, NEVER)],
)
def test_holds(ds01: PolicySet, owner: str, gpu_hold_h: float, container_hold_h: float | None) -> None:
    eff = resolve(ds01, owner, T.DOCKER)
    assert hours(eff.gpu_hold_after_stop_s.value) == gpu_hold_h
    assert hours(eff.container_hold_after_stop_s.value) == container_hold_h


def test_global_policies_from_the_file(ds01: PolicySet) -> None:
    eff = resolve(ds01, "sam", T.ATOMIC)
    assert eff.grace_period_s.value == 1800 and eff.created_container_timeout_s.value == 1800
    assert eff.keepalive_max_age_s.value == 24 * H and eff.keepalive_path.value == "/workspace/.keep-alive"
    assert (eff.high_demand_threshold.value, eff.high_demand_idle_reduction.value) == (0.8, 0.5)
    # keys DS01 does not have come from the built-in default
    assert eff.warn_lead_s.value == 600 and eff.warn_lead_s.source == "built-in default"
    assert eff.remove_after_idle_stop.value is True


def test_provenance_names_the_layer(ds01: PolicySet) -> None:
    assert resolve(ds01, "ravi", T.ATOMIC).idle_timeout_s.source == "UserGroup/researcher"
    assert (
        resolve(ds01, "ravi", T.DOCKER).idle_timeout_s.source
        == "container type docker (LifecyclePolicy/ds01)"
    )
    assert resolve(ds01, "sam", T.ATOMIC).max_runtime_s.source == "LifecyclePolicy/ds01"
    dev = resolve(ds01, "sam", T.DEVCONTAINER).idle_timeout_s
    assert dev.source == "container type devcontainer (LifecyclePolicy/ds01): idleExempt"
    assert resolve(ds01, "bob", T.DOCKER).max_runtime_s.source == "UserOverride/bob"
    assert (
        resolve(ds01, "erin", T.ATOMIC).idle_timeout_s.source
        == "LifecyclePolicy/ds01; waived by Exemption/erin-0"
    )
    assert (
        resolve(ds01, "rita", T.DOCKER).max_runtime_s.source
        == "container type docker (LifecyclePolicy/ds01); waived by Exemption/rita-2"
    )
    assert resolve(ds01, "ravi", T.ATOMIC).group.source == "UserGroup/researcher: member 'ravi'"
    assert "sanitised name 'h_baker'" in resolve(ds01, "h_baker", T.ATOMIC).group.source
    assert resolve(ds01, "nobody", T.ATOMIC).group.source.startswith("defaultGroup of LifecyclePolicy/ds01")


def test_exemptions_on_record_and_in_force(ds01: PolicySet) -> None:
    assert [e.metadata.name for e in ds01.exemptions_of("erin")] == ["erin-0", "erin-1"]
    eff = resolve(ds01, "erin", T.ATOMIC)
    assert [(e.name, e.exempt_from) for e in eff.exemptions] == [("erin-0", ExemptFrom.IDLE)]
    assert eff.exemption(ExemptFrom.MAX_RUNTIME) is None
    idle = eff.exemption(ExemptFrom.IDLE)
    assert idle is not None and idle.approved_by == "prof-x" and idle.reason.startswith("Thesis")
    # the expired one applied while it was in force, up to (not including) its expiry
    before = resolve(ds01, "erin", T.ATOMIC, now=datetime(2019, 12, 31, 23, 59, tzinfo=UTC))
    assert before.exemption(ExemptFrom.MAX_RUNTIME) is not None
    assert before.max_runtime_s.value == 24 * H
    assert before.max_runtime_s.source == "LifecyclePolicy/ds01; waived by Exemption/erin-1"
    at_expiry = resolve(ds01, "erin", T.ATOMIC, now=datetime(2020, 1, 1, tzinfo=UTC))
    assert at_expiry.max_runtime_s.value == 24 * H


def test_cleanup_exemption_keeps_stopped_containers_but_not_their_gpus() -> None:
    policy = load_spec_text(f"""
apiVersion: {API_VERSION}
kind: Exemption
metadata: {{name: keep}}
spec: {{user: zoe, exemptFrom: [cleanup], reason: post-mortems, expiresAt: null}}
""")
    eff = resolve(policy, "zoe", T.DOCKER)
    assert [e.exempt_from for e in eff.exemptions] == [ExemptFrom.CLEANUP]
    for waived in (eff.container_hold_after_stop_s, eff.created_container_timeout_s):
        assert waived.source.endswith("; waived by Exemption/keep")
    assert "waived" not in eff.gpu_hold_after_stop_s.source
    assert eff.gpu_hold_after_stop_s.value == 900
    assert eff.idle_timeout_s.value == 1800  # not exempt from idle


def test_unknown_container_type_string_is_treated_as_unknown(ds01: PolicySet) -> None:
    eff = resolve(ds01, "sam", "vscode-something")
    assert eff.container_type == "unknown" and hours(eff.idle_timeout_s.value) == 0.25


SPECS = f"""
apiVersion: {API_VERSION}
kind: LifecyclePolicy
metadata: {{name: lab}}
spec:
  defaultGroup: staff
  settings: {{idleTimeout: 1h}}
  trustLabels: %s
  protect:
    - {{labels: {{com.example.role: db}}, reason: shared database}}
    - {{owner: svc.bot@lab.example}}
  monitoring:
    - {{name: "mon-*"}}
  safety: {{breakerMaxFraction: 0.25}}
  gpuReset: {{policy: never}}
---
apiVersion: {API_VERSION}
kind: UserGroup
metadata: {{name: staff}}
spec:
  settings: {{idleTimeout: 2h}}
  containerTypes:
    docker: {{idleTimeout: 3h}}
    devcontainer: {{idleExempt: false, idleTimeout: 8h}}
---
apiVersion: {API_VERSION}
kind: UserOverride
metadata: {{name: pat}}
spec:
  user: pat
  settings: {{idleTimeout: 4h, maxRuntime: 12h}}
  containerTypes:
    compose: {{maxRuntime: 6h}}
"""


def test_group_per_type_block_beats_the_type_pin_and_can_lift_idle_exempt() -> None:
    policy = load_spec_text(SPECS % "true")
    assert hours(resolve(policy, "anyone", T.DOCKER).idle_timeout_s.value) == 3
    assert (
        resolve(policy, "anyone", T.DOCKER).idle_timeout_s.source == "UserGroup/staff containerTypes.docker"
    )
    # the built-in compose pin (30m) never beats what the admin wrote: the group's general 2h
    compose = resolve(policy, "anyone", T.COMPOSE)
    assert hours(compose.idle_timeout_s.value) == 2 and compose.idle_timeout_s.source == "UserGroup/staff"
    assert hours(resolve(policy, "anyone", T.ATOMIC).idle_timeout_s.value) == 2
    dev = resolve(policy, "anyone", T.DEVCONTAINER)
    assert (
        hours(dev.idle_timeout_s.value) == 8
        and dev.idle_timeout_s.source == "UserGroup/staff containerTypes.devcontainer"
    )


def test_user_override_reaches_every_type_but_not_idle_exempt() -> None:
    policy = load_spec_text(SPECS % "true")
    assert hours(resolve(policy, "pat", T.DOCKER).idle_timeout_s.value) == 4  # beats the group's per-type 3h
    assert hours(resolve(policy, "pat", T.COMPOSE).max_runtime_s.value) == 6  # its own per-type block
    assert hours(resolve(policy, "pat", T.UNKNOWN).max_runtime_s.value) == 12
    # the group lifted idleExempt for devcontainers, so pat's general idle timeout reaches them too
    assert hours(resolve(policy, "pat", T.DEVCONTAINER).idle_timeout_s.value) == 4
    builtin = builtin_policy()
    assert resolve(builtin, "pat", T.DEVCONTAINER).idle_timeout_s.value is None


@pytest.mark.parametrize("trust", ["true", "false"])
def test_protected_and_monitoring_from_labels_and_selectors(trust: str) -> None:
    policy = load_spec_text(SPECS % trust)
    trusted = trust == "true"
    labelled = resolve(policy, "x", T.DOCKER, labels={"ds01.protected": "True", "ds01.monitoring": "true"})
    assert labelled.protected.value is trusted and labelled.monitoring.value is trusted
    if trusted:
        assert labelled.protected.source.startswith("label ds01.protected=true")
    else:
        assert "ignored (trustLabels: false" in labelled.protected.source
    by_label = resolve(policy, "x", T.DOCKER, labels={"com.example.role": "db"})
    assert by_label.protected.value is True
    assert (
        by_label.protected.source == "LifecyclePolicy/lab protect[0] (com.example.role=db: shared database)"
    )
    assert resolve(policy, "svc_bot", T.DOCKER).protected.value is True  # owner by sanitised form
    assert resolve(policy, "svc", T.DOCKER).protected.value is False
    assert resolve(policy, "x", T.DOCKER, name="mon-exporter").monitoring.value is True
    assert resolve(policy, "x", T.DOCKER, name="web").monitoring.value is False
    # the admin's protect list replaces the built-in one
    assert resolve(policy, "x", T.DOCKER, name="ds01-grafana").protected.value is False


def test_global_policy_mixes_the_admins_keys_with_the_builtin() -> None:
    gp = global_policy(load_spec_text(SPECS % "false"))
    assert gp.breaker_max_fraction.value == 0.25 and gp.breaker_max_fraction.source == "LifecyclePolicy/lab"
    assert gp.breaker_min_containers.value == 3 and gp.breaker_min_containers.source == "built-in default"
    assert gp.gpu_reset_policy.value == GpuResetPolicy.NEVER
    assert gp.gpu_reset_command.value == ("nvidia-smi", "--gpu-reset", "-i", "{uuid}")
    assert gp.trust_labels.value is False
    default = global_policy(builtin_policy())
    assert default.gpu_reset_policy.value == GpuResetPolicy.WHEN_EXCLUSIVE
    assert (default.orphan_sightings_required.value, default.kill_grace_s.value) == (2, 10.0)
    assert default.max_destructive_actions_per_pass.value == 10
    assert "nvidia-persistenced" in default.system_process_names.value


def test_describe_precedence_lists_every_layer_in_order() -> None:
    text = describe_precedence()
    order = [
        "built-in default",
        "LifecyclePolicy spec.settings",
        "UserGroup spec.settings",
        "spec.containerTypes.<type>",
        "UserGroup spec.containerTypes",
        "UserOverride spec.settings",
        "UserOverride spec.containerTypes",
        "Exemption",
    ]
    positions = [text.index(word) for word in order]
    assert positions == sorted(positions)


# --- properties ------------------------------------------------------------------------------------------

DURATION_KEYS = ["idleTimeout", "maxRuntime", "gpuHoldAfterStop", "sigtermGrace"]
seconds_text = st.integers(min_value=0, max_value=10**6).map(lambda n: f"{n}s")
durations = st.one_of(st.none(), seconds_text)


def _value_for(key: str) -> st.SearchStrategy[Any]:
    return seconds_text if key == "sigtermGrace" else durations  # sigtermGrace may not be null


settings_dicts = st.fixed_dictionaries({}, optional={k: _value_for(k) for k in DURATION_KEYS})


def _yaml(
    policy_settings: dict[str, Any],
    group: dict[str, Any],
    gtype: dict[str, Any],
    ltype: dict[str, Any],
    override: dict[str, Any],
    otype: dict[str, Any],
) -> str:
    docs = [
        {
            "apiVersion": API_VERSION,
            "kind": "LifecyclePolicy",
            "metadata": {"name": "p"},
            "spec": {"defaultGroup": "g", "settings": policy_settings, "containerTypes": {"compose": ltype}},
        },
        {
            "apiVersion": API_VERSION,
            "kind": "UserGroup",
            "metadata": {"name": "g"},
            "spec": {"members": ["u"], "settings": group, "containerTypes": {"compose": gtype}},
        },
        {
            "apiVersion": API_VERSION,
            "kind": "UserOverride",
            "metadata": {"name": "u"},
            "spec": {"user": "u", "settings": override, "containerTypes": {"compose": otype}},
        },
    ]
    return yaml.safe_dump_all(docs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_dicts, settings_dicts, settings_dicts, settings_dicts, settings_dicts, settings_dicts)
def test_precedence_is_monotone(
    lp: dict[str, Any],
    group: dict[str, Any],
    gtype: dict[str, Any],
    ltype: dict[str, Any],
    override: dict[str, Any],
    otype: dict[str, Any],
) -> None:
    """For every key, the most specific layer that writes it wins; unwritten keys fall through."""
    policy = load_spec_text(_yaml(lp, group, gtype, ltype, override, otype))
    eff = resolve(policy, "u", T.COMPOSE)
    base = builtin_policy()
    builtin_compose = resolve(base, "nobody-in-particular", T.COMPOSE)
    # lowest to highest, as documented; the built-in compose pin applies only where no admin layer
    # writes the key (a built-in layer never beats what an admin wrote)
    layers = [
        (lp, "LifecyclePolicy/p"),
        (group, "UserGroup/g"),
        (ltype, "container type compose (LifecyclePolicy/p)"),
        (gtype, "UserGroup/g containerTypes.compose"),
        (override, "UserOverride/u"),
        (otype, "UserOverride/u containerTypes.compose"),
    ]
    field = {
        "idleTimeout": "idle_timeout_s",
        "maxRuntime": "max_runtime_s",
        "gpuHoldAfterStop": "gpu_hold_after_stop_s",
        "sigtermGrace": "sigterm_grace_s",
    }
    builtin_compose_pins = {"idleTimeout": 1800.0, "maxRuntime": 259200.0, "sigtermGrace": 45.0}
    for key, attr in field.items():
        expected: tuple[Any, str] | None = None
        for values, source in layers:
            if key in values:
                raw = values[key]
                expected = (None if raw is None else float(raw[:-1]), source)
        if expected is None and key in builtin_compose_pins:
            expected = (builtin_compose_pins[key], "container type compose (built-in default)")
        got = getattr(eff, attr)
        if expected is None:
            assert (got.value, got.source) == (getattr(builtin_compose, attr).value, "built-in default")
        else:
            assert (got.value, got.source) == expected, key


names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
type_blocks = st.dictionaries(
    st.sampled_from([t.value for t in ContainerType]),
    settings_dicts.map(lambda d: {**d, "idleExempt": True} if len(d) % 2 else d),
    max_size=3,
)


@st.composite
def policies(draw: st.DrawFn) -> str:
    group_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": API_VERSION,
            "kind": "LifecyclePolicy",
            "metadata": {"name": draw(names)},
            "spec": {
                "defaultGroup": draw(st.sampled_from(group_names)),
                "settings": draw(settings_dicts),
                "containerTypes": draw(type_blocks),
                "trustLabels": draw(st.booleans()),
            },
        },
    ]
    for i, g in enumerate(group_names):
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "UserGroup",
                "metadata": {"name": g},
                "spec": {
                    "order": i,
                    "members": draw(st.lists(names, max_size=3, unique=True)),
                    "settings": draw(settings_dicts),
                    "containerTypes": draw(type_blocks),
                },
            }
        )
    for u in draw(st.lists(names, max_size=2, unique=True)):
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "UserOverride",
                "metadata": {"name": u},
                "spec": {"user": u, "settings": draw(settings_dicts)},
            }
        )
    for i, u in enumerate(draw(st.lists(names, max_size=2))):
        expires = draw(
            st.one_of(
                st.none(),
                st.datetimes(
                    timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
                ),
            )
        )
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Exemption",
                "metadata": {"name": f"e{i}"},
                "spec": {
                    "user": u,
                    "exemptFrom": draw(
                        st.lists(
                            st.sampled_from(["idle", "max_runtime", "cleanup"]),
                            min_size=1,
                            max_size=3,
                            unique=True,
                        )
                    ),
                    "reason": "r",
                    "expiresAt": None if expires is None else expires.isoformat(),
                },
            }
        )
    return yaml.safe_dump_all(docs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_any_valid_policy_survives_dump_and_load(text: str) -> None:
    policy = load_spec_text(text)
    again = load_spec_text(dump_documents(policy.documents()))
    assert again == policy
    for owner in ("nobody", *(m for g in policy.groups for m in g.spec.members or ())):
        for ctype in (T.DEVCONTAINER, T.DOCKER, T.ATOMIC):
            assert resolve(again, owner, ctype) == resolve(policy, owner, ctype)


def test_exemption_ordering_prefers_the_longest_lasting() -> None:
    text = f"""
apiVersion: {API_VERSION}
kind: Exemption
metadata: {{name: short}}
spec: {{user: q, exemptFrom: [idle], reason: r, expiresAt: "{(NOW + timedelta(days=1)).isoformat()}"}}
---
apiVersion: {API_VERSION}
kind: Exemption
metadata: {{name: forever}}
spec: {{user: q, exemptFrom: [idle], reason: r, expiresAt: null}}
"""
    eff = resolve(load_spec_text(text), "q", T.ATOMIC)
    found = eff.exemption(ExemptFrom.IDLE)
    assert found is not None and found.name == "forever"


def test_override_policies_merge_with_the_group_and_an_empty_override_changes_nothing(tmp_path: Path) -> None:
    """Differences 3 and 12 of docs/policy.md."""
    (tmp_path / "resource-limits.yaml").write_text(
        "groups:\n  researcher:\n    members: [ann, ben]\n    idle_timeout_h: 1\n"
        "    policies: {cpu_idle_threshold: 3.0, idle_detection_window: 4}\n"
        "policies: {cpu_idle_threshold: 2.0, idle_detection_window: 3}\n"
        "user_overrides:\n  ann:\n    policies: {cpu_idle_threshold: 5.0}\n  ben:\n"
    )
    policy = import_ds01(tmp_path)
    ann = resolve(policy, "ann", T.ATOMIC)
    # DS01 would take ann's policies block alone: window 3 (global) and idle 0.5 h (defaults)
    assert (ann.cpu_idle_threshold_pct.value, ann.idle_detection_window.value) == (5.0, 4)
    assert hours(ann.idle_timeout_s.value) == 1
    ben = resolve(policy, "ben", T.ATOMIC)  # DS01: the "override" pseudo-group, defaults only
    assert (hours(ben.idle_timeout_s.value), ben.idle_detection_window.value, ben.group.value) == (
        1,
        4,
        "researcher",
    )


def test_without_a_student_group_there_is_no_default_group(tmp_path: Path) -> None:
    """Difference 13 of docs/policy.md."""
    (tmp_path / "resource-limits.yaml").write_text("groups:\n  staff: {idle_timeout_h: 2}\n")
    eff = resolve(import_ds01(tmp_path), "nobody", T.ATOMIC)
    assert eff.group.value == "(none)" and hours(eff.idle_timeout_s.value) == 0.5


def test_admin_idle_timeout_beats_the_builtin_docker_type_pin() -> None:
    """settings.idleTimeout: 20s in the admin's LifecyclePolicy applies to docker containers."""
    policy = load_spec_text(
        f"apiVersion: {API_VERSION}\nkind: LifecyclePolicy\nmetadata: {{name: lab}}\n"
        "spec:\n  settings: {idleTimeout: 20s}\n"
    )
    docker = resolve(policy, "anyone", T.DOCKER)
    assert docker.idle_timeout_s.value == 20 and docker.idle_timeout_s.source == "LifecyclePolicy/lab"
    # a key the admin did not write still comes from the built-in type pin
    assert docker.sigterm_grace_s.source == "container type docker (built-in default)"
    # idleExempt is only ever written per type, so the built-in devcontainer stays idle-exempt
    assert resolve(policy, "anyone", T.DEVCONTAINER).idle_timeout_s.value is None
    # an admin who pins the type gets the pin
    pinned = load_spec_text(
        f"apiVersion: {API_VERSION}\nkind: LifecyclePolicy\nmetadata: {{name: lab}}\n"
        "spec:\n  settings: {idleTimeout: 20s}\n  containerTypes:\n    docker: {idleTimeout: 5m}\n"
    )
    assert resolve(pinned, "anyone", T.DOCKER).idle_timeout_s.value == 300


def test_a_user_in_two_groups_gets_the_first_and_is_told_so(tmp_path: Path) -> None:
    """DS01 takes the first group (in its file) whose members list the user; a later group's settings
    never apply to that user. The source says so, and ``ds01ctl validate`` warns with both lines."""
    (tmp_path / "resource-limits.yaml").write_text(
        "groups:\n"
        "  student:\n    members: [sam, ann]\n    idle_timeout_h: 1\n"
        "  researcher:\n    members: [ann, rita]\n    idle_timeout_h: 4\n"
        "  faculty:\n    idle_timeout_h: 8\n"
    )
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "faculty.members").write_text("ann\n")
    policy = import_ds01(tmp_path)
    ann = resolve(policy, "ann", T.ATOMIC)
    assert (ann.group.value, hours(ann.idle_timeout_s.value)) == ("student", 1)
    assert ann.group.source == (
        "UserGroup/student: member 'ann' (also listed in UserGroup/researcher, UserGroup/faculty, "
        "later by order: not applied)"
    )
    rita = resolve(policy, "rita", T.ATOMIC)  # listed once: the source is as before
    assert (rita.group.value, rita.group.source) == ("researcher", "UserGroup/researcher: member 'rita'")
    config = tmp_path / "resource-limits.yaml"
    assert validate_paths([tmp_path]) == []
    assert validation_warnings([tmp_path]) == [
        "warning: 'ann' is a member of UserGroup/student and UserGroup/researcher and UserGroup/faculty: "
        "only UserGroup/student applies to 'ann' (the first group by order, then name; in DS01's file, "
        "the first listed); remove 'ann' from the others, or reorder the groups "
        f"[{config}:3; {config}:6; {config}:8]"
    ]


def test_the_first_group_by_order_applies_in_spec_files_too(tmp_path: Path) -> None:
    text = """\
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata: {name: b-late}
spec: {order: 5, members: [u], settings: {idleTimeout: 2h}}
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata: {name: a-early}
spec: {order: 50, members: [u, v], settings: {idleTimeout: 3h}}
"""
    (tmp_path / "groups.yaml").write_text(text)
    eff = resolve(load_spec_text(text), "u", T.ATOMIC)
    assert (eff.group.value, hours(eff.idle_timeout_s.value)) == ("b-late", 2)
    assert "also listed in UserGroup/a-early" in eff.group.source
    [warning] = validation_warnings([tmp_path / "groups.yaml"])
    assert warning.startswith("warning: 'u' is a member of UserGroup/b-late and UserGroup/a-early: ")
    assert warning.endswith(f"[{tmp_path / 'groups.yaml'}:4; {tmp_path / 'groups.yaml'}:9]")
