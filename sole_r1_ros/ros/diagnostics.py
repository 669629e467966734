"""``/diagnostics`` for the reward node: plain :class:`~sole_r1_ros.pipeline.health.Health`
statuses to a ``DiagnosticArray``, published on a steady (wall) timer, so it keeps going when
``/clock`` stops (a bag player killed under ``use_sim_time``), exactly when something is wrong."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.node import Node

from sole_r1_ros.pipeline.health import Health


def to_array(node: Node, statuses: Iterable[Health], hardware_id: str) -> DiagnosticArray:
    """One ``DiagnosticArray`` stamped with the node clock (sim time when it is used)."""
    array = DiagnosticArray()
    array.header.stamp = node.get_clock().now().to_msg()
    name = node.get_fully_qualified_name()
    for health in statuses:
        array.status.append(DiagnosticStatus(
            level=bytes([int(health.level)]), name=f"{name}: {health.name}", message=health.message,
            hardware_id=hardware_id, values=[KeyValue(key=k, value=str(v)) for k, v in health.values.items()],
        ))
    return array


class SteadyTicker:
    """Calls ``callback`` every ``period_s`` of steady time: an rclpy timer on a steady clock
    where ``create_timer`` takes one (Humble and later), else a daemon thread."""

    def __init__(self, node: Node, period_s: float, callback: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.timer: Any = None
        try:
            self.timer = node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))
        except TypeError:  # an rclpy without the clock argument
            def loop() -> None:
                while not self._stop.wait(period_s):
                    callback()

            self._thread = threading.Thread(target=loop, name="sole_r1_diagnostics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop ticking (the timer is destroyed with its node)."""
        self._stop.set()
        if self.timer is not None:
            try:
                self.timer.cancel()
            except Exception:  # noqa: BLE001 - the context is already shut down: the timer is gone with it
                pass
        if self._thread is not None:
            self._thread.join(1.0)


__all__ = ["SteadyTicker", "to_array"]
