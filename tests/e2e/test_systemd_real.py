"""The shipped unit under a real systemd: installed as an admin would, then started, watched, reloaded,
sandboxed, acting, rotated, rebooted.

A Debian root file system with systemd as PID 1 runs in a container (tests/fixtures/systemd_box.py).
The project's wheel, built from this checkout, is installed offline with ``deploy/install.sh
--source <wheel>`` exactly as docs/operations.md tells an admin; nothing is pre-installed. The
service talks to the suite's private Docker engine (its socket bound at /run/docker.sock), so the
acting checks can remove containers without any risk to the host's. The tests below run in file
order against one box; each says what it changes and puts it back.

The box has its own PID namespace: the daemon inside cannot see the host's (or the engine's)
processes, so container process signals read there are unknown, and these tests rely only on
lifecycle rules that need none (a created-never-started container). The keep-alive read is checked
separately, from inside the unit's sandbox, against containers that share the box's PID namespace.

Select alone with ``pytest -m systemd``. The first run builds the image (debootstrap, about a
minute); later runs reuse it.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dockerd import TEST_IMAGE, PrivateEngine
from tests.fixtures.systemd_box import (
    LABEL,
    RUN_LABEL,
    Box,
    BoxError,
    box_name,
    docker,
    ensure_image,
    host_kernel_has_openat2,
    remove_run,
    start_box,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.systemd]

REPO = Path(__file__).resolve().parents[2]
UNIT = "ds01-controller.service"
SHIPPED_UNIT = REPO / "deploy" / UNIT
# CAP_DAC_READ_SEARCH (2), CAP_KILL (5), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21): the unit's bounding set.
UNIT_CAPS = (1 << 2) | (1 << 5) | (1 << 19) | (1 << 21)
TTY_GID = 5
DOCUMENTED_EXPOSURE = 5.5  # tests/integration/test_systemd_units.py and docs/operations.md ("about 4.9")
PERMISSION_ERRORS = re.compile(
    r"Permission denied|EACCES|Operation not permitted|EPERM|Read-only file system|EROFS|Traceback"
)
WAIT_S = 30.0
CREATED_TIMEOUT_S = 3

POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: {name}
spec:
  settings:
    createdContainerTimeout: {created}
  trustLabels: true
"""


