"""The benchmark names the interpreter build its figures were taken under.

One tree plans 10-15 % apart under two builds of one Python version (a shared libpython built
without optimisation against a distribution's static, optimised build), so a figure that does not
say which build ran it cannot be compared with another.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import render_table
from bench.run import libpython, machine_info

_MAPS_HEAD = (
    "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1048601                    /usr/bin/python3.11\n"
    "7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0 \n"
)


def test_a_process_that_maps_a_libpython_is_a_shared_build(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        _MAPS_HEAD + "7f1e2d200000-7f1e2d2b0000 r--p 00000000 08:01 2359391                    "
        "/opt/py builds/3.11/lib/libpython3.11.so.1.0\n"
        "7ffd5a5f1000-7ffd5a612000 rw-p 00000000 00:00 0                          [stack]\n"
    )
    assert libpython(maps) == "shared libpython3.11.so.1.0"


def test_a_process_that_maps_none_is_a_static_build(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    # Lines without a file (anonymous mappings, padded with spaces) are not mistaken for one.
    maps.write_text(_MAPS_HEAD + "7f1e2d400000-7f1e2d500000 r-xp 00000000 08:01 12 /usr/lib/libc.so.6\n")
    assert libpython(maps) == "static"


def test_no_maps_file_is_unknown_not_a_guess(tmp_path: Path) -> None:
    assert libpython(tmp_path / "absent") == "unknown"


@pytest.mark.skipif(shutil.which("ldd") is None, reason="ldd is needed to check the build independently")
def test_this_interpreter_is_named_as_its_dynamic_linker_sees_it() -> None:
    linked = subprocess.run(["ldd", sys.executable], capture_output=True, text=True, check=True).stdout
    found = libpython()
    if "libpython" in linked:
        assert found.startswith("shared libpython")
        assert found.split()[1] in linked
    else:
        assert found == "static"


def test_the_report_names_the_build_beside_the_version() -> None:
    info = machine_info()
    assert info["python_executable"] == sys.executable
    table = render_table({"machine": {**info, "python_libpython": "static"}, "run": {}})
    assert f"Python {info['python']} (static)" in table.splitlines()[0]
    # Results written before the build was recorded still render, saying they do not know it.
    old = render_table({"machine": {"python": "3.11.7"}, "run": {}})
    assert "Python 3.11.7 (build unknown)" in old.splitlines()[0]
