"""No shell ever sees a user-chosen value: a static check of every module the controller ships.

Over every ``.py`` file of ``controller``, ``desired_state`` and ``crd_like_specs`` (parsed, not
imported):

- no ``shell=True`` in any call;
- no ``os.system``, ``os.popen``, ``os.exec*``, ``os.spawn*``, ``subprocess.getoutput`` /
  ``getstatusoutput``, ``asyncio.create_subprocess_shell``, ``pty.spawn``, ``eval`` or ``exec``;
- every ``subprocess.run`` / ``call`` / ``check_call`` / ``check_output`` passes ``timeout=``; a
  ``subprocess.Popen`` is only created in a function that also waits for it with a timeout
  (``.communicate(timeout=...)`` or ``.wait(timeout=...)``).

Aliases are followed (``from subprocess import run as r``, ``import subprocess as sp``). The checker
is itself tested on snippets that break each rule, so a silent checker cannot pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("controller", "desired_state", "crd_like_specs")

FORBIDDEN_CALLS = {
    "os.system",
    "os.popen",
    "os.execl",
    "os.execle",
    "os.execlp",
    "os.execlpe",
    "os.execv",
    "os.execve",
    "os.execvp",
    "os.execvpe",
    "os.spawnl",
    "os.spawnle",
    "os.spawnlp",
    "os.spawnlpe",
    "os.spawnv",
    "os.spawnve",
    "os.spawnvp",
    "os.spawnvpe",
    "os.posix_spawn",
    "os.posix_spawnp",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "asyncio.create_subprocess_shell",
    "pty.spawn",
    "eval",
    "exec",
}
NEEDS_TIMEOUT = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output"}
POPEN = "subprocess.Popen"


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    external_calls: list[str] = field(default_factory=list)  # every place a program is started


class _Checker(ast.NodeVisitor):
    def __init__(self, where: str, findings: Findings) -> None:
        self.where = where
        self.f = findings
        self.aliases: dict[str, str] = {}  # local name -> dotted origin
        self.function_stack: list[ast.AST] = []

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function_stack.append(node)
        self.generic_visit(node)
        self.function_stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def dotted(self, func: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return None
        head = self.aliases.get(func.id, func.id)
        return ".".join([head, *reversed(parts)])

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        at = f"{self.where}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                self.f.problems.append(f"{at}: shell={ast.unparse(kw.value)}")
        if name in FORBIDDEN_CALLS:
            self.f.problems.append(f"{at}: {name}() is forbidden")
        if name in NEEDS_TIMEOUT:
            self.f.external_calls.append(at)
            if not any(kw.arg == "timeout" for kw in node.keywords):
                self.f.problems.append(f"{at}: {name}() without timeout=")
        if name == POPEN:
            self.f.external_calls.append(at)
            scope = self.function_stack[-1] if self.function_stack else None
            if scope is None or not _waits_with_timeout(scope):
                self.f.problems.append(f"{at}: Popen() in a function that never waits for it with a timeout")
        self.generic_visit(node)


def _waits_with_timeout(scope: ast.AST) -> bool:
    for node in ast.walk(scope):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"communicate", "wait"}
            and any(kw.arg == "timeout" for kw in node.keywords)
        ):
            return True
    return False


def check_source(source: str, where: str = "<snippet>") -> Findings:
    findings = Findings()
    _Checker(where, findings).visit(ast.parse(source))
    return findings


def shipped_modules() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def test_every_shipped_module_runs_programs_only_as_argv_with_a_timeout() -> None:
    modules = list(shipped_modules())
    assert len(modules) > 50, "the package was not found where expected"
    total = Findings()
    for path in modules:
        f = check_source(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
        total.problems += f.problems
        total.external_calls += f.external_calls
    assert total.problems == []
    # The programs the controller starts are the admin's: the GPU reset command and the
    # notification hook's command (notifications.hookCommand).
    allowed = ("controller/act/gpu_reset.py", "controller/act/hook.py")
    assert total.external_calls and all(c.startswith(allowed) for c in total.external_calls)


BAD = {
    "shell": "import subprocess\nsubprocess.run(['ls'], shell=True, timeout=1)",
    "shell-variable": "import subprocess\nflag = True\nsubprocess.check_output('ls', shell=flag, timeout=1)",
    "os.system": "import os\nos.system('ls')",
    "os.popen alias": "from os import popen as p\np('ls')",
    "no timeout": "import subprocess as sp\nsp.run(['ls'])",
    "from-import no timeout": "from subprocess import check_output\ncheck_output(['ls'])",
    "popen unbounded": "import subprocess\ndef f():\n    p = subprocess.Popen(['ls'])\n    p.wait()",
    "popen at module level": "import subprocess\nsubprocess.Popen(['ls'])",
    "getoutput": "import subprocess\nsubprocess.getoutput('ls')",
    "exec": "exec('print(1)')",
}


@pytest.mark.parametrize("snippet", list(BAD.values()), ids=list(BAD))
def test_the_checker_catches_each_violation(snippet: str) -> None:
    assert check_source(snippet).problems


def test_the_checker_accepts_the_safe_forms() -> None:
    ok = (
        "import subprocess\n"
        "subprocess.run(['ls'], timeout=5, shell=False)\n"
        "def f():\n"
        "    p = subprocess.Popen(['ls'])\n"
        "    p.communicate(timeout=5)\n"
    )
    assert check_source(ok).problems == []
