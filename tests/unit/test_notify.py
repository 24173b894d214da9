"""TerminalNotifier on a real pseudo-terminal: delivery, sanitising, and what it refuses."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.act.notify import Session, TerminalNotifier
from tests.fixtures.notices import read_all

AT = datetime(2026, 1, 30, 14, 30, tzinfo=UTC)
ME = pwd.getpwuid(os.geteuid()).pw_name


def notifier(sessions: list[Session]) -> TerminalNotifier:
    return TerminalNotifier(sessions=lambda: sessions, clock=lambda: AT)


def test_delivers_sanitised_notice_to_each_terminal(pty: tuple[int, str]) -> None:
    master, tty = pty
    n = notifier([Session(ME, tty), Session(ME, tty), Session("someone-else", "pts/999")])
    delivered = n.notify(ME, "container web\x1b[2J is idle\nit stops at 15:00\x07")
    assert delivered == 1  # the same tty twice is written once
    text = read_all(master).decode()
    assert "ds01-controller WARNING for " + ME in text
    assert "container web is idle" in text and "it stops at 15:00" in text
    assert "\x1b" not in text and "\x07" not in text


def test_refuses_bad_terminal_names_and_non_terminals(tmp_path: Path) -> None:
    sessions = [Session(ME, "../../etc/passwd"), Session(ME, "pts/1/../../x"), Session(ME, "console")]
    assert notifier(sessions).notify(ME, "hi") == 0
    # A regular file where a terminal should be (a forged utmp entry pointing into /dev).
    fake_dev = tmp_path / "dev"
    (fake_dev / "pts").mkdir(parents=True)
    (fake_dev / "pts" / "7").write_text("")
    n = TerminalNotifier(sessions=lambda: [Session(ME, "pts/7")], dev_dir=fake_dev)
    assert n.notify(ME, "hi") == 0
    assert (fake_dev / "pts" / "7").read_text() == ""


def test_refuses_a_terminal_owned_by_another_user(pty: tuple[int, str]) -> None:
    master, tty = pty
    os.chown(f"/dev/{tty}", 65534, -1)
    assert notifier([Session(ME, tty)]).notify(ME, "hello") == 0
    assert read_all(master) == b""


def test_unknown_or_hostile_user_gets_nothing(pty: tuple[int, str]) -> None:
    _master, tty = pty
    assert notifier([Session("no-such-user-x", tty)]).notify("no-such-user-x", "hi") == 0
    assert notifier([Session("a;rm -rf /", tty)]).notify("a;rm -rf /", "hi") == 0


def test_never_raises_when_utmp_cannot_be_read() -> None:
    def broken() -> list[Session]:
        raise OSError("utmp unreadable")

    assert TerminalNotifier(sessions=broken).notify(ME, "hi") == 0


def test_mesg_n_is_honoured_even_with_root_privileges(pty: tuple[int, str]) -> None:
    """`mesg n` clears the terminal's group write bit: no notice, as write(1) does (docs/operations.md)."""
    master, tty = pty
    os.chmod(f"/dev/{tty}", 0o600)  # mesg n
    assert notifier([Session(ME, tty)]).notify(ME, "hello") == 0
    assert read_all(master) == b""
    os.chmod(f"/dev/{tty}", 0o620)  # mesg y
    assert notifier([Session(ME, tty)]).notify(ME, "hello") == 1
    assert b"hello" in read_all(master)


@pytest.fixture(scope="module")
def domain_login() -> Iterator[str]:
    """A real account named as DS01's domain logins are (``first.last@domain``)."""
    name = "ds01-notice.a.b@example.org"
    made = subprocess.run(["id", "-u", name], capture_output=True, timeout=30).returncode != 0
    if made:
        subprocess.run(["useradd", "-M", "--badname", name], check=True, capture_output=True, timeout=30)
    yield name
    if made:  # only the account this test made
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def test_a_domain_login_gets_its_notice(pty: tuple[int, str], domain_login: str) -> None:
    """The owner label carries the ``@`` of a domain login, and so does the utmp entry of every
    terminal that user has open."""
    master, tty = pty
    os.chown(f"/dev/{tty}", pwd.getpwnam(domain_login).pw_uid, -1)
    assert notifier([Session(domain_login, tty)]).notify(domain_login, "it stops at 15:00") == 1
    assert b"it stops at 15:00" in read_all(master)


def test_a_login_longer_than_utmp_keeps_gets_its_notice(
    pty: tuple[int, str], domain_login: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """utmp keeps 32 bytes of a login name: a longer one (a directory's ``first.last@domain``, which
    a local useradd cannot make) is listed cut, as ``who`` shows it."""
    master, tty = pty
    user = "ds01-notice.firstname.lastname@example.org"
    real = pwd.getpwnam
    monkeypatch.setattr(pwd, "getpwnam", lambda name: real(domain_login if name == user else name))
    os.chown(f"/dev/{tty}", pwd.getpwnam(user).pw_uid, -1)
    assert notifier([Session(user[:32], tty)]).notify(user, "it stops at 15:00") == 1
    assert b"it stops at 15:00" in read_all(master)
    # A shorter name that only begins the same is another login; and a cut name is still checked
    # against the terminal's owner.
    assert notifier([Session(user[:20], tty)]).notify(user, "hello") == 0
    os.chown(f"/dev/{tty}", 65534, -1)
    assert notifier([Session(user[:32], tty)]).notify(user, "hello") == 0
    assert read_all(master) == b""
