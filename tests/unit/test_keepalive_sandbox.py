"""The keep-alive read as production runs it: under the unit's seccomp filter, openat2 is ENOSYS.

``RestrictSUIDSGID=yes`` in deploy/ds01-controller.service makes systemd install a seccomp filter
that answers ``openat2`` with ENOSYS: the mode that could create a setuid file sits inside
``struct open_how``, which seccomp cannot inspect. So in production the daemon's first keep-alive
read finds openat2 "missing" and every read after it takes the component-by-component walk. These
tests install the same kind of filter (openat2 -> ENOSYS, everything else allowed) in a child
process and check that the default read falls back, for the life of the process, to verdicts that
are exactly those of the explicit walk. tests/e2e/test_systemd_real.py shows the ENOSYS under a real
systemd with the shipped unit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from controller.observe.keepalive import read_keepalive
from controller.snapshot import KeepAliveState

REPO = Path(__file__).resolve().parents[2]

# A child that installs "openat2 -> ENOSYS" (classic BPF through prctl, as systemd does through
# libseccomp), then reads every case with the default (production) settings.
CHILD = r"""
import ctypes, errno, json, os, sys

libc = ctypes.CDLL(None, use_errno=True)

class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)
    ]

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
program = (SockFilter * 4)(
    SockFilter(0x20, 0, 0, 0),  # A = seccomp_data.nr
    SockFilter(0x15, 0, 1, 437),  # if A == __NR_openat2
    SockFilter(0x06, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
    SockFilter(0x06, 0, 0, SECCOMP_RET_ALLOW),
)
fprog = SockFprog(len(program), program)
assert libc.prctl(38, 1, 0, 0, 0) == 0, "PR_SET_NO_NEW_PRIVS"
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, os.strerror(ctypes.get_errno())

from controller.observe import keepalive

# The filter is in place: openat2 itself now fails with ENOSYS.
try:
    keepalive._OPENAT2.open(os.open("/", os.O_PATH), "etc")
    raw = "ok"
except OSError as exc:
    raw = errno.errorcode[exc.errno]
states = {}
for name in sorted(os.listdir(sys.argv[1])):
    fd = os.open(os.path.join(sys.argv[1], name), os.O_PATH | os.O_DIRECTORY)
    states[name] = keepalive.read_keepalive(fd, "/workspace/.keep-alive").state.value
    os.close(fd)
print(json.dumps({"openat2": raw, "available_after": keepalive._OPENAT2.available, "states": states}))
"""


def make_cases(base: Path, outside: Path) -> dict[str, Path]:
    """One fake ``/proc/<pid>`` directory per case, each with ``root/workspace``."""
    cases: dict[str, Callable[[Path], object]] = {
        "present": lambda ws: (ws / ".keep-alive").write_text(""),
        "absent": lambda ws: None,
        "symlink": lambda ws: (ws / ".keep-alive").symlink_to(outside),
        "hardlink": lambda ws: os.link(outside, ws / ".keep-alive"),
        "fifo": lambda ws: os.mkfifo(ws / ".keep-alive"),
        "directory": lambda ws: (ws / ".keep-alive").mkdir(),
    }
    out: dict[str, Path] = {}
    for name, make in cases.items():
        ws = base / name / "root" / "workspace"
        ws.mkdir(parents=True)
        make(ws)
        out[name] = base / name
    # The workspace itself a link to a host directory holding a keep-alive.
    hostdir = outside.parent / "hostdir"
    hostdir.mkdir()
    (hostdir / ".keep-alive").write_text("")
    (base / "dir-symlink" / "root").mkdir(parents=True)
    (base / "dir-symlink" / "root" / "workspace").symlink_to(hostdir)
    out["dir-symlink"] = base / "dir-symlink"
    return out


def test_under_the_units_seccomp_openat2_is_enosys_and_the_walk_gives_the_same_verdicts(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "host-secret"
    outside.write_text("x")
    procs = tmp_path / "proc"
    procs.mkdir()
    cases = make_cases(procs, outside)
    walk: dict[str, str] = {}
    for name, d in cases.items():
        fd = os.open(d, os.O_PATH | os.O_DIRECTORY)
        try:
            walk[name] = read_keepalive(fd, "/workspace/.keep-alive", use_openat2=False).state.value
        finally:
            os.close(fd)
    assert walk == {
        "present": KeepAliveState.PRESENT.value,
        "absent": KeepAliveState.ABSENT.value,
        "symlink": KeepAliveState.LINK.value,
        "hardlink": KeepAliveState.LINK.value,
        "fifo": KeepAliveState.NOT_REGULAR.value,
        "directory": KeepAliveState.NOT_REGULAR.value,
        "dir-symlink": KeepAliveState.LINK.value,
    }
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(procs)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    got = json.loads(child.stdout)
    assert got["openat2"] == "ENOSYS", got
    assert got["available_after"] is False, "the fallback is not remembered: every read pays the ENOSYS"
    assert got["states"] == walk
