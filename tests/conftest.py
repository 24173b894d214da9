"""Shared test configuration. Fixture modules live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.act",
    "tests.fixtures.docker_host",
    "tests.fixtures.nvml",
    "tests.fixtures.notify_socket",
]
