"""Spec documents the benchmark daemons run with (CRD-like YAML, see docs/policy.md).

The benchmark shares the Docker engine with whatever else runs on the machine, and its daemons
act for real. So every spec here leaves containers the run did not create alone:

* :func:`reaction_policy` turns every destructive timer off (``null``: never) for the host, and
  gives only the run's own reaction user zero timeouts, so its created and exited containers are
  due at once;
* :func:`idle_policy` keeps every built-in timer (so the daemon evaluates the host exactly as it
  would in production) and protects every container by name, so nothing is ever stopped or removed
  while the idle cost is measured.
"""

from __future__ import annotations

from crd_like_specs.vocabulary import ContainerType


def reaction_user(run_id: str) -> str:
    """The owner (``ds01.user`` label) of the reaction-latency trial containers."""
    return f"benchreact{run_id.replace('-', '')}"


def reaction_specs(run_id: str) -> dict[str, str]:
    """File name -> YAML for the reaction-latency daemon's specs directory."""
    user = reaction_user(run_id)
    types = "\n".join(f"    {t.value}: {{idleTimeout: null, maxRuntime: null}}" for t in ContainerType)
    policy = f"""\
# Benchmark only (reaction latency). Nothing on the host is ever stopped or removed except the
# containers owned by {user}, which are removed as soon as they are created or exit.
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: bench-reaction
spec:
  settings:
    idleTimeout: null
    maxRuntime: null
    gpuHoldAfterStop: null
    containerHoldAfterStop: null
    createdContainerTimeout: null
  # Container types pin their own timers above these settings: switch those off too.
  containerTypes:
{types}
  gpuReset:
    policy: never
"""
    override = f"""\
apiVersion: ds01.io/v1alpha1
kind: UserOverride
metadata:
  name: {user}
spec:
  user: {user}
  settings:
    createdContainerTimeout: 0s
    containerHoldAfterStop: 0s
    gpuHoldAfterStop: 0s
"""
    return {"bench-reaction-policy.yaml": policy, "bench-reaction-user.yaml": override}


def idle_specs() -> dict[str, str]:
    """File name -> YAML for the idle-cost daemon's specs directory."""
    policy = """\
# Benchmark only (idle cost): the built-in timers, but every container protected, so the daemon
# does all of its evaluation and never stops or removes anything.
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: bench-idle
spec:
  protect:
    - name: "*"
      reason: benchmark host; measured, never touched
  gpuReset:
    policy: never
"""
    return {"bench-idle-policy.yaml": policy}


def soak_specs(run_id: str) -> dict[str, str]:
    """File name -> YAML for the churn soak's daemon: the reaction policy (nothing else on the
    host is touched), but the run's user keeps the created-container timeout off, so a container
    is never removed between its create and its start; its exited containers go at once."""
    documents = reaction_specs(run_id)
    user = reaction_user(run_id)
    documents["bench-reaction-user.yaml"] = f"""\
apiVersion: ds01.io/v1alpha1
kind: UserOverride
metadata:
  name: {user}
spec:
  user: {user}
  settings:
    containerHoldAfterStop: 0s
    gpuHoldAfterStop: 0s
"""
    return documents
