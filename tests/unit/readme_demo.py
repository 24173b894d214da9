"""The README's ``ds01ctl`` sample output, rendered from the README's own sample config.

The README shows a demo policy (a YAML block) and what ``ds01ctl get containers``, ``describe
container alice-train`` and ``plan --at +45m`` print on a small host under it. This module builds
that host (five containers, four GPUs, one in MIG mode), loads the policy from the README's YAML
block, runs the real planner over four observations 30 s apart (so idle streaks and rates are the
planner's own), and renders the three commands as ``ds01ctl`` does. ``tests/unit/test_readme_samples.py``
fails when the README's console block differs; rewrite it with::

    python -m tests.unit.readme_demo --write
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.cli.describe import describe_container
from controller.cli.forecastview import forecast_for_view, forecast_text, run_forecast
from controller.cli.get import GetOptions, run_get
from controller.cli.render import set_utc
from controller.cli.view import PolicyInfo, View
from controller.memory import ControllerMemory
from controller.plan.desired import PolicySetDesired
from controller.plan.forecast import Forecast
from controller.plan.planner import plan
from controller.plan.types import Plan
from controller.snapshot import ContainerObs, OwnerRule, Snapshot, TypeRule
from crd_like_specs.vocabulary import ContainerType
from desired_state.load import load_spec_text
from tests.fixtures import builders as b

README = Path(__file__).resolve().parents[2] / "README.md"
# The YAML block that opens the demo, and the console block right after it.
_DEMO = re.compile(
    r"(```yaml\n(# /etc/ds01/specs/lab\.yaml[^\n]*\n(?:(?!```).)*)```\n\n```console\n)(.*?)(```)", re.DOTALL
)

NOW = datetime(2026, 11, 25, 14, 20, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)
PASSES = 4  # observations at NOW-90s, -60s, -30s, NOW
INTERVAL_S = 30.0  # the daemon's resync interval (--interval)
MIG_3_0 = b.mig_uuid(3, 0)


def readme_blocks(text: str) -> tuple[str, str]:
    """The demo policy (YAML) and the sample console output, as the README has them."""
    found = _DEMO.search(text)
    if found is None:
        raise ValueError("README.md has no ds01ctl demo (a lab.yaml block followed by a console block)")
    return found.group(2), found.group(3)


def _containers(at: datetime, n: int) -> list[ContainerObs]:
    """The host at the ``n``-th observation (``at``): counters advance with the pass."""
    started = NOW - timedelta(minutes=1, seconds=30)
    busy_cpu_ns = n * int(30e9 * 0.9)  # 90 % of a core
    return [
        b.running(
            "alice-train",
            owner="alice",
            container_type=ContainerType.ATOMIC,
            labels={"ds01.user": "alice", "ds01.container_type": "atomic"},
            gpus=[b.GPU0],
            created_at=started,
            started_at=started,
            sig=b.signals(at, gpu_pct={b.GPU0: 0.0}),
            image="ds01/pytorch:2.3",
        ),
        b.running(
            "bob-finetune",
            owner="bob",
            labels={"ds01.user": "bob"},
            gpus=[b.GPU1],
            created_at=started,
            started_at=started,
            sig=b.signals(at, cpu_usage_ns=busy_cpu_ns, net_bytes=n * 40_000_000, gpu_pct={b.GPU1: 87.0}),
            image="ds01/pytorch:2.3",
        ),
        b.running(
            "carol-nb",
            owner="carol",
            container_type=ContainerType.DEVCONTAINER,
            labels={"ds01.user": "carol", "ds01.container_type": "devcontainer"},
            gpus=[b.ref(MIG_3_0, parent=b.GPU3)],
            created_at=started,
            started_at=started,
            sig=b.signals(at, gpu_pct={MIG_3_0: None}),
            image="mcr.microsoft.com/devcontainers/python:3.11",
        ),
        b.created(
            "dave-new",
            owner="dave",
            labels={"ds01.user": "dave"},
            gpus=[b.GPU2],
            created_at=started,
        ),
        b.exited(
            "erin-eval",
            owner="erin",
            labels={"ds01.user": "erin"},
            gpus=[b.GPU2],
            created_at=started - timedelta(minutes=10),
            started_at=started - timedelta(minutes=10),
            finished_at=started,
        ),
    ]


def _decided_by_labels(c: ContainerObs) -> ContainerObs:
    """As the observer reads them: the owner from ``ds01.user``, the type from its label if set."""
    update: dict[str, object] = {"owner_rule": OwnerRule.LABEL_DS01_USER}
    if "ds01.container_type" in c.labels:
        update["type_rule"] = TypeRule.LABEL_CONTAINER_TYPE
    return c.model_copy(update=update)


def _snapshot(at: datetime, n: int) -> Snapshot:
    return b.snapshot(
        observed_at=at,
        containers=[_decided_by_labels(c) for c in _containers(at, n)],
        gpus=[
            b.gpu(0, memory_used_bytes=2 * 1024**3),
            b.gpu(1, util_pct=87.0, memory_used_bytes=61 * 1024**3),
            b.gpu(2),
            b.gpu(3, mig_slots=1, mig_profile="3g.40gb", memory_used_bytes=1024**3),
        ],
    )


class _NoEventLogYet:
    """The event log of a host where nothing has been written yet (as on a fresh install)."""

    def tail(self, n: int, flt: object, extra: object = None) -> list[dict[str, object]]:
        raise FileNotFoundError(self.describe())

    def describe(self) -> str:
        return "/var/log/ds01/events.jsonl"

    def rotated(self) -> list[Path]:
        return []


def demo(policy_yaml: str) -> tuple[View, Forecast]:
    """The demo host's view at NOW (after four passes) and its forecast for the next 45 minutes."""
    policy = load_spec_text(policy_yaml, name="/etc/ds01/specs/lab.yaml")
    desired = PolicySetDesired(policy)
    memory = ControllerMemory()
    the_plan: Plan | None = None
    snap = _snapshot(NOW, PASSES - 1)
    for n in range(PASSES):
        at = NOW - STEP * (PASSES - 1 - n)
        snap = _snapshot(at, n)
        the_plan = plan(snap, desired, memory, at)
        memory = the_plan.memory
    assert the_plan is not None
    view = View(
        snapshot=snap,
        now=NOW,
        plan=the_plan,
        memory=memory,
        desired=desired,
        policy=PolicyInfo(origin="specs /etc/ds01/specs"),
        event_source=_NoEventLogYet(),
    )
    # As ds01ctl does: describe shows the forecast of the coming day, plan --at the next 45 minutes.
    view.forecast = forecast_for_view(view, INTERVAL_S, small_hosts_only=False)
    later = run_forecast(view, NOW + timedelta(minutes=45), INTERVAL_S)
    return view, later


