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
from dataclasses import dataclass

REWARD_MODES = ("progress", "delta", "potential")
SMOOTHING_MODES = ("none", "ema", "median")


@dataclass(frozen=True)
class RewardConfig:
    """Reward mapping settings (see module docstring)."""

    mode: str = "progress"
    gamma: float = 0.99
    smoothing: str = "none"
    ema_alpha: float = 0.5
    median_window: int = 3
    success_threshold: float | None = None
    success_bonus: float = 0.0
    clip_min: float | None = None
    clip_max: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward mode '{self.mode}' unknown; choose one of {REWARD_MODES}")
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing '{self.smoothing}' unknown; choose one of {SMOOTHING_MODES}")
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError("ema_alpha must be in (0, 1]")
        if self.median_window < 1:
            raise ValueError("median_window must be >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1]")
        if self.clip_min is not None and self.clip_max is not None and self.clip_min > self.clip_max:
            raise ValueError("clip_min must not exceed clip_max")


class RewardMapper:
    """Stateful progress → reward mapping for one episode; call :meth:`reset` on a new episode."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        self._window: deque[float] = deque(maxlen=self.config.median_window)
        self._ema: float | None = None
        self._last: float | None = None

    def reset(self) -> None:
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
        if cfg.success_threshold is not None and value >= cfg.success_threshold:
            reward += cfg.success_bonus
        self._last = value
        if cfg.clip_min is not None:
            reward = max(cfg.clip_min, reward)
        if cfg.clip_max is not None:
            reward = min(cfg.clip_max, reward)
        return reward
