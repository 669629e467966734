"""A thin ROS 2 driver for :class:`~sole_r1_tools.sim.env.TabletopEnv`, like a robot's.

- publishes ``cameras/external/image_raw`` and ``cameras/wrist/image_raw`` (sensor_msgs/Image,
  rgb8, stamped with the simulated time of the frame), one frame per env step and one at reset
  (``frames: every_step``, like a camera driver), or only the frame at the end of each command
  (``frames: command_end``: the simulator runs many times faster than real time, and streaming
  every frame then floods the reward node's image intake while it infers; the learner asks only
  about command ends anyway);
- takes commands on ``~/command`` (std_msgs/String JSON, one topic so resets and steps stay in
  order): ``{"id": ..., "op": "reset", "seed": S, "tag": "train"}`` or
  ``{"id": ..., "op": "step", "actions": [[...], ...]}`` (a chunk, executed step by step);
- answers each command on ``~/state`` (std_msgs/String JSON): ``id``, ``env_episode``, ``obs``
  (the low-dimensional state), ``stamp_ns`` (the last published frame), ``goal``, ``steps``,
  ``truncated``; frames are published before the state, so they are on the wire first;
- publishes ``/clock`` (the simulated time) when ``publish_clock`` is true, for ``use_sim_time``.

Ground truth (true progress, success) is never published: it goes, one JSON line per command,
to the file named by ``ground_truth_log`` (evaluation only).

    python -m sole_r1_tools.sim.ros_driver --ros-args -p task:=reach -p ground_truth_log:=/tmp/gt.jsonl
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from sole_r1_tools.sim.env import DEFAULT_START_NS, TabletopEnv
from sole_r1_tools.synth.scene import ROLES, parse_size


def _stamp(msg: Any, stamp_ns: int) -> None:
    msg.sec = int(stamp_ns // 1_000_000_000)
    msg.nanosec = int(stamp_ns % 1_000_000_000)


class TabletopDriver(Node):
    """The env behind camera topics, a command topic and a state topic."""

    def __init__(self) -> None:
        super().__init__("tabletop_sim")
        task = str(self.declare_parameter("task", "reach").value)
        max_steps = int(self.declare_parameter("max_steps", 20).value)
        dt = float(self.declare_parameter("dt", 0.1).value)
        max_step_m = float(self.declare_parameter("max_step_m", 0.05).value)
        size = parse_size(str(self.declare_parameter("size", "320x240").value))
        self.gt_path = str(self.declare_parameter("ground_truth_log", "").value)
        self.publish_clock = bool(self.declare_parameter("publish_clock", True).value)
        reliable = str(self.declare_parameter("image_reliability", "reliable").value) == "reliable"
        self.frames = str(self.declare_parameter("frames", "every_step").value)
        if self.frames not in ("every_step", "command_end"):
            raise ValueError("frames must be every_step or command_end")
        self.env = TabletopEnv(task, max_steps=max_steps, dt=dt, max_step_m=max_step_m, size=size,
                               start_ns=DEFAULT_START_NS)
        qos = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE if reliable else
                         ReliabilityPolicy.BEST_EFFORT)
        self.image_pubs = {role: self.create_publisher(Image, f"cameras/{role}/image_raw", qos) for role in ROLES}
        self.state_pub = self.create_publisher(String, "~/state", 50)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.create_subscription(String, "~/command", self._on_command, 50)
        self.episode = -1
        self.tag = ""
        self._next_start_ns = DEFAULT_START_NS
        self.get_logger().info(f"tabletop sim ready: task={task} max_steps={max_steps} dt={dt}")

    def _publish_frames(self) -> int:
        stamp = self.env.stamp_ns()
        views = self.env.render_views()
        for role, img in views.items():
            msg = Image()
            _stamp(msg.header.stamp, stamp)
            msg.header.frame_id = role
            msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
            msg.encoding = "rgb8"
            msg.step = int(img.shape[1] * 3)
            msg.data = np.ascontiguousarray(img).tobytes()
            self.image_pubs[role].publish(msg)
        if self.publish_clock:
            clock = Clock()
            _stamp(clock.clock, stamp)
            self.clock_pub.publish(clock)
        return stamp

    def _on_command(self, msg: String) -> None:
        try:
            cmd = json.loads(msg.data)
            op = cmd["op"]
        except (ValueError, KeyError, TypeError) as err:
            self.get_logger().warning(f"bad command: {err}")
            return
        truncated = False
        info: dict[str, Any]
        if op == "reset":
            self.env.start_ns = self._next_start_ns
            obs, info = self.env.reset(seed=int(cmd.get("seed", 0)))
            self.episode += 1
            self.tag = str(cmd.get("tag", ""))
            stamp = self._publish_frames()
        elif op == "step":
            obs, info, stamp = None, {}, self.env.stamp_ns()
            for action in cmd.get("actions", []):
                obs, _, _, truncated, info = self.env.step(np.asarray(action, dtype=np.float32))
                if self.frames == "every_step":
                    stamp = self._publish_frames()
                if truncated:
                    break
            if obs is None:
                self.get_logger().warning("step command without actions")
                return
            if self.frames == "command_end":
                stamp = self._publish_frames()
        else:
            self.get_logger().warning(f"unknown op {op!r}")
            return
        self._next_start_ns = stamp + int(self.env.dt * 1e9)
        self._log_ground_truth(info, stamp, truncated)
        state = {"id": cmd.get("id"), "env_episode": self.episode, "obs": [float(v) for v in obs],
                 "stamp_ns": stamp, "goal": self.env.goal, "steps": self.env.steps, "truncated": truncated}
        self.state_pub.publish(String(data=json.dumps(state)))

    def _log_ground_truth(self, info: dict[str, Any], stamp: int, truncated: bool) -> None:
        if not self.gt_path:
            return
        record = {"env_episode": self.episode, "tag": self.tag, "seed": self.env.episode_seed,
                  "step": self.env.steps, "stamp_ns": stamp, "true_progress": info["true_progress"],
                  "success": info["success"], "truncated": truncated}
        with open(self.gt_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = TabletopDriver()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
