"""``ds01ctl`` commands that need no Docker engine: usage errors, events, policies, validate,
breaker, completion, the lazy start-up, and the small parsers behind the flags.

Commands run in-process through ``main(argv)``; a few run as a subprocess where the point is the
process itself (start-up imports, ``python -m controller.cli``, another user's permissions).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from controller.act.events import EventLog
from controller.cli.main import main, parse_duration, parse_when
from controller.cli.render import Style, colour_enabled, fmt_age, fmt_duration
from controller.memory import Breaker, ControllerMemory
from controller.store import MemoryStore, acquire_run_lock
from desired_state.errors import PolicyLoadError

REPO = Path(__file__).resolve().parents[2]

GOOD_SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  defaultGroup: students
  settings:
    idleTimeout: 45m
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: students
spec:
  order: 10
  members: [alice]
"""

BAD_SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  settings:
    idleTimeout: 45
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every DS01_* path under tmp_path; no variable from the caller's environment leaks in."""
    for name in list(os.environ):
        if name.startswith("DS01_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("DS01_STATE_DIR", str(state))
    monkeypatch.setenv("DS01_EVENTS_LOG", str(tmp_path / "events.jsonl"))
    monkeypatch.setenv("DS01_LEDGER", str(tmp_path / "ledger.json"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("DS01_ENV_FILE", "")  # never the host's /etc/ds01/controller.env
    return tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("ds01ctl"), lines[0]
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"


# --- usage errors -----------------------------------------------------------------------------


def test_unknown_kind_is_one_line_naming_the_kinds(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["get", "pods"], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "unknown resource kind 'pods'", "containers, gpus, processes")


def test_describe_of_an_unknown_kind(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["describe", "volume", "x"], capsys)
    assert rc == 1
    assert_one_line_error(err, "cannot describe 'volume'", "container, gpu or user")


@pytest.mark.parametrize("at", ["soon", "+2 hours", "2025-13-45", "+h"])
def test_malformed_at_is_one_line_with_the_accepted_forms(
    at: str, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(["plan", "--at", at], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "cannot read the time", "+2h")


def test_at_in_the_past_is_refused(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["plan", "--at", "2001-01-01T00:00:00Z"], capsys)
    assert rc == 1
    assert_one_line_error(err, "in the past")


def test_bad_flag_is_one_line_not_a_usage_block(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["get", "containers", "--bogus"], capsys)
    assert rc == 1
    assert_one_line_error(err, "unrecognized arguments: --bogus", "--help")


def test_bad_output_format(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["get", "gpus", "-o", "xml"], capsys)
    assert rc == 1
    assert_one_line_error(err, "invalid choice: 'xml'")


def test_bad_environment_variable_is_one_line(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DS01_DRY_RUN", "perhaps")
    rc, _, err = run(["get", "policies"], capsys)
    assert rc == 1
    assert_one_line_error(err, "DS01_DRY_RUN='perhaps'")


def test_event_flags_on_other_kinds_are_refused(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["get", "gpus", "--since", "1h"], capsys)
    assert rc == 1
    assert_one_line_error(err, "--since only apply to 'get events'")


def test_every_command_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ["get", "describe", "plan", "reconcile", "validate", "breaker", "completion"]:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out, command
        assert f"ds01ctl {command}" in out.split("examples:")[1], command
        if command not in ("validate", "completion"):  # these read no configuration
            assert "--state-dir" in out and "--events-log" in out and "--ledger" in out


# --- events -----------------------------------------------------------------------------------


def _write_events(path: Path, now: datetime) -> None:
    log = EventLog(path)
    log.write(
        "container.stop",
        user="alice",
        details={"container": "a1", "reason": "idle"},
        at=now - timedelta(hours=3),
    )
    log.write(
        "gpu.release", user="bob", details={"container": "b1", "gpu": "GPU-1"}, at=now - timedelta(minutes=50)
    )
    log.write("container.remove", user="alice", details={"container": "a2"}, at=now - timedelta(minutes=20))
    log.write(
        "controller.warning", user="carol", details={"container": "c\x1b[31m1"}, at=now - timedelta(minutes=5)
    )


def test_get_events_filters_by_kind_user_since_and_tail(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, out, _ = run(["get", "events"], capsys)
    assert rc == 0
    assert [line.split()[4] for line in out.splitlines()[1:]] == [
        "container.stop",
        "gpu.release",
        "container.remove",
        "controller.warning",
    ]
    assert "\x1b" not in out
    _, out, _ = run(["get", "events", "--kind", "container.*"], capsys)
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["container.stop", "container.remove"]
    _, out, _ = run(["get", "events", "--user", "alice", "--tail", "1"], capsys)
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["container.remove"]
    _, out, _ = run(["get", "events", "--since", "1h"], capsys)
    assert [line.split()[4] for line in out.splitlines()[1:]] == [
        "gpu.release",
        "container.remove",
        "controller.warning",
    ]
    _, out, _ = run(["get", "events", "--container", "b1", "-o", "json"], capsys)
    data = json.loads(out)
    assert data["kind"] == "EventList"
    assert [e["event_type"] for e in data["items"]] == ["gpu.release"]


def test_get_events_on_a_fresh_host_says_no_events_yet_and_names_the_file(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(["get", "events"], capsys)
    assert rc == 0 and out == ""
    assert err.startswith("No events yet (") and str(env / "events.jsonl") in err and "--events-log" in err


def test_event_details_start_with_what_happened_and_wide_shows_all_of_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_message = "stop alice-train (owner alice): idle for 1h of 1h " + "x" * 150 + " END"
    EventLog(env / "events.jsonl").write(
        "maintenance.idle_kill",
        user="alice",
        details={
            "key": "StopContainer:" + "a" * 64 + ":2026-03-02T06:00:00Z:IdleTimeout",
            "kind": "StopContainer",
            "reason": "IdleTimeout",
            "container": "alice-train",
            "message": long_message,
        },
    )
    _, out, _ = run(["get", "events"], capsys)
    header, row = out.splitlines()[:2]
    details = row[header.index("DETAILS") :]
    assert details.startswith("stop alice-train (owner alice): idle for 1h of 1h")
    assert "StopContainer:aaaa" not in out
    _, out, _ = run(["get", "events", "-o", "wide"], capsys)
    assert out.splitlines()[1].rstrip().endswith("END reason=IdleTimeout kind=StopContainer")


def test_get_events_with_a_malformed_since(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, _, err = run(["get", "events", "--since", "yesterday"], capsys)
    assert rc == 1
    assert_one_line_error(err, "cannot read the time 'yesterday'")


def test_get_events_since_a_duration_written_as_ago_lists_the_events_of_that_time(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --since=-1h was refused as "in the past: use a time after now, e.g. +1h", and --since=+1h
    # then said "No events." of a log holding three from the last hour.
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, out, _ = run(["get", "events", "--since=-1h"], capsys)
    assert rc == 0
    assert [line.split()[4] for line in out.splitlines()[1:]] == [
        "gpu.release",
        "container.remove",
        "controller.warning",
    ]


def test_get_events_since_reads_the_rotated_log_the_period_reaches_into(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The log rotates weekly: `--since 2d` the day after listed only the events of the live file.
    now = datetime.now(UTC)
    EventLog(env / "events.jsonl.1").write(
        "container.stop", user="alice", details={"container": "a1"}, at=now - timedelta(days=1)
    )
    EventLog(env / "events.jsonl.1").write(
        "container.stop", user="alice", details={"container": "a0"}, at=now - timedelta(days=3)
    )
    EventLog(env / "events.jsonl").write(
        "container.remove", user="alice", details={"container": "a1"}, at=now - timedelta(hours=1)
    )
    rc, out, _ = run(["get", "events", "--since", "2d"], capsys)
    assert rc == 0
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["container.stop", "container.remove"]
    _, out, _ = run(["get", "events", "--since", "2d", "--tail", "1"], capsys)
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["container.remove"]
    (env / "events.jsonl").unlink()  # rotated, no event since: no live file yet
    rc, out, err = run(["get", "events", "--since", "2d", "--container", "a1"], capsys)
    assert rc == 0 and [line.split()[4] for line in out.splitlines()[1:]] == ["container.stop"], err


def test_get_events_after_a_rotation_does_not_say_no_events_yet(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rotated, and nothing written since: "No events yet" of a host whose log holds last week's.
    EventLog(env / "events.jsonl.1").write(
        "container.stop", user="alice", details={"container": "a1"}, at=datetime.now(UTC) - timedelta(days=1)
    )
    rc, out, err = run(["get", "events"], capsys)
    assert rc == 0 and out == ""
    assert "No events yet" not in err
    assert "since the log was rotated" in err and "events.jsonl.1" in err and "--since" in err, err


@pytest.mark.parametrize("since", ["+1h", (datetime.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")])
def test_get_events_since_a_later_time_is_refused_not_answered_with_no_events(
    since: str, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, out, err = run(["get", "events", f"--since={since}"], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "is in the future")


# --- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["get", "events", "--sinse", "1h"], "did you mean --since?"),
        (["gte", "containers"], "did you mean 'get'?"),
        (["get", "containers", "-o", "jsn"], "did you mean 'json'?"),
    ],
)
def test_a_mistyped_flag_or_command_gets_a_did_you_mean(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], hint: str
) -> None:
    rc, out, err = run(argv, capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, hint)


GET_KINDS = ("containers", "gpus", "processes", "allocations", "policies", "events", "alerts", "users")


def test_a_mistyped_kind_gets_a_did_you_mean_and_the_list_of_every_kind(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(["get", "containrs"], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "unknown resource kind 'containrs'", "did you mean 'containers'?")
    listed = err.split("expected one of ", 1)[1].split(";", 1)[0].strip()
    assert set(listed.split(", ")) == set(GET_KINDS)
    rc, _, err = run(["get", "alrts"], capsys)
    assert rc == 1 and "did you mean 'alerts'?" in err
    rc, _, err = run(["get", "zzzz"], capsys)
    assert rc == 1 and "did you mean" not in err


def test_every_kind_get_accepts_is_in_its_help_and_its_completion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["get", "--help"])
    help_text = capsys.readouterr().out
    for kind in GET_KINDS:
        assert f"  {kind} " in help_text, kind  # the epilog describes it
    assert "|".join(GET_KINDS) in re.sub(r"\|\s+", "|", help_text)  # KIND names every one (wrapped)
    for shell in ("bash", "zsh", "fish"):
        rc, out, _ = run(["completion", shell], capsys)
        assert rc == 0 and " ".join(GET_KINDS) in out, shell


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["rn"], "did you mean 'run'?"),
        (["run", "--intervall", "30s"], "did you mean --interval?"),
        (["run", "--dryrun"], "did you mean --dry-run?"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        ([], "a command is required: run"),
    ],
)
def test_the_daemon_suggests_the_command_or_flag_meant(
    capsys: pytest.CaptureFixture[str], argv: list[str], hint: str
) -> None:
    """One line, as ds01ctl's: no usage block above it (a unit's journal shows the line that matters)."""
    from controller.main import main as daemon_main

    assert daemon_main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ds01-controller"), err
    assert hint in lines[0] and "--help')" in lines[0]


def test_a_choice_is_suggested_whether_argparse_quotes_the_choices_or_not() -> None:
    from controller.flags import SuggestingParser, did_you_mean

    parser = SuggestingParser(prog="x")
    quoted = "argument command: invalid choice: 'rn' (choose from 'run', 'status')"
    bare = "argument command: invalid choice: 'rn' (choose from run, status)"  # Python 3.14
    assert did_you_mean(parser, quoted) == did_you_mean(parser, bare) == "; did you mean 'run'?"


def test_validate_and_completion_list_only_the_flags_they_use(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("validate", "completion"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--specs" not in text and "--state-dir" not in text and "--env-file" not in text, command


def test_bad_usage_exits_1_in_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from controller.main import main as daemon_main

    assert daemon_main(["run", "--no-such-flag"]) == 1
    assert daemon_main(["run", "--interval", "soon"]) == 1
    assert main(["get", "containers", "--no-such-flag"]) == 1
    capsys.readouterr()


def test_the_daemons_help_offers_no_acting_example_to_paste() -> None:
    from controller.main import EPILOG

    for line in EPILOG.splitlines():
        if line.strip().startswith("ds01-controller run"):
            assert "--dry-run" in line, line


# --- watch -------------------------------------------------------------------------------------


def test_get_watch_prints_the_table_again_only_when_it_changes(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    specs = env / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(GOOD_SPEC)
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:  # a change between two observations
            (specs / "extra.yaml").write_text(GOOD_SPEC.split("---\n")[1].replace("students", "staff"))
        elif len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    rc, out, err = run(["get", "policies", "-w", "--specs", str(specs)], capsys)
    assert rc == 0 and len(sleeps) == 3
    assert out.count("KIND") == 2  # printed at the start and after the change, not after the no-change
    first, second = out.split("\n\n", 1)
    assert "staff" not in first and "UserGroup         staff" in second
    rc, _, err = run(["get", "policies", "-w", "-o", "json"], capsys)
    assert rc == 1 and "--watch shows tables" in err


# --- versions ----------------------------------------------------------------------------------


def test_version_of_both_commands_and_of_the_running_controller(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller import __version__
    from controller.main import main as daemon_main
    from controller.store import write_policy_status

    assert daemon_main(["--version"]) == 0
    assert capsys.readouterr().out == f"ds01-controller {__version__}\n"
    rc, out, _ = run(["version"], capsys)
    assert rc == 0 and out.splitlines()[0] == f"ds01ctl: {__version__}"
    assert out.splitlines()[1].startswith("controller: unknown")
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    write_policy_status(env / "state", now, [], now)
    _, out, _ = run(["version"], capsys)
    assert out.splitlines()[1].startswith(f"controller: {__version__} (its status of 2026-03-02T12:00:00")


# --- label selectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["a=b=c", "x in ()", "k in (a,,b)", "a b", "x notin y", "=v"])
def test_a_selector_ds01ctl_does_not_understand_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str], selector: str
) -> None:
    rc, out, err = run(["get", "containers", "--all", "-l", selector], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "bad label selector")


def test_set_based_selectors_select_as_kubectl_does() -> None:
    from controller.cli.get import parse_selector

    req = parse_selector(["ds01.user in (bob, carol),x notin (y)"])
    assert req[0].matches({"ds01.user": "bob"}) and req[0].matches({"ds01.user": "carol"})
    assert not req[0].matches({"ds01.user": "dave"}) and not req[0].matches({})
    assert req[1].matches({}) and req[1].matches({"x": "z"}) and not req[1].matches({"x": "y"})


def test_an_empty_selection_says_nothing_matched() -> None:
    from controller.cli.get import GetOptions, empty_message, parse_selector
    from tests.unit import cli_world as w

    view = w.view()
    opts = GetOptions(show_all=True, selector=parse_selector(["ds01.user in (nobody)"]))
    assert empty_message("containers", view, opts) == "No containers match the given name, owner or selector."
    assert empty_message("containers", view, GetOptions(show_all=True)) == "No containers."


# --- policies and validate --------------------------------------------------------------------


def test_get_policies_lists_each_spec_with_its_file(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = env / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(GOOD_SPEC)
    rc, out, _ = run(["get", "policies", "--specs", str(specs)], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"policy: specs {specs}"
    rows = [line.split() for line in lines[2:]]
    assert ["LifecyclePolicy", "lab", f"{specs}/lab.yaml:1"] in rows
    assert ["UserGroup", "students", f"{specs}/lab.yaml:10"] in rows
    _, out, _ = run(["get", "policies", "--specs", str(specs), "-o", "yaml"], capsys)
    data = yaml.safe_load(out)
    assert data["kind"] == "PolicyList" and data["policy"]["error"] is None
    assert {(i["kind"], i["name"]) for i in data["items"]} == {
        ("LifecyclePolicy", "lab"),
        ("UserGroup", "students"),
    }


def test_get_policies_reports_a_failed_load(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = env / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(BAD_SPEC)
    rc, out, err = run(["get", "policies", "--specs", str(specs)], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, f"the policy (specs {specs}) does not load: {specs}/lab.yaml:7")


@pytest.mark.parametrize(
    "command", [["get", "policies"], ["get", "policies", "-o", "json"], ["describe", "user", "x"]]
)
def test_a_policy_that_does_not_load_is_an_error_not_the_builtin_default(
    env: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    rc, out, err = run([*command, "--specs", str(env / "nonexistent")], capsys)
    assert rc == 1 and out == ""
    assert "built-in default" not in err
    assert_one_line_error(err, "does not load", "specs directory does not exist", "refuses to start")


def test_validate_good_and_bad(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = env / "good.yaml", env / "bad.yaml"
    good.write_text(GOOD_SPEC)
    bad.write_text(BAD_SPEC)
    rc, out, _ = run(["validate", str(good)], capsys)
    assert rc == 0 and out.startswith("valid:")
    rc, out, err = run(["validate", str(bad)], capsys)
    assert rc == 1
    assert f"{bad}:7" in out and "idleTimeout" in out
    assert "1 problem found" in err
    rc, out, _ = run(["validate", str(env / "missing.yaml")], capsys)
    assert rc == 1 and "no such file or directory" in out


def test_validate_names_a_tab_in_the_indentation(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tabbed = env / "tabbed.yaml"
    tabbed.write_text(GOOD_SPEC.rstrip("\n") + "\n\tfoo: 1\n")
    line = GOOD_SPEC.count("\n") + 1
    rc, out, _ = run(["validate", str(tabbed)], capsys)
    assert rc == 1
    assert f"{tabbed}:{line}: " in out
    assert "a tab in the indentation; YAML indents with spaces" in out
    assert "cannot start any token" not in out


# --- breaker ----------------------------------------------------------------------------------


def test_breaker_status_closed_and_tripped(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["breaker", "status"], capsys)
    assert rc == 0 and out.startswith("breaker: closed")
    tripped_at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    MemoryStore(env / "state").save(
        ControllerMemory(breaker=Breaker(tripped=True, tripped_at=tripped_at, reason="7 of 8 would stop"))
    )
    rc, out, _ = run(["breaker", "status", "--utc"], capsys)
    assert rc == 0
    assert out.splitlines()[0] == "breaker: TRIPPED at 2026-03-01 10:00:00 UTC: 7 of 8 would stop"
    _, out, _ = run(["breaker", "status", "-o", "json"], capsys)
    assert json.loads(out) == {
        "tripped": True,
        "tripped_at": "2026-03-01T10:00:00Z",
        "reason": "7 of 8 would stop",
        "reset_requested": False,
        "release_breaker": {"tripped": False, "tripped_at": None, "reason": ""},
    }


def test_breaker_reset_without_a_daemon_clears_the_store(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = MemoryStore(env / "state")
    store.save(ControllerMemory(breaker=Breaker(tripped=True, reason="too many")))
    rc, out, _ = run(["breaker", "reset"], capsys)
    assert rc == 0 and "breaker reset (was tripped: too many)" in out
    assert store.load().breaker == Breaker()
    events = [json.loads(line) for line in (env / "events.jsonl").read_text().splitlines()]
    assert [e["event_type"] for e in events] == ["controller.breaker_reset"]
    assert not (env / "state" / "breaker-reset").exists()


def test_breaker_reset_without_a_daemon_or_a_memory_file_closes_the_breaker_the_log_restores(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The memory file is gone (a start killed before it saved one, a state directory restored
    # without it): the daemon will restore the open breaker from the event log at its start, so
    # the reset must close that one, not report a closed breaker and change nothing.
    from controller.act.salvage import load_state

    log = EventLog(env / "events.jsonl")
    log.write("controller.breaker_tripped", user=None, details={"message": "would stop 9 of 10"})
    store = MemoryStore(env / "state")
    assert not store.path.exists()
    rc, out, _ = run(["breaker", "reset"], capsys)
    assert rc == 0 and "breaker reset (was tripped: " in out and "would stop 9 of 10" in out
    at_start = load_state(store, log, datetime.now(UTC))
    assert at_start.breakers_tripped == [], "the daemon starts with the breaker the admin closed"


def test_breaker_reset_while_the_daemon_runs_leaves_a_request(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = MemoryStore(env / "state")
    store.save(ControllerMemory(breaker=Breaker(tripped=True, reason="too many")))
    with acquire_run_lock(env / "state"):
        rc, out, _ = run(["breaker", "reset"], capsys)
    assert rc == 0
    assert f"pid {os.getpid()}" in out and "next pass" in out
    assert (env / "state" / "breaker-reset").is_file()
    assert store.load().breaker.tripped, "the daemon, not ds01ctl, clears it"
    _, out, _ = run(["breaker", "status"], capsys)
    assert "a reset request is waiting" in out


def test_breaker_reset_while_the_daemon_runs_with_nothing_tripped_leaves_no_request(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "reset requested: the controller clears the breaker" of a closed breaker, and the
    request it left would clear one that trips before the daemon's next pass, which no admin saw."""
    MemoryStore(env / "state").save(ControllerMemory())
    with acquire_run_lock(env / "state"):
        rc, out, _ = run(["breaker", "reset"], capsys)
    assert rc == 0
    assert out.startswith("breaker: closed; nothing to reset"), out
    assert not (env / "state" / "breaker-reset").exists()


def test_reconcile_refuses_while_the_daemon_holds_the_lock(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with acquire_run_lock(env / "state"):
        rc, out, err = run(["reconcile", "--dry-run"], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "the controller is running", f"pid {os.getpid()}", "ds01ctl plan")


def test_breaker_status_in_a_state_directory_another_user_owns(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = env / "state"
    os.chown(state, 4242, 4242)
    rc, out, err = run(["breaker", "status"], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "cannot read the breaker", "owned by uid 4242")


# --- completion -------------------------------------------------------------------------------


def test_bash_completion_is_valid_bash_naming_every_command_and_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = run(["completion", "bash"], capsys)
    assert rc == 0
    assert out.rstrip().endswith("complete -F _ds01ctl ds01ctl")
    for word in ["get", "describe", "plan", "reconcile", "validate", "breaker", "--at", "--policy", "--tail"]:
        assert word in out
    bash = shutil.which("bash")
    assert bash is not None
    check = subprocess.run([bash, "-n"], input=out, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    # Completing `ds01ctl get co<TAB>` offers containers.
    probe = out + '\nCOMP_WORDS=(ds01ctl get co); COMP_CWORD=2; _ds01ctl; echo "${COMPREPLY[@]}"\n'
    done = subprocess.run([bash], input=probe, text=True, capture_output=True)
    assert done.stdout.split() == ["containers"]


def _bash_complete(script: str, words: list[str]) -> list[str]:
    bash = shutil.which("bash")
    assert bash is not None
    line = " ".join(shlex.quote(w) for w in words)
    probe = (
        script + f'\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _ds01ctl; echo "${{COMPREPLY[@]}}"\n'
    )
    return subprocess.run([bash], input=probe, text=True, capture_output=True).stdout.split()


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        ("report", ["csv", "json", "table"]),
        ("plan", ["json", "table", "wide", "yaml"]),
        ("reconcile", ["json", "table", "yaml"]),
        ("get", ["json", "name", "table", "wide", "yaml"]),
    ],
)
def test_bash_completion_of_output_offers_the_formats_that_command_takes(
    command: str, choices: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # `report -o <TAB>` offered wide, yaml and name, which report refuses, and never csv.
    _, script, _ = run(["completion", "bash"], capsys)
    assert sorted(_bash_complete(script, ["ds01ctl", command, "-o", ""])) == choices
    assert sorted(_bash_complete(script, ["ds01ctl", command, "--output", ""])) == choices


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (["ds01ctl", "get", "-o", "wide", "co"], ["containers"]),
        (["ds01ctl", "get", "--owner", "alice", "co"], ["containers"]),
        (["ds01ctl", "get", "--tail", "5", "--kind", "gpu.*", "ev"], ["events"]),
        (["ds01ctl", "--help"], ["--help"]),
    ],
)
def test_bash_completion_does_not_take_a_flags_value_for_the_kind(
    words: list[str], offered: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # `get -o wide co<TAB>` took "wide" for the kind, so no kind was offered.
    _, script, _ = run(["completion", "bash"], capsys)
    assert _bash_complete(script, words) == offered


def test_fish_completion_of_output_offers_the_formats_that_command_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(["completion", "fish"], capsys)
    report = [ln for ln in out.splitlines() if "subcommand_from report' -l output" in ln]
    assert len(report) == 1 and "-xa 'table json csv'" in report[0], report


def test_zsh_and_fish_completion_are_generated_from_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["completion", "zsh"], capsys)
    assert rc == 0 and "bashcompinit" in out and out.rstrip().endswith("complete -F _ds01ctl ds01ctl")
    bash = shutil.which("bash")
    assert bash is not None
    body = out.split("bashcompinit\n", 1)[1]
    assert subprocess.run([bash, "-n"], input=body, text=True, capture_output=True).returncode == 0
    rc, out, _ = run(["completion", "fish"], capsys)
    assert rc == 0
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    assert all(ln.startswith("complete -c ds01ctl ") for ln in lines)
    assert "complete -c ds01ctl -n __fish_use_subcommand -a explain" in out
    assert "complete -c ds01ctl -n '__fish_seen_subcommand_from get' -l since" in out


# --- process-level behaviour ------------------------------------------------------------------


def test_module_entry_point_and_lazy_imports() -> None:
    """`python -m controller.cli` works, and importing the CLI loads no adapter or pydantic."""
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "--version"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("ds01ctl ")
    probe = (
        "import sys, controller.cli.main as m\n"
        "names = ('docker', 'pynvml', 'pydantic', 'psutil', 'loguru', 'yaml')\n"
        "heavy = [n for n in names if n in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_another_user_without_access_to_the_state_directory(tmp_path: Path) -> None:
    """A real permission error (not root): one line naming the directory, and how to get timers."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    env = {"PATH": os.environ["PATH"], "DS01_STATE_DIR": str(state), "PYTHONPATH": str(REPO), "HOME": "/"}
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(
        [*as_nobody, sys.executable, "-m", "controller.cli", "breaker", "status"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out
    assert_one_line_error(out.stderr, "cannot read the breaker", "permission denied")


def test_version_for_another_user_without_access_says_the_status_is_unreadable(tmp_path: Path) -> None:
    """The controller's status is there but unreadable: its version is unknown to this user, not a
    sign that no controller ran."""
    from controller.store import write_policy_status

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    write_policy_status(state, now, [], now)
    env = {"PATH": os.environ["PATH"], "DS01_STATE_DIR": str(state), "PYTHONPATH": str(REPO), "HOME": "/"}
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(
        [*as_nobody, sys.executable, "-m", "controller.cli", "version", "--env-file", ""],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out
    line = out.stdout.splitlines()[1]
    assert line.startswith("controller: unknown (cannot read "), line
    assert "permission denied" in line and "no controller ran" not in line


# --- small parsers and formatters -------------------------------------------------------------


def test_durations_and_times() -> None:
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400
    assert parse_duration("90s") == 90
    assert parse_duration("2 hours") is None
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert parse_when("+2h", now) == now + timedelta(hours=2)
    assert parse_when("2026-03-02T18:30:00Z", now) == datetime(2026, 3, 2, 18, 30, tzinfo=UTC)
    assert parse_when("2026-03-02T18:30:00+02:00", now) == datetime(2026, 3, 2, 16, 30, tzinfo=UTC)


def test_at_takes_a_clock_time_and_a_date_with_a_space(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 07:00 in New York
        assert parse_when("17:30", now) == datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
        assert parse_when("2026-03-02 18:30", now) == datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("at", ["-1h", "-30m"])
def test_at_in_the_past_is_refused_with_that_word(
    env: Path, capsys: pytest.CaptureFixture[str], at: str
) -> None:
    rc, out, err = run(["plan", "--at", at], capsys)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "in the past")


def test_interval_takes_the_projects_duration_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.main import build_parser as daemon_parser
    from controller.settings import SettingsError, settings_from

    args = daemon_parser().parse_args(["run", "--interval", "1m30s"])
    assert settings_from(args, {}).interval_s == 90
    args = daemon_parser().parse_args(["run"])
    assert settings_from(args, {"DS01_INTERVAL": "30s"}).interval_s == 30
    assert settings_from(args, {"DS01_INTERVAL": "30"}).interval_s == 30
    with pytest.raises(SettingsError) as exc:
        settings_from(args, {"DS01_INTERVAL": "soon"})
    assert "could not convert" not in str(exc.value) and "write e.g. 30s" in str(exc.value)


@pytest.mark.parametrize(
    ("variable", "meant"),
    [("DS01_DRYRUN", "DS01_DRY_RUN"), ("DS01_SPEC", "DS01_SPECS"), ("DS01_DS01CONFIG", "DS01_DS01_CONFIG")],
)
def test_a_misspelt_setting_is_an_error_not_ignored(variable: str, meant: str) -> None:
    """Ignored, DS01_DRYRUN=1 let the daemon act, and DS01_SPEC ran the built-in default policy."""
    from controller.main import build_parser as daemon_parser
    from controller.settings import SettingsError, settings_from

    args = daemon_parser().parse_args(["run"])
    with pytest.raises(SettingsError, match=f"{variable} is not a setting: did you mean {meant}"):
        settings_from(args, {variable: "1"})
    # Other programs' DS01_* variables (the setup script's, DS01's own) are not ours to judge.
    assert not settings_from(args, {"DS01_SETUP_TEST": "1", "DS01_USER": "alice"}).dry_run


def test_age_and_duration_formats() -> None:
    assert [fmt_age(s) for s in (0, 59, 60, 3599, 3600, 47 * 3600, 48 * 3600, 10 * 86400)] == [
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "47h",
        "2d",
        "10d",
    ]
    assert fmt_age(None) == "-"
    assert [fmt_duration(s) for s in (3600, 5400, 45, 172800, 0)] == ["1h", "1h30m", "45s", "2d", "0s"]
    assert fmt_duration(None) == "never"


class _Tty:
    def isatty(self) -> bool:
        return True


class _Pipe:
    def isatty(self) -> bool:
        return False


def test_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    assert colour_enabled(_Tty(), {}) is True  # type: ignore[arg-type]
    assert colour_enabled(_Pipe(), {}) is False  # type: ignore[arg-type]
    assert colour_enabled(_Tty(), {"NO_COLOR": "1"}) is False  # type: ignore[arg-type]
    assert Style(True)("x", "red") == "\x1b[31mx\x1b[0m"
    assert Style(False)("x", "red") == "x"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "list containers: ('Connection aborted.', PermissionError(13, 'Permission denied'))",
            "permission denied (are you in the docker group?)",
        ),
        (
            "list containers: ('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))",
            "no such socket (is dockerd running? check DOCKER_HOST)",
        ),
        (
            "inspect 0123: ReadTimeout: Read timed out. (read timeout=10.0); 7 not inspected",
            "did not answer in time",
        ),
        (
            "list containers: engine error 500 (boom); more",
            "list containers: engine error 500 (boom) (is dockerd",
        ),
    ],
)
def test_docker_errors_name_the_engine_and_the_fix(
    error: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.cli.gather import docker_error
    from controller.snapshot import Domain, DomainHealth, Snapshot

    monkeypatch.setenv("DOCKER_HOST", "unix:///run/docker.sock")
    snap = Snapshot(
        observed_at=datetime.now(UTC), health=(DomainHealth(domain=Domain.DOCKER, ok=False, error=error),)
    )
    message = docker_error(snap)
    assert message is not None
    assert message.startswith("cannot reach the Docker engine at unix:///run/docker.sock: ")
    assert expected in message and "\n" not in message


def test_release_breaker_status_and_reset_close_both(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = MemoryStore(env / "state")
    tripped_at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    store.save(
        ControllerMemory(
            release_breaker=Breaker(tripped=True, tripped_at=tripped_at, reason="40 of 40 rows would go")
        )
    )
    rc, out, _ = run(["breaker", "status", "--utc"], capsys)
    assert rc == 0 and out.startswith("breaker: closed")
    assert "release breaker: TRIPPED at 2026-03-01 10:00:00 UTC: 40 of 40 rows would go" in out
    _, out, _ = run(["breaker", "status", "-o", "json"], capsys)
    assert json.loads(out)["release_breaker"]["tripped"] is True
    rc, out, _ = run(["breaker", "reset"], capsys)
    assert rc == 0 and "release breaker reset (was tripped: 40 of 40 rows would go)" in out
    assert store.load().release_breaker == Breaker() and store.load().breaker == Breaker()
    events = [json.loads(line) for line in (env / "events.jsonl").read_text().splitlines()]
    assert [(e["event_type"], e["details"]["release_was"]) for e in events] == [
        ("controller.breaker_reset", "40 of 40 rows would go")
    ]


def test_validate_with_ds01_config_checks_the_specs_layered_over_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ds01ctl validate --ds01-config DIR SPECS` gives the daemon's answer for that combination."""
    ds01 = Path(__file__).parent.parent / "data" / "ds01"
    specs = env / "specs"
    specs.mkdir()
    (specs / "site.yaml").write_text(
        "apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: site}\n"
        "spec:\n  defaultGroup: researcher\n  trustLabels: false\n  settings: {warnLead: 2m}\n"
    )
    # alone, the specs name a group they do not define; over DS01's file, the group is DS01's
    rc, out, _ = run(["validate", str(specs)], capsys)
    assert rc == 1 and "defaultGroup 'researcher' names no UserGroup" in out
    rc, out, _ = run(["validate", "--ds01-config", str(ds01), str(specs)], capsys)
    assert rc == 0 and out.startswith(f"valid: {ds01}, {specs}")
    (specs / "site.yaml").write_text(
        "apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: site}\n"
        "spec:\n  defaultGroup: nobody\n"
    )
    rc, out, _ = run(["validate", "--ds01-config", str(ds01), str(specs)], capsys)
    assert rc == 1 and f"{specs}/site.yaml:5" in out and "defaultGroup 'nobody'" in out


def test_validate_of_the_ds01_config_directory_named_otherwise_checks_it_once(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DS01_DS01_CONFIG names the directory absolutely, `validate` relatively (or through a link):
    it was layered over itself, every spec in it "a duplicate", a valid config refused."""
    data = Path(__file__).parent.parent / "data"
    monkeypatch.setenv("DS01_DS01_CONFIG", str(data / "ds01"))
    monkeypatch.chdir(data)
    (env / "config").symlink_to(data / "ds01")
    for named in ("ds01", "./ds01/", str(env / "config")):
        rc, out, _ = run(["validate", named], capsys)
        assert rc == 0 and "duplicate" not in out, out
        assert out.startswith("valid: "), out
        rc, out, _ = run(["validate", "--ds01-config", str(data / "ds01"), named], capsys)
        assert rc == 0 and "duplicate" not in out, out


@pytest.mark.parametrize("gone", ["missing", "dangling link", "directory"])
def test_validate_of_a_ds01_config_without_its_resource_limits_says_what_the_daemon_says(
    env: Path, capsys: pytest.CaptureFixture[str], gone: str
) -> None:
    """With resource-limits.yaml gone (or a link to nothing, or a directory) DS01's directory was
    read as a specs directory: validate told the admin to add `kind:` to DS01's user-overrides.yaml
    (which DS01's own tools would then fail to read), and for a missing file never named it, while
    the daemon refuses to start on exactly that file."""
    from desired_state.load import load_policy

    ds01 = env / "ds01"
    shutil.copytree(Path(__file__).parent.parent / "data" / "ds01", ds01)
    specs = env / "specs"
    specs.mkdir()
    (specs / "site.yaml").write_text(
        "apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: site}\n"
        "spec:\n  settings: {warnLead: 2m}\n"
    )
    limits = ds01 / "resource-limits.yaml"
    limits.unlink()
    if gone == "dangling link":
        limits.symlink_to(env / "elsewhere.yaml")
    elif gone == "directory":
        limits.mkdir()
    checks = [(["--ds01-config", str(ds01), str(specs)], (specs, ds01))]
    if gone != "missing":  # named alone, a directory without the file could be a specs directory
        checks.append(([str(ds01)], (None, ds01)))
    for argv, (specs_dir, ds01_dir) in checks:
        with pytest.raises(PolicyLoadError) as daemon:
            load_policy(specs_dir, ds01_dir)
        rc, out, _ = run(["validate", *argv], capsys)
        assert rc == 1 and out.splitlines() == [str(e) for e in daemon.value.errors], argv
        assert str(limits) in out and "kind" not in out


def test_every_gpu_state_get_shows_is_explained_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``unknown`` (Docker down, or no holder and an unlisted process table) was shown in the STATE
    column and explained nowhere in ``ds01ctl get --help``."""
    import inspect

    from controller.cli.get import gpu_state

    states = set(re.findall(r'return "([a-z-]+)"', inspect.getsource(gpu_state)))
    assert states == {
        "free",
        "held",
        "paused-held",
        "restarting-held",
        "idle-held",
        "dirty",
        "unavailable",
        "unknown",
    }
    with pytest.raises(SystemExit):
        main(["get", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    explained = help_text.split("STATE: ", 1)[1].split(" processes ", 1)[0]
    for state in states:
        assert f"{state} (" in explained or f"{state}, " in explained, state


def test_get_events_container_is_that_container_not_every_name_it_begins(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --container NAME|ID-PREFIX: "job" listed the events of "job-2" and "jobs" too.
    now = datetime.now(UTC)
    log = EventLog(env / "events.jsonl")
    for name, cid in (("job", "a1" * 32), ("job-2", "b2" * 32), ("jobs", "c3" * 32)):
        log.write("container.stop", user="alice", details={"container": name, "container_id": cid}, at=now)
    for wanted in ("job", "a1a1a1a1a1a1", "a1" * 32):
        _, out, _ = run(["get", "events", "--container", wanted, "-o", "json"], capsys)
        assert [e["details"]["container"] for e in json.loads(out)["items"]] == ["job"], wanted


def test_get_events_container_named_like_an_id_prefix_is_that_container_not_the_ids_it_begins(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A container named "cafe": --container cafe listed the events of every container whose id
    # begins with "cafe" too, as this one's. A name wins over an id prefix, as in Docker.
    now = datetime.now(UTC)
    log = EventLog(env / "events.jsonl")
    for name, cid in (("cafe", "1f" * 32), ("train", "cafe" + "9" * 60), ("web", "cafe" + "8" * 60)):
        log.write("container.stop", user="alice", details={"container": name, "container_id": cid}, at=now)
    _, out, _ = run(["get", "events", "--container", "cafe", "-o", "json"], capsys)
    assert [e["details"]["container"] for e in json.loads(out)["items"]] == ["cafe"]
    _, out, _ = run(["get", "events", "cafe"], capsys)
    assert [line.split()[6] for line in out.splitlines()[1:]] == ["cafe"], out
    # No container of that name: the id prefix names containers, as before.
    _, out, _ = run(["get", "events", "--container", "cafe9", "-o", "json"], capsys)
    assert [e["details"]["container"] for e in json.loads(out)["items"]] == ["train"]
    _, out, _ = run(["get", "events", "--container", "caf", "-o", "json"], capsys)
    assert [e["details"]["container"] for e in json.loads(out)["items"]] == ["train", "web"]


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "users", "-l", "team=a"],
        ["get", "allocations", "-l", "team=a"],
        ["get", "policies", "-l", "team=a"],
        ["get", "policies", "--owner", "alice"],
        ["get", "alerts", "--user", "alice"],
    ],
)
def test_a_filter_a_kind_does_not_take_is_refused_not_ignored(
    argv: list[str], env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # These kinds took -l (and get policies --owner) and listed everything, as if it matched.
    rc, out, err = run(argv, capsys)
    assert rc == 1 and out == "", out
    assert_one_line_error(err, "applies to")


def test_get_events_since_a_duration_ago_written_apart_from_the_flag(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "--since -1h" was argparse's "expected one argument": -1h read as a flag.
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, out, err = run(["get", "events", "--since", "-1h"], capsys)
    assert rc == 0, err
    assert [line.split()[4] for line in out.splitlines()[1:]] == [
        "gpu.release",
        "container.remove",
        "controller.warning",
    ]
    rc, out, err = run(["get", "events", "--sin", "-1h"], capsys)  # argparse's abbreviation of it
    assert rc == 0 and len(out.splitlines()) == 4, err
    rc, _, err = run(["get", "events", "--since", "--tail", "1"], capsys)  # the next flag is no value
    assert rc == 1 and "--since: expected one argument" in err


def test_get_events_with_two_different_users_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --owner and --user are one filter for events: one of the two was dropped without a word.
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, _, err = run(["get", "events", "--owner", "alice", "--user", "bob"], capsys)
    assert rc == 1
    assert_one_line_error(err, "--owner alice and --user bob name two users")
    rc, out, _ = run(["get", "events", "--owner", "alice", "--user", "alice"], capsys)
    assert rc == 0 and {line.split()[5] for line in out.splitlines()[1:]} == {"alice"}


def test_ds01_detection_events_name_their_container_by_name_and_id(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DS01's detect-workloads writes `name` and `container_id`, no `container`: --container missed
    # them and the CONTAINER column said "-". A `name` with no container id is not a container's.
    now = datetime.now(UTC)
    log = EventLog(env / "events.jsonl")
    log.write(
        "detection.container_discovered",
        user="alice",
        details={"source": "detect-workloads", "container_id": "ab" * 32, "name": "alice-train"},
        at=now - timedelta(minutes=3),
    )
    log.write("policy.reloaded", user=None, details={"name": "alice-train"}, at=now - timedelta(minutes=2))
    rc, out, err = run(["get", "events", "--container", "alice-train"], capsys)
    assert rc == 0, err
    rows = out.splitlines()[1:]
    assert [row.split()[4] for row in rows] == ["detection.container_discovered"]
    assert rows[0].split()[6] == "alice-train"  # AGE, date, time, zone, TYPE, USER, CONTAINER
    rc, out, _ = run(["get", "events"], capsys)
    assert [row.split()[6] for row in out.splitlines()[1:]] == ["alice-train", "-"]


def test_get_events_shows_an_event_timestamped_after_now_as_ahead_not_0s(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The wall clock stepped back after an event was written: AGE said "0s", as if it had just happened.
    now = datetime.now(UTC)
    log = EventLog(env / "events.jsonl")
    log.write("controller.warning", user="alice", details={"container": "a"}, at=now - timedelta(hours=1))
    log.write(
        "controller.stop", user="alice", details={"container": "a"}, at=now + timedelta(minutes=5, seconds=30)
    )
    rc, out, err = run(["get", "events"], capsys)
    assert rc == 0, err
    rows = out.splitlines()[1:]
    assert rows[0].startswith("1h "), rows
    assert rows[1].startswith("in 5m "), rows


def test_get_events_with_a_malformed_since_suggests_times_it_takes(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The hint was plan --at's ("use +2h, +1h30m, ..."): --since +2h is refused as in the future.
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, _, err = run(["get", "events", "--since", "yesterday"], capsys)
    assert rc == 1
    assert_one_line_error(err, "cannot read the time 'yesterday'", "a duration ago (1h, 30m, 2d)")
    assert "+2h" not in err
    rc, _, err = run(["get", "events", "--since", "2h"], capsys)  # what it suggests is taken
    assert rc == 0, err


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_get_events_warns_of_an_event_log_another_user_owns(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its lines may be anyone's: the warning names the file, its owner and the fix.
    _write_events(env / "events.jsonl", datetime.now(UTC))
    rc, _, err = run(["get", "events"], capsys)
    assert rc == 0 and "warning" not in err
    os.chown(env / "events.jsonl", 1000, 1000)
    rc, out, err = run(["get", "events"], capsys)
    assert rc == 0 and "container.remove" in out
    assert f"warning: event log {env / 'events.jsonl'} is owned by uid 1000" in err
    assert f"chown root:root {env / 'events.jsonl'}" in err


def _inventory(state: Path, **ids: str) -> None:
    """The daemon's workload inventory listing these containers (name=full id), written as its pass
    writes it."""
    from controller.act.inventory import write_inventory
    from tests.fixtures import builders as b

    containers = [b.running(name, id=cid) for name, cid in ids.items()]
    write_inventory(b.snapshot(containers=containers), state / "workload-inventory.json")


def test_get_events_container_after_a_docker_rename_lists_those_under_its_old_name(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `docker rename alice-old alice-train`: get events --container alice-train missed every event
    # logged before, under the old name with the container's id; describe found them by the id.
    now = datetime.now(UTC)
    cid = "ab" * 32
    log = EventLog(env / "events.jsonl")
    # A removed container once named alice-train: listed by its name, as before.
    log.write(
        "controller.remove",
        user="alice",
        details={"container": "alice-train", "container_id": "ef" * 32},
        at=now - timedelta(hours=4),
    )
    log.write(
        "controller.warning",
        user="alice",
        details={"container": "alice-old", "container_id": cid[:12]},
        at=now - timedelta(hours=3),
    )
    log.write(
        "detection.container_discovered",
        user="alice",
        details={"container_id": cid, "name": "alice-old"},
        at=now - timedelta(hours=2),
    )
    # Another container that was named alice-old: not this one's.
    log.write(
        "controller.stop", user="bob", details={"container": "alice-old", "container_id": "cd" * 32}, at=now
    )
    log.write("controller.warning", user="alice", details={"container": "alice-train"}, at=now)
    _inventory(env / "state", **{"alice-train": cid})
    rc, out, err = run(["get", "events", "--container", "alice-train", "-o", "json"], capsys)
    assert rc == 0, err
    assert [(e["event_type"], e["details"].get("container_id")) for e in json.loads(out)["items"]] == [
        ("controller.remove", "ef" * 32),
        ("controller.warning", cid[:12]),
        ("detection.container_discovered", cid),
        ("controller.warning", None),
    ]
    _, out, _ = run(["get", "events", "alice-train"], capsys)
    assert len(out.splitlines()) == 5, out
    # --since reads the rotations the same way.
    (env / "events.jsonl").rename(env / "events.jsonl.1")
    _, out, _ = run(["get", "events", "--container", "alice-train", "--since", "1d", "-o", "json"], capsys)
    assert len(json.loads(out)["items"]) == 4, out


def test_get_events_container_unknown_to_the_daemon_is_still_found_by_its_name(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    EventLog(env / "events.jsonl").write(
        "controller.warning", user="alice", details={"container": "gone", "container_id": "ab" * 32}, at=now
    )
    _inventory(env / "state", web="cd" * 32)  # gone is not listed: removed since
    rc, out, err = run(["get", "events", "--container", "gone", "-o", "json"], capsys)
    assert rc == 0 and len(json.loads(out)["items"]) == 1 and err == "", err


def test_an_event_that_names_its_container_by_id_only_shows_the_id_not_none(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A GPU process in another runtime's container is announced with that container's id and no
    # name: CONTAINER said "-" (no container) and the id was left out of DETAILS, -o wide too,
    # while --container with a prefix of that id listed the event.
    cid = "9f" * 32
    EventLog(env / "events.jsonl").write(
        "detection.foreign_gpu_process_discovered",
        user="root",
        details={"pid": 4242, "cmdline": "python serve.py", "cgroup": "/kubepods/x", "container_id": cid},
        at=datetime.now(UTC),
    )
    for argv in (
        ["get", "events"],
        ["get", "events", "-o", "wide"],
        ["get", "events", "--container", cid[:8]],
    ):
        rc, out, err = run(argv, capsys)
        assert rc == 0, err
        row = out.splitlines()[1].split()
        assert row[6] == cid[:12], (argv, out)  # AGE, date, time, zone, TYPE, USER, CONTAINER


def test_get_events_container_by_its_full_id_lists_the_events_that_record_its_short_id(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The detection.* events record DS01's 12-character id, the controller's actions the full one:
    # --container with the full id (as docker ps --no-trunc prints it) missed the first.
    now = datetime.now(UTC)
    cid = "ab" * 32
    log = EventLog(env / "events.jsonl")
    log.write(
        "detection.container_discovered",
        user="alice",
        details={"container_id": cid[:12], "name": "train"},
        at=now - timedelta(hours=1),
    )
    log.write("controller.warning", user="alice", details={"container": "train", "container_id": cid}, at=now)
    # Another container whose short id is this one's prefix only in part: not its events.
    log.write(
        "detection.container_discovered",
        user="bob",
        details={"container_id": "abababab0000", "name": "web"},
        at=now,
    )
    for wanted, since in (
        (cid, []),
        (cid[:20], []),
        (cid[:12], []),
        (cid, ["--since", "2h"]),
        (cid, ["--since", "2h"]),
    ):
        rc, out, err = run(["get", "events", "--container", wanted, *since, "-o", "json"], capsys)
        assert rc == 0, err
        assert [e["event_type"] for e in json.loads(out)["items"]] == [
            "detection.container_discovered",
            "controller.warning",
        ], wanted
        if since and (env / "events.jsonl").exists():
            (env / "events.jsonl").rename(env / "events.jsonl.1")  # next: read from the rotation


def test_get_events_container_with_the_inventory_unreadable_says_earlier_names_are_not_searched(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The inventory is the daemon's, mode 0600: read by another user (or damaged) it cannot tell the
    # container's id, and the events under a name before a docker rename were left out without a word.
    EventLog(env / "events.jsonl").write(
        "controller.warning", user="alice", details={"container": "train"}, at=datetime.now(UTC)
    )
    inventory = env / "state" / "workload-inventory.json"
    inventory.write_text("{not json")
    rc, out, err = run(["get", "events", "--container", "train"], capsys)
    assert rc == 0 and len(out.splitlines()) == 2, err
    assert "workload-inventory.json" in err and "docker rename" in err and err.count("\n") == 1, err
    inventory.unlink()
    inventory.mkdir()  # unreadable as a file, whoever reads it
    rc, out, err = run(["get", "events", "--container", "train"], capsys)
    assert rc == 0 and len(out.splitlines()) == 2, err
    assert "workload-inventory.json" in err and "docker rename" in err and err.count("\n") == 1, err
    # Not asked about a container, or the daemon never wrote one: nothing to say.
    rc, _, err = run(["get", "events"], capsys)
    assert rc == 0 and err == "", err
    (env / "state" / "workload-inventory.json").rmdir()
    rc, _, err = run(["get", "events", "--container", "train"], capsys)
    assert rc == 0 and err == "", err
