"""The daemon's last pass on disk (controller/lastpass.py) and ``ds01ctl`` showing it.

``get``/``describe`` render the recorded pass only when it is fresh and made under exactly the
policy ``ds01ctl`` would load; anything in doubt (stale, corrupt, another format or version,
another policy, a failed reload, a policy file edited during the pass) observes live instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import lastpass
from controller.cli import main as cli_main
from controller.cli.describe import describe_container
from controller.cli.errors import CliError
from controller.cli.forecastview import forecast_for_view
from controller.cli.gather import GatherOptions, gather
from controller.cli.get import GetOptions, run_get
from controller.lastpass import LAST_SNAPSHOT_FILE, load_last_pass, save_last_pass
from controller.memory import ControllerMemory
from controller.settings import Settings
from controller.store import MemoryStore
from desired_state.load import PolicyHolder
from tests.unit import cli_world as w

SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: default}
spec: {}
"""


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    d = tmp_path / "specs"
    d.mkdir()
    (d / "lifecycle.yaml").write_text(SPEC)
    return d


def _settings(state_dir: Path, specs: Path | None, interval_s: float = 30.0) -> Settings:
    return Settings(
        state_dir=state_dir,
        specs=specs,
        interval_s=interval_s,
        events_log=state_dir / "events.log",
        ledger=state_dir / "ledger.json",
    )


def _save(settings: Settings, holder: PolicyHolder) -> None:
    snap = w.snapshot()
    save_last_pass(settings, holder, snap, w.plan(snap))


def _load(settings: Settings, now: datetime | None = None) -> tuple[object, str]:
    return load_last_pass(
        settings.state_dir,
        specs=settings.specs,
        ds01_config=settings.ds01_config,
        interval_s=settings.interval_s,
        now=now or datetime.now(UTC),
    )


def test_a_fresh_pass_under_the_same_policy_reads_back_whole(state_dir: Path, specs: Path) -> None:
    settings = _settings(state_dir, specs)
    _save(settings, PolicyHolder(specs))
    last, why = _load(settings)
    assert why == "fresh"
    assert isinstance(last, lastpass.LastPass)
    assert last.snapshot == w.snapshot()
    assert last.plan == w.plan(w.snapshot())


def test_the_recorded_pass_renders_as_the_live_one(state_dir: Path, specs: Path, tmp_path: Path) -> None:
    """Evidence, due times and targets survive the JSON round trip: the tables and describe read
    the same from the file as from the pass itself."""
    settings = _settings(state_dir, specs)
    _save(settings, PolicyHolder(specs))
    last, _ = _load(settings)
    assert isinstance(last, lastpass.LastPass)
    live = w.view()
    recorded = dataclasses.replace(w.view(), snapshot=last.snapshot, plan=last.plan)
    for kind in ("containers", "gpus", "processes", "allocations"):
        for output in ("wide", "json"):
            assert run_get(kind, recorded, GetOptions(output=output, show_all=True)) == run_get(
                kind, live, GetOptions(output=output, show_all=True)
            )
    for name in ("alice-train", "bob-notebook", "carol-old", "dave-new"):
        assert describe_container(recorded, name) == describe_container(live, name)


def test_a_stale_pass_is_not_shown(state_dir: Path, specs: Path) -> None:
    settings = _settings(state_dir, specs, interval_s=30.0)
    _save(settings, PolicyHolder(specs))
    last, why = _load(settings, now=datetime.now(UTC) + timedelta(seconds=31))
    assert last is None
    assert "older than the resync interval" in why


def test_a_pass_dated_in_the_future_is_not_shown(state_dir: Path, specs: Path) -> None:
    settings = _settings(state_dir, specs)
    _save(settings, PolicyHolder(specs))
    last, why = _load(settings, now=datetime.now(UTC) - timedelta(seconds=60))
    assert last is None
    assert "future" in why


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: b"\x00garbage\n",
        lambda data: data[: len(data) // 2],  # torn
        lambda data: data.split(b"\n")[0] + b"\n{}\n{}\n",  # valid header, not a snapshot
        lambda data: data.replace(b'"format": 1', b'"format": 99', 1),
        lambda data: data.replace(b'"version": "', b'"version": "0.0.0-other', 1),
    ],
    ids=["empty", "garbage", "torn", "not-a-snapshot", "other-format", "other-version"],
)
def test_a_corrupt_or_foreign_format_file_is_not_shown(state_dir: Path, specs: Path, damage: object) -> None:
    settings = _settings(state_dir, specs)
    _save(settings, PolicyHolder(specs))
    path = state_dir / LAST_SNAPSHOT_FILE
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    last, why = _load(settings)
    assert last is None
    assert why != "fresh"


