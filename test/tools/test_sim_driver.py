"""The tabletop's ROS driver as a real process: stamped camera images, state answers to commands,
ground truth only in its log file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ros_helpers import ManagedProcess, isolated_ros, stop_all, wait_until

pytestmark = pytest.mark.ros


def _stamp_ns(stamp: object) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)  # type: ignore[attr-defined]


@pytest.mark.parametrize("frames", ["every_step", "command_end"])
def test_driver_publishes_frames_and_state_and_logs_ground_truth(tmp_path: Path, frames: str) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    gt_log = tmp_path / "gt.jsonl"
    with isolated_ros(f"sim_driver_test_{frames}") as (listener, env):
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        images = {role: listener.subscribe(f"/cameras/{role}/image_raw", Image, reliable)
                  for role in ("external", "wrist")}
        states = listener.subscribe("/tabletop_sim/state", String, reliable)
        clock = listener.subscribe("/clock", Clock, 10)
        command = listener.publisher("/tabletop_sim/command", String, reliable)
        proc = ManagedProcess("tabletop_sim", [
            sys.executable, "-m", "sole_r1_tools.sim.ros_driver", "--ros-args",
            "-p", "task:=reach", "-p", "max_steps:=8", "-p", "size:=160x120", "-p", f"frames:={frames}",
            "-p", f"ground_truth_log:={gt_log}"], env=env, log_path=tmp_path / "driver.log")
        try:
            wait_until(lambda: command.get_subscription_count() > 0 and states.matched() > 0
                       and all(r.matched() for r in images.values()), 60, "the driver to come up")
            command.publish(String(data=json.dumps({"id": 1, "op": "reset", "seed": 5, "tag": "train"})))
            wait_until(lambda: len(states) >= 1, 30, "the reset's state")
            chunk = [[1.0, 0.0, 0.0]] * 4
            command.publish(String(data=json.dumps({"id": 2, "op": "step", "actions": chunk})))
            command.publish(String(data=json.dumps({"id": 3, "op": "step", "actions": chunk})))
            wait_until(lambda: len(states) >= 3, 30, "the steps' states")
            n_frames = 1 + (8 if frames == "every_step" else 2)
            wait_until(lambda: all(len(r) >= n_frames for r in images.values()), 30, "the frames")
        finally:
            stop_all([proc])

        replies = [json.loads(r.msg.data) for r in states.snapshot()]
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert [r["steps"] for r in replies] == [0, 4, 8]
        assert replies[-1]["truncated"] and not replies[1]["truncated"]
        assert replies[0]["goal"].startswith("move the gripper to the ")
        assert len(replies[0]["obs"]) == 9
        assert replies[2]["obs"][0] > replies[0]["obs"][0]  # moved in +x
        for r in replies:
            assert "true_progress" not in r and "success" not in r  # ground truth is not published

        for role, recorder in images.items():
            msgs = [item.msg for item in recorder.snapshot()]
            assert len(msgs) == n_frames
            assert all(m.encoding == "rgb8" and (m.width, m.height) == (160, 120) for m in msgs)
            assert all(m.header.frame_id == role for m in msgs)
            stamps = [_stamp_ns(m.header.stamp) for m in msgs]
            assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
            # the frame each state names was published before the state
            assert {r["stamp_ns"] for r in replies} <= set(stamps)
        assert len(clock) >= 1

        gt = [json.loads(line) for line in gt_log.read_text().splitlines()]
        assert [g["step"] for g in gt] == [0, 4, 8]
        assert [g["stamp_ns"] for g in gt] == [r["stamp_ns"] for r in replies]
        assert all(0.0 <= g["true_progress"] <= 1.0 and g["tag"] == "train" and g["seed"] == 5 for g in gt)
