"""Start-up checks and one-line messages shared by ``ds01-controller`` and ``ds01ctl``.

Owns the wording of everything an admin reads when the host is not (fully) usable: the one line
per start-up error (problem and fix, never a traceback) and the ``degraded:`` / ``recovered:``
lines the daemon writes when a domain (Docker, NVML, /proc, the ledger) stops or starts answering.

Called by :mod:`controller.main`, :mod:`controller.loop`, :mod:`controller.wiring` (whose
start-up ping uses these words) and the CLI. It performs no action on the host and imports no
adapter; the only I/O is a ``stat`` of the Docker socket.
"""

from __future__ import annotations

import os
from pathlib import Path

from controller.settings import Settings
from controller.snapshot import Domain

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# A ping at start only decides whether to announce degraded mode: it must not hold up a start.
PING_TIMEOUT_S = 5.0

# What the controller stops doing while each domain is unavailable (unavailable is not empty).
DEGRADED_CONSEQUENCE: dict[Domain, str] = {
    Domain.DOCKER: "no container is acted on until it answers",
    Domain.NVML: "GPU state is unknown, so no GPU container is stopped for idleness and no GPU "
    "process is killed or GPU reset",
    Domain.PROCFS: "GPU processes cannot be attributed, so none is killed",
    Domain.LEDGER: "no allocation is released",
}


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def describe_settings(settings: Settings) -> str:
    policy = []
    if settings.specs:
        policy.append(f"specs={settings.specs}")
    if settings.ds01_config:
        policy.append(f"ds01-config={settings.ds01_config}")
    if not policy:
        policy.append("policy=built-in default")
    return " ".join(
        [
            *policy,
            f"state-dir={settings.state_dir}",
            f"events-log={settings.events_log}",
            f"ledger={settings.ledger}",
            f"interval={settings.interval_s:g}s",
            f"dry-run={'yes' if settings.dry_run else 'no'}",
            f"docker={docker_host()}",
            f"metrics={settings.metrics_addr}:{settings.metrics_port}"
            if settings.metrics_port
            else "metrics=off",
        ]
    )


def missing_socket() -> str | None:
    host = docker_host()
    if host.startswith("unix://") and not Path(host[len("unix://") :]).exists():
        return (
            f"cannot reach the Docker engine at {host}: no such socket (is dockerd running? set DOCKER_HOST)"
        )
    return None


def docker_problem(exc: BaseException) -> str:
    """Explain why the Docker engine could not be reached, with the fix."""
    host = docker_host()
    text = str(exc)
    if isinstance(exc, PermissionError) or "Permission denied" in text or "permission denied" in text:
        return f"cannot reach the Docker engine at {host}: permission denied (are you in the docker group?)"
    missing = missing_socket()
    if missing is not None:
        return missing
    return f"cannot reach the Docker engine at {host}: {text.splitlines()[0] if text else type(exc).__name__}"


def degraded_line(domain: Domain, error: str | None) -> str:
    """The one line announcing that ``domain`` is unavailable, what it means, and (Docker) the fix."""
    if domain is Domain.DOCKER:
        reason = missing_socket() or f"Docker unavailable ({_first_line(error)})"
    else:
        reason = f"{_DOMAIN_NAME[domain]} unavailable ({_first_line(error)})"
    return f"degraded: {reason}; {DEGRADED_CONSEQUENCE[domain]}"


def recovered_line(domain: Domain) -> str:
    return f"recovered: {_DOMAIN_NAME[domain]} answers again; normal operation for it resumes"


_DOMAIN_NAME = {
    Domain.DOCKER: "Docker",
    Domain.NVML: "NVML",
    Domain.PROCFS: "/proc",
    Domain.LEDGER: "the allocation ledger",
}


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "no reason given"


def one_line_error(exc: BaseException) -> str:
    """The last resort: one line, the exception's own words, never a traceback."""
    first = str(exc).strip().splitlines()
    detail = first[0] if first else ""
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if module.startswith(("docker", "requests", "urllib3")):
        return docker_problem(exc)
    if module.startswith(("controller", "desired_state", "crd_like_specs")) and detail:
        # Our own errors are written for people already: name the problem and the fix.
        return detail
    return f"{name}: {detail}" if detail else name
