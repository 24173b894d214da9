"""``ds01ctl validate``: settings that override another one or make it meaningless are warned about,
each with the file and the line of every key involved.

Run in-process through ``main(argv)``, as an admin runs ``ds01ctl validate``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.cli.main import main

LAB = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  defaultGroup: students
  settings:
    idleTimeout: 45m
    keepaliveMaxAge: 48h
"""

STUDENTS = """\
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata:
  name: students
spec:
  order: 10
  members: [alice]
  settings:
    maxRuntime: 12h
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No DS01_* variable from the caller's environment leaks in."""
    for name in list(os.environ):
        if name.startswith("DS01_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("DS01_ENV_FILE", "")  # never the host's /etc/ds01/controller.env
    return tmp_path


def validate(paths: list[Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    rc = main(["validate", *map(str, paths)])
    out, _err = capsys.readouterr()
    return rc, [line for line in out.splitlines() if line.startswith("warning: ")]


def line_of(path: Path, text: str) -> int:
    """The 1-based line of the first line of ``path`` that holds ``text``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_keepalive_cap_longer_than_the_max_runtime_is_warned_about_with_both_keys(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keepaliveMaxAge 48h in one file, maxRuntime 12h in another: the keep-alive cannot keep the
    container past the max runtime, and the warning says where each of the two keys is written."""
    lab, students = env / "lab.yaml", env / "students.yaml"
    lab.write_text(LAB)
    students.write_text(STUDENTS)
    rc, warnings = validate([lab, students], capsys)
    assert rc == 0
    keep = [w for w in warnings if w.startswith("warning: keepaliveMaxAge 48h (LifecyclePolicy/lab)")]
    assert len(keep) == 1, warnings
    assert "longer than the max runtime 12h (UserGroup/students)" in keep[0]
    assert "the max runtime stops the container first" in keep[0]
    assert f"[{lab}:" in keep[0] and f"; {students}:" in keep[0]
    # within the max runtime: nothing to say about it
    students.write_text(STUDENTS.replace("maxRuntime: 12h", "maxRuntime: 72h"))
    rc, warnings = validate([lab, students], capsys)
    assert rc == 0 and not [w for w in warnings if "keepaliveMaxAge" in w], warnings
