"""``ds01ctl`` imports only what a command uses (issue 12: ``--help``, ``get`` and ``describe``).

Each command runs in a fresh interpreter, which then lists the modules it loaded. No timing: the
module sets say what start-up costs (pydantic model building, the Docker SDK and its ``requests``,
psutil, NVML, the policy loader), and they do not depend on the machine's load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_RUN = """
import json, sys
from controller.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

# What observing the host costs, and what loading the policy costs.
OBSERVE = ("docker", "requests", "psutil", "pynvml", "controller.observe")
POLICY = ("yaml", "crd_like_specs.kinds", "desired_state.load")


def _modules(tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
            "DS01_ENV_FILE": "",
            "NO_COLOR": "1",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(out), *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.exists(), done.stderr
    data = json.loads(out.read_text())
    return data["code"], set(data["modules"])


def _loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def test_help_imports_no_pydantic_and_no_adapter(tmp_path: Path) -> None:
    code, modules = _modules(tmp_path, "--help")
    assert code == 0
    assert _loaded(modules, ("pydantic", "loguru", *OBSERVE, *POLICY)) == []
    code, modules = _modules(tmp_path, "get", "--help")
    assert code == 0
    assert _loaded(modules, ("pydantic", "loguru", *OBSERVE, *POLICY)) == []


@pytest.fixture
def daemon_state(tmp_path: Path) -> list[str]:
    """A daemon has just run a pass (its state directory holds the last pass): the flags to read it."""
    from tests.fixtures import builders as b
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    clock = [datetime.now(UTC)]
    snap = b.snapshot(observed_at=clock[0], containers=[b.running("imports-1", owner="alice")])
    controller = make_controller(tmp_path, ScriptedObserver(snap), clock, FailingExecutor())
    controller.run_pass()
    return [
        "--state-dir",
        str(controller.settings.state_dir),
        "--events-log",
        str(tmp_path / "events.jsonl"),
        "--ledger",
        str(tmp_path / "ledger.json"),
    ]


def test_get_from_the_last_pass_neither_observes_nor_loads_the_policy(
    tmp_path: Path, daemon_state: list[str]
) -> None:
    code, modules = _modules(tmp_path, "get", "containers", "--all", *daemon_state)
    assert code == 0
    assert _loaded(modules, (*OBSERVE, *POLICY)) == []


def test_describe_from_the_last_pass_does_not_observe(tmp_path: Path, daemon_state: list[str]) -> None:
    code, modules = _modules(tmp_path, "describe", "container", "imports-1", *daemon_state)
    assert code == 0
    assert _loaded(modules, OBSERVE) == []


def test_live_observes(tmp_path: Path, daemon_state: list[str]) -> None:
    """The check sees the difference: --live loads the observer (and fails here: no Docker)."""
    code, modules = _modules(tmp_path, "get", "containers", "--live", *daemon_state)
    assert code == 1
    assert "controller.observe.docker_adapter" in modules


def test_reading_the_last_pass_imports_no_logging_library(tmp_path: Path, daemon_state: list[str]) -> None:
    """loguru (and the asyncio it imports) is a fifth of a ``get``; nothing logs on this path."""
    for argv in (["get", "containers", "--all"], ["describe", "container", "imports-1"]):
        code, modules = _modules(tmp_path, *argv, *daemon_state)
        assert code == 0
        assert _loaded(modules, ("loguru", "asyncio")) == [], argv


_LOG = """
import sys
if sys.argv[1] == "loaded":
    import loguru  # already loaded when the command starts: configured in place
from controller.cli.main import _quiet_logs
_quiet_logs(sys.argv[2] == "debug")
from loguru import logger
logger.debug("a debug line")
logger.warning("a warning")
logger.error("an error")
"""


@pytest.mark.parametrize("loaded", ["loaded", "not-loaded"])
def test_logs_next_to_the_output_are_errors_only_unless_debugging(tmp_path: Path, loaded: str) -> None:
    def stderr(mode: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGURU_")}
        done = subprocess.run(
            [sys.executable, "-c", _LOG, loaded, mode],
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stderr.splitlines()

    assert stderr("quiet") == ["ERROR: an error"]
    assert stderr("debug") == ["DEBUG: a debug line", "WARNING: a warning", "ERROR: an error"]


def test_debug_shows_why_the_last_pass_was_not_used(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    flags = [
        "--state-dir",
        str(state),
        "--events-log",
        str(tmp_path / "e.jsonl"),
        "--ledger",
        str(tmp_path / "l"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS01_", "LOGURU_"))}
    env.update(
        {"PYTHONPATH": str(REPO), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "DS01_ENV_FILE": ""}
    )

    def stderr(*extra: str) -> str:
        argv = [sys.executable, "-m", "controller.cli", "get", "containers", *flags, *extra]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False).stderr

    why = "DEBUG: observing the host now, not the controller's last pass: no last pass recorded"
    assert why in stderr("--debug").splitlines()
    assert "DEBUG" not in stderr()
