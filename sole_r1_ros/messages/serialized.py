"""Serialized (CDR) messages kept undecoded until a frame is actually scored.

Camera subscriptions take messages raw: the executor thread only copies bytes and reads the
header stamp from a fixed offset; the inference thread deserializes the few frames it scores.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sole_r1_ros.errors import InputError

M = TypeVar("M")

_LE = struct.Struct("<iI")
_BE = struct.Struct(">iI")


class SerializedMessageError(InputError):
    """Bytes too short or with an unknown CDR encapsulation to hold a header stamp."""


def header_stamp_ns(data: bytes) -> int:
    """``header.stamp`` in ns of a CDR message whose first field is a ``std_msgs/Header``
    (sensor_msgs/Image, CompressedImage): 4 bytes of encapsulation, then int32 sec, uint32 nanosec."""
    if len(data) < 12:
        raise SerializedMessageError(f"serialized message has {len(data)} bytes; too short for a header")
    kind = data[1]
    if data[0] != 0 or kind not in (0, 1, 2, 3):
        raise SerializedMessageError(f"unknown CDR encapsulation {bytes(data[:2]).hex()}")
    sec: int
    nanosec: int
    sec, nanosec = (_LE if kind & 1 else _BE).unpack_from(data, 4)
    return sec * 1_000_000_000 + nanosec


@dataclass(frozen=True)
class SerializedMessage(Generic[M]):
    """Raw message bytes plus the function that turns them into the message object."""

    data: bytes
    deserialize: Callable[[bytes], M]

    def message(self) -> M:
        """The deserialized message (deserialized anew on every call)."""
        return self.deserialize(self.data)


def materialize(msg: SerializedMessage[M] | M) -> M:
    """The message object, deserializing it first if it is still serialized."""
    return msg.message() if isinstance(msg, SerializedMessage) else msg
