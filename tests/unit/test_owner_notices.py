"""Stop and removal notices on a real pseudo-terminal, and the alerts file for an owner who is not
logged in (``/workspace/.ds01-alerts`` as seen inside), including the attacks a container's user
can set up in a directory they control."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.act.notify import (
    ALERT_FILE_NAME,
    Session,
    TerminalNotifier,
    append_alert_file,
    format_alert_entry,
    format_notice,
    notice_text,
    outcome_notice,
    readable_by,
)
from controller.act.owner_notices import OwnerNotices
from controller.plan.types import Action, ActionKind, Reason, Target
from tests.fixtures.notices import read_all

AT = datetime(2026, 1, 30, 14, 30, tzinfo=UTC)
ME = pwd.getpwuid(os.geteuid()).pw_name
UID, GID = os.geteuid(), os.getegid()


def stop_action(*, kind: ActionKind = ActionKind.STOP_CONTAINER, name: str = "web", user: str = ME) -> Action:
    return Action(
        kind=kind,
        target=Target(
            container=name,
            container_id="c" * 64,
            expected_state="running" if kind is ActionKind.STOP_CONTAINER else "exited",
            user=user,
        ),
        reason=Reason.IDLE_TIMEOUT if kind is ActionKind.STOP_CONTAINER else Reason.STOPPED_HOLD_EXPIRED,
        message=f"stop {name} (owner {user}): idle for 2h 5m, idle timeout 2h",
        evidence={"elapsed_s": 7500.0, "timeout_s": 7200.0},
        due_at=AT - timedelta(minutes=1),
        key=f"{kind.value}:{'c' * 64}:x",
        params={"timeout_s": 1},
    )


def notices(sessions: list[Session]) -> OwnerNotices:
    return OwnerNotices(TerminalNotifier(sessions=lambda: sessions, clock=lambda: AT), None, clock=lambda: AT)


# --- the notice text --------------------------------------------------------------------------------


def test_stop_notice_says_how_long_the_stopped_container_is_kept() -> None:
    """A stopped container is removed once its hold passes: the notice says so (as the planner's
    evidence gives it), not that it is kept."""
    kept = "the stopped container for 15m after the stop (then it is removed)"
    text = outcome_notice(
        container="web", removed=False, was_running=True, why="max runtime", at=AT, kept=kept
    )
    assert f"What is kept: your files under /workspace and {kept}." in text


def test_stop_notice_says_what_why_kept_lost_and_how_to_start_again() -> None:
    text = outcome_notice(container="web", removed=False, was_running=True, why="idle for 2h 5m", at=AT)
    assert text.startswith("Your container web was stopped at ")
    assert "Why: idle for 2h 5m" in text
    assert "What is kept: your files under /workspace and the stopped container." in text
    assert "What is lost: its running processes" in text
    assert "To start again: `docker start web`" in text
    removed = outcome_notice(container="web", removed=True, was_running=True, why="idle", at=AT)
    assert "was stopped and removed" in removed and "every file outside /workspace" in removed
    assert "docker start" not in removed and "create it again" in removed
    gone = outcome_notice(container="old", removed=True, was_running=False, why="hold expired", at=AT)
    assert gone.startswith("Your stopped container old was removed at ")


def test_removal_notice_names_the_command_by_the_name_ds01s_commands_take() -> None:
    """DS01's commands name a container ``<name>._.<uid>`` and take ``<name>``: `container deploy
    proj._.1001` would look for the image of a project called ``proj._.1001``."""
    for was_running in (True, False):
        text = outcome_notice(
            container="proj._.1001", removed=True, was_running=was_running, why="hold expired", at=AT
        )
        assert "`container deploy proj`" in text, text
        assert "container deploy proj._.1001" not in text
        assert "ds01ctl get events --container proj._.1001" in text  # the controller's own: the full name


def test_removal_notice_keeps_nothing_of_a_container_without_a_workspace_mount() -> None:
    """A container with no host directory or volume at /workspace takes every file with it, its
    /workspace included: the notice must not promise those files are kept."""
    for was_running in (True, False):
        text = outcome_notice(
            container="web",
            removed=True,
            was_running=was_running,
            why="hold expired",
            at=AT,
            workspace_mounted=False,
        )
        assert "What is kept: nothing: the container had no /workspace mount" in text, text
        assert "your files under /workspace" not in text and "outside /workspace" not in text
        assert "with all its files (/workspace included)" in text
    # A stop keeps the stopped container with its /workspace inside it; its files go at its removal.
    stopped = outcome_notice(
        container="web",
        removed=False,
        was_running=True,
        why="idle",
        at=AT,
        kept="the stopped container for 2d after the stop (then it is removed)",
        workspace_mounted=False,
    )
    assert (
        "What is kept: the stopped container for 2d after the stop (then it is removed), with all its "
        "files (it has no /workspace mount: they go when it is removed)." in stopped
    ), stopped
    assert "your files under /workspace" not in stopped


def test_removal_notice_after_an_inspect_without_workspace_says_nothing_is_kept(
    pty: tuple[int, str],
) -> None:
    """The executor inspected the container before removing it and found no /workspace mount: the
    owner's terminal reads that nothing is kept. Where the container could not be inspected, the
    notice keeps its usual wording (not known is not "no mount")."""
    master, tty = pty
    action = stop_action()  # an idle stop that removes the container
    result = notices([Session(ME, tty)]).after(
        action, None, removed=True, was_running=True, workspace_known=True
    )
    assert result["terminals"] == 1
    got = read_all(master).decode()
    assert "What is kept: nothing: the container had no /workspace mount" in got
    assert "your files under /workspace" not in got
    notices([Session(ME, tty)]).after(action, None, removed=True, was_running=True)
    assert "What is kept: your files under /workspace." in read_all(master).decode()


def test_stop_notice_reaches_the_owners_terminal_sanitised(pty: tuple[int, str]) -> None:
    master, tty = pty
    action = stop_action(name="web\x1b[2J\x07")
    result = notices([Session(ME, tty)]).after(action, None, removed=False, was_running=True)
    assert result["terminals"] == 1 and "alerts_file" not in result
    text = read_all(master).decode()
    assert "ds01-controller STOPPED for " + ME in text
    assert "Your container web was stopped" in text
    assert "Why: stop web (owner " in text and "idle for 2h 5m, idle timeout 2h" in text
    assert "To start again" in text and "/workspace" in text
    assert "\x1b" not in text and "\x07" not in text


# --- the fallback: an owner who is not logged in ------------------------------------------------------


def test_owner_not_logged_in_finds_the_notice_in_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = notices([]).after(stop_action(), str(workspace), removed=False, was_running=True)
    assert result == {"terminals": 0, "alerts_file": "written"}
    alerts = workspace / ALERT_FILE_NAME
    content = alerts.read_text()
    assert content.startswith("--- Alert: ") and "[STOPPED] ds01-controller" in content
    assert "Your container web was stopped" in content and "To start again" in content
    assert "and the stopped container." in content  # the planner said nothing of a hold
    st = alerts.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == UID
    # A second notice is appended (DS01's file is a log the user reads and clears).
    held = stop_action()
    kept = "the stopped container for 15m after the stop (then it is removed)"
    held = held.model_copy(update={"evidence": {**held.evidence, "kept_after_stop": kept}})
    notices([]).after(held, str(workspace), removed=False, was_running=True)
    assert alerts.read_text().count("--- Alert: ") == 2 and f"and {kept}." in alerts.read_text()


def test_no_fallback_when_a_terminal_took_the_notice(pty: tuple[int, str], tmp_path: Path) -> None:
    _master, tty = pty
    notices([Session(ME, tty)]).after(stop_action(), str(tmp_path), removed=False, was_running=True)
    assert not (tmp_path / ALERT_FILE_NAME).exists()


def test_alerts_file_symlink_is_never_followed(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    target = tmp_path / "shadow"
    target.write_text("root:x:0:\n")
    (workspace / ALERT_FILE_NAME).symlink_to(target)
    why = append_alert_file(str(workspace), UID, GID, b"pwned\n")
    assert why.startswith("not written") and "symbolic link" in why
    assert target.read_text() == "root:x:0:\n"


def _a_users(link: Path) -> Path:
    """The link as a user makes it: theirs (already so when the tests do not run as root)."""
    if os.geteuid() == 0:
        os.lchown(link, 4242, 4242)
    return link


def test_workspace_or_a_parent_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    (tmp_path / "ws").symlink_to(outside)  # /workspace's host path now points elsewhere
    _a_users(tmp_path / "ws")
    assert append_alert_file(str(tmp_path / "ws"), UID, GID, b"x\n").startswith("not written")
    real = tmp_path / "real" / "ws"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")  # a link higher up the path
    _a_users(tmp_path / "link")
    assert append_alert_file(str(tmp_path / "link" / "ws"), UID, GID, b"x\n").startswith("not written")
    assert list(outside.iterdir()) == [] and list(real.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="root's links: needs root")
def test_an_administrators_link_on_the_path_is_followed_and_no_other(tmp_path: Path) -> None:
    # /home -> /data/home, made by root in a directory only root may write: the notices of every
    # user whose workspace is under /home were "not written: a symbolic link on the path".
    real = tmp_path / "data" / "home" / "alice" / "ws"
    real.mkdir(parents=True)
    tmp_path.chmod(0o755)
    (tmp_path / "home").symlink_to(tmp_path / "data" / "home")  # absolute
    (tmp_path / "rel").symlink_to("data/home")  # relative, from the directory holding it
    for via in ("home", "rel"):
        assert append_alert_file(str(tmp_path / via / "alice" / "ws"), UID, GID, b"x\n") == "written"
    assert (real / ALERT_FILE_NAME).read_bytes() == b"x\nx\n"
    # Root's link, in a directory others may write (anyone could have put it there): refused.
    tmp_path.chmod(0o1777)
    assert append_alert_file(str(tmp_path / "home" / "alice" / "ws"), UID, GID, b"y\n").startswith(
        "not written"
    )
    tmp_path.chmod(0o755)
    # A loop of root's links ends the walk instead of running forever.
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert append_alert_file(str(tmp_path / "a" / "ws"), UID, GID, b"z\n").startswith("not written")
    assert (real / ALERT_FILE_NAME).read_bytes() == b"x\nx\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="root's links: needs root")
def test_roots_link_in_a_root_directory_under_a_users_directory_is_refused(tmp_path: Path) -> None:
    # The user's home holds a directory of root's (made by root in their container, or one of
    # root's moved there by the user) with a link of root's in it to a host directory: the walk
    # followed it and root wrote the alerts file there.
    tmp_path.chmod(0o755)
    host = tmp_path / "etc"
    host.mkdir(mode=0o755)
    home = tmp_path / "alice"
    home.mkdir(mode=0o755)
    os.chown(home, 4242, 4242)
    planted = home / "d"
    planted.mkdir(mode=0o755)  # root's, 0755
    (planted / "ws").symlink_to(host)  # root's
    assert append_alert_file(str(planted / "ws"), UID, GID, b"x\n").startswith("not written")
    # Root's relative link climbing out of the same directory: refused too.
    (planted / "up").symlink_to("../../etc")
    assert append_alert_file(str(planted / "up"), UID, GID, b"x\n").startswith("not written")
    assert list(host.iterdir()) == []


def test_fifo_device_and_hard_link_are_never_written(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.mkfifo(workspace / ALERT_FILE_NAME)
    # A FIFO with no reader would block an ordinary open; it is looked at, never opened for writing.
    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(append_alert_file(str(workspace), UID, GID, b"x\n")))
    t.start()
    t.join(5)
    assert done and "not a regular file" in done[0]
    os.unlink(workspace / ALERT_FILE_NAME)
    os.mknod(workspace / ALERT_FILE_NAME, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
    assert "not a regular file" in append_alert_file(str(workspace), UID, GID, b"x\n")
    os.unlink(workspace / ALERT_FILE_NAME)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.link(victim, workspace / ALERT_FILE_NAME)
    assert "links" in append_alert_file(str(workspace), UID, GID, b"x\n")
    assert victim.read_text() == "keep\n"


def test_a_file_or_workspace_of_another_user_is_refused(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    other = 65534
    (workspace / ALERT_FILE_NAME).write_text("")
    os.chown(workspace / ALERT_FILE_NAME, other, other)
    assert "belongs to uid 65534" in append_alert_file(str(workspace), UID, GID, b"x\n")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, other, other)
    # The owner here is uid 1234: a workspace of uid 65534 is not theirs.
    assert "belongs to uid 65534" in append_alert_file(str(theirs), 1234, 1234, b"x\n")
    assert not (theirs / ALERT_FILE_NAME).exists()


def test_alerts_file_stays_bounded(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    entry = format_alert_entry("y" * 200, severity="STOPPED", at=AT)
    for _ in range(40):
        assert append_alert_file(str(workspace), UID, GID, entry, max_bytes=2048) == "written"
    size = (workspace / ALERT_FILE_NAME).stat().st_size
    assert size <= 2048 + 200
    assert "earlier alerts dropped" in (workspace / ALERT_FILE_NAME).read_text()


def test_unknown_owner_gets_no_notice_and_no_file(tmp_path: Path) -> None:
    result = notices([]).after(stop_action(user="unknown"), str(tmp_path), removed=True, was_running=True)
    assert result["terminals"] == 0 and "alerts_file" not in result
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_workspace_is_recorded_not_written(tmp_path: Path) -> None:
    """Under the shipped unit (ProtectSystem=strict) the workspace is read-only: recorded, not raised."""
    import subprocess

    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        result = notices([]).after(stop_action(), str(ro), removed=False, was_running=True)
        assert result == {"terminals": 0, "alerts_file": "not written: Read-only file system"}
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert list(src.iterdir()) == []


# --- where the notice sends the owner ---------------------------------------------------------------


@pytest.fixture
def log_dir() -> Iterator[Path]:
    """A directory any user may search (pytest's own are root's alone), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="ds01-notice-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file another user cannot read")
def test_an_owner_who_cannot_read_the_event_log_is_not_sent_to_read_it(log_dir: Path) -> None:
    # The shipped log is 0640 root's on a host without DS01's wrapper: `ds01ctl get events` said
    # "permission denied" to the owner the notice sent there.
    from tests.fixtures.act import RecordingNotifier

    log = log_dir / "events.jsonl"
    log.write_text("")
    notifier = RecordingNotifier()
    owner_notices = OwnerNotices(notifier, None, clock=lambda: AT, events_log=log)
    for mode, readable in ((0o640, False), (0o644, True)):
        log.chmod(mode)
        assert readable_by(log, "nobody") is readable
        owner_notices.after(stop_action(user="nobody"), None, removed=False, was_running=True)
        text = notifier.sent[-1][1]
        assert ("More: ds01ctl get events --container " in text) is readable, text
        assert ("readable by administrators only" in text) is not readable, text
    log_dir.chmod(0o700)  # the file is readable, a directory above it is not searchable
    assert readable_by(log, "nobody") is False
    assert readable_by(log, ME) is True  # root reads whatever the bits say
    assert readable_by(log, "no-such-user-here") is None
    assert readable_by(log_dir / "missing", "nobody") is None


def test_a_long_container_name_does_not_cut_the_stop_time_out_of_a_notice() -> None:
    """A warning's first line names the container, then when it is stopped. A name of some 200
    characters pushed the time past the line's cut: the owner read no time. Long lines are wrapped,
    not cut."""
    from tests.unit.test_notice_workspace import first_warning
    from tests.unit.test_planner_idle import IdleHost

    name = "experiment-" + "x" * 230
    text = notice_text(
        {"notice": first_warning(IdleHost(name=name)), "stop_expected_at": AT.isoformat()}, "", tz=UTC
    )
    for sent in (
        format_notice("alice", text, severity="WARNING", at=AT).decode(),
        format_alert_entry(text, severity="WARNING", at=AT).decode(),
    ):
        assert name in sent.replace("\r\n", "\n").replace("\n", ""), sent
        assert "stopped at 2026-01-30 14:30 UTC" in sent, sent
        assert "More: ds01ctl describe container" in sent
        assert all(len(line) <= 300 for line in sent.splitlines())


def test_removal_notice_of_a_container_whose_workspace_volume_shows_no_path_says_its_files_are_kept(
    pty: tuple[int, str],
) -> None:
    """A volume at /workspace whose driver shows no path while it is not mounted (a volume plugin's,
    in a stopped container) is still a volume: its files outlive the container. The executor's
    inspect says it is mounted, and the notice says the files are kept."""
    from controller.act.docker_ops import Inspected

    volume = {
        "Type": "volume",
        "Name": "w",
        "Source": "",
        "Driver": "nfs-plugin",
        "Destination": "/workspace",
    }
    fresh = Inspected.from_api({"Id": "a" * 64, "State": {"Status": "exited"}, "Mounts": [volume]})
    assert fresh.workspace is None and fresh.workspace_mounted is True
    master, tty = pty
    notices([Session(ME, tty)]).after(
        stop_action(),
        fresh.workspace,
        removed=True,
        was_running=True,
        workspace_mounted=fresh.workspace_mounted,
    )
    got = read_all(master).decode()
    assert "What is kept: your files under /workspace." in got, got
