#!/usr/bin/env bash
# Build the package with colcon (ament_python) into a scratch workspace and check the ROS
# install layout: executables under lib/sole_r1_ros, launch and config under share/sole_r1_ros.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VENV_ABS=$(cd "$VENV" && pwd)
ws=$(mktemp -d)
trap 'rm -rf "$ws"' EXIT
mkdir -p "$ws/src/sole_r1_ros"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$ws/src/sole_r1_ros"
(
  cd "$ws"
  PATH="$(cd "$OLDPWD" && pwd)/$VENV/bin:$PATH" colcon --log-base log build --base-paths src \
    --build-base build --install-base install --event-handlers console_cohesion- >"$ws/colcon.log" 2>&1 \
    || { cat "$ws/colcon.log"; exit 1; }
)
inst="$ws/install/sole_r1_ros"
fail=0
need() { if [ ! -e "$inst/$1" ]; then echo "colcon-check: missing $1"; fail=1; fi; }
for exe in reward_node score_bag sole-r1-score; do need "lib/sole_r1_ros/$exe"; done
for exe in sole-r1-demo sole-r1-tiny-model; do
  if [ -e "$inst/lib/sole_r1_ros/$exe" ]; then echo "colcon-check: $exe is a developer tool, not an installed executable"; fail=1; fi
done
need share/sole_r1_ros/package.xml
need share/ament_index/resource_index/packages/sole_r1_ros
need share/sole_r1_ros/launch/reward_node.launch.py
need share/sole_r1_ros/config/reward_node.yaml
need share/sole_r1_ros/config/prompts/sole_r1.yaml
site=$(find "$inst/lib" -maxdepth 3 -type d -name site-packages | head -n 1)
for f in sole_r1_ros/ros/reward_node.py sole_r1_ros/py.typed sole_r1_ros/data/default_model/model.safetensors; do
  if [ -z "$site" ] || [ ! -e "$site/$f" ]; then echo "colcon-check: missing site-packages/$f"; fail=1; fi
done
# developer tools (training, synthetic episodes, the tiny-model builder) stay out of a robot's install
for d in sole_r1_tools sole_r1_ros/training sole_r1_ros/synth; do
  if [ -n "$site" ] && [ -e "$site/$d" ]; then echo "colcon-check: $d must not be installed"; fail=1; fi
done
if [ "$fail" -ne 0 ]; then
  echo "colcon-check: install tree was:"; (cd "$inst" && find . -maxdepth 5 -not -name "*.pyc" | sort)
  exit 1
fi
# the installed executable must import the installed package, not the source tree
(cd "$ws" && PYTHONPATH="$site" "$VENV_ABS/bin/python" - <<PY
import importlib.util, sys
spec = importlib.util.find_spec("sole_r1_ros.ros.reward_node")
assert spec and spec.origin.startswith("$site"), spec
from sole_r1_ros.backends.default_model import SHIPPED_MODEL_DIR
assert (SHIPPED_MODEL_DIR / "config.json").is_file(), SHIPPED_MODEL_DIR
PY
) || { echo "colcon-check: the installed package does not import"; exit 1; }
echo "colcon-check: ok ($(cd "$inst" && find lib/sole_r1_ros -maxdepth 1 -type f | wc -l) executables in lib/sole_r1_ros)"