def test_a_pass_under_another_policy_is_not_shown(state_dir: Path, specs: Path, tmp_path: Path) -> None:
    settings = _settings(state_dir, specs)
    _save(settings, PolicyHolder(specs))
    # Another directory with the same content: not the daemon's paths.
    other = tmp_path / "other"
    other.mkdir()
    (other / "lifecycle.yaml").write_text(SPEC)
    last, why = _load(_settings(state_dir, other))
    assert last is None and "another policy" in why
    # The built-in default against the daemon's specs.
    last, why = _load(_settings(state_dir, None))
    assert last is None and "another policy" in why
    # The same path, edited after the pass: the daemon has not run it yet.
    (specs / "lifecycle.yaml").write_text(SPEC + "# edited\n")
    last, why = _load(settings)
    assert last is None and "files differ" in why
    # A new file in the directory counts too.
    (specs / "lifecycle.yaml").write_text(SPEC)
    assert _load(settings)[1] == "fresh"
    (specs / "group.yaml").write_text("# new\n")
    assert _load(settings)[0] is None


def test_a_policy_file_edited_after_the_daemon_read_it_is_not_claimed(state_dir: Path, specs: Path) -> None:
    """The daemon reloads at the start of a pass; an edit before the pass ends is not in force."""
    settings = _settings(state_dir, specs)
    holder = PolicyHolder(specs)
    (specs / "lifecycle.yaml").write_text(SPEC + "# edited during the pass\n")
    _save(settings, holder)
    last, why = _load(settings)
    assert last is None
    assert "changed" in why


def test_a_failed_reload_is_not_shown(state_dir: Path, specs: Path) -> None:
    settings = _settings(state_dir, specs)
    holder = PolicyHolder(specs)
    (specs / "lifecycle.yaml").write_text("kind: [unclosed\n")
    assert holder.reload()  # fails: the daemon keeps its old policy, which is not these files
    _save(settings, holder)
    last, why = _load(settings)
    assert last is None and "reload failed" in why


def test_a_file_another_user_could_write_is_not_read(state_dir: Path, specs: Path) -> None:
    settings = _settings(state_dir, specs)
    _save(settings, PolicyHolder(specs))
    (state_dir / LAST_SNAPSHOT_FILE).chmod(0o666)
    assert _load(settings)[0] is None


def test_save_never_raises(tmp_path: Path, specs: Path) -> None:
    settings = _settings(tmp_path / "no-such-dir", specs)
    _save(settings, PolicyHolder(specs))  # logged at debug, the pass goes on
    assert not (tmp_path / "no-such-dir").exists()


# --- ds01ctl: the recorded pass, or live --------------------------------------------------------


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Docker engine that cannot be reached: a live observation fails with a CliError."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


def _daemon_state(settings: Settings) -> None:
    MemoryStore(settings.state_dir).save(ControllerMemory())


def test_get_shows_a_fresh_pass_without_observing(state_dir: Path, specs: Path, no_docker: None) -> None:
    settings = _settings(state_dir, specs)
    _daemon_state(settings)
    _save(settings, PolicyHolder(specs))
    view = gather(settings, GatherOptions(require_docker=True, recent=True, need_policy=False))
    assert view.as_of is not None
    assert view.snapshot == w.snapshot()
    text, _ = run_get("containers", view, GetOptions())
    assert "alice-train" in text
    # describe loads the policy too (its provenance), still from the recorded pass.
    view = gather(settings, GatherOptions(require_docker=True, recent=True, events=True))
    assert view.as_of is not None and view.desired is not None


