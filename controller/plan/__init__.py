"""The pure planning layer: ``plan(snapshot, desired, memory, now) -> Plan``.

Modules: :mod:`.types` (Plan, Action, Deferred), :mod:`.desired` (the desired-state seam),
:mod:`.planner` (the entry point), :mod:`.idle` (samples and streaks), :mod:`.rules` (one module per
rule family), :mod:`.safety` (budget, breaker, back-off), :mod:`.context` (per-pass indexes).
Nothing here performs I/O or reads the clock; the import contracts in pyproject.toml enforce it.
"""
