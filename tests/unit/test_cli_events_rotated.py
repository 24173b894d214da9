"""``describe``'s events after logrotate renamed the event log.

The shipped rotation (deploy/logrotate.d) renames ``events.jsonl`` weekly and creates nothing: the
next event creates it again. Until then, and while the live file holds fewer than the events
``describe`` shows, a container's events are in the rotations: reading only the live file said
"no events yet" of a container warned yesterday, and ``<none>`` where its stop was logged.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from controller.act.events import EventLog
from controller.cli.describe import describe_container, describe_gpu, describe_user
from tests.fixtures import builders as b
from tests.fixtures.local_zone import utc_clock  # noqa: F401 (the fixture)
from tests.unit import cli_world as w

pytestmark = pytest.mark.usefixtures("utc_clock")  # clock times in the output are local


def _events_section(text: str) -> list[str]:
    lines = text.splitlines()
    return [ln.strip() for ln in lines[lines.index("Events:") + 1 :] if ln.strip()]


def _alice_warned(log: EventLog, *, hours: float) -> None:
    log.write(
        "controller.warning",
        user="alice",
        details={"container": "alice-train", "container_id": b.cid("alice-train")[:12], "reason": "idle"},
        at=b.ago(minutes=hours * 60),
    )


def test_a_container_s_events_are_read_from_the_rotation_when_the_live_log_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _alice_warned(EventLog(path), hours=2)
    path.rename(tmp_path / "events.jsonl.1")  # logrotate, nothing written since

    events = _events_section(describe_container(w.view(path), "alice-train"))

    assert len(events) == 2, events  # the header and the one event
    assert "controller.warning" in events[1] and "reason=idle" in events[1]


def test_the_live_log_and_the_rotations_are_read_as_one_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for hours in (5.5, 5, 4):
        _alice_warned(log, hours=hours)
    rotated = tmp_path / "events.jsonl.2.gz"
    with gzip.open(rotated, "wb") as z:
        z.write(path.read_bytes())
    path.unlink()
    _alice_warned(log, hours=3)  # in what became events.jsonl.1
    path.rename(tmp_path / "events.jsonl.1")
    _alice_warned(log, hours=1)  # the live log again

    events = _events_section(describe_container(w.view(path), "alice-train"))

    times = [row.split()[2] for row in events[1:]]  # AGE, the date, the time
    assert times == ["06:30:00", "07:00:00", "08:00:00", "09:00:00", "11:00:00"]


def test_events_before_the_container_was_created_are_another_container_s(tmp_path: Path) -> None:
    # alice-train was created 6 hours ago; a container of that name before it logged no id.
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("controller.stop", user="alice", details={"container": "alice-train"}, at=b.ago(hours=9))
    _alice_warned(log, hours=1)

    events = _events_section(describe_container(w.view(path), "alice-train"))

    assert len(events) == 2 and "controller.warning" in events[1], events


def test_a_container_s_events_reach_back_to_its_creation_and_no_further(tmp_path: Path) -> None:
    # bob-notebook was created 3 days ago: its events reach back that far, no further; a rotation
    # that ends before then is never read (this one could not be).
    path = tmp_path / "events.jsonl"
    (tmp_path / "events.jsonl.3.gz").write_bytes(b"not gzip at all")
    old = EventLog(tmp_path / "old.jsonl")
    old.write("controller.warning", user="bob", details={"container": "bob-notebook"}, at=b.ago(days=5))
    (tmp_path / "old.jsonl").rename(tmp_path / "events.jsonl.2")
    mid = EventLog(tmp_path / "mid.jsonl")
    mid.write("controller.warning", user="bob", details={"container": "bob-notebook"}, at=b.ago(days=2))
    (tmp_path / "mid.jsonl").rename(tmp_path / "events.jsonl.1")

    events = _events_section(describe_container(w.view(path), "bob-notebook"))

    assert [row.split()[0] for row in events[1:]] == ["2d"]


def test_a_user_s_events_after_a_rotation_say_where_they_went(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _alice_warned(EventLog(path), hours=2)
    path.rename(tmp_path / "events.jsonl.1")

    events = _events_section(describe_user(w.view(path), "alice"))

    assert len(events) == 1
    assert "none since the log was rotated" in events[0]
    assert "events.jsonl.1" in events[0] and "no events yet" not in events[0]


def test_no_rotation_and_no_log_is_still_no_events_yet(tmp_path: Path) -> None:
    events = _events_section(describe_user(w.view(tmp_path / "events.jsonl"), "alice"))

    assert len(events) == 1 and events[0].startswith("no events yet"), events


def test_no_rotation_and_no_log_is_no_events_yet_for_a_container_too(tmp_path: Path) -> None:
    # A container's events are read with a period (since its creation): the missing log read as
    # "<none>", as if the log existed and held nothing of it.
    events = _events_section(describe_container(w.view(tmp_path / "events.jsonl"), "alice-train"))

    assert len(events) == 1 and events[0].startswith("no events yet"), events


def test_a_long_lived_container_s_rotations_are_read_back_to_the_lookback_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eve-web was created 10 days ago; with a lookback of one day its 5-day-old event is not read.
    from datetime import timedelta

    from controller.cli import view as view_module

    monkeypatch.setattr(view_module, "EVENTS_LOOKBACK", timedelta(days=1))
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("controller.warning", user="eve", details={"container": "eve-web"}, at=b.ago(days=5))
    log.write("controller.warning", user="eve", details={"container": "eve-web"}, at=b.ago(hours=12))
    path.rename(tmp_path / "events.jsonl.1")

    events = _events_section(describe_container(w.view(path), "eve-web"))

    assert [row.split()[0] for row in events[1:]] == ["12h"]


def test_the_rotations_are_read_for_lines_that_name_the_container_or_user_only(tmp_path: Path) -> None:
    # Lines that cannot match are not decoded (a week's rotation is read for one container in a
    # fraction of the time): every line that does match still names it, however the event names it.
    from controller.act.event_files import tail_since
    from controller.act.events import EventFilter

    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    cid = "ab" * 32
    log.write("controller.warning", user="alice", details={"container": "alice-train"}, at=b.ago(hours=5))
    log.write(
        "detection.container_discovered",
        user="alice",
        details={"container_id": cid, "name": "alice-train"},
        at=b.ago(hours=4),
    )
    log.write(
        "controller.stop",
        user="bob",
        details={"container": "bob-nb", "container_id": cid[:12]},
        at=b.ago(hours=3),
    )
    log.write("controller.usage_sample", user=None, details={"v": 1}, at=b.ago(hours=2))
    path.rename(tmp_path / "events.jsonl.1")
    since = b.ago(days=1)

    def types(flt: EventFilter) -> list[str]:
        return [e["event_type"] for e in tail_since(path, 10, flt)]

    assert types(EventFilter(container="alice-train", since=since)) == [
        "controller.warning",
        "detection.container_discovered",
    ]
    assert types(EventFilter(container=cid[:12], since=since)) == [
        "detection.container_discovered",
        "controller.stop",
    ]
    assert types(EventFilter(user="bob", since=since)) == ["controller.stop"]
    assert types(EventFilter(since=since)) == [
        "controller.warning",
        "detection.container_discovered",
        "controller.stop",
        "controller.usage_sample",
    ]
    assert types(EventFilter(user='o"dd\\', since=since)) == []  # no needle for it: read and decoded


def test_a_gpu_s_events_behind_many_others_in_the_live_log_are_found_not_none(tmp_path: Path) -> None:
    # describe gpu looked for the GPU's events among the live log's last 500 lines only: a reset 30
    # hours ago, behind a day of usage samples, read as "<none>".
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    details = {"gpu": b.GPU0, "status": "cleaned", "reason": "gpu_dirty"}
    log.write("gpu.health_check", user=None, details=details, at=b.ago(hours=30))
    for i in range(600):
        log.write("controller.usage_sample", user=None, details={"round": i}, at=b.ago(hours=29))
    log.write("gpu.release", user="bob", details={"gpu": b.GPU1, "container": "x"}, at=b.ago(hours=1))

    events = _events_section(describe_gpu(w.view(path), "0"))

    assert len(events) == 2 and "gpu.health_check" in events[1], events
    assert "gpu.release" not in "".join(events)


def _renamed_history(log: EventLog) -> None:
    # alice-train was "alice-old" until a docker rename an hour ago: the same container, its id.
    cid = b.cid("alice-train")
    log.write(
        "controller.warning",
        user="alice",
        details={"container": "alice-old", "container_id": cid[:12], "reason": "idle"},
        at=b.ago(hours=4),
    )
    log.write(
        "detection.container_discovered",
        user="alice",
        details={"container_id": cid, "name": "alice-old"},
        at=b.ago(hours=3),
    )
    # Another container named alice-old, with its own id, and one of no id: not alice-train's.
    log.write(
        "controller.stop",
        user="alice",
        details={"container": "alice-old", "container_id": "ee" * 32},
        at=b.ago(hours=2.5),
    )
    log.write("controller.remove", user="alice", details={"container": "alice-old"}, at=b.ago(hours=2))


def test_a_renamed_container_s_events_under_its_old_name_are_its_own(tmp_path: Path) -> None:
    # After a docker rename, describe looked for the container's events by its new name only: those
    # logged before, under the old name with its id, read as "<none>".
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    _renamed_history(log)
    _alice_warned(log, hours=0.5)

    events = _events_section(describe_container(w.view(path), "alice-train"))

    assert [row.split()[4] for row in events[1:]] == [
        "controller.warning",
        "detection.container_discovered",
        "controller.warning",
    ], events


def test_a_renamed_container_s_events_under_its_old_name_are_read_from_the_rotations(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _renamed_history(EventLog(path))
    path.rename(tmp_path / "events.jsonl.1")
    _alice_warned(EventLog(path), hours=0.5)

    events = _events_section(describe_container(w.view(path), "alice-train"))

    assert [row.split()[4] for row in events[1:]] == [
        "controller.warning",
        "detection.container_discovered",
        "controller.warning",
    ], events
