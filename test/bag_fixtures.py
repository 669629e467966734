"""Small real rosbag2 files for tests, written with the project's own BagWriter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sole_r1_ros.messages.bags import TYPESTORE, BagWriter
from sole_r1_ros.messages.image_codec import encode_compressed, encode_image

T0 = 1_700_000_000_000_000_000
PERIOD = 66_666_667  # 15 Hz


def _header(t: int, frame_id: str):
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id=frame_id)


def frame(i: int, role: str) -> np.ndarray:
    """A deterministic frame: a bright square that moves with ``i``."""
    rgb = np.zeros((120, 160, 3), dtype=np.uint8)
    rgb[:, :] = (30, 40, 50) if role == "external" else (60, 50, 40)
    x = 5 + 4 * i
    rgb[40:70, x : x + 30] = (220, 30, 30)
    return rgb


def write_bag(
    path: Path, *, n: int = 30, roles: tuple[str, ...] = ("external", "wrist"), storage: str = "mcap",
    goal: str | None = "push the red block into the green zone", encoding: str = "rgb8",
    compressed: bool = False, ground_truth: bool = True, goal_topic: str = "/goal",
    goal_changes: Sequence[tuple[int, str]] = (), strings: Mapping[str, str] | None = None,
) -> Path:
    """``n`` frames per camera role at 15 Hz from ``T0``; ``goal`` on ``goal_topic`` at ``T0`` and
    ``goal_changes`` (frame index, new goal) on it later; ``strings``: more std_msgs/String topics
    (topic → text, written at ``T0``)."""
    Image = TYPESTORE.types["sensor_msgs/msg/Image"]
    CompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
    with BagWriter(path, storage=storage) as w:
        if goal is not None:
            w.write_string(goal_topic, T0, goal)
        for topic, text in (strings or {}).items():
            w.write_string(topic, T0, text)
        changes = dict(goal_changes)
        for i in range(n):
            t = T0 + i * PERIOD
            if i in changes:
                w.write_string(goal_topic, t, changes[i])
            for role in roles:
                rgb = frame(i, role)
                if compressed:
                    fmt, data = encode_compressed(rgb, "png")
                    msg = CompressedImage(header=_header(t, role), format=fmt, data=np.frombuffer(data, np.uint8))
                    w.write(
                        f"/camera/{role}/image_raw/compressed", "sensor_msgs/msg/CompressedImage", t + 2_000_000, msg
                    )
                else:
                    d = encode_image(rgb, "rgb8")
                    msg = Image(header=_header(t, role), height=d["height"], width=d["width"], encoding=encoding,
                                is_bigendian=0, step=d["step"], data=np.frombuffer(d["data"], np.uint8))
                    w.write(f"/camera/{role}/image_raw", "sensor_msgs/msg/Image", t + 2_000_000, msg)
            if ground_truth:
                w.write_float32("/ground_truth/progress", t, i / max(1, n - 1))
    return path
