"""What happened to one scoring attempt: the ``status`` field of ``~/estimate``."""

from __future__ import annotations

from enum import Enum


class EstimateStatus(str, Enum):
    """Outcome of one scoring attempt. On the wire a per-camera status carries the camera role
    after a colon (``stale:wrist``); see :func:`status_text`."""

    FIRST_FRAME = "first_frame"  # the episode's first frame: defined 0 %, no model call
    OK = "ok"  # the model answered with a readable progress
    PARSE_FAILED = "parse_failed"  # the model answered, unreadably: previous progress carried forward
    ERROR = "error"  # the model (or the step) failed: no progress, episode not advanced
    QUEUE_OVERFLOW = "queue_overflow"  # request mode: the queue was full
    NO_GOAL = "no_goal"  # nothing to score against
    NO_FRAMES = "no_frames"  # no camera has buffered anything
    VIEW_MISSING = "view_missing"  # a camera has no buffered frame
    NOT_ALIGNED = "not_aligned"  # a camera has no frame close enough to the reference stamp
    STALE = "stale"  # the newest frames are older than max_frame_age
    DECODE_ERROR = "decode_error"  # a frame could not be decoded
    GOAL_REJECTED = "goal_rejected"  # a new goal was refused (empty, too long, control characters): episode unchanged
    REQUEST_REFUSED = "request_refused"  # a ~/request reached a node in rate mode: nothing was scored for it
    OUT_OF_ORDER = "out_of_order"  # a requested frame older than the episode's last scored one: episode unchanged

    def __str__(self) -> str:
        return self.value

    @property
    def has_progress(self) -> bool:
        """True when an estimate with this status carries a progress value to publish."""
        return self in _WITH_PROGRESS

    @property
    def is_failure(self) -> bool:
        """True when no model answer could be used (the step was not scored)."""
        return self not in _WITH_PROGRESS


_WITH_PROGRESS = frozenset({EstimateStatus.FIRST_FRAME, EstimateStatus.OK, EstimateStatus.PARSE_FAILED})


def status_text(status: EstimateStatus, role: str | None = None) -> str:
    """The wire form: ``stale:wrist`` for a per-camera status, else the value."""
    return f"{status.value}:{role}" if role else status.value


def parse_status_text(text: str) -> tuple[EstimateStatus, str | None]:
    """Inverse of :func:`status_text` (raises ``ValueError`` for an unknown status)."""
    kind, _, role = text.partition(":")
    return EstimateStatus(kind), role or None


__all__ = ["EstimateStatus", "parse_status_text", "status_text"]
