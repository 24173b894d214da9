"""The forecast against the truth: ``ds01ctl plan --at`` made while the daemon runs, compared with
what the daemon (acting, on this test's containers only) then records in its event log.

Private engine, stand-in NVML, second-scale durations: a busy container (GPU at 90 %) reaches a
20 s max runtime (warnings at 15 s and 18 s, the stop at 20 s, its removal once the 1 s GPU hold
after the stop is over); an idle one reaches an 8 s idle timeout (warnings at 6.4 s and 7.6 s of
its idle streak, stopped and removed at 8 s, before its own runtime warnings). SIGTERM ends both
at once, so an action's record is not stretched by the stop grace.

Every predicted action must be in the event log (the warning line, or the
``controller.action_started`` line of a destructive action), at a time within one pass interval
of the predicted pass (plus the length of a slow pass on a shared test host), and the daemon must
do nothing the forecast did not predict.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from typing import Any

import docker.types
import pytest

from controller import labels as L
from tests.fixtures.daemon import CONTROLLER, DaemonRunner, details, fast_policy
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import FakeNvml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DS01CTL = CONTROLLER.with_name("ds01ctl")
INTERVAL_S = 1.0
HORIZON_S = 30
# One pass interval, plus what a slow pass takes on a loaded test host (a pass that stops a
# container takes about 0.3 s here): the daemon wakes a hair after a due time, as the forecast does.
TOLERANCE_S = INTERVAL_S + 0.5
QUICK_STOP = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


def gpu_request(uuid: str) -> dict[str, Any]:
    return {"device_requests": [docker.types.DeviceRequest(device_ids=[uuid], capabilities=[["gpu"]])]}


def ident(key: str) -> str:
    """An action's identity across the forecast and the log. A warning's key is exact (its streak
    and start come from the daemon's memory); a removal's key names the time the container
    finished, which the forecast can only estimate: kind, container and rule identify it."""
    kind, cid, *_, rule = key.split(":")
    return key if kind == "WarnOwner" else f"{kind}:{cid}:{rule}"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_forecast_made_at_the_start_is_what_the_daemon_does(
    controller_daemon: DaemonRunner, e2e_containers: ContainerFactory, fake_nvml: FakeNvml
) -> None:
    gpus = fake_nvml.set_gpus(4)
    gpus[0].util_percent = 90
    fake_nvml.write()
    controller_daemon.write_spec(
        fast_policy(
            controller_daemon.paths.reset_marker,
            idleTimeout="8s",
            maxRuntime="20s",
            warnLead="1s",
            gpuHoldAfterStop="1s",
        )
    )
    alice = {L.DS01_USER: "alice"}
    busy = e2e_containers(QUICK_STOP, labels=alice, network_mode="none", **gpu_request(gpus[0].uuid))
    idle = e2e_containers(QUICK_STOP, labels=alice, network_mode="none", **gpu_request(gpus[1].uuid))
    mine = {busy.id, idle.id}

    d = controller_daemon.start(interval_s=INTERVAL_S)
    d.wait_for_passes(2, timeout=30)
    # The forecast, made from the daemon's own memory while it runs (read-only).
    p = controller_daemon.paths
    env = controller_daemon.env(
        {
            "DS01_SPECS": str(p.specs_dir),
            "DS01_STATE_DIR": str(p.state_dir),
            "DS01_EVENTS_LOG": str(p.events_log),
            "DS01_LEDGER": str(p.ledger),
            "DS01_INTERVAL": f"{INTERVAL_S:g}",
            "DS01_ENV_FILE": "",
        }
    )
    out = subprocess.run(
        [str(DS01CTL), "plan", "--at", f"+{HORIZON_S}s", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr + out.stdout
    forecast = json.loads(out.stdout)
    predicted = {
        ident(a["action"]["key"]): (a["action"]["kind"], _time(a["pass_at"]))
        for a in forecast["actions"]
        if a["action"]["target"].get("container_id") in mine
    }
    kinds = sorted(k for k, _ in predicted.values())
    shown = [(a["pass_at"], a["action"]["key"], a["action"]["message"]) for a in forecast["actions"]]
    assert kinds == [
        "RemoveContainer",
        "StopContainer",
        "StopContainer",
        "WarnOwner",
        "WarnOwner",
        "WarnOwner",
        "WarnOwner",
    ], (shown, d.log())

    until = _time(forecast["until"])
    while datetime.now(until.tzinfo) < until:
        time.sleep(0.5)
    d.stop()

    recorded: dict[str, datetime] = {}
    for e in d.events():
        det = details(e)
        if det.get("container_id") not in mine or "key" not in det:
            continue
        if e["event_type"] == "controller.warning":
            recorded.setdefault(ident(det["key"]), _time(e["timestamp"]))
        elif e["event_type"] == "controller.action_started":
            recorded.setdefault(ident(det["key"]), _time(str(det["intent_at"])))
    happened_before_forecast = {k for k, at in recorded.items() if at < _time(forecast["observed_at"])}
    assert not happened_before_forecast, "the durations leave the forecast time to run first"
    assert set(recorded) == set(predicted), (sorted(recorded), sorted(predicted), d.log())
    for key, (_, at) in predicted.items():
        delta_s = (recorded[key] - at).total_seconds()
        assert -TOLERANCE_S <= delta_s <= TOLERANCE_S, (key, at, recorded[key], delta_s)