@pytest.fixture(scope="module")
def box(e2e_engine: PrivateEngine) -> Iterator[Box]:
    run_id = uuid.uuid4().hex[:12]
    timings: dict[str, float] = {}
    started = time.monotonic()
    image, timings["image build"] = ensure_image()
    with tempfile.TemporaryDirectory(prefix="ds01-wheels.") as wheels:
        t = time.monotonic()
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", wheels, str(REPO)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert built.returncode == 0, built.stderr
        (wheel,) = Path(wheels).glob("ds01_controller-*.whl")
        timings["wheels"] = time.monotonic() - t
        t = time.monotonic()
        try:
            b = start_box(image, run_id, e2e_engine.socket, {Path(wheels): "/wheels", REPO: "/src"})
            b.wait_for_boot()
            timings["boot"] = time.monotonic() - t
            t = time.monotonic()
            # As docs/operations.md says, with a wheel built elsewhere and no package index.
            install = b.sh(
                f"PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels /src/deploy/install.sh --source /wheels/{wheel.name}",
                timeout=300,
            )
            timings["install"] = time.monotonic() - t
            assert "next: review /etc/ds01/controller.env" in install.stdout, install.stdout
            # The admin's settings: specs, a long resync (Docker events and due times wake it), dry-run.
            b.sh("printf 'DS01_SPECS=/etc/ds01/specs\\nDS01_INTERVAL=60\\n' >> /etc/ds01/controller.env")
            b.write("/etc/ds01/specs/lab.yaml", POLICY.format(name="lab", created="1h"))
            yield b
        finally:
            with contextlib.suppress(Exception):  # whatever happened, the containers go
                journal = Box(box_name(run_id), run_id).sh(
                    "journalctl --no-pager -n 200 -u ds01-controller", check=False, timeout=30
                )
                print(f"--- journal of the box ---\n{journal.stdout}")
            remove_run(run_id)
            timings["total"] = time.monotonic() - started
            print("real-systemd timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def main_pid(box: Box) -> int:
    return int(box.show(UNIT, "MainPID")["MainPID"])


def wait_until(what: str, check: Any, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def docker_time(text: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, to the microsecond."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6})\d*)?Z$", text)
    assert match, text
    return datetime.fromisoformat(f"{match.group(1)}.{(match.group(2) or '0').ljust(6, '0')}+00:00")


def status_text(box: Box) -> str:
    return box.show(UNIT, "StatusText")["StatusText"]


def test_a_box_whose_systemd_does_not_boot_fails_at_once_with_what_it_saw() -> None:
    run_id = uuid.uuid4().hex[:12]
    name = box_name(run_id)
    # No systemd at all: the busybox test image, labelled like a box of this run.
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        f"{RUN_LABEL}={run_id}",
        "--network",
        "none",
        TEST_IMAGE,
        "sleep",
        "60",
    )
    started = time.monotonic()
    try:
        with pytest.raises(BoxError, match=r"did not boot within 20s") as failure:
            Box(name=name, run_id=run_id).wait_for_boot(timeout_s=20)
    finally:
        remove_run(run_id)
    assert time.monotonic() - started < 15, "it waited out the timeout instead of giving up"
    assert "executable file not found" in str(failure.value)
    assert docker("ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}").stdout.strip() == ""


# --- start, status, sandbox ---------------------------------------------------------------------------


def test_start_returns_after_ready_and_status_shows_the_last_pass(box: Box) -> None:
    since = box.now()
    box.sh(f"systemctl enable {UNIT} && systemctl start {UNIT}", timeout=60)
    # Type=notify: start returned, so READY=1 arrived; the unit is running, not activating.
    state = box.show(UNIT, "ActiveState", "SubState", "Type", "NRestarts")
    assert state == {"ActiveState": "active", "SubState": "running", "Type": "notify", "NRestarts": "0"}
    wait_until("a pass summary in STATUS=", lambda: "containers=" in status_text(box))
    status = box.sh(f"systemctl status --no-pager {UNIT}").stdout
    assert re.search(r'Status: "[^"\n]*pass [^"\n]*containers=', status), status
    journal = box.journal(since, UNIT)
    assert "ds01-controller starting" in journal and "DRY-RUN pass" in journal, journal


def test_the_sandbox_is_what_the_unit_says(box: Box) -> None:
    pid = main_pid(box)
    status = dict(
        line.split(":\t", 1) for line in box.out(f"cat /proc/{pid}/status").splitlines() if ":\t" in line
    )
    for field in ("CapBnd", "CapPrm", "CapEff"):
        assert int(status[field], 16) == UNIT_CAPS, (field, status[field])
    assert int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # SystemCallArchitectures, RestrictSUIDSGID, ... as a filter
    assert str(TTY_GID) in status["Groups"].split()
    assert status["Umask"].strip() == "0077"
    mounts = box.out(f"cat /proc/{pid}/mountinfo").splitlines()

    def options(path: str) -> set[str]:
        best: tuple[int, set[str]] = (-1, set())
        for line in mounts:
            fields = line.split()
            point = fields[4]
            covers = path == point or path.startswith(point.rstrip("/") + "/")
            if covers and len(point) >= best[0]:  # the deepest, and of equals the last, mount wins
                best = (len(point), set(fields[5].split(",")))
        return best[1]

    for read_only in ("/", "/usr", "/etc", "/opt/ds01-controller", "/var", "/sys/fs/cgroup", "/proc/sys"):
        assert "ro" in options(read_only), (read_only, options(read_only))
    for writable in ("/var/lib/ds01", "/var/log/ds01"):
        assert "rw" in options(writable), (writable, options(writable))
    # PrivateTmp: the daemon's /tmp is not the box's.
    assert box.out(f"stat -L -c %i /proc/{pid}/root/tmp") != box.out("stat -c %i /tmp")


def test_systemd_analyze_security_is_within_the_documented_exposure(box: Box) -> None:
    text = box.sh(f"systemd-analyze security --no-pager {UNIT}", check=False).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text)
    assert match, text
    print(f"systemd-analyze security, live: {match.group(1)}")
    assert float(match.group(1)) <= DOCUMENTED_EXPOSURE, text


# --- inside the unit's sandbox: the keep-alive read, and what each capability is for ---------------

