"""Small stamped ``sensor_msgs/Image`` messages for the worker's tests (a flat colour, rgb8)."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from sole_r1_ros.messages.image_codec import encode_image


def stamped_rgb(stamp_ns: int, value: int = 100, shape: tuple[int, int] = (48, 64)) -> Image:
    """A ``shape`` (height, width) rgb8 image of grey level ``value``, stamped ``stamp_ns``."""
    msg = Image(**encode_image(np.full((*shape, 3), value, dtype=np.uint8), "rgb8"))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg
