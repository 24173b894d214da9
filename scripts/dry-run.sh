#!/usr/bin/env bash
# Set up, then run the controller once in dry-run against the local Docker engine with the
# built-in policy, and print the plan. Changes nothing on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/host-setup.sh
state=$(mktemp -d)
exec .venv/bin/ds01-controller run --once --dry-run --state-dir "$state" --events-log "$state/events.jsonl" --ledger "$state/gpu-ledger.json" "$@"
