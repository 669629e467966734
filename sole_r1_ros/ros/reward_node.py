"""ROS 2 glue: cameras and a goal in; progress, reward, reasoning and a JSON estimate out.

Thin by design: parameters become plain config objects, image callbacks only store raw
messages, and a :class:`RewardWorker` thread does the selection, decoding and inference. All
topics are relative (remap them); the node's own outputs live under ``~/``.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty, Float32, Header, String

from sole_r1_ros.core.goal import GoalError
from sole_r1_ros.core.scorer import build_scorer
from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.errors import SoleR1Error
from sole_r1_ros.messages.image_codec import stamp_to_ns
from sole_r1_ros.messages.serialized import SerializedMessage, SerializedMessageError, header_stamp_ns
from sole_r1_ros.pipeline.frame_buffer import FrameSelector
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.pipeline.worker import RewardWorker
from sole_r1_ros.ros.parameters import declare_group
from sole_r1_ros.settings.groups import (
    CameraSettings,
    DecodingSettings,
    ModelSettings,
    NodeSettings,
    RewardSettings,
    WorkerSettings,
)

NODE_NAME = "sole_r1_reward"
TRANSPORTS = {"raw": Image, "compressed": CompressedImage}


class RewardNode(Node):
    """The SOLE-R1 reward node."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._last_goal_error = ""
        node = declare_group(self, NodeSettings)
        model = declare_group(self, ModelSettings)
        decoding = declare_group(self, DecodingSettings)
        worker_settings = declare_group(self, WorkerSettings)
        reward_settings = declare_group(self, RewardSettings)
        self.settings = node
        self.roles = tuple(node.cameras)
        cameras = {role: declare_group(self, CameraSettings, role=role,
                                       defaults={"topic": f"cameras/{role}/image_raw"}) for role in self.roles}

        self.get_logger().info(f"loading model '{model.path or '<built-in default>'}' ({model.backend}) ...")
        scorer = build_scorer(model, decoding)
        self.model_info = scorer.model.describe()
        self.get_logger().info(f"model loaded: {self.model_info}")

        self.pub_progress = self.create_publisher(Float32, "~/progress", 10)
        self.pub_reward = self.create_publisher(Float32, "~/reward", 10)
        self.pub_reasoning = self.create_publisher(String, "~/reasoning", 10)
        self.pub_estimate = self.create_publisher(String, "~/estimate", 10)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.selector = FrameSelector.create(self.roles, worker_settings.buffer_size,
                                             max_bytes=worker_settings.buffer_max_mb << 20)
        self.worker = RewardWorker(
            scorer, self.selector, config=worker_settings, reward_config=reward_settings,
            clock=lambda: self.get_clock().now().nanoseconds, emit=self._publish,
        )
        image_qos = self._image_qos()
        for role, camera in cameras.items():
            msg_type = TRANSPORTS[camera.transport]
            self.create_subscription(msg_type, camera.topic, self._image_callback(role, msg_type), image_qos, raw=True)
            self.get_logger().info(f"camera '{role}': {self.resolve_topic_name(camera.topic)} ({camera.transport})")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.create_subscription(String, "goal", self._on_goal_msg, latched)
        self.create_subscription(Empty, "~/reset", self._on_reset, 10)
        self.create_subscription(Header, "~/request", self._on_request, 50)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(node.diagnostics_period, self._publish_diagnostics)

        if node.goal:
            self._apply_goal(node.goal, source="parameter")
        self.worker.start()
        self.get_logger().info(
            f"ready: mode={worker_settings.mode} period={worker_settings.period_s}s cameras={list(self.roles)}")

    # --- parameters ----------------------------------------------------------------------
    def _image_qos(self) -> QoSProfile:
        reliable = self.settings.image_qos_reliability == "reliable"
        return QoSProfile(
            depth=self.settings.image_qos_depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=qos_profile_sensor_data.durability,
        )

    def _on_set_parameters(self, params: Sequence[Parameter[Any]]) -> SetParametersResult:
        for param in params:
            if param.name == "goal" and not self._apply_goal(param.value, source="parameter"):
                return SetParametersResult(successful=False, reason=self._last_goal_error)
        return SetParametersResult(successful=True)

    # --- inputs --------------------------------------------------------------------------
    def _image_callback(self, role: str, msg_type: type) -> Callable[[bytes], None]:
        """Raw subscription callback: store the serialized bytes and the header stamp; only the
        frames that get scored are deserialized (in the inference thread)."""
        push = self.worker.push_frame
        clock = self.get_clock()
        deserialize = functools.partial(deserialize_message, message_type=msg_type)

        def callback(data: bytes) -> None:
            try:
                stamp = header_stamp_ns(data)
            except SerializedMessageError as err:
                self.worker.reject_frame(role, "bad_message", str(err))
                return
            push(role, stamp, SerializedMessage(data, deserialize), clock.now().nanoseconds)

        return callback

    def _apply_goal(self, goal: object, *, source: str) -> bool:
        """Start an episode for a new goal (the worker validates it, once); a bad goal is logged
        and refused, never raised into the executor."""
        if isinstance(goal, str) and goal.strip() and goal.strip() == self.worker.goal:
            return True
        try:
            text = self.worker.set_goal(goal)
        except GoalError as err:
            self._last_goal_error = str(err)
            self.get_logger().warning(f"goal from {source} rejected: {err}")
            return False
        self.get_logger().info(f"goal from {source}: '{text}' (episode {self.worker.episode_id})")
        return True

    def _on_goal_msg(self, msg: String) -> None:
        self._apply_goal(msg.data, source="topic")

    def _on_reset(self, _msg: Empty) -> None:
        if self.worker.reset():
            self.get_logger().info(f"episode reset: {self.worker.episode_id}")
        else:
            self.get_logger().warning("reset ignored: no goal yet")

    def _on_request(self, msg: Header) -> None:
        self.worker.request(stamp_to_ns(msg.stamp), msg.frame_id)

    # --- outputs -------------------------------------------------------------------------
    def _publish(self, result: RewardResult) -> None:
        """Called from the worker thread, once per result, always in the same order."""
        if not self.context.ok():
            return  # SIGINT shut the context down while this step ran: publishing would raise
        e = result.estimate
        if result.publishes_progress and e is not None:
            self.pub_progress.publish(Float32(data=float(e.progress)))
            self.pub_reward.publish(Float32(data=float(result.reward if result.reward is not None else math.nan)))
            self.pub_reasoning.publish(String(data=result.reasoning))
        self.pub_estimate.publish(String(data=result.to_json()))
        if result.status not in (EstimateStatus.OK, EstimateStatus.FIRST_FRAME):
            self.get_logger().warning(f"estimate {result.status_text}: {result.detail}", throttle_duration_sec=2.0)

    def _publish_diagnostics(self) -> None:
        now = self.get_clock().now()
        now_ns = now.nanoseconds
        stats = self.worker.stats
        max_age_ns = int(self.worker.config.max_frame_age_s * 1e9)
        array = DiagnosticArray()
        array.header.stamp = now.to_msg()
        name = self.get_fully_qualified_name()

        def status(level: bytes, suffix: str, message: str, values: dict[str, Any]) -> DiagnosticStatus:
            return DiagnosticStatus(
                level=level, name=f"{name}: {suffix}", message=message,
                hardware_id=str(self.model_info.get("device", "")),
                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
            )

        array.status.append(status(DiagnosticStatus.OK, "model", "loaded", dict(self.model_info)))
        level = DiagnosticStatus.OK
        if stats.model_errors or stats.parse_failures:
            level = DiagnosticStatus.WARN
        array.status.append(status(level, "inference", stats.last_failure or "ok", {
            "goal": self.worker.goal or "<none>", "episode_id": self.worker.episode_id, "busy": stats.busy,
            "estimates": stats.estimates, "last_latency_s": f"{stats.last_latency_s:.3f}",
            "parse_failures": stats.parse_failures, "model_errors": stats.model_errors,
            "queue_depth": self.worker.queue_depth(), "queue_overflows": stats.queue_overflows,
            "time_jumps": stats.time_jumps,
            **{f"selection_failures.{k}": v for k, v in stats.selection_failures.items()},
            **{f"decode_errors.{k}": v for k, v in stats.decode_errors.items()},
        }))
        stale = set(self.selector.stale_roles(now_ns, max_age_ns))
        for role, cam in self.selector.stats().items():
            level = DiagnosticStatus.WARN if role in stale else DiagnosticStatus.OK
            message = "stale: no recent frames" if role in stale else "ok"
            array.status.append(status(level, f"camera {role}", message, cam))
        self.pub_diagnostics.publish(array)

    def shutdown(self) -> None:
        """Stop the worker; a generation in flight is cut at the next token."""
        if not self.worker.stop(timeout_s=1.5):
            self.get_logger().error("inference thread did not stop within 1.5 s; exiting without it")


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run sole_r1_ros reward_node``). Exit code 1 if the node cannot start."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node: RewardNode | None = None
    code = 0
    try:
        node = RewardNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (SoleR1Error, ParameterException, NameValidationException, ValueError) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        code = 1
    except Exception:
        # A signal can shut the context down between two executor iterations; rclpy then raises
        # RCLError ("context is not valid") from building the next wait set instead of
        # ExternalShutdownException (ros2/ros2cli#854). That is a requested shutdown, not a crash.
        if node is None or rclpy.ok():
            raise
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
