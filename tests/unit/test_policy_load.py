"""Loading and reload: the built-in default, spec directories, and the daemon's PolicyHolder."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from desired_state import load
from desired_state.errors import PolicyLoadError
from desired_state.load import RELOAD_SETTLE_S, PolicyHolder, load_policy
from desired_state.validate import validate_paths

T = TypeVar("T")

HEAD = "apiVersion: ds01.io/v1alpha1\n"
GOOD = HEAD + "kind: LifecyclePolicy\nmetadata: {name: p}\nspec:\n  settings: {idleTimeout: %s}\n"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 7, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # a distinct mtime even on coarse file systems
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_nothing_configured_is_the_builtin_default() -> None:
    policy = load_policy()
    assert policy.origin == "built-in default" and policy.lifecycle is None
    assert [s.path for s in policy.sources] == ["<built-in>"] * 5


def test_a_missing_specs_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="specs directory does not exist"):
        load_policy(specs_dir=tmp_path / "nope")


def test_sources_record_file_kind_name(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD % "1h")
    (tmp_path / "b.yml").write_text(HEAD + "kind: UserGroup\nmetadata: {name: g}\n")
    (tmp_path / ".hidden.yaml").write_text("not: [valid")  # editor droppings are ignored
    (tmp_path / "notes.txt").write_text("ignored")
    policy = load_policy(specs_dir=tmp_path)
    assert [(s.kind, s.name, Path(s.path).name, s.document, s.line) for s in policy.sources] == [
        ("LifecyclePolicy", "p", "a.yaml", 1, 1),
        ("UserGroup", "g", "b.yml", 1, 1),
    ]
    assert str(policy.sources[0]).startswith("LifecyclePolicy/p from ")


def test_holder_keeps_the_last_good_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "policy.yaml"
    write(spec, GOOD % "1h")
    clock = Clock()
    holder = PolicyHolder(tmp_path, None, clock=clock)
    first = holder.current
    assert holder.last_error is None and holder.loaded_at == clock.now

    reads = []
    real_collect = load._collect
    monkeypatch.setattr(load, "_collect", lambda *a: reads.append(1) or real_collect(*a))
    assert holder.reload() == [] and reads == []  # nothing changed: nothing read

    write(spec, GOOD % "48")  # an ambiguous plain number
    errors = holder.reload()
    assert len(errors) == 1 and "plain number 48 is ambiguous" in str(errors[0])
    assert holder.current is first  # still in force
    assert holder.last_error == str(errors[0]) and holder.last_error_at == clock.now
    assert holder.reload() == [] and len(reads) == 1  # reported once, not re-read every pass

    write(spec, GOOD % "2h")
    assert holder.reload() == []
    lifecycle = holder.current.lifecycle
    assert lifecycle is not None and lifecycle.spec.settings.idle_timeout == 7200.0
    assert holder.last_error is None and holder.last_error_at is None and holder.loaded_at == clock.now

    holder.force_reload()
    assert holder.reload() == [] and len(reads) == 3


def test_holder_notices_new_files_and_members_files(tmp_path: Path) -> None:
    members = tmp_path / "g.members"
    members.write_text("alice\n")
    (tmp_path / "g.yaml").write_text(
        HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec: {membersFile: g.members}\n"
    )
    holder = PolicyHolder(tmp_path)
    assert holder.current.groups[0].spec.members == ["alice"]
    write(members, "alice\nbob\n")
    assert holder.reload() == []
    assert holder.current.groups[0].spec.members == ["alice", "bob"]
    write(tmp_path / "o.yaml", HEAD + "kind: UserOverride\nmetadata: {name: bob}\nspec: {user: bob}\n")
    assert holder.reload() == [] and len(holder.current.overrides) == 1


def test_holder_refuses_to_start_on_a_bad_policy(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD % "-1h")
    with pytest.raises(PolicyLoadError, match="negative duration"):
        PolicyHolder(tmp_path)


def test_holder_with_ds01_config(tmp_path: Path) -> None:
    limits = tmp_path / "resource-limits.yaml"
    write(limits, "defaults:\n  idle_timeout_h: 1\n")
    holder = PolicyHolder(None, tmp_path)
    assert holder.current.lifecycle is not None
    write(tmp_path / "user-overrides.yaml", "alice: {idle_timeout_h: 2}\n")
    assert holder.reload() == [] and [o.spec.user for o in holder.current.overrides] == ["alice"]
    (tmp_path / "groups").mkdir()
    write(tmp_path / "groups" / "student.members", "sam\n")
    write(limits, "defaults:\n  idle_timeout_h: 1\ngroups:\n  student: {}\n")
    assert holder.reload() == [] and holder.current.groups[0].spec.members == ["sam"]


def test_spec_text_reads_members_files_beside_its_name(tmp_path: Path) -> None:
    from desired_state.load import load_spec_text

    (tmp_path / "g.members").write_text("zoe\n# not a member\n")
    text = HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec: {members: [amy], membersFile: g.members}\n"
    policy = load_spec_text(text, name=str(tmp_path / "groups.yaml"))
    assert policy.groups[0].spec.members == ["amy", "zoe"]
    assert policy.groups[0].spec.members_file is None  # folded in; the source records the file
    assert "g.members" in policy.sources[0].detail
    with pytest.raises(PolicyLoadError, match=r"membersFile 'g\.members' not found"):
        load_spec_text(text, name=str(tmp_path / "elsewhere" / "groups.yaml"))


def test_a_spec_file_that_cannot_be_read_is_an_error_never_the_builtin_default(tmp_path: Path) -> None:
    """A skipped spec file took its documents out of the policy: a directory whose only file was a
    dangling link, or was moved aside to edit, ran the built-in default (30 min idle, 24 h runtime)
    where the admin's file said 4 h and a week; at start and on reload, with no error."""
    store = tmp_path / "store"
    store.mkdir()
    specs = tmp_path / "specs"
    specs.mkdir()
    target = store / "site.yaml"
    write(target, GOOD % "4h")
    (specs / "site.yaml").symlink_to(target)
    holder = PolicyHolder(specs)
    first = holder.current
    lifecycle = first.lifecycle
    assert lifecycle is not None and lifecycle.spec.settings.idle_timeout == 4 * 3600.0

    target.unlink()  # the link's target is gone (a redeployed store)
    errors = holder.reload()
    assert [e.problem for e in errors] == [f"a symbolic link to {target}, which does not exist"]
    assert str(specs / "site.yaml") in str(errors[0]) and holder.current is first

    (specs / "site.yaml").unlink()  # moved aside to edit
    errors = holder.reload()
    assert [e.problem for e in errors] == ["the specs directory holds no *.yaml or *.yml files"]
    assert holder.current is first
    with pytest.raises(PolicyLoadError, match="holds no"):
        PolicyHolder(specs)

    write(specs / "site.YAML", GOOD % "2h")  # the suffix in capitals is a spec file too
    assert holder.reload() == []
    lifecycle = holder.current.lifecycle
    assert lifecycle is not None and lifecycle.spec.settings.idle_timeout == 2 * 3600.0