PROBE = r"""
import errno, json, os, sys
from controller.observe import keepalive
from controller.observe.keepalive import read_keepalive

raw = keepalive._Openat2()
try:
    os.close(raw.open(os.open("/", os.O_PATH), "etc"))
    openat2 = "ok"
except OSError as exc:
    openat2 = errno.errorcode.get(exc.errno, str(exc.errno))

def pid_of(container_id):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cgroup") as f:
                    if container_id in f.read():
                        return int(entry)
            except OSError:
                pass
    raise SystemExit(f"no process of {container_id} in this PID namespace")

def read(path):
    try:
        with open(path, "rb") as f:
            f.read()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

states, reads = {}, {}
for arg in sys.argv[1:]:
    case, container_id = arg.split("=")
    pid = pid_of(container_id)
    fd = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY)
    states[case] = read_keepalive(fd, "/workspace/.keep-alive").state.value
    os.close(fd)
    reads[case] = {name: read(f"/proc/{pid}/{name}") for name in ("environ", "io")}
print(json.dumps(
    {"openat2": openat2, "openat2_used": keepalive._OPENAT2.available, "states": states, "reads": reads}
))
"""
PROBE_UNIT = "ds01-probe.service"
DROPPED_FOR_PROBE = (
    "Type",
    "WatchdogSec",
    "Restart",
    "RestartSec",
    "NotifyAccess",
    "ExecStart",
    "ExecReload",
)


def probe_unit(args: str, without: str | None = None) -> str:
    """The shipped unit, sandbox untouched (but for ``without``, a capability taken out of its
    bounding set), running the probe once instead of the daemon."""
    lines = []
    for line in SHIPPED_UNIT.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in DROPPED_FOR_PROBE:
            continue
        if key == "CapabilityBoundingSet" and without is not None:
            assert without in line, (without, line)
            line = line.replace(f" {without}", "").replace(f"={without} ", "=")
        lines.append(line)
        if line.strip() == "[Service]":
            lines += [
                "Type=oneshot",
                f"ExecStart=/opt/ds01-controller/bin/python /run/ds01-probe/probe.py {args}",
                "StandardOutput=truncate:/run/ds01-probe/out.json",
            ]
    return "\n".join(lines) + "\n"


def start_targets(box: Box, setups: dict[str, tuple[str, str]]) -> dict[str, str]:
    """case -> container id of a container in the box's PID namespace: (user, shell set-up) each."""
    ids = {}
    try:
        for case, (user, setup) in setups.items():
            ids[case] = docker(
                "run", "-d", "--label", f"{LABEL}=systemd-probe", "--label", f"{RUN_LABEL}={box.run_id}",
                "--pid", f"container:{box.name}", "--network", "none", "--user", user, TEST_IMAGE,
                "sh", "-c", f"{setup} && exec sleep 600",
            ).stdout.strip()  # fmt: skip
        for cid in ids.values():
            # Set up once the container's only process has become `sleep`.
            wait_until(
                f"container {cid[:12]} in the box's PID namespace",
                lambda cid=cid: (
                    "sleep"
                    in box.out(
                        f"for p in $(grep -l {cid} /proc/[0-9]*/cgroup 2>/dev/null); do "
                        "tr '\\0' ' ' < ${p%/cgroup}/cmdline; done"
                    )
                ),
            )
    except BaseException:
        if ids:
            docker("rm", "-f", *ids.values(), check=False)
        raise
    return ids


def probe_in_sandbox(box: Box, ids: dict[str, str], without: str | None = None) -> dict[str, Any]:
    args = " ".join(f"{case}={cid}" for case, cid in ids.items())
    box.write("/run/ds01-probe/probe.py", PROBE)
    box.write(f"/run/systemd/system/{PROBE_UNIT}", probe_unit(args, without))
    box.sh(f"systemctl daemon-reload && systemctl start {PROBE_UNIT}", timeout=60)
    assert box.show(PROBE_UNIT, "Result")["Result"] == "success"
    result: dict[str, Any] = json.loads(box.out("cat /run/ds01-probe/out.json"))
    return result


