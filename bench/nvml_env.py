"""The stand-in NVML for the benchmarks: an 8-GPU host (two GPUs in MIG mode) with GPU processes.

Reuses the test suite's model (:class:`tests.fixtures.nvml.FakeNvml`) and build function, so the
benchmark host is the same realistic host the integration tests use. The library is preloaded into
this process (for the in-process observer) and named on ``LD_LIBRARY_PATH`` for subprocesses (the
daemon, ``ds01ctl``).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

from bench.host import GpuDevice, Member
from tests.fixtures.nvml import (
    MIB,
    NVML_STATE_ENV,
    REALISTIC_MIG_GPUS,
    STUB_MARKER_SYMBOL,
    FakeNvml,
)
from tests.nvml_stub.build import SONAME, build_stub

# A PID that no process has (above the kernel's pid_max default): NVML lists it, /proc does not.
VANISHED_PID = 4_194_000


def prepare(work_dir: Path) -> FakeNvml:
    """Build the library, preload it, publish the realistic 8-GPU host and point this process at it."""
    lib_dir = build_stub()
    import pynvml

    if pynvml.nvmlLib is not None and not hasattr(pynvml.nvmlLib, STUB_MARKER_SYMBOL):
        raise RuntimeError("pynvml already loaded another libnvidia-ml.so.1; run the benchmark on its own")
    # glibc returns an already-loaded library with a matching soname to pynvml's later dlopen.
    ctypes.CDLL(str(lib_dir / SONAME), mode=ctypes.RTLD_GLOBAL)
    fake = FakeNvml(state_path=work_dir / "nvml-state", lib_dir=lib_dir)
    fake.load_realistic_host()
    fake.write()
    os.environ[NVML_STATE_ENV] = str(fake.state_path)
    return fake


def devices(fake: FakeNvml) -> list[GpuDevice]:
    """What containers can be given: the full GPUs and every MIG device of the MIG GPUs."""
    out: list[GpuDevice] = []
    for g in fake.gpus:
        if g.index in REALISTIC_MIG_GPUS:
            for m in fake.mig_devices:
                if m.gpu_index == g.index:
                    out.append(GpuDevice(uuid=m.uuid, parent_uuid=g.uuid, parent_index=g.index, is_mig=True))
        else:
            out.append(GpuDevice(uuid=g.uuid, parent_uuid=g.uuid, parent_index=g.index, is_mig=False))
    return out


def publish_processes(fake: FakeNvml, running: Sequence[Member], host_pid: int) -> int:
    """List a compute process for every running GPU container (its real main PID, so attribution
    through /proc runs), one bare host process and one that has vanished. Returns the count."""
    fake.processes = []
    for m in running:
        if m.gpu is not None and m.pid is not None:
            fake.add_process(m.gpu.uuid, m.pid, used_mem_bytes=(256 + (m.seq % 8) * 512) * MIB)
    fake.add_process(fake.gpus[0].uuid, host_pid, used_mem_bytes=128 * MIB)
    fake.add_process(fake.gpus[1].uuid, VANISHED_PID, used_mem_bytes=None)
    fake.write()
    return len(fake.processes)
