"""GPU references of a container: extracted from its inspect data, resolved against NVML (pure).

Owns two steps, both pure:

1. :func:`extract_gpu_refs` reads every route by which a container can name a GPU, in this order
   (the order also decides which route a de-duplicated reference keeps):

   * ``HostConfig.DeviceRequests`` the engine's nvidia driver serves: its ``Driver`` is ``nvidia``,
     or it names no driver and one of its ``Capabilities`` groups lies within that driver's
     capabilities (``gpu``, ``nvidia``, ``compute``, ``utility``...; :func:`_is_gpu_request`), or a
     group contains ``gpu``: each ``DeviceIDs`` entry (a UUID, an index, ``X.Y`` / ``X:Y``);
     ``Count: -1`` means every GPU; ``Count: N`` means the first N indices, as Docker's nvidia
     driver passes ``0,..,N-1``.
   * ``HostConfig.DeviceRequests`` whose ``Driver`` is ``cdi`` (``docker run --device
     nvidia.com/gpu=0``): each NVIDIA CDI name (``nvidia.com/gpu=<index|X:Y|UUID|all|gpuN|migN:M>``,
     ``nvidia.com/mig=...``, ``nvidia.com/mig-<profile>=...``) gives the device part; a name of
     another vendor is not an NVIDIA GPU; an NVIDIA name this module cannot read is kept as written
     (it resolves to nothing: "cannot tell", never "no GPU"). The same names are read in
     ``HostConfig.Devices`` and in ``NVIDIA_VISIBLE_DEVICES``.
   * ``NVIDIA_VISIBLE_DEVICES`` in ``Config.Env``, **only when** the container's runtime is an
     NVIDIA runtime and no NVIDIA device request above sets the variable itself (Docker appends
     the request's value to the process environment, and the last definition is the one read: a
     CUDA image's ``all`` beside ``--gpus device=<id>`` grants nothing). Under runc the variable
     is inert text (CUDA images carry ``NVIDIA_VISIBLE_DEVICES=all`` in their env), so it grants
     nothing. A runtime is an NVIDIA runtime when it is named ``nvidia`` or when the engine's
     configuration (``docker info`` ``Runtimes``, :func:`engine_runtimes`) runs an
     ``nvidia-container-runtime*`` binary under it, whatever its name (``nvidia-legacy``,
     ``nvidia-cdi``...). Without that configuration a runtime whose name contains ``nvidia``
     counts (unknown is not "no GPU"). DS01 sets ``default-runtime: nvidia``; Docker records the
     default runtime in ``HostConfig.Runtime`` at create time (an empty value means the engine's
     default). ``all`` means every GPU; ``none``,
     ``void``, an empty value or no variable mean no GPU.
   * ``HostConfig.Devices`` mapping ``/dev/nvidia<N>`` (``PathOnHost`` first, else
     ``PathInContainer``) -> index N; control nodes (``nvidiactl``, ``nvidia-uvm``, ``nvidia-caps``...)
     are not GPUs.
   * the DS01 labels ``ds01.gpu.uuid``, ``ds01.gpu.uuids``, ``ds01.gpu_slot`` (a UUID or a slot) and
     ``ds01.gpu.slots``; every one is read as a comma list.

2. :func:`resolve_gpu_refs` maps each reference onto the GPUs NVML reported: an index to that GPU's
   UUID; ``X.Y`` / ``X:Y`` to the MIG device with index Y on GPU X; a ``GPU-``/``MIG-`` UUID to the
   device that has it. References that cannot be resolved are kept with ``uuid=None`` and a reason.
   Identical references (same resolved UUID, or same raw text when unresolved) are kept once, from
   the first route in the order above.

**When NVML is unavailable** (``gpus=None``) a ``GPU-``/``MIG-`` reference keeps its UUID, with
``unresolved_reason`` saying it was not verified: the UUID is the device's identity, and dropping it
would make a container holding a GPU look GPU-less while NVML is down (unavailable is not empty).
Index and slot references cannot be mapped without NVML and stay ``uuid=None``.

Called by :mod:`controller.observe.host` (containers) and :mod:`controller.observe.ledger`
(ledger entries). Inputs are untrusted (labels can hold anything): at most
:data:`MAX_REFS_PER_ROUTE` references are read per route (more are one unresolved reference,
:data:`TRUNCATED`) and each token is capped in length; the functions never raise on malformed data.
No I/O, no NVML here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller import labels as L
from controller.snapshot import GpuObs, GpuRef, GpuRefSource, GpuUuid

# 8 GPUs x 7 MIG slices fit easily; more references than this from one route are not a real request.
MAX_REFS_PER_ROUTE = 64
MAX_TOKEN_CHARS = 128
# Count: N asks for the first N GPUs; no host has more than this many.
MAX_DEVICE_COUNT = 64
# What stands for the references past the cap: a reference that resolves to no device (malformed),
# so the container counts as holding an unknown GPU, never as holding only the first 64 it named
# (``0,0,...,0,3``: GPU 3 dropped unsaid, its ledger row released while the container used it).
TRUNCATED = f"(more than {MAX_REFS_PER_ROUTE} references)"

VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
NVIDIA_RUNTIME = "nvidia"
NVIDIA_DRIVER = "nvidia"
CDI_DRIVER = "cdi"
GPU_CAPABILITY = "gpu"
# The capabilities of the engine's nvidia device driver (Docker registers it where the NVIDIA
# container toolkit's hook is installed): a device request that names no driver is served by it when
# every capability of one of its groups is among these.
NVIDIA_DRIVER_CAPABILITIES = frozenset(
    {"gpu", "nvidia", "compute", "compat32", "graphics", "utility", "video", "display"}
)
# Runtimes that are plain runc whatever the engine's configuration says.
RUNC_RUNTIMES = frozenset({"runc", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux"})
NVIDIA_RUNTIME_BINARY = "nvidia-container-runtime"
CDI_NVIDIA_VENDOR = "nvidia.com"

ALL = "all"
_NO_GPU_VALUES = frozenset({"", "none", "void"})

_INDEX = re.compile(r"[0-9]{1,4}\Z")
_SLOT = re.compile(r"([0-9]{1,4})[.:]([0-9]{1,4})\Z")
_DEV_NODE = re.compile(r"/dev/nvidia([0-9]{1,4})\Z")
_UUID_CHARS = re.compile(r"[A-Za-z0-9/_-]{5,127}\Z")
# A fully qualified CDI device name: vendor/class=name.
_CDI_NAME = re.compile(r"(?P<vendor>[A-Za-z0-9.-]+)/(?P<cls>[A-Za-z0-9_.-]+)=(?P<name>.+)\Z")
_CDI_TYPE_INDEX = re.compile(r"(?:gpu)?([0-9]{1,4})\Z")
_CDI_TYPE_SLOT = re.compile(r"(?:mig)?([0-9]{1,4})[:.]([0-9]{1,4})\Z")

REASON_NVML_UNAVAILABLE = "NVML unavailable: cannot map an index or slot to a UUID"
REASON_UUID_UNVERIFIED = "NVML unavailable: UUID not verified against the host's devices"
REASON_UNKNOWN_UUID = "no device with this UUID on this host"
REASON_MALFORMED = "not a GPU reference (expected a GPU-/MIG- UUID, an index, X.Y or X:Y)"


@dataclass(frozen=True, slots=True)
class RawGpuRef:
    raw: str
    source: GpuRefSource


@dataclass(frozen=True, slots=True)
class RawGpuRefs:
    """What a container names, before resolution. ``all_gpus``: asked for every GPU."""

    refs: tuple[RawGpuRef, ...] = ()
    all_gpus: bool = False


@dataclass(frozen=True, slots=True)
class EngineRuntimes:
    """The engine's runtimes (``docker info``): every configured name, the NVIDIA ones, the default."""

    known: frozenset[str] = frozenset()
    nvidia: frozenset[str] = frozenset()
    default: str | None = None


