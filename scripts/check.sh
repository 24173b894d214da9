#!/usr/bin/env bash
# The one command that checks everything: format, lint, types, import contracts, tests.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DS01_VENV:-$(pwd)/.venv}
PATH="$VENV/bin:$PATH"
echo "== format"; ruff format --check controller desired_state crd_like_specs tests bench
echo "== lint"; ruff check controller desired_state crd_like_specs tests bench
echo "== types"; mypy
echo "== import contracts"; lint-imports
echo "== tests"; python -m pytest "$@"
