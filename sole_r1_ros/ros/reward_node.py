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
from collections.abc import Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
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

from sole_r1_ros.backends.transformers_backend import ModelLoadError
from sole_r1_ros.pipeline.frame_buffer import FrameSelector
from sole_r1_ros.messages.image_codec import stamp_to_ns
from sole_r1_ros.settings import ScorerSettings, build_scorer
from sole_r1_ros.core.protocol import ProtocolError
from sole_r1_ros.core.reward import RewardConfig
from sole_r1_ros.pipeline.worker import RewardResult, RewardWorker, WorkerConfig
from sole_r1_ros.core.scorer import GoalError, validate_goal
from sole_r1_ros.messages.serialized import SerializedMessage, SerializedMessageError, header_stamp_ns

NODE_NAME = "sole_r1_reward"
TRANSPORTS = {"raw": Image, "compressed": CompressedImage}

# name -> (default, description); every parameter is declared with a descriptor.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "cameras": (["external", "wrist"], "camera roles, in composite row order (first = top row and time reference)"),
    "image_qos.reliability": ("best_effort", "best_effort (sensor data; matches any camera driver) or reliable"),
    "image_qos.depth": (10, "subscription queue depth for images (raise it for reliable multi-camera rigs)"),
    "buffer_size": (30, "raw frames kept per camera (memory bound)"),
    "buffer_max_mb": (256, "message data kept per camera, MiB (bounds memory for huge frames)"),
    "goal": ("", "initial task description; also settable at runtime (starts a new episode)"),
    "max_goal_chars": (1000, "longer goals are rejected"),
    "mode": ("rate", "rate: score the freshest frames every `period` s; request: score on ~/request"),
    "period": (1.0, "rate mode: seconds between estimates (0 = back to back)"),
    "align_tolerance": (0.05, "max stamp difference (s) between a camera's frame and the reference"),
    "max_frame_age": (2.0, "rate mode: frames older than this (s, node clock) are stale"),
    "request_queue_size": (16, "request mode: pending requests beyond this are answered with a failure"),
    "time_jump_back": (1.0, "s; a reference stamp this far behind the newest (bag loop) starts a new episode"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "model.path": ("", "checkpoint directory; empty = the built-in default model"),
    "model.device": ("auto", "auto | cpu | cuda | cuda:N"),
    "model.dtype": ("auto", "auto | bfloat16 | float16 | float32"),
    "model.attn_implementation": ("", "'' (default) | sdpa | eager | flash_attention_2"),
    "model.trust_remote_code": (False, "allow the checkpoint's own Python code (off unless reviewed)"),
    "model.prompt_config": ("", "protocol YAML; empty = SOLE-R1-8B's"),
    "model.from_zero": (False, "show first + current frame only, without previous progress"),
    "model.greedy": (False, "deterministic decoding instead of the release's sampling"),
    "model.max_new_tokens": (0, "0 = protocol default (200)"),
    "model.temperature": (0.0, "0 = protocol default (1.0)"),
    "model.top_p": (0.0, "0 = protocol default (0.9)"),
    "model.top_k": (0, "0 = protocol default (50)"),
    "model.seed": (-1, "sampling seed; -1 = unseeded"),
    "model.min_pixels": (0, "0 = processor default"),
    "model.max_pixels": (0, "0 = processor default"),
    "model.cpu_threads": (0, "torch threads when running on CPU; 0 = torch default"),
    "model.linear_patch_embedding": (True, "run the vision Conv3d patch embedding as the equivalent GEMM (faster)"),
    "reward.mode": ("progress", "progress (paper) | delta | potential"),
    "reward.gamma": (0.99, "discount for potential-based shaping"),
    "reward.smoothing": ("none", "none | ema | median"),
    "reward.ema_alpha": (0.5, "EMA weight of the newest progress"),
    "reward.median_window": (3, "running-median window"),
    "reward.success_threshold": (-1.0, "progress at/above which the bonus is added; < 0 disables"),
    "reward.success_bonus": (0.0, "bonus added at/above the success threshold"),
    "reward.clip": (False, "clip rewards to [clip_min, clip_max]"),
    "reward.clip_min": (-1.0, "lower reward bound when clipping"),
    "reward.clip_max": (1.0, "upper reward bound when clipping"),
}
RUNTIME_PARAMETERS = frozenset({"goal"})


def _camera_defaults(role: str) -> dict[str, tuple[Any, str]]:
    return {
        f"camera.{role}.topic": (f"cameras/{role}/image_raw", f"image topic of the '{role}' camera (relative; remap it)"),
        f"camera.{role}.transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)"),
    }