def test_a_members_file_that_cannot_be_resolved_is_an_error_at_start_and_on_reload(tmp_path: Path) -> None:
    group = HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec: {membersFile: %s}\n"
    write(tmp_path / "g.yaml", group % "g.members")
    write(tmp_path / "g.members", "alice\n")
    holder = PolicyHolder(tmp_path)
    first = holder.current
    (tmp_path / "loop.members").symlink_to(tmp_path / "loop.members")
    write(tmp_path / "g.yaml", group % "loop.members")
    errors = holder.reload()  # a raw exception here failed every pass
    assert len(errors) == 1 and "membersFile 'loop.members' cannot be resolved" in str(errors[0])
    assert errors[0].field == "spec.membersFile" and errors[0].line == 4
    assert holder.current is first
    write(tmp_path / "g.yaml", group % '"a\\0b"')  # a NUL byte in the name
    errors = holder.reload()
    assert len(errors) == 1 and "cannot be resolved" in str(errors[0]) and holder.current is first
    with pytest.raises(PolicyLoadError, match="cannot be resolved"):
        PolicyHolder(tmp_path)


def test_an_unforeseen_failure_while_loading_keeps_the_last_good_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "p.yaml", GOOD % "1h")
    holder = PolicyHolder(tmp_path)
    first = holder.current

    def broken(*_: object) -> None:
        raise OSError(116, "Stale file handle")

    monkeypatch.setattr(load, "_collect_inputs", broken)
    write(tmp_path / "p.yaml", GOOD % "2h")
    (error,) = holder.reload()
    assert "cannot load the policy: OSError" in str(error) and "Stale file handle" in str(error)
    assert holder.current is first and holder.last_error == str(error)


