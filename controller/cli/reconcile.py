"""``ds01ctl reconcile`` and ``ds01ctl breaker``: the commands that change the controller's state.

``reconcile`` runs exactly the daemon's pass (:meth:`controller.loop.Controller.run_pass`: observe,
reload policy, plan, execute, save memory) once, under the daemon's run lock, so it can never run
beside a live daemon. ``breaker reset`` clears the breaker in the store under the same lock, or,
when the daemon holds it, leaves the request file the daemon consumes at its next pass.
"""

from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controller.cli.errors import CliError
from controller.cli.render import PLAIN, Style, clean, clean_tree, iso, machine, stamp
from controller.cli.view import release_breaker_line

if TYPE_CHECKING:
    from controller.loop import PassResult
    from controller.settings import Settings


def _locked_message(exc: Any, what: str) -> str:
    pid = f"pid {exc.holder_pid}" if exc.holder_pid is not None else "pid unknown"
    return f"the controller is running ({pid}, holding {exc.path}); {what}"


def reconcile(settings: Settings, *, dry_run: bool, output: str, style: Style = PLAIN) -> int:
    from controller.cli.gather import one_line
    from controller.store import MemoryStore, StoreError, StoreLocked, acquire_run_lock
    from controller.wiring import build_controller
    from desired_state.errors import PolicyLoadError
    from desired_state.load import PolicyHolder

    settings = settings.model_copy(update={"dry_run": dry_run})
    try:
        policy = PolicyHolder(settings.specs, settings.ds01_config)
    except PolicyLoadError as exc:
        raise CliError(
            f"cannot reconcile: the policy does not load ({one_line(exc)}); "
            "ds01ctl validate lists every problem"
        ) from exc
    try:
        MemoryStore(settings.state_dir)  # creates a missing state directory (0700) before locking it
        with acquire_run_lock(settings.state_dir):
            controller = build_controller(settings, policy)
            try:
                result = controller.run_pass()
            finally:
                controller.observer.close()
    except StoreLocked as exc:
        raise CliError(
            _locked_message(exc, "it reconciles on its own; 'ds01ctl plan' shows what it will do next")
        ) from exc
    except StoreError as exc:
        raise CliError(
            f"{exc} (reconcile needs write access to the state directory: run it as root)"
        ) from exc
    return _print_result(result, settings.dry_run, output, style)


def _print_result(result: PassResult, dry_run: bool, output: str, style: Style) -> int:
    from controller.act.report import Outcome
    from controller.cli.gather import docker_error, domain_notes

    failed = result.report.count(Outcome.FAILED)
    if output in ("json", "yaml"):
        data = {
            "dry_run": dry_run,
            "observed_at": iso(result.snapshot.observed_at),
            "evaluated_at": iso(result.plan.evaluated_at),
            "outcomes": clean_tree([o.model_dump(mode="json") for o in result.report.outcomes]),
            "deferred": clean_tree([d.model_dump(mode="json") for d in result.plan.deferred]),
            "summary": clean(result.summary, 1000),
        }
        sys.stdout.write(machine(data, output))
    else:
        for note in domain_notes(result.snapshot):
            print(f"warning: {note}", file=sys.stderr)
        title = "Reconcile pass (dry-run: nothing changed)" if dry_run else "Reconcile pass"
        lines = [f"{title} at {stamp(result.plan.evaluated_at)}", ""]
        if result.report.outcomes:
            width = max(len(o.outcome.value) for o in result.report.outcomes)
            for o in result.report.outcomes:
                colour = {"failed": "red", "done": "green", "skipped": "yellow", "in_progress": "cyan"}.get(
                    o.outcome.value
                )
                status = style(o.outcome.value.ljust(width), colour)
                lines.append(f"  {status}  {o.kind.value} {clean(o.target.label(), 64)}  [{o.reason.value}]")
                if o.detail:
                    lines.append(f"  {' ' * width}    {clean(o.detail, 400)}")
        else:
            lines.append("  no action was due")
        if result.plan.deferred:
            lines.append("")
            lines.append(f"  {len(result.plan.deferred)} deferred ('ds01ctl plan' shows why and until when)")
        lines.append("")
        lines.append(clean(result.summary, 1000))
        sys.stdout.write("\n".join(lines) + "\n")
    problem = docker_error(result.snapshot)
    if problem is not None:
        raise CliError(f"{problem}; no container was acted on")
    return 1 if failed else 0