def console(policy_yaml: str) -> str:
    """The README's console block, as ``ds01ctl`` prints it on the demo host (times in UTC)."""
    set_utc(True)
    try:
        view, later = demo(policy_yaml)
        get_text, _ = run_get("containers", view, GetOptions(show_all=True))
        # Abridged: describe prints the plan's evidence under each decision; the README leaves it out.
        describe_text = "".join(
            line
            for line in describe_container(view, "alice-train").splitlines(keepends=True)
            if not line.lstrip().startswith("evidence: ")
        )
        plan_out = forecast_text(later)
    finally:
        set_utc(False)
    return (
        "$ ds01ctl get containers --all\n"
        + get_text
        + "\n$ ds01ctl describe container alice-train      # (abridged: no evidence lines)\n"
        + describe_text
        + "\n$ ds01ctl plan --at +45m                       # what the daemon does in the next 45 minutes\n"
        + plan_out
    )


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    policy_yaml, shown = readme_blocks(text)
    rendered = console(policy_yaml)
    if "--write" in argv:
        found = _DEMO.search(text)
        assert found is not None
        README.write_text(text[: found.start(3)] + rendered + text[found.end(3) :], encoding="utf-8")
        print(f"rewrote the ds01ctl demo in {README}")
        return 0
    if rendered != shown:
        print("README.md's ds01ctl demo is stale: python -m tests.unit.readme_demo --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
