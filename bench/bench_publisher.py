#!/usr/bin/env python3
"""Camera publisher for the benchmarks (its own process / DDS participant, like a camera driver).

Publishes ``--cameras`` topics ``/bench/cam<i>`` at ``--rate`` Hz, RELIABLE, either raw
``sensor_msgs/Image`` (rgb8) or ``sensor_msgs/CompressedImage`` (JPEG). Messages are built once
(a few distinct frames per camera, cycled) so the publisher's own cost stays small; each tick only
rewrites the header: ``stamp`` = wall clock, ``frame_id`` = the per-camera sequence number.

Prints ``ready`` when every topic has ``--wait-subscribers`` subscribers, then ``published <n>``
per camera at the end (``--duration`` seconds, or until SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sole_r1_ros.messages.image_codec import encode_compressed, encode_image


def frame(cam: int, index: int, width: int, height: int) -> np.ndarray:
    """A deterministic, JPEG-realistic frame: gradient + noise + a moving square."""
    rng = np.random.default_rng(cam * 1000 + index)
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (xs * 255 // max(width - 1, 1)).astype(np.uint8)
    rgb[..., 1] = (ys * 255 // max(height - 1, 1)).astype(np.uint8)
    rgb[..., 2] = (40 + 90 * cam) % 256
    noise = rng.integers(0, 24, size=(height, width, 1), dtype=np.uint8)
    rgb = rgb // 2 + np.broadcast_to(noise, rgb.shape)
    size = max(8, min(width, height) // 5)
    x0 = (index * 37) % max(width - size, 1)
    y0 = (index * 23 + 17 * cam) % max(height - size, 1)
    rgb[y0:y0 + size, x0:x0 + size] = (255, 200, 0)
    return rgb


def build_messages(cam: int, transport: str, width: int, height: int, distinct: int) -> list:
    out = []
    for i in range(distinct):
        rgb = frame(cam, i, width, height)
        if transport == "raw":
            fields = encode_image(rgb, "rgb8")
            msg = Image(encoding=fields["encoding"], height=fields["height"], width=fields["width"],
                        step=fields["step"], is_bigendian=fields["is_bigendian"])
            msg.data = fields["data"]
        else:
            fmt, data = encode_compressed(rgb, "jpeg", 90)
            msg = CompressedImage(format=fmt)
            msg.data = data
        out.append(msg)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument(
        "--duration", type=float, default=10.0, help="seconds of publishing after 'ready' (0 = until signalled)"
    )
    ap.add_argument("--distinct", type=int, default=8, help="distinct frames per camera (cycled)")
    ap.add_argument("--wait-subscribers", type=int, default=1)
    ap.add_argument("--wait-timeout", type=float, default=60.0)
    ap.add_argument("--depth", type=int, default=10)
    args = ap.parse_args(argv)

    rclpy.init()
    node = rclpy.create_node("sole_r1_bench_publisher")
    qos = QoSProfile(depth=args.depth, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    msg_type = Image if args.transport == "raw" else CompressedImage
    pubs = [node.create_publisher(msg_type, f"/bench/cam{i}", qos) for i in range(args.cameras)]
    msgs = [build_messages(i, args.transport, args.width, args.height, args.distinct) for i in range(args.cameras)]
    sizes = [len(m[0].data) for m in msgs]
    print(f"message bytes per camera: {sizes}", flush=True)

    stop = False

    def _stop(*_a):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    deadline = time.monotonic() + args.wait_timeout
    while not stop and any(p.get_subscription_count() < args.wait_subscribers for p in pubs):
        if time.monotonic() > deadline:
            print("timeout waiting for subscribers", flush=True)
            return 2
        time.sleep(0.05)
    time.sleep(0.5)  # let discovery settle (reliable writers need the reader's ack channel)
    print("ready", flush=True)

    period = 1.0 / args.rate
    sent = [0] * args.cameras
    start = time.monotonic()
    tick = 0
    while not stop:
        target = start + tick * period
        if args.duration and target - start >= args.duration:
            break
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now_ns = time.time_ns()
        for i, pub in enumerate(pubs):
            msg = msgs[i][tick % args.distinct]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
            msg.header.frame_id = str(sent[i])
            pub.publish(msg)
            sent[i] += 1
        tick += 1
    elapsed = time.monotonic() - start
    late = max(0.0, elapsed - tick * period)
    print(f"published {' '.join(map(str, sent))} in {elapsed:.2f}s (late {late:.2f}s)", flush=True)
    time.sleep(1.0)  # let reliable resends drain
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