def engine_runtimes(info: Mapping[str, Any]) -> EngineRuntimes:
    """Read ``Runtimes`` (name -> ``{"path": ...}`` or ``{"runtimeType", "options": {"BinaryName"}}``)
    and ``DefaultRuntime`` from a ``docker info`` answer."""
    runtimes = _mapping(info.get("Runtimes"))
    known: set[str] = set()
    nvidia: set[str] = set()
    for name, config in list(runtimes.items())[:MAX_REFS_PER_ROUTE]:
        if not isinstance(name, str):
            continue
        known.add(name)
        if name == NVIDIA_RUNTIME or _runs_nvidia_binary(_mapping(config)):
            nvidia.add(name)
    default = info.get("DefaultRuntime")
    return EngineRuntimes(
        known=frozenset(known),
        nvidia=frozenset(nvidia),
        default=default if isinstance(default, str) else None,
    )


def _runs_nvidia_binary(config: Mapping[str, Any]) -> bool:
    paths = [config.get("path"), _mapping(config.get("options")).get("BinaryName")]
    for path in paths:
        if isinstance(path, str) and path.rsplit("/", 1)[-1].startswith(NVIDIA_RUNTIME_BINARY):
            return True
    return False


def is_nvidia_runtime(name: str, runtimes: EngineRuntimes | None) -> bool:
    """Whether a container's runtime (as ``HostConfig.Runtime`` names it) is an NVIDIA runtime."""
    if not name and runtimes is not None and runtimes.default:
        name = runtimes.default  # no runtime recorded: the engine's default applies
    if name == NVIDIA_RUNTIME:
        return True
    if not name or name in RUNC_RUNTIMES:
        return False
    if runtimes is not None and name in runtimes.known:
        return name in runtimes.nvidia
    # The engine's configuration is not known (or no longer names this runtime): a runtime
    # called nvidia-something is taken at its word, so a GPU holder does not look GPU-less.
    return NVIDIA_RUNTIME in name.lower()


