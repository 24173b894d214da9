"""``ds01ctl get containers -w`` in a real terminal: tmux drives it, the real engine changes under it.

The command runs in a detached tmux pane (a real pty, so the screen is redrawn as on a terminal);
the test starts, stops and removes a labelled container and reads the pane's text after each step.
The watch is narrowed to this test's label, so other work on the engine never shows.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.docker_host import TEST_LABEL, ContainerFactory

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0


@pytest.fixture
def tmux_session(tmp_path: Path) -> Iterator[str]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (apt-get install tmux)")
    name = f"ds01t-watch-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def _pane(session: str) -> str:
    done = subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=False
    )
    return done.stdout


def _wait_for(session: str, ok: Callable[[str], bool], what: str) -> str:
    deadline = time.monotonic() + WAIT_S
    text = ""
    while time.monotonic() < deadline:
        text = _pane(session)
        if ok(text):
            return text
        time.sleep(0.5)
    pytest.fail(f"the watched screen never showed {what}; last screen:\n{text}")


def _row(text: str, name: str) -> list[str] | None:
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    return None


def test_get_containers_watch_redraws_when_a_container_starts_stops_and_goes(
    tmux_session: str, tmp_path: Path, make_container: ContainerFactory
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    env.update(
        {
            "DS01_STATE_DIR": str(state),
            "DS01_EVENTS_LOG": str(tmp_path / "events.jsonl"),
            "DS01_LEDGER": str(tmp_path / "ledger.json"),
            "DS01_ENV_FILE": "",
            "NO_COLOR": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    selector = f"{TEST_LABEL}={make_container.test_id}"
    command = " ".join(
        shlex.quote(a)
        for a in [sys.executable, "-m", "controller.cli", "get", "containers", "-w", "--all", "-l", selector]
    )
    env_args = [a for k, v in env.items() if k in _PASSED for a in ("-e", f"{k}={v}")]
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", tmux_session, "-x", "200", "-y", "50", *env_args, command],
        check=True,
        env=env,
        cwd=REPO,
    )
    # Nothing of this test's yet: the watch says so on its screen.
    _wait_for(tmux_session, lambda t: "(nothing to list)" in t or "NAME" in t, "its first screen")

    c = make_container("sleep 600", labels={"ds01.user": "alice"}, network_mode="none")
    text = _wait_for(
        tmux_session,
        lambda t: (r := _row(t, c.name)) is not None and "running" in r,
        f"{c.name} running",
    )
    assert "NAME" in text and "STATE" in text  # the table's header, redrawn with it

    c.stop(timeout=1)
    _wait_for(
        tmux_session,
        lambda t: (r := _row(t, c.name)) is not None and "exited" in r,
        f"{c.name} exited",
    )

    c.remove(force=True)
    _wait_for(tmux_session, lambda t: _row(t, c.name) is None, f"{c.name} gone")
    # The watch is still alive (redrawing, not crashed): its pane is there and still lists nothing of ours.
    assert subprocess.run(["tmux", "has-session", "-t", tmux_session], check=False).returncode == 0


# tmux starts the pane's command from its server's environment: pass what ds01ctl needs explicitly.
_PASSED = frozenset(
    {
        "DS01_STATE_DIR",
        "DS01_EVENTS_LOG",
        "DS01_LEDGER",
        "DS01_ENV_FILE",
        "NO_COLOR",
        "PYTHONPATH",
        "DOCKER_HOST",
        "PATH",
        "DS01_VENV",
    }
)
