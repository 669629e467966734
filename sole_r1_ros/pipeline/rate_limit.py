"""At most one of a kind per period: the node's repeated log lines and the worker's reports of
unscored steps are limited per key (a status, a kind of rejected goal) by the same rule."""

from __future__ import annotations

import collections
import threading


class PerKeyRateLimit:
    """At most one event per key per ``period_s`` (the caller's clock, in seconds); counts the
    events it held back, per key and in total. Thread-safe."""

    def __init__(self, period_s: float) -> None:
        if period_s < 0:
            raise ValueError(f"period_s must be >= 0, got {period_s}")
        self.period_s = period_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()
        self.allowed = 0
        self.suppressed = 0

    def take(self, key: str, now_s: float) -> int | None:
        """None: hold this event back. Otherwise it may go out, and the number is how many of
        its key were held back since the last one that went out."""
        with self._lock:
            last = self._last.get(key)
            if last is not None and now_s - last < self.period_s:
                self._held[key] += 1
                self.suppressed += 1
                return None
            self._last[key] = now_s
            self.allowed += 1
            return self._held.pop(key, 0)

    def overdue(self, now_s: float) -> list[tuple[str, int]]:
        """Keys with events held back whose period has passed (a flood that ended): ``(key,
        count)``, each returned once, so that the count is still told."""
        with self._lock:
            due = [(k, n) for k, n in self._held.items() if now_s - self._last.get(k, 0.0) >= self.period_s]
            for key, _ in due:
                del self._held[key]
                self._last[key] = now_s
            return due


__all__ = ["PerKeyRateLimit"]