def test_a_comma_separated_members_line_is_an_error_not_one_member(tmp_path: Path) -> None:
    """`getent group researchers | cut -d: -f4` writes one line, rita,sam,tom: read as one member
    named "rita,sam,tom", all three fell to the default group."""
    write(
        tmp_path / "g.yaml", HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec: {membersFile: g.members}\n"
    )
    write(tmp_path / "g.members", "alice\nrita,sam,tom\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(specs_dir=tmp_path)
    (error,) = caught.value.errors
    assert error.line == 2 and "'rita,sam,tom' is not one login name" in str(error)
    assert "a comma-separated list is one line" in str(error)


def test_a_members_file_of_nul_bytes_left_by_a_crash_is_an_error_not_a_member(tmp_path: Path) -> None:
    """A file written shortly before a power loss can come back as a run of NUL bytes (delayed
    allocation): read as one member named by them, every real member fell to the default group."""
    write(tmp_path / "resource-limits.yaml", "groups:\n  student: {}\n  researcher: {}\n")
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "researcher.members").write_bytes(b"ann\n" + b"\0" * 64)
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(ds01_config_dir=tmp_path)
    (error,) = caught.value.errors
    assert error.line == 2 and "researcher.members" in str(error)
    assert "a control character" in str(error) and "NUL" in str(error)


def aged(path: Path, seconds: float) -> None:
    """The file as if last written ``seconds`` ago."""
    stamp = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(stamp, stamp))


def test_the_daemon_reads_a_change_only_once_the_files_have_settled(tmp_path: Path) -> None:
    """A file rewritten in place and read half-way through is often valid YAML that says less (the
    first of its documents): one pass of it lowered a running job's limits for good."""
    spec = tmp_path / "policy.yaml"
    spec.write_text(GOOD % "1h")
    holder = PolicyHolder(tmp_path, settle_s=RELOAD_SETTLE_S)
    first = holder.current
    spec.write_text(GOOD % "2h")  # just written: the writer may not be done
    assert holder.reload() == [] and holder.current is first
    assert holder.reload() == [] and holder.current is first, "still not settled"
    aged(spec, RELOAD_SETTLE_S + 1)
    aged(tmp_path, RELOAD_SETTLE_S + 1)  # (its directory too: a file added or removed is a write)
    assert holder.reload() == []
    lifecycle = holder.current.lifecycle
    assert lifecycle is not None and lifecycle.spec.settings.idle_timeout == 7200.0
    # A file with a time far in the future (a clock oddity) is not a write under way.
    spec.write_text(GOOD % "3h")
    aged(spec, -3600)
    assert holder.reload() == []
    lifecycle = holder.current.lifecycle
    assert lifecycle is not None and lifecycle.spec.settings.idle_timeout == 3 * 3600.0


