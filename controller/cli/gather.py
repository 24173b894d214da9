"""Build a :class:`~controller.cli.view.View` from the live host: the I/O half of ``ds01ctl``.

Loads the policy (the installed one, or a candidate given with ``--policy``), observes the host
once with the same observer the daemon uses, reads the daemon's memory read-only (never taking a
lock the daemon could wait on), and plans with the real planner. Each part that cannot be had is
turned into a note on the view or a one-line :class:`~controller.cli.errors.CliError`, so the
commands never see a raw exception from Docker, NVML or the state store.

Imports of the heavy layers happen inside the functions so ``ds01ctl --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli.errors import CliError
from controller.cli.render import clean
from controller.cli.view import LogEventSource, PolicyInfo, PolicySource, View

if TYPE_CHECKING:
    from controller.memory import ControllerMemory
    from controller.settings import Settings
    from controller.snapshot import Snapshot
    from desired_state.policy_set import PolicySet

RESOURCE_LIMITS = "resource-limits.yaml"


@dataclass(frozen=True)
class GatherOptions:
    observe: bool = True
    plan: bool = True
    at: datetime | None = None
    candidate: Path | None = None
    require_docker: bool = False
    events: bool = False
    # Forecast the coming passes (NEXT, describe); "small" only on a host small enough for `get`.
    forecast: str | None = None
    # Show the daemon's last pass when it is fresh and made under this policy (get, describe).
    recent: bool = False
    # The view needs the policy itself (describe's provenance); get's tables do not, except to
    # forecast NEXT ("small") and for the marks of ``-o wide``.
    need_policy: bool = True


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- policy ----------------------------------------------------------------------------------


def _describe_sources(policy_set: PolicySet) -> tuple[PolicySource, ...]:
    out: list[PolicySource] = []
    for src in policy_set.sources:
        where = src.path if src.line is None else f"{src.path}:{src.line}"
        out.append(PolicySource(kind=src.kind, name=src.name, source=where, detail=src.detail))
    return tuple(out)


def _origin(specs: Path | None, ds01_config: Path | None) -> str:
    parts = []
    if specs is not None:
        parts.append(f"specs {specs}")
    if ds01_config is not None:
        parts.append(f"DS01 config {ds01_config}")
    return " + ".join(parts) if parts else "built-in default"


def load_installed_policy(settings: Settings) -> tuple[PolicySet | None, PolicyInfo]:
    """The installed policy, or ``None`` and the reason it does not load."""
    from desired_state.load import load_policy

    origin = _origin(settings.specs, settings.ds01_config)
    try:
        policy_set = load_policy(settings.specs, settings.ds01_config)
    except Exception as exc:  # any loader error: shown as one line, never a traceback
        return None, with_daemon_status(PolicyInfo(origin=origin, error=one_line(exc)), settings)
    info = PolicyInfo(origin=policy_set.origin or origin, sources=_describe_sources(policy_set))
    return policy_set, with_daemon_status(info, settings, policy_set)


def daemon_mismatch(
    status: dict[str, object], settings: Settings, policy_set: PolicySet | None
) -> str | None:
    """One line when the daemon's recorded policy is not the one ds01ctl loaded, else ``None``."""
    from controller.policy_identity import describe_identity, policy_identity

    theirs = status.get("policy")
    if not isinstance(theirs, dict):
        return None  # a daemon that does not record its policy: nothing to compare
    if policy_set is None:
        ours_text = f"{_origin(settings.specs, settings.ds01_config)} (does not load)"
    else:
        ours = policy_identity(policy_set, settings.specs, settings.ds01_config)
        if ours.get("digest") == theirs.get("digest"):
            return None
        ours_text = describe_identity(ours)
    return (
        f"ds01ctl's policy is NOT the running controller's: ds01ctl loaded {ours_text}, the controller "
        f"runs {describe_identity(theirs)} (loaded {theirs_loaded_at(status)}); what this shows is not "
        "what the controller does (use the daemon's --env-file, --specs and --ds01-config)"
    )


def theirs_loaded_at(status: dict[str, object]) -> str:
    return clean(str(status.get("policy_loaded_at") or "at an unknown time"), 40)