def test_get_containers_from_a_fresh_pass_forecasts_next_and_marks_limits_as_live(
    state_dir: Path, specs: Path, no_docker: None
) -> None:
    """On a small host NEXT is the 24 h forecast, and ``-o wide`` marks the limits the policy
    lowers, whether the view is the daemon's last pass or a live observation: both need the policy
    (without it the recorded pass showed the plan's step, and no marks)."""
    settings = _settings(state_dir, specs)
    _daemon_state(settings)
    _save(settings, PolicyHolder(specs))
    for output, wide in (("table", False), ("wide", True)):
        args = argparse.Namespace(output=output, live=False, debug=False)
        view = cli_main._get_view(args, settings, "containers", None)
        assert view.as_of is not None, "the recorded pass is shown"
        assert view.desired is not None and view.forecast is not None
        # Rendered as the live path renders the same pass under the same policy.
        live = dataclasses.replace(view, as_of=None)
        live.forecast = forecast_for_view(live, settings.interval_s, small_hosts_only=True)
        opts = GetOptions(output=output, show_all=True)
        assert run_get("containers", view, opts) == run_get("containers", live, opts)
        assert wide == ("CPU-LIM" in run_get("containers", view, opts)[0])


def test_live_or_stale_or_foreign_observes_now(
    state_dir: Path, specs: Path, tmp_path: Path, no_docker: None
) -> None:
    settings = _settings(state_dir, specs)
    _daemon_state(settings)
    _save(settings, PolicyHolder(specs))
    # --live: observes, and Docker is unreachable here.
    with pytest.raises(CliError, match="Docker"):
        gather(settings, GatherOptions(require_docker=True, recent=False, need_policy=False))
    # Stale: the interval is shorter than the file's age.
    stale = _settings(state_dir, specs, interval_s=1e-6)
    with pytest.raises(CliError, match="Docker"):
        gather(stale, GatherOptions(require_docker=True, recent=True, need_policy=False))
    # Another policy.
    other = tmp_path / "other"
    other.mkdir()
    (other / "lifecycle.yaml").write_text(SPEC)
    with pytest.raises(CliError, match="Docker"):
        gather(
            _settings(state_dir, other), GatherOptions(require_docker=True, recent=True, need_policy=False)
        )
    # Corrupt.
    (state_dir / LAST_SNAPSHOT_FILE).write_bytes(b"{not json\n")
    with pytest.raises(CliError, match="Docker"):
        gather(settings, GatherOptions(require_docker=True, recent=True, need_policy=False))


def test_plan_with_a_time_or_a_candidate_never_uses_the_recorded_pass(
    state_dir: Path, specs: Path, no_docker: None
) -> None:
    settings = _settings(state_dir, specs)
    _daemon_state(settings)
    _save(settings, PolicyHolder(specs))
    at = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(CliError, match="Docker"):
        gather(settings, GatherOptions(require_docker=True, recent=True, at=at))


def test_the_header_names_its_policy(state_dir: Path, specs: Path) -> None:
    settings = _settings(state_dir, specs)
    _save(settings, PolicyHolder(specs))
    header = json.loads((state_dir / LAST_SNAPSHOT_FILE).read_bytes().split(b"\n")[0])
    assert header["policy"]["specs"] == str(specs)
    assert list(header["policy"]["inputs"]) == [str(specs / "lifecycle.yaml")]
    assert header["interval_s"] == 30.0