def test_a_file_that_changes_while_the_daemon_reads_it_is_read_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "policy.yaml"
    spec.write_text(GOOD % "1h")
    holder = PolicyHolder(tmp_path, settle_s=RELOAD_SETTLE_S)
    first = holder.current
    spec.write_text(HEAD + "kind: LifecyclePolicy\n")  # the half of it read ...
    aged(spec, 10)
    aged(tmp_path, 10)
    real_collect = load._collect

    def read_then_finish(*args: object) -> object:
        found = real_collect(*args)  # type: ignore[arg-type]
        spec.write_text(GOOD % "2h")  # ... then the writer finishes
        aged(spec, 5)
        return found

    monkeypatch.setattr(load, "_collect", read_then_finish)
    assert holder.reload() == [] and holder.current is first, "what was read is not applied"
    monkeypatch.setattr(load, "_collect", real_collect)
    assert holder.reload() == []
    lifecycle = holder.current.lifecycle
    assert lifecycle is not None and lifecycle.spec.settings.idle_timeout == 7200.0


def test_a_reload_asked_for_reads_a_fresh_change_at_once(tmp_path: Path) -> None:
    spec = tmp_path / "policy.yaml"
    spec.write_text(GOOD % "1h")
    holder = PolicyHolder(tmp_path, settle_s=RELOAD_SETTLE_S)
    spec.write_text(GOOD % "2h")
    holder.force_reload()  # SIGHUP, systemctl reload: the admin is done writing
    assert holder.reload() == []
    lifecycle = holder.current.lifecycle
    assert lifecycle is not None and lifecycle.spec.settings.idle_timeout == 7200.0


GROUP = HEAD + "kind: UserGroup\nmetadata: {name: researcher}\nspec:\n  members: [ann]\n"


def test_a_members_file_the_policy_newly_reads_is_read_only_once_it_has_settled(tmp_path: Path) -> None:
    """A spec that now names a members file kept elsewhere (DS01's groups directory): that file is
    not among those the daemon watched, and one still being written, read at once, put a group of
    half its members in force (the others got the default group's limits, lowered for good)."""
    specs, store = tmp_path / "specs", tmp_path / "store"
    specs.mkdir()
    store.mkdir()
    spec, members = specs / "groups.yaml", store / "researcher.members"
    spec.write_text(GROUP)
    members.write_text("ann\n")  # (a file that was there: its directory's time says nothing)
    aged(members, 60)
    holder = PolicyHolder(specs, settle_s=RELOAD_SETTLE_S)
    first = holder.current
    spec.write_text(GROUP + f"  membersFile: {members}\n")
    aged(spec, 10)
    aged(specs, 10)
    members.write_text("ann\nbob\n")  # being written now: the writer may not be done
    assert holder.reload() == [] and holder.current is first, "a file still being written is not applied"
    members.write_text("ann\nbob\ncy\n")
    aged(members, RELOAD_SETTLE_S + 1)
    assert holder.reload() == []
    assert holder.current.groups[0].spec.members == ["ann", "bob", "cy"]


def test_a_members_file_the_policy_newly_reads_that_changes_while_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, store = tmp_path / "specs", tmp_path / "store"
    specs.mkdir()
    store.mkdir()
    spec, members = specs / "groups.yaml", store / "researcher.members"
    spec.write_text(GROUP)
    holder = PolicyHolder(specs, settle_s=RELOAD_SETTLE_S)
    spec.write_text(GROUP + f"  membersFile: {members}\n")
    members.write_text("ann\n")  # the half of it read ...
    for path in (spec, specs, members, store):
        aged(path, 10)
    real_collect = load._collect

    def read_then_finish(*args: object) -> object:
        found = real_collect(*args)  # type: ignore[arg-type]
        members.write_text("ann\nbob\n")  # ... then the writer finishes
        aged(members, 5)
        return found

    monkeypatch.setattr(load, "_collect", read_then_finish)
    holder.reload()
    monkeypatch.setattr(load, "_collect", real_collect)
    holder.reload()
    assert holder.current.groups[0].spec.members == ["ann", "bob"], "what was read half-way is not kept"


