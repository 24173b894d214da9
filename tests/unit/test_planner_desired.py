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
from desired_state.effective import EffectivePolicy, ExemptFrom, ResourceSpec
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


def test_containers_resolving_to_one_policy_share_the_whole_policy_and_others_keep_their_own() -> None:
    """Two containers of one owner and type resolve to one policy object (down to its resources);
    an exemption for one owner makes that owner's policy its own, equal to its unshared resolution."""
    policy_set = load_spec_text(EXEMPTION)
    desired = PolicySetDesired(policy_set)
    now = b.T0
    one = b.running("one", owner="bob", gpus=[b.GPU0], id="a" * 64)
    two = b.running("two", owner="bob", gpus=[b.GPU0], id="b" * 64)
    exempt = b.running("three", owner="alice", gpus=[b.GPU0], id="c" * 64)
    first, second, third = (desired.effective(c, now) for c in (one, two, exempt))
    assert first is second and first.resources is second.resources
    assert third is not first and third.exemption(ExemptFrom.IDLE) is not None
    assert third.resources is first.resources  # the parts that are equal are still shared
    for c, eff in ((one, first), (two, second), (exempt, third)):
        assert eff == PolicySetDesired(policy_set)._effective(c, now)


def _exempt_policy(**exemption: Any) -> EffectivePolicy:
    from desired_state.effective import ActiveExemption

    values = {
        "name": "x",
        "exempt_from": ExemptFrom.IDLE,
        "source": "Exemption/x",
        "expires_at": datetime(2026, 3, 31, 12, 0, tzinfo=b.T0.tzinfo),
    }
    return b.policy().model_copy(update={"exemptions": (ActiveExemption(**{**values, **exemption}),)})


def test_policies_that_merely_compare_equal_are_not_shared() -> None:
    """Sharing hands a container another's policy only when nothing could tell them apart: not a
    limit of another type (1 == 1.0) or sign (0.0 == -0.0), not a timestamp at another offset (the
    same instant prints differently), not a model with other fields set (what a dump leaves out)."""
    from datetime import timezone

    from controller.plan.desired import _Memo
    from desired_state.effective import Sourced

    memo = _Memo(builtin_policy())
    base = memo.shared(b.policy())
    assert memo.shared(b.policy()) is base  # equal in every way: shared
    as_int = b.policy().model_copy(
        update={"warn_lead_s": Sourced[float].model_construct(value=1, source="s")}
    )
    as_float = b.policy().model_copy(
        update={"warn_lead_s": Sourced[float].model_construct(value=1.0, source="s")}
    )
    assert as_int == as_float and memo.shared(as_int) is not memo.shared(as_float)
    plus, minus = (
        b.policy().model_copy(update={"grace_period_s": Sourced[float](value=v, source="s")})
        for v in (0.0, -0.0)
    )
    assert plus == minus and memo.shared(plus) is not memo.shared(minus)
    utc = _exempt_policy()
    shifted = _exempt_policy(expires_at=datetime(2026, 3, 31, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert utc == shifted and memo.shared(utc) is not memo.shared(shifted)
    assert memo.shared(_exempt_policy()) is memo.shared(utc)
    every = set(ResourceSpec.model_fields)
    resources = ResourceSpec.model_construct(_fields_set=every, **dict(b.policy().resources.__dict__))
    full = b.policy().model_copy(update={"resources": resources})
    assert full == b.policy() and memo.shared(full) is not base
    assert memo.shared(full).resources.model_fields_set == set(ResourceSpec.model_fields)
    assert base.resources.model_dump(exclude_unset=True) == {}