def needs_engine_runtimes(inspect: Mapping[str, Any]) -> bool:
    """True when deciding this container's GPU references needs the engine's runtime table: it
    sets NVIDIA_VISIBLE_DEVICES under a runtime that is neither ``nvidia`` nor runc."""
    host_config = _mapping(inspect.get("HostConfig"))
    runtime = host_config.get("Runtime")
    if runtime == NVIDIA_RUNTIME or runtime in RUNC_RUNTIMES:
        return False
    if _request_sets_visible_devices(host_config.get("DeviceRequests")):
        return False
    return _env_value(_mapping(inspect.get("Config")).get("Env"), VISIBLE_DEVICES_ENV) is not None


def extract_gpu_refs(
    inspect: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    runtimes: EngineRuntimes | None = None,
) -> RawGpuRefs:
    """Every GPU reference in a container's inspect data (and its labels, if given separately).

    ``runtimes``: the engine's runtime table, or None when it is not known.
    """
    host_config = _mapping(inspect.get("HostConfig"))
    config = _mapping(inspect.get("Config"))
    if labels is None:
        labels = _str_mapping(config.get("Labels"))
    refs: list[RawGpuRef] = []
    all_gpus = False

    for token in _device_request_tokens(host_config.get("DeviceRequests")):
        if token == ALL:
            all_gpus = True
        else:
            refs.append(RawGpuRef(token, GpuRefSource.DEVICE_REQUEST))

    for token in _cdi_request_tokens(host_config.get("DeviceRequests")):
        if token == ALL:
            all_gpus = True
        else:
            refs.append(RawGpuRef(token, GpuRefSource.CDI_DEVICE))

    runtime = host_config.get("Runtime")
    if not _request_sets_visible_devices(host_config.get("DeviceRequests")) and is_nvidia_runtime(
        runtime if isinstance(runtime, str) else "", runtimes
    ):
        value = _env_value(config.get("Env"), VISIBLE_DEVICES_ENV)
        if value is not None and value.strip().lower() not in _NO_GPU_VALUES:
            for token in _split(value):
                cdi = _cdi_device(token)
                if cdi == "":
                    continue  # another vendor's CDI device
                token = cdi or token
                if token.lower() == ALL:
                    all_gpus = True
                elif token.lower() not in _NO_GPU_VALUES:
                    refs.append(RawGpuRef(token, GpuRefSource.VISIBLE_DEVICES_ENV))

    for index in _device_mapping_indices(host_config.get("Devices")):
        if index == ALL:
            all_gpus = True
        else:
            refs.append(RawGpuRef(index, GpuRefSource.DEVICE_MAPPING))

    for key, source in (
        (L.DS01_GPU_UUID, GpuRefSource.LABEL_GPU_UUID),
        (L.DS01_GPU_UUIDS, GpuRefSource.LABEL_GPU_UUIDS),
        (L.DS01_GPU_SLOT, GpuRefSource.LABEL_GPU_SLOT),
        (L.DS01_GPU_SLOTS, GpuRefSource.LABEL_GPU_SLOTS),
    ):
        value = labels.get(key)
        if isinstance(value, str):
            refs.extend(RawGpuRef(token, source) for token in _split(value))
    return RawGpuRefs(refs=tuple(refs), all_gpus=all_gpus)


