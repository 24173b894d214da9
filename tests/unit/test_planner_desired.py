"""The planner's desired-state adapters: StaticDesired and PolicySetDesired over real policy sets."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from controller.memory import ControllerMemory
from controller.plan import desired as desired_module
from controller.plan.desired import DesiredState, PolicySetDesired, StaticDesired
from controller.plan.planner import plan
from controller.snapshot import ContainerObs
from crd_like_specs.vocabulary import ContainerType
from desired_state.effective import EffectivePolicy, ExemptFrom
from desired_state.load import builtin_policy, load_spec_text
from tests.fixtures import builders as b

EXEMPTION = """\
apiVersion: ds01.io/v1alpha1
kind: Exemption
metadata:
  name: alice-thesis
spec:
  user: alice
  exemptFrom: [idle]
  reason: thesis experiments
  approvedBy: prof-smith
  expiresAt: 2026-03-31T23:59:59Z
"""


def gpu_container(owner: str = "alice", **kw: object) -> ContainerObs:
    return b.running("train", owner=owner, gpus=[b.GPU0], **kw)  # type: ignore[arg-type]


class TestStaticDesired:
    def test_fixed_policy_and_factory(self) -> None:
        pol = b.policy(idle_timeout_s=60.0)
        glob = b.global_policy()
        assert StaticDesired(pol, glob).effective(gpu_container(), b.T0) is pol
        seen: list[tuple[str, datetime]] = []

        def factory(c: ContainerObs, now: datetime) -> EffectivePolicy:
            seen.append((c.name, now))
            return pol

        d = StaticDesired(factory, glob)
        assert d.effective(gpu_container(), b.T0) is pol
        assert seen == [("train", b.T0)]
        assert d.global_policy is glob
        assert isinstance(d, DesiredState)


class TestPolicySetDesired:
    def test_builtin_policy_resolves_every_container(self) -> None:
        d = PolicySetDesired(builtin_policy())
        eff = d.effective(gpu_container(container_type=ContainerType.DOCKER), b.T0)
        assert eff.owner == "alice"
        assert eff.idle_timeout_s.value == 1800
        assert eff.exemptions == ()
        assert d.global_policy.max_destructive_actions_per_pass.value >= 1
        assert isinstance(d, DesiredState)

    def test_trusted_protected_label_reaches_the_policy(self) -> None:
        d = PolicySetDesired(builtin_policy())
        eff = d.effective(gpu_container(labels={"ds01.protected": "true"}), b.T0)
        assert eff.protected.value is True

    def test_exempt_owner_keeps_the_waived_timeout_with_provenance(self) -> None:
        d = PolicySetDesired(load_spec_text(EXEMPTION))
        eff = d.effective(gpu_container(), b.T0)
        assert eff.exemption(ExemptFrom.IDLE) is not None
        assert eff.idle_timeout_s.value == 1800
        assert "waived by Exemption/alice-thesis" in eff.idle_timeout_s.source
        other = d.effective(gpu_container(owner="bob"), b.T0)
        assert other.exemptions == ()
        assert "waived" not in other.idle_timeout_s.source

    def test_an_exempt_container_is_resolved_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The resolver keeps the waived value and lists the exemption: no second resolution
        # without exemptions to restore it.
        calls: list[str] = []
        real = desired_module.resolve_effective_policy

        def counting(*args: Any, **kwargs: Any) -> EffectivePolicy:
            calls.append(kwargs["owner"])
            return real(*args, **kwargs)

        monkeypatch.setattr(desired_module, "resolve_effective_policy", counting)
        eff = PolicySetDesired(load_spec_text(EXEMPTION)).effective(gpu_container(owner="alice"), b.T0)
        assert calls == ["alice"]
        assert [e.name for e in eff.exemptions] == ["alice-thesis"]
        assert eff.idle_timeout_s.value == 1800
        assert (
            eff.idle_timeout_s.source
            == "container type docker (built-in default); waived by Exemption/alice-thesis"
        )

    def test_expired_exemption_is_not_active(self) -> None:
        d = PolicySetDesired(load_spec_text(EXEMPTION))
        eff = d.effective(gpu_container(), datetime.fromisoformat("2026-04-01T00:00:00+00:00"))
        assert eff.exemptions == ()

    def test_exempt_owner_gets_one_notice_and_no_stop_end_to_end(self) -> None:
        d = PolicySetDesired(load_spec_text(EXEMPTION))
        memory = ControllerMemory()
        counters = b.Counters()
        reasons: list[tuple[int, str]] = []
        for minute in range(0, 120):  # one pass a minute, well within the built-in maxSampleInterval
            t = b.at(minutes=minute)
            counters.step(60)
            c = gpu_container(started_at=b.ago(hours=2), sig=counters.read(t, gpu_pct={b.GPU0: 0.0}))
            gpus = [b.gpu(i) for i in range(4)]  # one of four held: no high demand
            p = plan(b.snapshot(observed_at=t, containers=[c], gpus=gpus), d, memory, t)
            reasons += [(minute, a.reason.value) for a in p.actions]
            memory = b.record_outcomes(p)
        assert reasons == [(31, "IdleExemptNotice")]
        assert [(x.rule.value, x.why.value) for x in p.deferred if x.rule.value == "IdleTimeout"] == [
            ("IdleTimeout", "Exempt")
        ]


def test_memoised_resolution_matches_fresh_resolution_across_expiry_and_time() -> None:
    policy_set = load_spec_text(EXEMPTION)
    expiry = datetime.fromisoformat("2026-03-31T23:59:59+00:00")
    c = gpu_container()
    d = PolicySetDesired(policy_set)
    first = d.effective(c, b.T0)
    # Reused while nothing time-dependent changed (a new adapter over the same set shares it).
    assert PolicySetDesired(policy_set).effective(c, b.T0 + timedelta(hours=1)) is first
    for t in (
        expiry - timedelta(seconds=1),
        expiry,  # expired (exclusive)
        expiry + timedelta(days=1),
        b.T0,  # back in time: a result computed later is not reused
    ):
        assert d.effective(c, t) == d._effective(c, t), t
    assert d.effective(c, expiry).exemptions == ()
    assert d.effective(c, b.T0).exemption(ExemptFrom.IDLE) is not None


def test_resolutions_of_one_group_share_equal_values_and_equal_an_unshared_resolution() -> None:
    """Containers of one group read one copy of each equal setting (a pass on a large host reads
    them again and again); sharing never changes a value, its type or where it came from."""
    from desired_state.effective import Sourced

    desired = PolicySetDesired(builtin_policy())
    now = datetime(2026, 3, 2, 12, 0, tzinfo=b.T0.tzinfo)
    first = desired.effective(gpu_container(owner="alice", id="a" * 64), now)
    second = desired.effective(gpu_container(owner="bob", id="b" * 64), now)
    assert first.idle_timeout_s is second.idle_timeout_s
    assert first.max_runtime_s is second.max_runtime_s
    for c, eff in (
        (gpu_container(owner="alice", id="a" * 64), first),
        (gpu_container(owner="bob", id="b" * 64), second),
    ):
        unshared = PolicySetDesired(builtin_policy())._effective(c, now)
        assert eff == unshared
        for name, v in unshared.__dict__.items():
            if isinstance(v, Sourced):
                got = getattr(eff, name)
                assert (type(got.value), got.value, got.source) == (type(v.value), v.value, v.source), name


def test_only_scalars_are_shared_and_equal_values_of_another_type_or_sign_stay_apart() -> None:
    """Sharing must never hand a container a value that merely compares equal: 1 is not 1.0 or
    True, 0.0 is not -0.0, and a collection is not shared at all ((1,) == (1.0,))."""
    from controller.plan.desired import _value_key

    keys = [_value_key(v) for v in (1, 1.0, True, 0.0, -0.0, "1", None)]
    assert None not in keys[:-1] and keys[-1] is not None
    assert len(set(keys)) == len(keys)
    assert _value_key((1,)) is None and _value_key(frozenset({1})) is None
