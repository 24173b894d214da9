#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole check.
set -euo pipefail
cd "$(dirname "$0")/.."
DS01_SETUP_TEST=1 bash scripts/host-setup.sh
exec bash scripts/check.sh "$@"