def test_a_members_file_that_vanishes_keeps_its_members_in_their_group(tmp_path: Path) -> None:
    """DS01's members files are its one source of membership. Deleted (a `git clean -x`, a sync
    job that removes the file and rewrites it slowly), read as "no members": every researcher
    fell to the default group, with its shorter timeouts and lower limits (DS01's 42a2b4f)."""
    limits, members = tmp_path / "resource-limits.yaml", tmp_path / "groups" / "researcher.members"
    write(limits, "default_group: student\ngroups:\n  student: {}\n  researcher:\n    idle_timeout_h: 4\n")
    members.parent.mkdir()
    write(members, "ann\nbob\n")
    holder = PolicyHolder(None, tmp_path)
    first = holder.current
    members.unlink()
    (error,) = holder.reload()
    assert str(members) in str(error) and "ann, bob" in str(error) and "empty it" in str(error)
    assert holder.current is first
    group = holder.current.group("researcher")
    assert group is not None and group.spec.members == ["ann", "bob"]
    # Emptied, the file says so: the members leave the group.
    members.write_text("# nobody\n")
    assert holder.reload() == []
    group = holder.current.group("researcher")
    assert group is not None and group.spec.members == []


def test_a_members_file_gone_with_its_group_or_its_members_is_no_error(tmp_path: Path) -> None:
    limits, members = tmp_path / "resource-limits.yaml", tmp_path / "groups" / "researcher.members"
    write(limits, "groups:\n  student: {}\n  researcher:\n    members: [ann]\n")
    members.parent.mkdir()
    write(members, "ann\n")
    holder = PolicyHolder(None, tmp_path)
    members.unlink()  # ann is still listed inline: nobody leaves the group
    assert holder.reload() == []
    write(members, "bob\n")
    assert holder.reload() == []
    members.unlink()
    write(limits, "groups:\n  student: {}\n")  # the group removed with its file
    assert holder.reload() == [] and holder.current.group("researcher") is None


@pytest.mark.parametrize(
    ("name", "text", "emptied"),
    [
        (
            "lifecycle-exemptions.yaml",
            "exemptions:\n  - {username: ann, exempt_from: [idle_timeout_h], reason: thesis}\n",
            "exemptions: []\n",
        ),
        ("user-overrides.yaml", "ann: {idle_timeout_h: null}\n", "# nobody\n"),
    ],
)
def test_a_ds01_file_that_vanishes_keeps_its_overrides_and_exemptions(
    tmp_path: Path, name: str, text: str, emptied: str
) -> None:
    """Git-ignored like the members files: a `git clean -x` of DS01's checkout removed them, and
    the next reload dropped every exemption and override, stopping the jobs they kept running."""
    write(tmp_path / "resource-limits.yaml", "defaults:\n  idle_timeout_h: 1\n")
    path = tmp_path / name
    write(path, text)
    holder = PolicyHolder(None, tmp_path)
    first = holder.current
    path.unlink()
    (error,) = holder.reload()
    assert str(path) in str(error) and "'ann'" in str(error) and "empty it" in str(error)
    assert holder.current is first
    write(path, emptied)
    assert holder.reload() == []
    assert holder.current.exemptions == () and holder.current.overrides == ()