def with_daemon_status(
    info: PolicyInfo, settings: Settings, policy_set: PolicySet | None = None, *, compare: bool = True
) -> PolicyInfo:
    """Add what the running daemon said about its last reload (its status file), if readable:
    whether that reload failed, and whether its policy differs from ``policy_set``."""
    from controller.store import read_policy_status

    status = read_policy_status(settings.state_dir)
    if not status:
        return info
    if isinstance(status.get("record_error"), str):
        info = replace(info, record_error=str(status["record_error"]))
    if compare:
        info = replace(info, daemon_mismatch=daemon_mismatch(status, settings, policy_set))
    if not status.get("reload_failed"):
        return info
    errors = status.get("errors")
    first = str(errors[0]) if isinstance(errors, list) and errors else "unknown error"
    # The file keeps the first 20 errors and counts them all (a file written before the count: its list).
    count = status.get("error_count")
    if not isinstance(count, int) or isinstance(count, bool):
        count = len(errors) if isinstance(errors, list) else 1
    more = f" (+{count - 1} more)" if count > 1 else ""
    return replace(info, daemon_error=first + more, daemon_error_at=str(status.get("checked_at", "")))


def policy_load_error(info: PolicyInfo, settings: Settings) -> str:
    """The one line every command prints when the installed policy does not load."""
    paths = " ".join(str(p) for p in (settings.specs, settings.ds01_config) if p is not None)
    daemon = (
        f"; the running controller's last reload FAILED at {info.daemon_error_at or 'an unknown time'}"
        " and it keeps its last good policy"
        if info.daemon_error
        else "; the controller refuses to start with it"
    )
    return (
        f"the policy ({info.origin}) does not load: {info.error}{daemon} "
        f"(ds01ctl validate {paths or '...'} lists every problem)"
    )


def load_candidate_policy(path: Path) -> tuple[PolicySet, PolicyInfo]:
    """A policy that is not installed: a spec file, a directory of specs, or DS01 config.

    DS01 config is a directory holding ``resource-limits.yaml``, or one of DS01's files (then its
    directory is read, as ``ds01ctl validate`` does); anything else is CRD-like specs.
    """
    from desired_state.load import load_policy
    from desired_state.validate import DS01_FILES

    if not path.exists():
        raise CliError(f"--policy {path}: no such file or directory")
    origin = f"candidate {path}"
    try:
        if path.is_dir():
            if (path / RESOURCE_LIMITS).is_file():
                policy_set = load_policy(None, path)
            else:
                policy_set = load_policy(path, None)
        elif path.name in DS01_FILES:
            policy_set = load_policy(None, path.parent)
        else:
            policy_set = _load_spec_file(path)
    except Exception as exc:
        raise CliError(
            f"--policy {path} does not load: {one_line(exc)} (ds01ctl validate {path} lists every problem)"
        ) from exc
    return policy_set, PolicyInfo(origin=origin, sources=_describe_sources(policy_set), candidate=True)


def _load_spec_file(path: Path) -> PolicySet:
    """One spec file as a whole policy (the same path ``ds01ctl validate FILE`` takes)."""
    from desired_state.errors import PolicyLoadError
    from desired_state.load import assemble, load_spec_files

    entries, inputs, errors = load_spec_files([path])
    if errors:
        raise PolicyLoadError(errors)
    policy_set, errors = assemble(entries, origin=f"candidate {path}", input_files=inputs)
    if errors or policy_set is None:
        raise PolicyLoadError(errors)
    return policy_set


def one_line(exc: BaseException) -> str:
    """The first line of an error; a policy error with several problems says how many more."""
    text = str(exc).strip().splitlines()
    first = clean(text[0] if text else type(exc).__name__, 400)
    more = len(getattr(exc, "errors", ()) or ()) - 1 if hasattr(exc, "errors") else len(text) - 1
    return f"{first} (and {more} more)" if isinstance(more, int) and more > 0 else first


# --- memory ----------------------------------------------------------------------------------


def read_memory(state_dir: Path) -> tuple[ControllerMemory | None, str | None]:
    """The daemon's memory, read-only; ``None`` and a note when it cannot be read.

    An empty state directory (the daemon never ran) gives an empty memory and a note: timers
    then start from this observation.
    """
    from controller.memory import ControllerMemory
    from controller.store import StoreError, StoreMissing, open_readonly

    try:
        return open_readonly(state_dir).load(), None
    except StoreMissing as exc:
        return ControllerMemory(), f"no controller state yet ({clean(str(exc), 300)}); timers start now"
    except StoreError as exc:
        return None, f"timers unavailable: {clean(str(exc), 300)}"
    except OSError as exc:
        return None, f"timers unavailable: cannot read {state_dir}: {exc.strerror or exc}"


