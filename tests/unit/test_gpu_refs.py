"""GPU references: extraction from inspect data and resolution against NVML (controller.observe.gpu_refs)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import labels as L
from controller.observe.gpu_refs import (
    MAX_REFS_PER_ROUTE,
    REASON_MALFORMED,
    REASON_NVML_UNAVAILABLE,
    REASON_UNKNOWN_UUID,
    REASON_UUID_UNVERIFIED,
    TRUNCATED,
    RawGpuRef,
    RawGpuRefs,
    extract_gpu_refs,
    resolve_gpu_refs,
    resolve_token,
)
from controller.snapshot import GpuObs, GpuRefSource, GpuUuid, MigDeviceObs

G0 = GpuUuid("GPU-00000000-0000-4000-8000-000000000000")
G1 = GpuUuid("GPU-00000001-0000-4000-8000-000000000000")
M10 = GpuUuid("MIG-00000001-0000-4000-8000-000000000000")
M12 = GpuUuid("MIG-00000001-0002-4000-8000-000000000000")

GPUS = (
    GpuObs(index=0, uuid=G0, name="A100"),
    GpuObs(
        index=1,
        uuid=G1,
        name="A100",
        mig_enabled=True,
        mig_devices=(MigDeviceObs(uuid=M10, index=0), MigDeviceObs(uuid=M12, index=2)),
    ),
)


def inspect(
    *,
    device_requests: list[dict[str, Any]] | None = None,
    runtime: str = "runc",
    env: list[str] | None = None,
    devices: list[dict[str, str]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "HostConfig": {"DeviceRequests": device_requests, "Runtime": runtime, "Devices": devices},
        "Config": {"Env": env or [], "Labels": labels or {}},
    }


def nvidia(ids: list[str] | None = None, count: int = 0) -> dict[str, Any]:
    return {"Driver": "nvidia", "Count": count, "DeviceIDs": ids, "Capabilities": [["gpu"]], "Options": {}}


def raws(refs: RawGpuRefs) -> list[tuple[str, GpuRefSource]]:
    return [(r.raw, r.source) for r in refs.refs]


# --- extraction, route by route ---------------------------------------------------------------


def test_device_request_ids_in_every_form() -> None:
    refs = extract_gpu_refs(inspect(device_requests=[nvidia([G0, "1", "1.2", "1:0"])]))
    assert raws(refs) == [(r, GpuRefSource.DEVICE_REQUEST) for r in (G0, "1", "1.2", "1:0")]
    assert not refs.all_gpus


def test_device_request_count_all_and_count_n() -> None:
    assert extract_gpu_refs(inspect(device_requests=[nvidia(count=-1)])) == RawGpuRefs(all_gpus=True)
    refs = extract_gpu_refs(inspect(device_requests=[nvidia(count=2)]))
    assert raws(refs) == [("0", GpuRefSource.DEVICE_REQUEST), ("1", GpuRefSource.DEVICE_REQUEST)]


def test_device_request_by_capability_and_other_drivers_ignored() -> None:
    by_cap = {"Driver": "", "Count": 0, "DeviceIDs": ["0"], "Capabilities": [["compute", "gpu"]]}
    other = {"Driver": "cdi", "Count": 0, "DeviceIDs": ["vendor.com/x=1"], "Capabilities": [["rdma"]]}
    refs = extract_gpu_refs(inspect(device_requests=[by_cap, other]))
    assert raws(refs) == [("0", GpuRefSource.DEVICE_REQUEST)]


def test_a_request_the_engines_nvidia_driver_serves_by_its_capabilities_is_a_gpu_request() -> None:
    """With no driver named, the engine gives the request to its nvidia driver when a capability
    group lies within that driver's capabilities (compose: ``capabilities: [compute, utility]``)."""

    def request(caps: Any, driver: str = "", ids: list[str] | None = None, count: int = 0) -> dict[str, Any]:
        return {"Driver": driver, "Count": count, "DeviceIDs": ids, "Capabilities": caps}

    for caps in ([["compute", "utility"]], [["nvidia"]], [["rdma"], ["video", "display"]], [[]]):
        refs = extract_gpu_refs(inspect(device_requests=[request(caps, ids=["0"])]))
        assert raws(refs) == [("0", GpuRefSource.DEVICE_REQUEST)], caps
    assert extract_gpu_refs(inspect(device_requests=[request([["compute"]], count=-1)])).all_gpus
    # The image's variable does not count beside such a request: the request sets it.
    refs = extract_gpu_refs(
        inspect(
            device_requests=[request([["utility", "compute"]], ids=[G0])],
            runtime="nvidia",
            env=["NVIDIA_VISIBLE_DEVICES=all"],
        )
    )
    assert raws(refs) == [(G0, GpuRefSource.DEVICE_REQUEST)] and not refs.all_gpus
    # Another vendor's capabilities, no capabilities at all, or another driver: not the nvidia driver.
    for other in (
        request([["rdma"]], ids=["0"]),
        request(None, ids=["0"]),
        request([["compute"]], "amd", ["0"]),
    ):
        assert extract_gpu_refs(inspect(device_requests=[other])) == RawGpuRefs(), other