def _read_within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s result; fails (instead of hanging the test run) when it blocks past ``seconds``."""
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(call())
        except BaseException as exc:  # raised again in the test's thread
            failed.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if failed:
        raise failed[0]
    assert done, f"still reading after {seconds} s: blocked on a file that is not a regular file"
    return done[0]


def _release_readers(fifo: Path) -> None:
    """Open ``fifo`` for writing and close it: a reader blocked on it gets end-of-file and returns."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_policy_file_replaced_by_a_named_pipe_is_an_error_never_a_hang(tmp_path: Path) -> None:
    """A members file (or any policy file) that is a named pipe blocked the read until something
    wrote to it: the reload runs inside the pass, so no pass finished, nothing was enforced, and a
    restarted daemon hung at start. It is an error naming the file; the policy in force stays."""
    write(tmp_path / "resource-limits.yaml", "defaults:\n  idle_timeout_h: 1\ngroups:\n  researcher: {}\n")
    members = tmp_path / "groups" / "researcher.members"
    members.parent.mkdir()
    write(members, "ann\n")
    holder = PolicyHolder(None, tmp_path)
    first = holder.current
    members.unlink()
    os.mkfifo(members)
    try:
        errors = _read_within(10, holder.reload)
        assert [(e.file, e.problem) for e in errors] == [(str(members), "a named pipe, not a regular file")]
        assert "fix: " in str(errors[0]) and holder.current is first
        with pytest.raises(PolicyLoadError, match="a named pipe, not a regular file"):
            _read_within(10, lambda: PolicyHolder(None, tmp_path))
        messages = _read_within(10, lambda: validate_paths([tmp_path]))
        assert messages == [str(errors[0])]  # ds01ctl validate says what the daemon says
    finally:
        _release_readers(members)


def test_a_vanished_ds01_overrides_file_under_a_specs_layer_keeps_its_overrides(tmp_path: Path) -> None:
    """With a UserOverride of the specs layered over DS01's for the same user, the layered override
    in force was taken for the specs' alone: DS01's user-overrides.yaml gone from under the daemon (a
    `git clean -x`) dropped its keys without a word, and ann's "no limits" override became the
    default 30 min idle timeout and 24 h runtime. The policy in force keeps them, as without specs."""
    from datetime import UTC, datetime

    from desired_state.resolve import resolve_effective_policy

    ds01, specs = tmp_path / "ds01", tmp_path / "specs"
    ds01.mkdir()
    specs.mkdir()
    write(ds01 / "resource-limits.yaml", "defaults:\n  idle_timeout_h: 0.5\n  max_runtime_h: 24\n")
    overrides = ds01 / "user-overrides.yaml"
    write(overrides, "ann:\n  idle_timeout_h: null\n  max_runtime_h: null\n")
    write(
        specs / "site.yaml",
        HEAD + "kind: UserOverride\nmetadata: {name: ann}\nspec:\n  user: ann\n  settings: {warnLead: 1m}\n",
    )
    holder = PolicyHolder(specs, ds01)
    first = holder.current

    def ann_limits() -> tuple[float | None, float | None]:
        eff = resolve_effective_policy(
            holder.current, owner="ann", container_type="atomic", name="", labels={}, now=datetime.now(UTC)
        )
        return eff.idle_timeout_s.value, eff.max_runtime_s.value

    assert ann_limits() == (None, None)
    overrides.unlink()
    (error,) = holder.reload()
    assert str(overrides) in str(error) and "'ann'" in str(error) and "empty it" in str(error)
    assert holder.current is first and ann_limits() == (None, None)
    write(overrides, "# nobody\n")  # emptied on purpose: the specs' keys alone
    assert holder.reload() == [] and ann_limits() == (1800.0, 86400.0)


def test_a_members_file_of_a_spec_that_is_a_named_pipe_says_so_at_its_key(tmp_path: Path) -> None:
    """It was reported "not found", which sent the admin looking for a file that is there."""
    write(
        tmp_path / "g.yaml", HEAD + "kind: UserGroup\nmetadata: {name: g}\nspec: {membersFile: g.members}\n"
    )
    os.mkfifo(tmp_path / "g.members")
    try:
        with pytest.raises(PolicyLoadError) as caught:
            _read_within(10, lambda: PolicyHolder(tmp_path))
        (error,) = caught.value.errors
        assert error.field == "spec.membersFile" and error.line == 4
        assert "a named pipe, not a regular file" in error.problem and "not found" not in error.problem
    finally:
        _release_readers(tmp_path / "g.members")