# --- breaker ---------------------------------------------------------------------------------


def breaker_status(settings: Settings, output: str) -> int:
    from controller.cli.gather import read_memory
    from controller.store import BREAKER_RESET_REQUEST

    memory, note = read_memory(settings.state_dir)
    if memory is None:
        raise CliError(f"cannot read the breaker: {note}")
    b = memory.breaker
    rb = memory.release_breaker
    pending = (settings.state_dir / BREAKER_RESET_REQUEST).exists()
    if output in ("json", "yaml"):
        data = {
            "tripped": b.tripped,
            "tripped_at": iso(b.tripped_at),
            "reason": clean(b.reason, 1000),
            "reset_requested": pending,
            "release_breaker": {
                "tripped": rb.tripped,
                "tripped_at": iso(rb.tripped_at),
                "reason": clean(rb.reason, 1000),
            },
        }
        sys.stdout.write(machine(data, output))
        return 0
    if b.tripped:
        print(f"breaker: TRIPPED at {stamp(b.tripped_at)}: {clean(b.reason, 600)}")
        print("no destructive action runs until an admin resets it: sudo ds01ctl breaker reset")
    else:
        print("breaker: closed (destructive actions allowed within the per-pass budget)")
    print(release_breaker_line(memory))
    if pending:
        print("a reset request is waiting for the controller's next pass")
    return 0


def breaker_reset(settings: Settings) -> int:
    """Clear both breakers (stops and releases): directly under the run lock, or by request when
    the daemon holds it."""
    from controller.store import BREAKER_RESET_REQUEST, MemoryStore, StoreError, StoreLocked, acquire_run_lock

    try:
        with acquire_run_lock(settings.state_dir):
            store = MemoryStore(settings.state_dir)
            if os.path.lexists(store.path):
                memory = store.load()
            else:
                # No memory file: the daemon's next start restores the breakers from the event log
                # (controller.act.salvage), and this reset must close those.
                from controller.act.salvage import memory_from_event_log

                memory = memory_from_event_log(settings.events_log, datetime.now(UTC))
            tripped = memory.breakers_tripped
            if not tripped:
                print("breaker: closed; nothing to reset")
                return 0
            was = memory.breaker.reason
            store.save(memory.with_breakers_reset())
            _record_reset(settings, was, memory.release_breaker.reason)
            for name, breaker in tripped:
                print(f"{name} reset (was tripped: {clean(breaker.reason, 400)})")
            return 0
    except StoreLocked as exc:
        from controller.cli.gather import read_memory

        stored, _ = read_memory(settings.state_dir)
        if stored is not None and not stored.breakers_tripped:
            # A request left now would clear a breaker that trips before the daemon's next pass,
            # which no admin has seen.
            print("breaker: closed; nothing to reset")
            return 0
        request = settings.state_dir / BREAKER_RESET_REQUEST
        _write_request(request)
        pid = f"pid {exc.holder_pid}" if exc.holder_pid is not None else "the running controller"
        print(f"reset requested: the controller ({pid}) clears the breaker at the start of its next pass")
        return 0
    except StoreError as exc:
        raise CliError(
            f"{exc} (breaker reset needs write access to the state directory: run it as root)"
        ) from exc
    except PermissionError as exc:
        raise CliError(
            f"cannot reset the breaker in {settings.state_dir}: permission denied (run it as root)"
        ) from exc


def _write_request(path: Any) -> None:
    text = f"requested by {_who()} at {iso(datetime.now(UTC))}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except PermissionError as exc:
        raise CliError(f"cannot write {path}: permission denied (run it as root)") from exc
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _record_reset(settings: Settings, was: str, release_was: str = "") -> None:
    from controller.act.events import EventLog

    details = {"was": was, **({"release_was": release_was} if release_was else {})}
    EventLog(settings.events_log).write(
        "controller.breaker_reset", user=_who(), source="ds01ctl", details=details
    )


def _who() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
