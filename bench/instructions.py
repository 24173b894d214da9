"""Instructions of one steady plan, counted by valgrind's callgrind: a figure that does not move
with the machine's load.

Wall and CPU times of the planner on a shared machine move by 10-20 % from one minute to the next
(bench/RESULTS.md), more than most changes to the planner save; the instructions one plan executes
do not move from run to run (a few in ten million): the child plans at a fixed instant, with a
fixed hash seed, and every tree is counted through one path (:func:`counting_place`), so two
checkouts of one tree count about 0.1 % apart. They are not time (a cache miss costs more than an
add), so a target is still judged in milliseconds; but two trees are compared here, each checkout
in turn::

    python -m bench.instructions --size 2000

The child builds the planner case's synthetic host (:func:`bench.synthetic.build`), plans it twice
(the first plan fills the policy memo, as in a running daemon), then plans it once more between two
markers that turn callgrind's counting on and off; only that plan is counted. The markers are a few
lines of C compiled here (``gcc`` and valgrind's ``callgrind.h``, both from Debian: ``gcc``,
``valgrind``). Under valgrind the child runs about 50 times slower: about a minute at 2,000
containers, five at 10,000. ``--against REV`` counts the planner of a git revision too (checked
out into a temporary worktree), then this checkout's::

    python -m bench.instructions --size 2000 --against main
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
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
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
from bench import synthetic
from bench.cases import make_desired
from controller.plan.planner import plan
lib = ctypes.CDLL(sys.argv[3])
now = datetime(2026, 6, 3, 14, 27, 31, 250000, tzinfo=timezone.utc)
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


def counting_place() -> Path:
    """This user's one directory for counting, the same path for every tree counted: the interpreter
    keeps the tree's path in its strings, and where they are allocated moves the count (CPython's
    attribute cache is indexed by addresses). Each tree at its own path, two checkouts of one tree
    counted 0.1-0.5 % apart; through this one, about 0.1 % at most (what else a tree holds, its
    compiled files among them, still moves things). Private (created 0700, owned by this user, no
    link), since a tree is run from it."""
    place = Path(tempfile.gettempdir()) / f"ds01-instructions-{os.getuid()}"
    try:
        place.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = place.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise Unavailable(f"{place} is not a private directory of this user: remove it and run again")
    return place


def count_plan(n: int, *, tree: Path = ROOT, timeout_s: float = 1800.0) -> int:
    """Instructions of one steady plan of the ``n``-container synthetic host, as planned by the
    checkout at ``tree`` (this one by default). Counts run one at a time (a lock), each through
    the same link to its tree."""
    place = counting_place()
    with (place / "lock").open("w") as lock, tempfile.TemporaryDirectory(prefix="ds01-instructions-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lib = _markers(place)
        link = place / "tree"
        link.unlink(missing_ok=True)
        link.symlink_to(tree.resolve(), target_is_directory=True)
        out = Path(tmp) / "callgrind.%p"
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                _CHILD,
                str(link),
                str(n),
                str(lib),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            # Not the tree: the interpreter would find it through the working directory, at its
            # own path
            cwd=place,
            # One hash seed: string hashes, and so the layout of every dict and set, are the same
            # in every run (with a random seed the count moves by a few tenths of a percent).
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(link)},
        )
        link.unlink()
        if run.returncode != 0:
            raise RuntimeError(f"the counted plan failed (exit {run.returncode}): {run.stderr[-2000:]}")
        return counted_instructions([p.read_text() for p in Path(tmp).glob("callgrind.*")])


def count_against(n: int, rev: str, *, parent: Path | None = None) -> tuple[int, int]:
    """(instructions at ``rev``, instructions in this checkout), counted one after the other;
    ``rev`` is checked out into a temporary git worktree (in a new directory under ``parent``, or the
    system's temporary directory), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ds01-instructions-tree-", dir=parent) as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(other), rev],
            check=True,
            capture_output=True,
            text=True,
        )
        try:
            return count_plan(n, tree=other), count_plan(n)
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
        help="first count the planner of this git revision (a temporary worktree), then this checkout's",
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
