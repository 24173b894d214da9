"""ds01-controller: observe a shared GPU host, compare it with the admins' declared policy, act.

Layers (enforced by import-linter contracts in pyproject.toml):
``snapshot`` (values) < ``plan`` (pure rules) < ``observe`` (adapters that read the world)
< ``act`` (executors) < ``loop`` (the daemon) < ``cli`` (ds01ctl).
"""

__version__ = "0.1.0"
