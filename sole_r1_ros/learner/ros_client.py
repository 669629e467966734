"""rclpy glue for :class:`~sole_r1_ros.learner.client.RewardClient`: topics in, topics out.

Publishes ``goal`` (std_msgs/String, transient local, like the node's subscription), the node's
``~/reset`` (std_msgs/Empty) and ``~/request`` (std_msgs/Header: stamp = frame to score,
frame_id = request id) and subscribes to its ``~/estimate``. ``node_name`` is the reward node's
fully qualified name (``/sole_r1_reward`` by default), so its private topics resolve.

Clocks: a steady-clock timer polls the client (delayed sends, retries, timeouts), so the polling
itself never waits for ``/clock``. What the client measures its timeouts, send delays and retry
delays on (and stamps ``sent_ns``/``received_ns`` with) is ``steady_timeouts``:

- ``True`` (the default): the monotonic wall clock. A paused or dead simulation clock cannot
  stall them: a lost answer still times out after ``timeout_s`` of wall time.
- ``False``: the node's ROS clock (sim time under ``use_sim_time``), so ``timeout_s`` is
  simulated seconds. While ``/clock`` is paused nothing times out and no delayed request or
  retry goes out; if ``/clock`` stops for good, a lost answer never times out.
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
    steady_timeouts: bool = True,
    poll_period_s: float = 0.01,
) -> RewardClient:
    """A :class:`RewardClient` wired to ``node``'s publishers and an ``~/estimate`` subscription
    (answers are matched in ``node``'s executor callbacks, and a timer polls the client every
    ``poll_period_s``: delayed sends, retries, timeouts). ``steady_timeouts``: measure the
    client's timeouts and delays on the monotonic clock (default) rather than ROS time; see the
    module docstring."""
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
    # delayed sends, retries and timeouts. The timer is steady, so poll() runs while /clock is
    # paused; whether a timeout is then due depends on clock() above (ROS time with
    # steady_timeouts=False: a paused or dead /clock stalls timeouts and delays)
    def poll() -> None:
        client.poll()

    node.create_timer(poll_period_s, poll, clock=Clock(clock_type=ClockType.STEADY_TIME))
    return client


__all__ = ["create_ros_reward_client"]