def test_the_keepalive_read_under_the_real_sandbox_takes_the_walk_and_gives_the_security_verdicts(
    box: Box,
) -> None:
    ids = start_targets(
        box,
        {
            "file": ("0", "touch /workspace/.keep-alive"),
            "symlink": ("0", "ln -s /etc/passwd /workspace/.keep-alive"),
            "fifo": ("0", "mkfifo /workspace/.keep-alive"),
        },
    )
    try:
        sandboxed = probe_in_sandbox(box, ids)
        # The same probe outside any sandbox, as root in the box.
        args = " ".join(f"{case}={cid}" for case, cid in ids.items())
        plain = json.loads(box.out(f"/opt/ds01-controller/bin/python /run/ds01-probe/probe.py {args}"))
    finally:
        docker("rm", "-f", *ids.values(), check=False)
    expected = {"file": "present", "symlink": "link", "fifo": "not-regular"}
    # RestrictSUIDSGID=yes: openat2 is ENOSYS in the sandbox, and the walk gave the verdicts.
    assert (sandboxed["openat2"], sandboxed["openat2_used"], sandboxed["states"]) == (
        "ENOSYS",
        False,
        expected,
    ), sandboxed
    assert plain["states"] == expected, plain
    if host_kernel_has_openat2():
        assert (plain["openat2"], plain["openat2_used"]) == ("ok", True), plain


def test_each_capability_of_the_unit_is_needed_to_read_another_users_process(box: Box) -> None:
    # A process of uid 1000 in a container: /proc/<pid>/environ and io are 0400, owned by 1000, and
    # /proc/<pid>/root (the keep-alive) and io are behind the kernel's ptrace access check.
    ids = start_targets(box, {"user": ("1000:1000", "true")})
    try:
        results = {}
        for without in (None, "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"):
            probe = probe_in_sandbox(box, ids, without)
            results[without or "the unit's set"] = {
                **probe["reads"]["user"],
                "keepalive": probe["states"]["user"],
            }
    finally:
        docker("rm", "-f", *ids.values(), check=False)
    assert results["the unit's set"] == {"environ": "ok", "io": "ok", "keepalive": "absent"}, results
    assert results["CAP_DAC_READ_SEARCH"] == {"environ": "EACCES", "io": "EACCES", "keepalive": "absent"}, (
        results
    )
    # Whether environ also makes a ptrace check depends on the kernel: not asserted.
    without_ptrace = results["CAP_SYS_PTRACE"]
    assert (without_ptrace["io"], without_ptrace["keepalive"]) == ("EACCES", "unknown"), results


# --- watchdog, reload -------------------------------------------------------------------------------


def test_a_stopped_daemon_is_killed_and_restarted_by_the_watchdog(box: Box) -> None:
    dropin = f"/etc/systemd/system/{UNIT}.d/watchdog.conf"
    # LimitCORE=0: the watchdog's SIGABRT must not leave a core dump behind on the host.
    box.write(dropin, "[Service]\nWatchdogSec=3\nLimitCORE=0\n")
    try:
        box.sh(f"systemctl daemon-reload && systemctl restart {UNIT}")
        since = box.now()
        before = box.show(UNIT, "MainPID", "NRestarts")
        box.sh(f"kill -STOP {before['MainPID']}")
        after = wait_until(
            "the watchdog to restart the service",
            lambda: (
                (s := box.show(UNIT, "MainPID", "NRestarts", "ActiveState", "SubState"))["NRestarts"]
                != before["NRestarts"]
                and s["ActiveState"] == "active"
                and s["SubState"] == "running"
                and s
            ),
        )
        assert after["MainPID"] != before["MainPID"]
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
        journal = box.journal(since)
        assert "Watchdog timeout" in journal, journal
    finally:
        box.sh(f"rm -f {dropin} && systemctl daemon-reload && systemctl restart {UNIT}")


def test_reload_rereads_the_specs(box: Box) -> None:
    pid = main_pid(box)
    box.write("/etc/ds01/specs/lab.yaml", POLICY.format(name="lab-reloaded", created="1h"))
    since = box.now()
    box.sh(f"systemctl reload {UNIT}")
    journal = wait_until(
        "the reloaded policy in the journal",
        lambda: "policy reloaded: specs /etc/ds01/specs" in (j := box.journal(since, UNIT)) and j,
    )
    # Re-read because of the SIGHUP, not by a later periodic pass (the resync is 60 s away).
    assert journal.index("SIGHUP: re-reading the policy") < journal.index("policy reloaded"), journal
    assert main_pid(box) == pid
    assert box.show(UNIT, "ActiveState")["ActiveState"] == "active"


# --- acting, event log rotation ---------------------------------------------------------------------


