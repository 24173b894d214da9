"""The real daemon and CLI as subprocesses: ``ds01-controller run`` and ``ds01ctl``.

Starts the daemon with its own state directory, event log and ledger under the run's work
directory, follows its log (each completed pass logs one ``pass <N>ms ...`` line) and always stops
it (SIGTERM, then SIGKILL) when the case ends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PASS_LINE = re.compile(r"\bpass (\d+)ms\b")


# Absolute now: sys.executable may be relative to the directory the bench was started from.
_BIN_DIR = Path(os.path.abspath(sys.executable)).parent


def script(name: str) -> str:
    """The console script installed beside this interpreter (the project's virtualenv)."""
    candidate = _BIN_DIR / name
    return str(candidate) if candidate.exists() else name


@dataclass
class DaemonPaths:
    state_dir: Path
    events_log: Path
    ledger: Path

    @classmethod
    def under(cls, root: Path) -> DaemonPaths:
        root.mkdir(parents=True, exist_ok=True)
        return cls(
            state_dir=root / "state", events_log=root / "events.jsonl", ledger=root / "gpu-ledger.json"
        )

    def flags(self) -> list[str]:
        return [
            "--state-dir",
            str(self.state_dir),
            "--events-log",
            str(self.events_log),
            "--ledger",
            str(self.ledger),
        ]


@dataclass
class Daemon:
    """``ds01-controller run`` as a child process whose log is followed in a thread."""

    paths: DaemonPaths
    env: Mapping[str, str]
    specs_dir: Path | None = None
    interval_s: float | None = None
    dry_run: bool = False
    proc: subprocess.Popen[str] | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    pass_times: list[float] = field(default_factory=list)
    _passed: threading.Condition = field(default_factory=threading.Condition)

    def command(self) -> list[str]:
        cmd = [script("ds01-controller"), "run", *self.paths.flags()]
        if self.specs_dir is not None:
            cmd += ["--specs", str(self.specs_dir)]
        if self.interval_s is not None:
            cmd += ["--interval", f"{self.interval_s:g}"]
        if self.dry_run:
            cmd.append("--dry-run")
        return cmd

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(),
            env=dict(self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._follow, name="daemon-log", daemon=True).start()

    def _follow(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            self.lines.append((now, line.rstrip()))
            if PASS_LINE.search(line):
                with self._passed:
                    self.pass_times.append(now)
                    self._passed.notify_all()

    def wait_passes(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` passes have completed in total; False on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        with self._passed:
            while len(self.pass_times) < count:
                if self.proc is not None and self.proc.poll() is not None:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._passed.wait(min(left, 0.5))
        return True

    def log_tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def no_first_pass(self) -> str:
        """Why there was no first pass: exit status and the daemon's last error line, then its log."""
        rc = None if self.proc is None else self.proc.poll()
        errors = [line for _, line in self.lines if line.startswith(("ERROR", "CRITICAL"))]
        head = f"the daemon {'exited with ' + str(rc) if rc is not None else 'is still running'}"
        head += " before completing a first pass"
        if errors:
            head += f": {errors[-1]}"
        return f"{head}\n--- log tail ---\n{self.log_tail()}"

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        return self.proc.returncode


def run_cli(args: Sequence[str], env: Mapping[str, str], timeout_s: float = 60) -> tuple[float, int, str]:
    """Run ``ds01ctl ARGS`` once; returns (wall seconds including interpreter start-up, rc, output)."""
    t0 = time.monotonic()
    done = subprocess.run(
        [script("ds01ctl"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return time.monotonic() - t0, done.returncode, done.stdout + done.stderr


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for the daemon and ``ds01ctl`` children, plus ``extra``.

    Without ``PYTHONDONTWRITEBYTECODE``: an installed controller runs from compiled modules, and a
    child that may not write them compiles every module it imports on every run (a checkout without
    ``__pycache__`` then measures the compiler, not the command)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env
