"""Replay a rosbag2 into a live reward node in lockstep (``/clock`` before each message; after the
last camera frame of a step the offline run scored, wait for the node's estimate of it), so the
live node and ``score_bag`` can be compared step for step."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ros_helpers import ManagedProcess, RosListener, wait_until
from sole_r1_ros.messages.bags import BagReader
from sole_r1_ros.messages.image_codec import stamp_to_ns

CAMERA_TOPICS = ("/camera/external/image_raw", "/camera/wrist/image_raw")
GOAL_TOPIC = "/goal"


def ros_message(msg: Any, msgtype: str) -> Any:
    """The rclpy message for a message read from a bag (String, Image or CompressedImage)."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header, String

    if msgtype == "std_msgs/msg/String":
        return String(data=msg.data)
    header = Header(stamp=Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec),
                    frame_id=msg.header.frame_id)
    if msgtype == "sensor_msgs/msg/Image":
        return Image(header=header, height=msg.height, width=msg.width, encoding=msg.encoding,
                     is_bigendian=msg.is_bigendian, step=msg.step, data=np.asarray(msg.data).tobytes())
    return CompressedImage(header=header, format=msg.format, data=np.asarray(msg.data).tobytes())


def replay_lockstep(listener: RosListener, node: ManagedProcess, bag: Path, estimate_topic: str,
                    scored_stamps: Sequence[int]) -> list[dict[str, Any]]:
    """Play ``bag`` (its goal on ``/goal``, latched; its cameras on :data:`CAMERA_TOPICS`; its
    ground truth left out) into ``node``, which must remap its inputs to those topics and use sim
    time; returns every ``~/estimate`` the node published, in order."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    estimates = listener.subscribe(estimate_topic, String, 100)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    clock_pub = listener.publisher("/clock", Clock, 10)
    goal_pub = listener.publisher(GOAL_TOPIC, String, latched)
    image_pubs = {t: listener.publisher(t, Image, 50) for t in CAMERA_TOPICS}
    node.wait_for_output(r"\bready: mode=", 120)
    wait_until(lambda: all(p.get_subscription_count() >= 1 for p in (clock_pub, goal_pub, *image_pubs.values()))
               and estimates.matched() >= 1, 30, "the node to match the player")
    with BagReader(bag) as reader:
        messages = list(reader.messages([t for t in reader.topics if t != "/ground_truth/progress"]))
    scored = set(scored_stamps)
    seen: dict[int, int] = {}
    for m in messages:
        tick = Clock()
        tick.clock.sec, tick.clock.nanosec = divmod(m.log_time_ns, 1_000_000_000)
        clock_pub.publish(tick)
        time.sleep(0.01)  # the node takes /clock before the frames that follow it
        if m.topic == GOAL_TOPIC:
            goal_pub.publish(ros_message(m.msg, m.msgtype))
            node.wait_for_output(r"goal from topic", 30)
            continue
        image_pubs[m.topic].publish(ros_message(m.msg, m.msgtype))
        stamp = stamp_to_ns(m.msg.header.stamp)
        seen[stamp] = seen.get(stamp, 0) + 1
        if stamp in scored and seen[stamp] == len(image_pubs):  # lockstep: let the node finish this step
            # wait_until calls the lambdas before the loop moves on: this iteration's stamp is meant
            wait_until(lambda: any(json.loads(r.msg.data)["stamp_ns"] == stamp  # noqa: B023
                                   for r in estimates.snapshot()),
                       60, lambda: f"the node's estimate for stamp {stamp}\n{node.tail()}")  # noqa: B023
    return [json.loads(r.msg.data) for r in estimates.snapshot()]


__all__ = ["CAMERA_TOPICS", "GOAL_TOPIC", "replay_lockstep", "ros_message"]
