"""The daemon's last pass on disk: what ``ds01ctl get``/``describe`` show without observing again.

Like ``kubectl get``, which reads the API server's cache rather than every node: at the end of each
pass the daemon writes the snapshot it observed and the plan it made (``last-pass.json`` in the
state directory, replaced atomically), with what its policy was read from. ``ds01ctl`` renders that
file, with its age, when it is *fresh*: younger than the resync interval, from this controller
version, and made under exactly the policy ``ds01ctl`` would load (the same paths, and every file
read from them byte-for-byte the same). Any doubt (missing, corrupt, old, another format, another
policy, a reload that failed, a policy file changed during the pass) and ``ds01ctl`` observes live,
as it always did; ``--live`` forces that. So does a pass that carried out any action (``acted`` in
the header): its snapshot is from before, and its plan would show as pending a stop, a removal or
a warning already made.

Called by the loop (:func:`save_last_pass`, once at the end of a pass) and by ``controller.cli``
(:func:`load_last_pass`). Writes nothing but its one file; never raises into the pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from controller.plan.types import Plan
    from controller.settings import Settings
    from controller.snapshot import Snapshot

LAST_SNAPSHOT_FILE = "last-pass.json"
FORMAT = 1
FILE_MODE = 0o600
# A file written this far in the future (another clock, a clock step) is not trusted as fresh.
CLOCK_SLACK_S = 2.0
# A policy directory is hashed whole; one this large is not worth the pass's time.
MAX_INPUT_FILES = 512


class PolicySource(Protocol):
    """What the loop's policy holder offers (``desired_state.load.PolicyHolder``)."""

    @property
    def specs_dir(self) -> Path | None: ...
    @property
    def ds01_config_dir(self) -> Path | None: ...
    @property
    def last_errors(self) -> tuple[object, ...]: ...

    def fingerprint(self) -> Any: ...


def _version() -> str:
    from controller import __version__

    return str(__version__)


def _hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable {exc.errno}"


def _walk(root: Path) -> list[Path]:
    """Every file under ``root`` (a policy directory), hidden ones included: a superset of what the
    loaders read, so any change there counts as a change of policy."""
    if not root.is_dir():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames))
    return found


def policy_inputs(
    specs: Path | None, ds01_config: Path | None, extra: Iterable[str] = ()
) -> dict[str, str] | None:
    """``{path: content hash}`` of every file the policy is or could be read from; ``None`` when
    there are too many to hash. Two equal results mean the same policy text."""
    paths: set[Path] = {Path(p) for p in extra}
    for root in (specs, ds01_config):
        if root is not None:
            paths.update(_walk(root))
    if len(paths) > MAX_INPUT_FILES:
        return None
    return {str(p): _hash(p) for p in sorted(paths)}


def _policy_record(holder: PolicySource, input_files: Iterable[str]) -> dict[str, Any]:
    specs, ds01 = holder.specs_dir, holder.ds01_config_dir
    inputs = policy_inputs(specs, ds01, input_files)
    # Hash first, then check that no file changed since the holder read it: a policy file edited
    # during this pass makes the record say "unknown" rather than claim the new text is in force.
    loaded = getattr(holder, "_fingerprint", None)
    if loaded is None or holder.fingerprint() != loaded:
        inputs = None
    return {
        "specs": None if specs is None else str(specs),
        "ds01_config": None if ds01 is None else str(ds01),
        "input_files": sorted(input_files),
        "inputs": inputs,
        "reload_failed": bool(holder.last_errors),
    }


def encode(
    snapshot: Snapshot,
    plan: Plan,
    *,
    policy: dict[str, Any],
    written_at: datetime,
    interval_s: float,
    acted: int = 0,
) -> bytes:
    """The file's bytes: a header line, the snapshot, the plan (each one JSON document per line).

    ``acted``: how many actions the pass carried out (or tried: done, already done, skipped,
    failed); not a dry run's, nor a stale plan's, which touch nothing."""
    header = {
        "format": FORMAT,
        "version": _version(),
        "written_at": written_at.astimezone(UTC).isoformat(),
        "interval_s": interval_s,
        "pid": os.getpid(),
        "policy": policy,
        "acted": acted,
    }
    parts = [
        json.dumps(header).encode(),
        snapshot.model_dump_json().encode(),
        plan.model_dump_json().encode(),
    ]
    return b"\n".join(parts) + b"\n"


