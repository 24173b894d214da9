"""The GPU utilisation ``get -o wide`` and ``describe`` show is the one the idle rule reads.

The idle rule reads every device a container may be using: its own references, every GPU for a
reference that did not resolve (it may name any of them), and each device NVML lists a process of
it on (a privileged container computes on GPUs it was not given). A container given GPU 1, idle,
with its process busy on GPU 0 at 90 %, showed ``GPU-UTIL 0%`` and ``gpu 0% (idle below 5%)`` in
``describe``; one with an unresolved reference showed ``-`` (does not apply); the planner judged
both active on GPU 0's 90 %.
"""

from __future__ import annotations

import json
from datetime import datetime

from controller.cli.describe import describe_container
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.plan.types import Reason
from controller.snapshot import ContainerObs, Snapshot
from tests.fixtures import builders as b

POLICY = b.policy(idle_timeout_s=3600.0, grace_period_s=600.0)


def containers(t: datetime) -> list[ContainerObs]:
    return [
        # Given GPU 1 (idle), its process computes on GPU 0 (as with --privileged).
        b.running("priv", gpus=[b.GPU1], started_at=b.ago(hours=3), sig=b.signals(t, gpu_pct={b.GPU1: 0.0})),
        # NVIDIA_VISIBLE_DEVICES=3 on a two-GPU host: it may be using either GPU.
        b.running("unres", gpus=[b.unresolved_ref("3")], started_at=b.ago(hours=3), sig=b.signals(t)),
    ]


def host(t: datetime) -> Snapshot:
    return b.snapshot(
        observed_at=t,
        containers=containers(t),
        gpus=(b.gpu(0, util_pct=90.0, processes=(77,)), b.gpu(1, util_pct=0.0)),
        processes=[b.process(77, b.GPU0, container_id=b.cid("priv"), container_exists=True)],
    )


def view() -> View:
    passes = b.Passes(b.desired(POLICY))
    for i in range(10):
        t = b.at(minutes=i)
        p = passes.run(host(t))
    # The planner judges both active on GPU 0's utilisation: no idle step for either.
    assert not [d for d in p.deferred if d.rule is Reason.IDLE_TIMEOUT], b.deferred_summary(p)
    for name in ("priv", "unres"):
        last = p.memory.containers[b.cid(name)].samples[-1]
        assert last.idle is False and f"{b.GPU0}=90" in last.detail, last
    return View(snapshot=host(t), now=t, plan=p, memory=p.memory, desired=passes.desired)


def test_get_wide_and_json_show_the_gpu_utilisation_the_idle_rule_reads() -> None:
    v = view()
    lines = run_get("containers", v, GetOptions(output="wide"))[0].splitlines()
    col = lines[0].index("GPU-UTIL")
    cells = {line.split()[0]: line[col:].split()[0] for line in lines[1:] if line.strip()}
    assert cells == {"priv": "90%", "unres": "90%"}, "\n".join(lines)
    items = json.loads(run_get("containers", v, GetOptions(output="json"))[0])["items"]
    assert {i["name"]: i["signals"]["gpu_util_percent"] for i in items} == {"priv": 90.0, "unres": 90.0}


def test_describe_shows_the_gpu_utilisation_the_idle_rule_reads() -> None:
    v = view()
    for name in ("priv", "unres"):
        signals = describe_container(v, name).split("Signals:")[1].split("Policy:")[0]
        (row,) = [line for line in signals.splitlines() if line.split()[:1] == ["gpu"]]
        assert row.split()[1] == "90%", signals
