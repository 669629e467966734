"""One event per key per period; what is held back is counted and told later."""

from __future__ import annotations

import pytest

from sole_r1_ros.pipeline.rate_limit import PerKeyRateLimit


def test_one_per_key_per_period_and_the_held_count_goes_with_the_next() -> None:
    limit = PerKeyRateLimit(2.0)
    assert limit.take("stale:wrist", 0.0) == 0
    assert limit.take("stale:wrist", 1.0) is None
    assert limit.take("stale:wrist", 1.9) is None
    assert limit.take("no_goal", 1.9) == 0  # another key has its own period
    assert limit.take("stale:wrist", 2.0) == 2  # two held back since the last one out
    assert limit.take("stale:wrist", 4.5) == 0
    assert (limit.allowed, limit.suppressed) == (4, 2)


def test_overdue_tells_a_flood_that_ended_once() -> None:
    limit = PerKeyRateLimit(2.0)
    limit.take("k", 0.0)
    for t in (0.5, 1.0, 1.5):
        limit.take("k", t)
    assert limit.overdue(1.9) == []
    assert limit.overdue(2.0) == [("k", 3)]
    assert limit.overdue(10.0) == []  # told once
    assert limit.take("k", 3.0) is None  # overdue counted as the key's last line


def test_zero_period_lets_everything_through_and_a_negative_one_is_refused() -> None:
    limit = PerKeyRateLimit(0.0)
    assert [limit.take("k", 1.0) for _ in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="period_s"):
        PerKeyRateLimit(-1.0)