def resolve_gpu_refs(raw: RawGpuRefs, gpus: Sequence[GpuObs] | None) -> tuple[GpuRef, ...]:
    """Resolve and de-duplicate. ``gpus=None`` means NVML is unavailable (not "no GPUs")."""
    index = DeviceIndex(gpus) if gpus is not None else None
    out: list[GpuRef] = []
    seen: set[str] = set()
    for ref in raw.refs:
        resolved = resolve_one(ref.raw, ref.source, index)
        key = f"uuid:{resolved.uuid}" if resolved.uuid is not None else f"raw:{_normalise(ref.raw)}"
        if key in seen:
            continue
        seen.add(key)
        out.append(resolved)
    return tuple(out)


class DeviceIndex:
    """Lookups over one NVML observation: by index, by (GPU index, MIG index), by UUID."""

    def __init__(self, gpus: Sequence[GpuObs]) -> None:
        self.by_index: dict[int, GpuObs] = {}
        self.by_slot: dict[tuple[int, int], tuple[GpuObs, GpuUuid]] = {}
        # UUID (lower case) -> (device uuid, parent uuid, is_mig)
        self.by_uuid: dict[str, tuple[GpuUuid, GpuUuid, bool]] = {}
        for gpu in gpus:
            self.by_index.setdefault(gpu.index, gpu)
            self.by_uuid.setdefault(gpu.uuid.lower(), (gpu.uuid, gpu.uuid, False))
            for mig in gpu.mig_devices:
                self.by_slot.setdefault((gpu.index, mig.index), (gpu, mig.uuid))
                self.by_uuid.setdefault(mig.uuid.lower(), (mig.uuid, gpu.uuid, True))


def resolve_one(raw: str, source: GpuRefSource, index: DeviceIndex | None) -> GpuRef:
    """Resolve one reference; ``index=None`` means NVML is unavailable."""
    token = raw.strip()
    if len(token) > MAX_TOKEN_CHARS:
        return GpuRef(raw=_shorten(token), source=source, unresolved_reason=REASON_MALFORMED)
    upper = token.upper()
    if upper.startswith(("GPU-", "MIG-")) and _UUID_CHARS.match(token):
        is_mig = upper.startswith("MIG-")
        if index is None:
            uuid = GpuUuid(token)
            return GpuRef(
                raw=token,
                source=source,
                uuid=uuid,
                parent_uuid=None if is_mig else uuid,
                is_mig=is_mig,
                unresolved_reason=REASON_UUID_UNVERIFIED,
            )
        found = index.by_uuid.get(token.lower())
        if found is None:
            return GpuRef(raw=token, source=source, is_mig=is_mig, unresolved_reason=REASON_UNKNOWN_UUID)
        device, parent, found_mig = found
        return GpuRef(raw=token, source=source, uuid=device, parent_uuid=parent, is_mig=found_mig)
    if _INDEX.match(token):
        if index is None:
            return GpuRef(raw=token, source=source, unresolved_reason=REASON_NVML_UNAVAILABLE)
        gpu = index.by_index.get(int(token))
        if gpu is None:
            return GpuRef(raw=token, source=source, unresolved_reason=f"no GPU with index {int(token)}")
        return GpuRef(raw=token, source=source, uuid=gpu.uuid, parent_uuid=gpu.uuid)
    slot = _SLOT.match(token)
    if slot is not None:
        gpu_index, mig_index = int(slot.group(1)), int(slot.group(2))
        if index is None:
            return GpuRef(raw=token, source=source, is_mig=True, unresolved_reason=REASON_NVML_UNAVAILABLE)
        found_slot = index.by_slot.get((gpu_index, mig_index))
        if found_slot is None:
            return GpuRef(
                raw=token,
                source=source,
                is_mig=True,
                unresolved_reason=f"no MIG device {mig_index} on GPU {gpu_index}",
            )
        parent_gpu, mig_uuid = found_slot
        return GpuRef(raw=token, source=source, uuid=mig_uuid, parent_uuid=parent_gpu.uuid, is_mig=True)
    return GpuRef(raw=_shorten(token), source=source, unresolved_reason=REASON_MALFORMED)


