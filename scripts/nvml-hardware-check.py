"""Run the controller's NVML observer and planner against a real NVIDIA driver.

Records what docs/nvml-real-hardware.md lists for a GPU: raw memory v1 and v2, then the observer's
reading and the planner's decisions over three passes with the GPU idle, held by a process (PyTorch
allocating 2 GiB; skipped without torch), and freed after kill -9 (with the time NVML took to drop
the process). Run it from the repository root on a GPU host, as root or a user NVML answers:

    PYTHONPATH=. python3 scripts/nvml-hardware-check.py

It only reads NVML and /proc and starts (and kills) its own holder process: no container is
touched and nothing is reset or signalled. The lines are printed and, when $OUT is set, written
to $OUT/nvml-hardware-check.txt.
"""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pynvml

from controller.memory import ControllerMemory
from controller.observe.nvml import NvmlObserver
from controller.observe.procfs import ProcReader, attribute_gpu_processes, uid_to_name_cached
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from controller.snapshot import Domain, DomainHealth, Snapshot
from desired_state.load import builtin_policy

out = []


def say(*a):
    line = " ".join(str(x) for x in a)
    print(line, flush=True)
    out.append(line)


say("python", sys.version.split()[0], "pynvml", getattr(pynvml, "__version__", "?"))
say("own cgroup:", Path("/proc/self/cgroup").read_text().strip().replace("\n", " | "))
pynvml.nvmlInit()
say("driver", pynvml.nvmlSystemGetDriverVersion())
h = pynvml.nvmlDeviceGetHandleByIndex(0)
v1 = pynvml.nvmlDeviceGetMemoryInfo(h)
v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
say("raw v1 used/free/total", v1.used, v1.free, v1.total)
say("raw v2 used/reserved/free/total", v2.used, v2.reserved, v2.free, v2.total)
pynvml.nvmlShutdown()

HOLD_2GIB = (
    "import torch, time; x = torch.empty(2 * 1024**3, dtype=torch.uint8, device='cuda'); x.fill_(1); "
    "torch.cuda.synchronize(); print('held', flush=True); time.sleep(120)"
)
desired = PolicySetDesired(builtin_policy())
obs = NvmlObserver(timeout_s=20)
mem = ControllerMemory()
t0 = datetime.now(UTC)


def snap_and_plan(label, i, existing=frozenset()):
    global mem
    gpus, health = obs.observe()
    say(f"[{label}] nvml ok={health.ok} err={health.error}")
    for g in gpus:
        say(
            f"[{label}] gpu {g.index} {g.name} used={g.memory_used_bytes} reserved={g.memory_reserved_bytes} "
            f"v1={g.memory_used_includes_reserved} total={g.memory_total_bytes} util={g.utilization_percent} "
            f"util_unknown={g.utilization_unknown} mig={g.mig_enabled} "
            f"procs={[(p.pid, p.used_memory_bytes) for p in g.processes]} "
            f"procs_unknown={g.processes_unknown}"
        )
    reader = ProcReader(Path("/proc"), uid_to_name_cached())
    procs, errors = attribute_gpu_processes(gpus, existing, reader)
    if errors:
        say(f"[{label}] /proc read errors: {errors}")
    for p in procs:
        say(
            f"[{label}] proc {p.pid} scope={p.cgroup_scope.value} cgroup={p.cgroup!r} "
            f"cid={p.container_id} sys={p.is_system} cmd={p.cmdline[:60]!r}"
        )
    now = t0 + timedelta(seconds=30 * i)
    health_all = tuple(DomainHealth(domain=d, ok=True) for d in Domain)
    snap = Snapshot(observed_at=now, health=health_all, containers=(), gpus=gpus, processes=procs)
    p = plan(snap, desired, mem, now)
    mem = p.memory
    say(f"[{label}] actions={[(a.kind.value, a.reason.value, a.target.label()) for a in p.actions]}")
    say(f"[{label}] deferred={[(d.rule.value, d.why.value, d.target.label()) for d in p.deferred]}")
    say(f"[{label}] dirty={list(mem.dirty_gpus)}")


for i in range(3):
    snap_and_plan("idle", i)

holder = None
try:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_2GIB,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = holder.stdout.readline().strip() if holder.stdout else ""
    say("holder:", line or "(did not start: no torch or no GPU)", "pid", holder.pid)
    if line != "held":
        raise RuntimeError("no holder")
    for i in range(3, 6):
        snap_and_plan("held", i)
    holder.kill()
    holder.wait()
    t = time.monotonic()
    while True:
        gpus, _ = obs.observe()
        if not gpus[0].processes or time.monotonic() - t > 5:
            break
        time.sleep(0.05)
    say(f"freed after {time.monotonic() - t:.2f}s")
    for i in range(6, 9):
        snap_and_plan("freed", i)
except Exception as exc:
    say("holder phase failed:", type(exc).__name__, exc)
    if holder:
        holder.kill()

obs.close()
if os.environ.get("OUT"):
    Path(os.environ["OUT"], "nvml-hardware-check.txt").write_text("\n".join(out) + "\n")
