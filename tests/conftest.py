"""Shared test configuration. Fixture modules live in tests/fixtures/ and are registered here.

Order matters: a fixture module that imports another must come after it, so that pytest can
rewrite the asserts of each before it is imported.
"""

pytest_plugins = [
    "tests.fixtures.docker_host",
    "tests.fixtures.nvml",
    "tests.fixtures.notify_socket",
    "tests.fixtures.act",
    "tests.fixtures.daemon",
]
