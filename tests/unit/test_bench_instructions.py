"""``python -m bench.instructions`` counts the instructions of one steady plan, and only that plan:
the same count on every run, and in another checkout of the tree to about a tenth of a percent (a
figure two trees can be compared by: ``--against REV`` counts another revision in a temporary worktree),
growing with the host planned. Needs valgrind and gcc (``scripts/host-setup.sh`` installs both with
``DS01_SETUP_TEST=1``)."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.instructions import ROOT, count_against, count_plan, counted_instructions


def test_the_count_is_the_largest_total_among_the_dumps() -> None:
    at_stop = "version: 1\ncmd: python\nevents: Ir\nsummary: 123456\ntotals: 123456\n"
    at_exit = "version: 1\nevents: Ir\ntotals: 0\n"
    assert counted_instructions([at_exit, at_stop]) == 123456
    with pytest.raises(ValueError, match="no 'totals:'"):
        counted_instructions(["version: 1\n"])


def test_one_plan_is_counted_the_same_in_every_tree_of_it_and_grows_with_the_host(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None or shutil.which("gcc") is None:
        pytest.fail("valgrind and gcc are needed: run DS01_SETUP_TEST=1 scripts/host-setup.sh")
    with ThreadPoolExecutor(2) as pool:
        # HEAD in a worktree (under tmp_path), and this checkout
        side_by_side = pool.submit(count_against, 40, "HEAD", parent=tmp_path)
        larger = pool.submit(count_plan, 400)
        (head, here), larger_count = side_by_side.result(), larger.result()
    assert head > 1_000_000 and here > 1_000_000  # a plan, not nothing
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "controller", "desired_state", "crd_like_specs", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not changed:  # this checkout is its HEAD: the two counts are of one planner (at another path,
        # which moves where things are allocated: about a tenth of a percent)
        assert abs(head - here) <= here * 5e-3, (head, here)
    # The synthetic host's work grows with its containers; a count that took in the set-up or the
    # interpreter's start (hundreds of millions of instructions) would not grow this way.
    assert larger_count > 3 * here, (here, larger_count)
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert str(tmp_path) not in worktrees and not any(tmp_path.iterdir()), "the worktree is removed"
