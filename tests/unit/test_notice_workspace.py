"""The owner's warnings before a stop tell the truth about a container with no /workspace mount.

A file under a host directory or volume mounted at /workspace outlives the container; in a container
without such a mount, /workspace is part of the container's own layer and goes when the container is
removed. A warning saying "your files under /workspace are kept" then tells its owner that work is
safe which a removal (the idle stop's, or the hold's after any stop) destroys.
"""

from __future__ import annotations

from controller.act.notify import notice_text
from controller.observe.docker_adapter import parse_inspect
from controller.plan.types import ActionKind, Plan, Reason, WarnParams
from controller.snapshot import ContainerObs
from tests.fixtures import builders as b
from tests.unit.test_planner_idle import IdleHost
from tests.unit.test_planner_quotas import boxes, of, pol, quotas, run
from tests.unit.test_planner_runtime import LIMIT, busy

NO_MOUNT = "with all its files (it has no /workspace mount: they go when it is removed)"


class UnmountedIdleHost(IdleHost):
    def container(self, minute: float, **kw: object) -> ContainerObs:
        return super().container(minute, **kw).model_copy(update={"workspace_mounted": False})  # type: ignore[arg-type]


def first_warning(host: IdleHost) -> str:
    warning = next(a for m in range(0, 31, 5) for a in host.at(m).actions if a.reason == Reason.IDLE_WARNING)
    return warning.params_as(WarnParams).notice or ""


def test_idle_warning_of_a_container_without_a_workspace_mount_keeps_no_file_past_its_removal() -> None:
    text = first_warning(UnmountedIdleHost(b.policy(remove_after_idle_stop=False)))
    assert "your files under /workspace" not in text, text
    # (the GPU hold: 15 min)
    assert (
        f"What is kept: the stopped container for 15m after the stop (then it is removed), {NO_MOUNT}" in text
    )

    removed = first_warning(UnmountedIdleHost(b.policy(remove_after_idle_stop=True)))
    assert "your files under /workspace" not in removed and "outside /workspace" not in removed, removed
    assert "What is kept: nothing: it has no /workspace mount, so its files go with it." in removed
    assert "removed after the stop, with its processes and all its files" in removed


def test_idle_warning_of_a_mounted_container_is_unchanged() -> None:
    text = first_warning(IdleHost(b.policy(remove_after_idle_stop=True)))
    assert "What is kept: your files under /workspace." in text, text
    assert "every file outside /workspace" in text


def test_runtime_warning_of_a_container_without_a_workspace_mount() -> None:
    runner = b.Passes(b.desired(LIMIT))
    notices: list[str] = []
    for minute in range(0, 11 * 60, 15):
        job = busy(started_at=b.T0, minute=minute).model_copy(update={"workspace_mounted": False})
        p = runner.run(b.snapshot(observed_at=b.at(minutes=minute), containers=[job]))
        notices += [
            a.params_as(WarnParams).notice or "" for a in p.actions if a.reason == Reason.MAX_RUNTIME_WARNING
        ]
    assert notices
    for text in notices:
        assert "your files under /workspace" not in text, text
        assert f"the stopped container for 15m after the stop (then it is removed), {NO_MOUNT}" in text


def quota_text(p: Plan) -> str:
    (warn,) = of(p, ActionKind.WARN_OWNER, Reason.CONTAINER_QUOTA_EXCEEDED)
    return notice_text(warn.params_as(WarnParams).model_dump(), warn.message)


def test_quota_warnings_of_a_container_without_a_workspace_mount() -> None:
    unmounted = [c.model_copy(update={"workspace_mounted": False}) for c in boxes(4)]
    for enforce in ("report", "stop"):
        text = quota_text(run(unmounted, pol(quotas(containers=3)), quota_enforce=enforce))
        assert "your files under /workspace" not in text, (enforce, text)
        assert NO_MOUNT in text, (enforce, text)


def test_the_observer_reads_the_workspace_mount_from_the_inspect() -> None:
    entry = {"Id": "a" * 64, "Names": ["/web"], "State": "running", "Labels": {}}
    base = {"Id": "a" * 64, "State": {"Status": "running", "Pid": 10}, "HostConfig": {}}

    def mounted(mounts: object) -> bool | None:
        c = parse_inspect({**base, "Mounts": mounts}, entry)
        assert c is not None
        return c.workspace_mounted

    bind = {"Type": "bind", "Source": "/home/alice/workspace", "Destination": "/workspace"}
    volume = {"Type": "volume", "Source": "/var/lib/docker/volumes/w/_data", "Destination": "/workspace"}
    assert mounted([bind]) is True and mounted([volume]) is True
    assert mounted([]) is False
    assert mounted([{**bind, "Destination": "/data"}]) is False
    assert mounted([{"Type": "tmpfs", "Source": "", "Destination": "/workspace"}]) is False  # gone with it
    assert mounted(None) is None  # an inspect with no list of mounts: not known
    # A volume of a driver that shows no path while it is not mounted (a volume plugin's, in a
    # stopped container) is still a volume: its files outlive the container.
    assert mounted([{**volume, "Source": "", "Driver": "nfs-plugin"}]) is True
    no_key = parse_inspect(base, entry)
    assert no_key is not None and no_key.workspace_mounted is None
