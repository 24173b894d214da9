"""``python -m bench``: the benchmark suite on the real Docker engine and the stand-in NVML.

Creates the hosts it needs (every container labelled ``ds01.bench=<run id>``), runs each case several
times, removes everything it created (also on failure, Ctrl-C or SIGTERM), writes
``bench/out/results-<date>-<time>.json`` and a PNG plot, and prints a table with each figure
against its target. ``--quick`` runs every case at minimal size, as a smoke test of the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
REQUIREMENTS = BENCH_DIR / "requirements.txt"


@dataclass(frozen=True)
class RunPlan:
    """Sizes and repetitions of one run."""

    quick: bool
    host_sizes: tuple[int, ...]
    steady_passes: int
    predecessor_size: int
    predecessor_subset: int
    changed_counts: tuple[int, ...]
    planner_sizes: tuple[int, ...]
    planner_repeats: int
    reaction_trials: int
    daemon_host_size: int
    idle_seconds: float
    cli_repeats: int

    @classmethod
    def full(cls, idle_seconds: float) -> RunPlan:
        return cls(
            quick=False,
            host_sizes=(10, 100, 500),
            steady_passes=10,
            predecessor_size=100,
            predecessor_subset=10,
            changed_counts=(1, 10, 50),
            planner_sizes=(1_000, 2_500, 5_000, 10_000),
            planner_repeats=5,
            reaction_trials=20,
            daemon_host_size=100,
            idle_seconds=idle_seconds,
            cli_repeats=5,
        )

    @classmethod
    def smoke(cls, idle_seconds: float) -> RunPlan:
        return cls(
            quick=True,
            host_sizes=(20,),
            steady_passes=3,
            predecessor_size=20,
            predecessor_subset=2,
            changed_counts=(1, 4),
            planner_sizes=(200, 400),
            planner_repeats=2,
            reaction_trials=3,
            daemon_host_size=20,
            idle_seconds=idle_seconds,
            cli_repeats=2,
        )


@dataclass
class Run:
    plan: RunPlan
    run_id: str
    work_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def log(self, msg: str) -> None:
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def case(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run one case; an exception is recorded as the case's error (with what is missing)."""
        load_1m = os.getloadavg()[0]
        self.log(f"{key} ... (load average {load_1m:.1f})")
        t0 = time.monotonic()
        try:
            value = fn()
        except (KeyboardInterrupt, SystemExit):
            raise
        except ImportError as exc:
            value = {"error": f"missing: {exc}", "missing_module": getattr(exc, "name", None)}
        except Exception as exc:
            value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
        if isinstance(value, dict):
            value.setdefault("case_wall_s", time.monotonic() - t0)
            # Other work on the machine skews every timing; record how busy it was.
            value.setdefault("load_avg_1m_at_start", load_1m)
            if "error" in value:
                self.log(f"{key} FAILED: {value['error']}")
        self.results[key] = value
        return value


# --- machine ---------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def libpython(maps: Path = Path("/proc/self/maps")) -> str:
    """Where this interpreter's core runs from: ``shared <file>`` when the process maps a libpython
    (a build with ``--enable-shared``, pyenv's default), ``static`` when it maps none (the core
    linked into the executable, as Debian's ``python3``), ``unknown`` where there is no such file.

    The same tree plans 10-15 % apart under two builds of one Python version (bench/RESULTS.md,
    2026-12-06): a figure is comparable only with one taken under the same build.
    """
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        fields = line.split(maxsplit=5)  # address, perms, offset, device, inode, then the file if any
        name = Path(fields[5].strip()).name if len(fields) == 6 else ""
        if name.startswith("libpython"):
            return f"shared {name}"
    return "static"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "python_libpython": libpython(),
        "python_compiler": platform.python_compiler(),
    }
    try:
        import docker

        # A short timeout: a wedged engine must not hold the run up here.
        client = docker.from_env(timeout=10)
        v = client.version()
        info["docker_version"] = v.get("Version")
        info["docker_api_version"] = v.get("ApiVersion")
        dinfo = client.info()
        info["docker_cgroup"] = f"v{dinfo.get('CgroupVersion')} {dinfo.get('CgroupDriver')}"
        info["docker_storage_driver"] = dinfo.get("Driver")
    except Exception as exc:
        info["docker_version"] = f"unavailable: {exc}"
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
        )
        info["git_revision"] = rev.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")
    except OSError:
        info["git_revision"] = "unknown"
    return info


