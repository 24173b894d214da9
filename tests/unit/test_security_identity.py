"""Identity and exemptions under untrusted labels, and the keep-alive cap (pure, no host).

With ``trustLabels: false`` every owner or type that the observer took from something the
container's creator chose (a label, the container name) is replaced for the policy by ``unknown`` /
``docker``: no group, UserOverride, Exemption, owner selector or per-type setting is granted on the
strength of a claim. The owner read from the main process's uid is not a claim and still counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.memory import KeepAliveSeen
from controller.plan.desired import CLAIMED_OWNER_RULES, CLAIMED_TYPE_RULES, PolicySetDesired, policy_identity
from controller.plan.idle import keepalive_verdict
from controller.snapshot import ContainerObs, KeepAlive, KeepAliveState, OwnerRule, TypeRule
from crd_like_specs.vocabulary import ContainerType
from desired_state.load import load_spec_text
from tests.fixtures import builders as b

SPECS = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  trustLabels: %s
  defaultGroup: students
  settings:
    idleTimeout: 1h
  containerTypes:
    devcontainer:
      idleExempt: true
  monitoring:
    - {owner: grafana-svc, reason: the monitoring service account}
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: staff
spec:
  order: 1
  members: [alice]
  settings:
    idleTimeout: 8h
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: students
spec:
  order: 50
---
apiVersion: ds01.io/v1alpha1
kind: UserOverride
metadata:
  name: alice
spec:
  user: alice
  settings:
    maxRuntime: 30d
---
apiVersion: ds01.io/v1alpha1
kind: Exemption
metadata:
  name: alice-thesis
spec:
  user: alice
  exemptFrom: [idle]
  reason: thesis
  expiresAt: null
"""


def obs(owner: str, owner_rule: OwnerRule, ctype: ContainerType, type_rule: TypeRule) -> ContainerObs:
    return b.running("c", owner=owner, container_type=ctype, gpus=[b.GPU0]).model_copy(
        update={"owner_rule": owner_rule, "type_rule": type_rule}
    )


@pytest.mark.parametrize("rule", list(OwnerRule))
def test_an_owner_from_a_claim_is_replaced_and_any_other_kept(rule: OwnerRule) -> None:
    c = obs("alice", rule, ContainerType.DOCKER, TypeRule.DEFAULT)
    owner, ctype, why = policy_identity(c, trust_labels=False)
    if rule in CLAIMED_OWNER_RULES:
        assert (owner, why) == ("unknown", f"owner 'alice' ({rule.value})")
    else:
        assert (owner, why) == ("alice", None)
    assert ctype == ContainerType.DOCKER
    assert policy_identity(c, trust_labels=True) == ("alice", ContainerType.DOCKER, None)


def test_claim_rules_are_exactly_the_label_and_name_rules() -> None:
    assert {r for r in OwnerRule if r.value.startswith(("label:", "name:"))} == CLAIMED_OWNER_RULES
    assert {r for r in TypeRule if r.value.startswith(("label:", "name:"))} == CLAIMED_TYPE_RULES


@pytest.mark.parametrize("rule", list(TypeRule))
def test_a_type_from_a_claim_is_replaced_by_docker(rule: TypeRule) -> None:
    c = obs("unknown", OwnerRule.UNKNOWN, ContainerType.DEVCONTAINER, rule)
    _, ctype, why = policy_identity(c, trust_labels=False)
    if rule == TypeRule.DEFAULT:
        assert (ctype, why) == (ContainerType.DEVCONTAINER, None)
    else:
        assert ctype == ContainerType.DOCKER and why is not None and rule.value in why


def test_a_claimed_owner_gets_no_group_override_or_exemption_when_untrusted() -> None:
    claimed = obs("alice", OwnerRule.LABEL_DS01_USER, ContainerType.DOCKER, TypeRule.DEFAULT)
    trusted = PolicySetDesired(load_spec_text(SPECS % "true")).effective(claimed, b.T0)
    assert trusted.group.value == "staff" and trusted.exemptions and trusted.max_runtime_s.value == 30 * 86400
    untrusted = PolicySetDesired(load_spec_text(SPECS % "false")).effective(claimed, b.T0)
    assert (untrusted.owner, untrusted.group.value, untrusted.exemptions) == ("unknown", "students", ())
    assert untrusted.idle_timeout_s.value is not None and untrusted.max_runtime_s.value != 30 * 86400
    assert untrusted.group.source.startswith("not trusted (trustLabels: false in LifecyclePolicy/lab)")


def test_the_main_process_uid_still_identifies_the_owner_when_labels_are_untrusted() -> None:
    by_uid = obs("alice", OwnerRule.PROCESS_UID, ContainerType.DOCKER, TypeRule.DEFAULT)
    eff = PolicySetDesired(load_spec_text(SPECS % "false")).effective(by_uid, b.T0)
    assert (eff.owner, eff.group.value) == ("alice", "staff") and eff.exemptions


def test_an_owner_selector_cannot_be_matched_by_a_claimed_owner() -> None:
    desired = PolicySetDesired(load_spec_text(SPECS % "false"))
    claimed = obs("grafana-svc", OwnerRule.LABEL_DS01_USER, ContainerType.DOCKER, TypeRule.DEFAULT)
    real = obs("grafana-svc", OwnerRule.PROCESS_UID, ContainerType.DOCKER, TypeRule.DEFAULT)
    assert desired.effective(claimed, b.T0).monitoring.value is False
    assert desired.effective(real, b.T0).monitoring.value is True
    # The two differ only in the rule: the memo must not hand one the other's policy.
    assert desired.effective(claimed, b.T0).monitoring.value is False


def test_a_claimed_devcontainer_is_not_idle_exempt_when_untrusted() -> None:
    claimed = obs("unknown", OwnerRule.UNKNOWN, ContainerType.DEVCONTAINER, TypeRule.DEVCONTAINER_LABEL)
    trusted = PolicySetDesired(load_spec_text(SPECS % "true")).effective(claimed, b.T0)
    untrusted = PolicySetDesired(load_spec_text(SPECS % "false")).effective(claimed, b.T0)
    assert trusted.idle_timeout_s.value is None
    assert untrusted.idle_timeout_s.value is not None and untrusted.container_type == "docker"


# --- the keep-alive cap -------------------------------------------------------------------------------

SEEN_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_a_future_mtime_buys_no_more_than_one_cap_from_the_first_sighting() -> None:
    future = KeepAlive(state=KeepAliveState.PRESENT, mtime=SEEN_AT + timedelta(days=365), inode=7)
    first = KeepAliveSeen(inode=7, first_seen_at=SEEN_AT)
    assert keepalive_verdict(future, first, 3.0, SEEN_AT + timedelta(seconds=2)).honoured
    assert not keepalive_verdict(future, first, 3.0, SEEN_AT + timedelta(seconds=3)).honoured


@pytest.mark.parametrize("state", [KeepAliveState.LINK, KeepAliveState.NOT_REGULAR, KeepAliveState.UNKNOWN])
def test_links_and_odd_files_are_never_honoured_even_without_a_cap(state: KeepAliveState) -> None:
    ka = KeepAlive(state=state, mtime=SEEN_AT, inode=7)
    assert not keepalive_verdict(ka, KeepAliveSeen(inode=7, first_seen_at=SEEN_AT), None, SEEN_AT).honoured
