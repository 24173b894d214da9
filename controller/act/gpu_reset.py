"""Running the admin's GPU reset command (``nvidia-smi -r -i {uuid}`` by default).

The command is an argv vector from configuration; an argument that is exactly ``{uuid}`` is
replaced by the device UUID, and nothing else is interpolated. There is no shell, so a UUID (or
anything else) can never become shell syntax, and the UUID itself is checked against the NVML
UUID forms first. The command runs in its own session with a timeout; on timeout its whole
process group is killed.

Called by the real executor for ResetGpu actions. Whether a reset is safe is the planner's
decision, taken on an observation that may be minutes old by the time the action runs (other
actions run first; each stop waits out its grace). So right before the command runs,
:class:`ResetPrecheck` observes the host again and :func:`reset_blockers` re-checks the planner's
preconditions on that fresh snapshot: NVML answers, the GPU is still listed, not in MIG mode, its
process list (and its MIG devices') could be read and is empty, Docker answers, and no live
container holds the GPU, may use every GPU, or has GPU references that cannot be resolved. Any doubt
(NVML or Docker unreadable, the observation failing) is a blocker: the reset is skipped, not run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.act.errors import PermanentError
from controller.act.sanitize import clean
from controller.plan.rules.processes import processes_unknown
from controller.snapshot import ContainerState, Domain, ProcessState, Snapshot

UUID_PLACEHOLDER = "{uuid}"
DEFAULT_RESET_COMMAND = ("nvidia-smi", "-r", "-i", UUID_PLACEHOLDER)
# GPU-<uuid>, MIG-<uuid>, and the older MIG-GPU-<uuid>/<gi>/<ci> form.
_UUID = re.compile(r"^(?:GPU-|MIG-|MIG-GPU-)[0-9A-Fa-f-]{8,64}(?:/[0-9]{1,3}/[0-9]{1,3})?$")


@dataclass(frozen=True)
class ResetResult:
    ok: bool
    returncode: int | None
    output: str
    duration_s: float
    timed_out: bool = False


def build_argv(command: Sequence[str], uuid: str) -> list[str]:
    """The argv to run; raises :class:`PermanentError` for a bad UUID or command."""
    if not _UUID.match(uuid):
        raise PermanentError(f"refusing to reset {clean(uuid, 80)!r}: not a GPU or MIG UUID")
    if not command:
        raise PermanentError(
            "the GPU reset command is empty (set gpu_reset_command in the controller config)"
        )
    if UUID_PLACEHOLDER not in command:
        raise PermanentError(
            f"the GPU reset command {list(command)} has no {UUID_PLACEHOLDER} argument: it would reset "
            f"every GPU (add {UUID_PLACEHOLDER} as an argument of its own)"
        )
    return [uuid if arg == UUID_PLACEHOLDER else arg for arg in command]


def run_reset(command: Sequence[str], uuid: str, *, timeout_s: float) -> ResetResult:
    """Run the reset; ``ok`` only for exit status 0. Never raises for the command's own failure."""
    argv = build_argv(command, uuid)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills all of it
            close_fds=True,
        )
    except OSError as exc:
        return ResetResult(
            ok=False,
            returncode=None,
            output=f"cannot run {clean(argv[0], 200)}: {exc.strerror or exc}",
            duration_s=time.monotonic() - started,
        )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, _ = proc.communicate(timeout=2.0)
        except subprocess.TimeoutExpired:
            # A descendant left the process group and still holds the pipe: stop reading.
            out = b""
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait(timeout=2.0)
        return ResetResult(
            ok=False,
            returncode=proc.returncode,
            output=clean(out.decode("utf-8", errors="replace")[-2000:].strip(), 500),
            duration_s=time.monotonic() - started,
            timed_out=True,
        )
    return ResetResult(
        ok=proc.returncode == 0,
        returncode=proc.returncode,
        output=clean(out.decode("utf-8", errors="replace")[-2000:].strip(), 500),
        duration_s=time.monotonic() - started,
    )


_LIVE = frozenset({ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING})


def reset_blockers(snapshot: Snapshot, gpu_uuid: str) -> list[str]:
    """Why resetting ``gpu_uuid`` is not safe on this (fresh) snapshot; empty when it is."""
    if not snapshot.domain_ok(Domain.NVML):
        return [f"NVML cannot be read now ({snapshot.domain_error(Domain.NVML)})"]
    gpu = next((g for g in snapshot.gpus if g.uuid == gpu_uuid), None)
    if gpu is None:
        return ["NVML no longer lists this GPU"]
    blockers: list[str] = []
    if gpu.mig_enabled:
        blockers.append("MIG is enabled (a reset would destroy every instance)")
    unknown = processes_unknown(gpu)
    if unknown is not None:
        blockers.append(f"its process list cannot be read now ({unknown})")
    listed = sorted(
        {p.pid for p in gpu.processes}
        | {p.pid for m in gpu.mig_devices for p in m.processes}
        | {p.pid for p in snapshot.processes if p.gpu_uuid == gpu_uuid and p.state is ProcessState.PRESENT}
    )
    if listed:
        blockers.append("processes on it now: " + ", ".join(str(pid) for pid in listed))
    if not snapshot.domain_ok(Domain.DOCKER):
        blockers.append(f"Docker cannot be read now ({snapshot.domain_error(Domain.DOCKER)})")
        return blockers
    mig_uuids = {m.uuid for m in gpu.mig_devices}
    holders: list[str] = []
    for c in snapshot.containers:
        if c.state not in _LIVE:
            continue
        if (
            c.all_gpus
            or any(not ref.resolved for ref in c.gpu_refs)
            or any(
                ref.uuid == gpu_uuid or ref.parent_uuid == gpu_uuid or ref.uuid in mig_uuids
                for ref in c.gpu_refs
            )
        ):
            holders.append(f"{c.name} ({c.state.value})")
    if holders:
        blockers.append("live containers that hold or may use it now: " + ", ".join(sorted(holders)))
    return blockers


class ResetPrecheck:
    """Observes the host afresh and re-checks a reset's preconditions (see the module docstring)."""

    def __init__(self, observe: Callable[[], Snapshot]) -> None:
        self._observe = observe

    def __call__(self, gpu_uuid: str) -> list[str]:
        try:
            snapshot = self._observe()
        except Exception as exc:  # an observer must not raise; if it does, nothing is known
            return [f"the host could not be observed again: {type(exc).__name__}: {clean(str(exc), 200)}"]
        return reset_blockers(snapshot, gpu_uuid)
