"""The benchmark cases. Each returns a JSON-able dict; the runner records an exception as the
case's error so one missing piece never hides the other figures.

1. pass latency vs. host size (observe + plan, in process, on the real engine)
2. the predecessor's per-container subprocesses on the same host
3. the planner alone on synthetic hosts of 1,000 to 10,000 containers
4. reaction latency of the real daemon (Docker event -> completed removal)
5. idle cost of the real daemon (CPU share, peak RSS)
6. ``ds01ctl`` responsiveness
"""

from __future__ import annotations

import cProfile
import io
import pstats
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

from bench import synthetic
from bench.daemon import Daemon, DaemonPaths, run_cli
from bench.host import BENCH_LABEL, IMAGE, NETWORK_MODE, SLEEP_COMMAND, BenchHost, Member
from bench.specs import reaction_user
from bench.stats import summarize
from bench.targets import CLI_MEDIAN_S

PROFILE_TOP = 25


def utcnow() -> datetime:
    return datetime.now(UTC)


def profile_text(fn: Callable[[], object], top: int = PROFILE_TOP) -> str:
    """cProfile one call of ``fn``; the top functions by cumulative time, as text."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def make_desired(*, update_limits: bool = False) -> tuple[Any, str]:
    """The production desired state (the built-in policy through ``PolicySetDesired``), or, while
    the policy loader is missing, the test builders' DS01 defaults (said so in the results).

    ``update_limits``: the built-in policy with ``resourceEnforcement.updateLimits: true``, read from a
    specs directory holding the built-in document with that one switch changed."""
    from controller.plan.desired import PolicySetDesired

    if update_limits:
        return _update_limits_desired()

    try:
        from desired_state.load import load_policy
    except ImportError as exc:
        from tests.fixtures import builders

        return builders.desired(), f"test builders' DS01 defaults (policy loader missing: {exc})"
    return PolicySetDesired(load_policy()), "built-in policy (desired_state.load.load_policy())"


BUILTIN_SWITCH = ("updateLimits: false", "updateLimits: true ")


def _update_limits_desired() -> tuple[Any, str]:
    import tempfile
    from importlib import resources

    from controller.plan.desired import PolicySetDesired
    from desired_state.load import load_policy

    text = resources.files("crd_like_specs").joinpath("builtin/default.yaml").read_text(encoding="utf-8")
    if text.count(BUILTIN_SWITCH[0]) != 1:
        raise RuntimeError(f"the built-in policy does not say {BUILTIN_SWITCH[0]!r} once")
    with tempfile.TemporaryDirectory(prefix="bench-specs-") as tmp:
        (Path(tmp) / "default.yaml").write_text(text.replace(*BUILTIN_SWITCH), encoding="utf-8")
        policy = load_policy(Path(tmp))
    return PolicySetDesired(policy), "built-in policy with resourceEnforcement.updateLimits: true"


# --- 1. pass latency -------------------------------------------------------------------------------
@dataclass
class PassRig:
    """An in-process observer + planner, built exactly as the daemon builds them."""

    observer: Any
    desired: Any
    memory: Any
    plan_fn: Callable[..., Any] | None
    plan_missing: str | None = None

    @classmethod
    def build(cls, ledger_path: Path) -> PassRig:
        from controller.memory import ControllerMemory
        from controller.observe.host import HostObserver, ObserveConfig
        from controller.observe.nvml import NvmlObserver

        desired: Any = None
        plan_fn: Callable[..., Any] | None = None
        plan_missing: str | None = None
        try:
            from controller.plan.planner import plan

            desired, _source = make_desired()
            plan_fn = plan
            names = desired.global_policy.system_process_names.value
            config = ObserveConfig(ledger_path=ledger_path, system_process_names=names)
        except ImportError as exc:
            # Still measure observation, and say plainly that the planner was not measured.
            plan_missing = f"missing: {exc}"
            config = ObserveConfig(ledger_path=ledger_path)
        observer = HostObserver(config, nvml=NvmlObserver())
        return cls(
            observer=observer,
            desired=desired,
            memory=ControllerMemory(),
            plan_fn=plan_fn,
            plan_missing=plan_missing,
        )

    def one_pass(self) -> dict[str, Any]:
        """observe + plan once; the memory carries over as in the daemon."""
        w0, c0 = time.perf_counter(), time.process_time()
        snapshot = self.observer.observe()
        w1 = time.perf_counter()
        the_plan = None
        if self.plan_fn is not None:
            the_plan = self.plan_fn(snapshot, self.desired, self.memory, utcnow())
        w2, c2 = time.perf_counter(), time.process_time()
        if the_plan is not None:
            self.memory = the_plan.memory
        return {
            "wall_s": w2 - w0,
            "observe_wall_s": w1 - w0,
            "plan_wall_s": w2 - w1,
            "cpu_s": c2 - c0,
            "docker_api_calls": snapshot.docker_api_calls,
            "containers": len(snapshot.containers),
            "running": sum(1 for c in snapshot.containers if c.state == "running"),
            "gpus": len(snapshot.gpus),
            "gpu_processes": len(snapshot.processes),
            "attributed_processes": sum(1 for p in snapshot.processes if p.container_exists),
            "domains_down": [h.domain.value for h in snapshot.health if not h.ok],
            "actions": None if the_plan is None else len(the_plan.actions),
            "deferred": None if the_plan is None else len(the_plan.deferred),
        }

    def close(self) -> None:
        self.observer.close()


def pass_latency(host: BenchHost, ledger_path: Path, repeats: int) -> dict[str, Any]:
    """A cold pass (fresh observer) and ``repeats`` steady-state passes on the host as it is."""
    t0 = time.perf_counter()
    rig = PassRig.build(ledger_path)
    construct_s = time.perf_counter() - t0
    try:
        cold = rig.one_pass()
        steady = [rig.one_pass() for _ in range(repeats)]
    finally:
        rig.close()
    return {
        "planner": rig.plan_missing or "measured",
        "running_containers_created": len(host.running),
        "host_containers_created": len(host.members),
        "observer_construct_s": construct_s,
        "cold": cold,
        "steady_wall_s": summarize([p["wall_s"] for p in steady]),
        "steady_observe_wall_s": summarize([p["observe_wall_s"] for p in steady]),
        "steady_plan_wall_s": summarize([p["plan_wall_s"] for p in steady]),
        "steady_cpu_s": summarize([p["cpu_s"] for p in steady]),
        "steady_docker_api_calls": summarize([float(p["docker_api_calls"]) for p in steady]),
        "last_pass": steady[-1],
    }


def profile_pass(ledger_path: Path) -> str:
    """A profile of one steady-state pass (after a cold one), for a missed target."""
    rig = PassRig.build(ledger_path)
    try:
        rig.one_pass()
        return profile_text(rig.one_pass)
    finally:
        rig.close()


def changed_containers(host: BenchHost, ledger_path: Path, counts: Sequence[int]) -> dict[str, Any]:
    """Docker API calls of a steady pass vs. a pass right after N containers changed state.

    Each change is a kill (running -> exited) and later a start (exited -> running); the daemon's
    event follower would invalidate each id, so the rig does the same before the pass.
    """
    rig = PassRig.build(ledger_path)
    rows: list[dict[str, Any]] = []
    try:
        rig.one_pass()
        steady = rig.one_pass()
        candidates = [m for m in host.running if m.pid is not None]
        for n in counts:
            victims = candidates[:n]
            host.kill(victims)
            for m in victims:
                rig.observer.invalidate(m.id)
            after_kill = rig.one_pass()
            host.start(victims)
            for m in victims:
                rig.observer.invalidate(m.id)
            after_start = rig.one_pass()
            settled = rig.one_pass()
            rows.append(
                {
                    "changed": n,
                    "calls_after_kill": after_kill["docker_api_calls"],
                    "calls_after_start": after_start["docker_api_calls"],
                    "calls_next_steady": settled["docker_api_calls"],
                    "wall_s_after_kill": after_kill["wall_s"],
                }
            )
    finally:
        rig.close()
    return {"steady_calls": steady["docker_api_calls"], "rows": rows}


# --- 3. planner at scale ---------------------------------------------------------------------------
def planner_scale(sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    import gc

    from controller.plan.planner import plan

    rows: list[dict[str, Any]] = []
    desired_source = ""
    for n in sizes:
        now = utcnow()
        t0 = time.perf_counter()
        snapshot, memory = synthetic.build(n, now)
        build_s = time.perf_counter() - t0
        # A freshly loaded policy set per size: the resolution memo starts empty, as after a
        # daemon start or a policy reload, so the first plan shows that cost on its own.
        desired, desired_source = make_desired()
        gc.collect()
        w0 = time.perf_counter()
        plan(snapshot, desired, memory, now)
        first_s = time.perf_counter() - w0
        walls: list[float] = []
        cpus: list[float] = []
        actions = deferred = 0
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            the_plan = plan(snapshot, desired, memory, now)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            actions, deferred = len(the_plan.actions), len(the_plan.deferred)
        wall = summarize(walls)
        rows.append(
            {
                "containers": n,
                "running": sum(1 for c in snapshot.containers if c.state == "running"),
                "gpus": len(snapshot.gpus),
                "gpu_processes": len(snapshot.processes),
                "memory_samples": sum(len(c.samples) for c in memory.containers.values()),
                "build_s": build_s,
                "first_plan_s": first_s,
                "wall_s": wall,
                "cpu_s": summarize(cpus),
                "us_per_container": wall["median"] / n * 1e6,
                "actions": actions,
                "deferred": deferred,
            }
        )
        del snapshot, memory, desired
    return {
        "desired": desired_source,
        "note": "wall_s: steady plans (policy resolutions memoised, as in a running daemon); "
        "first_plan_s: the first plan after the policy set was loaded",
        "rows": rows,
        "limits": planner_limits(sizes[-1], repeats),
    }


def planner_limits(n: int, repeats: int) -> dict[str, Any]:
    """The planner on a host whose containers report limits (``synthetic.build(limits=True)``), with
    ``updateLimits`` off (reported: one deferral for the host) and on (UpdateResources, or BelowUsage
    and the owner warned), the same snapshot planned in turn, a repeat of each at a time."""
    import gc

    from controller.plan.planner import plan

    now = utcnow()
    snapshot, memory = synthetic.build(n, now, limits=True)
    modes = {"off": make_desired()[0], "on": make_desired(update_limits=True)[0]}
    cpus: dict[str, list[float]] = {mode: [] for mode in modes}
    counts: dict[str, dict[str, int]] = {}
    for desired in modes.values():
        plan(snapshot, desired, memory, now)  # fills the resolution memo, as a running daemon has it
    gc.collect()
    for _ in range(repeats):
        for mode, desired in modes.items():
            c0 = time.process_time()
            the_plan = plan(snapshot, desired, memory, now)
            cpus[mode].append(time.process_time() - c0)
            counts[mode] = {"actions": len(the_plan.actions), "deferred": len(the_plan.deferred)}
    return {
        "containers": n,
        "cpu_s": {mode: summarize(v) for mode, v in cpus.items()},
        "plans": counts,
    }


def profile_planner(n: int) -> str:
    """A profile of one steady plan (after a first one filled the resolution memo)."""
    from controller.plan.planner import plan

    desired, _source = make_desired()
    now = utcnow()
    snapshot, memory = synthetic.build(n, now)
    plan(snapshot, desired, memory, now)
    return profile_text(lambda: plan(snapshot, desired, memory, now))


# --- 4. reaction latency ---------------------------------------------------------------------------


class DestroyWatcher:
    """Follows Docker events for this run's containers: engine timestamps of create/die/destroy."""

    def __init__(self, client: docker.DockerClient, run_id: str) -> None:
        self.client = client
        self.times: dict[tuple[str, str], float] = {}
        self._cond = threading.Condition()
        since = int(time.time()) - 1
        self._stream = client.events(
            decode=True,
            since=since,
            filters={"type": "container", "label": f"{BENCH_LABEL}={run_id}"},
        )
        self._thread = threading.Thread(target=self._follow, name="bench-events", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for ev in self._stream:
                action = str(ev.get("Action") or ev.get("status") or "")
                cid = str(ev.get("id") or "")
                with self._cond:
                    self.times.setdefault((cid, action), int(ev["timeNano"]) / 1e9)
                    self._cond.notify_all()
        except Exception:
            return  # the stream was closed by close()

    def wait(self, cid: str, action: str, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (cid, action) not in self.times:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.times[(cid, action)]

    def close(self) -> None:
        self._stream.close()


def reaction_latency(
    client: docker.DockerClient,
    host: BenchHost,
    work_dir: Path,
    env: dict[str, str],
    specs_dir: Path,
    trials: int,
    timeout_s: float = 15.0,
) -> dict[str, Any]:
    """Time from ``docker create`` (created-never-started) and from a container's exit (stopped) to
    the daemon's removal of it, with a policy that makes both due at once."""
    daemon = Daemon(paths=DaemonPaths.under(work_dir / "daemon-reaction"), env=env, specs_dir=specs_dir)
    watcher = DestroyWatcher(client, host.run_id)
    results: dict[str, Any] = {}
    try:
        daemon.start()
        if not daemon.wait_passes(1, timeout_s=120):
            raise RuntimeError(daemon.no_first_pass())
        for kind in ("created", "exited"):
            latencies: list[float] = []
            missed: list[str] = []
            for i in range(trials):
                name = f"bench-{host.run_id}-react-{kind[0]}{i:02d}"
                labels = host.labels_for(10_000 + i, None)
                labels["ds01.user"] = reaction_user(host.run_id)
                if kind == "created":
                    c = client.containers.create(
                        IMAGE, SLEEP_COMMAND, name=name, labels=labels, network_mode=NETWORK_MODE
                    )
                    start_event = "create"
                else:
                    c = client.containers.run(
                        IMAGE, ["true"], name=name, labels=labels, network_mode=NETWORK_MODE, detach=True
                    )
                    start_event = "die"
                t_start = watcher.wait(c.id, start_event, timeout_s)
                t_destroy = watcher.wait(c.id, "destroy", timeout_s)
                if t_start is None or t_destroy is None:
                    missed.append(name)
                    continue
                latencies.append(t_destroy - t_start)
            results[kind] = {
                "from": "docker create" if kind == "created" else "container exit (die event)",
                "to": "destroy event",
                "latency_s": summarize(latencies),
                "missed": missed,
            }
        results["daemon_passes"] = len(daemon.pass_times)
    finally:
        rc = daemon.stop()
        watcher.close()
    results["daemon_exit_code"] = rc
    return results


# --- 5. idle cost ----------------------------------------------------------------------------------
def idle_cost(work_dir: Path, env: dict[str, str], specs_dir: Path, seconds: float) -> dict[str, Any]:
    """CPU share and RSS of the acting daemon with the default 30 s resync, after its first pass.

    ``specs_dir`` keeps the built-in timers but protects every container (see bench/specs.py), so
    the daemon does its full evaluation (and writes its inventory) but changes nothing.
    """
    import psutil

    daemon = Daemon(paths=DaemonPaths.under(work_dir / "daemon-idle"), env=env, specs_dir=specs_dir)
    try:
        t_start = time.monotonic()
        daemon.start()
        assert daemon.proc is not None
        ps = psutil.Process(daemon.proc.pid)
        if not daemon.wait_passes(1, timeout_s=120):
            raise RuntimeError(daemon.no_first_pass())
        startup_s = time.monotonic() - t_start
        startup_cpu = ps.cpu_times()
        startup_rss = ps.memory_info().rss
        passes_before = len(daemon.pass_times)
        c0 = ps.cpu_times()
        w0 = time.monotonic()
        peak_rss = startup_rss
        rss_samples: list[int] = []
        while time.monotonic() - w0 < seconds:
            time.sleep(1.0)
            rss = ps.memory_info().rss
            rss_samples.append(rss)
            peak_rss = max(peak_rss, rss)
        c1 = ps.cpu_times()
        wall = time.monotonic() - w0
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        return {
            "dry_run": False,
            "interval_s": 30.0,
            "measured_s": wall,
            "startup_to_first_pass_s": startup_s,
            "startup_cpu_s": startup_cpu.user + startup_cpu.system,
            "cpu_s": cpu,
            "cpu_share_of_one_core": cpu / wall,
            "peak_rss_bytes": peak_rss,
            "median_rss_bytes": sorted(rss_samples)[len(rss_samples) // 2] if rss_samples else startup_rss,
            "passes_during_measurement": len(daemon.pass_times) - passes_before,
        }
    finally:
        daemon.stop()


# --- 6. ds01ctl ------------------------------------------------------------------------------------
def cli_latency(work_dir: Path, env: dict[str, str], member: Member, repeats: int) -> dict[str, Any]:
    """``ds01ctl`` wall time, interpreter start-up included, in the two situations an admin meets.

    ``warm``: a daemon has run (its state directory holds the inspect cache it saves each pass),
    which is how ``ds01ctl`` is used on a managed host. ``cold``: no daemon, every container inspected.
    """
    import subprocess

    from bench.daemon import script

    out: dict[str, Any] = {}
    for situation in ("warm", "cold"):
        paths = DaemonPaths.under(work_dir / f"cli-{situation}")
        if situation == "warm":
            subprocess.run(
                [script("ds01-controller"), "run", "--once", "--dry-run", *paths.flags()],
                env=env,
                capture_output=True,
                timeout=300,
                check=False,
            )
        cases_here: list[tuple[str, list[str]]] = [
            ("get containers", ["get", "containers", *paths.flags()]),
            ("describe container", ["describe", "container", member.name, *paths.flags()]),
        ]
        if situation == "warm":
            # The same host observed live (the daemon's inspect cache only): the path before the
            # daemon recorded its last pass, measured in the same run.
            cases_here += [
                ("get containers --live", ["get", "containers", "--live", *paths.flags()]),
                (
                    "describe container --live",
                    ["describe", "container", member.name, "--live", *paths.flags()],
                ),
            ]
        for label, args in cases_here:
            walls: list[float] = []
            cpus: list[float] = []  # the child's user + system time: less skewed by other work than wall
            last_rc, last_out = 0, ""
            for _ in range(repeats):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                wall, rc, text = run_cli(args, env)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                walls.append(wall)
                cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
                last_rc, last_out = rc, text
            key = f"{label} ({situation})"
            out[key] = {
                "argv": ["ds01ctl", *args[:3]],
                "wall_s": summarize(walls),
                "cpu_s": summarize(cpus),
                "exit_code": last_rc,
                "output_lines": last_out.count("\n"),
                "output_head": last_out[:400] if last_rc != 0 else "",
            }
            if situation == "warm" and "--live" not in label and summarize(walls)["median"] > CLI_MEDIAN_S:
                out[key]["profile"] = profile_cli(args, env, work_dir / f"cli-{label.replace(' ', '-')}.prof")
    return out


def profile_cli(args: Sequence[str], env: dict[str, str], prof_path: Path) -> str:
    """cProfile one ``ds01ctl`` run in its own interpreter (imports included)."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof_path), "-m", "controller.cli", *args],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    out = io.StringIO()
    try:
        pstats.Stats(str(prof_path), stream=out).sort_stats("cumulative").print_stats(PROFILE_TOP)
    except (OSError, TypeError) as exc:
        return f"profile failed: {exc}"
    return out.getvalue()
