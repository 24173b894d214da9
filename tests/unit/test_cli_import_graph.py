"""The import graph of ``controller.cli`` has no circle, imports inside functions included.

grimp reads every ``import`` statement of the package (at module level and inside functions), so
a circle held together by a deferred import fails here just as a top-level one would.
"""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), within ``package``."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {
        m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules) for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_cli_package_has_no_import_cycle() -> None:
    graph = grimp.build_graph("controller", include_external_packages=False, cache_dir=None)
    assert _cycles(graph, "controller.cli") == []


def test_cycle_finder_sees_imports_inside_functions() -> None:
    """The checker itself: a circle closed only by an import inside a function is found."""
    graph = grimp.ImportGraph()
    for m in ("pkg", "pkg.a", "pkg.b"):
        graph.add_module(m)
    graph.add_import(importer="pkg.a", imported="pkg.b", line_number=1, line_contents="import pkg.b")
    graph.add_import(
        importer="pkg.b", imported="pkg.a", line_number=9, line_contents="    from pkg.a import f"
    )
    assert _cycles(graph, "pkg") == [["pkg.a", "pkg.b"]]