def resolve_token(raw: str, gpus: Sequence[GpuObs] | None) -> GpuRef:
    """Resolve a single GPU reference written elsewhere (the ledger) the same way as a container's."""
    return resolve_one(raw, GpuRefSource.LABEL_GPU_UUID, DeviceIndex(gpus) if gpus is not None else None)


def _device_request_tokens(requests: object) -> Iterator[str]:
    if not isinstance(requests, list):
        return
    for request in requests[:MAX_REFS_PER_ROUTE]:
        if not isinstance(request, Mapping) or not _is_gpu_request(request):
            continue
        ids = request.get("DeviceIDs")
        count = request.get("Count")
        if isinstance(ids, list) and ids:
            tokens = list(_split(",".join(i for i in ids[: MAX_REFS_PER_ROUTE + 1] if isinstance(i, str))))
            yield from (ALL if t.lower() == ALL else t for t in tokens)
        elif isinstance(count, int) and not isinstance(count, bool):
            if count < 0:
                yield ALL
            else:
                # Docker's nvidia driver turns Count: N into NVIDIA_VISIBLE_DEVICES=0,...,N-1.
                yield from (str(i) for i in range(min(count, MAX_DEVICE_COUNT)))


def _request_sets_visible_devices(requests: object) -> bool:
    """Whether an NVIDIA device request (``--gpus``) sets ``NVIDIA_VISIBLE_DEVICES`` itself.

    Docker's nvidia driver appends ``NVIDIA_VISIBLE_DEVICES=<ids>`` (or ``0,..,N-1``, or ``all``)
    to the container's process environment, after the image's and the user's variables, and the
    NVIDIA runtime and hook read the last definition: a CUDA image's ``NVIDIA_VISIBLE_DEVICES=all``
    in ``Config.Env`` (or a user's ``-e``) grants nothing beside ``--gpus device=<id>``. A request
    with neither IDs nor a count sets nothing, and the variable keeps its meaning."""
    if not isinstance(requests, list):
        return False
    for request in requests[:MAX_REFS_PER_ROUTE]:
        if not isinstance(request, Mapping) or not _is_gpu_request(request):
            continue
        ids, count = request.get("DeviceIDs"), request.get("Count")
        if (isinstance(ids, list) and ids) or (
            isinstance(count, int) and not isinstance(count, bool) and count
        ):
            return True
    return False


def _cdi_request_tokens(requests: object) -> Iterator[str]:
    """The NVIDIA devices of ``Driver: cdi`` requests (``--device nvidia.com/gpu=0``)."""
    if not isinstance(requests, list):
        return
    for request in requests[:MAX_REFS_PER_ROUTE]:
        if not isinstance(request, Mapping) or request.get("Driver") != CDI_DRIVER:
            continue
        ids = request.get("DeviceIDs")
        if not isinstance(ids, list):
            continue
        for name in ids[:MAX_REFS_PER_ROUTE]:
            if isinstance(name, str):
                token = _cdi_device(name.strip())
                if token:
                    yield token


def _cdi_device(name: str) -> str | None:
    """The device part of a CDI name, in this module's notation.

    None: not a CDI name at all; "": a CDI name of another vendor (not an NVIDIA GPU); otherwise
    ``all``, an index, ``X:Y``, a UUID -- or the CDI name as written when its device part is not one
    of those (it then resolves to nothing, and a reference that resolves to nothing is "cannot
    tell", never "no GPU").
    """
    match = _CDI_NAME.match(name)
    if match is None:
        return None
    if match.group("vendor").lower() != CDI_NVIDIA_VENDOR:
        return ""
    cls, device = match.group("cls").lower(), match.group("name").strip()
    mig_class = cls == "mig" or cls.startswith("mig-")
    if cls != "gpu" and not mig_class:
        return name[:MAX_TOKEN_CHARS]
    if device.lower() == ALL:
        return ALL
    if device.upper().startswith(("GPU-", "MIG-")):
        return device
    slot = _CDI_TYPE_SLOT.match(device.lower())
    if slot is not None:
        return f"{int(slot.group(1))}:{int(slot.group(2))}"
    index = _CDI_TYPE_INDEX.match(device.lower())
    if index is not None and not mig_class:
        return str(int(index.group(1)))
    return name[:MAX_TOKEN_CHARS]