def test_each_daemon_pass_records_itself_and_ds01ctl_shows_it(
    tmp_path: Path, no_docker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop's hook: after a pass, ``ds01ctl get containers`` and ``describe container`` show that
    pass with its age, without reaching Docker; ``--live`` observes (and here cannot)."""
    from controller.cli.main import main
    from tests.fixtures import builders as b
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    clock = [datetime.now(UTC)]
    snap = b.snapshot(observed_at=clock[0], containers=[b.running("recorded-1", owner="alice")])
    controller = make_controller(tmp_path, ScriptedObserver(snap), clock, FailingExecutor())
    result = controller.run_pass()
    state = controller.settings.state_dir
    last, why = load_last_pass(state, specs=None, ds01_config=None, interval_s=30.0, now=datetime.now(UTC))
    assert why == "fresh" and isinstance(last, lastpass.LastPass)
    assert last.snapshot == snap
    # The plan's memory is not recorded (ds01ctl reads the saved memory): everything else is.
    assert last.plan == result.plan.model_copy(update={"memory": ControllerMemory()})

    flags = ["--state-dir", str(state), "--events-log", str(tmp_path / "events.jsonl"), "--env-file", ""]
    flags += ["--ledger", str(tmp_path / "ledger.json")]
    assert main(["get", "containers", "--all", *flags]) == 0
    out, err = capsys.readouterr()
    assert "recorded-1" in out
    assert "as of " in err and "--live observes now" in err
    assert main(["describe", "container", "recorded-1", *flags]) == 0
    out, err = capsys.readouterr()
    assert "recorded-1" in out and "as of " in err
    assert main(["get", "containers", "--all", "--live", *flags]) == 1
    out, err = capsys.readouterr()
    assert "recorded-1" not in out and "Docker" in err


def test_watch_names_the_pass_it_shows(
    tmp_path: Path, no_docker: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get -w`` on the daemon's last pass says which pass each screen is (it redraws per pass)."""
    import time

    from controller.cli.main import main
    from tests.fixtures import builders as b
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    clock = [datetime.now(UTC)]
    snap = b.snapshot(observed_at=clock[0], containers=[b.running("watched-1", owner="alice")])
    controller = make_controller(tmp_path, ScriptedObserver(snap), clock, FailingExecutor())
    controller.run_pass()

    def stop(_s: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", stop)
    flags = ["--state-dir", str(controller.settings.state_dir), "--env-file", ""]
    flags += ["--events-log", str(tmp_path / "events.jsonl"), "--ledger", str(tmp_path / "ledger.json")]
    assert main(["get", "containers", "-w", "--all", *flags]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("as of the controller's last pass, ")
    assert "watched-1" in out


def test_a_name_missing_from_the_last_pass_is_looked_up_live(
    tmp_path: Path, no_docker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A container created since the last pass is not "not found": ds01ctl asks the host (here
    Docker is unreachable, so it says that instead)."""
    from controller.cli.main import main
    from tests.fixtures import builders as b
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    clock = [datetime.now(UTC)]
    snap = b.snapshot(observed_at=clock[0], containers=[b.running("old-1", owner="alice")])
    controller = make_controller(tmp_path, ScriptedObserver(snap), clock, FailingExecutor())
    controller.run_pass()
    flags = ["--state-dir", str(controller.settings.state_dir), "--env-file", ""]
    flags += ["--events-log", str(tmp_path / "events.jsonl"), "--ledger", str(tmp_path / "ledger.json")]
    for argv in (["describe", "container", "new-1"], ["get", "containers", "new-1"]):
        assert main([*argv, *flags]) == 1
        _, err = capsys.readouterr()
        assert "cannot reach the Docker engine" in err and "not found" not in err, err
    assert main(["describe", "container", "old-1", *flags]) == 0


def test_watch_of_a_name_missing_from_the_last_pass_looks_it_up_live(
    tmp_path: Path, no_docker: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`get containers NAME -w` said "not found" of a container created since the last pass, which
    `get containers NAME` looks up on the host."""
    import time

    from controller.cli.main import main
    from tests.fixtures import builders as b
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    clock = [datetime.now(UTC)]
    snap = b.snapshot(observed_at=clock[0], containers=[b.running("old-1", owner="alice")])
    controller = make_controller(tmp_path, ScriptedObserver(snap), clock, FailingExecutor())
    controller.run_pass()

    def stop(_s: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", stop)
    flags = ["--state-dir", str(controller.settings.state_dir), "--env-file", ""]
    flags += ["--events-log", str(tmp_path / "events.jsonl"), "--ledger", str(tmp_path / "ledger.json")]
    assert main(["get", "containers", "new-1", "-w", *flags]) == 1
    _, err = capsys.readouterr()
    assert "cannot reach the Docker engine" in err and "not found" not in err, err
    assert main(["get", "containers", "old-1", "-w", *flags]) == 0
    out, _ = capsys.readouterr()
    assert "old-1" in out


def test_the_view_of_the_last_pass_says_what_keeps_its_actions_from_being_carried_out(
    state_dir: Path, specs: Path, no_docker: None
) -> None:
    """Read from the daemon's last pass (the common case while it runs), `get` and `describe` said
    nothing of a controller in dry-run, or of one that cannot write its record."""
    settings = _settings(state_dir, specs).model_copy(update={"dry_run": True})
    _daemon_state(settings)
    _save(settings, PolicyHolder(specs))
    (state_dir / "policy-status.json").write_text('{"record_error": "No space left on device"}')
    view = gather(settings, GatherOptions(require_docker=True, recent=True, need_policy=False))
    assert view.as_of is not None, "read from the last pass"
    assert any("the controller runs in dry-run" in n for n in view.notes), view.notes
    assert any("cannot write its record (No space left on device)" in n for n in view.notes), view.notes


def test_a_pass_that_carried_out_actions_is_not_shown(state_dir: Path, specs: Path) -> None:
    """Its snapshot is from before them, and its plan would show a stop or warning already made as
    pending: ds01ctl observes live instead."""
    settings = _settings(state_dir, specs)
    snap = w.snapshot()
    save_last_pass(settings, PolicyHolder(specs), snap, w.plan(snap), acted=2)
    last, why = _load(settings)
    assert last is None and "carried out 2 action(s)" in why
    save_last_pass(settings, PolicyHolder(specs), snap, w.plan(snap), acted=0)
    assert _load(settings)[1] == "fresh"
    # A header that does not say (written by hand, or damaged) is in doubt too.
    path = state_dir / LAST_SNAPSHOT_FILE
    header, rest = path.read_bytes().split(b"\n", 1)
    record = json.loads(header)
    for value in (None, "0", True):
        record["acted"] = value
        path.write_bytes(json.dumps(record).encode() + b"\n" + rest)
        assert _load(settings) == (None, "last pass does not say whether it acted")


def test_a_daemon_pass_that_stopped_a_container_leaves_ds01ctl_observing_live(
    tmp_path: Path, no_docker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop counts what its executor carried out: a pass that tried a stop (here it failed)
    and delivered its warning is not shown as "stop due now"; one that only planned is."""
    from controller.cli.main import main
    from tests.fixtures import builders as b
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    clock = [datetime.now(UTC)]
    over = b.running("over-runtime", owner="alice", gpus=[b.GPU0], started_at=clock[0] - timedelta(days=30))
    snap = b.snapshot(observed_at=clock[0], containers=[over], gpus=[b.gpu(0)])
    controller = make_controller(tmp_path, ScriptedObserver(snap), clock, FailingExecutor())
    result = controller.run_pass()
    assert [o.outcome.value for o in result.report.outcomes] != []
    state = controller.settings.state_dir
    last, why = load_last_pass(state, specs=None, ds01_config=None, interval_s=30.0, now=datetime.now(UTC))
    assert last is None and f"carried out {len(result.report.outcomes)} action(s)" in why
    flags = ["--state-dir", str(state), "--events-log", str(tmp_path / "events.jsonl"), "--env-file", ""]
    flags += ["--ledger", str(tmp_path / "ledger.json")]
    assert main(["get", "containers", "--all", *flags]) == 1  # observed live: no Docker here
    out, err = capsys.readouterr()
    assert "over-runtime" not in out and "Docker" in err


def test_a_pending_breaker_reset_is_planned_as_the_next_pass_not_read_from_the_last(
    state_dir: Path, specs: Path, no_docker: None
) -> None:
    """While ``breaker reset`` waits for the daemon's next pass, the views plan with the breakers
    closed, as that pass will, and say so. The last pass was planned with the breaker tripped (its
    stops held as BreakerOpen): showing it would say the stops are held when the next pass makes
    them. ds01ctl observes live instead (here: no Docker, so the live path's error)."""
    from controller.memory import Breaker
    from controller.store import BREAKER_RESET_REQUEST

    settings = _settings(state_dir, specs)
    tripped = Breaker(tripped=True, tripped_at=datetime.now(UTC), reason="5 stops in 10m")
    MemoryStore(state_dir).save(ControllerMemory().model_copy(update={"breaker": tripped}))
    _save(settings, PolicyHolder(specs))
    opts = GatherOptions(require_docker=True, recent=True, need_policy=False)
    assert gather(settings, opts).as_of is not None, "no request: the last pass is shown"
    (state_dir / BREAKER_RESET_REQUEST).write_text("requested by root\n")
    with pytest.raises(CliError, match="Docker"):
        gather(settings, opts)
