"""``ds01ctl report``: a generated week of event log (rotated, gzip, hostile lines) gives exact figures
in every output format; the reading is bounded; the chart is a real PNG, or a clear install hint."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.accounting import Accountant
from controller.act.event_files import ReadStats, log_files, read_events
from controller.cli.main import main
from controller.cli.report import LOOKBACK
from tests.fixtures.report_week import (
    ALICE_RECLAIMED,
    CAROL_HELD,
    CAROL_IDLE,
    EXPECTED_BY_USER,
    EXPECTED_TOTALS,
    OBSERVED,
    T0,
    WEEK_END,
    expected_row,
    hours,
    write_week,
)


@pytest.fixture
def week(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("DS01_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    logs = tmp_path / "log"
    logs.mkdir()
    path = write_week(logs)
    monkeypatch.setenv("DS01_STATE_DIR", str(state))
    monkeypatch.setenv("DS01_EVENTS_LOG", str(path))
    monkeypatch.setenv("DS01_LEDGER", str(tmp_path / "ledger.json"))
    monkeypatch.setenv("DS01_ENV_FILE", "")
    monkeypatch.setenv("NO_COLOR", "1")
    return path


OK_LINE = (
    b'{"timestamp":"2026-03-02T00:00:00Z","event_type":"gpu.release","source":"ds01-controller",'
    b'"user":null,"details":{}}\n'
)
PERIOD = ["--since", "2026-03-02T00:00:00Z", "--until", "2026-03-09T00:00:00Z", "--utc"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def account(path: Path, by: str) -> tuple[dict[str, object], ReadStats]:
    stats = ReadStats()
    acc = Accountant(T0, WEEK_END, by=by, tz=UTC, group_of=lambda user: "student")
    report = acc.feed_all(read_events(path, T0 - LOOKBACK, WEEK_END, stats))
    return report.as_dict(), stats


# --- the figures ------------------------------------------------------------------------------


def test_the_rotated_files_are_read_oldest_first_gzip_included(week: Path) -> None:
    assert [p.name for p in log_files(week)] == [
        "events.jsonl.3.gz",
        "events.jsonl.2.gz",
        "events.jsonl.1",
        "events.jsonl",
    ]


def test_a_known_week_gives_exact_figures_by_user(week: Path) -> None:
    data, _stats = account(week, "user")
    assert data["totals"] == EXPECTED_TOTALS
    assert data["rows"] == [expected_row(k, EXPECTED_BY_USER) for k in sorted(EXPECTED_BY_USER)]
    samples = data["samples"]
    assert isinstance(samples, dict)
    assert samples["observed_hours"] == hours(OBSERVED)
    assert samples["interval_s"] == 300.0
    assert samples["bad"] == 2


def test_garbage_truncated_and_hostile_lines_are_counted_and_skipped(week: Path) -> None:
    _data, stats = account(week, "user")
    assert (stats.garbage, stats.no_timestamp, stats.too_long, stats.unterminated) == (2, 1, 1, 1)
    assert stats.damaged_files == []


def test_by_group_day_and_reason(week: Path) -> None:
    by_group, _ = account(week, "group")
    rows = {r["key"]: r for r in by_group["rows"]}  # type: ignore[union-attr,index]
    assert set(rows) == {"-", "researcher", "student"}
    assert rows["researcher"]["gpu_hours_reclaimed"] == hours(ALICE_RECLAIMED)
    assert rows["student"]["kills"] == 1  # dave: in no sample, grouped by the policy
    by_day, _ = account(week, "day")
    days = {r["key"]: r for r in by_day["rows"]}  # type: ignore[union-attr,index]
    assert sorted(days) == [f"2026-03-0{d}" for d in range(2, 9)]
    # Day 1: alice's last round (300 s) and carol's whole day at half a GPU; alice's reclaim.
    assert days["2026-03-03"]["gpu_hours_held"] == hours(300 + 86400 * 0.5)
    assert days["2026-03-03"]["gpu_hours_reclaimed"] == hours(ALICE_RECLAIMED)
    assert days["2026-03-03"]["stops"] == 1
    by_reason, _ = account(week, "reason")
    reasons = {r["key"]: r for r in by_reason["rows"]}  # type: ignore[union-attr,index]
    assert reasons["idle_timeout"]["gpu_hours_reclaimed"] == hours(ALICE_RECLAIMED)
    assert reasons["idle_timeout"]["stops"] == 1 and reasons["idle_warning"]["warnings"] == 1
    assert "idle_exempt_notice" not in reasons
    assert (
        reasons["gpu_hold_expired"]["gpu_hours_reclaimed"] == EXPECTED_BY_USER["carol"]["gpu_hours_reclaimed"]
    )
    assert reasons["gpu_hold_expired"]["removals"] == 1
    assert reasons["gpu_hold_expired"]["gpu_hours_held"] == 0.0  # held time has no reason: totals only


def test_top_idle_holders_and_hoarding(week: Path) -> None:
    data, _ = account(week, "user")
    assert data["top_idle_holders"] == [
        {
            "user": "carol",
            "group": "student",
            "gpu_hours_idle": hours(CAROL_IDLE),
            "gpu_hours_held": hours(CAROL_HELD),
            "gpu_hours_hoarded": 0.0,
        },
        {
            "user": "alice",
            "group": "researcher",
            "gpu_hours_idle": hours(49 * 300),
            "gpu_hours_held": hours(289 * 300),
            "gpu_hours_hoarded": hours(49 * 300),
        },
    ]
    assert data["hoarding"] == [
        {
            "gpu": "GPU-aaaaaaaa-0000-0000-0000-000000000000",
            "slot": "0",
            "containers": ["alice-train"],
            "users": ["alice"],
            "start": "2026-03-02T20:00:00Z",
            "end": "2026-03-03T00:05:00Z",
            "hours": hours(49 * 300),
            "max_memory_bytes": 2 * 1024**3,
        }
    ]


def test_a_period_inside_the_week_counts_only_its_part(week: Path) -> None:
    """Day 1 alone: alice's reclaim started at 00:02:30 that day, carol's held day at half a GPU."""
    since, until = T0 + timedelta(days=1), T0 + timedelta(days=2)
    acc = Accountant(since, until, by="user", tz=UTC)
    data = acc.feed_all(read_events(week, since - LOOKBACK, until)).as_dict()
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["carol"]["gpu_hours_held"] == 12.0
    assert rows["alice"]["gpu_hours_reclaimed"] == hours(ALICE_RECLAIMED)
    assert rows["alice"]["gpu_hours_held"] == hours(300)


# --- the command, in every format ---------------------------------------------------------------


def test_report_json_has_the_documented_schema_and_the_figures(
    week: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(["report", *PERIOD, "-o", "json"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    assert set(data) == {
        "kind",
        "since",
        "until",
        "by",
        "totals",
        "rows",
        "top_idle_holders",
        "hoarding",
        "samples",
        "notes",
        "generated_at",
        "input",
    }
    assert data["kind"] == "UsageReport" and data["by"] == "user"
    assert (data["since"], data["until"]) == ("2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z")
    assert data["totals"] == EXPECTED_TOTALS
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["alice"] == expected_row("alice", EXPECTED_BY_USER)
    assert rows["dave"] == expected_row("dave", EXPECTED_BY_USER)
    assert data["input"]["skipped"] == {"garbage": 2, "no_timestamp": 1, "too_long": 1, "unterminated": 1}
    assert [Path(f).name for f in data["input"]["files"]] == [
        "events.jsonl.3.gz",
        "events.jsonl.2.gz",
        "events.jsonl.1",
        "events.jsonl",
    ]
    assert "5 line(s) of the event log skipped" in err
    assert "usage samples cover 162.167 h of the 168 h period" in err


def test_report_csv_gives_the_same_figures(week: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _err = run(["report", *PERIOD, "-o", "csv", "--by", "user"], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    by_key = {r["user"]: r for r in rows}
    assert set(by_key) == {*EXPECTED_BY_USER, "TOTAL"}
    for field, value in EXPECTED_TOTALS.items():
        assert float(by_key["TOTAL"][field]) == value, field
    for field, value in expected_row("carol", EXPECTED_BY_USER).items():
        if field != "key":
            assert float(by_key["carol"][field]) == value, field


def test_report_table_gives_the_same_figures(week: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _err = run(["report", *PERIOD], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == (
        "Report 2026-03-02 00:00:00 UTC .. 2026-03-09 00:00:00 UTC, by user; usage samples every 300s, "
        "covering 162.167 h of 168 h"
    )
    header = lines[2].split()
    assert header == [
        "USER",
        "HELD-H",
        "IDLE-H",
        "HOARDED-H",
        "RECLAIMED-H",
        "WARNINGS",
        "STOPS",
        "REMOVALS",
        "KILLS",
        "RESETS",
        "RELEASES",
    ]
    main_rows = lines[3 : lines.index("", 3)]
    table = {ln.split()[0]: ln.split()[1:] for ln in main_rows}
    assert set(table) == {*EXPECTED_BY_USER, "TOTAL"}
    t = EXPECTED_TOTALS
    assert table["TOTAL"] == [
        f"{t['gpu_hours_held']:.2f}",
        f"{t['gpu_hours_idle']:.2f}",
        f"{t['gpu_hours_hoarded']:.2f}",
        f"{t['gpu_hours_reclaimed']:.2f}",
        "1",
        "1",
        "2",
        "1",
        "1",
        "1",
    ]
    assert table["alice"][:4] == ["24.08", "4.08", "4.08", "23.88"]
    assert (
        "Top holders of idle GPUs:" in out and "Hoarding (GPU memory held at near-zero utilisation):" in out
    )


def test_report_reads_a_bounded_amount_whatever_the_period(week: Path) -> None:
    """A rotated file that ends before the period is skipped after its first line."""
    since = T0 + timedelta(days=6, hours=1)
    stats = ReadStats()
    list(read_events(week, since - LOOKBACK, WEEK_END, stats))
    assert [Path(f).name for f in stats.files] == ["events.jsonl.1", "events.jsonl"]


def test_an_over_long_line_is_not_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    ok = OK_LINE
    path.write_bytes(ok + b"y" * (5 * 1024 * 1024) + b"\n" + ok)
    stats = ReadStats()
    found = list(read_events(path, T0 - timedelta(days=1), WEEK_END, stats))
    assert len(found) == 2 and stats.too_long == 1


def test_a_broken_gzip_is_named_and_the_rest_is_read(tmp_path: Path) -> None:
    ok = OK_LINE
    (tmp_path / "events.jsonl.2.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "events.jsonl").write_bytes(ok)
    stats = ReadStats()
    found = list(read_events(tmp_path / "events.jsonl", T0 - timedelta(days=1), WEEK_END, stats))
    assert len(found) == 1
    assert len(stats.damaged_files) == 1 and "events.jsonl.2.gz" in stats.damaged_files[0]


def test_an_unreadable_log_is_one_line_naming_it(
    week: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import controller.act.event_files as event_files

    def denied(path: Path) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(event_files, "_open", denied)
    rc, out, err = run(["report", *PERIOD], capsys)
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and "cannot read the event log" in err and "permission denied" in err


def test_bad_period_is_one_line(week: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(["report", "--since", "1d", "--until", "2d"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "--until must be after --since" in err
    rc, _out, err = run(["report", "--since", "last tuesday"], capsys)
    assert rc == 1 and "cannot read --since" in err


def test_a_user_name_is_never_a_spreadsheet_formula(tmp_path: Path) -> None:
    from controller.cli.report import report_csv

    data = {
        "by": "user",
        "rows": [{"key": "=HYPERLINK(1)", **{k: 0 for k in EXPECTED_TOTALS}}],
        "totals": {k: 0 for k in EXPECTED_TOTALS},
    }
    assert "\n'=HYPERLINK(1)," in report_csv(data)


# --- the chart ------------------------------------------------------------------------------------


def test_plot_writes_a_valid_png(week: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The test setup (scripts/host-setup.sh) installs the report extra: a missing matplotlib fails here.
    import matplotlib

    png = tmp_path / "week.png"
    rc, out, err = run(["report", *PERIOD, "--plot", str(png)], capsys)
    assert rc == 0, err
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    assert raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert width > 100 and height > 100
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[:2] == (height, width)
    assert "TOTAL" in out  # the table is printed too


def test_plot_without_matplotlib_says_how_to_install_it(
    week: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = tmp_path / "week.png"
    rc, out, err = run(["report", *PERIOD, "--plot", str(png)], capsys)
    assert rc == 1
    assert (
        err.strip()
        == "ds01ctl: --plot needs matplotlib, an optional extra: pip install 'ds01-controller[report]'"
    )
    assert not png.exists() and out == ""


def test_plot_needs_a_png_name(week: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(["report", *PERIOD, "--plot", "week.svg"], capsys)
    assert rc == 1 and "*.png" in err


def test_no_samples_means_unknown_hours_not_zero(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"timestamp":"2026-03-03T00:00:00Z","event_type":"container.remove","source":"ds01-controller",'
        b'"user":"bob","details":{"reason":"hold_expired","container_id":"' + b"b" * 64 + b'"}}\n'
    )
    report = Accountant(T0, WEEK_END, tz=UTC).feed_all(read_events(path, T0, WEEK_END))
    assert report.totals.removals == 1
    assert report.rounds == 0
    assert any("no usage samples" in n for n in report.notes)


def test_the_day_is_cut_at_local_midnight() -> None:
    from datetime import timezone

    from controller.accounting import day_spans

    cet = timezone(timedelta(hours=1))
    start = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 23:00 CET
    spans = day_spans(start, start + timedelta(hours=3), cet)
    assert [(d.isoformat(), s) for d, s in spans] == [("2026-03-02", 3600.0), ("2026-03-03", 7200.0)]


def test_a_local_day_follows_daylight_saving_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Europe/Berlin's 2026-03-29 has 23 hours; without a zone given, the system's rules decide."""
    import time as time_module

    from controller.accounting import day_spans

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time_module.tzset()
    try:
        start = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 2026-03-29 00:00 CET
        spans = day_spans(start, start + timedelta(hours=24), None)
        assert [(d.isoformat(), s) for d, s in spans] == [("2026-03-29", 23 * 3600.0), ("2026-03-30", 3600.0)]
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()