def _is_gpu_request(request: Mapping[str, Any]) -> bool:
    """Whether ``request`` gives the container NVIDIA GPUs through the engine's nvidia driver.

    It does when it names that driver, or names no driver and one of its capability groups lies
    within the driver's capabilities (:data:`NVIDIA_DRIVER_CAPABILITIES`; an empty group too, as
    the engine matches it): compose's ``capabilities: [compute, utility]`` and the API's
    ``[["nvidia"]]`` are GPU requests as much as ``--gpus``' ``[["gpu"]]``. Read as naming ``gpu``
    only, they made a container holding a GPU look GPU-less, and its ledger row was released. A
    group that contains ``gpu`` counts whatever else it names (unknown is not "no GPU").
    """
    driver = request.get("Driver")
    if driver == NVIDIA_DRIVER:
        return True
    capabilities = request.get("Capabilities")
    if not isinstance(capabilities, list):
        return False
    groups = [group for group in capabilities[:MAX_REFS_PER_ROUTE] if isinstance(group, list)]
    if any(GPU_CAPABILITY in group for group in groups):
        return True
    return not driver and any(_within_nvidia_capabilities(group) for group in groups)


def _within_nvidia_capabilities(group: Sequence[object]) -> bool:
    return all(isinstance(c, str) and c in NVIDIA_DRIVER_CAPABILITIES for c in group)


def _device_mapping_indices(devices: object) -> Iterator[str]:
    if not isinstance(devices, list):
        return
    for device in devices[:MAX_REFS_PER_ROUTE]:
        if not isinstance(device, Mapping):
            continue
        on_host = device.get("PathOnHost")
        cdi = _cdi_device(on_host.strip()) if isinstance(on_host, str) else None
        if cdi is not None:
            if cdi:
                yield cdi  # a CDI name passed as a device (engines that do not convert it)
            continue
        for key in ("PathOnHost", "PathInContainer"):
            path = device.get(key)
            match = _DEV_NODE.match(path) if isinstance(path, str) else None
            if match is not None:
                yield str(int(match.group(1)))
                break


def _env_value(env: object, name: str) -> str | None:
    if not isinstance(env, list):
        return None
    prefix = name + "="
    value: str | None = None
    for entry in env:
        # The last definition wins, as in an execve environment built by appending.
        if isinstance(entry, str) and entry.startswith(prefix):
            value = entry[len(prefix) :]
    return value


def _split(value: str) -> Iterable[str]:
    """The comma-separated tokens of ``value``: at most :data:`MAX_REFS_PER_ROUTE`, then
    :data:`TRUNCATED` in place of the rest (never dropped unsaid)."""
    parts = value.split(",", MAX_REFS_PER_ROUTE)
    out = [token for part in parts[:MAX_REFS_PER_ROUTE] if (token := part.strip())]
    if len(parts) > MAX_REFS_PER_ROUTE and parts[MAX_REFS_PER_ROUTE].strip(", \t"):
        out.append(TRUNCATED)
    return out


def _normalise(raw: str) -> str:
    token = raw.strip()
    slot = _SLOT.match(token)
    if slot is not None:
        return f"{int(slot.group(1))}.{int(slot.group(2))}"
    if _INDEX.match(token):
        return str(int(token))
    return token.lower()


def _shorten(token: str) -> str:
    # Keep evidence readable and bounded; control characters are made visible.
    text = token[:MAX_TOKEN_CHARS].encode("unicode_escape").decode("ascii")[:MAX_TOKEN_CHARS]
    return text + ("…" if len(token) > MAX_TOKEN_CHARS else "")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_mapping(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
