"""The GPU utilisation the idle rule judges a container by (``PassContext.gpu_pct_for``).

The idle rule stops a container whose GPUs all read idle; a GPU missing from this view would make
a busy container look idle. Each case below names the GPU that must be there and what it must read.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.memory import ControllerMemory
from controller.plan.context import PassContext
from controller.snapshot import ContainerObs, GpuRef
from tests.fixtures import builders as b

MIG_0 = b.mig_uuid(3, 0)
MIG_1 = b.mig_uuid(3, 1)
GPUS = [b.gpu(0, util_pct=55.0), b.gpu(1, util_pct=0.0), b.gpu(2, util_pct=None), b.gpu(3, mig_slots=2)]


def _view(c: ContainerObs) -> dict[str, float | None]:
    snap = b.snapshot(containers=[c], gpus=GPUS)
    return PassContext.build(snap, b.T0, b.global_policy(), ControllerMemory()).gpu_pct_for(c)


def _job(gpus: list[str | GpuRef], own: dict[str, float | None] | None = None, **kw: object) -> ContainerObs:
    return b.running("job", gpus=gpus, sig=b.signals(b.T0, gpu_pct=own or {}), **kw)  # type: ignore[arg-type]


def test_the_containers_own_reading_wins_over_the_device_view() -> None:
    assert _view(_job([b.GPU0], own={b.GPU0: 3.0})) == {b.GPU0: 3.0}


def test_a_gpu_without_its_own_reading_reads_the_device_view() -> None:
    # GPU2's device view is unknown: unknown stays unknown (None), never idle.
    assert _view(_job([b.GPU0, b.GPU1, b.GPU2])) == {b.GPU0: 55.0, b.GPU1: 0.0, b.GPU2: None}


def test_a_mig_device_reads_unknown_even_with_its_parent_in_the_view() -> None:
    assert _view(_job([b.ref(MIG_0, parent=b.GPUS[3])])) == {MIG_0: None}


def test_a_reference_named_twice_counts_once_with_the_containers_reading() -> None:
    assert _view(
        _job([b.GPU1, b.ref(b.GPU1, source=b.GpuRefSource.VISIBLE_DEVICES_ENV)], own={b.GPU1: 80.0})
    ) == {b.GPU1: 80.0}


def test_an_unresolved_reference_makes_every_gpu_count() -> None:
    # It may be any GPU: a busy GPU0 elsewhere keeps the container from reading idle.
    view = _view(_job([b.GPU1, b.unresolved_ref("7")], own={b.GPU1: 0.0}))
    assert view == {b.GPU1: 0.0, b.GPU0: 55.0, b.GPU2: None, b.GPUS[3]: None}


def test_every_gpu_counts_for_a_container_given_all_of_them() -> None:
    view = _view(_job([], own={b.GPU0: 1.0}, all_gpus=True))
    assert view == {b.GPU0: 1.0, b.GPU1: 0.0, b.GPU2: None, b.GPUS[3]: None}


def test_a_reference_to_a_gpu_nvml_does_not_list_reads_unknown() -> None:
    gone = "GPU-99999999-9999-9999-9999-999999999999"
    assert _view(_job([gone])) == {gone: None}


def _reference_view(ctx: PassContext, c: ContainerObs) -> dict[str, float | None]:
    """The same view written plainly, in several walks: what the one-walk version must equal."""
    out: dict[str, float | None] = {r.uuid: r.percent for r in (c.signals.gpu_util if c.signals else ())}
    every = c.all_gpus or any(r.uuid is None for r in c.gpu_refs)
    wanted = [r.uuid for r in c.gpu_refs if r.uuid is not None] + (
        [g.uuid for g in ctx.gpus] if every else []
    )
    for uuid in wanted:
        if uuid not in out:
            out[uuid] = None if uuid in ctx.mig_uuids else ctx.gpu_util.get(uuid)
    return out


_REFS = [
    b.ref(b.GPU0),
    b.ref(b.GPU1),
    b.ref(b.GPU2),
    b.ref(b.GPUS[3]),
    b.ref(MIG_0, parent=b.GPUS[3]),
    b.ref(MIG_1, parent=b.GPUS[3]),
    b.ref("GPU-99999999-9999-9999-9999-999999999999"),
    b.unresolved_ref("5"),
]


@settings(max_examples=200, deadline=None)
@given(
    refs=st.lists(st.sampled_from(_REFS), max_size=5),
    own=st.dictionaries(
        st.sampled_from([b.GPU0, b.GPU1, MIG_0]), st.one_of(st.none(), st.floats(0, 100)), max_size=3
    ),
    all_gpus=st.booleans(),
)
def test_the_one_walk_view_equals_the_plain_definition(
    refs: list[GpuRef], own: dict[str, float | None], all_gpus: bool
) -> None:
    c = _job(list(refs), own=own, all_gpus=all_gpus)
    ctx = PassContext.build(
        b.snapshot(containers=[c], gpus=GPUS), b.T0, b.global_policy(), ControllerMemory()
    )
    got = ctx.gpu_pct_for(c)
    assert got == _reference_view(ctx, c)
    assert list(got) == list(_reference_view(ctx, c))  # and in the same order
