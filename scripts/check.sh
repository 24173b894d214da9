#!/usr/bin/env bash
# The one command that checks everything: format, lint, types, import contracts, alert rules (promtool), tests.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DS01_VENV:-$(pwd)/.venv}
PATH="$VENV/bin:$PATH"
echo "== format"; ruff format --check controller desired_state crd_like_specs tests bench
echo "== lint"; ruff check controller desired_state crd_like_specs tests bench
echo "== types"; mypy
echo "== import contracts"; lint-imports
echo "== alert rules"
if command -v promtool >/dev/null 2>&1; then
  promtool check rules deploy/prometheus/ds01-alerts.yml
  promtool test rules deploy/prometheus/ds01-alerts.test.yml
elif [ "${DS01_SKIP_PROMTOOL:-0}" = 1 ]; then
  echo "check.sh: promtool not found; the alert rules are NOT checked (DS01_SKIP_PROMTOOL=1)" >&2
else
  echo "check.sh: promtool not found, so the alert rules cannot be checked. Install Debian's prometheus" \
    "package (it ships promtool; scripts/host-setup.sh does with DS01_SETUP_TEST=1, as .ci/run does)," \
    "or set DS01_SKIP_PROMTOOL=1 to skip this check knowingly." >&2
  exit 1
fi
echo "== tests"; python -m pytest "$@"
