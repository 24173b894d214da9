"""A container's ``/workspace`` mount, from its inspect's ``Mounts``.

DS01 mounts each user's workspace directory at ``/workspace``; a file there lives on the host and
outlives the container. A container without such a mount (a bind or a volume) keeps its
``/workspace`` in its own writable layer, which goes with it when it is removed. The owner's
notices say which (:mod:`controller.plan.rules.common`, :mod:`controller.act.notify`). Read by the
observer (:mod:`controller.observe.docker_adapter`) and by the executor's inspect
(:mod:`controller.act.docker_ops`).
"""

from __future__ import annotations

WORKSPACE_MOUNT = "/workspace"


def workspace_source(mounts: object) -> str | None:
    """The host path of the bind or volume at ``/workspace`` (None: none, or not an absolute path)."""
    if not isinstance(mounts, list):
        return None
    for m in mounts:
        if (
            isinstance(m, dict)
            and m.get("Destination") == WORKSPACE_MOUNT
            and m.get("Type") in ("bind", "volume")
        ):
            source = m.get("Source")
            return source if isinstance(source, str) and source.startswith("/") else None
    return None


def workspace_mounted(mounts: object) -> bool | None:
    """Whether the inspect's ``Mounts`` hold a host directory or volume at ``/workspace`` (None: the
    inspect has no list of mounts, so it is not known). A volume whose driver shows no path (a
    plugin's, while no container has it mounted) is one all the same: its files outlive the container."""
    if not isinstance(mounts, list):
        return None
    return any(
        isinstance(m, dict)
        and m.get("Destination") == WORKSPACE_MOUNT
        and m.get("Type") in ("bind", "volume")
        for m in mounts
    )
