"""``python -m bench.instructions`` counts the instructions of one steady plan, and only that plan:
the same count on every run (a figure two trees can be compared by to a fraction of a percent),
growing with the host planned. Needs valgrind and gcc (``scripts/host-setup.sh`` installs both with
``DS01_SETUP_TEST=1``)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.instructions import count_plan, counted_instructions


def test_the_count_is_the_largest_total_among_the_dumps() -> None:
    at_stop = "version: 1\ncmd: python\nevents: Ir\nsummary: 123456\ntotals: 123456\n"
    at_exit = "version: 1\nevents: Ir\ntotals: 0\n"
    assert counted_instructions([at_exit, at_stop]) == 123456
    with pytest.raises(ValueError, match="no 'totals:'"):
        counted_instructions(["version: 1\n"])


def test_one_plan_is_counted_the_same_every_time_and_grows_with_the_host() -> None:
    if shutil.which("valgrind") is None or shutil.which("gcc") is None:
        pytest.fail("valgrind and gcc are needed: run DS01_SETUP_TEST=1 scripts/host-setup.sh")
    with ThreadPoolExecutor(3) as pool:
        small, again, larger = pool.map(count_plan, (40, 40, 400))
    assert small > 1_000_000  # a plan, not nothing
    assert abs(small - again) <= small * 1e-4, (small, again)
    # The synthetic host's work grows with its containers; a count that took in the set-up or the
    # interpreter's start (hundreds of millions of instructions) would not grow this way.
    assert larger > 3 * small, (small, larger)
