"""NVML adapter: GPUs, MIG devices, utilisation, memory and compute processes, read through pynvml.

Owns NVML initialisation (lazy, retried after every failure, because the driver may come back) and
the deadline on each observation. Called once per pass by the observation layer through one
long-lived :class:`NvmlObserver`; ``ds01ctl`` uses its own.

It must not raise: NVML being unavailable, or timing out, makes the NVML domain ``ok=False`` with a
reason, and a single call failing on one device degrades only that field (``None`` plus, where the
snapshot has room for it, a reason). It must not attribute processes to containers (the procfs
adapter does) nor resolve containers' GPU references (controller.observe.gpu_refs does).

Failures that leave the device list itself in doubt (count, handles, UUIDs, MIG mode, MIG device
handles) make the whole domain unavailable: a partial list would read as "these GPUs are free".

Memory is read with ``nvmlDeviceGetMemoryInfo`` v2, whose ``used`` excludes the memory the driver
reserves for itself (an idle H200 on driver 580: v2 used 0, reserved 615 MiB; v1 used 615 MiB).
Only where v2 does not exist (old drivers: the symbol is missing, or the call answers
NOT_SUPPORTED / ARGUMENT_VERSION_MISMATCH) is v1 read, and the observation then says that its
``used`` includes the reservation (``memory_used_includes_reserved``), so the planner does not take
an idle GPU for a leak. See docs/nvml-real-hardware.md.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import pynvml
from loguru import logger

from controller.snapshot import Domain, DomainHealth, GpuObs, GpuUuid, MigDeviceObs, NvmlProcess

DEFAULT_TIMEOUT_S = 10.0

# NVML's "not available" for unsigned long long fields; pynvml maps it to None, this guards the rest.
_NOT_AVAILABLE_ULL = 0xFFFFFFFFFFFFFFFF

_ERROR_NAMES: dict[int, str] = {
    getattr(pynvml, name): name for name in dir(pynvml) if name.startswith("NVML_ERROR_")
}

T = TypeVar("T")
GpuList = tuple[GpuObs, ...]


class UtilizationUnknown(StrEnum):
    """Why a GPU's utilisation is unknown, when NVML answered NOT_SUPPORTED."""

    MIG_MODE = "not reported by NVML for a GPU in MIG mode"
    NOT_SUPPORTED = "not reported by NVML for this GPU"


class _Unavailable(Exception):
    """The domain as a whole cannot be observed; the message is the reason."""


def describe_nvml_error(exc: BaseException) -> str:
    """One line naming an NVML error and its code, e.g. 'Driver Not Loaded (NVML_ERROR_DRIVER_NOT_LOADED)'."""
    if isinstance(exc, pynvml.NVMLError):
        code = int(exc.value)
        name = _ERROR_NAMES.get(code, f"NVML error code {code}")
        if code == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
            return f"libnvidia-ml.so.1 not found; is the NVIDIA driver installed? ({name})"
        return f"{exc} ({name})"
    return f"{type(exc).__name__}: {exc}"


