"""GPU references a container makes through CDI and through NVIDIA runtimes of any name.

Case 5 of the safety review: a container started with ``--device nvidia.com/gpu=0`` (recorded by
Docker as a ``Driver: cdi`` device request) looked GPU-less, and ``NVIDIA_VISIBLE_DEVICES`` only
counted under a runtime named exactly ``nvidia``; either way the container's ledger row was
released while the GPU was in use. The inspect and ``docker info`` fragments below are as the
engine records them (dockerd 20.10 with a 28.x client for the CDI request; the runtime table as
an NVIDIA Container Toolkit install writes it to daemon.json).
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import requests

from controller.memory import ControllerMemory
from controller.observe.docker_adapter import CACHE_FORMAT, DockerObserver, parse_inspect
from controller.observe.gpu_refs import (
    EngineRuntimes,
    RawGpuRefs,
    engine_runtimes,
    extract_gpu_refs,
    is_nvidia_runtime,
    needs_engine_runtimes,
    resolve_gpu_refs,
)
from controller.plan.planner import plan
from controller.snapshot import GpuRefSource
from tests.fixtures import builders as b

CDI = GpuRefSource.CDI_DEVICE
ENV = GpuRefSource.VISIBLE_DEVICES_ENV

# `docker create --device nvidia.com/gpu=0 ...` on this engine: HostConfig.DeviceRequests.
RECORDED_CDI_REQUEST = {
    "Driver": "cdi",
    "Count": 0,
    "DeviceIDs": ["nvidia.com/gpu=0"],
    "Capabilities": None,
    "Options": None,
}

# `docker info` on a host where the toolkit registered two runtimes under other names.
RECORDED_INFO: dict[str, Any] = {
    "Runtimes": {
        "io.containerd.runc.v2": {"path": "runc"},
        "runc": {"path": "runc"},
        "nvidia-legacy": {"path": "nvidia-container-runtime"},
        "nvidia-cdi": {"path": "/usr/bin/nvidia-container-runtime.cdi"},
        "gpu": {
            "runtimeType": "io.containerd.runc.v2",
            "options": {"BinaryName": "/usr/bin/nvidia-container-runtime"},
        },
        "kata": {"path": "/opt/kata/bin/kata-runtime"},
    },
    "DefaultRuntime": "gpu",
}


def inspect(
    *, requests: list[dict[str, Any]] | None = None, runtime: str = "runc", env: list[str] | None = None
) -> dict[str, Any]:
    return {"HostConfig": {"DeviceRequests": requests, "Runtime": runtime}, "Config": {"Env": env or []}}


def cdi(*names: str) -> list[dict[str, Any]]:
    return [{**RECORDED_CDI_REQUEST, "DeviceIDs": list(names)}]


def raws(refs: RawGpuRefs) -> list[tuple[str, GpuRefSource]]:
    return [(r.raw, r.source) for r in refs.refs]


class TestCdiDeviceRequests:
    def test_recorded_cdi_request_is_a_gpu_reference(self) -> None:
        refs = extract_gpu_refs(inspect(requests=[RECORDED_CDI_REQUEST]))
        assert raws(refs) == [("0", CDI)]

    @pytest.mark.parametrize(
        ("name", "raw"),
        [
            ("nvidia.com/gpu=0", "0"),
            ("nvidia.com/gpu=gpu1", "1"),  # --device-name-strategy=type-index
            ("nvidia.com/gpu=1:0", "1:0"),
            ("nvidia.com/gpu=mig1:2", "1:2"),
            (f"nvidia.com/gpu={b.GPU1}", b.GPU1),
            (f"nvidia.com/gpu={b.mig_uuid(1, 0)}", b.mig_uuid(1, 0)),
            ("nvidia.com/mig=1:0", "1:0"),
            (f"nvidia.com/mig={b.mig_uuid(1, 1)}", b.mig_uuid(1, 1)),
            ("nvidia.com/mig-1g.10gb=1:1", "1:1"),
        ],
    )
    def test_every_nvidia_name(self, name: str, raw: str) -> None:
        assert raws(extract_gpu_refs(inspect(requests=cdi(name)))) == [(raw, CDI)]

    def test_all(self) -> None:
        refs = extract_gpu_refs(inspect(requests=cdi("nvidia.com/gpu=all")))
        assert refs.all_gpus and refs.refs == ()

    def test_an_unreadable_nvidia_name_is_kept_and_stays_unresolved(self) -> None:
        refs = extract_gpu_refs(inspect(requests=cdi("nvidia.com/gpu=banana", "nvidia.com/mig=3")))
        assert [r for r, _ in raws(refs)] == ["nvidia.com/gpu=banana", "nvidia.com/mig=3"]
        resolved = resolve_gpu_refs(refs, (b.gpu(0), b.gpu(1, mig_slots=2)))
        assert all(not r.resolved and r.unresolved_reason for r in resolved)

    def test_other_vendors_are_not_nvidia_gpus(self) -> None:
        assert extract_gpu_refs(inspect(requests=cdi("amd.com/gpu=0", "vendor.com/net=1"))) == RawGpuRefs()

    def test_resolves_like_any_reference(self) -> None:
        refs = extract_gpu_refs(inspect(requests=cdi("nvidia.com/gpu=0", "nvidia.com/mig=1:1")))
        resolved = resolve_gpu_refs(refs, (b.gpu(0), b.gpu(1, mig_slots=2)))
        assert [(r.uuid, r.parent_uuid) for r in resolved] == [(b.GPU0, b.GPU0), (b.mig_uuid(1, 1), b.GPU1)]

    def test_cdi_name_passed_as_a_device_mapping(self) -> None:
        data = inspect()
        data["HostConfig"]["Devices"] = [
            {"PathOnHost": "nvidia.com/gpu=2", "PathInContainer": "", "CgroupPermissions": "rwm"}
        ]
        assert raws(extract_gpu_refs(data)) == [("2", GpuRefSource.DEVICE_MAPPING)]

    def test_cdi_names_in_visible_devices(self) -> None:
        refs = extract_gpu_refs(inspect(runtime="nvidia", env=["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=1"]))
        assert raws(refs) == [("1", ENV)]
        assert extract_gpu_refs(
            inspect(runtime="nvidia", env=["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=all"])
        ).all_gpus


class TestNvidiaRuntimeOfAnyName:
    TABLE = engine_runtimes(RECORDED_INFO)

    def test_runtime_table(self) -> None:
        assert self.TABLE.nvidia == {"nvidia-legacy", "nvidia-cdi", "gpu"}
        assert self.TABLE.default == "gpu"
        assert "kata" in self.TABLE.known

    @pytest.mark.parametrize("runtime", ["nvidia-legacy", "nvidia-cdi", "gpu", ""])
    def test_visible_devices_count_under_an_nvidia_runtime(self, runtime: str) -> None:
        data = inspect(runtime=runtime, env=["NVIDIA_VISIBLE_DEVICES=0"])
        assert needs_engine_runtimes(data)
        assert raws(extract_gpu_refs(data, runtimes=self.TABLE)) == [("0", ENV)]

    @pytest.mark.parametrize("runtime", ["runc", "kata", "io.containerd.runc.v2"])
    def test_and_not_under_another(self, runtime: str) -> None:
        data = inspect(runtime=runtime, env=["NVIDIA_VISIBLE_DEVICES=0"])
        assert extract_gpu_refs(data, runtimes=self.TABLE) == RawGpuRefs()

    def test_nvidia_by_name_always_counts(self) -> None:
        # The test engine maps `nvidia` to plain runc (scripts/host-setup.sh); DS01 names it so.
        table = engine_runtimes({"Runtimes": {"nvidia": {"path": "/usr/sbin/runc"}}})
        assert is_nvidia_runtime("nvidia", table) and is_nvidia_runtime("nvidia", None)

    def test_without_the_table_a_runtime_named_nvidia_something_counts(self) -> None:
        # Unknown is not "no GPU": the table could not be read, the name says NVIDIA.
        assert is_nvidia_runtime("nvidia-legacy", None)
        assert not is_nvidia_runtime("kata", None) and not is_nvidia_runtime("", None)
        assert is_nvidia_runtime("nvidia-experimental", EngineRuntimes(known=frozenset({"runc"})))

    def test_parse_inspect_passes_the_table_on(self) -> None:
        raw = {
            "Id": "a" * 64,
            "Name": "/legacy",
            "Created": "2026-03-02T11:00:00Z",
            "State": {"Status": "created"},
            **inspect(runtime="nvidia-legacy", env=["NVIDIA_VISIBLE_DEVICES=1"]),
        }
        entry = {"Id": "a" * 64, "Names": ["/legacy"], "State": "created", "Labels": {}}
        with_table = parse_inspect(raw, entry, self.TABLE)
        assert with_table is not None and raws(with_table.gpu_refs) == [("1", ENV)]


class TestRowOfACdiHolderIsKept:
    """End to end through the planner: the row of a CDI holder is not released."""

    def holder(self, refs: RawGpuRefs) -> Any:
        resolved = resolve_gpu_refs(refs, (b.gpu(0), b.gpu(1)))
        return b.created("cdi-train").model_copy(update={"gpu_refs": resolved, "all_gpus": refs.all_gpus})

    @pytest.mark.parametrize("name", ["nvidia.com/gpu=0", "nvidia.com/gpu=all", f"nvidia.com/gpu={b.GPU0}"])
    def test_kept(self, name: str) -> None:
        c = self.holder(extract_gpu_refs(inspect(requests=cdi(name))))
        snap = b.snapshot(
            containers=[c], gpus=(b.gpu(0), b.gpu(1)), ledger=b.ledger(b.ledger_entry("cdi-train", b.GPU0))
        )
        p = plan(snap, b.desired(), ControllerMemory(), b.T0)
        assert [a for a in p.actions if a.reason.value == "LeakedAllocation"] == []
        assert [d for d in p.deferred if d.rule.value == "LeakedAllocation"] == []


class _Api:
    """The one engine call engine_runtimes makes: ``info()``; failing while ``down``."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.info_answer: dict[str, Any] = RECORDED_INFO

    def info(self) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise requests.ConnectionError("engine away")
        return self.info_answer


