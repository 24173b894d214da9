"""The README's ``ds01ctl`` sample output is what ``ds01ctl`` prints under the README's sample config.

The demo host and the rendering live in :mod:`tests.unit.readme_demo`; after a change to a view, the
planner or the demo policy, rewrite the block with ``python -m tests.unit.readme_demo --write``.
"""

from __future__ import annotations

import pytest

from tests.unit import readme_demo


def test_the_readme_sample_output_is_rendered_from_the_readme_sample_config() -> None:
    policy_yaml, shown = readme_demo.readme_blocks(readme_demo.README.read_text(encoding="utf-8"))
    rendered = readme_demo.console(policy_yaml)
    assert shown == rendered, (
        "README.md's ds01ctl demo differs from what ds01ctl prints under its sample config; "
        "rewrite it with: python -m tests.unit.readme_demo --write"
    )


def test_the_demo_follows_the_readme_config() -> None:
    """The check is not vacuous: another policy in the YAML block gives another output."""
    policy_yaml, _ = readme_demo.readme_blocks(readme_demo.README.read_text(encoding="utf-8"))
    other = policy_yaml.replace("idleMinDuration: 30s", "idleMinDuration: 30s\n    idleTimeout: 2h")
    assert other != policy_yaml
    assert readme_demo.console(other) != readme_demo.console(policy_yaml)


def test_a_readme_without_the_demo_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ds01ctl demo"):
        readme_demo.readme_blocks("# a README\n```yaml\nkind: x\n```\n")
