#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole check.
#
# This is for a test or CI machine, not a production GPU server: it installs system packages
# (docker.io, busybox-static, gcc, systemd, logrotate, iproute2, tmux, debootstrap, when missing), builds a
# virtualenv in .venv, starts dockerd if none answers, and creates (and removes) containers labelled
# ds01.test. It refuses to run on a host that runs containers of its own (running ones: a
# production host) unless told to:
#   DS01_TEST_ANY_HOST=1 bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${DS01_TEST_ANY_HOST:-0}" != 1 ] && command -v docker >/dev/null 2>&1; then
  others=$(docker ps --format '{{.Label "ds01.test"}}|{{.Names}}' 2>/dev/null | grep -c '^|' || true)
  if [ "${others:-0}" -gt 0 ]; then
    echo "scripts/test.sh: this host runs $others container(s) that are not test containers; the tests" \
      "install packages and create containers here. Run on a test machine, or set DS01_TEST_ANY_HOST=1." >&2
    exit 1
  fi
fi
echo "[test] installs what is missing (system packages, .venv), then runs format, lint, types, contracts, tests" >&2
DS01_SETUP_TEST=1 bash scripts/host-setup.sh
exec bash scripts/check.sh "$@"
