"""Running the admin's GPU reset command (``nvidia-smi -r -i {uuid}`` by default).

The command is an argv vector from configuration; an argument that is exactly ``{uuid}`` is
replaced by the device UUID, and nothing else is interpolated. There is no shell, so a UUID (or
anything else) can never become shell syntax, and the UUID itself is checked against the NVML
UUID forms first. The command runs in its own session with a timeout; on timeout its whole
process group is killed.

Called by the real executor for ResetGpu actions. Whether a reset is safe is the planner's
decision; this module only runs it and reports what happened.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from controller.act.errors import PermanentError
from controller.act.sanitize import clean

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
