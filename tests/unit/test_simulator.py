"""The ground-truth simulator: the real planner and executor, pass after pass, on a simulated host
whose truth an oracle knows (see tests/fixtures/sim_world.py).

A hypothesis ``RuleBasedStateMachine`` starts and stops containers (in this engine and in foreign
ones), changes what they do, pauses, restarts and renames them, writes ledger rows in every
notation, breaks NVML per GPU, takes Docker or the whole daemon away for a while, steps the
clock, restarts the daemon with its memory lost or restored from an older backup (rebuilt from the
event log as ``controller.act.salvage`` does), reloads the policy with every timeout, hold and
runtime shorter or longer, and lets time pass by 0.25 s to 30 min. Every step ends with time
passing and, unless the
daemon is down, one pass the way ``Controller.run_pass`` makes it: observe, ``plan`` with the
memory carried forward, then the plan through the daemon's action scheduler (one action in flight,
each by the real executor; a plan older than ``safety.maxActionAge`` in simulated time is reported
``stale`` and re-planned at once, as the loop does). The executor's seams (Docker API, kill
ladder, reset command, ledger release) are fakes that act on the world and ask the oracle first:
any destructive act against something in use fails the run with what the truth was, and so does
a stop before the time a warning told its owner or a removal before the hold a stop notice named.

Bug classes can be switched on and off (``DS01_SIM_CLASSES=gaps,foreign`` or ``none``; default:
all), so each can be exercised alone. ``test_simulator_tame`` runs with every class off: the
planner must survive the simulator's ordinary world (this guards the oracle against false alarms).
The CI profile is derandomized; ``python -m pytest -m soak`` runs the long, random profile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from loguru import logger

from controller.act.events import EventLog, EventType
from controller.act.executor import ExecutionReport, RealExecutor
from controller.act.report import Outcome
from controller.act.salvage import memory_from_event_log, not_older_than_the_log
from controller.act.schedule import ActionScheduler, Limits
from controller.memory import ControllerMemory
from controller.plan.clock import clock_step_details
from controller.plan.planner import plan
from controller.plan.rules.cleanup import restart_mark_details
from controller.plan.types import Plan
from controller.settings import Settings
from tests.fixtures import builders as b
from tests.fixtures import sim_world as sw


@dataclass(frozen=True)
class Classes:
    """Which bug classes the simulated world may produce (issue 11's cases, and its risks)."""

    gaps: bool = True  # case 1: long pass spacing, daemon/Docker outages, pauses
    unknown_util: bool = True  # case 2: NVML utilisation fails for a full GPU
    foreign: bool = True  # case 3: GPU processes of rootless Docker, kubelet, podman workloads
    unknown_procs: bool = True  # case 4: NVML process list fails while a process runs
    ledger: bool = True  # case 5: renames, MIG vs full GPU, legacy MIG strings, CDI, release budget
    stale_plans: bool = True  # case 6: the executor's actions take time; users come back meanwhile
    clock_steps: bool = True  # risk: the wall clock steps forward or back
    slow_network: bool = True  # risk: a steady 200 kB/s transfer at any pass spacing
    unreadable_keepalive: bool = True  # risk: a keep-alive that cannot be read (EACCES)
    memory_loss: bool = True  # risk: the memory lost, or restored from an older backup, at a restart
    policy_reloads: bool = True  # risk: a reload shortens or lengthens timeouts, holds and runtimes

    @classmethod
    def from_env(cls) -> Classes:
        text = os.environ.get("DS01_SIM_CLASSES", "").strip()
        if not text or text == "all":
            return cls()
        names = {n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"}
        known = {f.name for f in fields(cls)}
        if names - known:
            raise ValueError(f"DS01_SIM_CLASSES: unknown {sorted(names - known)}; known: {sorted(known)}")
        return cls(**{f.name: f.name in names for f in fields(cls)})


TAME = Classes(**{f.name: False for f in fields(Classes)})

MIN = 60.0
POLICY = {
    # DS01's shape on a short time scale, so that a run of 40 steps reaches every rule.
    "idle_timeout_s": 3 * MIN,
    "max_runtime_s": 120 * MIN,
    "gpu_hold_after_stop_s": 2 * MIN,
    "container_hold_after_stop_s": 5 * MIN,
    "created_container_timeout_s": 2 * MIN,
    "grace_period_s": 1 * MIN,
    "idle_detection_window": 2,
    "warn_lead_s": 30.0,
    "sigterm_grace_s": 30.0,
    "keepalive_max_age_s": 30 * MIN,
}
BUDGET = 3
# The daemon's resync interval (controller.settings), which bounds a plan's age when
# safety.maxActionAge is left at its default (null), as in controller.loop.Controller._execute.
SIM_INTERVAL_S = Settings.model_fields["interval_s"].default
# Passes in a row that may leave stale actions before the simulator calls it a livelock.
MAX_REPLANS = 50
# One action in flight at a time: the scheduler runs each in a thread, and two at once would race
# for the world (whose stop lands first, what each one's clock reads), so a run could not be replayed.
# Every plan still goes through the scheduler, so its order, deadlines and staleness are exercised.
SIM_MAX_CONCURRENT = 1
GLOBAL = b.global_policy(max_destructive_actions_per_pass=BUDGET, orphan_sightings_required=2).model_copy(
    update={"max_concurrent_actions": b._sourced(SIM_MAX_CONCURRENT)}
)
DESIRED = b.desired(b.policy(**POLICY), GLOBAL)
# Policies a reload may switch to, mid-ladder: every timeout, hold and runtime shorter, or longer.
RELOADED = {
    "base": POLICY,
    "short": {
        **POLICY,
        "idle_timeout_s": 1 * MIN,
        "max_runtime_s": 10 * MIN,
        "gpu_hold_after_stop_s": 0.5 * MIN,
        "container_hold_after_stop_s": 1 * MIN,
        "created_container_timeout_s": 0.5 * MIN,
        "grace_period_s": 0.5 * MIN,
    },
    "long": {
        **POLICY,
        "idle_timeout_s": 10 * MIN,
        "max_runtime_s": 240 * MIN,
        "gpu_hold_after_stop_s": 10 * MIN,
        "container_hold_after_stop_s": 20 * MIN,
    },
}

# --- strategies -------------------------------------------------------------------------------

DTS = (0.25, 1.0, 5.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0)
TAME_MAX_DT = 60.0
MODES = ("pass", "pass", "no-pass", "docker-down", "nvml-down")
PASS_SPEC = st.tuples(
    st.sampled_from(DTS),
    st.sampled_from(MODES),
    st.frozensets(st.integers(0, 2), max_size=2),
    st.frozensets(st.integers(0, 2), max_size=2),
)
BUSY = st.sampled_from(
    [
        frozenset(),
        frozenset({"gpu"}),
        frozenset({"cpu"}),
        frozenset({"net"}),
        frozenset({"gpu", "cpu"}),
        frozenset({"gpu", "cpu", "net"}),
        frozenset({"gpu-last"}),
    ]
)
DEVICE_SETS: tuple[tuple[sw.Device, ...], ...] = (
    (sw.FULL[0],),
    (sw.FULL[1],),
    (sw.FULL[0], sw.FULL[1]),
    (sw.SLICES[0],),
    (sw.SLICES[1],),
    (),
)
REF_STYLES = ("dr_uuid", "env", "label", "dr_index", "cdi")
CGROUP_STYLES = ("systemd", "cgroupfs", "ds01-slice")
ROW_NOTATIONS = ("uuid", "none", "index", "slot", "legacy", "parent")
FOREIGN = ("rootless", "kubepods", "cri", "podman")
PICK = st.integers(0, 7)
# A workload's rhythm: one to three phases (seconds, busy signals), repeated from each start.
RHYTHM = st.lists(st.tuples(st.sampled_from((20.0, 60.0, 300.0, 900.0)), BUSY), min_size=1, max_size=3).map(
    tuple
)


def row_gpu(d: sw.Device, notation: str) -> tuple[str, sw.Device]:
    """How an allocator wrote device ``d`` in the ledger, and the device the row really denotes."""
    if d.mig_index is None:
        return (str(d.gpu_index), d) if notation == "index" else (d.uuid, d)
    if notation == "index":
        return str(d.gpu_index), sw.FULL[d.gpu_index]  # the full GPU of a MIG slice
    if notation == "parent":
        return d.physical, sw.FULL[d.gpu_index]
    if notation == "slot":
        return f"{d.gpu_index}{':' if d.mig_index % 2 else '.'}{d.mig_index}", d
    if notation == "legacy":
        return f"MIG-{d.physical}/{d.gi}/{d.ci}", d
    return d.uuid, d


@dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    passes: int = 0
    actions: int = 0
    stale: int = 0  # actions the scheduler left unstarted because their plan got old
    done: dict[str, int] = field(default_factory=dict)


STATS = Stats()


class Notifier:
    def notify(self, user: str, message: str, *, severity: str = "WARNING") -> int:
        return 1


class SimMachine(RuleBasedStateMachine):
    CLASSES: ClassVar[Classes] = Classes()

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ds01-sim-"))
        c = self.CLASSES
        self.world = sw.World(
            self.tmp / "gpu-ledger.json",
            idle_timeout_s=POLICY["idle_timeout_s"],
            idle_reduction=0.5,  # high demand may halve the idle timeout (builders' default policy)
            max_runtime_s=POLICY["max_runtime_s"],
            keepalive_max_age_s=POLICY["keepalive_max_age_s"],
            executor_time=c.stale_plans,
        )
        self.memory = ControllerMemory()
        self.events = EventLog(self.tmp / "events.jsonl", clock=self.world.wall)  # the host's wall clock
        self.executor = self._new_executor()
        # One per daemon, as in controller.loop: it remembers actions abandoned past their deadline.
        self.scheduler = ActionScheduler(monotonic=self.world.monotonic, clock=self.world.wall)
        self.ghosts = 0
        self.returns: list[tuple[int, float]] = []
        self.desired = DESIRED
        # The memory saved after each pass, oldest first, with the true time of that pass.
        self.backups: list[tuple[ControllerMemory, float]] = []
        STATS.examples += 1

    def _new_executor(self) -> RealExecutor:
        return RealExecutor(
            self.world.docker_client(),
            self.events,
            Notifier(),
            self.world.ledger_path,
            reset_command=("true", "{uuid}"),
            kill_grace_s=10.0,
            clock=self.world.wall,
            verify_timeout_s=0.0,
        )

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(
        containers=st.lists(
            st.tuples(
                st.sampled_from(DEVICE_SETS),
                st.sampled_from(REF_STYLES),
                st.sampled_from(CGROUP_STYLES),
                RHYTHM,
                st.sampled_from(ROW_NOTATIONS),
                st.booleans(),
                st.booleans(),
            ),
            max_size=4,
        ),
        foreign=st.lists(
            st.tuples(st.sampled_from(FOREIGN), st.sampled_from(DEVICE_SETS[:5]), BUSY), max_size=1
        ),
        util_fail=st.frozensets(st.integers(0, 1)),
        procs_fail=st.frozensets(st.integers(0, 1)),
        same_rhythm=st.booleans(),
    )
    def population(
        self,
        containers: list[Any],
        foreign: list[tuple[str, tuple[sw.Device, ...], frozenset[str]]],
        util_fail: frozenset[int],
        procs_fail: frozenset[int],
        same_rhythm: bool,
    ) -> None:
        """The host as the controller first finds it: workloads already running, NVML half broken."""
        for n, args in enumerate(containers):
            if same_rhythm and containers:
                args = (*args[:3], containers[0][3], *args[4:])  # workloads that go idle together
            self._start_this(n, *args)
        for kind, devices, busy in foreign:
            self._start_foreign(kind, devices, busy)
        if self.CLASSES.unknown_util:
            self.world.util_fail.update(util_fail)
        if self.CLASSES.unknown_procs:
            self.world.procs_fail.update(procs_fail)

    # --- helpers ---------------------------------------------------------------------------
    def pick(
        self, index: int, *, engine: str = "this", states: tuple[str, ...] = ()
    ) -> sw.SimContainer | None:
        cands = [
            c
            for c in sorted(self.world.containers.values(), key=lambda c: c.key)
            if c.exists
            and (c.engine == engine or (engine == "foreign" and c.engine != "this"))
            and (not states or c.state.value in states)
        ]
        return cands[index % len(cands)] if cands else None

    def free_name(self, n: int) -> str | None:
        name = f"c{n}"
        return None if any(c.name == name for c in self.world.this_engine()) else name

    def tick(self, spec: tuple[float, str, frozenset[int], frozenset[int]]) -> None:
        dt, mode, util_unknown, procs_unknown = spec
        c = self.CLASSES
        if not c.gaps:
            dt = min(dt, TAME_MAX_DT)
            mode = "pass" if mode in ("no-pass", "docker-down") else mode
        if not c.unknown_util:
            util_unknown = frozenset()
        if not c.unknown_procs:
            procs_unknown = frozenset()
        STATS.steps += 1
        self.world.advance(dt)
        if mode == "no-pass":
            self.world.log.append(f"t={self.world.true_s:.2f}: no pass (daemon down)")
            return
        self.run_pass(
            docker_ok=mode != "docker-down",
            nvml_ok=mode != "nvml-down",
            util_unknown=util_unknown,
            procs_unknown=procs_unknown,
        )

    def run_pass(self, **observe: Any) -> None:
        """What ``Controller.run_pass`` does, and what the loop does after it: observe, plan, run the
        plan through the action scheduler, carry memory; a plan left ``stale`` is re-planned at once."""
        for _ in range(MAX_REPLANS):
            if not self._pass(**observe):
                return
        raise AssertionError(f"{MAX_REPLANS} passes in a row left stale actions: re-planning never converges")

    def _pass(self, **observe: Any) -> bool:
        """One pass; True when actions were left unstarted because the plan got old (``stale``)."""
        w = self.world
        snapshot = w.snapshot(**observe)
        observed_mono = self.scheduler.monotonic()  # a plan's age (safety.maxActionAge) counts from here
        now = w.wall()
        the_plan = plan(snapshot, self.desired, self.memory, now)
        # As Controller.run_pass writes them: what a lost memory is rebuilt from (controller.act.salvage).
        stepped = clock_step_details(self.memory, the_plan.memory, snapshot.observed_at)
        if stepped is not None:
            self.events.write(EventType.CLOCK_STEP, user=None, details=stepped)
        for details in restart_mark_details(self.memory, the_plan.memory):
            self.events.write(EventType.RESTART_STOP, user=None, details=details)
        STATS.passes += 1
        STATS.actions += len(the_plan.actions)
        w.log.append(
            f"t={w.true_s:.2f} pass {observe}: "
            + ", ".join(f"{a.kind.value}/{a.reason.value} {a.target.label()}" for a in the_plan.actions)
        )
        if self.CLASSES.ledger:
            counted = [a for a in the_plan.actions if a.kind in sw.DESTRUCTIVE]
            if len(counted) > BUDGET:
                w.violate(
                    "Budget", f"{len(counted)} destructive actions and releases in one pass, budget {BUDGET}"
                )
        report = self._execute(the_plan, now, observed_mono)
        self.memory = report.memory  # as the loop keeps it: last_pass_at is the plan's
        self.backups = [*self.backups[-19:], (self.memory, w.true_s)]
        if w.violations:
            raise AssertionError(
                "the oracle saw harm:\n  "
                + "\n  ".join(map(str, w.violations))
                + "\nlast passes:\n  "
                + "\n  ".join(w.log[-8:])
            )
        stale = report.count(Outcome.STALE)
        if stale:
            STATS.stale += stale
            w.log.append(f"t={w.true_s:.2f}: {stale} action(s) stale, re-planning at once")
        return bool(stale)

    def _execute(self, the_plan: Plan, now: datetime, observed_mono: float) -> ExecutionReport:
        """``controller.loop.Controller._execute``: the plan through the scheduler, its limits from
        the global policy, its clocks the world's (an action's stop or kill takes simulated time)."""
        w = self.world
        if not the_plan.actions:
            return self.executor.execute(the_plan, self.memory, now)
        gp = self.desired.global_policy
        max_age_s = gp.max_action_age_s.value
        self.scheduler.limits = Limits(
            max_concurrent=gp.max_concurrent_actions.value,
            max_age_s=SIM_INTERVAL_S if max_age_s is None else max_age_s,
            kill_grace_s=gp.kill_grace_s.value,
        )
        for key, delay in self.returns:
            # The owner starts working again ``delay`` seconds into the execution of this plan.
            w.scheduled.append((w.true_s + delay, key, frozenset({"gpu", "cpu", "net"})))
        self.returns.clear()

        def run_one(one: Plan, memory: ControllerMemory, at: datetime) -> ExecutionReport:
            # In the scheduler's action thread; the world's lock makes the action one step of the world.
            with w.lock:
                w.current_action = one.actions[0]
                try:
                    done = self.executor.execute(one, memory, at)
                    w.told(one.actions[0], any(o.outcome is Outcome.DONE for o in done.outcomes))
                    return done
                finally:
                    w.current_action = None

        with w.seams():
            report = self.scheduler.run(the_plan, now, run_one, observed_at=observed_mono)
        assert not self.scheduler.abandoned, (
            f"actions abandoned past their deadline: {self.scheduler.abandoned}"
        )
        for kind, n in w.actions_done.items():
            STATS.done[kind] = STATS.done.get(kind, 0) + n
        w.actions_done.clear()
        return report

    def _start_this(
        self,
        n: int,
        devices: tuple[sw.Device, ...],
        style: str,
        cgroup: str,
        rhythm: tuple[tuple[float, frozenset[str]], ...],
        notation: str,
        by_id: bool,
        slow_net: bool,
    ) -> None:
        c = self.CLASSES
        name = self.free_name(n)
        if name is None:
            return
        if not c.ledger and style in ("cdi", "dr_index"):
            style = "dr_uuid"
        if not c.ledger and notation not in ("uuid", "none"):
            notation = "uuid"
        rate = sw.SLOW_NET_BYTES_PER_S if slow_net and c.slow_network else sw.FAST_NET_BYTES_PER_S
        cont = self.world.new_container(
            name=name,
            engine="this",
            owner="alice",
            devices=devices,
            ref_style=style,
            cgroup_style=cgroup,
            busy=rhythm[0][1],
            net_rate=rate,
            pattern=rhythm,
        )
        if notation != "none":
            for d in devices:
                gpu, denoted = row_gpu(d, notation)
                self.world.rows.append(
                    sw.SimRow(
                        gpu=gpu,
                        container=cont.id if by_id else name,
                        user="alice",
                        allocated_at=self.world.wall(),
                        holder_key=cont.key,
                        device=denoted,
                    )
                )

    def _start_foreign(self, kind: str, devices: tuple[sw.Device, ...], busy: frozenset[str]) -> None:
        if self.CLASSES.foreign:
            self.world.new_container(
                name=f"{kind}-job",
                engine=kind,
                owner="bob",
                devices=devices,
                ref_style="dr_uuid",
                cgroup_style="systemd",
                busy=busy,
                net_rate=sw.FAST_NET_BYTES_PER_S,
            )

    # --- rules: this engine -------------------------------------------------------------------
    @rule(
        n=st.integers(0, 5),
        devices=st.sampled_from(DEVICE_SETS),
        style=st.sampled_from(REF_STYLES),
        cgroup=st.sampled_from(CGROUP_STYLES),
        rhythm=RHYTHM,
        notation=st.sampled_from(ROW_NOTATIONS),
        by_id=st.booleans(),
        slow_net=st.booleans(),
        spec=PASS_SPEC,
    )
    def start(
        self,
        n: int,
        devices: tuple[sw.Device, ...],
        style: str,
        cgroup: str,
        rhythm: tuple[tuple[float, frozenset[str]], ...],
        notation: str,
        by_id: bool,
        slow_net: bool,
        spec: Any,
    ) -> None:
        self._start_this(n, devices, style, cgroup, rhythm, notation, by_id, slow_net)
        self.tick(spec)

    @rule(n=st.integers(0, 5), devices=st.sampled_from(DEVICE_SETS), spec=PASS_SPEC)
    def create_only(self, n: int, devices: tuple[sw.Device, ...], spec: Any) -> None:
        name = self.free_name(n)
        if name is not None:
            self.world.new_container(
                name=name,
                engine="this",
                owner="alice",
                devices=devices,
                ref_style="dr_uuid",
                cgroup_style="systemd",
                busy=frozenset(),
                net_rate=sw.FAST_NET_BYTES_PER_S,
                start=False,
            )
        self.tick(spec)

    @rule(i=PICK, busy=BUSY, spec=PASS_SPEC)
    def set_activity(self, i: int, busy: frozenset[str], spec: Any) -> None:
        c = self.pick(i, states=("running", "paused"))
        if c is not None:
            self.world.set_busy(c, busy, keep_rhythm=False)
        self.tick(spec)

    @rule(i=PICK, spec=PASS_SPEC)
    def pause_or_unpause(self, i: int, spec: Any) -> None:
        if self.CLASSES.gaps:
            c = self.pick(i, states=("running", "paused"))
            if c is not None:
                (self.world.unpause if c.state.value == "paused" else self.world.pause)(c)
        self.tick(spec)

    @rule(i=PICK, spec=PASS_SPEC)
    def restart(self, i: int, spec: Any) -> None:
        c = self.pick(i, states=("running", "exited", "created"))
        if c is not None:
            if c.state.value == "running":
                self.world.stop(c)
            c.restart_count += 1
            self.world.start(c)
        self.tick(spec)

    @rule(i=PICK, leave_orphans=st.booleans(), spec=PASS_SPEC)
    def exits(self, i: int, leave_orphans: bool, spec: Any) -> None:
        c = self.pick(i, states=("running",))
        if c is not None:
            self.world.stop(c, leave_orphans=leave_orphans)
        self.tick(spec)

    @rule(i=PICK, spec=PASS_SPEC)
    def user_removes(self, i: int, spec: Any) -> None:
        c = self.pick(i, states=("exited", "created"))
        if c is not None:
            self.world.remove(c)
        self.tick(spec)

    @rule(i=PICK, n=st.integers(0, 5), spec=PASS_SPEC)
    def rename(self, i: int, n: int, spec: Any) -> None:
        if self.CLASSES.ledger:
            c = self.pick(i)
            name = self.free_name(n)
            if c is not None and name is not None:
                c.name = name
        self.tick(spec)

    @rule(i=PICK, readable=st.booleans(), spec=PASS_SPEC)
    def keepalive(self, i: int, readable: bool, spec: Any) -> None:
        c = self.pick(i, states=("running",))
        if c is not None:
            self.world.touch_keepalive(c)
            c.keepalive_readable = readable or not self.CLASSES.unreadable_keepalive
        self.tick(spec)

    @rule(i=PICK, delay=st.sampled_from((1.0, 10.0, 30.0, 90.0)), spec=PASS_SPEC)
    def user_comes_back(self, i: int, delay: float, spec: Any) -> None:
        """The owner of a container starts working again while the executor carries out the next plan."""
        if self.CLASSES.stale_plans:
            c = self.pick(i, states=("running",))
            if c is not None:
                self.returns.append((c.key, delay))
        self.tick(spec)

    @rule(cadence=st.sampled_from((1.0, 2.0, 5.0)), seconds=st.sampled_from((60.0, 240.0)))
    def event_storm(self, cadence: float, seconds: float) -> None:
        """Docker events wake the loop again and again: a pass every ``cadence`` seconds for a while."""
        for _ in range(int(seconds / cadence)):
            self.tick((cadence, "pass", frozenset(), frozenset()))

    # --- rules: the rest of the host ----------------------------------------------------------
    @rule(kind=st.sampled_from(FOREIGN), devices=st.sampled_from(DEVICE_SETS[:5]), busy=BUSY, spec=PASS_SPEC)
    def foreign_workload(
        self, kind: str, devices: tuple[sw.Device, ...], busy: frozenset[str], spec: Any
    ) -> None:
        self._start_foreign(kind, devices, busy)
        self.tick(spec)

    @rule(i=PICK, spec=PASS_SPEC)
    def foreign_exits(self, i: int, spec: Any) -> None:
        c = self.pick(i, engine="foreign", states=("running",))
        if c is not None:
            self.world.stop(c)
            self.world.remove(c)
        self.tick(spec)

    @rule(device=st.sampled_from(tuple(sw.DEVICES.values())), spec=PASS_SPEC)
    def host_process(self, device: sw.Device, spec: Any) -> None:
        self.world.host_process(device)
        self.tick(spec)

    @rule(gpu=st.integers(0, 1), what=st.sampled_from(("util", "procs")), on=st.booleans(), spec=PASS_SPEC)
    def nvml_fault(self, gpu: int, what: str, on: bool, spec: Any) -> None:
        """NVML starts (or stops) failing one query for one GPU, pass after pass."""
        enabled = self.CLASSES.unknown_util if what == "util" else self.CLASSES.unknown_procs
        if enabled:
            faults = self.world.util_fail if what == "util" else self.world.procs_fail
            (faults.add if on else faults.discard)(gpu)
        self.tick(spec)

    @rule(gpu=st.integers(0, 2), spec=PASS_SPEC)
    def leaked_memory(self, gpu: int, spec: Any) -> None:
        """A driver context left behind: memory in use, no process (a reset may clean it)."""
        self.world.stale_memory[gpu] = 3 * sw.GIB
        self.tick(spec)

    @rule(
        device=st.sampled_from(tuple(sw.DEVICES.values())),
        notation=st.sampled_from(ROW_NOTATIONS[:1] + ROW_NOTATIONS[2:]),
        spec=PASS_SPEC,
    )
    def stale_row(self, device: sw.Device, notation: str, spec: Any) -> None:
        """A row for a container that never existed (a failed ``docker run``): releasable."""
        if not self.CLASSES.ledger:
            notation = "uuid"
        self.ghosts += 1
        gpu, denoted = row_gpu(device, notation)
        self.world.rows.append(
            sw.SimRow(
                gpu=gpu,
                container=f"ghost-{self.ghosts}",
                user="alice",
                allocated_at=self.world.wall(),
                holder_key=None,
                device=denoted,
            )
        )
        self.tick(spec)

    @rule(delta=st.sampled_from((-300.0, 600.0, 3600.0)), spec=PASS_SPEC)
    def clock_step(self, delta: float, spec: Any) -> None:
        if self.CLASSES.clock_steps:
            self.world.offset_s += delta
        self.tick(spec)

    @rule(back=st.sampled_from((0, 1, 3, 10, 19)), spec=PASS_SPEC)
    def daemon_restarts(self, back: int, spec: Any) -> None:
        """The daemon restarts with its memory lost (``back`` 0) or restored from the memory saved
        ``back`` passes ago: rebuilt from the event log as ``controller.act.salvage.load_state`` does.
        A new process: a new executor and action scheduler."""
        if self.CLASSES.memory_loss:
            w, events = self.world, self.tmp / "events.jsonl"
            if back == 0 or not self.backups:
                self.memory = memory_from_event_log(events, w.wall())
            else:
                old, saved = self.backups[max(0, len(self.backups) - 1 - back)]
                self.memory = not_older_than_the_log(old, events, w.wall())
                w.unseen.append((saved, w.true_s))
            self.executor = self._new_executor()
            self.scheduler = ActionScheduler(monotonic=w.monotonic, clock=w.wall)
        self.tick(spec)

    @rule(which=st.sampled_from(sorted(RELOADED)), spec=PASS_SPEC)
    def policy_reload(self, which: str, spec: Any) -> None:
        """The admin reloads a policy with other timeouts, holds and runtimes (the oracle's too)."""
        if self.CLASSES.policy_reloads:
            values = RELOADED[which]
            self.desired = b.desired(b.policy(**values), GLOBAL)
            self.world.idle_timeout_s = values["idle_timeout_s"]
            self.world.max_runtime_s = values["max_runtime_s"]
        self.tick(spec)

    @rule(spec=PASS_SPEC)
    def time_passes(self, spec: Any) -> None:
        self.tick(spec)


def machine(classes: Classes) -> type[SimMachine]:
    return type(
        "SimMachine_" + "_".join(f.name for f in fields(classes) if getattr(classes, f.name)) or "tame",
        (SimMachine,),
        {"CLASSES": classes},
    )


CI = settings(
    max_examples=500,
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
SOAK = settings(CI, max_examples=3000, stateful_step_count=80, derandomize=False)


def _run(classes: Classes, profile: settings) -> None:
    before = replace(STATS)
    done_before = dict(STATS.done)
    logger.disable("controller")  # thousands of executor log lines say nothing the oracle does not
    try:
        run_state_machine_as_test(machine(classes), settings=profile)
    finally:
        logger.enable("controller")
        done = {k: v - done_before.get(k, 0) for k, v in sorted(STATS.done.items())}
        print(
            f"\nsimulator {classes}: {STATS.examples - before.examples} examples, "
            f"{STATS.steps - before.steps} steps, {STATS.passes - before.passes} passes, "
            f"{STATS.actions - before.actions} planned actions, {STATS.stale - before.stale} stale; "
            f"carried out: {done}"
        )


def test_simulator_ci() -> None:
    """Every bug class enabled (or those named in DS01_SIM_CLASSES): no harm, ever."""
    _run(Classes.from_env(), CI)


def test_simulator_tame() -> None:
    """Every bug class off: the ordinary world the planner already handles raises no false alarm."""
    _run(TAME, settings(CI, max_examples=100))


@pytest.mark.soak
def test_simulator_soak() -> None:
    _run(Classes.from_env(), SOAK)


# --- the oracle itself ----------------------------------------------------------------------


def _world(tmp_path: Path) -> sw.World:
    return sw.World(
        tmp_path / "ledger.json",
        idle_timeout_s=600,
        idle_reduction=0.5,
        max_runtime_s=3600,
        keepalive_max_age_s=7200,
        executor_time=False,
    )


def _idle_action(c: sw.SimContainer) -> Any:
    from controller.plan.types import Action, ActionKind, Reason, Target

    return Action(
        kind=ActionKind.STOP_CONTAINER,
        target=Target(container=c.name, container_id=c.id),
        reason=Reason.IDLE_TIMEOUT,
        message="",
        due_at=sw.T0,
        key="k",
    )


def test_oracle_flags_an_idle_stop_of_a_recently_busy_container(tmp_path: Path) -> None:
    w = _world(tmp_path)
    c = w.new_container(
        name="train",
        engine="this",
        owner="alice",
        devices=(sw.FULL[0],),
        ref_style="dr_uuid",
        cgroup_style="systemd",
        busy=frozenset(),
        net_rate=sw.FAST_NET_BYTES_PER_S,
    )
    w.advance(3600)
    w.set_busy(c, frozenset({"cpu"}))
    w.advance(60)
    w.set_busy(c, frozenset())
    w.advance(60)
    w.current_action = _idle_action(c)
    sw.FakeDockerApi(w).stop(c.id, timeout=0)
    assert [v.kind for v in w.violations] == ["StopContainer IdleTimeout"]


def test_oracle_accepts_an_idle_stop_after_a_true_idle_timeout(tmp_path: Path) -> None:
    w = _world(tmp_path)
    c = w.new_container(
        name="train",
        engine="this",
        owner="alice",
        devices=(sw.FULL[0],),
        ref_style="dr_uuid",
        cgroup_style="systemd",
        busy=frozenset({"gpu"}),
        net_rate=sw.FAST_NET_BYTES_PER_S,
    )
    w.advance(600)
    w.set_busy(c, frozenset())
    w.advance(601)
    w.current_action = _idle_action(c)
    sw.FakeDockerApi(w).stop(c.id, timeout=0)
    assert w.violations == []
    assert c.state.value == "exited"


def test_oracle_flags_kills_of_foreign_live_workloads_and_resets_of_used_gpus(tmp_path: Path) -> None:
    w = _world(tmp_path)
    job = w.new_container(
        name="k8s",
        engine="kubepods",
        owner="bob",
        devices=(sw.FULL[1],),
        ref_style="dr_uuid",
        cgroup_style="systemd",
        busy=frozenset({"gpu"}),
        net_rate=sw.FAST_NET_BYTES_PER_S,
    )
    (proc,) = [p for p in w.processes.values() if p.owner_key == job.key]
    with w.seams():
        from controller.act import executor

        executor.run_reset(("true", "{uuid}"), sw.GPU_UUIDS[1], timeout_s=1)
        executor.kill_ladder(proc.pid, proc.start_time, job.id, grace_s=1)
    assert [v.kind for v in w.violations] == ["ResetGpu", "KillProcess"]


def test_oracle_flags_release_of_a_row_whose_renamed_holder_still_holds_the_gpu(tmp_path: Path) -> None:
    w = _world(tmp_path)
    c = w.new_container(
        name="train",
        engine="this",
        owner="alice",
        devices=(sw.SLICES[0],),
        ref_style="dr_uuid",
        cgroup_style="systemd",
        busy=frozenset(),
        net_rate=sw.FAST_NET_BYTES_PER_S,
    )
    gpu, device = row_gpu(sw.SLICES[0], "legacy")
    w.rows.append(
        sw.SimRow(
            gpu=gpu, container="train", user="alice", allocated_at=w.wall(), holder_key=c.key, device=device
        )
    )
    c.name = "train-old"
    with w.seams():
        from controller.act import executor

        entry = {"gpu": gpu, "container": "train", "user": "alice", "allocated_at": w.wall(0).isoformat()}
        assert executor.release_row(w.ledger_path, entry, timeout_s=1) is True
    assert [v.kind for v in w.violations] == ["ReleaseAllocation"]


@pytest.mark.parametrize(("other_user", "flagged"), [("alice", False), ("bob", True)])
def test_oracle_accepts_a_release_that_frees_nothing_only_for_the_same_user(
    tmp_path: Path, other_user: str, flagged: bool
) -> None:
    """The renamed holder is named by another row on the same GPU: of its user, the ledger still
    records the GPU for it and the release frees nothing; of another user, it is counted against
    that user, and the release is harm."""
    w = _world(tmp_path)
    c = w.new_container(
        name="train",
        engine="this",
        owner="alice",
        devices=(sw.FULL[0],),
        ref_style="dr_uuid",
        cgroup_style="systemd",
        busy=frozenset(),
        net_rate=sw.FAST_NET_BYTES_PER_S,
    )
    gpu = sw.FULL[0].uuid
    for name, user in (("train", "alice"), ("eval", other_user)):
        w.rows.append(
            sw.SimRow(
                gpu=gpu, container=name, user=user, allocated_at=w.wall(), holder_key=None, device=sw.FULL[0]
            )
        )
    w.rows[0].holder_key = c.key
    c.name = "eval"  # docker rename train eval: the name of the second row's (gone) container
    with w.seams():
        from controller.act import executor

        entry = {"gpu": gpu, "container": "train", "user": "alice", "allocated_at": w.wall(0).isoformat()}
        assert executor.release_row(w.ledger_path, entry, timeout_s=1) is True
    assert [v.kind for v in w.violations] == (["ReleaseAllocation"] if flagged else [])


# --- the sequences of tests/unit/sim_known_failures.md, replayed ------------------------------

F = frozenset


def _p(dt: float, mode: str = "pass") -> tuple[float, str, frozenset[int], frozenset[int]]:
    return (dt, mode, frozenset(), frozenset())


def _start(
    m: SimMachine,
    n: int = 0,
    *,
    devices: tuple[sw.Device, ...] = (sw.FULL[0],),
    busy: F[str] | None = None,
    style: str = "dr_uuid",
    notation: str = "none",
    slow_net: bool = False,
    dt: float = 30.0,
) -> None:
    busy = busy if busy is not None else F()
    m.start(
        n=n,
        devices=devices,
        style=style,
        cgroup="systemd",
        rhythm=((20.0, busy),),
        notation=notation,
        by_id=False,
        slow_net=slow_net,
        spec=_p(dt),
    )


def _passes(m: SimMachine, count: int, dt: float = 30.0, mode: str = "pass") -> None:
    for _ in range(count):
        m.time_passes(spec=_p(dt, mode))


def _gap_hides_activity(m: SimMachine) -> None:
    _start(m)
    _passes(m, 6)
    m.set_activity(i=0, busy=F({"gpu"}), spec=_p(1800, "no-pass"))
    m.set_activity(i=0, busy=F(), spec=_p(0.25))


def _pause_accrues_idle(m: SimMachine) -> None:
    _start(m)
    _passes(m, 6)
    m.pause_or_unpause(i=0, spec=_p(1800))
    m.pause_or_unpause(i=0, spec=_p(30))
    _passes(m, 3)


def _unknown_util(m: SimMachine) -> None:
    _start(m, busy=F({"gpu"}))
    m.nvml_fault(gpu=0, what="util", on=True, spec=_p(30))
    _passes(m, 12)


def _unknown_util_hidden_by_known(m: SimMachine) -> None:
    _start(m, devices=(sw.FULL[0], sw.FULL[1]), busy=F({"gpu-last"}))
    m.nvml_fault(gpu=1, what="util", on=True, spec=_p(30))
    _passes(m, 12)


def _foreign(kind: str) -> Any:
    def run(m: SimMachine) -> None:
        m.foreign_workload(kind=kind, devices=(sw.FULL[0],), busy=F({"gpu"}), spec=_p(0.25))
        _passes(m, 2, 0.25)

    return run


def _procs_unknown(m: SimMachine) -> None:
    m.host_process(device=sw.FULL[1], spec=_p(30))
    m.nvml_fault(gpu=1, what="procs", on=True, spec=_p(30))
    _passes(m, 6)


def _renamed_holder(m: SimMachine) -> None:
    _start(m, notation="uuid", busy=F({"gpu"}))
    m.rename(i=0, n=1, spec=_p(30))
    _passes(m, 12)


def _row_is_parent_nvml_down(m: SimMachine) -> None:
    _start(m, devices=(sw.SLICES[0],), notation="parent", busy=F({"gpu", "cpu"}))
    _passes(m, 12, mode="nvml-down")


def _legacy_mig_row(m: SimMachine) -> None:
    _start(m, devices=(sw.SLICES[0],), notation="legacy", busy=F({"gpu", "cpu"}))
    _passes(m, 12)


def _cdi_holder(m: SimMachine) -> None:
    _start(m, style="cdi", notation="uuid", busy=F({"gpu"}))
    _passes(m, 12)


def _release_budget(m: SimMachine) -> None:
    for _ in range(5):
        m.stale_row(device=sw.FULL[0], notation="uuid", spec=_p(0.25))
    _passes(m, 12)


def _stale_plan(m: SimMachine) -> None:
    for k in range(3):
        _start(m, k, dt=0.25)
    for k in range(3, 6):
        _start(m, k, devices=(sw.FULL[1],), busy=F({"gpu", "cpu"}), dt=0.25)
    _passes(m, 7)
    m.user_comes_back(i=1, delay=1.0, spec=_p(30))
    _passes(m, 8)


def _clock_step(m: SimMachine) -> None:
    _start(m, busy=F({"gpu"}))
    for _ in range(3):
        m.clock_step(delta=3600.0, spec=_p(30))
    _passes(m, 4)


def _unreadable_keepalive(m: SimMachine) -> None:
    _start(m)
    m.keepalive(i=0, readable=False, spec=_p(30))
    _passes(m, 12)


def _slow_network(m: SimMachine) -> None:
    _start(m, busy=F({"net"}), slow_net=True, dt=1.0)
    _passes(m, 400, 1.0)


def _until_warned(m: SimMachine, dt: float) -> None:
    for _ in range(200):
        _passes(m, 1, dt)
        if m.world.announced:
            return
    raise AssertionError("never warned")


def _lost_memory_runtime_reload(m: SimMachine) -> None:
    _start(m, busy=F({"gpu"}))
    _until_warned(m, 60)
    m.policy_reload(which="short", spec=_p(1, "no-pass"))
    m.daemon_restarts(back=0, spec=_p(1))
    _passes(m, 30, 30)


def _backup_idle_reload(m: SimMachine) -> None:
    m.policy_reload(which="long", spec=_p(1))
    _start(m)
    _until_warned(m, 10)
    m.policy_reload(which="short", spec=_p(1, "no-pass"))
    m.daemon_restarts(back=2, spec=_p(1))
    _passes(m, 60, 5)


def _lost_memory_after_clock_step(m: SimMachine) -> None:
    _start(m, busy=F({"gpu"}))
    _until_warned(m, 60)
    m.clock_step(delta=3600.0, spec=_p(30))
    m.policy_reload(which="short", spec=_p(1, "no-pass"))
    m.daemon_restarts(back=0, spec=_p(1))
    _passes(m, 60, 60)


def _lost_memory_in_hold(m: SimMachine) -> None:
    _start(m)
    for _ in range(60):
        _passes(m, 1, 10)
        if m.world.promised:
            break
    m.policy_reload(which="short", spec=_p(1, "no-pass"))
    m.daemon_restarts(back=0, spec=_p(1))
    _passes(m, 60, 10)


def _backup_before_a_restart(m: SimMachine) -> None:
    """Found by the CI profile: the memory restored from a backup saved before c0 was started again
    held a record of its earlier start, and the hold c0's stop notice named for the later one was not
    taken from the log: removed by the GPU hold reloaded shorter since (31 s after the stop; the
    notice, bound by idle warnings under the longer hold, said 2 min)."""
    idle3 = ((20.0, F()), (20.0, F()), (20.0, F()))
    m.population(
        containers=[((sw.FULL[0],), "dr_uuid", "systemd", ((20.0, F()),), "uuid", False, False)],
        foreign=[],
        util_fail=F(),
        procs_fail=F(),
        same_rhythm=False,
    )
    _passes(m, 15, 0.25)
    m.time_passes(spec=(0.25, "pass", F({0}), F()))
    m.restart(i=0, spec=(0.25, "pass", F(), F({0})))
    m.start(
        n=2,
        devices=(sw.FULL[0],),
        style="dr_uuid",
        cgroup="systemd",
        rhythm=idle3,
        notation="uuid",
        by_id=False,
        slow_net=False,
        spec=_p(900.0, "no-pass"),
    )
    m.user_comes_back(i=0, delay=1.0, spec=_p(1800.0))
    m.time_passes(spec=_p(1800.0))
    m.daemon_restarts(back=0, spec=_p(600.0, "no-pass"))
    m.time_passes(spec=_p(0.25))
    m.daemon_restarts(back=0, spec=_p(300.0))
    m.policy_reload(which="short", spec=_p(0.25))
    m.time_passes(spec=_p(0.25))
    m.time_passes(spec=_p(1800.0))
    m.daemon_restarts(back=0, spec=(0.25, "no-pass", F(), F({0})))
    m.time_passes(spec=_p(0.25))
    m.daemon_restarts(back=10, spec=_p(0.25))
    _passes(m, 12, 10.0)


def _rename_onto_a_removed_containers_name(m: SimMachine) -> None:
    """Found by the soak: c0 renamed c3, the name of a container removed with its row (by name) left
    on the same GPU; c0's row then named no container, and the rename guard found the renamed c0
    recorded by the row 'c3' of the same user. Released: the ledger still records the GPU for c0 (as
    'c3'), so the release freed nothing (the oracle had counted it as harm)."""
    idle3 = ((20.0, F()), (20.0, F()), (20.0, F()))
    row = ((sw.FULL[0],), "dr_uuid", "systemd", idle3, "uuid", False, False)
    m.population(
        containers=[row, row, ((sw.FULL[0],), "dr_uuid", "systemd", idle3, "none", True, False), row],
        foreign=[],
        util_fail=F({0, 1}),
        procs_fail=F({0, 1}),
        same_rhythm=True,
    )
    m.create_only(n=0, devices=(sw.FULL[0],), spec=(0.25, "pass", F({0, 1}), F({0})))
    m.clock_step(delta=-300.0, spec=(0.25, "pass", F({0, 1}), F()))
    m.exits(i=3, leave_orphans=False, spec=(0.25, "pass", F(), F({0, 1})))
    m.clock_step(delta=-300.0, spec=(0.25, "pass", F(), F({0})))
    m.user_comes_back(i=0, delay=1.0, spec=(0.25, "pass", F({0, 1}), F({0})))
    m.event_storm(cadence=1.0, seconds=60.0)
    m.daemon_restarts(back=0, spec=(1800.0, "pass", F({0, 1}), F()))
    m.exits(i=7, leave_orphans=True, spec=(30.0, "pass", F({0, 1}), F()))
    m.foreign_exits(i=0, spec=(120.0, "pass", F(), F({0})))
    m.exits(i=1, leave_orphans=True, spec=_p(0.25))
    m.leaked_memory(gpu=0, spec=_p(0.25))
    m.rename(i=0, n=3, spec=_p(300.0))
    _passes(m, 12, 30.0)


KNOWN = {
    "case1-daemon-gap-hides-activity": _gap_hides_activity,
    "case1-pause-accrues-idle": _pause_accrues_idle,
    "case2-unknown-utilisation": _unknown_util,
    "case2-known-gpu-hides-unknown": _unknown_util_hidden_by_known,
    "case3-rootless-docker": _foreign("rootless"),
    "case3-kubepods": _foreign("kubepods"),
    "case3-cri-containerd": _foreign("cri"),
    "case4-process-list-unknown": _procs_unknown,
    "case5-renamed-holder": _renamed_holder,
    "case5-nvml-down-row-names-full-gpu-of-mig": _row_is_parent_nvml_down,
    "case5-legacy-mig-string": _legacy_mig_row,
    "case5-cdi-device-request": _cdi_holder,
    "case5-release-budget": _release_budget,
    "case6-user-returns-during-execution": _stale_plan,
    "risk-clock-step": _clock_step,
    "risk-unreadable-keepalive": _unreadable_keepalive,
    "risk-network-threshold-per-interval": _slow_network,
    "memory-lost-then-runtime-reloaded-shorter": _lost_memory_runtime_reload,
    "memory-from-backup-then-idle-reloaded-shorter": _backup_idle_reload,
    "memory-lost-after-a-clock-step": _lost_memory_after_clock_step,
    "memory-lost-in-a-stop-notices-hold": _lost_memory_in_hold,
    "memory-from-a-backup-before-the-last-start": _backup_before_a_restart,
    "ledger-rename-onto-a-removed-containers-name": _rename_onto_a_removed_containers_name,
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_sequence(name: str) -> None:
    """Each falsifying sequence of sim_known_failures.md, replayed with every class enabled: no harm."""
    logger.disable("controller")
    m = machine(Classes())()
    try:
        KNOWN[name](m)
    finally:
        logger.enable("controller")
        m.teardown()