class _Client:
    def __init__(self) -> None:
        self.api = _Api()


class TestRuntimeTableInTheObserver:
    def test_read_once_then_kept_for_the_max_age(self) -> None:
        client = _Client()
        observer = DockerObserver(lambda: client, max_age_s=900)
        first = observer.engine_runtimes(client)
        assert first is not None and "nvidia-legacy" in first.nvidia
        assert observer.engine_runtimes(client) == first
        assert client.api.calls == 1

    def test_a_failed_read_is_retried_later_not_every_pass(self) -> None:
        client = _Client()
        client.api.down = True
        observer = DockerObserver(lambda: client, max_age_s=0)
        assert observer.engine_runtimes(client) is None
        assert observer.engine_runtimes(client) is None
        assert client.api.calls == 1  # the retry waits RUNTIMES_RETRY_S

    def test_a_changed_table_drops_the_cached_inspects(self) -> None:
        client = _Client()
        observer = DockerObserver(lambda: client, max_age_s=0)
        observer.engine_runtimes(client)
        c = parse_inspect(
            {"Id": "c" * 64, "Created": "2026-03-02T11:00:00Z", "State": {"Status": "created"}},
            {"Id": "c" * 64, "Names": ["/x"], "State": "created"},
        )
        observer.import_cache(pickle.dumps((CACHE_FORMAT, [(c, b.T0)])))
        client.api.info_answer = {"Runtimes": {"runc": {"path": "runc"}}}
        observer.engine_runtimes(client)
        assert pickle.loads(observer.export_cache())[1] == []

    def test_a_table_that_arrives_after_a_failed_read_drops_the_cached_inspects(self) -> None:
        client = _Client()
        client.api.down = True
        observer = DockerObserver(lambda: client, max_age_s=0)
        assert observer.engine_runtimes(client) is None
        c = parse_inspect(
            {"Id": "c" * 64, "Created": "2026-03-02T11:00:00Z", "State": {"Status": "created"}},
            {"Id": "c" * 64, "Names": ["/x"], "State": "created"},
        )
        observer.import_cache(pickle.dumps((CACHE_FORMAT, [(c, b.T0)])))
        client.api.down = False
        observer._runtimes_due = b.T0  # ... and its retry is due now
        assert observer.engine_runtimes(client) is not None
        assert pickle.loads(observer.export_cache())[1] == []
