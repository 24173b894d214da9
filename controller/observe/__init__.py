"""Adapters that read the world and assemble the observed state (:class:`~controller.snapshot.Snapshot`).

Entry points: :class:`HostObserver` (long-lived, used by the daemon loop) and :func:`observe_host`
(one-shot). ``python -m controller.observe`` prints the current host's snapshot as JSON.
"""

from __future__ import annotations

from controller.observe.docker_adapter import make_client
from controller.observe.host import HostObserver, NvmlLike, ObserveConfig, observe_host
from controller.observe.ledger import Allocation, LedgerError, locked_update, read_ledger

__all__ = [
    "Allocation",
    "HostObserver",
    "LedgerError",
    "NvmlLike",
    "ObserveConfig",
    "locked_update",
    "make_client",
    "observe_host",
    "read_ledger",
]
