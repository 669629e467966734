"""ROS 2 glue: cameras and a goal in; progress, reward, reasoning and a JSON estimate out.

Thin by design: parameters become plain config objects, image callbacks only store raw
messages, and a :class:`RewardWorker` thread does the selection, decoding and inference. All
topics are relative (remap them); the node's own outputs live under ``~/``.

Shutdown is safe at any point: every publish happens under one lock with a "closed" flag that
:meth:`RewardNode.shutdown` sets first, and a publish that fails because a signal shut the
context down meanwhile is dropped, not raised. SIGTERM (what ``ros2 launch`` sends after its
SIGINT grace period) is handled by the node itself on every distro (rclpy installs a SIGTERM
handler only from Jazzy on): it shuts the context down at once, as SIGINT does.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
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

from sole_r1_ros.backends.wrappers import PerStepSeedModel
from sole_r1_ros.core.goal import GoalError
from sole_r1_ros.core.scorer import build_scorer
from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.errors import SoleR1Error
from sole_r1_ros.messages.image_codec import stamp_to_ns
from sole_r1_ros.messages.serialized import SerializedMessage, SerializedMessageError, header_stamp_ns
from sole_r1_ros.pipeline.frame_buffer import FrameSelector
from sole_r1_ros.pipeline.health import Health, Level, camera_health, goal_health, inference_health
from sole_r1_ros.pipeline.rate_limit import PerKeyRateLimit
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.pipeline.worker import RewardWorker
from sole_r1_ros.ros.diagnostics import SteadyTicker, to_array
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
LOG_THROTTLE_S = 2.0  # repeated warnings of one kind: at most one line per this many seconds
JPEG_QUALITY = 95


def _held_note(held: int) -> str:
    return f" (+{held} more like it since the last line)" if held else ""


class RewardNode(Node):
    """The SOLE-R1 reward node."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._last_goal_error = ""
        self._publish_lock = threading.Lock()
        self._closed = False
        self._throttle = PerKeyRateLimit(LOG_THROTTLE_S)
        self._wall_last_frame: dict[str, float] = {}
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
        # a seeded node gives each model call its own seed, as score_bag does (one seed for every
        # call would correlate the sampling noise of all steps)
        scorer.model = PerStepSeedModel(scorer.model)
        self.model_info = scorer.model.describe()
        self.get_logger().info(f"model loaded: {self.model_info}")

        self.pub_progress = self.create_publisher(Float32, "~/progress", 10)
        self.pub_reward = self.create_publisher(Float32, "~/reward", 10)
        self.pub_reasoning = self.create_publisher(String, "~/reasoning", 10)
        self.pub_estimate = self.create_publisher(String, "~/estimate", 10)
        self.pub_composite = self.create_publisher(CompressedImage, "~/composite", 2)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.selector = FrameSelector.create(self.roles, worker_settings.buffer_size,
                                             max_bytes=worker_settings.buffer_max_mb << 20)
        self.worker = RewardWorker(
            scorer, self.selector, config=worker_settings, reward_config=reward_settings,
            clock=lambda: self.get_clock().now().nanoseconds, emit=self._publish,
            live=True, want_composite=self._composite_wanted,
        )
        image_qos = self._image_qos()
        self.camera_topics: dict[str, str] = {}
        for role, camera in cameras.items():
            msg_type = TRANSPORTS[camera.transport]
            self.create_subscription(msg_type, camera.topic, self._image_callback(role, msg_type), image_qos, raw=True)
            self.camera_topics[role] = self.resolve_topic_name(camera.topic)
            self.get_logger().info(f"camera '{role}': {self.camera_topics[role]} ({camera.transport})")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.create_subscription(String, "goal", self._on_goal_msg, latched)
        self.create_subscription(Empty, "~/reset", self._on_reset, 10)
        self.create_subscription(Header, "~/request", self._on_request, 50)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics = SteadyTicker(self, node.diagnostics_period, self._publish_diagnostics)

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
        wall_last = self._wall_last_frame

        def callback(data: bytes) -> None:
            wall_last[role] = time.monotonic()
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
        try:
            started = self.worker.set_goal(goal)
        except GoalError as err:
            self._last_goal_error = str(err)
            kind = re.sub(r"\d+", "N", str(err))  # one throttle per kind of rejection
            held = self._throttle.take(f"goal rejected: {kind}", time.monotonic())
            if held is not None:  # a flood of bad goals is counted in /diagnostics, not logged line by line
                self.get_logger().warning(f"goal from {source} rejected: {err}{_held_note(held)}")
            return False
        if started:
            self.get_logger().info(f"goal from {source}: '{self.worker.goal}' (episode {self.worker.episode_id})")
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
    def _composite_wanted(self) -> bool:
        """Build ``~/composite`` only while someone subscribes (it costs nothing otherwise)."""
        try:
            return not self._closed and self.pub_composite.get_subscription_count() > 0
        except Exception:  # noqa: BLE001 - the publisher is gone: shutting down
            return False

    def _composite_msg(self, result: RewardResult) -> CompressedImage | None:
        image, e = result.composite, result.estimate
        if image is None or e is None:
            return None
        fmt = self.settings.composite_format
        buffer = io.BytesIO()
        if fmt == "png":
            image.save(buffer, format="PNG", compress_level=1)
        else:
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        msg = CompressedImage(format=fmt, data=buffer.getvalue())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(e.stamp_ns, 1_000_000_000)
        msg.header.frame_id = e.episode_id
        return msg

    def _publish(self, result: RewardResult) -> None:
        """Called from the worker thread (and, for an overflowing request or a rejected goal, an
        executor callback), once per result, always in the same order: progress, reward,
        reasoning, estimate, then the composite. Safe against shutdown at any point."""
        composite = self._composite_msg(result)
        with self._publish_lock:
            if self._closed or not self.context.ok():
                return
            try:
                e = result.estimate
                if result.publishes_progress and e is not None:
                    self.pub_progress.publish(Float32(data=float(e.progress)))
                    self.pub_reward.publish(Float32(data=float(result.reward if result.reward is not None
                                                               else math.nan)))
                    self.pub_reasoning.publish(String(data=result.reasoning))
                self.pub_estimate.publish(String(data=result.to_json()))
                if composite is not None:
                    self.pub_composite.publish(composite)
            except Exception:
                if self.context.ok():
                    raise
                return  # a signal shut the context down between two publishes: nothing more goes out
        if result.status not in (EstimateStatus.OK, EstimateStatus.FIRST_FRAME, EstimateStatus.GOAL_REJECTED):
            held = self._throttle.take(f"estimate {result.status_text}", time.monotonic())
            if held is not None:
                self.get_logger().warning(f"estimate {result.status_text}: {result.detail}{_held_note(held)}")

    def health(self) -> list[Health]:
        """Every diagnostic status, as plain data."""
        now_ns = self.get_clock().now().nanoseconds
        wall = time.monotonic()
        stats = self.worker.stats_snapshot()
        max_age_ns = int(self.worker.config.max_frame_age_s * 1e9)
        goal, episode = self.worker.goal, self.worker.episode_id
        cameras = self.selector.stats()
        out = [
            # asked each time: a server backend's request counters and latency are live
            Health("model", Level.OK, "loaded", self.worker.scorer.model.describe()),
            inference_health(stats, goal=goal, episode_id=episode, queue_depth=self.worker.queue_depth(),
                             running=self.worker.running,
                             reference_frames=int(cameras[self.selector.reference_role]["received"])),
            goal_health(stats, goal=goal, episode_id=episode, now_wall_s=wall),
        ]
        for role, cam in cameras.items():
            topic = self.camera_topics[role]
            last = self._wall_last_frame.get(role)
            offset = stats.clock_offset_s.get(role)
            out.append(camera_health(
                role, cam, topic=topic, publishers=self.count_publishers(topic), now_ns=now_ns,
                max_age_ns=max_age_ns, wall_silence_s=None if last is None else wall - last,
                clock_mismatch=bool(stats.clock_mismatch) and offset is not None
                and abs(offset) > self.worker.clock_mismatch_s))
        return out

    def _publish_diagnostics(self) -> None:
        for key, held in self._throttle.overdue(time.monotonic()):
            self.get_logger().warning(f"{key}: {held} more like it since the last line")
        if not self.context.ok():
            return
        try:  # built outside the lock, so the inference thread's publishing never waits for it
            array = to_array(self, self.health(), str(self.model_info.get("device", "")))
        except Exception:
            if self.context.ok():
                raise
            return  # a signal shut the context down while the graph was queried
        with self._publish_lock:
            if self._closed or not self.context.ok():
                return
            try:
                self.pub_diagnostics.publish(array)
            except Exception:
                if self.context.ok():
                    raise

    def shutdown(self) -> None:
        """Publish nothing more, then stop the worker (a generation in flight is cut at the next
        token); the node can then be destroyed."""
        with self._publish_lock:
            self._closed = True
        self._diagnostics.stop()
        if not self.worker.stop(timeout_s=1.5):
            self.get_logger().error("inference thread did not stop within 1.5 s; exiting without it")


