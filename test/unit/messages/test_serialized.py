"""Raw (serialized) camera messages: stamp read without deserializing, decoded only when scored."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from sole_r1_ros.messages.image_codec import decode_any, encode_compressed, encode_image
from sole_r1_ros.messages.serialized import SerializedMessage, SerializedMessageError, header_stamp_ns, materialize


@pytest.mark.parametrize("stamp", [(0, 0), (1_700_000_000, 999_999_999), (-5, 10), (2**31 - 1, 1)])
def test_stamp_from_cdr_header(stamp: tuple[int, int]) -> None:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    msg = Image(**encode_image(rgb, "rgb8"))
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    data = serialize_message(msg)
    assert header_stamp_ns(data) == stamp[0] * 1_000_000_000 + stamp[1]
    lazy = SerializedMessage(data, functools.partial(deserialize_message, message_type=Image))
    assert np.array_equal(decode_any(materialize(lazy)), rgb)


def test_compressed_stamp_and_decode() -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[2:6, 2:6] = (10, 200, 30)
    fmt, data = encode_compressed(rgb, "png")
    msg = CompressedImage(format=fmt, data=data)
    msg.header.stamp.sec = 42
    raw = serialize_message(msg)
    assert header_stamp_ns(raw) == 42_000_000_000
    lazy = SerializedMessage(raw, functools.partial(deserialize_message, message_type=CompressedImage))
    assert np.array_equal(decode_any(materialize(lazy)), rgb)


@pytest.mark.parametrize("data", [b"", b"\x00\x01\x00", b"\x07\x01\x00\x00" + b"\x00" * 8, b"\x00\x09" + b"\x00" * 10])
def test_bad_bytes_are_a_clear_error(data: bytes) -> None:
    with pytest.raises(SerializedMessageError):
        header_stamp_ns(data)


def test_plain_messages_pass_through() -> None:
    msg = Image()
    assert materialize(msg) is msg
