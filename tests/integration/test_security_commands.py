"""Command injection, behaviourally: a user-influenced value reaches a program only as one argv element.

The only program the controller starts is the admin's GPU reset command (the static check in
tests/unit/test_security_commands.py proves that). Here a real script stands in for it and records
the argv it was given, NUL-separated; the command comes from a LifecyclePolicy loaded from YAML, as
in the daemon, and the executor runs it for ResetGpu actions:

- shell syntax in the configured arguments (``$(...)``, backticks, ``;``) arrives literally;
- a GPU "UUID" carrying shell syntax or a newline is refused before anything runs;
- Docker itself refuses a container name with such text, so names never carry it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.memory import ControllerMemory
from controller.plan.desired import PolicySetDesired
from controller.plan.types import Action, ActionKind, Plan, Reason, Target
from desired_state.load import load_spec_text
from tests.fixtures.act import RecordingNotifier, read_events
from tests.fixtures.docker_host import TEST_IMAGE, TEST_LABEL
from tests.fixtures.nvml import gpu_uuid

pytestmark = pytest.mark.docker

RECORDER = """#!/bin/sh
for arg in "$@"; do printf '%s\\0' "$arg"; done >> "{out}"
printf '\\n' >> "{out}"
"""


def reset_action(gpu: str) -> Action:
    now = datetime.now(UTC)
    return Action(
        kind=ActionKind.RESET_GPU,
        target=Target(gpu=gpu),
        reason=Reason.GPU_DIRTY,
        message=f"reset {gpu}",
        due_at=now - timedelta(seconds=1),
        key=f"ResetGpu:{gpu}",
        params={"timeout_s": 10.0},
    )


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path, Path]:
    out = tmp_path / "argv.bin"
    script = tmp_path / "fake-reset"
    script.write_text(RECORDER.format(out=out))
    script.chmod(0o755)
    pwn = tmp_path / "pwn"
    pwn.mkdir()
    return script, out, pwn


def calls(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    return [line.split("\0")[:-1] for line in out.read_text().split("\n") if line]


def test_shell_syntax_in_the_reset_command_and_the_uuid_never_reaches_a_shell(
    recorder: tuple[Path, Path, Path], docker_client: Any, tmp_path: Path
) -> None:
    script, out, pwn = recorder
    hostile_args = [f"--note=$(touch {pwn}/a);touch {pwn}/b", f"`touch {pwn}/c`", "&&", "|", "*"]
    policy = load_spec_text(
        "apiVersion: ds01.io/v1alpha1\n"
        "kind: LifecyclePolicy\n"
        "metadata: {name: security-commands}\n"
        "spec:\n"
        "  gpuReset:\n"
        f"    command: {[str(script), *hostile_args, '{uuid}']!r}\n"
    )
    command = PolicySetDesired(policy).global_policy.gpu_reset_command.value
    events = tmp_path / "events.jsonl"
    executor = RealExecutor(
        docker_client,
        EventLog(events),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        reset_command=command,
        reset_precheck=lambda gpu: [],  # the fresh re-check finds every GPU clean
    )
    good = gpu_uuid(0)
    hostile_uuids = [
        f"{good};touch {pwn}/d",
        f"{good}$(touch {pwn}/e)",
        f"{good}\ntouch {pwn}/f",
        f"`touch {pwn}/g`",
        "all",
    ]
    now = datetime.now(UTC)
    plan = Plan(
        observed_at=now,
        evaluated_at=now,
        actions=tuple(reset_action(g) for g in [good, *hostile_uuids]),
        memory=ControllerMemory(),
    )
    report = executor.execute(plan, ControllerMemory(), now)
    outcomes = {o.target.gpu: o.outcome.value for o in report.outcomes}

    # The good UUID: the script ran once, with every configured argument as one literal element.
    assert outcomes[good] == "done"
    assert calls(out) == [[*hostile_args, good]]
    # The hostile "UUIDs": refused before anything ran.
    assert all(outcomes[g] == "failed" for g in hostile_uuids), outcomes
    assert list(pwn.iterdir()) == []
    failed = [e for e in read_events(events) if e["event_type"] == "controller.action_failed"]
    assert len(failed) == len(hostile_uuids) and all(
        "not a GPU or MIG UUID" in e["details"]["error"] for e in failed
    )


@pytest.mark.parametrize("name", ["x;rm -rf tmp", "x$(id)", "x`id`", "x y", "x\ny", "-rf"])
def test_docker_refuses_container_names_with_shell_syntax(docker_client: Any, name: str) -> None:
    with pytest.raises(docker.errors.APIError) as refused:
        c = docker_client.containers.create(TEST_IMAGE, "true", name=name, labels={TEST_LABEL: "names"})
        c.remove(force=True)  # reached only if the engine accepted it (then the assertion fails)
    assert refused.value.status_code == 400
