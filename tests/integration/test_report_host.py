"""The usage record end to end, on the real Docker engine and the stand-in NVML: the daemon's pass
writes a ``controller.usage_sample`` round, ``ds01ctl report`` adds it up, and ``ds01ctl get gpus``
marks the GPU whose memory is held at zero utilisation.

Only ``reconcile --dry-run`` and read-only commands run: the engine may be shared.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from controller import labels as L
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import FakeNvml
from tests.integration.test_cli_host import POLICY, Cli, gpu_request

pytestmark = pytest.mark.docker

GIB = 1024**3
# A GPU of this test's own: the engine is shared, and other tests' containers request the usual
# stand-in UUIDs; a holder appearing or leaving between two samples would (rightly) end hoarding.
HOARDED = f"GPU-{uuid.uuid4()}"
SPARE = f"GPU-{uuid.uuid4()}"
REPORTING = """\
  reporting:
    sampleInterval: 10s
    hoardingMemoryThresholdMib: 1024
    hoardingMaxUtilizationPct: 1
    hoardingWindow: 1s
"""


@pytest.fixture
def report_cli(fake_nvml: FakeNvml, tmp_path: Path) -> Cli:
    gpus = fake_nvml.set_gpus(2)
    gpus[0].uuid, gpus[1].uuid = HOARDED, SPARE
    gpus[0].mem_used_bytes = 4 * GIB  # held, at 0 % utilisation
    fake_nvml.write()
    specs = tmp_path / "specs"
    specs.mkdir()
    policy = POLICY.replace(
        "  settings:\n    idleTimeout: 1h", REPORTING + "  settings:\n    idleTimeout: 1h", 1
    )
    assert "sampleInterval" in policy
    (specs / "policy.yaml").write_text(policy)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    env.update(fake_nvml.env())
    env.update(
        {
            "DS01_SPECS": str(specs),
            "DS01_STATE_DIR": str(state),
            "DS01_EVENTS_LOG": str(tmp_path / "events.jsonl"),
            "DS01_LEDGER": str(tmp_path / "ledger.json"),
            "DS01_ENV_FILE": "",
            "NO_COLOR": "1",
        }
    )
    return Cli(env=env, root=tmp_path)


def test_a_pass_records_usage_that_report_and_get_gpus_read(
    report_cli: Cli, make_container: ContainerFactory
) -> None:
    c = make_container(
        "sleep 600",
        labels={L.DS01_USER: "alice", L.DS01_CONTAINER_TYPE: "atomic"},
        device_requests=gpu_request(HOARDED),
        network_mode="none",
    )
    r = report_cli("reconcile", "--dry-run")
    assert r.returncode == 0, r.stderr + r.stdout
    lines = (report_cli.root / "events.jsonl").read_text().splitlines()
    samples = [json.loads(x) for x in lines if '"controller.usage_sample"' in x]
    assert samples, "the pass wrote no usage sample"
    devices = {d["gpu"]: d for s in samples for d in s["details"]["devices"]}
    mine = devices[HOARDED]
    holder = next(h for h in mine["holders"] if h["id"] == c.id[:12])
    assert (holder["name"], holder["user"], holder["group"], holder["state"]) == (
        c.name,
        "alice",
        "testers",
        "running",
    )
    assert (mine["mem_mib"], mine["util"]) == (4096, 0.0)

    time.sleep(1.5)  # past the 1 s hoarding window, within the 20 s sample gap
    # --live: a new observation 1.5 s after the pass's sample covers the window; the daemon's last
    # pass (what `get` shows by default while it is fresh) is as of the sample itself.
    gpus = report_cli("get", "gpus", "-o", "json", "--live")
    assert gpus.returncode == 0, gpus.stderr
    marks = {i["uuid"]: i["hoarding"] for i in json.loads(gpus.stdout)["items"]}
    assert marks[HOARDED] is True, gpus.stdout
    assert marks[SPARE] is not True
    table = report_cli("get", "gpus", "--live")
    assert any(
        line.startswith("0 ") and line.rstrip().endswith(",hoarding") for line in table.stdout.splitlines()
    )

    rep = report_cli("report", "--since", "1h", "-o", "json")
    assert rep.returncode == 0, rep.stderr
    data = json.loads(rep.stdout)
    assert data["samples"]["rounds"] == 1 and data["samples"]["interval_s"] == 10.0
    alice = next(row for row in data["rows"] if row["key"] == "alice")
    assert alice["gpu_hours_held"] > 0
    assert data["totals"]["stops"] == 0  # a dry run acts on nothing