def test_with_no_usage_sample_every_output_gives_the_hours_as_unknown_not_zero(
    week: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The warning said the GPU-hours are unknown; the table printed 0.00 and -o json 0.0 for them.
    bare = tmp_path / "bare"
    bare.mkdir()
    log = bare / "events.jsonl"
    monkeypatch.setenv("DS01_EVENTS_LOG", str(log))
    log.write_bytes(
        b'{"timestamp":"2026-03-03T00:00:00Z","event_type":"container.remove","source":"ds01-controller",'
        b'"user":"bob","details":{"reason":"hold_expired","container_id":"' + b"b" * 64 + b'"}}\n'
    )
    rc, out, err = run(["report", *PERIOD], capsys)
    assert rc == 0 and "no usage samples" in err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:] if line.strip()}
    assert rows["TOTAL"][:4] == ["unknown"] * 4 and rows["TOTAL"][6] == "1", rows  # hours; removals
    assert rows["bob"][:4] == ["unknown"] * 4, rows
    _, out, _ = run(["report", *PERIOD, "-o", "json"], capsys)
    data = json.loads(out)
    for item in (data["totals"], *data["rows"]):
        assert [item[k] for k in ("gpu_hours_held", "gpu_hours_idle", "gpu_hours_hoarded")] == [None] * 3
        assert item["gpu_hours_reclaimed"] is None
    assert data["totals"]["removals"] == 1
    _, out, _ = run(["report", *PERIOD, "-o", "csv"], capsys)
    total = next(r for r in csv.reader(io.StringIO(out)) if r[0] == "TOTAL")
    assert total[1:5] == ["", "", "", ""] and total[7] == "1", total


