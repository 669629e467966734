#!/usr/bin/env bash
# Create ./.venv with everything sole_r1_ros needs, pinned (requirements/). Idempotent: a
# second run with unchanged requirements returns at once.
#
# Two paths:
#  - no ROS sourced: ROS 2 (Kilted) rclpy and messages come as wheels from the package index;
#  - a ROS 2 distro is sourced (ROS_DISTRO set and rclpy importable): the venv sees the system
#    site-packages and uses that rclpy; no ROS wheels are installed over it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  mode="system-ros-${ROS_DISTRO}"
else
  mode="ros-wheels"
fi
digest=$(cat requirements/*.txt setup.py | sha256sum | cut -c1-16)
stamp="$VENV/.sole_r1_env-$mode-$digest"
if [ -f "$stamp" ]; then
  exit 0
fi

echo "setup_env: creating $VENV ($mode)"
if [ "$mode" = ros-wheels ]; then
  "$PYTHON" -m venv "$VENV"
else
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade "pip==26.3" >/dev/null 2>&1 || true
reqs=(-r requirements/base.txt -r requirements/dev.txt)
if [ "$mode" = ros-wheels ]; then
  reqs+=(-r requirements/ros.txt)
fi
"${pip[@]}" install -c requirements/lock.txt "${reqs[@]}"
"${pip[@]}" install --no-deps --no-build-isolation -e .
rm -f "$VENV"/.sole_r1_env-*
touch "$stamp"
echo "setup_env: ready ($("$VENV/bin/python" -c 'import torch, transformers, rclpy; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