class SigtermShutdown:
    """SIGTERM shuts the rclpy context down at once, like SIGINT, on every distro.

    rclpy installs a SIGTERM handler only from Jazzy on; on Humble SIGTERM would kill the
    process without cleanup. A Python-level handler alone runs only when the main thread returns
    to the interpreter, which ``spin`` does only when a callback is due, so the signal number
    also goes to a wakeup socket that a watcher thread blocks on. Install after ``rclpy.init``,
    from the main thread; :meth:`close` restores what was there before.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._old_handler = signal.signal(signal.SIGTERM, self._on_signal)
        self._thread = threading.Thread(target=self._watch, name="sole_r1_sigterm", daemon=True)
        self._thread.start()

    @staticmethod
    def _on_signal(_signum: int, _frame: object) -> None:
        rclpy.try_shutdown()

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data or 0 in data:  # closed, or close()'s sentinel
                return
            if signal.SIGTERM in data:
                rclpy.try_shutdown()

    def close(self) -> None:
        """Restore the previous handler and wakeup fd; end the watcher."""
        signal.signal(signal.SIGTERM, self._old_handler)
        signal.set_wakeup_fd(self._old_fd)
        try:
            self._writer.send(b"\0")
        except OSError:
            pass
        self._thread.join(1.0)
        self._reader.close()
        self._writer.close()


def _init_rclpy(args: list[str] | None) -> None:
    """``rclpy.init`` with rclpy's own SIGINT handler only (SIGTERM is :class:`SigtermShutdown`'s)."""
    try:
        from rclpy.signals import SignalHandlerOptions
    except ImportError:  # pragma: no cover - rclpy without signal handler options
        rclpy.init(args=args)
        return
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.SIGINT)  # type: ignore[attr-defined]
    except TypeError:  # pragma: no cover - an init without the option
        rclpy.init(args=args)


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run sole_r1_ros reward_node``). Exit code 1 if the node cannot start."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    _init_rclpy(args)
    sigterm = SigtermShutdown()
    node: RewardNode | None = None
    code = 0
    try:
        node = RewardNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (SoleR1Error, ParameterException, NameValidationException, ValueError) as err:
        if rclpy.ok():
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
            code = 1
    except Exception:
        # A signal can shut the context down between two executor iterations (rclpy then raises
        # RCLError "context is not valid" from building the next wait set instead of
        # ExternalShutdownException, ros2/ros2cli#854), or while the model loads (creating the
        # publishers then fails). That is a requested shutdown, not a crash.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
        sigterm.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
