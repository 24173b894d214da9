"""Instructions of one steady plan, counted by valgrind's callgrind: a figure that does not move
with the machine's load.

Wall and CPU times of the planner on a shared machine move by 10-20 % from one minute to the next
(bench/RESULTS.md), more than most changes to the planner save; the instructions one plan executes
move by well under 1 %. They are not time (a cache miss costs more than an add), so a target is
still judged in milliseconds; but two trees are compared here, each checkout in turn::

    python -m bench.instructions --size 2000

The child builds the planner case's synthetic host (:func:`bench.synthetic.build`), plans it twice
(the first plan fills the policy memo, as in a running daemon), then plans it once more between two
markers that turn callgrind's counting on and off; only that plan is counted. The markers are a few
lines of C compiled here (``gcc`` and valgrind's ``callgrind.h``, both from Debian: ``gcc``,
``valgrind``). Under valgrind the child runs about 50 times slower: about a minute at 2,000
containers, five at 10,000. ``--against REV`` counts the planner of a git revision too (checked
out into a temporary worktree), side by side with this checkout's::

    python -m bench.instructions --size 2000 --against main
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_MARKERS_C = """
#include <valgrind/callgrind.h>
void ds01_count_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void ds01_count_stop(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; }
"""
_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


class Unavailable(RuntimeError):
    """What this machine lacks to count instructions (valgrind, its header, a C compiler)."""


def counted_instructions(dump_texts: list[str]) -> int:
    """The instructions of the counted plan: the largest total among callgrind's dumps (the dump at
    the stop marker; the one written at exit holds only what ran after it, with counting off)."""
    totals = [int(m) for text in dump_texts for m in _TOTALS.findall(text)]
    if not totals:
        raise ValueError("no 'totals:' or 'summary:' line in callgrind's output")
    return max(totals)


def _markers(work: Path) -> Path:
    gcc, valgrind = shutil.which("gcc"), shutil.which("valgrind")
    if valgrind is None or gcc is None:
        raise Unavailable("valgrind and gcc are needed (Debian: apt-get install valgrind gcc)")
    source, lib = work / "markers.c", work / "libds01markers.so"
    source.write_text(_MARKERS_C)
    built = subprocess.run(
        [gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(source)], capture_output=True, text=True
    )
    if built.returncode != 0:
        raise Unavailable(f"the counting markers did not compile (valgrind's callgrind.h?): {built.stderr}")
    return lib


# Run in the tree measured (its own bench and planner), so a tree older than this module can be
# counted too: its synthetic host, its built-in policy, a first plan to fill the policy memo, a
# second, then the counted one.
_CHILD = """
import ctypes, gc, sys
sys.path.insert(0, sys.argv[1])
from bench import synthetic
from bench.cases import make_desired, utcnow
from controller.plan.planner import plan
lib = ctypes.CDLL(sys.argv[3])
now = utcnow()
snapshot, memory = synthetic.build(int(sys.argv[2]), now)
desired = make_desired()[0]
plan(snapshot, desired, memory, now)
plan(snapshot, desired, memory, now)
gc.collect()
lib.ds01_count_start()
plan(snapshot, desired, memory, now)
lib.ds01_count_stop()
"""
ROOT = Path(__file__).resolve().parent.parent


def count_plan(n: int, *, tree: Path = ROOT, timeout_s: float = 1800.0) -> int:
    """Instructions of one steady plan of the ``n``-container synthetic host, as planned by the
    checkout at ``tree`` (this one by default)."""
    with tempfile.TemporaryDirectory(prefix="ds01-instructions-") as tmp:
        work = Path(tmp)
        lib = _markers(work)
        out = work / "callgrind.%p"
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                _CHILD,
                str(tree),
                str(n),
                str(lib),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=tree,
            # One hash seed: string hashes, and so the layout of every dict and set, are the same
            # in every run (with a random seed the count moves by a few tenths of a percent).
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)},
        )
        if run.returncode != 0:
            raise RuntimeError(f"the counted plan failed (exit {run.returncode}): {run.stderr[-2000:]}")
        return counted_instructions([p.read_text() for p in work.glob("callgrind.*")])


def count_against(n: int, rev: str, *, parent: Path | None = None) -> tuple[int, int]:
    """(instructions at ``rev``, instructions in this checkout), counted side by side; ``rev`` is
    checked out into a temporary git worktree (in a new directory under ``parent``, or the system's
    temporary directory), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ds01-instructions-tree-", dir=parent) as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(other), rev],
            check=True,
            capture_output=True,
            text=True,
        )
        try:
            with ThreadPoolExecutor(2) as pool:
                theirs = pool.submit(count_plan, n, tree=other)
                ours = pool.submit(count_plan, n)
                return theirs.result(), ours.result()
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], capture_output=True
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--size", type=int, default=2000, help="containers on the synthetic host (default 2000)"
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also count the planner of this git revision (a temporary worktree), side by side",
    )
    args = parser.parse_args(argv)
    try:
        if args.against is None:
            total = count_plan(args.size)
            print(f"planner @ {args.size} containers: {total:,} instructions per steady plan")
            return 0
        theirs, ours = count_against(args.size, args.against)
    except Unavailable as exc:
        print(f"python -m bench.instructions: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"python -m bench.instructions: git worktree add {args.against}: {exc.stderr}", file=sys.stderr)
        return 2
    print(
        f"planner @ {args.size} containers, instructions per steady plan: {args.against} {theirs:,}, "
        f"this checkout {ours:,} ({(ours - theirs) / theirs:+.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
