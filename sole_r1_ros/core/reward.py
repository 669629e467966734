"""Map a stream of progress estimates to rewards.

Modes: ``progress`` (reward = progress, the paper's choice), ``delta`` (progress change since
the previous step) and ``potential`` (potential-based shaping ``gamma * phi(s') - phi(s)`` with
``phi = progress``). Progress is first optionally smoothed (EMA or running median) and a
success bonus can be added while progress is at or above a threshold. The result is
optionally clipped.
Progress values are on the 1.0 = done scale and may be negative (the model judged the scene
worse than at the start).
"""

from __future__ import annotations

import statistics
from collections import deque

from sole_r1_ros.settings.groups import RewardSettings


class RewardMapper:
    """Stateful progress → reward mapping for one episode; call :meth:`reset` on a new episode."""

    def __init__(self, config: RewardSettings | None = None) -> None:
        self.config = config or RewardSettings()
        self._window: deque[float] = deque(maxlen=self.config.median_window)
        self._ema: float | None = None
        self._last: float | None = None

    def reset(self) -> None:
        """Forget the episode (smoothing state and the previous value)."""
        self._window.clear()
        self._ema = None
        self._last = None

    def smooth(self, progress: float) -> float:
        """Apply the configured smoothing to a new progress value (updates state)."""
        cfg = self.config
        if cfg.smoothing == "ema":
            self._ema = progress if self._ema is None else cfg.ema_alpha * progress + (1 - cfg.ema_alpha) * self._ema
            return self._ema
        if cfg.smoothing == "median":
            self._window.append(progress)
            return float(statistics.median(self._window))
        return progress

    def step(self, progress: float) -> float:
        """Reward for a new progress estimate. The first step of an episode has no predecessor:
        ``delta`` and ``potential`` treat the predecessor as 0 (the episode's defined start)."""
        cfg = self.config
        value = self.smooth(progress)
        previous = 0.0 if self._last is None else self._last
        if cfg.mode == "progress":
            reward = value
        elif cfg.mode == "delta":
            reward = value - previous
        else:
            reward = cfg.gamma * value - previous
        if cfg.success_threshold >= 0 and value >= cfg.success_threshold:
            reward += cfg.success_bonus
        self._last = value
        if cfg.clip:
            reward = min(cfg.clip_max, max(cfg.clip_min, reward))
        return reward
