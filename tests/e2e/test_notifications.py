"""End to end: the daemon's notification hook. A removal by the acting daemon reaches a real script
and a real HTTP server on 127.0.0.1 as one JSON document; in dry-run the hook is silent unless the
policy asks for dry-run notices; the open-alerts gauge is exported."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import DaemonRunner, fast_policy
from tests.fixtures.docker_host import ContainerFactory

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WAIT_S = 30.0


def policy_with_hook(base: Path, out: Path, url: str, *, dry_run_notices: bool) -> str:
    script = base / "hook.sh"
    script.write_text(f'#!/bin/sh\ncat >> "{out}"\necho >> "{out}"\n')
    script.chmod(0o755)
    return fast_policy(base / "reset-marker") + (
        "  notifications:\n"
        f'    hookCommand: ["{script}"]\n'
        f'    hookUrl: "{url}"\n'
        "    hookTimeout: 5s\n"
        f"    dryRunNotices: {'true' if dry_run_notices else 'false'}\n"
    )


def documents(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(check: Any, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_a_removal_reaches_the_hook_command_and_the_webhook(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    tmp_path: Path,
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, bodies = webhook
    out = tmp_path / "hook-docs.jsonl"
    controller_daemon.write_spec(policy_with_hook(tmp_path, out, url, dry_run_notices=False))
    c = e2e_containers("sleep 300", start=False, labels={"ds01.user": "alice"})  # created, never started
    port = free_port()
    d = controller_daemon.start("--metrics-port", str(port))
    d.wait_for_event("container.remove", lambda e: e["details"].get("container_id") == c.id, WAIT_S)

    def removal(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [x for x in docs if x.get("container_id") == c.id and x.get("kind") == "removal"]

    assert wait_until(lambda: removal(documents(out)) and removal(bodies))
    (doc,) = removal(documents(out))
    assert doc["owner"] == "alice" and doc["reason"] == "CreatedNeverStarted" and doc["dry_run"] is False
    assert doc["container"] == c.name and doc["stop_at"] and isinstance(doc["figures"], dict)
    assert removal(bodies) == [doc]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'ds01_admin_alerts_open{reason="DuplicateGpuHolder"} 0.0' in text
    assert 'ds01_notification_hook_failures_total{transport="url"} 0.0' in text
    assert d.stop() == 0


@pytest.mark.parametrize("asked", [False, True])
def test_dry_run_is_silent_unless_the_admin_asks_for_dry_run_notices(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    tmp_path: Path,
    webhook: tuple[str, list[dict[str, Any]]],
    asked: bool,
) -> None:
    url, bodies = webhook
    out = tmp_path / "hook-docs.jsonl"
    controller_daemon.write_spec(policy_with_hook(tmp_path, out, url, dry_run_notices=asked))
    c = e2e_containers("sleep 300", start=False, labels={"ds01.user": "alice"})
    time.sleep(1.5)  # past createdContainerTimeout: the removal is planned in the first pass
    done = controller_daemon.run_once(dry_run=True)
    assert done.returncode == 0, done.stderr
    mine = [x for x in documents(out) if x.get("container_id") == c.id]
    if asked:
        (doc,) = mine
        assert doc["dry_run"] is True and doc["kind"] == "removal"
        assert [b for b in bodies if b.get("container_id") == c.id] == [doc]
    else:
        assert mine == [] and bodies == []
    assert e2e_containers.client.api.inspect_container(c.id)["State"]["Status"] == "created"


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
