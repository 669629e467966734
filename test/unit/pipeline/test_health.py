"""Diagnostic levels follow their messages (the README's status table)."""

from __future__ import annotations

import pytest

from sole_r1_ros.core.status import EstimateStatus, parse_status_text
from sole_r1_ros.pipeline.health import Level, camera_health, goal_health, inference_health, outcome_level
from sole_r1_ros.pipeline.worker import WorkerStats

S = 1_000_000_000


def stats(**fields) -> WorkerStats:
    """Counters; ``last_outcome`` in its wire form (``stale:wrist``)."""
    s = WorkerStats()
    for key, value in fields.items():
        if key == "last_outcome":
            s.last_outcome, s.last_outcome_role = parse_status_text(value)
        else:
            setattr(s, key, value)
    return s


@pytest.mark.parametrize(("outcome", "level"), [
    ("ok", Level.OK), ("first_frame", Level.OK), ("parse_failed", Level.WARN), ("error", Level.ERROR),
    ("stale", Level.WARN), ("not_aligned", Level.WARN), ("view_missing", Level.WARN),
    ("no_frames", Level.WARN), ("decode_error", Level.WARN), ("queue_overflow", Level.WARN),
    ("no_goal", Level.WARN), ("goal_rejected", Level.WARN),
])
def test_outcome_levels(outcome: str, level: Level) -> None:
    assert outcome_level(EstimateStatus(outcome)) is level


def inference(**fields):
    return inference_health(stats(**fields), goal=fields.pop("goal", "g"), episode_id="e", queue_depth=0,
                            reference_frames=fields.pop("frames", 10))


def test_inference_message_and_level_agree() -> None:
    ok = inference(last_outcome="ok", estimates=4)
    assert (ok.level, ok.message) == (Level.OK, "ok")
    missing = inference(last_outcome="view_missing:wrist", last_outcome_detail="camera 'wrist' has no buffered frames")
    assert missing.level is Level.WARN and missing.message.startswith("view_missing:wrist: camera 'wrist'")
    # parse failures earlier, the last step fine: OK, and the counter still shows them
    recovered = inference(last_outcome="ok", parse_failures=3)
    assert recovered.level is Level.OK and recovered.values["parse_failures"] == 3
    failed = inference(last_outcome="parse_failed", last_outcome_detail="truncated: ...")
    assert failed.level is Level.WARN and failed.message.startswith("parse_failed: truncated")
    error = inference(last_outcome="error", last_outcome_detail="model_error: boom")
    assert error.level is Level.ERROR and "boom" in error.message


def test_nothing_yet_is_stale_not_ok() -> None:
    waiting = inference_health(stats(), goal="g", episode_id="e", queue_depth=0, reference_frames=0)
    assert waiting.level is Level.STALE and "waiting for frames" in waiting.message
    assert waiting.values["estimates"] == 0
    no_goal = inference_health(stats(), goal="", episode_id="", queue_depth=0, reference_frames=5)
    assert no_goal.level is Level.WARN and no_goal.message.startswith("no_goal")


def test_clock_mismatch_is_an_error() -> None:
    h = inference(last_outcome="stale:external", clock_mismatch="stamps are 86400 s behind the node clock")
    assert h.level is Level.ERROR and h.message.startswith("clock_mismatch: stamps are 86400 s behind")


def test_goal_rejections_warn_for_a_while() -> None:
    s = stats(goals_rejected=500, last_goal_rejection="goal is empty", last_goal_rejection_wall_s=100.0)
    recent = goal_health(s, goal="g", episode_id="e", now_wall_s=102.0)
    assert recent.level is Level.WARN and "500 so far" in recent.message and "goal is empty" in recent.message
    assert recent.values["goals_rejected"] == 500
    later = goal_health(s, goal="g", episode_id="e", now_wall_s=200.0)
    assert later.level is Level.OK
    assert goal_health(stats(), goal="", episode_id="", now_wall_s=0.0).level is Level.WARN


def cam(received: int = 10, newest: int | None = 10 * S) -> dict:
    return {"received": received, "newest_stamp_ns": newest}


def test_camera_levels() -> None:
    common = {"topic": "/cam", "now_ns": 11 * S, "max_age_ns": 2 * S, "clock_mismatch": False}
    none = camera_health("wrist", cam(0, None), publishers=0, wall_silence_s=None, **common)
    assert none.level is Level.STALE and none.message == "no publisher on /cam"
    unmatched = camera_health("wrist", cam(0, None), publishers=1, wall_silence_s=None, **common)
    assert unmatched.level is Level.STALE and "check the QoS" in unmatched.message
    fine = camera_health("wrist", cam(), publishers=1, wall_silence_s=0.1, **common)
    assert (fine.level, fine.message) == (Level.OK, "receiving")
    old = camera_health("wrist", cam(newest=5 * S), publishers=1, wall_silence_s=0.1, **common)
    assert old.level is Level.WARN and old.message.startswith("stale: newest frame 6.0 s old")
    # /clock stopped: the stamps look fresh on the frozen clock, but nothing arrived for 5 s
    frozen = camera_health("wrist", cam(), publishers=1, wall_silence_s=5.0, **common)
    assert frozen.level is Level.WARN and "wall time" in frozen.message
    mismatch = camera_health("wrist", cam(), publishers=1, wall_silence_s=0.1,
                             **{**common, "clock_mismatch": True})
    assert mismatch.level is Level.ERROR


def test_a_stopped_inference_thread_is_an_error_whatever_the_last_outcome() -> None:
    h = inference_health(stats(last_outcome="ok", last_failure="internal error: RuntimeError: boom"), goal="g",
                         episode_id="e", queue_depth=0, reference_frames=3, running=False)
    assert h.level is Level.ERROR and h.message.startswith("the inference thread is not running")
    assert "boom" in h.message
