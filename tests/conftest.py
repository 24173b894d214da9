"""Shared test configuration. Fixture modules live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.docker_host",
    "tests.fixtures.nvml",
]
