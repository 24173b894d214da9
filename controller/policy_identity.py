"""Which policy a process loaded: what the daemon records and ``ds01ctl`` compares with its own.

The digest is over the policy's content (the documents as ``dump_documents`` writes them), not over
file names or times: two processes that loaded the same specs from different copies agree, and a
daemon that has not yet re-read an edited file disagrees with a ``ds01ctl`` that has.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desired_state.policy_set import PolicySet


def policy_digest(policy_set: PolicySet) -> str:
    """``sha256:`` and the first 16 hex digits of the policy's content."""
    from desired_state.load import dump_documents

    text = dump_documents(policy_set.documents()) + f"\n# defaultGroup {policy_set.fallback_default_group}\n"
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def policy_identity(policy_set: PolicySet, specs: Path | None, ds01_config: Path | None) -> dict[str, object]:
    """What ``policy-status.json`` says about the loaded policy (the ``policy`` object)."""
    return {
        "origin": policy_set.origin,
        "specs": None if specs is None else str(specs),
        "ds01_config": None if ds01_config is None else str(ds01_config),
        "digest": policy_digest(policy_set),
    }


def describe_identity(identity: object) -> str:
    """One phrase naming a recorded policy: ``specs /etc/ds01/specs (sha256:...)``."""
    if not isinstance(identity, dict):
        return "unknown"
    parts = []
    if identity.get("specs"):
        parts.append(f"specs {identity['specs']}")
    if identity.get("ds01_config"):
        parts.append(f"DS01 config {identity['ds01_config']}")
    where = " + ".join(parts) or "built-in default"
    return f"{where} ({identity.get('digest', 'no digest')})"
