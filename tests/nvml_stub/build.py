"""Compile the stand-in ``libnvidia-ml.so.1`` (fake_nvml.c) with gcc.

Used by the ``nvml_lib`` fixture (tests/fixtures/nvml.py) and by anything that needs the library
outside pytest (benchmarks, a manual daemon run)::

    python -m tests.nvml_stub.build            # prints the directory holding libnvidia-ml.so.1

Builds land in ``tests/nvml_stub/build/<hash of source and flags>/`` (git-ignored), so an unchanged
source is compiled once and a changed one never meets a stale binary; older builds are pruned. The
library is written under a temporary name and renamed into place, so concurrent builders never see a
half-written file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
BUILD_ROOT = Path(__file__).with_name("build")
SONAME = "libnvidia-ml.so.1"
CFLAGS = (
    "-O2",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-shared",
    "-fPIC",
    f"-Wl,-soname,{SONAME}",
)


class StubBuildError(RuntimeError):
    """gcc is missing or the stub does not compile."""


def build_stub(build_root: Path = BUILD_ROOT) -> Path:
    """Compile fake_nvml.c if needed and return the directory that holds ``libnvidia-ml.so.1``."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + "\0".join(CFLAGS).encode()).hexdigest()[:16]
    out_dir = build_root / digest
    lib = out_dir / SONAME
    if lib.is_file():
        _prune_stale(build_root, keep=out_dir)
        return out_dir
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise StubBuildError("no C compiler (gcc or cc) on PATH: install gcc to build the stand-in NVML")
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".libnvidia-ml.", suffix=".so", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run(
            [gcc, *CFLAGS, "-o", str(tmp), str(SOURCE), "-lpthread"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise StubBuildError(f"compiling {SOURCE.name} failed:\n{proc.stderr}")
        tmp.chmod(0o755)
        tmp.replace(lib)
    finally:
        tmp.unlink(missing_ok=True)
    _prune_stale(build_root, keep=out_dir)
    return out_dir


def _prune_stale(build_root: Path, keep: Path) -> None:
    """Remove builds of older sources (a process still using one keeps its mapping)."""
    for old in build_root.iterdir():
        if old != keep and old.is_dir() and len(old.name) == 16:
            shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    try:
        print(build_stub())
    except StubBuildError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
