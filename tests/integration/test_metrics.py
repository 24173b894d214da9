"""The metrics endpoint over real HTTP, and the shipped alert rules and dashboard against it.

The endpoint is started on an ephemeral port and scraped with urllib; the exposition is parsed with
prometheus_client's own parser. The alert rules and the Grafana dashboard are checked to reference
only metrics, labels and label values that :mod:`controller.ops.metrics` really exports.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import prometheus_client
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from controller.ops.metrics import (
    MAX_LABEL_CHARS,
    GpuState,
    Metrics,
    MetricsBindError,
    MetricsServer,
    clean_label,
)

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "ds01-alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "ds01-dashboard.json"
NOW_EPOCH = 1_760_000_000.0


def scrape(server: MetricsServer) -> dict[str, list[Sample]]:
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode("utf-8")
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matches = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: expected one sample, got {matches}"
    return matches[0]


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer]]:
    m = Metrics(version="9.9.9", now_epoch=NOW_EPOCH - 60)
    server = m.serve("127.0.0.1", 0)
    try:
        yield m, server
    finally:
        server.close()


def full_pass(m: Metrics, *, succeeded: bool = True, now_epoch: float = NOW_EPOCH) -> None:
    m.observe_pass(
        duration_s=1.5,
        snapshot_health=[
            ("docker", True, 0.2),
            ("nvml", True, 0.03),
            ("procfs", True, 0.01),
            ("ledger", False, 0.0),
        ],
        containers_by_state_type={
            ("running", "devcontainer"): 3,
            ("exited", "docker"): 2,
            ("created", "atomic"): 1,
        },
        gpus_by_state={GpuState.HELD: 4, GpuState.IDLE_HELD: 2, GpuState.FREE: 2},
        orphans=1,
        breaker_tripped=False,
        succeeded=succeeded,
        now_epoch=now_epoch,
        gpu_idle_held_s={"GPU-0a1b": 5400.0, "MIG-77aa": 120.0},
    )


def test_a_pass_and_actions_are_scraped_over_http(served: tuple[Metrics, MetricsServer]) -> None:
    m, server = served
    full_pass(m)
    m.record_action("StopContainer", "IdleTimeout", "done")
    m.record_action("StopContainer", "IdleTimeout", "done")
    m.record_action("KillProcess", "OrphanedProcess", "failed")
    m.add_reclaimed_gpu_seconds(2 * 5400.0)
    m.add_reclaimed_gpu_seconds(0.0)  # nothing reclaimed: no change
    s = scrape(server)

    assert value(s, "ds01_pass_duration_seconds_count") == 1
    assert value(s, "ds01_pass_duration_seconds_sum") == 1.5
    assert value(s, "ds01_pass_duration_seconds_bucket", le="1.0") == 0
    assert value(s, "ds01_pass_duration_seconds_bucket", le="2.5") == 1
    assert value(s, "ds01_passes_total", outcome="succeeded") == 1
    assert value(s, "ds01_passes_total", outcome="failed") == 0
    assert value(s, "ds01_observe_duration_seconds_sum", domain="docker") == 0.2
    assert value(s, "ds01_observe_duration_seconds_count", domain="ledger") == 1
    assert value(s, "ds01_actions_total", kind="StopContainer", reason="IdleTimeout", outcome="done") == 2
    assert value(s, "ds01_actions_total", kind="KillProcess", reason="OrphanedProcess", outcome="failed") == 1
    assert value(s, "ds01_idle_gpu_seconds_reclaimed_total") == 10800.0
    assert value(s, "ds01_containers", state="running", type="devcontainer") == 3
    assert value(s, "ds01_containers", state="exited", type="docker") == 2
    assert len(s["ds01_containers"]) == 3
    assert value(s, "ds01_gpus", state="held") == 4
    assert value(s, "ds01_gpus", state="idle-held") == 2
    assert value(s, "ds01_gpus", state="free") == 2
    assert value(s, "ds01_gpu_idle_held_seconds", gpu="GPU-0a1b") == 5400.0
    assert value(s, "ds01_orphan_processes") == 1
    assert value(s, "ds01_domain_up", domain="docker") == 1
    assert value(s, "ds01_domain_up", domain="ledger") == 0
    assert value(s, "ds01_breaker_tripped") == 0
    assert value(s, "ds01_last_successful_pass_timestamp_seconds") == NOW_EPOCH
    assert value(s, "ds01_controller_start_time_seconds") == NOW_EPOCH - 60
    assert value(s, "ds01_build_info", version="9.9.9") == 1
    assert "process_resident_memory_bytes" in s


def test_before_the_first_pass_only_never_succeeded_is_claimed(served: tuple[Metrics, MetricsServer]) -> None:
    _, server = served
    s = scrape(server)
    assert value(s, "ds01_last_successful_pass_timestamp_seconds") == 0
    for unknown in (
        "ds01_containers",
        "ds01_gpus",
        "ds01_orphan_processes",
        "ds01_domain_up",
        "ds01_breaker_tripped",
    ):
        assert unknown not in s, f"{unknown} must not read as zero before anything was observed"


def test_a_failed_pass_keeps_the_last_success_and_unknown_values_disappear(
    served: tuple[Metrics, MetricsServer],
) -> None:
    m, server = served
    full_pass(m)
    m.observe_pass(
        duration_s=0.4,
        snapshot_health=[("docker", False, 0.4)],  # nvml, procfs, ledger not observed this time
        containers_by_state_type=None,
        gpus_by_state=None,
        orphans=None,
        breaker_tripped=True,
        succeeded=False,
        now_epoch=NOW_EPOCH + 30,
    )
    s = scrape(server)
    assert value(s, "ds01_last_successful_pass_timestamp_seconds") == NOW_EPOCH
    assert value(s, "ds01_passes_total", outcome="failed") == 1
    assert value(s, "ds01_passes_total", outcome="succeeded") == 1
    assert value(s, "ds01_breaker_tripped") == 1
    for domain in ("docker", "nvml", "procfs", "ledger"):
        assert value(s, "ds01_domain_up", domain=domain) == 0, domain
    for unknown in ("ds01_containers", "ds01_gpus", "ds01_orphan_processes", "ds01_gpu_idle_held_seconds"):
        assert unknown not in s, f"{unknown}: unknown must not be exported as zero"


def test_a_gpu_state_not_reported_reads_zero() -> None:
    m = Metrics()
    m.observe_pass(0.1, [], {}, {GpuState.FREE: 8}, 0, False, True, NOW_EPOCH)
    s = {
        x.labels["state"]: x.value
        for f in text_string_to_metric_families(m.render().decode())
        for x in f.samples
        if x.name == "ds01_gpus"
    }
    assert s == {"free": 8, "held": 0, "idle-held": 0}


def test_label_values_are_sanitised_and_bounded() -> None:
    m = Metrics()
    hostile = "GPU-\x1b[31mred\nfake_metric 1\t" + "x" * 500
    m.observe_pass(0.1, [], {}, {}, 0, False, True, NOW_EPOCH, gpu_idle_held_s={hostile: 10.0})
    m.record_action("StopContainer", "\x00\x07", "succeeded")
    families = list(text_string_to_metric_families(m.render().decode()))
    names = {f.name for f in families}
    assert "fake_metric" not in names
    (idle,) = [s for f in families for s in f.samples if s.name == "ds01_gpu_idle_held_seconds"]
    gpu = idle.labels["gpu"]
    assert len(gpu) == MAX_LABEL_CHARS
    assert gpu.startswith("GPU-?[31mred?fake_metric 1?")
    assert all(ch.isprintable() for ch in gpu)
    (action,) = [s for f in families for s in f.samples if s.name == "ds01_actions_total"]
    assert action.labels["reason"] == "??"
    assert clean_label("   ") == "unknown"
    assert clean_label(GpuState.IDLE_HELD) == "idle-held"


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.record_action("RemoveContainer", "CreatedNeverStarted", "succeeded")
    assert b"ds01_actions_total{" not in b.render()
    assert b"ds01_actions_total{" in a.render()
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("ds01_") for name in global_names)


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        with pytest.raises(MetricsBindError) as exc_info:
            Metrics().serve("127.0.0.1", port)
    assert str(exc_info.value) == (
        f"port {port} on 127.0.0.1 is already in use: set DS01_METRICS_PORT or --metrics-port"
    )


def test_an_address_not_on_this_host_is_a_clear_error() -> None:
    with pytest.raises(
        MetricsBindError, match=r"192\.0\.2\.1 is not an address of this host.*--metrics-addr"
    ):
        Metrics().serve("192.0.2.1", 0)  # TEST-NET-1: never assigned to a local interface


def test_close_frees_the_port() -> None:
    m = Metrics()
    first = m.serve("127.0.0.1", 0)
    port = first.port
    first.close()
    second = m.serve("127.0.0.1", port)
    try:
        assert second.port == port
        assert "ds01_build_info" in scrape(second)
    finally:
        second.close()


# --- the alert rules and the dashboard use only what is exported ----------------------------------

ALWAYS_LABELS = frozenset({"instance", "job"})  # added by Prometheus at scrape time
PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)


def exported() -> dict[str, dict[str, set[str]]]:
    """Every exported sample name -> label -> the label values seen, from a fully populated instance."""
    m = Metrics()
    full_pass(m)
    m.record_action("StopContainer", "IdleTimeout", "succeeded")
    m.add_reclaimed_gpu_seconds(1.0)
    m.record_quarantine("memory.json", datetime.now(UTC))
    out: dict[str, dict[str, set[str]]] = {"up": {}}  # Prometheus' own per-target series
    for family in m.registry.collect():
        for s in family.samples:
            labels = out.setdefault(s.name, {})
            for k, v in s.labels.items():
                labels.setdefault(k, set()).add(v)
    return out


def check_promql(expr: str, where: str, metrics: dict[str, dict[str, set[str]]]) -> set[str]:
    """Assert that ``expr`` uses only exported metrics, their labels and their label values."""
    body = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors: [5m], [$__rate_interval]
    grouping: set[str] = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", body):
        grouping.update(x.strip() for x in m.group(1).split(",") if x.strip())
    body = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", body)
    used: set[str] = set()
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?", body):
        name, matchers = m.group(1), m.group(2)
        rest = body[m.end() :].lstrip()
        if name.lower() in PROMQL_WORDS or (rest.startswith("(") and not matchers):
            continue  # a keyword or a function call
        assert name in metrics, f"{where}: {name} is not exported by controller/ops/metrics.py ({expr})"
        used.add(name)
        for key, op, val in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers or ""):
            if key in ALWAYS_LABELS:
                continue
            assert key in metrics[name], f"{where}: {name} has no label {key!r}"
            if op == "=":
                assert val in metrics[name][key], f"{where}: {name}{{{key}}} is never {val!r}"
    assert used, f"{where}: references no metric at all: {expr}"
    allowed = set(ALWAYS_LABELS).union(*(metrics[n].keys() for n in used))
    assert grouping <= allowed, f"{where}: groups by {grouping - allowed}, which {sorted(used)} do not have"
    return used


def test_check_promql_catches_mistakes() -> None:
    metrics = exported()
    with pytest.raises(AssertionError, match="ds01_gpu_total is not exported"):
        check_promql("sum(ds01_gpu_total)", "t", metrics)
    with pytest.raises(AssertionError, match="has no label 'status'"):
        check_promql('ds01_gpus{status="free"}', "t", metrics)
    with pytest.raises(AssertionError, match="is never 'idle_held'"):
        check_promql('ds01_gpus{state="idle_held"}', "t", metrics)
    with pytest.raises(AssertionError, match="groups by"):
        check_promql("sum by (gpu) (ds01_gpus)", "t", metrics)
    assert check_promql(
        "histogram_quantile(0.9, sum by (le) (rate(ds01_pass_duration_seconds_bucket[5m])))", "t", metrics
    ) == {"ds01_pass_duration_seconds_bucket"}


def test_alert_rules_use_only_exported_metrics() -> None:
    metrics = exported()
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "DS01BreakerTripped",
        "DS01NoSuccessfulPass",
        "DS01OrphanGpuProcesses",
        "DS01GpuIdleHeldOverAnHour",
        "DS01DomainDown",
        "DS01ControllerDown",
    } <= names
    used: set[str] = set()
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        used |= check_promql(r["expr"], r["alert"], metrics)
    assert "ds01_gpu_idle_held_seconds" in used


def test_dashboard_panels_use_only_exported_metrics() -> None:
    metrics = exported()
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] == "ds01-controller"
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: set[str] = set()
    for p in panels:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            used |= check_promql(t["expr"], f"panel {p['title']!r}", metrics)
    for wanted in (
        "ds01_admin_alerts_total",
        "ds01_admin_alerts_open",
        "ds01_notification_hook_failures_total",
        "ds01_idle_gpu_seconds_reclaimed_total",
        "ds01_actions_total",
        "ds01_pass_duration_seconds_bucket",
        "ds01_gpus",
        "ds01_domain_up",
        "ds01_breaker_tripped",
    ):
        assert wanted in used, f"the dashboard shows nothing from {wanted}"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    found = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables["instance"]["definition"])
    assert found, variables["instance"]["definition"]
    metric, label = found.groups()
    assert metric in metrics and label in ALWAYS_LABELS


def test_admin_alerts_are_counted_by_reason_and_each_class_has_a_rule(
    served: tuple[Metrics, MetricsServer],
) -> None:
    from controller.ops.metrics import ADMIN_ALERT_REASONS
    from controller.plan import safety
    from controller.plan.rules import allocations, processes
    from controller.plan.types import Reason

    m, server = served
    before = scrape(server)
    assert all(value(before, "ds01_admin_alerts_total", reason=r) == 0 for r in ADMIN_ALERT_REASONS)
    m.record_action("AlertAdmin", "DuplicateGpuHolder", "done")
    m.record_action("AlertAdmin", "DuplicateGpuHolder", "already_done")  # not delivered again
    m.record_action("AlertAdmin", "GpuDirty", "done")
    m.record_action("StopContainer", "IdleTimeout", "done")
    s = scrape(server)
    assert value(s, "ds01_admin_alerts_total", reason="DuplicateGpuHolder") == 1
    assert value(s, "ds01_admin_alerts_total", reason="GpuDirty") == 1
    assert value(s, "ds01_admin_alerts_total", reason="LedgerUnreadable") == 0
    # every reason the planner alerts an admin for is a known class, with its own alert rule
    planned = set()
    for module in (allocations, processes, safety):
        text = Path(module.__file__ or "").read_text()
        for block in (
            text.split("kind=ActionKind.ALERT_ADMIN,")[1:] + text.split("ActionKind.ALERT_ADMIN,\n")[1:]
        ):
            found = re.search(r"Reason\.([A-Z_]+)", block[:400])
            assert found is not None
            planned.add(Reason[found.group(1)].value)
    assert planned == set(ADMIN_ALERT_REASONS)
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    for reason in ADMIN_ALERT_REASONS:
        assert f'reason="{reason}"' in rules[f"DS01Admin{reason}"]["expr"], reason
        # An alert stays firing while it is open, not just for an hour after it was first delivered.
        assert f'ds01_admin_alerts_open{{reason="{reason}"}}' in rules[f"DS01Admin{reason}"]["expr"], reason


def test_open_admin_alerts_and_hook_failures_are_scraped(served: tuple[Metrics, MetricsServer]) -> None:
    from controller.ops.metrics import ADMIN_ALERT_REASONS

    m, server = served
    before = scrape(server)
    assert all(value(before, "ds01_admin_alerts_open", reason=r) == 0 for r in ADMIN_ALERT_REASONS)
    assert value(before, "ds01_notification_hook_failures_total", transport="url") == 0
    m.set_open_alerts({"DuplicateGpuHolder": 2, "GpuDirty": 1})
    m.record_hook_failure("url")
    s = scrape(server)
    assert value(s, "ds01_admin_alerts_open", reason="DuplicateGpuHolder") == 2
    assert value(s, "ds01_admin_alerts_open", reason="GpuDirty") == 1
    assert value(s, "ds01_notification_hook_failures_total", transport="url") == 1
    m.set_open_alerts({"GpuDirty": 1})  # the duplicate holders were resolved: cleared
    assert value(scrape(server), "ds01_admin_alerts_open", reason="DuplicateGpuHolder") == 0
