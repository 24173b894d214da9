#!/usr/bin/env bash
# Set up, then run the controller once in dry-run against the local Docker engine with the
# built-in policy, and print the plan. Changes nothing on the host. Its state stays in
# .ds01-dry-run/ with an environment file there, so the ds01ctl commands printed at the end look at
# the same state and policy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/host-setup.sh
root=$(pwd)
state=${DS01_DRY_RUN_DIR:-$root/.ds01-dry-run}
mkdir -p "$state"
chmod 0700 "$state"
cat > "$state/controller.env" <<ENV
# Written by scripts/dry-run.sh: what the dry-run pass used; ds01ctl reads it (DS01_ENV_FILE).
DS01_STATE_DIR=$state
DS01_EVENTS_LOG=$state/events.jsonl
DS01_LEDGER=$state/gpu-ledger.json
ENV
rc=0
.venv/bin/ds01-controller run --once --dry-run --state-dir "$state" --events-log "$state/events.jsonl" \
  --ledger "$state/gpu-ledger.json" "$@" || rc=$?
cat >&2 <<NEXT

Next, with the state this pass recorded:
  export PATH="$root/.venv/bin:\$PATH" DS01_ENV_FILE="$state/controller.env"
  ds01ctl get containers            # what it sees and what happens next to each container
  ds01ctl describe container NAME   # why, with every policy value and where it came from
  ds01ctl plan --at +2h             # what it would have done in two hours
NEXT
exit $rc
