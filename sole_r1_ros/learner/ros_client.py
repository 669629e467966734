"""rclpy glue for :class:`~sole_r1_ros.learner.client.RewardClient`: topics in, topics out.

Publishes ``goal`` (std_msgs/String, transient local, like the node's subscription), the node's
``~/reset`` (std_msgs/Empty) and ``~/request`` (std_msgs/Header: stamp = frame to score,
frame_id = request id) and subscribes to its ``~/estimate``. ``node_name`` is the reward node's
fully qualified name (``/sole_r1_reward`` by default), so its private topics resolve. Timeouts run
on the node's clock (ROS time: ``use_sim_time`` works) unless ``steady_timeouts`` is set, which
uses the monotonic wall clock (a paused simulation then still times requests out).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Empty, Header, String

from sole_r1_ros.learner.client import ClientSettings, RewardAnswer, RewardClient


def _ns_to_stamp(stamp_ns: int, header: Header) -> None:
    header.stamp.sec = int(stamp_ns // 1_000_000_000)
    header.stamp.nanosec = int(stamp_ns % 1_000_000_000)


def create_ros_reward_client(
    node: Node,
    *,
    node_name: str = "/sole_r1_reward",
    goal_topic: str = "goal",
    settings: ClientSettings | None = None,
    on_answer: Callable[[RewardAnswer], None] | None = None,
    steady_timeouts: bool = False,
    poll_period_s: float = 0.01,
) -> RewardClient:
    """A :class:`RewardClient` wired to ``node``'s publishers and an ``~/estimate`` subscription
    (answers are matched in ``node``'s executor callbacks, and a timer polls the client every
    ``poll_period_s``: delayed sends, retries, timeouts)."""
    base = node_name.rstrip("/")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
    goal_pub = node.create_publisher(String, goal_topic, latched)
    reset_pub = node.create_publisher(Empty, f"{base}/reset", 10)
    request_pub = node.create_publisher(Header, f"{base}/request", 100)

    def publish_goal(goal: str) -> None:
        goal_pub.publish(String(data=goal))

    def publish_reset() -> None:
        reset_pub.publish(Empty())

    def publish_request(stamp_ns: int, request_id: str) -> None:
        msg = Header(frame_id=request_id)
        _ns_to_stamp(stamp_ns, msg)
        request_pub.publish(msg)

    def clock() -> int:
        if steady_timeouts:
            return time.monotonic_ns()
        return int(node.get_clock().now().nanoseconds)

    client = RewardClient(publish_goal=publish_goal, publish_reset=publish_reset, publish_request=publish_request,
                          clock=clock, settings=settings, on_answer=on_answer)

    def on_estimate(msg: String) -> None:
        client.handle_estimate(msg.data)

    node.create_subscription(String, f"{base}/estimate", on_estimate,
                             QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
    # delayed sends, retries and timeouts; on the steady clock so a paused /clock cannot stall them
    def poll() -> None:
        client.poll()

    node.create_timer(poll_period_s, poll, clock=Clock(clock_type=ClockType.STEADY_TIME))
    return client


__all__ = ["create_ros_reward_client"]
