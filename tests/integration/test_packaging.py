"""The package builds a wheel that carries both commands and every data file they need."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_has_both_commands_and_the_spec_data(tmp_path: Path) -> None:
    installed_before = _console_scripts()
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("ds01_controller-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "ds01-controller = controller.main:main" in text
    assert "ds01ctl = controller.cli.main:main" in text
    for needed in (
        "crd_like_specs/schemas/LifecyclePolicy.json",
        "crd_like_specs/builtin/default.yaml",
        "crd_like_specs/examples/lifecycle-policy.yaml",
        "desired_state/resolve.py",
        "controller/observe/host.py",
    ):
        assert needed in names, f"{needed} missing from {wheel.name}"
    assert not [n for n in names if n.startswith("tests/")], "tests must not ship"

    # Installed on its own (dependencies from this environment), the commands start. --target,
    # not --prefix: with --prefix pip first uninstalls the project from the running environment.
    target = tmp_path / "target"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    purelib = str(target)
    env = {"PYTHONPATH": purelib, "PATH": "/usr/bin:/bin"}
    for command in ("ds01ctl", "ds01-controller"):
        done = subprocess.run(
            [str(target / "bin" / command), "--help"], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import crd_like_specs, sys; print(crd_like_specs.__file__)"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONNOUSERSITE": "1"},
        cwd=tmp_path,
        timeout=60,
    )
    assert check.stdout.startswith(purelib), check.stdout + check.stderr
    # The environment running the tests still has its own installation.
    assert _console_scripts() == installed_before


def _console_scripts() -> list[str]:
    bin_dir = Path(sys.executable).parent
    return sorted(p.name for p in bin_dir.iterdir() if p.name.startswith("ds01"))
