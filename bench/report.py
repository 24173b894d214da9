"""The console table and the PNG plot of one run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.targets import evaluate, pass_sizes


def _load(value: Any) -> str:
    return f"{value[0]:.1f}" if isinstance(value, list | tuple) and value else "?"


def render_table(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    run = results.get("run", {})
    lines = [
        f"machine: {m.get('cores')} cores, {m.get('cpu_model')}, Docker {m.get('docker_version')} "
        f"({m.get('docker_cgroup', '?')}), Python {m.get('python')} "
        f"({m.get('python_libpython', 'build unknown')}), revision {m.get('git_revision')}",
        f"run {run.get('id')}, {run.get('wall_s', 0):.0f} s, load average at start/end "
        f"{_load(run.get('load_avg_at_start'))} / {_load(run.get('load_avg_at_end'))}"
        + (" (quick: minimal sizes, figures not comparable to the targets)" if run.get("quick") else ""),
    ]
    checks = evaluate(results)
    w1 = max([len(c.figure) for c in checks] + [6])
    w2 = max([len(c.target) for c in checks] + [6])
    lines.append(f"{'figure':<{w1}}  {'target':<{w2}}  met   measured")
    lines.append("-" * (w1 + w2 + 40))
    for c in checks:
        met = "-" if c.met is None else ("yes" if c.met else "NO")
        lines.append(f"{c.figure:<{w1}}  {c.target:<{w2}}  {met:<4}  {c.measured}")
    changed = results.get("changed")
    if isinstance(changed, dict) and "rows" in changed:
        lines.append("")
        lines.append(f"docker API calls per pass (steady: {changed['steady_calls']}):")
        for row in changed["rows"]:
            lines.append(
                f"  after {row['changed']:>3} killed: {row['calls_after_kill']:>4}   "
                f"after they restarted: {row['calls_after_start']:>4}   "
                f"next pass: {row['calls_next_steady']:>4}"
            )
    return "\n".join(lines)


def write_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Pass latency against host size, controller vs. the predecessor's method (log scales)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = [s for s in pass_sizes(results) if "steady_wall_s" in results[f"pass_latency_{s}"]]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    if sizes:
        med = [results[f"pass_latency_{s}"]["steady_wall_s"]["median"] for s in sizes]
        p95 = [results[f"pass_latency_{s}"]["steady_wall_s"]["p95"] for s in sizes]
        cold = [results[f"pass_latency_{s}"]["cold"]["wall_s"] for s in sizes]
        ax.plot(sizes, med, "o-", label="controller: observe + plan (median)")
        ax.plot(sizes, p95, "o:", alpha=0.6, label="controller p95")
        ax.plot(sizes, cold, "s--", alpha=0.6, label="controller cold pass")
    pred = results.get("predecessor")
    if isinstance(pred, dict) and "per_container_s" in pred and sizes:
        per = pred["measured_wall_s"] / pred["containers_measured"]
        ax.plot(
            sizes,
            [per * s for s in sizes],
            "^--",
            color="tab:red",
            label="predecessor: docker stats + inspect per container (linear in the count)",
        )
        ax.plot(
            [pred["host_running_containers"]],
            [pred["pass_wall_s"]],
            "^",
            color="tab:red",
            markersize=10,
        )
    for size, target in ((100, 0.3), (500, 1.5)):
        ax.plot([size], [target], "x", color="black", markersize=9)
    ax.plot([], [], "x", color="black", label="targets")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted({*sizes, 100, 500})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    if isinstance(pred, dict) and "ratio_vs_controller" in pred:
        ax.annotate(
            f"{pred['ratio_vs_controller']:.0f}x",
            (pred["host_running_containers"], pred["pass_wall_s"]),
            textcoords="offset points",
            xytext=(8, -4),
            fontsize=9,
            color="tab:red",
        )
    ax.set_xlabel("running containers on the host")
    ax.set_ylabel("seconds per pass")
    ax.set_title("Pass latency vs. host size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    rows = results.get("planner", {}).get("rows") if isinstance(results.get("planner"), dict) else None
    if rows:
        n = [r["containers"] for r in rows]
        ax2.plot(n, [r["wall_s"]["median"] for r in rows], "o-", label="planner alone (median)")
        if all("first_plan_s" in r for r in rows):
            ax2.plot(
                n, [r["first_plan_s"] for r in rows], "s:", alpha=0.6, label="first plan after policy load"
            )
        ax2.plot([10_000], [0.25], "x", color="black", markersize=9, label="target @ 10,000")
        ax3 = ax2.twinx()
        ax3.plot(n, [r["us_per_container"] for r in rows], "s--", color="tab:green", label="us per container")
        ax3.set_ylabel("microseconds per container")
        ax3.set_ylim(bottom=0)
        ax3.legend(loc="lower right", fontsize=8)
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xticks(n, [f"{x:,}" for x in n])
        ax2.minorticks_off()
        ax2.legend(loc="upper left", fontsize=8)
    ax2.set_xlabel("containers in the synthetic snapshot")
    ax2.set_ylabel("seconds per plan")
    ax2.set_title("Planner alone at scale")
    ax2.grid(True, which="both", alpha=0.3)
    m = results.get("machine", {})
    fig.suptitle(
        f"{m.get('cores')} cores, {m.get('cpu_model')}, Docker {m.get('docker_version')}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