def ensure_plot_requirements(run: Run) -> bool:
    """matplotlib is a benchmark-only requirement: install it into this environment if missing."""
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        pass
    run.log(f"installing {REQUIREMENTS.relative_to(REPO_ROOT)} into {sys.prefix}")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        run.log("could not install the plot requirements; no PNG this run:\n" + done.stderr[-800:])
        return False
    return True


# --- the run ---------------------------------------------------------------------------------------
def raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_docker_cases(run: Run, client: Any, only: str | None = None) -> None:
    from bench import cases, nvml_env, predecessor, specs
    from bench.daemon import child_env
    from bench.host import BenchHost, CleanupError

    plan = run.plan
    probe = run.case("engine_probe", partial(engine_probe, client, run.run_id))
    if "error" in probe:
        run.log("the Docker engine is not usable; skipping every case that needs it")
        return
    fake = nvml_env.prepare(run.work_dir)
    ledger_path = run.work_dir / "gpu-ledger.json"
    env = child_env(fake.env())
    # A bare host process that NVML lists on GPU 0 (reported, never a container's).
    host_sleeper = subprocess.Popen(["sleep", "100000"], stdin=subprocess.DEVNULL)
    host = BenchHost(client, run.run_id, nvml_env.devices(fake), log=run.log)
    try:
        for size in plan.host_sizes:
            if only == "cli" and size != plan.host_sizes[-1]:
                continue  # --only cli: straight to the largest host
            grow_s = host.grow_to(size)
            n_procs = nvml_env.publish_processes(fake, host.running, host_sleeper.pid)
            run.log(
                f"host: {len(host.running)} running, {len(host.members)} in all ({grow_s:.0f} s to create); "
                f"{n_procs} GPU processes"
            )
            if only == "cli":
                continue
            result = run.case(
                f"pass_latency_{size}", partial(cases.pass_latency, host, ledger_path, plan.steady_passes)
            )
            if isinstance(result, dict):
                result["create_wall_s"] = grow_s
                result["nvml_gpu_processes"] = n_procs
            profile_pass_if_missed(run, size, ledger_path)
            if size == plan.predecessor_size:
                names = [m.name for m in host.running[: plan.predecessor_subset]]
                run.case("predecessor", partial(predecessor.measure, names, len(host.running)))
            if size == plan.daemon_host_size:
                specs_dir = write_specs(run.work_dir / "specs-reaction", specs.reaction_specs(run.run_id))
                run.case(
                    "reaction",
                    partial(
                        cases.reaction_latency,
                        client,
                        host,
                        run.work_dir,
                        env,
                        specs_dir,
                        plan.reaction_trials,
                    ),
                )
                idle_dir = write_specs(run.work_dir / "specs-idle", specs.idle_specs())
                run.case(
                    "idle_cost", partial(cases.idle_cost, run.work_dir, env, idle_dir, plan.idle_seconds)
                )
        if only != "cli":
            run.case("changed", partial(cases.changed_containers, host, ledger_path, plan.changed_counts))
        nvml_env.publish_processes(fake, host.running, host_sleeper.pid)
        member = host.running[len(host.running) // 2]
        run.case("cli", partial(cases.cli_latency, run.work_dir, env, member, plan.cli_repeats))
        run.results["cli_host_size"] = plan.host_sizes[-1]
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        run.log("removing this run's containers ...")
        try:
            removed = host.cleanup()
        except CleanupError as exc:
            # The results so far are still written; a private engine is stopped with what is left.
            removed = exc.removed
            run.results["cleanup_error"] = str(exc)
            run.log(f"cleanup failed: {exc}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        host_sleeper.kill()
        host_sleeper.wait()
        run.log(f"removed {removed} containers")


def engine_probe(client: Any, run_id: str) -> dict[str, Any]:
    from bench.host import probe_engine, remove_labelled

    try:
        return {"create_start_remove_s": probe_engine(client, run_id)}
    except Exception as exc:
        try:
            remove_labelled(client, f"ds01.bench={run_id}")
        except Exception:
            pass  # the engine is not answering; the error below says so
        return {
            "error": f"the engine did not create, start and remove one container "
            f"({type(exc).__name__}: {exc}); if `docker info` hangs too, the engine is wedged "
            "(send dockerd SIGUSR1 for a goroutine dump)"
        }


def write_specs(specs_dir: Path, documents: dict[str, str]) -> Path:
    specs_dir.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        (specs_dir / name).write_text(text)
    return specs_dir


def profile_pass_if_missed(run: Run, size: int, ledger_path: Path) -> None:
    """cProfile a steady pass at ``size`` now (the host grows later) if it missed its target."""
    from bench import cases
    from bench.targets import missed_pass_sizes

    if size not in missed_pass_sizes(run.results):
        return
    run.log(f"pass at {size} missed its target: profiling one steady pass")
    try:
        text = cases.profile_pass(ledger_path)
    except Exception as exc:
        text = f"profile failed: {exc}"
    run.results.setdefault("profiles", {})[f"pass_{size}"] = text


def profile_planner_if_missed(run: Run) -> None:
    from bench import cases
    from bench.targets import PLANNER_10K_S

    planner = run.results.get("planner", {})
    rows = planner.get("rows") if isinstance(planner, dict) else None
    if not rows:
        return
    last = rows[-1]
    if last["containers"] >= 10_000 and last["wall_s"]["median"] > PLANNER_10K_S:
        run.log(f"planner at {last['containers']} missed its target: profiling one steady plan")
        run.results.setdefault("profiles", {})[f"planner_{last['containers']}"] = cases.profile_planner(
            last["containers"]
        )


def _planner_only(quick: bool) -> int:
    """``--only planner``: the planner case alone, printed as one line per size (no engine needed)."""
    from bench import cases

    plan = RunPlan.smoke(0.0) if quick else RunPlan.full(0.0)
    result = cases.planner_scale(plan.planner_sizes, plan.planner_repeats)
    print(json.dumps({"machine": machine_info(), "load_avg_1m": os.getloadavg()[0]}, default=str))
    for row in result["rows"]:
        wall = row["wall_s"]
        print(
            f"planner @ {row['containers']:>6} containers: median {wall['median'] * 1000:.0f} ms, "
            f"min {wall['min'] * 1000:.0f} ms, first plan {row['first_plan_s'] * 1000:.0f} ms, "
            f"{row['actions']} actions, {row['deferred']} deferred"
        )
    lim = result["limits"]
    print(
        f"planner @ {lim['containers']:>6} containers reporting limits, CPU median: "
        + ", ".join(
            f"updateLimits {mode} {lim['cpu_s'][mode]['median'] * 1000:.0f} ms "
            f"({lim['plans'][mode]['actions']} actions, {lim['plans'][mode]['deferred']} deferred)"
            for mode in ("off", "on")
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="every case at minimal size (a smoke test, < 60 s)"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help="how long to measure the idle daemon (default 300; 20 with --quick)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (and installing matplotlib)")
    parser.add_argument(
        "--skip-docker", action="store_true", help="only the cases that need no Docker engine"
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="remove containers left by any earlier run (label ds01.bench) and exit",
    )
    parser.add_argument(
        "--private-engine",
        action="store_true",
        help="run every case on a dockerd of its own (started and removed by the run), away from other "
        "work on this machine's engine",
    )
    parser.add_argument(
        "--only",
        choices=["cli", "planner"],
        default=None,
        help="run one case alone: cli (ds01ctl at the largest host size, figure 6) or planner "
        "(the planner at scale; no Docker engine, no plot)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where results go (default bench/out)")
    args = parser.parse_args(argv)
    if args.only == "planner":
        return _planner_only(args.quick)

    import docker

    from bench.host import CleanupError, cleanup_all_runs
    from bench.report import render_table, write_plot
    from bench.targets import evaluate

    if args.cleanup:
        client = docker.from_env(timeout=60)
        try:
            print(f"removed {cleanup_all_runs(client)} containers labelled ds01.bench")
        except CleanupError as exc:
            print(f"python -m bench --cleanup: removed {exc.removed}; {exc}", file=sys.stderr)
            return 1
        return 0

    idle_s = args.idle_seconds if args.idle_seconds is not None else (20.0 if args.quick else 300.0)
    plan = RunPlan.smoke(idle_s) if args.quick else RunPlan.full(idle_s)
    stamp = datetime.now(UTC)
    run_id = stamp.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(2)
    args.out.mkdir(parents=True, exist_ok=True)
    work_dir = args.out / f"work-{run_id}"
    work_dir.mkdir(parents=True, exist_ok=True)
    run = Run(plan=plan, run_id=run_id, work_dir=work_dir)

    run.results["run"] = {
        "id": run_id,
        "started_at": stamp.isoformat(),
        "quick": plan.quick,
        "plan": plan.__dict__,
        "load_avg_at_start": os.getloadavg(),
    }
    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interrupted = False
    engine = None
    try:
        if not args.no_plot and not plan.quick:
            ensure_plot_requirements(run)
        if args.private_engine and not args.skip_docker:
            from bench.engine import PrivateEngine

            engine = PrivateEngine()
            run.log(f"starting a private Docker engine under {engine.root}")
            try:
                engine.start()
            except Exception as exc:
                # One line, no traceback: the run cannot go on without its engine.
                print(f"python -m bench: cannot start a private Docker engine: {exc}", file=sys.stderr)
                return 1
        run.results["run"]["docker_host"] = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        run.results["run"]["private_engine"] = engine is not None
        run.results["machine"] = machine_info()
        client = docker.from_env(timeout=60)
        run.log(
            f"run {run_id} on {run.results['machine']['cores']} cores, {run.results['machine']['cpu_model']}"
        )
        from bench import cases

        if args.only is None:
            run.case("planner", lambda: cases.planner_scale(plan.planner_sizes, plan.planner_repeats))
            profile_planner_if_missed(run)
        if not args.skip_docker:
            run_docker_cases(run, client, args.only)
    except KeyboardInterrupt:
        interrupted = True
        run.log("interrupted; containers removed; partial results follow")
    finally:
        if engine is not None:
            run.log("stopping the private Docker engine")
            engine.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    run.results["run"]["wall_s"] = time.monotonic() - run.started
    run.results["run"]["load_avg_at_end"] = os.getloadavg()
    run.results["run"]["interrupted"] = interrupted
    run.results["checks"] = [asdict(c) for c in evaluate(run.results)]
    prefix = "results-quick" if plan.quick else "results"
    out_json = args.out / f"{prefix}-{stamp.strftime('%Y-%m-%d-%H%M%S')}.json"
    out_json.write_text(json.dumps(run.results, indent=2, default=str) + "\n")
    if not args.no_plot:
        try:
            png = write_plot(run.results, out_json.with_suffix(".png"))
            if png is not None:
                run.log(f"plot: {png}")
        except Exception as exc:
            run.log(f"plot failed: {exc}")
    print(render_table(run.results))
    print(f"\nresults: {out_json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
