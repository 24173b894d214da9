"""Process actions name the container's owner, and planner messages show sizes in one unit style.

``ds01ctl get events --user OWNER`` filters on ``target.user``: a KillProcess or AlertAdmin about a
process in alice's container must carry ``alice`` even when the process runs as root (uid 0); the
process's own uid and user stay in the evidence. Sizes in messages are ``2.0Gi``, not
``2147483648 bytes``; the evidence keeps the raw bytes.
"""

from __future__ import annotations

from controller.cli.render import evidence_value
from controller.cli.render import fmt_bytes as cli_fmt_bytes
from controller.plan.context import fmt_bytes
from controller.snapshot import ContainerState
from tests.fixtures import builders as b
from tests.unit.test_planner_processes import World, busy


def test_kill_of_an_orphan_in_a_stopped_container_targets_the_owner() -> None:
    c = b.container("train", state=ContainerState.EXITED, owner="alice", gpus=(b.GPU0,))
    orphan = b.process(
        777, b.GPU0, container_id=c.id, container_exists=True, user="root", uid=0, start_time=1234.5
    )
    w = World()
    w.run([orphan], [c])
    p = w.run([orphan], [c])
    kills = [a for a in p.actions if a.kind == "KillProcess"]
    assert len(kills) == 1
    kill = kills[0]
    assert kill.target.user == "alice", "the container's owner, so get events --user alice finds it"
    assert kill.evidence["uid"] == 0 and kill.evidence["user"] == "root", "the process's own identity"
    assert "2.0Gi" in kill.message and "bytes" not in kill.message
    assert kill.evidence["used_memory_bytes"] == 2 * 1024**3, "evidence keeps the raw number"


def test_alert_about_a_foreign_process_targets_the_containers_owner() -> None:
    c = busy("train", b.GPU0)
    proc = b.process(50, b.GPU1, container_id=c.id, container_exists=True, user="root", uid=0)
    p = World().run([proc], [c])
    assert [(a.kind.value, a.target.user) for a in p.actions] == [("AlertAdmin", c.owner)]
    assert p.actions[0].evidence["uid"] == 0


def test_dirty_gpu_message_shows_the_size_in_binary_units() -> None:
    w = World()
    p = w.run([], gpus=(b.gpu(0, memory_used_bytes=3 * 1024**3), b.gpu(1)))
    messages = [d.message for d in p.deferred if d.rule == "GpuDirty"]
    assert messages and "3.0Gi in use" in messages[0]
    assert "bytes" not in messages[0]


def test_planner_and_cli_share_one_size_style() -> None:
    for n in (0, 512, 1536, 3 * 1024**3, 80 * 1024**3, 5 * 1024**4):
        assert fmt_bytes(n) == cli_fmt_bytes(n)
    assert evidence_value("memory_used_bytes", 3 * 1024**3) == "3.0Gi"
    assert evidence_value("pid", 3 * 1024**3) == 3 * 1024**3
