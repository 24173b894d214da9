"""The deploy/ files against the real tools: systemd-analyze, systemd-tmpfiles, logrotate, install.sh.

systemd is not PID 1 where the tests run, so the unit is checked with ``systemd-analyze verify``
and ``security --offline`` (which need no running manager); its notify protocol is tested against
a socket the test owns (tests/unit/test_sdnotify.py). A missing tool is a failure with the fix,
never a skip: CI installs them (scripts/host-setup.sh with DS01_SETUP_TEST=1).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from controller.act.events import EventLog
from controller.settings import DEFAULT_EVENTS_LOG, DEFAULT_LEDGER, DEFAULT_STATE_DIR

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "ds01-controller.service"
INSTALL = DEPLOY / "install.sh"
TMPFILES = DEPLOY / "tmpfiles.d" / "ds01-controller.conf"
LOGROTATE = DEPLOY / "logrotate.d" / "ds01-controller"
INSTALLED_BINARY = "/usr/local/bin/ds01-controller"
ADM_GID = 4  # the adm group on Debian and Ubuntu (base-passwd's fixed ids)


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.fail(
            f"{name} is not installed: run DS01_SETUP_TEST=1 bash scripts/host-setup.sh (it installs it)"
        )
    return path


def unit_settings(text: str) -> dict[str, list[str]]:
    """Key -> every value assigned to it (systemd allows repeats), ignoring sections and comments."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, val = line.partition("=")
        out.setdefault(key.strip(), []).append(val.strip())
    return out


def verify(unit_text: str, tmp_path: Path) -> tuple[int, list[str]]:
    """Run ``systemd-analyze verify`` on a copy whose ExecStart binary exists; return rc and complaints."""
    fake = tmp_path / "bin" / "ds01-controller"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert INSTALLED_BINARY in unit_text
    copy = tmp_path / "ds01-controller.service"
    copy.write_text(unit_text.replace(INSTALLED_BINARY, str(fake)))
    proc = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", "--generators=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys and unparsable values and only prints them: those are failures too.
    complaints = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ds01-controller" in ln]
    return proc.returncode, complaints


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    rc, complaints = verify(UNIT.read_text(), tmp_path)
    assert rc == 0 and complaints == [], "\n".join(complaints)


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("NotifyAccess=main", "NotifyAcess=main")
    _, complaints = verify(broken, tmp_path)
    assert any("NotifyAcess" in c for c in complaints)


def test_the_unit_says_what_the_daemon_needs() -> None:
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["120"]
    assert s["Restart"] == ["on-failure"]
    assert s["EnvironmentFile"] == ["-/etc/ds01/controller.env"]
    assert s["ExecStart"] == [f"{INSTALLED_BINARY} run $DS01_CONTROLLER_ARGS"]
    assert set(s["CapabilityBoundingSet"][0].split()) == {
        "CAP_KILL",
        "CAP_SYS_PTRACE",
        "CAP_DAC_READ_SEARCH",
        "CAP_SYS_ADMIN",
    }
    assert s["SupplementaryGroups"] == ["tty"]
    assert s["ProtectSystem"] == ["strict"]
    # NVML needs /dev/nvidia*; a device allow-list (PrivateDevices, DevicePolicy, ProtectClock) breaks it.
    for forbidden in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert forbidden not in s, forbidden
    # The state and log directories are shared with DS01: systemd must not chmod/chown them.
    for forbidden in ("StateDirectory", "LogsDirectory", "StateDirectoryMode", "LogsDirectoryMode"):
        assert forbidden not in s, forbidden


def test_the_daemon_default_paths_are_writable_in_the_sandbox() -> None:
    writable = [Path(p) for p in unit_settings(UNIT.read_text())["ReadWritePaths"][0].split()]
    for default in (DEFAULT_STATE_DIR / "memory.json", DEFAULT_EVENTS_LOG, DEFAULT_LEDGER):
        assert any(default.is_relative_to(w) for w in writable), (
            f"{default} is read-only under ProtectSystem=strict"
        )
    assert all(w.is_relative_to(Path("/var")) for w in writable)