def test_visible_devices_counts_only_under_the_nvidia_runtime() -> None:
    env = ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=0,1:2"]
    assert extract_gpu_refs(inspect(env=env, runtime="runc")) == RawGpuRefs()
    refs = extract_gpu_refs(inspect(env=env, runtime="nvidia"))
    assert raws(refs) == [("0", GpuRefSource.VISIBLE_DEVICES_ENV), ("1:2", GpuRefSource.VISIBLE_DEVICES_ENV)]


def test_visible_devices_special_values() -> None:
    for value in ("none", "void", "", "  ", "NONE"):
        assert (
            extract_gpu_refs(inspect(env=[f"NVIDIA_VISIBLE_DEVICES={value}"], runtime="nvidia"))
            == RawGpuRefs()
        )
    assert extract_gpu_refs(inspect(env=["NVIDIA_VISIBLE_DEVICES=all"], runtime="nvidia")).all_gpus
    # No variable at all: nothing requested.
    assert extract_gpu_refs(inspect(env=["CUDA_VERSION=12"], runtime="nvidia")) == RawGpuRefs()
    # The last definition wins.
    refs = extract_gpu_refs(
        inspect(env=["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=3"], runtime="nvidia")
    )
    assert raws(refs) == [("3", GpuRefSource.VISIBLE_DEVICES_ENV)] and not refs.all_gpus


def test_a_gpus_request_overrides_the_images_visible_devices() -> None:
    """DS01 runs ``default-runtime: nvidia`` and ``--gpus device=<UUID>`` on CUDA images, whose env
    carries ``NVIDIA_VISIBLE_DEVICES=all``. Docker appends the request's own value after it and the
    runtime reads the last one: the container sees its one GPU. Read as every GPU, each such
    container held the whole host, and a quota stopped it."""
    cuda_image = ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION=12.4"]
    for request in (nvidia([G0]), nvidia(count=1)):
        refs = extract_gpu_refs(inspect(device_requests=[request], env=cuda_image, runtime="nvidia"))
        assert not refs.all_gpus and {r.source for r in refs.refs} == {GpuRefSource.DEVICE_REQUEST}, refs
    # A user's -e beside --gpus is overridden the same way.
    refs = extract_gpu_refs(
        inspect(device_requests=[nvidia(["1"])], env=["NVIDIA_VISIBLE_DEVICES=0,1:2"], runtime="nvidia")
    )
    assert raws(refs) == [("1", GpuRefSource.DEVICE_REQUEST)]
    # --gpus all is every GPU whatever the env says.
    assert extract_gpu_refs(
        inspect(device_requests=[nvidia(count=-1)], env=cuda_image, runtime="nvidia")
    ).all_gpus
    # A GPU request that sets nothing (no IDs, no count) leaves the variable in force.
    assert extract_gpu_refs(inspect(device_requests=[nvidia()], env=cuda_image, runtime="nvidia")).all_gpus