def test_acting_mode_removes_a_created_never_started_container_on_time(
    box: Box, e2e_engine: PrivateEngine
) -> None:
    box.write("/etc/ds01/specs/lab.yaml", POLICY.format(name="lab", created=f"{CREATED_TIMEOUT_S}s"))
    box.sh("sed -i 's/^DS01_CONTROLLER_ARGS=.*/DS01_CONTROLLER_ARGS=/' /etc/ds01/controller.env")
    box.sh(f"systemctl restart {UNIT}")
    wait_until("the first acting pass", lambda: "containers=" in status_text(box))
    client = e2e_engine.client()
    try:
        created = client.containers.create(TEST_IMAGE, ["sleep", "600"], labels={LABEL: "systemd-acting"})
        created_at = docker_time(created.attrs["Created"])

        def gone() -> bool:
            return not client.containers.list(all=True, filters={"id": created.id})

        wait_until("the created-never-started container to be removed", gone, timeout=CREATED_TIMEOUT_S + 20)
        removed_at = datetime.now(created_at.tzinfo)
    finally:
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}=systemd-acting"}):
            c.remove(force=True)
        client.close()
    late = (removed_at - created_at).total_seconds()
    assert CREATED_TIMEOUT_S - 1 <= late <= CREATED_TIMEOUT_S + 10, late
    events = [json.loads(line) for line in box.out("cat /var/log/ds01/events.jsonl").splitlines()]
    removals = [e for e in events if e["event_type"] == "container.remove"]
    assert [e["details"]["container_id"][:12] for e in removals] == [created.id[:12]], removals


def test_logrotate_and_the_next_event_keep_the_documented_modes(box: Box, e2e_engine: PrivateEngine) -> None:
    # Rotated while the service is stopped, so that no event can land in between: logrotate itself
    # creates no new file (nocreate); the next event does.
    box.sh(f"systemctl stop {UNIT} && logrotate --force /etc/logrotate.d/ds01-controller")
    assert box.out("stat -c '%a %U:%G' /var/log/ds01/events.jsonl.1") == "640 root:root"
    assert box.sh("test -e /var/log/ds01/events.jsonl", check=False).returncode != 0
    box.sh(f"systemctl start {UNIT}")
    client = e2e_engine.client()
    try:
        client.containers.create(TEST_IMAGE, ["sleep", "600"], labels={LABEL: "systemd-rotate"})
        wait_until(
            "a new event log",
            lambda: box.sh("test -s /var/log/ds01/events.jsonl", check=False).returncode == 0,
        )
    finally:
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}=systemd-rotate"}):
            c.remove(force=True)
        client.close()
    assert box.out("stat -c '%a %U:%G' /var/log/ds01/events.jsonl") == "640 root:root"
    assert box.out("stat -c '%a %U:%G' /var/log/ds01") == "750 root:adm"


# --- stop, reboot with the directories gone, the journal -------------------------------------------


def test_stop_exits_cleanly(box: Box) -> None:
    box.sh(f"systemctl stop {UNIT}", timeout=120)
    state = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, state


def test_after_a_reboot_tmpfiles_recreates_the_directories_private_and_the_service_is_back(box: Box) -> None:
    # As on a host where someone removed them: tmpfiles.d recreates them at boot, before the service.
    box.sh("rm -rf /var/lib/ds01 /var/log/ds01")
    since = box.now()
    docker("restart", "-t", "30", box.name, timeout=120)
    box.wait_for_boot()
    wait_until(
        "the service after the reboot", lambda: box.show(UNIT, "ActiveState")["ActiveState"] == "active"
    )
    assert box.out("stat -c '%a %U:%G' /var/lib/ds01") == "700 root:root"
    assert box.out("stat -c '%a %U:%G' /var/log/ds01") == "750 root:adm"
    inventory = "/var/lib/ds01/workload-inventory.json"
    wait_until("the inventory", lambda: box.sh(f"test -s {inventory}", check=False).returncode == 0)
    assert box.out(f"stat -c '%a %U:%G' {inventory}") == "600 root:root"
    assert "Started ds01-controller.service" in box.journal(since)


def test_the_journal_has_no_permission_error(box: Box) -> None:
    journal = box.out("journalctl --no-pager -o cat -u ds01-controller")
    assert "ds01-controller starting" in journal
    bad = [line for line in journal.splitlines() if PERMISSION_ERRORS.search(line)]
    assert not bad, "\n".join(bad)