def carried_out_notes(settings: Settings, info: PolicyInfo) -> list[str]:
    """What keeps the actions a view lists from being carried out: the controller in dry-run, unable
    to write its record, or not running (said on the live view and on the view of its last pass
    alike)."""
    notes = []
    if settings.dry_run:
        notes.append(
            "the controller runs in dry-run (DS01_DRY_RUN, or --dry-run in its environment file): "
            "nothing listed here is carried out"
        )
    if info.record_error:
        notes.append(
            f"the running controller cannot write its record ({clean(info.record_error, 300)}): "
            "it runs no destructive action until it can"
        )
    from controller.store import LOCK_FILE, run_lock_held

    if run_lock_held(settings.state_dir) is False:
        notes.append(
            f"the controller is not running (no process holds {settings.state_dir / LOCK_FILE}): "
            "nothing listed here is carried out until it starts (systemctl start ds01-controller)"
        )
    return notes


def breaker_notes(memory: ControllerMemory | None) -> list[str]:
    """While the circuit breaker is tripped every destructive action is held, those not due yet too:
    a time a view gives for one is when it falls due, not when it runs."""
    if memory is None or not memory.breaker.tripped:
        return []
    from controller.cli.render import iso

    b = memory.breaker
    return [
        f"the circuit breaker is tripped (since {iso(b.tripped_at) or 'an unknown time'}: "
        f"{clean(b.reason, 300) or 'no reason recorded'}): no stop, removal, process kill or GPU reset "
        "runs until an admin runs 'ds01ctl breaker reset'; a time listed for one is when it falls "
        "due, and it is held then"
    ]


def as_next_pass(settings: Settings, memory: ControllerMemory) -> ControllerMemory:
    """The daemon's memory as its next pass plans with it. The same object when nothing applies.

    * A pending ``breaker reset`` request (left while the daemon held the lock) closes the breakers.
    * An interrupted one-shot (a GPU reset whose outcome was never recorded: the daemon was killed
      during it) is recorded as done, as the executor's recovery does before the pass plans: its
      outcome cannot be verified, so it is never repeated (the planner alerts an admin instead).
    """
    from controller.store import BREAKER_RESET_REQUEST

    if memory.breakers_tripped:
        try:
            pending = (settings.state_dir / BREAKER_RESET_REQUEST).exists()
        except OSError:
            pending = False
        if pending:
            memory = memory.with_breakers_reset()
    for key in interrupted_one_shots(memory):
        memory = memory.with_done(key, utcnow())
    return memory


def interrupted_one_shots(memory: ControllerMemory) -> list[str]:
    """Keys of the open intents the daemon's next pass records as done without repeating them."""
    from controller.plan.types import DONE_KINDS

    return [
        key
        for key, intent in memory.intents.items()
        if not intent.closing and intent.action.get("kind") in DONE_KINDS and key not in memory.done
    ]


def next_pass_notes(memory: ControllerMemory, next_pass: ControllerMemory) -> list[str]:
    """What :func:`as_next_pass` changed, said on the views that plan with it."""
    notes = []
    if memory.breakers_tripped and not next_pass.breakers_tripped:
        notes.append(
            "a breaker reset is pending: planned with the breakers closed, as the daemon's next pass"
        )
    for key in interrupted_one_shots(memory):
        action = memory.intents[key].action
        found = action.get("target")
        target: dict[str, Any] = found if isinstance(found, dict) else {}
        what = f"{action.get('kind')} {target.get('gpu') or target.get('container') or ''}".strip()
        notes.append(
            f"{what} was interrupted (the controller stopped during it) and its outcome is unknown: "
            "the daemon's next pass records it as not carried out and never repeats it; planned as such"
        )
    return notes


# --- observation -----------------------------------------------------------------------------


def observe(settings: Settings, desired: Any | None) -> Snapshot:
    """One observation with the daemon's observer; Docker or NVML down degrades the snapshot."""
    from controller.observe.host import HostObserver, ObserveConfig, with_policy
    from controller.startup import docker_problem

    config = ObserveConfig(
        docker_timeout_s=settings.docker_timeout_s,
        ledger_path=settings.ledger,
        docker_pidfile=settings.docker_pidfile,
    )
    if desired is not None:
        config = with_policy(config, desired.global_policy)  # as the daemon's observer
    try:
        # nvml=None: the observer builds its own NVML adapter, and reports (never raises) when it cannot.
        observer = HostObserver(config, nvml=None)
        from controller.store import load_inspect_cache

        cached = load_inspect_cache(settings.state_dir)
        if cached is not None:
            # The daemon's inspect cache: only containers changed since its last pass are inspected.
            observer.import_inspect_cache(cached)
    except Exception as exc:  # the Docker client refuses to be built (bad DOCKER_HOST...)
        raise CliError(docker_problem(exc)) from exc
    try:
        return observer.observe()
    except Exception as exc:
        raise CliError(docker_problem(exc)) from exc
    finally:
        observer.close()


