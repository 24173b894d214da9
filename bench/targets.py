"""The targets from the performance issue, and their evaluation against one run's results.

Each check yields a row: the figure, its target, the measured value and whether it was met
(``None`` when the case did not produce the figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASS_TARGETS_S = {100: 0.300, 500: 1.5}
PREDECESSOR_RATIO_MIN = 100.0
PLANNER_10K_S = 0.150  # was 0.250; lowered to the planner-speed target of the typed-actions rework
PLANNER_LINEARITY_MAX = 2.0  # time per container at the largest size / at the smallest
REACTION_P95_S = 1.0
IDLE_CPU_SHARE_MAX = 0.01
IDLE_RSS_MAX_BYTES = 100 * 1024 * 1024
CLI_MEDIAN_S = 0.5
# Churn soak (python -m bench.soak): daemon RSS slope after warm-up.
SOAK_SLOPE_MB_PER_H = 1.0
# "O(1) plus O(changed)": a steady pass may not grow with the host beyond this many calls.
STEADY_CALLS_GROWTH_MAX = 5


@dataclass(frozen=True)
class Check:
    figure: str
    target: str
    measured: str
    met: bool | None


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _ms(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def pass_sizes(results: dict[str, Any]) -> list[int]:
    return sorted(int(k.rsplit("_", 1)[1]) for k in results if k.startswith("pass_latency_"))


def missed_pass_sizes(results: dict[str, Any]) -> list[int]:
    out: list[int] = []
    for size in pass_sizes(results):
        median = _get(results, f"pass_latency_{size}", "steady_wall_s", "median")
        target = _target_for(size)
        if median is not None and target is not None and median > target:
            out.append(size)
    return out


def _target_for(size: int) -> float | None:
    """The pass target at ``size`` (the issue's 100 and 500 figures; linear between, for --quick)."""
    if size in PASS_TARGETS_S:
        return PASS_TARGETS_S[size]
    if size <= 100:
        return PASS_TARGETS_S[100]
    return None


def evaluate(results: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    for size in pass_sizes(results):
        r = results[f"pass_latency_{size}"]
        target = _target_for(size)
        median = _get(r, "steady_wall_s", "median")
        if median is None:
            checks.append(Check(f"pass @ {size}", "-", str(r.get("error", "no result")), None))
            continue
        p95 = r["steady_wall_s"]["p95"]
        what = (
            "observe+plan" if r.get("planner", "measured") == "measured" else "observe ONLY, planner missing"
        )
        checks.append(
            Check(
                f"pass ({what}) @ {size} running",
                f"<= {_ms(target)}" if target else "(curve)",
                f"median {_ms(median)}, p95 {_ms(p95)}, cpu {_ms(r['steady_cpu_s']['median'])}",
                None if target is None else median <= target,
            )
        )
        checks.append(
            Check(
                f"docker API calls @ {size}",
                "O(1) steady",
                f"steady {r['steady_docker_api_calls']['median']:.0f}, cold {r['cold']['docker_api_calls']}",
                None,
            )
        )
    sizes = pass_sizes(results)
    steady_calls = [_get(results, f"pass_latency_{s}", "steady_docker_api_calls", "median") for s in sizes]
    if len([c for c in steady_calls if c is not None]) >= 2 and None not in steady_calls:
        growth = steady_calls[-1] - steady_calls[0]
        checks.append(
            Check(
                f"steady calls growth {sizes[0]} -> {sizes[-1]}",
                f"<= {STEADY_CALLS_GROWTH_MAX} (O(1))",
                f"{steady_calls[0]:.0f} -> {steady_calls[-1]:.0f}",
                growth <= STEADY_CALLS_GROWTH_MAX,
            )
        )
    changed = results.get("changed")
    if isinstance(changed, dict) and "rows" in changed:
        parts = [f"N={row['changed']}: {row['calls_after_kill']}" for row in changed["rows"]]
        per_change = [
            (row["calls_after_kill"] - changed["steady_calls"]) / row["changed"] for row in changed["rows"]
        ]
        checks.append(
            Check(
                "calls after N containers changed",
                "steady + O(N)",
                f"steady {changed['steady_calls']}; " + ", ".join(parts),
                max(per_change) <= 4 if per_change else None,
            )
        )
    pred = results.get("predecessor")
    if isinstance(pred, dict) and "pass_wall_s" in pred:
        size = pred["host_running_containers"]
        ours = _get(
            results, f"pass_latency_{results['run']['plan']['predecessor_size']}", "steady_wall_s", "median"
        )
        if ours:
            ratio = pred["pass_wall_s"] / ours
            pred["ratio_vs_controller"] = ratio
            how = (
                f"{pred['containers_measured']} measured, extrapolated"
                if pred["extrapolated"]
                else "measured"
            )
            checks.append(
                Check(
                    f"predecessor method @ {size} running ({how})",
                    f">= {PREDECESSOR_RATIO_MIN:.0f}x slower",
                    f"{_ms(pred['pass_wall_s'])} per pass = {ratio:.0f}x",
                    ratio >= PREDECESSOR_RATIO_MIN,
                )
            )
    rows = _get(results, "planner", "rows")
    if rows:
        last = rows[-1]
        at_target_size = last["containers"] >= 10_000
        checks.append(
            Check(
                f"planner alone @ {last['containers']}",
                f"<= {_ms(PLANNER_10K_S)} @ 10,000" if at_target_size else "(target is at 10,000)",
                f"median {_ms(last['wall_s']['median'])}, p95 {_ms(last['wall_s']['p95'])}"
                + (
                    f" (first plan after a policy load {_ms(last['first_plan_s'])})"
                    if "first_plan_s" in last
                    else ""
                ),
                last["wall_s"]["median"] <= PLANNER_10K_S if at_target_size else None,
            )
        )
        lim = _get(results, "planner", "limits")
        if lim:
            checks.append(
                Check(
                    f"planner @ {lim['containers']}, limits reported",
                    "updateLimits on vs off (no target)",
                    f"CPU median {_ms(lim['cpu_s']['on']['median'])} on, "
                    f"{_ms(lim['cpu_s']['off']['median'])} off",
                    None,
                )
            )
        curve = ", ".join(f"{r['containers']}: {r['us_per_container']:.0f}" for r in rows)
        ratio = rows[-1]["us_per_container"] / rows[0]["us_per_container"]
        checks.append(
            Check(
                "planner us/container (near linear)",
                f"last/first <= {PLANNER_LINEARITY_MAX:.0f}",
                f"{curve} (x{ratio:.2f})",
                ratio <= PLANNER_LINEARITY_MAX,
            )
        )
    react = results.get("reaction")
    if isinstance(react, dict):
        for kind in ("created", "exited"):
            lat = _get(react, kind, "latency_s")
            if lat and lat["n"]:
                missed = len(react[kind]["missed"])
                checks.append(
                    Check(
                        f"reaction: {react[kind]['from']} -> removed",
                        f"p95 <= {_ms(REACTION_P95_S)}",
                        f"p50 {_ms(lat['median'])}, p95 {_ms(lat['p95'])} ({lat['n']} trials"
                        + (f", {missed} missed)" if missed else ")"),
                        lat["p95"] <= REACTION_P95_S and not missed,
                    )
                )
    idle = results.get("idle_cost")
    if isinstance(idle, dict) and "cpu_share_of_one_core" in idle:
        checks.append(
            Check(
                f"idle daemon CPU ({idle['measured_s']:.0f} s)",
                f"< {IDLE_CPU_SHARE_MAX:.0%} of a core",
                f"{idle['cpu_share_of_one_core']:.3%} ({idle['passes_during_measurement']} passes)",
                idle["cpu_share_of_one_core"] < IDLE_CPU_SHARE_MAX,
            )
        )
        checks.append(
            Check(
                "idle daemon peak RSS",
                "< 100 MB",
                f"{idle['peak_rss_bytes'] / 1024**2:.0f} MB",
                idle["peak_rss_bytes"] < IDLE_RSS_MAX_BYTES,
            )
        )
    cli = results.get("cli")
    if isinstance(cli, dict) and "error" not in cli:
        for label, r in cli.items():
            if not isinstance(r, dict) or "wall_s" not in r:
                continue
            ok = r["exit_code"] == 0
            # The target is for a managed host (a daemon runs); the cold figure is context.
            cold = "(cold)" in label or "--live" in label
            checks.append(
                Check(
                    f"ds01ctl {label} @ {results.get('cli_host_size')} running",
                    "-" if cold else f"median <= {_ms(CLI_MEDIAN_S)}",
                    f"median {_ms(r['wall_s']['median'])}"
                    + (f", CPU {_ms(r['cpu_s']['median'])}" if "cpu_s" in r else "")
                    + ("" if ok else f" (exit {r['exit_code']})"),
                    None if cold else r["wall_s"]["median"] <= CLI_MEDIAN_S and ok,
                )
            )
    for key, value in results.items():
        if isinstance(value, dict) and "error" in value:
            first_line = " ".join(str(value["error"]).split())
            checks.append(Check(key, "-", f"ERROR {first_line[:100]}", None))
    return checks
