#!/usr/bin/env bash
# Run the unit tests that need no running ROS graph (test/unit, -m "not ros") under the other
# supported Pythons: 3.10 (ROS 2 Humble's) and 3.12 (Jazzy's, Kilted's). `make test` covers
# 3.11 in .venv. Each Python gets its own venv, .venv-py310 / .venv-py312, built by
# scripts/setup_env.sh from that Python's lock file (requirements/lock-py3XX.txt), so it is
# idempotent the same way: a venv whose requirements are unchanged is reused at once.
#
# The ROS 2 Kilted wheels (rclpy, sensor_msgs, ...) exist for 3.10, 3.11 and 3.12, so these
# venvs have them too and the message tests (test/unit/messages, test/unit/pipeline/test_worker.py)
# run under every Python.
#
# Interpreters: $PYENV_ROOT/versions/X.Y.*/bin/python3 (PYENV_ROOT defaults to $HOME/.pyenv,
# the newest patch release wins), else pythonX.Y on PATH; a Python that is in neither place is
# skipped with a message. PYTHON_VERSIONS="3.10 3.12" picks the versions; extra arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_VERSIONS=${PYTHON_VERSIONS:-3.10 3.12}
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}

find_python() {
  local ver=$1 cand
  cand=$(printf '%s\n' "$PYENV_ROOT"/versions/"$ver".*/bin/python3 | sort -V | tail -n 1)
  if [ -x "$cand" ]; then
    echo "$cand"
  elif command -v "python$ver" >/dev/null 2>&1; then
    command -v "python$ver"
  fi
}

results=()
fail=0
for ver in $PYTHON_VERSIONS; do
  tag="py${ver/./}"
  py=$(find_python "$ver")
  if [ -z "$py" ]; then
    echo "test-pythons: Python $ver not found ($PYENV_ROOT/versions/$ver.*/bin/python3, python$ver on PATH): skipped"
    results+=("Python $ver: skipped (no interpreter)")
    continue
  fi
  venv=".venv-$tag"
  echo "test-pythons: Python $ver ($py) in $venv"
  t0=$(date +%s)
  if ! PYTHON="$py" VENV="$venv" bash scripts/setup_env.sh; then
    echo "test-pythons: setting up $venv failed"
    results+=("Python $ver: FAILED to set up $venv")
    fail=1
    continue
  fi
  t1=$(date +%s)
  set +e
  "$venv/bin/python" -m pytest test/unit -m "not ros" -q "$@"
  rc=$?
  set -e
  t2=$(date +%s)
  if [ "$rc" -eq 0 ]; then
    outcome="passed"
  else
    outcome="FAILED (pytest exit $rc)"
    fail=1
  fi
  results+=("Python $ver: $outcome (venv $((t1 - t0)) s, tests $((t2 - t1)) s)")
done

echo "test-pythons: summary"
for r in "${results[@]}"; do echo "  $r"; done
exit "$fail"
