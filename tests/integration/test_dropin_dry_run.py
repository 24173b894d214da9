"""Drop-in on DS01, on the real engine: a dry-run daemon writes DS01's awareness output and changes
nothing, and a specs file layered over DS01's ``resource-limits.yaml`` is what the daemon applies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.plan.desired import PolicySetDesired
from controller.settings import Settings
from controller.wiring import build_controller
from tests.fixtures.docker_host import ContainerFactory

pytestmark = pytest.mark.docker

DS01_DIR = Path(__file__).parent.parent / "data" / "ds01"
DETECTOR_CONTAINER_FIELDS = {"id", "name", "origin", "user", "has_gpu", "gpu_devices", "status", "image"}
SITE = """
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  trustLabels: false
  protect:
    - {name: "ds01t-*", reason: the test's own containers}
  settings: {warnLead: 2m, idleMinDuration: 1m}
"""


def test_a_dry_run_daemon_writes_ds01s_inventory_and_events_and_changes_nothing(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "site.yaml").write_text(SITE)
    state, events = tmp_path / "state", tmp_path / "events.jsonl"
    settings = Settings(
        specs=specs,
        ds01_config=DS01_DIR,
        state_dir=state,
        events_log=events,
        ledger=tmp_path / "ledger.json",
        dry_run=True,  # the engine is shared: plan and report, never act
    )
    controller = build_controller(settings)
    try:
        first = controller.run_pass()  # the baseline
        c = make_container()
        c.stop(timeout=1)  # a change the test makes, for the controller to see
        second = controller.run_pass()
        obs = second.snapshot.container(c.id)
        assert obs is not None
        # the daemon applies the specs layered over DS01's file, each value with its source
        eff = PolicySetDesired(controller.policy.current).effective(obs, second.snapshot.observed_at)
        assert eff.protected.value is True and eff.protected.source.startswith(
            "LifecyclePolicy/site protect[0]"
        )
        assert (eff.warn_lead_s.value, eff.warn_lead_s.source) == (120, "LifecyclePolicy/site")
        assert eff.max_runtime_s.source != "built-in default"  # DS01's file still decides the rest
        c.start()
        controller.run_pass()
    finally:
        controller.observer.close()
    assert first.snapshot.container(c.id) is None
    inventory = json.loads((state / "workload-inventory.json").read_text())
    entry = inventory["containers"][c.id[:12]]
    assert DETECTOR_CONTAINER_FIELDS | {"detected_at"} <= set(entry)
    assert entry["id"] == c.id[:12] and entry["name"] == c.name and entry["status"] == "running"
    assert {"last_scan", "containers", "host_processes", "_pending_processes"} <= set(inventory)
    mine = [
        json.loads(line) for line in events.read_text().splitlines() if c.id[:12] in line or c.name in line
    ]
    kinds = [e["event_type"] for e in mine]
    # created and stopped between two passes, then started again: nothing else (no stop, no removal)
    assert kinds == ["detection.container_discovered", "detection.container_status_changed"], kinds
    assert {"container_id", "name", "origin", "has_gpu", "image"} <= set(mine[0]["details"])
    assert mine[0]["details"]["name"] == c.name
    changed = mine[1]["details"]
    assert (changed["name"], changed["old_status"], changed["new_status"]) == (c.name, "exited", "running")
    # nothing changed: the container is still there, as the test left it
    c.reload()
    assert c.status == "running"