def _write(state_dir: Path, data: bytes) -> None:
    """Replace the file atomically (readers see the old or the new one). Not fsynced: after a crash
    a torn or empty file reads as corrupt, and ``ds01ctl`` observes live."""
    path = Path(state_dir) / LAST_SNAPSHOT_FILE
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    tmp.replace(path)


def save_last_pass(
    settings: Settings, holder: PolicySource, snapshot: Snapshot, plan: Plan, acted: int = 0
) -> None:
    """Write the pass for ``ds01ctl`` (the loop's one call, at the end of a pass). Never raises.

    ``acted``: the actions it carried out (see :func:`encode`); ``ds01ctl`` then observes live."""
    try:
        current = getattr(holder, "current", None)
        policy = _policy_record(holder, list(getattr(current, "input_files", ())))
        data = encode(
            snapshot,
            plan,
            policy=policy,
            written_at=datetime.now(UTC),
            interval_s=settings.interval_s,
            acted=acted,
        )
        _write(settings.state_dir, data)
    except Exception as exc:  # a view's convenience must never fail a pass
        from loguru import logger

        logger.debug("last pass not written to {}: {}", settings.state_dir, exc)


@dataclass(frozen=True)
class LastPass:
    written_at: datetime
    snapshot: Snapshot
    plan: Plan

    def age_s(self, now: datetime) -> float:
        return max(0.0, (now - self.written_at).total_seconds())


def load_last_pass(
    state_dir: Path,
    *,
    specs: Path | None,
    ds01_config: Path | None,
    interval_s: float,
    now: datetime,
) -> tuple[LastPass | None, str]:
    """The daemon's last pass if ``ds01ctl`` may show it instead of observing, else ``None``; and
    why (one phrase: the reason it is not used, or that it is)."""
    from controller.store import read_trusted_state_file

    data = read_trusted_state_file(state_dir, LAST_SNAPSHOT_FILE)
    if data is None:
        return None, "no last pass recorded"
    lines = data.split(b"\n")
    try:
        header = json.loads(lines[0])
        if not isinstance(header, dict) or header.get("format") != FORMAT or len(lines) < 3:
            return None, "last pass in an unknown format"
        written_at = datetime.fromisoformat(str(header["written_at"]))
        if written_at.tzinfo is None:
            return None, "last pass without a time zone"
        recorded_interval = float(header.get("interval_s") or 0.0)
    except (ValueError, KeyError, TypeError):
        return None, "last pass unreadable"
    if header.get("version") != _version():
        return None, "last pass written by another controller version"
    acted = header.get("acted")
    if not isinstance(acted, int) or isinstance(acted, bool):
        return None, "last pass does not say whether it acted"
    if acted:
        return None, f"the last pass carried out {acted} action(s): what it saw has changed since"
    age_s = (now - written_at).total_seconds()
    if age_s < -CLOCK_SLACK_S:
        return None, "last pass dated in the future"
    if age_s >= min(interval_s, recorded_interval or interval_s):
        return None, f"last pass {age_s:.0f} s old (older than the resync interval)"
    why_not = _policy_mismatch(header.get("policy"), specs, ds01_config)
    if why_not is not None:
        return None, why_not
    from pydantic import ValidationError

    from controller.plan.types import Plan
    from controller.snapshot import Snapshot

    try:
        snapshot = Snapshot.model_validate_json(lines[1])
        plan = Plan.model_validate_json(lines[2])
    except (ValidationError, ValueError):
        return None, "last pass unreadable"
    return LastPass(written_at=written_at, snapshot=snapshot, plan=plan), "fresh"


def _policy_mismatch(record: object, specs: Path | None, ds01_config: Path | None) -> str | None:
    if not isinstance(record, dict):
        return "last pass names no policy"
    if record.get("reload_failed"):
        return "the controller's last policy reload failed"
    if record.get("specs") != (None if specs is None else str(specs)) or record.get("ds01_config") != (
        None if ds01_config is None else str(ds01_config)
    ):
        return "last pass made under another policy (other paths)"
    theirs = record.get("inputs")
    if not isinstance(theirs, dict):
        return "last pass made while the policy files changed"
    extra = record.get("input_files")
    ours = policy_inputs(specs, ds01_config, [str(p) for p in extra] if isinstance(extra, list) else ())
    if ours != theirs:
        return "last pass made under another policy (the files differ)"
    return None