def test_the_sandbox_exposure_stays_low(tmp_path: Path) -> None:
    copy = tmp_path / "ds01-controller.service"
    copy.write_text(UNIT.read_text())
    proc = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    # 10 is an unsandboxed root service. Root with four capabilities and no device sandbox cannot
    # reach the "safe" band; this guards against the hardening silently eroding.
    assert float(match.group(1)) <= 5.5


# --- install.sh -----------------------------------------------------------------------------------


def run_install(destdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(destdir)}
    return subprocess.run(
        ["bash", str(INSTALL), "--no-venv", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_install_places_every_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = run_install(root)
    assert proc.returncode == 0, proc.stderr
    unit = root / "usr/local/lib/systemd/system/ds01-controller.service"
    assert unit.read_text() == UNIT.read_text()
    assert mode(unit) == 0o644
    assert (root / "usr/local/lib/tmpfiles.d/ds01-controller.conf").read_text() == TMPFILES.read_text()
    assert (root / "etc/ds01/controller.env").read_text() == (DEPLOY / "controller.env").read_text()
    assert (root / "etc/logrotate.d/ds01-controller").read_text() == LOGROTATE.read_text()
    # ExecStart names /usr/local/bin/ds01-controller: it must lead into the virtualenv.
    link = root / INSTALLED_BINARY.lstrip("/")
    assert link.is_symlink() and os.readlink(link) == "/opt/ds01-controller/bin/ds01-controller"
    assert os.readlink(root / "usr/local/bin/ds01ctl") == "/opt/ds01-controller/bin/ds01ctl"
    assert mode(root / "var/lib/ds01") == 0o700
    assert mode(root / "var/log/ds01") == 0o750
    assert (root / "opt/ds01-controller/share/deploy/prometheus/ds01-alerts.yml").is_file()
    assert "dry-run" in (root / "etc/ds01/controller.env").read_text()
    # The installed unit verifies too.
    rc, complaints = verify(unit.read_text(), tmp_path)
    assert rc == 0 and complaints == [], complaints


def test_install_never_overwrites_the_admins_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root).returncode == 0
    env_file = root / "etc/ds01/controller.env"
    env_file.write_text("DS01_CONTROLLER_ARGS=\nDS01_INTERVAL=60\n")
    logrotate = root / "etc/logrotate.d/ds01-controller"
    logrotate.write_text("/var/log/ds01/events.jsonl { daily }\n")
    state = root / "var/lib/ds01"
    state.chmod(0o755)  # as DS01 may have it
    proc = run_install(root)
    assert proc.returncode == 0, proc.stderr
    assert env_file.read_text() == "DS01_CONTROLLER_ARGS=\nDS01_INTERVAL=60\n"
    assert logrotate.read_text() == "/var/log/ds01/events.jsonl { daily }\n"
    assert mode(state) == 0o755
    assert "kept your /etc/ds01/controller.env" in proc.stdout
    assert "exists /var/lib/ds01 (left as it is)" in proc.stdout


def test_install_names_an_existing_log_directory_other_users_can_write(tmp_path: Path) -> None:
    # Anyone who can write it can create events.jsonl after a rotation, and the controller cannot
    # append to their file. DS01's scripts share the directory: it is named with the fix, not changed.
    root = tmp_path / "root"
    logs = root / "var/log/ds01"
    logs.mkdir(parents=True)
    logs.chmod(0o777)
    proc = run_install(root)
    assert proc.returncode == 0, proc.stderr
    assert mode(logs) == 0o777
    assert "warning: /var/log/ds01 has mode 0777" in proc.stdout
    assert "chown root:root /var/log/ds01 && chmod 0755 /var/log/ds01" in proc.stdout
    logs.chmod(0o750)
    assert "warning" not in run_install(root).stdout


def test_an_upgrade_replaces_an_admin_file_only_while_nobody_edited_it(tmp_path: Path) -> None:
    """An admin file still exactly as the previous install shipped it (its reference copy) takes
    the new version's; one the admin edited is kept, whatever the previous version shipped."""
    root = tmp_path / "root"
    assert run_install(root).returncode == 0
    shipped = root / "opt/ds01-controller/share/deploy"
    logrotate, env_file = root / "etc/logrotate.d/ds01-controller", root / "etc/ds01/controller.env"
    new_logrotate, new_env = logrotate.read_text(), env_file.read_text()
    # As an older version left them: both files as it shipped them, the env file then edited.
    old = "# an older version's\n/var/log/ds01/events.jsonl { weekly }\n"
    (shipped / "logrotate.d/ds01-controller").write_text(old)
    logrotate.write_text(old)
    (shipped / "controller.env").write_text("DS01_INTERVAL=30\n")
    env_file.write_text("DS01_INTERVAL=60\n")
    proc = run_install(root)
    assert proc.returncode == 0, proc.stderr
    assert logrotate.read_text() == new_logrotate
    assert "updated /etc/logrotate.d/ds01-controller" in proc.stdout
    assert env_file.read_text() == "DS01_INTERVAL=60\n" != new_env
    assert "kept your /etc/ds01/controller.env" in proc.stdout
    # The reference copies are this version's again.
    assert (shipped / "logrotate.d/ds01-controller").read_text() == new_logrotate


def logrotate_errors(root: Path, tmp_path: Path) -> list[str]:
    """What the real logrotate says of the staged /etc/logrotate.d, read as the host's would be."""
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"include {root / 'etc/logrotate.d'}\n")
    proc = subprocess.run(
        [tool("logrotate"), "--debug", "--state", str(tmp_path / "logrotate.state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [line for line in proc.stderr.splitlines() if line.startswith("error:") and "stat of" not in line]


@pytest.mark.parametrize(
    "pattern", ["/var/log/ds01/events.jsonl", "/var/log/ds01/*.jsonl", '"/var/log/ds01/events.jsonl"']
)
def test_install_leaves_the_event_log_to_a_logrotate_file_that_already_rotates_it(
    tmp_path: Path, pattern: str
) -> None:
    """A DS01 host's own /etc/logrotate.d/ds01 rotates events.jsonl: logrotate refuses a log named
    twice (it skips the second file and fails on every run), so the installer does not add a second
    entry; it names the file that has one and what to do."""
    root = tmp_path / "root"
    ds01 = root / "etc/logrotate.d/ds01"
    ds01.parent.mkdir(parents=True)
    text = f"/var/log/ds01/*.log {{\n    daily\n}}\n\n{pattern} {{\n    daily\n    copytruncate\n}}\n"
    ds01.write_text(text)
    proc = run_install(root)
    assert proc.returncode == 0, proc.stderr
    assert not (root / "etc/logrotate.d/ds01-controller").exists()
    assert "/etc/logrotate.d/ds01 already rotates /var/log/ds01/events.jsonl" in proc.stdout
    assert ds01.read_text() == text
    if "*" not in pattern:  # logrotate expands a glob on this machine's /var/log, not under root
        assert logrotate_errors(root, tmp_path) == []
    # Once the admin took the entry out, the next install adds the controller's.
    ds01.write_text("/var/log/ds01/*.log {\n    daily\n}\n")
    (root / "etc/logrotate.d/ds01.dpkg-old").write_text(text)  # logrotate ignores such a name
    proc = run_install(root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/logrotate.d/ds01-controller").read_text() == LOGROTATE.read_text()
    assert "already rotates" not in proc.stdout
    assert logrotate_errors(root, tmp_path) == []


def test_install_warns_when_another_file_rotates_the_event_log_beside_the_controllers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root).returncode == 0
    (root / "etc/logrotate.d/ds01").write_text("/var/log/ds01/events.jsonl {\n    daily\n}\n")
    assert logrotate_errors(root, tmp_path), "logrotate no longer refuses a log named twice"
    proc = run_install(root)
    assert proc.returncode == 0, proc.stderr
    assert "/etc/logrotate.d/ds01 already rotates /var/log/ds01/events.jsonl" in proc.stdout


def build_wheel(directory: Path, marker: str) -> Path:
    """A wheel named as this project's, at the same version, whose one module says ``marker``:
    what a rebuilt checkout (the version is not bumped per change) or an older build is to pip."""
    import base64
    import hashlib
    import zipfile

    name, version = "ds01_controller", "0.1.0"
    dist_info = f"{name}-{version}.dist-info"
    files = {
        "ds01_install_probe.py": f"MARKER = {marker!r}\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: ds01-controller\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_an_upgrade_or_rollback_installs_the_wheel_given_even_at_the_same_version(tmp_path: Path) -> None:
    """The version stays 0.1.0 from one build to the next: pip, told to install a wheel of the
    installed version, would call it already satisfied and keep the old code while the installer
    says it installed the new."""
    root = tmp_path / "root"
    # Without PYTHONPATH: a checkout on it (its egg-info) would stand in for the installed package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"DESTDIR": str(root), "PIP_NO_INDEX": "1"}
    installed = []
    for marker in ("first build", "second build", "first build"):
        wheel = build_wheel(tmp_path / marker.replace(" ", "-"), marker)
        proc = subprocess.run(
            ["bash", str(INSTALL), "--python", sys.executable, "--source", str(wheel)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        probe = subprocess.run(
            [
                str(root / "opt/ds01-controller/bin/python"),
                "-c",
                "import ds01_install_probe as p; print(p.MARKER)",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        installed.append(probe.stdout.strip())
    assert installed == ["first build", "second build", "first build"]


def test_install_refuses_to_replace_a_foreign_binary(tmp_path: Path) -> None:
    root = tmp_path / "root"
    foreign = root / "usr/local/bin/ds01-controller"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\n")
    proc = run_install(root)
    assert proc.returncode != 0
    assert "is not our symlink" in proc.stderr
    assert foreign.read_text() == "#!/bin/sh\n"


def test_uninstall_removes_the_program_and_keeps_config_state_and_logs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root).returncode == 0
    (root / "var/lib/ds01/memory.json").write_text("{}")
    proc = run_install(root, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    for gone in (
        "usr/local/lib/systemd/system/ds01-controller.service",
        "usr/local/lib/tmpfiles.d/ds01-controller.conf",
        "usr/local/bin/ds01-controller",
        "usr/local/bin/ds01ctl",
        "opt/ds01-controller",
        "etc/logrotate.d/ds01-controller",  # unmodified, so it was ours
    ):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    assert (root / "etc/ds01/controller.env").is_file()
    assert (root / "var/lib/ds01/memory.json").read_text() == "{}"
    assert (root / "var/log/ds01").is_dir()


def test_unknown_option_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_install(tmp_path / "root", "--frobnicate")
    assert proc.returncode != 0
    assert "unknown option '--frobnicate'" in proc.stderr


def fake_tool(bin_dir: Path, name: str, script: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_install_names_python3_venv_when_python_cannot_make_a_virtualenv(tmp_path: Path) -> None:
    # Debian's and Ubuntu's python3 without the python3-venv package: the interpreter is fine, but
    # `python3 -m venv` fails for want of ensurepip.
    real = shutil.which("python3") or sys.executable
    python = fake_tool(
        tmp_path / "bin",
        "python3",
        'case "$*" in\n'
        '  *ensurepip*) echo "ModuleNotFoundError: No module named ensurepip" >&2; exit 1 ;;\n'
        '  "-m venv"*) echo "The virtual environment was not created successfully because ensurepip'
        ' is not available." >&2; exit 1 ;;\n'
        "esac\n"
        f'exec {real} "$@"\n',
    )
    root = tmp_path / "root"
    proc = subprocess.run(
        ["bash", str(INSTALL), "--python", str(python), "--source", str(REPO)],
        env={**os.environ, "DESTDIR": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "apt-get install python3-venv" in proc.stderr, proc.stderr
    assert not (root / "opt/ds01-controller").exists()


def test_install_on_systemd_before_252_ships_tmpfiles_lines_it_can_parse(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "systemd-tmpfiles", 'echo "systemd 249 (249.11-0ubuntu3)"\n')
    root = tmp_path / "root"
    proc = subprocess.run(
        ["bash", str(INSTALL), "--no-venv"],
        env={**os.environ, "DESTDIR": str(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "older than 252" in proc.stdout
    lines = [
        ln.split()
        for ln in (root / "usr/local/lib/tmpfiles.d/ds01-controller.conf").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert lines == [
        ["d", "/var/lib/ds01", "-", "-", "-", "-", "-"],
        ["d", "/var/log/ds01", "-", "-", "-", "-", "-"],
    ]


# --- tmpfiles.d -------------------------------------------------------------------------------------


def test_tmpfiles_recreates_a_missing_directory_with_the_documented_mode_and_owner(tmp_path: Path) -> None:
    # At boot after /var/lib/ds01 or /var/log/ds01 was removed: 0700 root:root and 0750 root:adm,
    # not systemd-tmpfiles' default 0755 root:root.
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.run(
        [tool("systemd-tmpfiles"), f"--root={root}", "--create", str(TMPFILES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    state, logs = (root / "var/lib/ds01").stat(), (root / "var/log/ds01").stat()
    assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (0o700, 0, 0)
    assert (stat.S_IMODE(logs.st_mode), logs.st_uid, logs.st_gid) == (0o750, 0, ADM_GID)


def test_tmpfiles_creates_missing_directories_and_leaves_existing_ones_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/ds01").mkdir(parents=True)
    (root / "var/lib/ds01").chmod(0o775)  # a DS01 host's existing, shared directory
    conf = root / "usr/local/lib/tmpfiles.d/ds01-controller.conf"
    conf.parent.mkdir(parents=True)
    shutil.copy(TMPFILES, conf)
    proc = subprocess.run(
        [tool("systemd-tmpfiles"), f"--root={root}", "--create", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (root / "var/log/ds01").is_dir()
    assert mode(root / "var/lib/ds01") == 0o775
    # Neither mode nor owner of an existing directory is touched, at boot or by a later run.
    (root / "var/log/ds01").chmod(0o755)
    os.chown(root / "var/log/ds01", 1000, 1000)
    proc = subprocess.run(
        [tool("systemd-tmpfiles"), f"--root={root}", "--create", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    logs = (root / "var/log/ds01").stat()
    assert (mode(root / "var/log/ds01"), logs.st_uid, logs.st_gid) == (0o755, 1000, 1000)
    assert mode(root / "var/lib/ds01") == 0o775


# --- logrotate --------------------------------------------------------------------------------------


def read_rotated(log: Path) -> list[str]:
    lines: list[str] = []
    for f in sorted(log.parent.iterdir()):
        if not f.name.startswith(log.name):
            continue
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        lines.extend(data.decode().splitlines())
    return lines


def test_logrotate_config_rotates_without_losing_or_splitting_a_line(tmp_path: Path) -> None:
    log = tmp_path / "log" / "events.jsonl"
    log.parent.mkdir()
    settings = unit_settings(LOGROTATE.read_text().replace("{", "\n").replace("}", "\n"))
    assert "copytruncate" not in settings and "create" not in settings and "nocreate" in settings
    conf = tmp_path / "ds01-controller"
    shipped = LOGROTATE.read_text()
    assert "    rotate 12\n" in shipped
    # The shipped config, pointed at a temp file, and keeping every generation: this test rotates
    # many times while the writer runs (each rotation is a chance to hit a race), and deleting the
    # oldest generation past 12 is intended, not a lost line.
    conf.write_text(
        shipped.replace("/var/log/ds01/events.jsonl", str(log)).replace("rotate 12", "rotate 1000")
    )
    conf.chmod(0o644)
    state = tmp_path / "logrotate.state"

    def rotate() -> None:
        proc = subprocess.run(
            [tool("logrotate"), "--force", "--state", str(state), str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0 and "error" not in proc.stderr, proc.stderr

    events = EventLog(log)
    total = 6000
    done = threading.Event()

    def writer() -> None:
        for i in range(total):
            events.write("test.rotation", user="alice", details={"seq": i, "pad": "x" * 100})
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    rotations = 0
    while not done.is_set() and rotations < 80:
        rotate()
        rotations += 1
    thread.join(timeout=60)
    assert done.is_set()
    rotate()
    names = sorted(f.name for f in log.parent.iterdir())
    assert not any(n.endswith(".backup") for n in names), names
    assert len(names) >= 3, f"the writer outran the rotations, nothing was tested: {names}"
    seqs = [json.loads(line)["details"]["seq"] for line in read_rotated(log)]  # a split line fails to parse
    lost = sorted(set(range(total)) - set(seqs))
    assert not lost, f"{len(lost)} event(s) lost across rotations, e.g. seq {lost[:5]}"
    assert len(seqs) == total, "an event was written twice"
    assert "events.jsonl.1" in names, "the newest generation stays uncompressed (delaycompress)"
    assert any(n.endswith(".gz") for n in names), "older generations are compressed"
