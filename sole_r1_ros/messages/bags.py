"""Read and write rosbag2 (mcap and sqlite3) with the pure-Python ``rosbags`` library."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from sole_r1_ros.errors import InputError

IMAGE_TYPES = {"sensor_msgs/msg/Image": "raw", "sensor_msgs/msg/CompressedImage": "compressed"}
STRING_TYPE = "std_msgs/msg/String"
FLOAT32_TYPE = "std_msgs/msg/Float32"

TYPESTORE = get_typestore(Stores.LATEST)


class BagError(InputError):
    """A bag that is missing, corrupt, truncated or lacks what was asked for."""


@dataclass(frozen=True)
class BagMessage:
    """One deserialized message and its log (receive) time."""

    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any


class BagReader:
    """A rosbag2 directory (or a single .mcap/.db3 file's parent) opened for reading."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag '{self.path}' does not exist")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as err:  # rosbags raises several types for bad bags
            raise BagError(f"cannot open bag '{self.path}': {type(err).__name__}: {err}") from err
        self.topics: dict[str, str] = {c.topic: c.msgtype for c in self._reader.connections}
        self.counts: dict[str, int] = {}
        for c in self._reader.connections:
            self.counts[c.topic] = self.counts.get(c.topic, 0) + c.msgcount

    def __enter__(self) -> BagReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the bag; errors while closing are swallowed (never masks the error that led here)."""
        try:
            self._reader.close()
        except Exception:  # noqa: BLE001 - closing a broken bag must not mask the real error
            pass

    @property
    def start_ns(self) -> int:
        """Log time of the bag's first message, ns."""
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        """Log time of the bag's last message, ns."""
        return int(self._reader.end_time)

    def topics_of_type(self, msgtypes: Iterable[str]) -> list[str]:
        """The bag's topics whose message type is one of ``msgtypes``, sorted."""
        wanted = set(msgtypes)
        return sorted(t for t, m in self.topics.items() if m in wanted)

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Deserialized messages of ``topics`` in log-time order; raises :class:`BagError` on corruption."""
        wanted = set(topics)
        missing = wanted - set(self.topics)
        if missing:
            raise BagError(f"bag '{self.path}' has no topic(s) {sorted(missing)}; it has {sorted(self.topics)}")
        connections = [c for c in self._reader.connections if c.topic in wanted]
        try:
            for connection, log_time, raw in self._reader.messages(connections=connections):
                try:
                    msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
                except Exception as err:
                    raise BagError(
                        f"corrupt message on '{connection.topic}' at {log_time}: {type(err).__name__}: {err}"
                    ) from err
                yield BagMessage(connection.topic, connection.msgtype, int(log_time), msg)
        except BagError:
            raise
        except Exception as err:  # truncated files surface as various errors
            raise BagError(f"cannot read bag '{self.path}': {type(err).__name__}: {err}") from err


class BagWriter:
    """Write messages to a new rosbag2 directory (mcap by default)."""

    def __init__(self, path: str | Path, *, storage: str = "mcap") -> None:
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"storage must be one of {sorted(plugins)}")
        self._writer = Writer(Path(path), version=8, storage_plugin=plugins[storage])
        self._writer.open()
        self._connections: dict[str, Connection] = {}

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, topic: str, msgtype: str, log_time_ns: int, msg: object) -> None:
        """Serialize ``msg`` (a ``rosbags`` message of type ``msgtype``) onto ``topic`` at ``log_time_ns``."""
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = connection
        self._writer.write(connection, log_time_ns, TYPESTORE.serialize_cdr(msg, msgtype))

    def write_string(self, topic: str, log_time_ns: int, text: str) -> None:
        """Write a ``std_msgs/String``."""
        self.write(topic, STRING_TYPE, log_time_ns, TYPESTORE.types[STRING_TYPE](data=text))

    def write_float32(self, topic: str, log_time_ns: int, value: float) -> None:
        """Write a ``std_msgs/Float32``."""
        self.write(topic, FLOAT32_TYPE, log_time_ns, TYPESTORE.types[FLOAT32_TYPE](data=float(value)))

    def close(self) -> None:
        """Finish the bag (writes its metadata)."""
        self._writer.close()
