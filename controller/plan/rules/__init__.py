"""The planner's rules, one module per family; each reads a PassContext and writes to a Collector.

* :mod:`.cleanup` -- created-never-started and stopped containers (rules 1 and 2);
* :mod:`.lifecycle` -- idle and max-runtime stops with their warnings (rules 3 and 4);
* :mod:`.allocations` -- leaked ledger rows and duplicate GPU holders (rule 5);
* :mod:`.processes` -- orphaned, foreign and host GPU processes, dirty GPUs (rule 6).

Rules only propose: the safety gates (done keys, back-off, breaker, budget) run afterwards in
:mod:`controller.plan.safety`. Pure; no I/O.
"""
