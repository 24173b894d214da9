"""Host-wide settings the daemon derives from the policy for its observer."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.settings import Settings
from controller.wiring import build_controller
from desired_state.effective import GlobalPolicy
from desired_state.load import PolicyHolder, builtin_policy, load_spec_text
from desired_state.policy_set import PolicySet
from desired_state.resolve import global_policy

SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  settings:
    keepalivePath: /workspace/.stay-awake
"""


def test_keepalive_path_comes_from_the_policy() -> None:
    builtin = global_policy(builtin_policy()).host_keepalive_path
    assert (builtin.value, builtin.source) == ("/workspace/.keep-alive", "built-in default")
    lab = global_policy(load_spec_text(SPEC, "lab.yaml")).host_keepalive_path
    assert (lab.value, lab.source) == ("/workspace/.stay-awake", "LifecyclePolicy/lab")


def test_the_observer_is_configured_from_the_one_resolution(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(SPEC)
    settings = Settings(
        specs=specs,
        state_dir=tmp_path / "state",
        events_log=tmp_path / "events.jsonl",
        ledger=tmp_path / "ledger.json",
        dry_run=True,
    )
    controller = build_controller(settings, PolicyHolder(specs))
    try:
        assert controller.observer.config.keepalive_path == "/workspace/.stay-awake"
    finally:
        controller.observer.close()


def test_a_pass_resolves_the_host_wide_policy_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The planner, the executor's limits, the awareness output and (after a reload) the observer
    # read one resolution per pass; the loop resolves nothing of its own.
    from controller.plan import desired as desired_module
    from tests.unit.fake_host import FakeHost
    from tests.unit.test_schedule import make_controller, spec

    calls: list[object] = []
    real = desired_module.global_policy

    def counting(policy_set: PolicySet) -> GlobalPolicy:
        calls.append(policy_set)
        return real(policy_set)

    host = FakeHost(term_ignored_s=0.0)
    controller = make_controller(tmp_path, host, spec())
    monkeypatch.setattr(desired_module, "global_policy", counting)
    controller.run_pass()
    assert len(calls) == 1