def test_a_period_past_now_ends_now_not_hours_no_sample_could_cover(
    week: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --until in the future counted the hours to come in the period and said of them "the rest
    # (daemon stopped, Docker or NVML unavailable) is not counted".
    since = WEEK_END - timedelta(days=1)
    before = datetime.now(UTC)
    rc, out, err = run(
        ["report", "--since", since.isoformat(), "--until", "2099-01-01T00:00:00Z", "-o", "json"], capsys
    )
    after = datetime.now(UTC)
    assert rc == 0, err
    data = json.loads(out)
    until = datetime.fromisoformat(data["until"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= until <= after
    assert data["samples"]["period_hours"] <= round((after - since).total_seconds() / 3600, 4)
    assert "--until 2099-01-01T00:00:00Z is after now" in err


def test_a_period_written_as_durations_ago_with_a_minus(
    week: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # get events reads --since=-1h as an hour ago; report said "cannot read --since '-2d'", and
    # "--since -2d" (apart) was argparse's "expected one argument".
    for argv in (
        ["--since", "-2d", "--until", "-1d"],
        ["--since=-2d", "--until=-1d"],
        ["--since", "2d", "--until", "1d"],
    ):
        before = datetime.now(UTC)
        rc, out, err = run(["report", *argv, "-o", "json"], capsys)
        assert rc == 0, (argv, err)
        data = json.loads(out)
        since = datetime.fromisoformat(data["since"].replace("Z", "+00:00"))
        until = datetime.fromisoformat(data["until"].replace("Z", "+00:00"))
        assert abs((before - since) - timedelta(days=2)) < timedelta(minutes=1), argv
        assert abs((before - until) - timedelta(days=1)) < timedelta(minutes=1), argv


def test_with_utc_a_date_without_a_zone_is_a_utc_day_as_the_days_the_report_cuts(
    week: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # On a host in Berlin, `--since 2026-03-02 --until 2026-03-09 --utc --by day` reported the
    # period 2026-03-01 23:00 UTC .. 2026-03-08 23:00 UTC, cut into UTC days: a row of one hour for
    # 2026-03-01, one of 23 hours for 2026-03-08, where docs/cli.md shows the week from midnight UTC.
    import time as time_module

    from controller.cli.render import set_utc

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time_module.tzset()
    try:
        argv = ["report", "--since", "2026-03-02", "--until", "2026-03-09", "--by", "day", "-o", "json"]
        rc, out, err = run([*argv, "--utc"], capsys)
        assert rc == 0, err
        data = json.loads(out)
        assert (data["since"], data["until"]) == ("2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z")
        assert min(r["key"] for r in data["rows"]) == "2026-03-02", data["rows"]
        set_utc(False)
        rc, out, err = run(argv, capsys)  # local days: the dates are Berlin's
        assert rc == 0, err
        assert json.loads(out)["since"] == "2026-03-01T23:00:00Z"
    finally:
        set_utc(False)
        monkeypatch.delenv("TZ")
        time_module.tzset()


def test_until_now_as_its_help_says_is_the_default_not_refused(
    week: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # report --help says "--until: now (default)": --until now was refused as unreadable.
    for word in ("now", "NOW", " now "):
        before = datetime.now(UTC)
        rc, out, err = run(["report", "--since", "2d", "--until", word, "-o", "json"], capsys)
        after = datetime.now(UTC)
        assert rc == 0 and "cannot read" not in err and "after now" not in err, (word, err)
        until = datetime.fromisoformat(json.loads(out)["until"].replace("Z", "+00:00"))
        assert before - timedelta(seconds=1) <= until <= after, word
    # --since now is read too: a period that ends where it begins.
    rc, _out, err = run(["report", "--since", "now"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "--since now is not before now" in err, err
    assert "cannot read" not in err


@pytest.mark.parametrize("since", ["2099-01-01T00:00:00Z", "2099-01-01"])
def test_a_since_after_now_is_named_as_the_flag_given_not_until(
    since: str, week: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `report --since <a future time>` said "--until must be after --since" of a --until never given.
    rc, out, err = run(["report", "--since", since], capsys)
    assert rc == 1 and out == "" and err.count("\n") == 1, err
    assert "--until" not in err.split("(")[0], err
    assert f"--since {since}" in err and "after now" in err and "7d" in err, err


def test_since_now_without_until_names_since_and_the_default_end(
    week: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _out, err = run(["report", "--since", "now"], capsys)
    assert rc == 1 and err.count("\n") == 1, err
    assert err.split(": ", 1)[1].startswith("--since now"), err
    assert "--until's default" in err and "7d" in err, err
