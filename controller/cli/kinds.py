"""The kinds ``ds01ctl get`` lists and the other names it takes for them: the one place they are
named. The parser's help, the error for an unknown kind, shell completion and the dispatch in
``cmd_get`` all read them here. Loads only the standard library (the parser is built from it).
"""

from __future__ import annotations

KINDS = ("containers", "gpus", "processes", "allocations", "policies", "events", "alerts", "users")
KIND_ALIASES = {
    "container": "containers",
    "ctr": "containers",
    "gpu": "gpus",
    "process": "processes",
    "procs": "processes",
    "allocation": "allocations",
    "alloc": "allocations",
    "policy": "policies",
    "pol": "policies",
    "event": "events",
    "ev": "events",
    "alert": "alerts",
    "user": "users",
}


def canonical_kind(kind: str) -> str:
    """``kind`` as one of :data:`KINDS` (case and aliases aside); an error naming them all, and the
    one meant when a mistyped ``kind`` is close to a kind or an alias, otherwise."""
    from controller.cli.errors import CliError
    from controller.cli.render import clean
    from controller.flags import closest

    k = kind.lower()
    k = KIND_ALIASES.get(k, k)
    if k in KINDS:
        return k
    meant = closest(k, [*KINDS, *KIND_ALIASES])
    hint = f"; did you mean {KIND_ALIASES.get(meant, meant)!r}?" if meant else ""
    raise CliError(f"unknown resource kind {clean(kind, 40)!r}: expected one of {', '.join(KINDS)}{hint}")
