"""``python -m controller.observe``: print this host's snapshot as JSON (read-only, one pass)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from controller.observe.host import ObserveConfig, observe_host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.observe", description=__doc__)
    parser.add_argument("--docker-url", help="Docker engine URL (default: DOCKER_HOST or the local socket)")
    parser.add_argument("--docker-timeout-s", type=float, default=10.0)
    parser.add_argument("--ledger", type=Path, help="GPU ledger file")
    parser.add_argument("--keepalive-path", help="keep-alive file inside containers")
    parser.add_argument("--proc-root", type=Path)
    parser.add_argument("--cgroup-root", type=Path)
    args = parser.parse_args(argv)
    settings: dict[str, object] = {
        "docker_base_url": args.docker_url,
        "docker_timeout_s": args.docker_timeout_s,
    }
    for key, value in (
        ("ledger_path", args.ledger),
        ("keepalive_path", args.keepalive_path),
        ("proc_root", args.proc_root),
        ("cgroup_root", args.cgroup_root),
    ):
        if value is not None:
            settings[key] = value
    try:
        config = ObserveConfig.model_validate(settings)
    except ValidationError as exc:
        print(f"invalid option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    snapshot = observe_host(config)
    print(snapshot.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
