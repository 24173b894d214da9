"""Shared test configuration. Fixture modules live in tests/fixtures/ and are registered here.

Order matters: a fixture module that imports another must come after it, so that pytest can
rewrite the asserts of each before it is imported.
"""

import pytest

pytest_plugins = [
    "tests.fixtures.docker_host",
    "tests.fixtures.nvml",
    "tests.fixtures.notify_socket",
    "tests.fixtures.act",
    "tests.fixtures.daemon",
    "tests.fixtures.notices",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests run only when asked for by name (``-m soak``); ``-m "not docker"`` leaves them out."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("soak") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
