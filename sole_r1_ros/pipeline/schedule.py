"""When to score in rate mode, in stamp time (so bag replay at any speed and sim time behave).

Shared by the live worker and offline bag scoring, so both pick the same frames: a reference
frame is *due* when its stamp reaches the next point of the period grid, and *ready*
once every other camera has delivered a frame at or after that stamp, or ``tolerance`` has
passed on the node clock since the reference frame arrived (then the best frame at hand is used).
"""

from __future__ import annotations

from sole_r1_ros.pipeline.frame_buffer import FrameSelector


class RateSchedule:
    """Decides which reference stamp to score next, on a grid of ``period`` anchored at the
    episode's first scored stamp (so scoring does not drift slower than the period when frame
    stamps fall just short of it; ``jitter`` = min(tolerance, period / 2) of slack)."""

    def __init__(self, period_ns: int, tolerance_ns: int) -> None:
        if period_ns < 0 or tolerance_ns < 0:
            raise ValueError("period and tolerance must be >= 0")
        self.period_ns = period_ns
        self.tolerance_ns = tolerance_ns
        self._jitter_ns = min(tolerance_ns, period_ns // 2)
        self._last_ns: int | None = None
        self._next_ns: int | None = None

    def reset(self) -> None:
        """Forget the grid (new episode)."""
        self._last_ns = None
        self._next_ns = None

    def mark(self, stamp_ns: int) -> None:
        """Record that the frame at ``stamp_ns`` was taken (scored or failed: never retried)."""
        self._last_ns = stamp_ns
        if self._next_ns is None or self.period_ns == 0:
            self._next_ns = stamp_ns + self.period_ns
        else:
            while self._next_ns - self._jitter_ns <= stamp_ns:
                self._next_ns += self.period_ns

    def due(self, selector: FrameSelector, now_ns: int) -> int | None:
        """The reference stamp to score now, or None."""
        newest = selector.buffer(selector.reference_role).peek_latest()
        if newest is None:
            return None
        stamp = newest.stamp_ns
        if self._last_ns is not None:
            if stamp <= self._last_ns:
                return None
            assert self._next_ns is not None
            if stamp < self._next_ns - self._jitter_ns:
                return None
        if now_ns - newest.received_ns > self.tolerance_ns:
            return stamp
        for role in selector.roles[1:]:
            latest = selector.buffer(role).peek_latest()
            if latest is None or latest.stamp_ns < stamp:
                return None
        return stamp
