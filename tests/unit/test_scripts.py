"""The quick-start scripts: the dry-run leaves its state where ds01ctl finds it next, and the test
command refuses a host that runs containers of its own."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from controller.envfile import read_env_file

REPO = Path(__file__).resolve().parents[2]


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _copy_scripts(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", root / "scripts")
    _executable(root / "scripts" / "host-setup.sh", "#!/usr/bin/env bash\nexit 0\n")
    _executable(root / "scripts" / "check.sh", "#!/usr/bin/env bash\necho CHECKED\n")
    return root


def test_dry_run_leaves_an_env_file_ds01ctl_reads_and_names_the_next_commands(tmp_path: Path) -> None:
    root = _copy_scripts(tmp_path)
    _executable(root / ".venv" / "bin" / "ds01-controller", '#!/usr/bin/env bash\necho "RAN $*"\n')
    done = subprocess.run(
        ["bash", str(root / "scripts" / "dry-run.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    state = root / ".ds01-dry-run"
    assert f"--state-dir {state}" in done.stdout
    assert read_env_file(state / "controller.env") == {
        "DS01_STATE_DIR": str(state),
        "DS01_EVENTS_LOG": str(state / "events.jsonl"),
        "DS01_LEDGER": str(state / "gpu-ledger.json"),
    }
    assert f'DS01_ENV_FILE="{state}/controller.env"' in done.stderr
    assert "ds01ctl get containers" in done.stderr and "ds01ctl plan --at +2h" in done.stderr


def test_the_test_command_refuses_a_host_with_containers_of_its_own(tmp_path: Path) -> None:
    root = _copy_scripts(tmp_path)
    fake = tmp_path / "bin" / "docker"
    _executable(fake, "#!/usr/bin/env bash\nprintf '1|ds01-test-x\\n|production-db\\n'\n")
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    env.pop("DS01_TEST_ANY_HOST", None)
    done = subprocess.run(
        ["bash", str(root / "scripts" / "test.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1 and "CHECKED" not in done.stdout
    assert (
        "1 container(s) that are not test containers" in done.stderr and "DS01_TEST_ANY_HOST=1" in done.stderr
    )
    env["DS01_TEST_ANY_HOST"] = "1"
    done = subprocess.run(
        ["bash", str(root / "scripts" / "test.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and "CHECKED" in done.stdout


def _check_sh_env(tmp_path: Path, *, promtool: bool) -> dict[str, str]:
    """check.sh with every tool a stub that logs its argv; promtool present or not."""
    venv = tmp_path / "venv"
    log = tmp_path / "calls.log"
    for tool in ("ruff", "mypy", "lint-imports", "python"):
        _executable(venv / "bin" / tool, f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    if promtool:
        _executable(tools / "promtool", f'#!/bin/sh\necho "promtool $*" >> "{log}"\n')
    return {"PATH": str(tools), "DS01_VENV": str(venv), "HOME": str(tmp_path)}


def test_check_runs_promtool_on_the_alert_rules(tmp_path: Path) -> None:
    env = _check_sh_env(tmp_path, promtool=True)
    done = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "check.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert "promtool check rules deploy/prometheus/ds01-alerts.yml" in calls
    assert "promtool test rules deploy/prometheus/ds01-alerts.test.yml" in calls
    assert calls[-1].startswith("python -m pytest")
    assert (REPO / "deploy" / "prometheus" / "ds01-alerts.test.yml").is_file()


def test_check_fails_clearly_without_promtool_unless_skipped_knowingly(tmp_path: Path) -> None:
    env = _check_sh_env(tmp_path, promtool=False)
    script = str(REPO / "scripts" / "check.sh")
    done = subprocess.run(["/bin/bash", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "promtool not found" in done.stderr and "prometheus" in done.stderr
    assert not any(c.startswith("python") for c in (tmp_path / "calls.log").read_text().splitlines())
    env["DS01_SKIP_PROMTOOL"] = "1"
    done = subprocess.run(["/bin/bash", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "NOT checked" in done.stderr


def test_host_setup_installs_promtool_for_the_tests() -> None:
    text = (REPO / "scripts" / "host-setup.sh").read_text()
    assert "command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)" in text