def test_device_mappings_use_host_path_then_container_path() -> None:
    devices = [
        {"PathOnHost": "/dev/nvidia3", "PathInContainer": "/dev/nvidia0", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/nvidia1", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/nvidiactl", "PathInContainer": "/dev/nvidiactl", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/nvidia-uvm", "PathInContainer": "/dev/nvidia-uvm", "CgroupPermissions": "rwm"},
        {
            "PathOnHost": "/dev/nvidia-caps/nvidia-cap12",
            "PathInContainer": "/dev/x",
            "CgroupPermissions": "r",
        },
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"},
    ]
    refs = extract_gpu_refs(inspect(devices=devices))
    assert raws(refs) == [("3", GpuRefSource.DEVICE_MAPPING), ("1", GpuRefSource.DEVICE_MAPPING)]


def test_ds01_labels() -> None:
    labels = {
        L.DS01_GPU_UUID: G0,
        L.DS01_GPU_UUIDS: f"{M10}, {M12},,",
        L.DS01_GPU_SLOT: "1:0",
        L.DS01_GPU_SLOTS: "0,1.2",
    }
    refs = extract_gpu_refs(inspect(labels=labels))
    assert raws(refs) == [
        (G0, GpuRefSource.LABEL_GPU_UUID),
        (M10, GpuRefSource.LABEL_GPU_UUIDS),
        (M12, GpuRefSource.LABEL_GPU_UUIDS),
        ("1:0", GpuRefSource.LABEL_GPU_SLOT),
        ("0", GpuRefSource.LABEL_GPU_SLOTS),
        ("1.2", GpuRefSource.LABEL_GPU_SLOTS),
    ]


def test_labels_passed_separately_take_precedence_over_config_labels() -> None:
    refs = extract_gpu_refs(inspect(labels={L.DS01_GPU_UUID: G0}), labels={L.DS01_GPU_UUID: G1})
    assert raws(refs) == [(G1, GpuRefSource.LABEL_GPU_UUID)]


# --- resolution --------------------------------------------------------------------------------


def resolve(*pairs: tuple[str, GpuRefSource], gpus: tuple[GpuObs, ...] | None = GPUS) -> list[Any]:
    return list(resolve_gpu_refs(RawGpuRefs(refs=tuple(RawGpuRef(r, s) for r, s in pairs)), gpus))


def test_resolution_of_each_form() -> None:
    src = GpuRefSource.DEVICE_REQUEST
    out = resolve((G0, src), ("1", src), ("1.2", src), ("1:0", src), (M12.lower(), src), ("0.0", src))
    assert [(r.uuid, r.parent_uuid, r.is_mig, r.unresolved_reason) for r in out] == [
        (G0, G0, False, None),
        (G1, G1, False, None),
        (M12, G1, True, None),
        (M10, G1, True, None),
        # "0.0": GPU 0 has no MIG devices.
        (None, None, True, "no MIG device 0 on GPU 0"),
    ]


def test_unknown_and_malformed_refs_are_kept_with_reasons() -> None:
    src = GpuRefSource.LABEL_GPU_UUIDS
    out = resolve(("GPU-ffffffff-dead", src), ("7", src), ("banana", src), ("x" * 500, src))
    assert [r.uuid for r in out] == [None, None, None, None]
    assert [r.unresolved_reason for r in out] == [
        REASON_UNKNOWN_UUID,
        "no GPU with index 7",
        REASON_MALFORMED,
        REASON_MALFORMED,
    ]
    assert len(out[3].raw) <= 130


def test_nvml_unavailable_keeps_uuids_but_not_indices() -> None:
    src = GpuRefSource.DEVICE_REQUEST
    out = resolve((G0, src), (M10, src), ("1", src), ("1.2", src), gpus=None)
    assert [(r.uuid, r.parent_uuid, r.is_mig, r.unresolved_reason) for r in out] == [
        (G0, G0, False, REASON_UUID_UNVERIFIED),
        (M10, None, True, REASON_UUID_UNVERIFIED),
        (None, None, False, REASON_NVML_UNAVAILABLE),
        (None, None, True, REASON_NVML_UNAVAILABLE),
    ]


def test_no_gpus_is_not_nvml_unavailable() -> None:
    (ref,) = resolve(("0", GpuRefSource.DEVICE_REQUEST), gpus=())
    assert ref.unresolved_reason == "no GPU with index 0"


def test_dedupe_keeps_first_route() -> None:
    out = resolve(
        (G0, GpuRefSource.DEVICE_REQUEST),
        ("0", GpuRefSource.DEVICE_MAPPING),
        (G0, GpuRefSource.LABEL_GPU_UUID),
        ("1:2", GpuRefSource.VISIBLE_DEVICES_ENV),
        ("1.2", GpuRefSource.LABEL_GPU_SLOTS),
        ("9", GpuRefSource.LABEL_GPU_SLOTS),
        ("09", GpuRefSource.LABEL_GPU_SLOT),
    )
    assert [(r.uuid, r.source) for r in out] == [
        (G0, GpuRefSource.DEVICE_REQUEST),
        (M12, GpuRefSource.VISIBLE_DEVICES_ENV),
        (None, GpuRefSource.LABEL_GPU_SLOTS),
    ]


def test_resolve_token_for_ledger_entries() -> None:
    assert resolve_token("1.0", GPUS).uuid == M10
    assert resolve_token(G1, None).uuid == G1


# --- properties --------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
device_requests = st.lists(
    st.fixed_dictionaries({"Driver": st.just("nvidia"), "DeviceIDs": json_values, "Count": json_values}),
    max_size=3,
)
visible_env = st.lists(st.text(max_size=60).map(lambda v: "NVIDIA_VISIBLE_DEVICES=" + v), max_size=3)
hostile_inspect = st.fixed_dictionaries(
    {
        "HostConfig": st.fixed_dictionaries(
            {
                "DeviceRequests": json_values | device_requests,
                "Runtime": st.sampled_from(["nvidia", "runc"]) | json_values,
                "Devices": json_values,
            }
        ),
        "Config": st.fixed_dictionaries({"Env": visible_env | json_values}),
    }
)
hostile_labels = st.dictionaries(
    st.sampled_from([L.DS01_GPU_UUID, L.DS01_GPU_UUIDS, L.DS01_GPU_SLOT, L.DS01_GPU_SLOTS, "x"]),
    st.text(max_size=300)
    | st.lists(st.sampled_from(["0", "1.2", "1:0", G0, M10, "all", " ", "\x00"]), max_size=200).map(",".join),
)


@settings(max_examples=200)
@given(data=hostile_inspect, labels=hostile_labels, nvml_up=st.booleans())
def test_hostile_input_never_raises_and_is_bounded(
    data: dict[str, Any], labels: dict[str, str], nvml_up: bool
) -> None:
    raw = extract_gpu_refs(data, labels)
    assert len(raw.refs) <= 7 * MAX_REFS_PER_ROUTE + 64
    refs = resolve_gpu_refs(raw, GPUS if nvml_up else None)
    keys = [r.uuid if r.uuid is not None else ("raw", r.raw) for r in refs]
    assert len(keys) == len(set(keys))
    for ref in refs:
        assert ref.resolved or ref.unresolved_reason
        if nvml_up and ref.uuid is not None:
            assert ref.unresolved_reason is None
            assert ref.uuid in {G0, G1, M10, M12}


@given(index=st.integers(min_value=0, max_value=1), sep=st.sampled_from([".", ":"]))
def test_slot_separators_are_equivalent(index: int, sep: str) -> None:
    mig_index = (0, 2)[index]
    (ref,) = resolve((f"1{sep}{mig_index}", GpuRefSource.LABEL_GPU_SLOTS))
    assert ref.uuid == (M10, M12)[index]


def test_references_past_the_cap_are_one_unresolved_reference_not_dropped() -> None:
    """``NVIDIA_VISIBLE_DEVICES=0,0,...,0,1`` (the runtime reads every token): read up to the cap
    and no further, GPU 1 was dropped unsaid and the container looked as if it held GPU 0 alone."""
    value = ",".join(["0"] * MAX_REFS_PER_ROUTE + ["1"])
    env = inspect(env=[f"NVIDIA_VISIBLE_DEVICES={value}"], runtime="nvidia")
    by_ids = inspect(device_requests=[nvidia(ids=["0"] * MAX_REFS_PER_ROUTE + ["1"])])
    by_label = inspect(labels={L.DS01_GPU_UUIDS: ",".join([G0] * MAX_REFS_PER_ROUTE + [G1])})
    for data in (env, by_ids, by_label):
        refs = resolve_gpu_refs(extract_gpu_refs(data), GPUS)
        unresolved = [r for r in refs if not r.resolved]
        assert len(unresolved) == 1 and unresolved[0].raw == TRUNCATED, refs
    # At the cap exactly, or with empty tokens after it, nothing is past it.
    at_cap = inspect(
        env=[f"NVIDIA_VISIBLE_DEVICES={','.join(['0'] * MAX_REFS_PER_ROUTE)},,"], runtime="nvidia"
    )
    assert all(r.resolved for r in resolve_gpu_refs(extract_gpu_refs(at_cap), GPUS))