# What the engine's error says -> (what went wrong, the fix), in the order they are tried.
_DOCKER_PROBLEMS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("ermission denied",), "permission denied", "are you in the docker group?"),
    (("No such file", "FileNotFoundError"), "no such socket", "is dockerd running? check DOCKER_HOST"),
    (("refused",), "connection refused", "is dockerd running? check DOCKER_HOST"),
    (("timed out", "Timeout"), "it did not answer in time", "is dockerd overloaded or hung?"),
)


def docker_unreachable(snapshot: Snapshot) -> tuple[str, str] | None:
    """(why the Docker domain is unavailable, the fix), ``None`` when it is fine: the problem alone
    goes in a view's line, both in an error or a warning (:func:`docker_error`)."""
    from controller.snapshot import Domain
    from controller.startup import docker_host

    if snapshot.domain_ok(Domain.DOCKER):
        return None
    reason = snapshot.domain_error(Domain.DOCKER) or "unknown error"
    for needles, what, fix in _DOCKER_PROBLEMS:
        if any(n in reason for n in needles):
            return f"cannot reach the Docker engine at {docker_host()}: {what}", fix
    first = clean(reason.split("; ")[0], 200)
    return (
        f"cannot reach the Docker engine at {docker_host()}: {first}",
        "is dockerd running? see DOCKER_HOST",
    )


def docker_error(snapshot: Snapshot) -> str | None:
    """One line saying why the Docker domain is unavailable, and the fix; ``None`` when it is fine."""
    found = docker_unreachable(snapshot)
    return None if found is None else f"{found[0]} ({found[1]})"


def domain_notes(snapshot: Snapshot) -> list[str]:
    from controller.snapshot import Domain

    notes: list[str] = []
    for h in snapshot.health:
        if h.ok:
            continue
        reason = clean(h.error or "unknown error", 300)
        if h.domain == Domain.NVML:
            notes.append(f"GPU state unavailable (NVML: {reason}); GPU columns are unknown, not empty")
        elif h.domain == Domain.DOCKER:
            notes.append(docker_error(snapshot) or reason)
        elif h.domain == Domain.PROCFS:
            notes.append(f"process attribution unavailable (/proc: {reason})")
        elif h.domain == Domain.LEDGER:
            notes.append(f"allocation ledger unavailable: {reason}")
    from controller.cli.view import unlisted_devices

    # One device NVML could not list the processes of (the domain being up): no view has a column
    # for what is missing from a list of processes, so each says so here.
    if snapshot.domain_ok(Domain.NVML):
        notes.extend(f"GPU processes unknown on {u.text()}" for u in unlisted_devices(snapshot))
    if snapshot.ledger.error and not any("ledger" in n for n in notes):
        notes.append(f"allocation ledger unreadable: {clean(snapshot.ledger.error, 300)}")
    return notes


# --- the whole view --------------------------------------------------------------------------


def from_last_pass(settings: Settings, opts: GatherOptions) -> View | None:
    """The daemon's last pass as a view, or ``None`` (then the caller observes live): missing,
    stale, corrupt, made under another policy, or anything else in doubt."""
    from controller.lastpass import load_last_pass

    last, why = load_last_pass(
        settings.state_dir,
        specs=settings.specs,
        ds01_config=settings.ds01_config,
        interval_s=settings.interval_s,
        now=utcnow(),
    )
    if last is None:
        from loguru import logger

        logger.debug("observing the host now, not the controller's last pass: {}", why)
        return None
    snapshot = last.snapshot
    if opts.require_docker and docker_error(snapshot) is not None:
        return None  # the daemon could not see Docker then: observe now, and say why if still so
    desired = None
    if opts.need_policy or _forecast_wanted(opts, snapshot):
        policy_set, info = load_installed_policy(settings)
        if policy_set is None or info.error or info.daemon_mismatch:
            return None  # the live path reports it
        from controller.plan.desired import PolicySetDesired

        try:
            desired = PolicySetDesired(policy_set)
        except Exception:
            return None
    else:
        # The same policy files as the daemon's (load_last_pass checked): nothing to compare.
        info = with_daemon_status(
            PolicyInfo(origin=_origin(settings.specs, settings.ds01_config)), settings, compare=False
        )
    memory, timers_note = read_memory(settings.state_dir)
    if memory is None or timers_note:
        return None
    if as_next_pass(settings, memory) is not memory:
        # A breaker reset waits, or an interrupted reset is to be recorded: the daemon's next pass
        # plans otherwise than its last one did. The live path plans as that pass will, and says so.
        return None
    return View(
        snapshot=snapshot,
        now=last.plan.evaluated_at,
        plan=last.plan,
        memory=memory,
        desired=desired,
        policy=info,
        notes=[*domain_notes(snapshot), *carried_out_notes(settings, info), *breaker_notes(memory)],
        event_source=LogEventSource(settings.events_log) if opts.events else None,
        as_of=last.written_at,
    )