def _required(what: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        raise _Unavailable(f"{what} failed: {describe_nvml_error(exc)}") from exc


def _optional(what: str, fn: Callable[..., T], *args: Any) -> tuple[T | None, str | None]:
    try:
        return fn(*args), None
    except pynvml.NVMLError as exc:
        reason = f"{what} failed: {describe_nvml_error(exc)}"
        logger.debug("NVML field unknown: {}", reason)
        return None, reason


def _process_list(
    what: str,
    v3: Callable[[Any], Any],
    v2: Callable[[Any], Any],
    handle: Any,
    *,
    none_when_unsupported: bool = False,
) -> tuple[list[Any] | None, str | None]:
    """A process list through ``_v3``, or ``_v2`` (same layout) on drivers before R510; None and why
    when unreadable. With ``none_when_unsupported``, a device that answers NOT_SUPPORTED has none."""
    for fn in (v3, v2):
        try:
            return list(fn(handle)), None
        except pynvml.NVMLError as exc:
            if fn is v3 and isinstance(exc, pynvml.NVMLError_FunctionNotFound):
                continue  # a driver before R510: _v2
            if none_when_unsupported and isinstance(exc, pynvml.NVMLError_NotSupported):
                return [], None
            reason = f"{what} failed: {describe_nvml_error(exc)}"
            logger.debug("NVML field unknown: {}", reason)
            return None, reason
    raise AssertionError("unreachable: _v2 either answers or raises")


_MIG_PROFILE = re.compile(r"\bMIG\s+(\d+g\.\d+gb(?:\+\w+)*)", re.IGNORECASE)


def mig_profile(name: object) -> str | None:
    """The profile in a MIG device's NVML name (``NVIDIA A100-SXM4-80GB MIG 3g.40gb`` ->
    ``3g.40gb``); None when the name does not carry one (unknown, never guessed)."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if not isinstance(name, str):
        return None
    found = _MIG_PROFILE.search(name)
    return found.group(1) if found else None


def _bytes_or_none(value: Any) -> int | None:
    if value is None or int(value) == _NOT_AVAILABLE_ULL:
        return None
    return int(value)


_NOT_AVAILABLE_USED = "NVML reports the memory in use as not available"

# nvmlDeviceGetMemoryInfo_v2 is missing (drivers before R510) or refused: fall back to v1.
_V2_ABSENT = (
    pynvml.NVMLError_FunctionNotFound,
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_ArgumentVersionMismatch,
)


@dataclass(frozen=True)
class _Memory:
    used_bytes: int | None
    total_bytes: int | None
    reserved_bytes: int | None
    used_includes_reserved: bool  # read with v1
    unknown: str | None = None  # why used_bytes is None


@dataclass
class _Attempt:
    """One observation running in its worker thread."""

    started_s: float
    done: threading.Event = field(default_factory=threading.Event)
    gpus: GpuList = ()
    error: str | None = None


class NvmlObserver:
    """Reads the GPUs through NVML, one bounded observation at a time.

    NVML calls are blocking C calls that a wedged driver can stall indefinitely, and a thread in C
    cannot be interrupted. So each observation runs in a daemon worker thread and ``observe`` waits
    at most ``timeout_s``. While a timed-out worker is still stuck, no new one is started (NVML
    calls would pile up behind it): ``observe`` answers "unavailable" at once until it returns.
    Workers never overlap, so NVML is only ever used from one thread at a time.
    """

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"NVML timeout_s must be positive, got {timeout_s}")
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._inflight: _Attempt | None = None
        # Touched only by the worker (workers never overlap) and by close() once none is running.
        self._initialised = False
        # Each GPU's last utilisation sample read (NVML's timestamp, µs): see _sampled_peak.
        self._util_seen: dict[str, int] = {}

    def __enter__(self) -> NvmlObserver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def observe(self) -> tuple[GpuList, DomainHealth]:
        """All GPUs with their MIG devices and processes, and the NVML domain's health. Never raises."""
        with self._lock:
            started_s = time.monotonic()
            stuck = self._inflight
            if stuck is not None and not stuck.done.is_set():
                age_s = started_s - stuck.started_s
                return (), self._health(
                    started_s,
                    f"timed out: an NVML call has been blocked for {age_s:.1f}s; "
                    "not starting another observation until it returns",
                )
            attempt = _Attempt(started_s=started_s)
            self._inflight = attempt
            threading.Thread(target=self._work, args=(attempt,), name="nvml-observe", daemon=True).start()
            if not attempt.done.wait(self._timeout_s):
                logger.warning("NVML observation timed out after {:g}s", self._timeout_s)
                return (), self._health(started_s, f"timed out after {self._timeout_s:g}s")
            self._inflight = None
            if attempt.error is not None:
                return (), self._health(started_s, attempt.error)
            return attempt.gpus, self._health(started_s, None)

    def close(self) -> None:
        """Shut NVML down if this observer initialised it. Skipped while a call is still blocked:
        shutting down under it is unsafe, and the daemon thread ends with the process."""
        with self._lock:
            stuck = self._inflight
            if stuck is not None and not stuck.done.is_set():
                logger.warning("NVML still blocked in a call; not shutting it down")
                return
            self._inflight = None
            self._shutdown()

    # -- worker side ------------------------------------------------------------------------------

    def _health(self, started_s: float, error: str | None) -> DomainHealth:
        return DomainHealth(
            domain=Domain.NVML, ok=error is None, error=error, duration_s=time.monotonic() - started_s
        )

    def _work(self, attempt: _Attempt) -> None:
        # Nothing may escape a worker thread: every failure becomes the attempt's error.
        try:
            attempt.gpus = self._collect()
        except _Unavailable as exc:
            attempt.error = str(exc)
            self._shutdown()
        except Exception as exc:
            attempt.error = f"unexpected error reading NVML: {describe_nvml_error(exc)}"
            logger.exception("unexpected error reading NVML")
            self._shutdown()
        finally:
            attempt.done.set()

    def _shutdown(self) -> None:
        # After any domain-level failure, start from nvmlInit again next time: the driver may have
        # been reloaded, which invalidates the old session and its handles.
        if not self._initialised:
            return
        self._initialised = False
        self._util_seen.clear()  # a new session's sample clock may start over
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            logger.debug("nvmlShutdown failed: {}", describe_nvml_error(exc))

    def _collect(self) -> GpuList:
        if not self._initialised:
            _required("nvmlInit", pynvml.nvmlInit)
            self._initialised = True
        count: int = _required("nvmlDeviceGetCount", pynvml.nvmlDeviceGetCount)
        return tuple(self._gpu(index) for index in range(count))

    def _gpu(self, index: int) -> GpuObs:
        label = f"GPU {index}"
        handle = _required(f"nvmlDeviceGetHandleByIndex({index})", pynvml.nvmlDeviceGetHandleByIndex, index)
        uuid: str = _required(f"nvmlDeviceGetUUID({label})", pynvml.nvmlDeviceGetUUID, handle)
        name, _ = _optional(f"nvmlDeviceGetName({label})", pynvml.nvmlDeviceGetName, handle)
        memory = self._memory(handle, label)
        mig_enabled = self._mig_enabled(handle, label)
        utilization, utilization_unknown = self._utilization(handle, label, mig_enabled, uuid)
        if mig_enabled:
            # In MIG mode NVML also lists every MIG device's processes on the parent; they are
            # reported once, on their MIG device, so nothing is counted twice.
            mig_devices = self._mig_devices(handle, index)
            processes: tuple[NvmlProcess, ...] = ()
            processes_unknown = None
        else:
            mig_devices = ()
            processes, processes_unknown = self._processes(handle, label)
        return GpuObs(
            index=index,
            uuid=GpuUuid(uuid),
            name=name if name else "unknown",
            memory_used_bytes=memory.used_bytes,
            memory_total_bytes=memory.total_bytes,
            memory_reserved_bytes=memory.reserved_bytes,
            memory_used_includes_reserved=memory.used_includes_reserved,
            memory_used_unknown=memory.unknown,
            utilization_percent=utilization,
            utilization_unknown=utilization_unknown,
            mig_enabled=mig_enabled,
            mig_devices=mig_devices,
            processes=processes,
            processes_unknown=processes_unknown,
        )

    def _memory(self, handle: Any, label: str) -> _Memory:
        try:
            v2 = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        except _V2_ABSENT:
            pass  # an older driver: v1 below
        except pynvml.NVMLError as exc:
            reason = f"nvmlDeviceGetMemoryInfo_v2({label}) failed: {describe_nvml_error(exc)}"
            logger.debug("NVML field unknown: {}", reason)
            return _Memory(None, None, None, False, reason)
        else:
            used = _bytes_or_none(v2.used)
            return _Memory(
                used,
                _bytes_or_none(v2.total),
                _bytes_or_none(v2.reserved),
                False,
                _NOT_AVAILABLE_USED if used is None else None,
            )
        v1, why = _optional(f"nvmlDeviceGetMemoryInfo({label})", pynvml.nvmlDeviceGetMemoryInfo, handle)
        if v1 is None:
            return _Memory(None, None, None, True, why)
        used = _bytes_or_none(v1.used)
        return _Memory(
            used, _bytes_or_none(v1.total), None, True, _NOT_AVAILABLE_USED if used is None else None
        )

    def _mig_enabled(self, handle: Any, label: str) -> bool:
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError_NotSupported:
            return False  # not a MIG-capable GPU
        except pynvml.NVMLError as exc:
            # Without the mode its MIG devices are unknown, and with them the device list.
            raise _Unavailable(f"nvmlDeviceGetMigMode({label}) failed: {describe_nvml_error(exc)}") from exc
        return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)

    def _utilization(
        self, handle: Any, label: str, mig_enabled: bool, uuid: str
    ) -> tuple[float | None, str | None]:
        # Unknown is never 0: a MIG GPU reporting nothing may be fully busy.
        try:
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
        except pynvml.NVMLError_NotSupported:
            reason = UtilizationUnknown.MIG_MODE if mig_enabled else UtilizationUnknown.NOT_SUPPORTED
            return None, reason.value
        except pynvml.NVMLError as exc:
            return None, f"nvmlDeviceGetUtilizationRates({label}) failed: {describe_nvml_error(exc)}"
        current = float(rates.gpu)
        peak = self._sampled_peak(handle, label, uuid)
        return (current if peak is None else max(current, peak)), None

    def _sampled_peak(self, handle: Any, label: str, uuid: str) -> float | None:
        """The highest utilisation in the GPU's NVML sample buffer since the last one read here.

        ``nvmlDeviceGetUtilizationRates`` covers the driver's last sample period (1/6 s to 1 s):
        read once a pass, a job that computes in bursts between data loads reads 0 % at pass after
        pass by chance, and looks idle. The buffer holds the samples of the last seconds (how many
        depends on the product): their peak is taken with the current reading, so a burst since
        the last read counts as use. None where it adds nothing: no sample since (an idle GPU's
        buffer runs dry: NOT_FOUND), no buffer (NOT_SUPPORTED), or values that are not percentages.
        """
        try:
            value_type, samples = pynvml.nvmlDeviceGetSamples(
                handle, pynvml.NVML_GPU_UTILIZATION_SAMPLES, self._util_seen.get(uuid, 0)
            )
        except pynvml.NVMLError as exc:
            if not isinstance(exc, pynvml.NVMLError_NotFound | pynvml.NVMLError_NotSupported):
                logger.debug(
                    "NVML samples unknown: nvmlDeviceGetSamples({}) failed: {}",
                    label,
                    describe_nvml_error(exc),
                )
            return None
        if not samples:
            return None
        # The timestamps are NVML's own clock (µs): only ever compared with NVML's.
        self._util_seen[uuid] = max(int(s.timeStamp) for s in samples)
        if value_type != pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
            return None
        values = [int(s.sampleValue.uiVal) for s in samples]
        if max(values) > 100:
            logger.debug(
                "NVML samples of {} are not percentages ({}): the current reading alone", label, max(values)
            )
            return None
        return float(max(values))

    def _mig_devices(self, parent: Any, gpu_index: int) -> tuple[MigDeviceObs, ...]:
        max_count: int = _required(
            f"nvmlDeviceGetMaxMigDeviceCount(GPU {gpu_index})", pynvml.nvmlDeviceGetMaxMigDeviceCount, parent
        )
        devices: list[MigDeviceObs] = []
        for mig_index in range(max_count):
            label = f"MIG {gpu_index}:{mig_index}"
            try:
                handle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, mig_index)
            except pynvml.NVMLError_NotFound:
                continue  # an empty slot: MIG devices need not be contiguous
            except pynvml.NVMLError as exc:
                raise _Unavailable(
                    f"nvmlDeviceGetMigDeviceHandleByIndex({label}) failed: {describe_nvml_error(exc)}"
                ) from exc
            uuid: str = _required(f"nvmlDeviceGetUUID({label})", pynvml.nvmlDeviceGetUUID, handle)
            gi_id, _ = _optional(
                f"nvmlDeviceGetGpuInstanceId({label})", pynvml.nvmlDeviceGetGpuInstanceId, handle
            )
            ci_id, _ = _optional(
                f"nvmlDeviceGetComputeInstanceId({label})", pynvml.nvmlDeviceGetComputeInstanceId, handle
            )
            name, _ = _optional(f"nvmlDeviceGetName({label})", pynvml.nvmlDeviceGetName, handle)
            memory = self._memory(handle, label)
            processes, processes_unknown = self._processes(handle, label)
            # DS01's GPU-equivalents: a MIG device counts as its share of the GPU's compute slices.
            attrs, attrs_unknown = _optional(
                f"nvmlDeviceGetAttributes({label})", pynvml.nvmlDeviceGetAttributes, handle
            )
            slices = int(attrs.computeInstanceSliceCount) if attrs is not None else 0
            devices.append(
                MigDeviceObs(
                    uuid=GpuUuid(uuid),
                    index=mig_index,
                    profile=mig_profile(name),
                    gpu_instance_id=None if gi_id is None else int(gi_id),
                    compute_instance_id=None if ci_id is None else int(ci_id),
                    memory_used_bytes=memory.used_bytes,
                    memory_total_bytes=memory.total_bytes,
                    memory_reserved_bytes=memory.reserved_bytes,
                    memory_used_includes_reserved=memory.used_includes_reserved,
                    memory_used_unknown=memory.unknown,
                    processes=processes,
                    processes_unknown=processes_unknown,
                    compute_slices=slices or None,
                    gpu_equivalents=round(slices / max_count, 6) if slices and max_count else None,
                    gpu_equivalents_unknown=None
                    if slices and max_count
                    else (attrs_unknown or "NVML reports no compute slices"),
                )
            )
        return tuple(devices)

    def _processes(self, handle: Any, label: str) -> tuple[tuple[NvmlProcess, ...], str | None]:
        """Every process with a context on the device: compute and graphics (an X server, an EGL or
        Vulkan renderer), one entry per pid. A graphics process holds memory like a compute one: read
        the compute list alone, a GPU an X server or a renderer uses looks like one with memory in
        use and no process (dirty), and a reset would be planned for it. Either list unreadable makes
        the whole list unknown; a device that runs no graphics (NOT_SUPPORTED: MIG devices, compute-
        only boards) has none."""
        compute, reason = _process_list(
            f"nvmlDeviceGetComputeRunningProcesses({label})",
            pynvml.nvmlDeviceGetComputeRunningProcesses_v3,
            pynvml.nvmlDeviceGetComputeRunningProcesses_v2,
            handle,
        )
        if compute is None:
            return (), reason
        graphics, reason = _process_list(
            f"nvmlDeviceGetGraphicsRunningProcesses({label})",
            pynvml.nvmlDeviceGetGraphicsRunningProcesses_v3,
            pynvml.nvmlDeviceGetGraphicsRunningProcesses_v2,
            handle,
            none_when_unsupported=True,
        )
        if graphics is None:
            return (), reason
        by_pid: dict[int, int | None] = {}
        for p in (*compute, *graphics):
            pid, used = int(p.pid), _bytes_or_none(p.usedGpuMemory)
            if pid in by_pid:
                # Both kinds of context (nvidia-smi's "C+G"): one process, not two; the larger figure.
                known = [b for b in (by_pid[pid], used) if b is not None]
                used = max(known) if known else None
            by_pid[pid] = used
        return tuple(NvmlProcess(pid=pid, used_memory_bytes=used) for pid, used in by_pid.items()), None
