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


def test_ds01ctls_own_observation_reads_the_keepalive_path_the_daemon_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ds01ctl observed the default /workspace/.keep-alive while the daemon read the policy's path:
    `plan` and `describe --live` announced a warning and an idle stop the daemon never made."""
    from controller.cli import gather
    from controller.observe import host as host_module
    from controller.plan.desired import PolicySetDesired
    from controller.snapshot import Snapshot
    from tests.fixtures import builders as b

    seen: list[host_module.ObserveConfig] = []

    class Observer:
        def __init__(self, config: host_module.ObserveConfig, nvml: object = None) -> None:
            seen.append(config)

        def import_inspect_cache(self, data: bytes) -> int:
            return 0

        def observe(self) -> Snapshot:
            return b.snapshot()

        def close(self) -> None:
            pass

    monkeypatch.setattr(host_module, "HostObserver", Observer)
    settings = Settings(state_dir=tmp_path / "state", ledger=tmp_path / "ledger.json")
    desired = PolicySetDesired(load_spec_text(SPEC, "lab.yaml"))
    gather.observe(settings, desired)
    (config,) = seen
    daemon = build_controller(settings.model_copy(update={"dry_run": True}), PolicyHolder(None)).observer
    try:
        daemon.config = host_module.with_policy(daemon.config, desired.global_policy)
        assert config.keepalive_path == daemon.config.keepalive_path == "/workspace/.stay-awake"
        assert config.system_process_names == daemon.config.system_process_names
        assert config.engine_cgroup_parents == daemon.config.engine_cgroup_parents
    finally:
        daemon.close()


def test_a_reload_that_moves_the_keepalive_path_moves_the_reads_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.observe import host as host_module
    from controller.observe.keepalive_reads import KeepAliveRequest
    from controller.snapshot import Domain, DomainHealth, KeepAlive, KeepAliveState

    class NoGpus:
        def observe(self) -> tuple[tuple[object, ...], DomainHealth]:
            return (), DomainHealth(domain=Domain.NVML, ok=True)

    paths: list[str] = []

    def read(proc_root: Path, path: str, use_openat2: bool | None, req: KeepAliveRequest) -> KeepAlive:
        paths.append(path)
        return KeepAlive(state=KeepAliveState.ABSENT)

    monkeypatch.setattr(host_module, "read_keepalive_of", read)
    observer = host_module.HostObserver(host_module.ObserveConfig(), nvml=NoGpus())  # type: ignore[arg-type]
    try:
        request = [KeepAliveRequest("c" * 64, "alice", 1)]
        observer.keepalive_reads.read_all(request)
        observer.config = host_module.with_policy(
            observer.config, global_policy(load_spec_text(SPEC, "lab.yaml"))
        )
        observer.keepalive_reads.read_all(request)
        assert paths == ["/workspace/.keep-alive", "/workspace/.stay-awake"]
    finally:
        observer.close()