def _forecast_wanted(opts: GatherOptions, snapshot: Snapshot) -> bool:
    """Whether the view will forecast, so it needs the policy: NEXT on a host small enough, with a
    running GPU container (the timers the plan alone cannot tell: stop at T if it stays idle)."""
    if opts.forecast is None:
        return False
    if opts.forecast != "small":
        return True
    from controller.cli.forecastview import NEXT_MAX_RUNNING, running_gpu_containers

    return 0 < running_gpu_containers(snapshot) <= NEXT_MAX_RUNNING


def gather(settings: Settings, opts: GatherOptions) -> View:
    from controller.snapshot import Snapshot

    if opts.recent and opts.observe and opts.plan and opts.candidate is None and opts.at is None:
        recent = from_last_pass(settings, opts)
        if recent is not None:
            if opts.forecast and recent.desired is not None:
                from controller.cli.forecastview import forecast_for_view

                recent.forecast = forecast_for_view(
                    recent, settings.interval_s, small_hosts_only=opts.forecast == "small"
                )
            return recent
    now = utcnow()
    policy_set: PolicySet | None
    if opts.candidate is not None:
        policy_set, info = load_candidate_policy(opts.candidate)
    else:
        policy_set, info = load_installed_policy(settings)
    desired = None
    if policy_set is not None:
        from controller.plan.desired import PolicySetDesired

        try:
            desired = PolicySetDesired(policy_set)
        except Exception as exc:
            info = replace(info, error=one_line(exc))

    if info.error:
        # No view stands on a policy that does not load: the daemon refuses to start with it (a
        # running one keeps its last good policy), so nothing here could say what it does.
        raise CliError(policy_load_error(info, settings))
    notes: list[str] = []
    if info.daemon_mismatch:
        notes.append(info.daemon_mismatch)

    if opts.observe:
        snapshot = observe(settings, desired)
        if opts.require_docker:
            problem = docker_error(snapshot)
            if problem is not None:
                raise CliError(problem)
        notes.extend(domain_notes(snapshot))
    else:
        snapshot = Snapshot(observed_at=now, health=())

    memory, timers_note = read_memory(settings.state_dir) if opts.observe else (None, None)
    if timers_note:
        notes.append(timers_note)
    if opts.observe and memory is None:
        notes.append(
            "the controller's record cannot be read: a tripped breaker, an action in flight or a "
            "back-off cannot be seen, so a destructive action listed here may not run"
        )
    if memory is not None:
        next_pass = as_next_pass(settings, memory)
        if next_pass is not memory:
            notes.extend(next_pass_notes(memory, next_pass))
        memory = next_pass
    notes.extend(carried_out_notes(settings, info))

    evaluated_at = opts.at or snapshot.observed_at
    plan = None
    view_memory = memory
    if opts.plan and opts.observe and desired is not None:
        from controller.memory import ControllerMemory
        from controller.plan.planner import plan as make_plan

        try:
            plan = make_plan(snapshot, desired, memory or ControllerMemory(), evaluated_at)
        except Exception as exc:
            raise CliError(f"planning failed: {one_line(exc)} (run with --debug for details)") from exc
        if memory is not None:
            # The plan's memory includes this observation's sample: the freshest idle streak.
            view_memory = plan.memory
    # (The plan's memory: a breaker this observation trips holds its actions too.)
    notes.extend(breaker_notes(view_memory))
    view = View(
        snapshot=snapshot,
        now=evaluated_at,
        plan=plan,
        memory=view_memory,
        desired=desired,
        policy=info,
        timers_note=timers_note if memory is None else None,
        notes=notes,
        event_source=LogEventSource(settings.events_log) if opts.events else None,
    )
    if opts.forecast and plan is not None:
        from controller.cli.forecastview import forecast_for_view

        view.forecast = forecast_for_view(
            view, settings.interval_s, small_hosts_only=opts.forecast == "small"
        )
    return view
