"""Resource limits and quotas as desired state: provenance, opt-outs, DS01 import, bad input."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from desired_state.ds01_import import import_ds01
from desired_state.effective import ResourceSpec
from desired_state.errors import PolicyLoadError
from desired_state.load import dump_documents, load_policy, load_spec_text
from desired_state.policy_set import PolicySet
from desired_state.resolve import global_policy, resolve_effective_policy
from desired_state.validate import validation_errors

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
GiB = 1 << 30
HEAD = "apiVersion: ds01.io/v1alpha1\n"

SITE = textwrap.dedent(
    """\
    apiVersion: ds01.io/v1alpha1
    kind: LifecyclePolicy
    metadata: {name: site}
    spec:
      resources: {memory: 8g, pidsLimit: 512}
      containerTypes:
        api: {resourcesExempt: true}
      resourceEnforcement: {memoryMarginPct: 25, enforce: stop}
    ---
    apiVersion: ds01.io/v1alpha1
    kind: UserGroup
    metadata: {name: researcher}
    spec:
      members: [alice]
      resources: {maxCpus: 16, memory: 64g, memorySwap: 64g, maxContainersPerUser: 5}
    ---
    apiVersion: ds01.io/v1alpha1
    kind: UserOverride
    metadata: {name: alice}
    spec:
      user: alice
      resources: {pidsLimit: null}
    ---
    apiVersion: ds01.io/v1alpha1
    kind: Exemption
    metadata: {name: carol-monitoring}
    spec:
      user: carol
      exemptFrom: [resources]
      reason: runs the lab's monitoring
      expiresAt: null
    """
)


def resources(policy: PolicySet, owner: str, ctype: str = "docker") -> ResourceSpec:
    eff = resolve_effective_policy(policy, owner=owner, container_type=ctype, name="c", labels={}, now=NOW)
    return eff.resources


def test_limits_resolve_through_the_layers_with_provenance() -> None:
    policy = load_spec_text(SITE)
    alice = resources(policy, "alice")
    assert (alice.max_cpus.value, alice.max_cpus.source) == (16.0, "UserGroup/researcher")
    assert (alice.memory_bytes.value, alice.memory_bytes.source) == (64 * GiB, "UserGroup/researcher")
    assert alice.memory_swap_bytes.value == 64 * GiB
    assert (alice.pids_limit.value, alice.pids_limit.source) == (None, "UserOverride/alice")  # null: none
    assert alice.max_containers_per_user.value == 5
    bob = resources(policy, "bob")
    assert (bob.memory_bytes.value, bob.memory_bytes.source) == (8 * GiB, "LifecyclePolicy/site")
    assert (bob.max_cpus.value, bob.max_cpus.source) == (32.0, "built-in default")
    assert (bob.pids_limit.value, bob.pids_limit.source) == (512, "LifecyclePolicy/site")
    assert not bob.exempt.value


def test_swap_below_memory_across_layers_is_raised_to_the_memory() -> None:
    # The group's 64g memory over the built-in 32g swap: Docker refuses swap below memory.
    policy = load_spec_text(
        HEAD + "kind: UserGroup\nmetadata: {name: big}\nspec:\n  members: [dan]\n  resources: {memory: 64g}\n"
    )
    dan = resources(policy, "dan")
    assert dan.memory_swap_bytes.value == 64 * GiB
    assert "raised to it" in dan.memory_swap_bytes.source


def test_a_container_type_or_an_exemption_opts_out() -> None:
    policy = load_spec_text(SITE)
    api = resources(policy, "bob", "api")
    assert api.exempt.value and "resourcesExempt" in api.exempt.source
    carol = resources(policy, "carol")
    assert carol.exempt.value and carol.exempt.source == "Exemption/carol-monitoring"
    assert not resources(policy, "bob", "docker").exempt.value


def test_enforcement_settings_are_host_wide_and_sourced() -> None:
    glob = global_policy(load_spec_text(SITE))
    assert (glob.memory_margin_pct.value, glob.memory_margin_pct.source) == (25.0, "LifecyclePolicy/site")
    assert glob.quota_enforce.value == "stop"
    assert glob.update_limits.value is False and glob.update_limits.source == "built-in default"


def test_ds01_limit_keys_import_losslessly(tmp_path: Path) -> None:
    (tmp_path / "resource-limits.yaml").write_text(
        textwrap.dedent(
            """\
            defaults:
              max_cpus: 8
              memory: 16g
              memory_swap: 24g
              pids_limit: 2048
              max_containers_per_user: 2
              max_gpu_equivalents: 1.5
              max_gpu_slots_per_container: 1
            groups:
              researcher:
                members: [alice]
                cpus: 24
                memory: 128g
                memory_swap: 128g
                aggregate: {cpu_quota: "9600%", memory_max: 96G, tasks_max: 8192}
            """
        )
    )
    policy = import_ds01(tmp_path)
    bob = resources(policy, "bob")
    assert (bob.max_cpus.value, bob.memory_bytes.value, bob.memory_swap_bytes.value) == (
        8.0,
        16 * GiB,
        24 * GiB,
    )
    assert (bob.pids_limit.value, bob.max_containers_per_user.value) == (2048, 2)
    assert (bob.max_gpu_equivalents.value, bob.max_gpu_slots_per_container.value) == (1.5, 1)
    assert bob.memory_bytes.source == "LifecyclePolicy/ds01"
    alice = resources(policy, "alice")
    assert (alice.max_cpus.value, alice.memory_bytes.value) == (24.0, 128 * GiB)
    assert alice.max_cpus.source.startswith("UserGroup/researcher")
    group = policy.group("researcher")
    assert group is not None and group.spec.resources.aggregate is not None
    assert group.spec.resources.aggregate.tasks_max == 8192


def _one_error(tmp_path: Path, files: dict[str, str], target: Path) -> str:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    errors = validation_errors([target])
    assert len(errors) == 1, [str(e) for e in errors]
    message = str(errors[0])
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        (
            "defaults:\n  memory: 4m\n",
            "resource-limits.yaml:2: ",
            ["defaults.memory", "below Docker's minimum of 6Mi"],
        ),
        (
            "defaults:\n  max_cpus: -2\n",
            "resource-limits.yaml:2: ",
            ["defaults.max_cpus", "-2 is out of range"],
        ),
        (
            "defaults:\n  memory: 32g\n  memory_swap: 16g\n",
            "resource-limits.yaml:3: ",
            ["defaults.memory_swap", "below memory 32g"],
        ),
        (
            "defaults:\n  max_cpus: '8 cores'\n",
            "resource-limits.yaml:2: ",
            ["defaults.max_cpus", "'8 cores' is not a number"],
        ),
        (
            "defaults:\n  pids_limit: '4096'\n",
            "resource-limits.yaml:2: ",
            ["defaults.pids_limit", "'4096' is not a whole number"],
        ),
        (
            "groups:\n  student:\n    max_containers_per_user: '3'\n",
            "resource-limits.yaml:3: ",
            ["groups.student.max_containers_per_user", "'3' is not a whole number"],
        ),
    ],
    ids=[
        "memory below minimum",
        "negative cpus",
        "swap below memory",
        "cpus with a unit",
        "pids string",
        "count string",
    ],
)
def test_bad_ds01_limits_are_one_line_naming_file_field_and_line(
    tmp_path: Path, body: str, where: str, words: list[str]
) -> None:
    message = _one_error(tmp_path, {"resource-limits.yaml": body}, tmp_path)
    assert where in message
    for word in words:
        assert word in message, message
    with pytest.raises(PolicyLoadError):
        load_policy(ds01_config_dir=tmp_path)


def test_bad_spec_limit_names_the_crd_field_and_line(tmp_path: Path) -> None:
    body = HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  resources:\n    memory: 1k\n"
    message = _one_error(tmp_path, {"specs/p.yaml": body}, tmp_path / "specs")
    assert "p.yaml:6: " in message and "spec.resources.memory" in message and "6Mi" in message


def test_the_aggregate_caps_resolve_as_one_block_with_their_source() -> None:
    text = SITE.replace(
        "resources: {maxCpus: 16, memory: 64g, memorySwap: 64g, maxContainersPerUser: 5}",
        "resources: {maxCpus: 16, aggregate: {cpuQuota: '9600%', memoryMax: 96G, memoryHigh: 86G, "
        "tasksMax: 12288}}",
    )
    policy = load_spec_text(text, "site.yaml")
    alice = resources(policy, "alice")
    assert (alice.aggregate_cpus.value, alice.aggregate_memory_bytes.value) == (96.0, 96 * GiB)
    assert (alice.aggregate_memory_high_bytes.value, alice.aggregate_tasks.value) == (86 * GiB, 12288)
    assert alice.aggregate_tasks.source == "UserGroup/researcher: aggregate"
    # An override's block replaces the group's whole (DS01's rule); null: no cap at all.
    nulled = load_spec_text(
        text.replace("resources: {pidsLimit: null}", "resources: {aggregate: null}"), "s.yaml"
    )
    capless = resources(nulled, "alice")
    assert capless.aggregate_cpus.value is None and capless.aggregate_tasks.value is None
    assert capless.aggregate_cpus.source.startswith("UserOverride/alice")


def test_ds01_memory_swap_minus_one_is_unlimited_swap_as_docker_reads_it(tmp_path: Path) -> None:
    # docker --memory-swap -1: the memory is limited, the swap is not. A group's -1 over the
    # defaults' 32g leaves its members' swap unlimited; the defaults' 32g still holds for others.
    (tmp_path / "resource-limits.yaml").write_text(
        textwrap.dedent(
            """\
            defaults:
              memory: 32g
              memory_swap: 32g
            groups:
              researcher:
                members: [alice]
                memory: 64g
                memory_swap: -1
            """
        )
    )
    assert validation_errors([tmp_path]) == []
    policy = import_ds01(tmp_path)
    alice = resources(policy, "alice")
    assert (alice.memory_bytes.value, alice.memory_swap_bytes.value) == (64 * GiB, None)
    assert alice.memory_swap_bytes.source == "UserGroup/researcher: -1, unlimited swap"
    assert resources(policy, "bob").memory_swap_bytes.value == 32 * GiB
    assert load_spec_text(dump_documents(policy.documents())) == policy
    # and a spec writes it as Docker does
    spec = load_spec_text(
        HEAD + "kind: UserGroup\nmetadata: {name: big}\nspec:\n  members: [dan]\n"
        "  resources: {memory: 64g, memorySwap: '-1'}\n"
    )
    assert resources(spec, "dan").memory_swap_bytes.value is None


def test_an_aggregate_tasks_max_of_infinity_is_no_cap_as_systemd_reads_it(tmp_path: Path) -> None:
    # The caps are systemd's slice properties: TasksMax=infinity, as MemoryMax=infinity, is no cap.
    (tmp_path / "resource-limits.yaml").write_text(
        "groups:\n  student:\n    members: [alice]\n"
        "    aggregate: {cpu_quota: '9600%', memory_max: infinity, tasks_max: infinity}\n"
    )
    assert validation_errors([tmp_path]) == []
    policy = import_ds01(tmp_path)
    alice = resources(policy, "alice")
    assert (alice.aggregate_memory_bytes.value, alice.aggregate_tasks.value) == (None, None)
    assert alice.aggregate_cpus.value == 96.0
    assert load_spec_text(dump_documents(policy.documents())) == policy
