"""The README tells the truth: its YAML validates, the examples validate (alone or as the set the
file says it belongs to), and its rule table, precedence line and security headline agree with the
built-in policy and docs/policy.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crd_like_specs.vocabulary import ContainerType
from desired_state.load import builtin_entries, builtin_policy
from desired_state.policy_set import PolicySet
from desired_state.resolve import resolve_effective_policy
from desired_state.validate import validate_paths

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
EXAMPLES = REPO / "crd_like_specs" / "examples"
SET_MARKER = "This file is one of a set"


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def test_the_readme_has_yaml_blocks() -> None:
    assert len(_yaml_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_yaml_blocks())))
def test_every_yaml_block_of_the_readme_validates_alone(index: int, tmp_path: Path) -> None:
    block = _yaml_blocks()[index]
    for members in re.findall(r"membersFile:\s*(\S+)", block):
        (tmp_path / members).write_text("# one login per line\nbob\n")
    path = tmp_path / "lab.yaml"
    path.write_text(block)
    assert validate_paths([path]) == []


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates_alone_or_as_the_set_it_says(path: Path) -> None:
    problems = validate_paths([path])
    if SET_MARKER in path.read_text(encoding="utf-8"):
        assert validate_paths([EXAMPLES]) == []
    else:
        assert problems == [], f"{path.name} fails alone and does not say it belongs to a set"


def _with_members(policy: PolicySet) -> PolicySet:
    """The built-in policy with one member per group: the login is the group's name."""
    groups = tuple(
        g.model_copy(update={"spec": g.spec.model_copy(update={"members": [g.metadata.name]})})
        for g in policy.groups
    )
    return PolicySet(
        lifecycle=policy.lifecycle,
        groups=groups,
        fallback_default_group=policy.fallback_default_group,
        sources=policy.sources,  # the groups stay built-in: a built-in type pin still beats them
    )


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def _readme_default(rule: str) -> str:
    row = next(line for line in README.splitlines() if line.startswith(f"| {rule} |"))
    return row.rstrip(" |").rsplit("|", 1)[1].strip()


def _facts(field: str) -> dict[tuple[str, str], str]:
    policy = _with_members(builtin_policy())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    out = {}
    for t in ("atomic", "docker", "compose", "devcontainer", "api", "unknown"):
        for g in ("student", "researcher", "faculty"):
            eff = resolve_effective_policy(
                policy, owner=g, container_type=ContainerType(t), name="c", labels={}, now=now
            )
            out[(t, g)] = _hours(getattr(eff, field).value)
    return out


@pytest.mark.parametrize(
    ("rule", "field"), [("Idle GPU container", "idle_timeout_s"), ("Max runtime", "max_runtime_s")]
)
def test_the_rule_tables_defaults_are_the_builtin_policys(rule: str, field: str) -> None:
    """Every value the README's table states for a type (and group) is what that container gets."""
    facts = _facts(field)
    text = _readme_default(rule)
    stated: dict[tuple[str, str], str] = {}
    for part in text.split(";"):
        types, _, values = part.strip().partition(":")
        for t in (x.strip() for x in types.split(",")):
            by_group = re.findall(r"([\d.]+ (?:h|min)|never) \((\w+)\)", values)
            if by_group:
                for value, group in by_group:
                    stated[(t, group)] = value
            else:
                for g in ("student", "researcher", "faculty"):
                    stated[(t, g)] = values.strip()
    assert {t for t, _ in stated} == {t for t, _ in facts}, text
    for key, value in stated.items():
        assert facts[key] == value, (key, facts[key], value)


def test_the_readme_precedence_line_is_docs_policy_md() -> None:
    line = README.split("**Precedence**", 1)[1].split(". As in DS01", 1)[0]
    text = " ".join(line.split(":", 1)[1].split())
    layers = [re.sub(r"[`*]", "", x).strip() for x in text.split(" < ")]
    assert layers == [
        "built-in default",
        "LifecyclePolicy",
        "UserGroup",
        "container type",
        "the group's containerTypes.<type>",
        "UserOverride",
        "the override's containerTypes.<type>",
        "Exemption",
    ]
    policy_md = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    order = [
        "**built-in default**",
        "**LifecyclePolicy**",
        "**UserGroup** `spec.settings`",
        "**container type**",
    ]
    positions = [policy_md.index(x) for x in order]
    assert positions == sorted(positions)


def test_the_security_headline_says_what_the_default_trustlabels_does() -> None:
    lifecycle = next(e.document for e in builtin_entries() if e.document.kind == "LifecyclePolicy")
    assert lifecycle.spec.trust_labels is True
    bullet = README.split("## Security model", 1)[1].split("\n- ", 1)[1]
    headline = bullet.split("**")[1]
    assert "grant nothing" not in headline
    assert "trusted by default" in headline and "trustLabels: false" in headline
