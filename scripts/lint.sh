#!/usr/bin/env bash
# Static checks, configured in pyproject.toml: ruff over the whole repository and mypy (strict)
# over the runtime package sole_r1_ros. Both always run; exits non-zero on any finding.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
status=0
echo "lint: ruff check ."
"$PY" -m ruff check . || status=1
echo "lint: mypy"
"$PY" -m mypy || status=1
exit "$status"