class RewardNode(Node):
    """The SOLE-R1 reward node."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self._declare(name, default, description)
        self.roles = tuple(self.get_parameter("cameras").value)
        if not self.roles or len(set(self.roles)) != len(self.roles):
            raise ValueError(f"parameter 'cameras' must list distinct roles, got {list(self.roles)}")
        for role in self.roles:
            for name, (default, description) in _camera_defaults(role).items():
                self._declare(name, default, description)
        p = self._value
        transports = {}
        for role in self.roles:
            transport = p(f"camera.{role}.transport")
            if transport not in TRANSPORTS:
                raise ValueError(f"camera.{role}.transport must be one of {sorted(TRANSPORTS)}, got '{transport}'")
            transports[role] = transport

        settings = ScorerSettings(
            model_path=p("model.path"), device=p("model.device"), dtype=p("model.dtype"),
            attn_implementation=p("model.attn_implementation"), trust_remote_code=p("model.trust_remote_code"),
            prompt_config=p("model.prompt_config"), from_zero=p("model.from_zero"), greedy=p("model.greedy"),
            max_new_tokens=p("model.max_new_tokens"), temperature=p("model.temperature"), top_p=p("model.top_p"),
            top_k=p("model.top_k"), seed=p("model.seed"), min_pixels=p("model.min_pixels"),
            max_pixels=p("model.max_pixels"), cpu_threads=p("model.cpu_threads"),
            linear_patch_embedding=p("model.linear_patch_embedding"),
        )
        threshold = p("reward.success_threshold")
        reward_config = RewardConfig(
            mode=p("reward.mode"), gamma=p("reward.gamma"), smoothing=p("reward.smoothing"),
            ema_alpha=p("reward.ema_alpha"), median_window=p("reward.median_window"),
            success_threshold=threshold if threshold >= 0 else None, success_bonus=p("reward.success_bonus"),
            clip_min=p("reward.clip_min") if p("reward.clip") else None,
            clip_max=p("reward.clip_max") if p("reward.clip") else None,
        )
        worker_config = WorkerConfig(
            mode=p("mode"), period_s=p("period"), align_tolerance_s=p("align_tolerance"),
            max_frame_age_s=p("max_frame_age"), request_queue_size=p("request_queue_size"),
            time_jump_back_s=p("time_jump_back"),
        )
        self.max_goal_chars = p("max_goal_chars")

        self.get_logger().info(f"loading model '{settings.model_path or '<built-in default>'}' ...")
        scorer = build_scorer(settings)
        self.model_info = scorer.model.describe() if hasattr(scorer.model, "describe") else {}
        self.get_logger().info(f"model loaded: {self.model_info}")

        self.pub_progress = self.create_publisher(Float32, "~/progress", 10)
        self.pub_reward = self.create_publisher(Float32, "~/reward", 10)
        self.pub_reasoning = self.create_publisher(String, "~/reasoning", 10)
        self.pub_estimate = self.create_publisher(String, "~/estimate", 10)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.selector = FrameSelector.create(self.roles, p("buffer_size"), max_bytes=p("buffer_max_mb") << 20)
        self.worker = RewardWorker(
            scorer, self.selector, config=worker_config, reward_config=reward_config,
            clock=lambda: self.get_clock().now().nanoseconds, emit=self._publish,
        )
        image_qos = self._image_qos()
        for role in self.roles:
            topic = p(f"camera.{role}.topic")
            msg_type = TRANSPORTS[transports[role]]
            self.create_subscription(msg_type, topic, self._image_callback(role, msg_type), image_qos, raw=True)
            self.get_logger().info(f"camera '{role}': {self.resolve_topic_name(topic)} ({transports[role]})")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.create_subscription(String, "goal", self._on_goal_msg, latched)
        self.create_subscription(Empty, "~/reset", self._on_reset, 10)
        self.create_subscription(Header, "~/request", self._on_request, 50)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(p("diagnostics_period"), self._publish_diagnostics)

        initial_goal = p("goal")
        if initial_goal:
            self._apply_goal(initial_goal, source="parameter")
        self.worker.start()
        self.get_logger().info(f"ready: mode={worker_config.mode} period={worker_config.period_s}s cameras={list(self.roles)}")

    # --- parameters ----------------------------------------------------------------------
    def _declare(self, name: str, default: Any, description: str) -> None:
        descriptor = ParameterDescriptor(description=description, read_only=name not in RUNTIME_PARAMETERS)
        self.declare_parameter(name, default, descriptor)

    def _value(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _image_qos(self) -> QoSProfile:
        reliability = self._value("image_qos.reliability")
        if reliability not in ("best_effort", "reliable"):
            raise ValueError(f"image_qos.reliability must be best_effort or reliable, got '{reliability}'")
        qos = QoSProfile(
            depth=self._value("image_qos.depth"),
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
            durability=qos_profile_sensor_data.durability,
        )
        return qos

    def _on_set_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name == "goal":
                try:
                    validate_goal(param.value, max_chars=self.max_goal_chars)
                except GoalError as err:
                    return SetParametersResult(successful=False, reason=str(err))
                self._apply_goal(param.value, source="parameter")
        return SetParametersResult(successful=True)

    # --- inputs --------------------------------------------------------------------------
    def _image_callback(self, role: str, msg_type: type):  # noqa: ANN202 - a closure per camera
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

    def _apply_goal(self, goal: str, *, source: str) -> bool:
        try:
            text = validate_goal(goal, max_chars=self.max_goal_chars)
        except GoalError as err:
            self.get_logger().warning(f"goal from {source} rejected: {err}")
            return False
        if text == self.worker.goal:
            return True
        self.worker.set_goal(text)
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
        if result.status not in ("ok", "first_frame"):
            self.get_logger().warning(f"estimate {result.status}: {result.detail}", throttle_duration_sec=2.0)

    def _publish_diagnostics(self) -> None:
        now = self.get_clock().now()
        now_ns = now.nanoseconds
        stats = self.worker.stats
        max_age_ns = int(self._value("max_frame_age") * 1e9)
        array = DiagnosticArray()
        array.header.stamp = now.to_msg()
        name = self.get_fully_qualified_name()

        def status(level: bytes, suffix: str, message: str, values: dict[str, Any]) -> DiagnosticStatus:
            return DiagnosticStatus(
                level=level, name=f"{name}: {suffix}", message=message, hardware_id=str(self.model_info.get("device", "")),
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


def main(args: Sequence[str] | None = None) -> int:
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
    except (ModelLoadError, ProtocolError, ValueError) as err:
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
