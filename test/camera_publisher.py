#!/usr/bin/env python3
"""A deterministic multi-camera publisher for the reward-node integration tests.

Runs as its own process (its own DDS participant), like a real camera driver:

    python test/camera_publisher.py --roles external wrist --rate 15 --transport raw \
        --topics /rig/scene /rig/wrist --stamp-log /tmp/stamps.txt

Every tick publishes one frame per role. Frame ``i`` of role ``r`` is a fixed function of
``(r, i)`` (a colour gradient with a moving square), so runs are reproducible. Stamps:

- default: the publisher's clock at the tick (wall time), plus the role's ``--offsets-ms``;
- ``--sim-time``: ``--sim-start + i / rate`` seconds (deterministic), plus the offset;
- ``--clock``: like ``--sim-time`` and also publishes ``/clock`` (rosgraph_msgs/Clock) with the
  tick's sim time just before the frames, so a ``use_sim_time`` node sees that time.

``--stamp-log FILE`` gets one line ``<role> <stamp_ns>`` per frame (written and flushed just before
the tick's frames are published),
so a test knows exactly which stamps exist. ``--count K`` publishes K ticks and then waits until
every reliable subscriber has acknowledged them before exiting. Progress lines go to stdout:
``waiting for subscribers``, ``publishing``, ``done <ticks>``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from sole_r1_ros.messages.image_codec import encode_compressed, encode_image


def make_frame(role_index: int, index: int, width: int, height: int) -> np.ndarray:
    """Deterministic RGB frame ``index`` of camera ``role_index``."""
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (xs * 255 // max(width - 1, 1)).astype(np.uint8)
    rgb[..., 1] = (ys * 255 // max(height - 1, 1)).astype(np.uint8)
    rgb[..., 2] = (40 + 90 * role_index) % 256
    size = max(4, min(width, height) // 5)
    x0 = (index * 3) % max(width - size, 1)
    y0 = (index * 2 + 17 * role_index) % max(height - size, 1)
    rgb[y0:y0 + size, x0:x0 + size] = (255, 255 - 60 * role_index % 256, 0)
    return rgb


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roles", nargs="+", default=["external", "wrist"], help="camera roles, reference first")
    ap.add_argument("--topics", nargs="+", default=None,
                    help="one topic per role (default cameras/<role>/image_raw[/compressed])")
    ap.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    ap.add_argument("--transports", nargs="+", choices=("raw", "compressed"), default=None,
                    help="one transport per role (overrides --transport), e.g. raw compressed")
    ap.add_argument("--encoding", default="rgb8", help="raw transport: sensor_msgs/Image encoding")
    ap.add_argument("--format", default="jpeg", help="compressed transport: jpeg | png")
    ap.add_argument("--rate", type=float, default=15.0, help="ticks per second")
    ap.add_argument("--count", type=int, default=0, help="ticks to publish (0 = until interrupted)")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--offsets-ms", nargs="+", type=float, default=None,
                    help="per-role stamp offset in ms (default 0 for all)")
    ap.add_argument("--sim-time", action="store_true", help="stamp frames with deterministic sim time")
    ap.add_argument("--clock", action="store_true", help="also publish /clock (implies --sim-time)")
    ap.add_argument("--sim-start", type=float, default=1000.0, help="sim time of the first tick, seconds")
    ap.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    ap.add_argument("--depth", type=int, default=10, help="publisher history depth")
    ap.add_argument("--wait-subscribers", type=int, default=1,
                    help="wait until every image topic has this many subscribers before publishing")
    ap.add_argument("--wait-timeout", type=float, default=30.0)
    ap.add_argument("--stamp-log", default="", help="file receiving '<role> <stamp_ns>' per published frame")
    ap.add_argument("--frame-id-prefix", default="", help="header.frame_id = prefix + role")
    args = ap.parse_args(argv)
    if args.transports is None:
        args.transports = [args.transport] * len(args.roles)
    if len(args.transports) != len(args.roles):
        ap.error("--transports needs one transport per role")
    if args.topics is None:
        args.topics = [f"cameras/{role}/image_raw" + ("/compressed" if t == "compressed" else "")
                       for role, t in zip(args.roles, args.transports)]
    if len(args.topics) != len(args.roles):
        ap.error("--topics needs one topic per role")
    if args.offsets_ms is None:
        args.offsets_ms = [0.0] * len(args.roles)
    if len(args.offsets_ms) != len(args.roles):
        ap.error("--offsets-ms needs one value per role")
    if args.clock:
        args.sim_time = True
    if args.rate <= 0:
        ap.error("--rate must be > 0")
    return args


class CameraPublisher(Node):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("test_camera_publisher")
        self.args = args
        qos = QoSProfile(
            depth=args.depth, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE,
            reliability=ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        )
        self.types = [Image if t == "raw" else CompressedImage for t in args.transports]
        self.pubs = [self.create_publisher(t, topic, qos) for t, topic in zip(self.types, args.topics)]
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if args.clock else None
        self.log = open(args.stamp_log, "a", encoding="utf-8") if args.stamp_log else None  # noqa: SIM115
        # Pre-encode a cycle of frames so publishing stays cheap at any rate.
        self.cycle = 16
        self.payloads = [[self._encode(r, i) for i in range(self.cycle)] for r in range(len(args.roles))]
        self.tick = 0

    def _encode(self, role_index: int, index: int) -> dict:
        a = self.args
        rgb = make_frame(role_index, index, a.width, a.height)
        if a.transports[role_index] == "raw":
            return encode_image(rgb, a.encoding)
        fmt, data = encode_compressed(rgb, a.format)
        return {"format": fmt, "data": data}

    def image_topics_matched(self) -> bool:
        return all(pub.get_subscription_count() >= self.args.wait_subscribers for pub in self.pubs)

    def publish_tick(self) -> None:
        a = self.args
        if a.sim_time:
            base_ns = int(round(a.sim_start * 1e9)) + int(round(self.tick * 1e9 / a.rate))
        else:
            base_ns = self.get_clock().now().nanoseconds
        if self.clock_pub is not None:
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(base_ns, 1_000_000_000)
            self.clock_pub.publish(clock)
        msgs = []
        for r, role in enumerate(a.roles):
            stamp_ns = base_ns + int(round(a.offsets_ms[r] * 1e6))
            fields = self.payloads[r][self.tick % self.cycle]
            msg = self.types[r](**fields)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            msg.header.frame_id = a.frame_id_prefix + role
            msgs.append((role, stamp_ns, msg))
        if self.log is not None:  # logged before sending: a reader never sees a frame it can't look up
            self.log.writelines(f"{role} {stamp_ns}\n" for role, stamp_ns, _ in msgs)
            self.log.flush()
        for pub, (_, _, msg) in zip(self.pubs, msgs):
            pub.publish(msg)
        self.tick += 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rclpy.init(args=None)
    node = CameraPublisher(args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        print("waiting for subscribers", flush=True)
        deadline = time.monotonic() + args.wait_timeout
        while args.wait_subscribers > 0 and not node.image_topics_matched():
            if time.monotonic() > deadline:
                print(f"no subscribers on {args.topics} after {args.wait_timeout} s", flush=True)
                return 2
            executor.spin_once(timeout_sec=0.05)
        print("publishing", flush=True)
        period = 1.0 / args.rate
        next_tick = time.monotonic()
        while rclpy.ok() and (args.count <= 0 or node.tick < args.count):
            node.publish_tick()
            next_tick += period
            # spin (not sleep) so /clock, discovery and reliable acks keep flowing
            while (remaining := next_tick - time.monotonic()) > 0:
                executor.spin_once(timeout_sec=remaining)
        if args.count > 0 and node.tick >= args.count:  # finished, not interrupted
            if args.reliability == "reliable":
                for pub in node.pubs:
                    pub.wait_for_all_acked(Duration(seconds=10))
            print(f"done {node.tick}", flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.log is not None:
            node.log.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
