"""Reward mapping, table-tested."""

from __future__ import annotations

import pytest

from sole_r1_ros.core.reward import RewardMapper
from sole_r1_ros.settings.groups import RewardSettings

TABLE = [
    # (config, progress sequence, expected rewards)
    (RewardSettings(), [0.0, 0.2, 0.5, 0.4], [0.0, 0.2, 0.5, 0.4]),
    (RewardSettings(mode="delta"), [0.0, 0.2, 0.5, 0.4], [0.0, 0.2, 0.3, -0.1]),
    (RewardSettings(mode="potential", gamma=0.9), [0.0, 0.2, 0.5], [0.0, 0.18, 0.25]),
    (RewardSettings(mode="potential", gamma=1.0), [0.1, 0.3], [0.1, 0.2]),
    (RewardSettings(smoothing="ema", ema_alpha=0.5), [0.0, 1.0, 1.0], [0.0, 0.5, 0.75]),
    (RewardSettings(smoothing="median", median_window=3), [0.1, 0.9, 0.2, 0.3], [0.1, 0.5, 0.2, 0.3]),
    (RewardSettings(success_threshold=0.95, success_bonus=1.0), [0.5, 0.96, 1.0], [0.5, 1.96, 2.0]),
    (RewardSettings(clip=True, clip_min=0.0, clip_max=0.5), [-0.3, 0.2, 0.9], [0.0, 0.2, 0.5]),
    (RewardSettings(mode="delta", smoothing="ema", ema_alpha=0.5), [0.0, 1.0], [0.0, 0.5]),
    (RewardSettings(mode="progress"), [-0.4], [-0.4]),
]


@pytest.mark.parametrize(("config", "progress", "expected"), TABLE)
def test_reward_table(config: RewardSettings, progress: list[float], expected: list[float]) -> None:
    mapper = RewardMapper(config)
    assert [mapper.step(p) for p in progress] == pytest.approx(expected)


@pytest.mark.parametrize("config", [c for c, _, _ in TABLE])
def test_reset_forgets_the_episode(config: RewardSettings) -> None:
    mapper = RewardMapper(config)
    first = [mapper.step(p) for p in (0.3, 0.7, 0.2)]
    mapper.reset()
    assert [mapper.step(p) for p in (0.3, 0.7, 0.2)] == pytest.approx(first)


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "other"}, {"smoothing": "mean"}, {"ema_alpha": 0.0}, {"median_window": 0}, {"gamma": 1.5},
     {"clip_min": 1.0, "clip_max": 0.0}],
)
def test_invalid_configs(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RewardSettings(**kwargs)
