"""Self-granted protection and identity, on the real engine: what ``trustLabels`` decides.

Real containers (created, never started: the "created container timeout" rule then plans their
removal at once) carry the labels a user can set on their own container. They are observed by the
real observer and planned with a real policy set loaded from YAML, once with ``trustLabels: true``
(DS01 compatibility: the labels are honoured) and once with ``trustLabels: false``:

- ``ds01.protected=true`` / ``ds01.monitoring=true`` shield a container only when trusted;
- ``ds01.user=admin`` puts the container in the admins' group (whose containers are never removed
  here) and gives it the admin's Exemption only when trusted; untrusted, the owner is ``unknown``;
- ``ds01.container_type=devcontainer`` gives the devcontainer's settings (never removed here, and
  idle-exempt by the built-in policy) only when trusted;
- a container matched by the admins' ``protect`` selector is protected in both modes;
- a container with no labels is removed in both modes (the control).

``ds01ctl describe`` (as a process) shows the claim as set but not trusted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller import labels as L
from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan as make_plan
from controller.plan.types import Plan
from controller.snapshot import Domain, DomainHealth, GpuObs, OwnerRule, Snapshot, TypeRule
from crd_like_specs.vocabulary import ContainerType
from desired_state.load import load_spec_text
from tests.fixtures.docker_host import ContainerFactory

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]

POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: security-trust
spec:
  trustLabels: {trust}
  defaultGroup: students
  settings:
    createdContainerTimeout: 0s
  containerTypes:
    devcontainer:
      createdContainerTimeout: null
  protect:
    - {{name: "{infra}*", reason: "the lab's infrastructure"}}
  safety:
    maxDestructiveActionsPerPass: 1000
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: admins
spec:
  order: 1
  members: [admin]
  settings:
    createdContainerTimeout: null
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: students
spec:
  order: 50
---
apiVersion: ds01.io/v1alpha1
kind: Exemption
metadata:
  name: admin-forever
spec:
  user: admin
  exemptFrom: [idle, max_runtime, cleanup]
  reason: the admin's own experiments
  expiresAt: null
"""

CLAIMS: dict[str, dict[str, str]] = {
    "self-protected": {L.DS01_PROTECTED: "true"},
    "self-monitoring": {L.DS01_MONITORING: "true"},
    "claims-admin": {L.DS01_USER: "admin"},
    "claims-devcontainer": {L.DS01_CONTAINER_TYPE: "devcontainer"},
    "claims-everything": {
        L.DS01_PROTECTED: "TRUE ",
        L.DS01_MONITORING: "True",
        L.DS01_USER: "admin",
        L.DS01_CONTAINER_TYPE: "devcontainer",
    },
}


class NoGpus:
    def observe(self) -> tuple[tuple[GpuObs, ...], DomainHealth]:
        return (), DomainHealth(domain=Domain.NVML, ok=True)


@pytest.fixture(scope="module")
def world(module_containers: ContainerFactory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    make = module_containers
    infra = f"labinfra-{make.test_id}"
    w: dict[str, Any] = {name: make(start=False, labels=labels) for name, labels in CLAIMS.items()}
    w["admin-selected"] = make(start=False, name=f"{infra}-prometheus")
    w["plain"] = make(start=False)
    config = ObserveConfig(ledger_path=tmp_path_factory.mktemp("trust") / "ledger.json")
    with HostObserver(config, nvml=NoGpus()) as observer:
        w["snapshot"] = observer.observe()
    w["infra"] = infra
    return w


def plan_with(world: dict[str, Any], trust: bool) -> tuple[Plan, PolicySetDesired]:
    text = POLICY.format(trust=str(trust).lower(), infra=world["infra"])
    desired = PolicySetDesired(load_spec_text(text))
    snap: Snapshot = world["snapshot"]
    return make_plan(snap, desired, ControllerMemory(), snap.observed_at), desired


def removed(p: Plan, container: Any) -> bool:
    return any(a.kind.value == "RemoveContainer" and a.target.container_id == container.id for a in p.actions)


def test_the_observer_reports_the_claims_as_it_saw_them(world: dict[str, Any]) -> None:
    snap: Snapshot = world["snapshot"]
    admin = snap.container(world["claims-admin"].id)
    dev = snap.container(world["claims-devcontainer"].id)
    prot = snap.container(world["self-protected"].id)
    assert admin is not None and dev is not None and prot is not None
    assert (admin.owner, admin.owner_rule) == ("admin", OwnerRule.LABEL_DS01_USER)
    assert (dev.container_type, dev.type_rule) == (ContainerType.DEVCONTAINER, TypeRule.LABEL_CONTAINER_TYPE)
    assert prot.protected_label is True


def test_trusted_labels_are_honoured_for_ds01_compatibility(world: dict[str, Any]) -> None:
    p, desired = plan_with(world, trust=True)
    for name in CLAIMS:
        assert not removed(p, world[name]), f"{name}: a trusted claim must shield it"
    assert not removed(p, world["admin-selected"])
    assert removed(p, world["plain"])
    snap: Snapshot = world["snapshot"]
    dev = snap.container(world["claims-devcontainer"].id)
    admin = snap.container(world["claims-admin"].id)
    assert dev is not None and admin is not None
    assert desired.effective(dev, snap.observed_at).idle_timeout_s.value is None  # built-in idleExempt
    eff = desired.effective(admin, snap.observed_at)
    assert eff.group.value == "admins" and [e.name for e in eff.exemptions][:1] == ["admin-forever"]


def test_untrusted_labels_grant_nothing_but_the_admins_selector_still_protects(world: dict[str, Any]) -> None:
    p, desired = plan_with(world, trust=False)
    for name in CLAIMS:
        assert removed(p, world[name]), f"{name}: a self-granted claim must not shield it"
    assert not removed(p, world["admin-selected"])
    protected = [
        d
        for d in p.deferred
        if d.target.container_id == world["admin-selected"].id and d.why.value == "Protected"
    ]
    assert protected and "protect[0]" in protected[0].message
    assert removed(p, world["plain"])

    snap: Snapshot = world["snapshot"]
    everything = snap.container(world["claims-everything"].id)
    assert everything is not None
    eff = desired.effective(everything, snap.observed_at)
    # Resolved as an unknown owner's plain docker container: no admin group, exemption or type.
    assert (eff.owner, eff.container_type, eff.group.value) == ("unknown", "docker", "students")
    assert eff.exemptions == () and eff.idle_timeout_s.value is not None
    assert eff.protected.value is False and eff.monitoring.value is False
    assert "not trusted" in eff.group.source and "ignored" in eff.protected.source


def test_ds01ctl_shows_an_untrusted_claim_as_set_but_not_honoured(
    world: dict[str, Any], tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "policy.yaml").write_text(POLICY.format(trust="false", infra=world["infra"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    env.update(
        {
            "DS01_SPECS": str(specs),
            "DS01_STATE_DIR": str(tmp_path / "state"),
            "DS01_EVENTS_LOG": str(tmp_path / "events.jsonl"),
            "DS01_LEDGER": str(tmp_path / "ledger.json"),
            "NO_COLOR": "1",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "describe", "container", world["claims-everything"].name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fields = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in result.stdout.splitlines()
        if ":" in line and not line.startswith(" ")
    }
    assert fields["Owner"].startswith("admin") and "label:ds01.user" in fields["Owner"]
    assert fields["Group"].startswith("students") and "not trusted" in fields["Group"]
    assert fields["Protected"].startswith("no") and "not trusted" in fields["Protected"]
    assert fields["Monitoring"].startswith("no") and "not trusted" in fields["Monitoring"]
