"""The rclpy glue's clocks: a paused or dead sim clock must not stall timeouts (unless asked for)."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

from sole_r1_ros.learner import ros_client
from sole_r1_ros.learner.client import ClientSettings, Outcome, RewardAnswer, RewardClient


class FakeRosNode:
    """Just enough of ``rclpy.node.Node``: records publishers, the subscription and the poll timer;
    its ROS clock stands still (a paused or dead ``/clock``) until ``ros_now`` is moved."""

    def __init__(self) -> None:
        self.ros_now = 0
        self.published: dict[str, list[Any]] = {}
        self.timers: list[Callable[[], None]] = []

    def create_publisher(self, _type: Any, topic: str, _qos: Any) -> Any:
        sent = self.published.setdefault(topic, [])
        return types.SimpleNamespace(publish=sent.append)

    def create_subscription(self, *_args: Any) -> None:
        return None

    def create_timer(self, _period: float, callback: Callable[[], None], **_kw: Any) -> None:
        self.timers.append(callback)

    def get_clock(self) -> Any:
        return types.SimpleNamespace(now=lambda: types.SimpleNamespace(nanoseconds=self.ros_now))

    def tick(self) -> None:
        for callback in self.timers:
            callback()


@pytest.fixture
def steady(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The monotonic clock the glue reads, under the test's control."""
    fake = types.SimpleNamespace(now=10**12)
    monkeypatch.setattr(ros_client, "time", types.SimpleNamespace(monotonic_ns=lambda: fake.now))
    return fake


def _client(node: FakeRosNode, delivered: list[RewardAnswer], **kw: Any) -> RewardClient:
    client = ros_client.create_ros_reward_client(node, settings=ClientSettings(timeout_s=1.0),  # type: ignore[arg-type]
                                                 on_answer=delivered.append, **kw)
    client.begin_episode("reach")
    client.request(100)
    assert len(node.published["/sole_r1_reward/request"]) == 1
    return client


def test_timeouts_run_on_the_steady_clock_by_default(steady: types.SimpleNamespace) -> None:
    """A lost answer times out while the sim clock is paused (or its publisher is gone)."""
    node = FakeRosNode()
    delivered: list[RewardAnswer] = []
    client = _client(node, delivered)
    steady.now += int(0.5e9)
    node.tick()
    assert client.in_flight() == 1
    steady.now += int(0.6e9)
    node.tick()
    assert [a.outcome for a in delivered] == [Outcome.TIMEOUT] and client.in_flight() == 0


def test_ros_time_timeouts_stand_still_with_the_sim_clock(steady: types.SimpleNamespace) -> None:
    """``steady_timeouts=False``: timeouts follow ROS time (sim time), so nothing times out while
    ``/clock`` stands still, however much wall time passes."""
    node = FakeRosNode()
    delivered: list[RewardAnswer] = []
    client = _client(node, delivered, steady_timeouts=False)
    steady.now += int(100e9)
    node.tick()
    assert delivered == [] and client.in_flight() == 1
    node.ros_now += int(1.1e9)
    node.tick()
    assert [a.outcome for a in delivered] == [Outcome.TIMEOUT]
