#!/usr/bin/env bash
# Create ./.venv with everything sole_r1_ros needs, pinned (requirements/). Idempotent: a
# second run with unchanged requirements returns at once.
#
# PYTHON (default python3) picks the interpreter and VENV (default .venv) the folder. Each
# supported Python has its own resolved set, requirements/lock-py3XX.txt (3.10: ROS 2 Humble,
# 3.11, 3.12: Jazzy and Kilted); another Python is refused.
#
# Two paths:
#  - no ROS sourced: ROS 2 (Kilted) rclpy and messages come as wheels from the package index;
#  - a ROS 2 distro is sourced (ROS_DISTRO set and rclpy importable): the venv sees the system
#    site-packages and uses that rclpy; no ROS wheels are installed over it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
  || { echo "setup_env: cannot run PYTHON=$PYTHON" >&2; exit 1; }
lock="requirements/lock-py${pyver/./}.txt"
if [ ! -f "$lock" ]; then
  supported=$(cd requirements && ls lock-py3*.txt | sed -E 's/lock-py3([0-9]+)\.txt/3.\1/' | paste -sd, - | sed 's/,/, /g')
  echo "setup_env: Python $pyver ($PYTHON) is not supported; supported: $supported" \
    "(requirements/lock-py3XX.txt). Set PYTHON to one of those." >&2
  exit 1
fi

if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  mode="system-ros-${ROS_DISTRO}"
else
  mode="ros-wheels"
fi
digest=$(cat requirements/base.txt requirements/dev.txt requirements/serving.txt requirements/ros.txt "$lock" setup.py \
  | sha256sum | cut -c1-16)
stamp="$VENV/.sole_r1_env-$mode-py$pyver-$digest"
if [ -f "$stamp" ]; then
  exit 0
fi

echo "setup_env: creating $VENV (Python $pyver, $mode, $lock)"
venv_args=()
if [ "$mode" != ros-wheels ]; then
  venv_args+=(--system-site-packages)
fi
# a venv left by another Python version is rebuilt from scratch, not upgraded in place
if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$pyver" ]; then
  venv_args+=(--clear)
fi
"$PYTHON" -m venv "${venv_args[@]}" "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade "pip==26.3" >/dev/null 2>&1 || true
reqs=(-r requirements/base.txt -r requirements/dev.txt -r requirements/serving.txt)
if [ "$mode" = ros-wheels ]; then
  reqs+=(-r requirements/ros.txt)
fi
"${pip[@]}" install -c "$lock" "${reqs[@]}"
"${pip[@]}" install --no-deps --no-build-isolation -e .
rm -f "$VENV"/.sole_r1_env-*
touch "$stamp"
echo "setup_env: ready ($("$VENV/bin/python" -c 'import sys, torch, transformers, rclpy; print("Python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)'))"
