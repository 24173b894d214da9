"""``ds01ctl`` looks at the daemon's policy: it reads the unit's environment file, and says so when
the policy the running daemon recorded in ``policy-status.json`` is not the one it loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.envfile import parse_env_file, read_env_file
from controller.settings import Settings
from controller.store import POLICY_STATUS_FILE
from controller.wiring import build_controller

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "crd_like_specs" / "examples"

SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  defaultGroup: students
  settings:
    idleTimeout: {idle}
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: students
spec:
  order: 10
  members: [alice]
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("DS01_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


def _specs(root: Path, name: str, idle: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "lab.yaml").write_text(SPEC.format(idle=idle))
    return d


def test_env_file_is_read_with_systemd_syntax() -> None:
    text = (
        "# a comment\n; another\n\n"
        "DS01_SPECS=/etc/ds01/specs\n"
        'DS01_CONTROLLER_ARGS="--dry-run --state-dir /srv/state"\n'
        "DS01_LEDGER='/var/lib/ds01/my ledger.json'\n"
        "  DS01_EVENTS_LOG = /var/log/ds01/events.jsonl  \n"
        "export DS01_DS01_CONFIG=/ignored\n"
        "1BAD=x\n"
        'DS01_X="a \\"quoted\\" \\\\ value"\n'
        "DS01_LONG=one\\\n  two\n"
    )
    assert parse_env_file(text) == {
        "DS01_SPECS": "/etc/ds01/specs",
        "DS01_CONTROLLER_ARGS": "--dry-run --state-dir /srv/state",
        "DS01_LEDGER": "/var/lib/ds01/my ledger.json",
        "DS01_EVENTS_LOG": "/var/log/ds01/events.jsonl",
        "DS01_X": 'a "quoted" \\ value',
        "DS01_LONG": "onetwo",
    }


def test_env_file_flags_in_controller_args_win_and_only_the_paths_and_dry_run_are_taken(
    tmp_path: Path,
) -> None:
    f = tmp_path / "controller.env"
    f.write_text(
        'DS01_SPECS=/a\nDS01_INTERVAL=30s\nDS01_CONTROLLER_ARGS="--dry-run --specs /b --ds01-config=/c"\n'
    )
    assert read_env_file(f) == {"DS01_SPECS": "/b", "DS01_DS01_CONFIG": "/c", "DS01_DRY_RUN": "1"}
    f.write_text("DS01_DRY_RUN=1\n")
    assert read_env_file(f) == {"DS01_DRY_RUN": "1"}
    f.write_text('DS01_CONTROLLER_ARGS="--interval 10s"\n')  # acting: no dry-run anywhere
    assert read_env_file(f) == {}


def test_the_shipped_env_file_makes_ds01ctl_say_and_reconcile_default_to_dry_run(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon of the shipped file runs in dry-run; ds01ctl ignored that: `plan` listed removals as
    what the controller will do, and `reconcile` carried them out."""
    from controller.cli import main as cli_main
    from controller.cli import reconcile as reconcile_module

    shipped = Path(__file__).resolve().parents[2] / "deploy" / "controller.env"
    f = env / "controller.env"
    f.write_text(shipped.read_text() + f"\nDS01_STATE_DIR={env / 'state'}\n")
    calls: list[bool] = []

    def fake_reconcile(settings: object, *, dry_run: bool, output: str, style: object) -> int:
        calls.append(dry_run)
        return 0

    monkeypatch.setattr(reconcile_module, "reconcile", fake_reconcile)
    assert cli_main.main(["reconcile", "--env-file", str(f)]) == 0
    assert cli_main.main(["reconcile", "--env-file", str(f), "--no-dry-run"]) == 0
    assert cli_main.main(["reconcile", "--env-file", "", "--dry-run"]) == 0
    assert cli_main.main(["reconcile", "--env-file", ""]) == 0
    assert calls == [True, False, True, False]


def test_ds01ctl_reads_the_daemons_env_file(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = _specs(env, "specs", "45m")
    f = env / "controller.env"
    f.write_text(f'DS01_CONTROLLER_ARGS="--dry-run"\nDS01_SPECS={specs}\nDS01_STATE_DIR={env / "state"}\n')
    assert main(["get", "policies", "--env-file", str(f)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"policy: specs {specs}"
    monkeypatch.setenv("DS01_ENV_FILE", str(f))
    assert main(["get", "policies"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"policy: specs {specs}"
    # The caller's own variable and flag still win over the file.
    assert main(["get", "policies", "--specs", str(EXAMPLES)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"policy: specs {EXAMPLES}"


def test_a_named_env_file_that_does_not_exist_is_an_error(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "policies", "--env-file", str(env / "missing.env")]) == 1
    err = capsys.readouterr().err
    assert "missing.env does not exist" in err


def _daemon_status(settings: Settings) -> dict[str, object]:
    """Start the daemon's controller from ``settings`` and let it load its policy, as a pass does."""
    controller = build_controller(settings)
    controller._reload_policy()
    data = json.loads((settings.state_dir / POLICY_STATUS_FILE).read_text())
    assert isinstance(data, dict)
    return data


def test_daemon_records_which_policy_it_loaded(env: Path) -> None:
    specs = _specs(env, "specs", "45m")
    status = _daemon_status(Settings(specs=specs, state_dir=env / "state", dry_run=True))
    policy = status["policy"]
    assert isinstance(policy, dict)
    assert policy["specs"] == str(specs) and policy["ds01_config"] is None
    assert str(policy["digest"]).startswith("sha256:")


def test_ds01ctl_says_loudly_when_its_policy_is_not_the_daemons(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon_specs = _specs(env, "daemon-specs", "45m")
    state = env / "state"
    _daemon_status(Settings(specs=daemon_specs, state_dir=state, dry_run=True))
    # The daemon's env file, read by ds01ctl: the same policy, no warning.
    f = env / "controller.env"
    f.write_text(f"DS01_SPECS={daemon_specs}\nDS01_STATE_DIR={state}\n")
    rc = main(["get", "policies", "--env-file", str(f)])
    out, err = capsys.readouterr()
    assert rc == 0 and "NOT the running controller's" not in out + err
    # The same content in another directory is the same policy.
    copy = _specs(env, "copy", "45m")
    assert main(["get", "policies", "--env-file", "", "--state-dir", str(state), "--specs", str(copy)]) == 0
    out, err = capsys.readouterr()
    assert "NOT the running controller's" not in out + err
    # Without the env file ds01ctl falls back to the built-in default: it says so, on stdout and stderr.
    rc = main(["get", "policies", "--env-file", "", "--state-dir", str(state)])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out.splitlines()[0] == "policy: built-in default"
    warning = "ds01ctl's policy is NOT the running controller's: ds01ctl loaded built-in default"
    assert f"WARNING: {warning}" in out
    assert f"warning: {warning}" in err and f"the controller runs specs {daemon_specs} (sha256:" in err
    # A different content under the same path is another policy, too.
    (daemon_specs / "lab.yaml").write_text(SPEC.format(idle="2h"))
    main(["get", "policies", "--env-file", str(f), "-o", "json"])
    data = json.loads(capsys.readouterr().out)
    assert "NOT the running controller's" in data["policy"]["daemon_mismatch"]
