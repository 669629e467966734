"""Per-camera ring buffers of raw (undecoded) image messages and multi-view alignment.

All times are integer nanoseconds passed in by the caller; nothing here reads a
clock, so the classes work with sim time and are deterministic under test.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sole_r1_ros.core.status import EstimateStatus, status_text

__all__ = [
    "CameraBuffer",
    "FrameSelector",
    "Selection",
    "SelectionFailure",
    "StampedFrame",
]


@dataclass(frozen=True)
class StampedFrame:
    """A raw image message with its header stamp and local receive time."""

    stamp_ns: int
    msg: Any
    received_ns: int


class CameraBuffer:
    """Thread-safe bounded buffer of one camera's frames, kept sorted by stamp.

    Counters:
      * ``received``: every frame pushed.
      * ``evicted``: frames pushed out by capacity (including a late frame older than a
        full buffer's oldest, which is discarded on arrival).
      * ``dropped_by_overflow``: evicted frames newer than anything the consumer has
        looked at via :meth:`latest` / :meth:`nearest`, i.e. frames it never had a chance
        to consider. A non-zero rate means the buffer is shorter than the worker period.
      * ``out_of_order``: frames whose stamp is older than the newest buffered stamp
        (they are still inserted in stamp order).
    """

    def __init__(self, maxlen: int, *, name: str = "", max_bytes: int | None = None) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.name = name
        self.max_bytes = max_bytes
        self._bytes = 0
        self._frames: deque[StampedFrame] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._considered_ns: int | None = None
        self._last_received_ns: int | None = None
        self.received = 0
        self.evicted = 0
        self.dropped_by_overflow = 0
        self.out_of_order = 0

    @property
    def maxlen(self) -> int:
        """Capacity in frames."""
        return self._frames.maxlen  # type: ignore[return-value]

    @property
    def last_received_ns(self) -> int | None:
        """Receive time of the most recently pushed frame (survives :meth:`clear`)."""
        with self._lock:
            return self._last_received_ns

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def push(self, stamp_ns: int, msg: object, received_ns: int) -> StampedFrame:
        """Store a raw message; returns the stored :class:`StampedFrame`."""
        frame = StampedFrame(int(stamp_ns), msg, int(received_ns))
        with self._lock:
            self._insert(frame)
        return frame

    def push_frame(self, frame: StampedFrame) -> None:
        """Store an already built :class:`StampedFrame`."""
        with self._lock:
            self._insert(frame)

    def _insert(self, frame: StampedFrame) -> None:
        self._insert_bounded(frame)
        if self.max_bytes is not None:
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                self._evict(self._frames.popleft(), buffered=True)

    def _insert_bounded(self, frame: StampedFrame) -> None:
        frames = self._frames
        self.received += 1
        if self._last_received_ns is None or frame.received_ns >= self._last_received_ns:
            self._last_received_ns = frame.received_ns
        if not frames or frame.stamp_ns >= frames[-1].stamp_ns:
            if len(frames) == frames.maxlen:
                self._evict(frames.popleft(), buffered=True)
            frames.append(frame)
            self._bytes += _size_of(frame)
            return
        self.out_of_order += 1
        if len(frames) == frames.maxlen:
            if frame.stamp_ns < frames[0].stamp_ns:
                self._evict(frame, buffered=False)
                return
            self._evict(frames.popleft(), buffered=True)
        index = bisect_right(frames, frame.stamp_ns, key=_stamp_of)
        frames.insert(index, frame)
        self._bytes += _size_of(frame)

    def _evict(self, frame: StampedFrame, *, buffered: bool) -> None:
        if buffered:
            self._bytes -= _size_of(frame)
        self.evicted += 1
        if self._considered_ns is None or frame.stamp_ns > self._considered_ns:
            self.dropped_by_overflow += 1

    def _mark(self, frame: StampedFrame | None) -> StampedFrame | None:
        if frame is not None and (self._considered_ns is None or frame.stamp_ns > self._considered_ns):
            self._considered_ns = frame.stamp_ns
        return frame

    def latest(self) -> StampedFrame | None:
        """The frame with the newest stamp, or None when empty."""
        with self._lock:
            return self._mark(self._frames[-1] if self._frames else None)

    def peek_latest(self) -> StampedFrame | None:
        """Like :meth:`latest` but does not count the frame as considered."""
        with self._lock:
            return self._frames[-1] if self._frames else None

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> StampedFrame | None:
        """The frame closest to ``stamp_ns`` if within ``tolerance_ns`` (ties prefer the newer)."""
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        with self._lock:
            return self._mark(self._nearest(stamp_ns, tolerance_ns))

    def _nearest(self, stamp_ns: int, tolerance_ns: int) -> StampedFrame | None:
        frames = self._frames
        if not frames:
            return None
        index = bisect_right(frames, stamp_ns, key=_stamp_of)
        best: StampedFrame | None = None
        best_delta = tolerance_ns + 1
        for i in (index - 1, index):
            if 0 <= i < len(frames):
                delta = abs(frames[i].stamp_ns - stamp_ns)
                if delta <= best_delta:
                    best, best_delta = frames[i], delta
        return best if best_delta <= tolerance_ns else None

    def snapshot(self) -> list[StampedFrame]:
        """A copy of the buffered frames, oldest stamp first."""
        with self._lock:
            return list(self._frames)

    def clear(self) -> None:
        """Drop all buffered frames (counters and ``last_received_ns`` are kept)."""
        with self._lock:
            self._frames.clear()
            self._bytes = 0

    def stats(self) -> dict[str, Any]:
        """Counters and buffer state for diagnostics."""
        with self._lock:
            frames = self._frames
            return {
                "len": len(frames),
                "bytes": self._bytes,
                "maxlen": frames.maxlen,
                "received": self.received,
                "evicted": self.evicted,
                "dropped_by_overflow": self.dropped_by_overflow,
                "out_of_order": self.out_of_order,
                "oldest_stamp_ns": frames[0].stamp_ns if frames else None,
                "newest_stamp_ns": frames[-1].stamp_ns if frames else None,
                "last_received_ns": self._last_received_ns,
            }


def _size_of(frame: StampedFrame) -> int:
    data = getattr(frame.msg, "data", None)
    return len(data) if data is not None else 0


def _stamp_of(frame: StampedFrame) -> int:
    return frame.stamp_ns


@dataclass(frozen=True)
class Selection:
    """Time-aligned frames, one per role; ``stamp_ns`` is the reference frame's stamp."""

    stamp_ns: int
    frames: dict[str, StampedFrame] = field(default_factory=dict)

    ok = True

    @property
    def max_skew_ns(self) -> int:
        """Largest |stamp difference| between any view and the reference."""
        return max((abs(f.stamp_ns - self.stamp_ns) for f in self.frames.values()), default=0)


@dataclass(frozen=True)
class SelectionFailure:
    """Why no aligned set could be selected: ``status`` (``no_frames``, ``view_missing``,
    ``not_aligned`` or ``stale``) and the camera ``role`` it is about, if one.

    ``stamp_ns`` is the reference frame the step was about (None when none was found: no frame,
    or none near a requested stamp) and ``views`` the stamp of each camera's frame that was
    looked at (the frame found, or the newest one of the camera that failed).
    """

    status: EstimateStatus
    role: str | None
    detail: str = ""
    stamp_ns: int | None = None
    views: dict[str, int] = field(default_factory=dict)

    ok = False

    @property
    def reason(self) -> str:
        """The wire form, e.g. ``"stale:wrist"``."""
        return status_text(self.status, self.role)


class FrameSelector:
    """Aligns the views of several cameras; the first role is the reference camera."""

    def __init__(self, buffers: Mapping[str, CameraBuffer]) -> None:
        if not buffers:
            raise ValueError("FrameSelector needs at least one camera role")
        self._buffers: dict[str, CameraBuffer] = dict(buffers)
        self._roles = tuple(self._buffers)

    @classmethod
    def create(cls, roles: Iterable[str], maxlen: int, *, max_bytes: int | None = None) -> FrameSelector:
        """Build a selector with one fresh :class:`CameraBuffer` per role (each bounded by
        ``maxlen`` frames and, optionally, ``max_bytes`` of message data)."""
        roles = list(roles)
        if len(set(roles)) != len(roles):
            raise ValueError(f"duplicate roles in {roles}")
        return cls({role: CameraBuffer(maxlen, name=role, max_bytes=max_bytes) for role in roles})

    @property
    def roles(self) -> tuple[str, ...]:
        """Camera roles, the reference camera first."""
        return self._roles

    @property
    def reference_role(self) -> str:
        """The role whose stamps the other views are aligned to."""
        return self._roles[0]

    def buffer(self, role: str) -> CameraBuffer:
        """The :class:`CameraBuffer` of ``role`` (raises KeyError for an unknown role)."""
        return self._buffers[role]

    __getitem__ = buffer

    def push(self, role: str, stamp_ns: int, msg: object, received_ns: int) -> StampedFrame:
        """Store a raw message for ``role`` (raises KeyError for an unknown role)."""
        return self._buffers[role].push(stamp_ns, msg, received_ns)

    def clear(self) -> None:
        """Clear every camera's buffer."""
        for buf in self._buffers.values():
            buf.clear()

    def select(
        self,
        target_ns: int | None,
        *,
        tolerance_ns: int,
        max_age_ns: int | None,
        now_ns: int,
    ) -> Selection | SelectionFailure:
        """Pick one frame per role aligned to the reference camera.

        ``target_ns`` None uses the reference camera's newest frame, otherwise its
        frame nearest ``target_ns`` within ``tolerance_ns``. Every other role gets its
        frame nearest the reference stamp within ``tolerance_ns``. A frame is stale when
        ``now_ns - stamp_ns > max_age_ns`` (``max_age_ns`` None disables the check).
        Failure reasons: ``no_frames``, ``view_missing:<role>``, ``stale:<role>``,
        ``not_aligned:<role>``.
        """
        return self._select(target_ns, tolerance_ns, max_age_ns, now_ns)

    def _select(self, target_ns: int | None, tolerance_ns: int, max_age_ns: int | None,
                now_ns: int) -> Selection | SelectionFailure:
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        latest = {role: buf.peek_latest() for role, buf in self._buffers.items()}
        newest = {role: f.stamp_ns for role, f in latest.items() if f is not None}
        ref_role = self.reference_role
        if not newest:
            return _no_frames()
        ref_buf = self._buffers[ref_role]
        ref = None
        if latest[ref_role] is not None:
            ref = ref_buf.latest() if target_ns is None else ref_buf.nearest(target_ns, tolerance_ns)
        about = ref.stamp_ns if ref is not None else None  # stamp_ns is always a real frame's
        for role in self._roles:
            if latest[role] is None:
                return _with_frames(_view_missing(role), about, newest)
        if ref is None:
            return _with_frames(self._unaligned(ref_role, latest[ref_role], target_ns, tolerance_ns, max_age_ns,
                                                now_ns), None, {ref_role: newest[ref_role]})
        if _is_stale(ref, max_age_ns, now_ns):
            return _with_frames(_stale(ref_role, ref, max_age_ns, now_ns), ref.stamp_ns, {ref_role: ref.stamp_ns})

        frames = {ref_role: ref}
        for role in self._roles[1:]:
            frame = self._buffers[role].nearest(ref.stamp_ns, tolerance_ns)
            seen = {r: f.stamp_ns for r, f in frames.items()}
            if frame is None:
                return _with_frames(self._unaligned(role, latest[role], ref.stamp_ns, tolerance_ns, max_age_ns,
                                                    now_ns), ref.stamp_ns, {**seen, role: newest[role]})
            if _is_stale(frame, max_age_ns, now_ns):
                return _with_frames(_stale(role, frame, max_age_ns, now_ns), ref.stamp_ns,
                                    {**seen, role: frame.stamp_ns})
            frames[role] = frame
        return Selection(ref.stamp_ns, frames)

    @staticmethod
    def _unaligned(
        role: str,
        newest: StampedFrame | None,
        target_ns: int | None,
        tolerance_ns: int,
        max_age_ns: int | None,
        now_ns: int,
    ) -> SelectionFailure:
        if newest is None:
            return _view_missing(role)
        if _is_stale(newest, max_age_ns, now_ns):
            return _stale(role, newest, max_age_ns, now_ns)
        return SelectionFailure(
            EstimateStatus.NOT_ALIGNED, role,
            f"camera '{role}' has no frame within {tolerance_ns} ns of {target_ns} "
            f"(newest stamp {newest.stamp_ns})",
        )

    def reference_failure(self, *, max_age_ns: int, now_ns: int) -> SelectionFailure | None:
        """Why no step can come due, if the reference camera is the cause: no camera has a frame,
        the reference camera has none, or its newest frame is stale. None otherwise (another
        camera missing or unaligned is for a step to report). ``views``: every camera's newest stamp."""
        newest = self.newest_stamps()
        ref_role = self.reference_role
        ref = self._buffers[ref_role].peek_latest()
        if not newest:
            return _no_frames()
        if ref is None:
            return _with_frames(_view_missing(ref_role), None, newest)
        if _is_stale(ref, max_age_ns, now_ns):
            return _with_frames(_stale(ref_role, ref, max_age_ns, now_ns), ref.stamp_ns, newest)
        return None

    def newest_stamps(self) -> dict[str, int]:
        """Each camera's newest buffered stamp (cameras with no frame left out)."""
        latest = {role: buf.peek_latest() for role, buf in self._buffers.items()}
        return {role: f.stamp_ns for role, f in latest.items() if f is not None}

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-role :meth:`CameraBuffer.stats`."""
        return {role: buf.stats() for role, buf in self._buffers.items()}


ViewAligner = FrameSelector


def _with_frames(failure: SelectionFailure, stamp_ns: int | None, views: dict[str, int]) -> SelectionFailure:
    return SelectionFailure(failure.status, failure.role, failure.detail, stamp_ns, views)


def _is_stale(frame: StampedFrame, max_age_ns: int | None, now_ns: int) -> bool:
    return max_age_ns is not None and now_ns - frame.stamp_ns > max_age_ns


def _no_frames() -> SelectionFailure:
    return SelectionFailure(EstimateStatus.NO_FRAMES, None, "no camera has buffered any frame")


def _view_missing(role: str) -> SelectionFailure:
    return SelectionFailure(EstimateStatus.VIEW_MISSING, role, f"camera '{role}' has no buffered frames")


def _stale(role: str, frame: StampedFrame, max_age_ns: int | None, now_ns: int) -> SelectionFailure:
    return SelectionFailure(
        EstimateStatus.STALE, role,
        f"camera '{role}' frame stamp {frame.stamp_ns} is {now_ns - frame.stamp_ns} ns old (max {max_age_ns})",
    )
