"""``ds01ctl validate``: settings that override another one or make it meaningless are warned about,
each with the file and the line of every key involved.

Run in-process through ``main(argv)``, as an admin runs ``ds01ctl validate``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from controller.cli.main import main

DS01_DIR = Path(__file__).resolve().parents[1] / "data" / "ds01"

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


def line_after(path: Path, section: str, text: str) -> int:
    """The line of the first line holding ``text`` after the line ``section`` under container_types."""
    lines = path.read_text().splitlines()
    start = lines.index("container_types:")
    start = next(i for i in range(start, len(lines)) if lines[i] == section)
    return next(i for i in range(start, len(lines)) if text in lines[i]) + 1


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
    assert (
        f"[{lab}:{line_of(lab, 'keepaliveMaxAge')}; {students}:{line_of(students, 'maxRuntime')}]" in keep[0]
    )
    # within the max runtime: nothing to say about it
    students.write_text(STUDENTS.replace("maxRuntime: 12h", "maxRuntime: 72h"))
    rc, warnings = validate([lab, students], capsys)
    assert rc == 0 and not [w for w in warnings if "keepaliveMaxAge" in w], warnings


def test_a_warning_names_the_line_of_each_key_not_of_its_document(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DS01's idle_timeout_h under a specs file's idleMinDuration and warnLead: each warning points
    at the keys (DS01's own key in resource-limits.yaml, the specs' keys), never at a document's start."""
    config = env / "ds01"
    config.mkdir()
    text = (DS01_DIR / "resource-limits.yaml").read_text()
    (config / "resource-limits.yaml").write_text(
        text.replace("  idle_timeout_h: 0.5 ", "  idle_timeout_h: 0.004 ", 1)
    )
    ds01 = config / "resource-limits.yaml"
    site = env / "site.yaml"
    site.write_text(
        textwrap.dedent(
            """\
            apiVersion: ds01.io/v1alpha1
            kind: LifecyclePolicy
            metadata:
              name: site
            spec:
              trustLabels: false
              settings:
                warnLead: 1h
                idleMinDuration: 10m
            """
        )
    )
    rc, warnings = validate([config, site], capsys)
    assert rc == 0
    timeout_line = line_of(ds01, "idle_timeout_h: 0.004")
    span = [w for w in warnings if w.startswith("warning: idleMinDuration 10m (LifecyclePolicy/site)")]
    assert span and all(
        f"[{site}:{line_of(site, 'idleMinDuration')}; {ds01}:{timeout_line}]" in w
        for w in span
        if "idle timeout 14.4s (LifecyclePolicy/ds01)" in w
    ), span
    assert any("idle timeout 14.4s (LifecyclePolicy/ds01)" in w for w in span), span
    lead = [w for w in warnings if w.startswith("warning: warnLead 1h (LifecyclePolicy/site)")]
    assert lead, warnings
    assert all(f"{site}:{line_of(site, 'warnLead')}" in w for w in lead), lead
    # a container type's value from DS01's file names that type's key in DS01's file
    docker = [w for w in lead if "(container type docker (LifecyclePolicy/ds01))" in w]
    assert len(docker) == 1, lead
    assert f"; {ds01}:{line_after(ds01, '  docker:', 'idle_timeout_h')}]" in docker[0]
    for w in warnings:
        assert f"{site}:1]" not in w and f"{site}:1;" not in w and f"{ds01}:1]" not in w, w
