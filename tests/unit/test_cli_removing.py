"""A container the engine is still removing (state ``removing``): ``get containers`` and
``describe container`` say whose removal it is and since when, not "-" and "no rule is due"."""

from __future__ import annotations

from controller.cli.describe import describe_container
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.memory import Intent
from controller.plan.types import ActionKind
from controller.snapshot import ContainerState
from tests.fixtures import builders as b


def removing_view(*, intent: bool, kind: ActionKind = ActionKind.REMOVE_CONTAINER) -> View:
    """train's GPU hold ran out; the controller's removal is still under way in the engine (its
    intent open, as the executor keeps it until the engine shows it gone), or someone else's is."""
    desired = b.desired(b.policy())
    passes = b.Passes(desired)
    stopped = b.exited("train", gpus=[b.GPU0], finished_at=b.ago(days=3))
    p = passes.run(b.snapshot(observed_at=b.T0, containers=[stopped], gpus=[b.gpu(0)]))
    (removal,) = p.actions
    memory = p.memory
    if intent:
        action = removal.model_dump(mode="json") | {"kind": kind.value}
        started = Intent(action=action, started_at=b.T0)
        memory = memory.model_copy(update={"intents": {removal.key: started}})
    passes.memory = memory
    going = stopped.model_copy(update={"state": ContainerState.REMOVING})
    later = b.snapshot(observed_at=b.at(minutes=2), containers=[going], gpus=[b.gpu(0)])
    p2 = passes.run(later)
    return View(snapshot=later, now=p2.evaluated_at, plan=p2, memory=p2.memory, desired=desired)


def next_cell(view: View) -> str:
    header, row = run_get("containers", view, GetOptions())[0].splitlines()
    start = header.index("NEXT")
    return row[start : header.index("AGE")].strip()


def test_a_removal_of_the_controller_s_still_under_way_is_said_with_its_start() -> None:
    view = removing_view(intent=True)
    assert next_cell(view) == "being removed (2m)"
    text = describe_container(view, "train")
    timers = text.split("Timers:")[1].split("Decision:")[0]
    decision = text.split("Decision:")[1].split("Events:")[0]
    for section in (timers, decision):
        assert "the controller is removing it (GpuHoldExpired) since 2m ago" in section, text
        assert "no rule is due" not in section and "not acted on" not in section, text


def test_a_removal_that_is_not_the_controller_s_is_said_as_the_engine_s() -> None:
    view = removing_view(intent=False)
    assert next_cell(view) == "being removed"
    decision = describe_container(view, "train").split("Decision:")[1].split("Events:")[0]
    assert "the engine is removing it; no removal of the controller's is under way" in decision, decision


def test_a_stop_whose_container_the_engine_is_removing_is_said_as_the_controller_s_stop() -> None:
    view = removing_view(intent=True, kind=ActionKind.STOP_CONTAINER)
    assert next_cell(view) == "being removed (2m)"
    decision = describe_container(view, "train").split("Decision:")[1].split("Events:")[0]
    assert "the controller is stopping it, and it is being removed (GpuHoldExpired) since 2m ago" in decision


def test_plan_lists_a_removal_still_under_way_instead_of_nothing() -> None:
    from controller.cli.planview import plan_text

    view = removing_view(intent=True)
    assert view.plan is not None
    text = plan_text(view.plan, wide=False)
    under_way = text.split("Under way (1):")[1].split("\n\n")[0]
    assert "RemoveContainer train [GpuHoldExpired] started 2m ago" in under_way, text
    assert "No actions: nothing would change." not in text, text
    # Nothing open: no such section.
    assert "Under way" not in plan_text(removing_view(intent=False).plan or view.plan)
