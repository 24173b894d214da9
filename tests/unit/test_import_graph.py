"""The import graph points one way: no module circle, and the kinds import nothing of the desired state.

Built with grimp (import-linter's own graph library), which reads every import statement, those
inside functions included: an import moved into a function to dodge a circle is still a circle.
The layering between packages is import-linter's (``lint-imports``, pyproject.toml); this test
guards what those contracts do not say, module by module.
"""

from __future__ import annotations

from collections.abc import Iterable

import grimp
import pytest

PACKAGES = ("controller", "desired_state", "crd_like_specs")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)  # no cache: a stale one hides or invents edges


def circles(graph: grimp.ImportGraph, excluded: Iterable[str] = ()) -> list[list[str]]:
    """The import circles among the graph's modules: strongly connected components of two or more
    (Tarjan's algorithm, iterative), each sorted; modules in ``excluded`` are left out."""
    skip = set(excluded)
    nodes = sorted(m for m in graph.modules if m not in skip)
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i not in skip) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, at = work.pop()
            if at == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if at < len(targets):
                work.append((node, at + 1))
                target = targets[at]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_the_circle_finder_finds_a_circle_through_an_import_inside_a_function() -> None:
    g = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        g.add_module(name)
    g.add_import(importer="p.a", imported="p.b")
    g.add_import(importer="p.b", imported="p.c")
    g.add_import(importer="p.c", imported="p.a")  # grimp records it wherever the statement stands
    assert circles(g) == [["p.a", "p.b", "p.c"]]
    assert circles(g, excluded={"p.b"}) == []


def test_no_module_circle_in_controller_desired_state_or_crd_like_specs(graph: grimp.ImportGraph) -> None:
    assert circles(graph) == []


def test_crd_like_specs_imports_nothing_of_desired_state(graph: grimp.ImportGraph) -> None:
    direct = sorted(
        (importer, imported)
        for importer in graph.find_descendants("crd_like_specs") | {"crd_like_specs"}
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported == "desired_state" or imported.startswith("desired_state.")
    )
    assert direct == []
    assert not graph.chain_exists(importer="crd_like_specs", imported="desired_state", as_packages=True)
