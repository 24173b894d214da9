"""``python -m bench.soak``: the churn soak. Does the daemon's memory stay flat on a busy host?

Starts the real daemon (``ds01-controller run``, acting, default 30 s resync, the stand-in NVML),
then creates and removes containers for ``--minutes`` (default 10) while sampling the daemon's
RSS every ``--sample-s`` seconds (psutil). Every ``--period-s`` (default 1 s) one container of
the run's churn user is created and started (``sleep``) and the one before it is removed, as a
user would; every fifth one runs ``true`` instead, exits at once and is removed by the daemon
itself (the run's user has 0 s holds, see :func:`bench.specs.soak_specs`), so the removal
path (actions, event log, memory) is exercised too. Containers of anyone else are never touched
(every other timer is off).

The figure is the least-squares slope of RSS against time after the warm-up (the first quarter
of the run, at least 60 s; 30 s with ``--quick``), in MB per hour, with the RSS at the start and
end of the measured window. Target: under 1 MB per hour (``bench.targets.SOAK_SLOPE_MB_PER_H``).
``--quick`` runs 2 minutes, as a check of the soak itself. ``--private-engine`` runs it on a
dockerd of its own (see bench/README.md). Writes ``bench/out/soak-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.run import OUT_DIR, machine_info, write_specs

METHOD = "one container created and one removed per period, sequentially"


@dataclass(frozen=True)
class Fit:
    slope_bytes_per_s: float
    intercept: float
    n: int

    @property
    def mb_per_hour(self) -> float:
        return self.slope_bytes_per_s * 3600 / 1e6


def fit_line(points: list[tuple[float, float]]) -> Fit:
    """Least-squares line through ``(t, value)`` points (at least two distinct t)."""
    n = len(points)
    if n < 2:
        raise ValueError("need at least two samples")
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    stt = sum((t - mt) ** 2 for t, _ in points)
    if stt == 0:
        raise ValueError("samples span no time")
    slope = sum((t - mt) * (v - mv) for t, v in points) / stt
    return Fit(slope_bytes_per_s=slope, intercept=mv - slope * mt, n=n)


def warmup_s(total_s: float, quick: bool) -> float:
    return min(total_s / 2, max(30.0 if quick else 60.0, total_s / 4))


def churn(
    client: Any,
    user: str,
    label: str,
    seconds: float,
    period_s: float,
    sample: Any,
    log: Any,
) -> dict[str, int]:
    """Create one container and remove the previous one every ``period_s`` for ``seconds``."""
    from bench.host import IMAGE, NETWORK_MODE

    counts = {"created": 0, "removed_by_soak": 0, "left_to_daemon": 0, "errors": 0}
    previous: Any = None
    deadline = time.monotonic() + seconds
    next_tick = time.monotonic()
    i = 0
    while time.monotonic() < deadline:
        exits = i % 5 == 4
        try:
            c = client.containers.run(
                IMAGE,
                ["true"] if exits else ["sleep", "100000"],
                name=f"soak-{label.split('=', 1)[1]}-{i}",
                labels={label.split("=", 1)[0]: label.split("=", 1)[1], "ds01.user": user},
                detach=True,
                network_mode=NETWORK_MODE,
                mem_limit="16m",
            )
            counts["created"] += 1
            if exits:
                counts["left_to_daemon"] += 1
            else:
                if previous is not None:
                    previous.remove(force=True)
                    counts["removed_by_soak"] += 1
                previous = c
        except Exception as exc:  # the engine hiccuped: count it, keep going
            counts["errors"] += 1
            log(f"churn error: {type(exc).__name__}: {exc}")
        i += 1
        sample()
        next_tick += period_s
        time.sleep(max(0.0, next_tick - time.monotonic()))
    if previous is not None:
        try:
            previous.remove(force=True)
            counts["removed_by_soak"] += 1
        except Exception:
            pass  # removed at cleanup
    return counts


def soak(args: argparse.Namespace) -> dict[str, Any]:
    import docker
    import psutil

    from bench import nvml_env, specs
    from bench.daemon import Daemon, DaemonPaths, child_env
    from bench.host import BENCH_LABEL, remove_labelled

    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[soak {time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    stamp = datetime.now(UTC)
    run_id = stamp.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(2)
    work_dir = args.out / f"work-soak-{run_id}"
    work_dir.mkdir(parents=True, exist_ok=True)
    total_s = args.minutes * 60
    warm_s = warmup_s(total_s, args.quick)
    fake = nvml_env.prepare(work_dir)
    env = child_env(fake.env())
    specs_dir = write_specs(work_dir / "specs-soak", specs.soak_specs(run_id))
    user = specs.reaction_user(run_id)
    label = f"{BENCH_LABEL}={run_id}"
    client = docker.from_env(timeout=60)
    daemon = Daemon(paths=DaemonPaths.under(work_dir / "daemon"), env=env, specs_dir=specs_dir)
    samples: list[tuple[float, int]] = []
    result: dict[str, Any] = {
        "run_id": run_id,
        "started_at": stamp.isoformat(),
        "minutes": args.minutes,
        "period_s": args.period_s,
        "warmup_s": warm_s,
        "quick": args.quick,
        "method": METHOD,
        "machine": machine_info(),
        "docker_host": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        "load_avg_at_start": os.getloadavg(),
    }
    try:
        daemon.start()
        assert daemon.proc is not None
        ps = psutil.Process(daemon.proc.pid)
        if not daemon.wait_passes(1, timeout_s=120):
            raise RuntimeError(daemon.no_first_pass())
        t0 = time.monotonic()
        last = [0.0]

        def sample() -> None:
            now = time.monotonic()
            if now - last[0] >= args.sample_s:
                last[0] = now
                samples.append((now - t0, ps.memory_info().rss))

        log(f"daemon pid {ps.pid} up; churning for {args.minutes:g} min (warm-up {warm_s:.0f} s)")
        result["churn"] = churn(client, user, label, total_s, args.period_s, sample, log)
        result["passes"] = len(daemon.pass_times)
        result["daemon_alive"] = daemon.proc.poll() is None
        result["fds_end"] = ps.num_fds()
        result["threads_end"] = ps.num_threads()
    finally:
        daemon.stop()
        removed = remove_labelled(client, label)
        log(f"removed {removed} leftover containers")
    result["rss_samples"] = samples
    measured = [(t, float(rss)) for t, rss in samples if t >= warm_s]
    if len(measured) >= 2:
        fit = fit_line(measured)
        result["slope_mb_per_hour"] = fit.mb_per_hour
        result["rss_first_mb"] = samples[0][1] / 1e6
        result["rss_after_warmup_mb"] = measured[0][1] / 1e6
        result["rss_last_mb"] = samples[-1][1] / 1e6
        result["rss_peak_mb"] = max(r for _, r in samples) / 1e6
        fit_all = fit_line([(t, float(r)) for t, r in samples])
        result["slope_whole_run_mb_per_hour"] = fit_all.mb_per_hour
    result["load_avg_at_end"] = os.getloadavg()
    result["wall_s"] = time.monotonic() - started
    return result


def raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    from bench.targets import SOAK_SLOPE_MB_PER_H

    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="how long to churn (default 10; 2 quick)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute run, to check the soak itself")
    parser.add_argument("--period-s", type=float, default=1.0, help="one container per period (default 1 s)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval (default 5 s)")
    parser.add_argument("--private-engine", action="store_true", help="on a dockerd of its own")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where results go (default bench/out)")
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = 2.0 if args.quick else 10.0
    args.out.mkdir(parents=True, exist_ok=True)
    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    engine = None
    try:
        if args.private_engine:
            from bench.engine import PrivateEngine

            engine = PrivateEngine()
            engine.start()
        result = soak(args)
    except KeyboardInterrupt:
        print("python -m bench.soak: interrupted; its containers were removed", file=sys.stderr)
        return 130
    finally:
        if engine is not None:
            engine.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    result["private_engine"] = engine is not None
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    out_json = args.out / f"soak-{'quick-' if args.quick else ''}{stamp}.json"
    out_json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    slope = result.get("slope_mb_per_hour")
    if slope is None:
        print(f"too few RSS samples after the warm-up to fit a slope; results: {out_json}")
        return 1
    met = "met" if slope < SOAK_SLOPE_MB_PER_H else "MISSED"
    print(
        f"churn soak, {result['churn']['created']} containers in {args.minutes:g} min: daemon RSS "
        f"{result['rss_first_mb']:.1f} MB at start, {result['rss_after_warmup_mb']:.1f} MB after the "
        f"{result['warmup_s']:.0f} s warm-up, {result['rss_last_mb']:.1f} MB at the end; slope after "
        f"warm-up {slope:+.2f} MB/h (target < {SOAK_SLOPE_MB_PER_H:g} MB/h: {met}); "
        f"{result['passes']} passes\nresults: {out_json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
