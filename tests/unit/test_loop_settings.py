"""Host-wide settings the daemon derives from the policy for its observer."""

from __future__ import annotations

from controller.loop import host_keepalive_path
from desired_state.load import builtin_policy, load_spec_text

SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  settings:
    keepalivePath: /workspace/.stay-awake
"""


def test_keepalive_path_comes_from_the_policy() -> None:
    assert host_keepalive_path(builtin_policy()) == "/workspace/.keep-alive"
    assert host_keepalive_path(load_spec_text(SPEC, "lab.yaml")) == "/workspace/.stay-awake"
