"""What ``/diagnostics`` says, as plain data: one level and one message per status, the level
always following the message (no ROS here, so the rules are unit-tested directly).

Levels (the ``diagnostic_msgs/DiagnosticStatus`` byte values):

- ``OK``: the last step was scored; a camera delivers fresh frames.
- ``WARN``: the last step was not scored for a reason that is the input's (stale, not aligned,
  missing view, undecodable frame, parse failure, queue overflow, no goal, a goal just rejected).
- ``ERROR``: the model failed, or the node clock and the frame stamps disagree by far more than
  ``max_frame_age`` (nothing can ever be scored until that is fixed).
- ``STALE``: nothing to judge yet: no step has run, or a camera never delivered a frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from sole_r1_ros.core.status import EstimateStatus, status_text
from sole_r1_ros.pipeline.worker import WorkerStats

GOAL_REJECTION_WARN_S = 10.0  # a rejected goal keeps the goal status WARN this long
MAX_MESSAGE_CHARS = 300


class Level(IntEnum):
    """``diagnostic_msgs/DiagnosticStatus`` levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class Health:
    """One diagnostic status: ``name`` suffix, level, message and key/values."""

    name: str
    level: Level
    message: str
    values: dict[str, Any] = field(default_factory=dict)


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def outcome_level(status: EstimateStatus) -> Level:
    """The level of the last result's status."""
    if status in (EstimateStatus.OK, EstimateStatus.FIRST_FRAME):
        return Level.OK
    if status is EstimateStatus.ERROR:
        return Level.ERROR
    return Level.WARN


def inference_health(stats: WorkerStats, *, goal: str, episode_id: str, queue_depth: int,
                     reference_frames: int, running: bool = True) -> Health:
    """The inference status: ERROR when the inference thread is not running, else the last
    outcome decides level and message."""
    values: dict[str, Any] = {
        "goal": goal or "<none>", "episode_id": episode_id, "busy": stats.busy,
        "estimates": stats.estimates, "last_latency_s": f"{stats.last_latency_s:.3f}",
        "parse_failures": stats.parse_failures, "model_errors": stats.model_errors,
        "queue_depth": queue_depth, "queue_overflows": stats.queue_overflows,
        "time_jumps": stats.time_jumps, "goals_rejected": stats.goals_rejected,
        "requests_refused": stats.requests_refused, "internal_errors": stats.internal_errors,
        "skipped_estimates_published": stats.skipped_published,
        "skipped_estimates_suppressed": stats.skipped_suppressed,
        "last_outcome": status_text(stats.last_outcome, stats.last_outcome_role) if stats.last_outcome else "<none>",
        "last_failure": stats.last_failure or "<none>",
        **{f"selection_failures.{k}": v for k, v in stats.selection_failures.items()},
        **{f"decode_errors.{k}": v for k, v in stats.decode_errors.items()},
        **{f"clock_offset_s.{k}": f"{v:.3f}" for k, v in stats.clock_offset_s.items()},
    }
    if not running:
        return Health("inference", Level.ERROR, _short("the inference thread is not running: nothing is scored"
                                                       + (f" (last: {stats.last_failure})" if stats.last_failure
                                                          else "")), values)
    if stats.clock_mismatch:
        return Health("inference", Level.ERROR, _short(f"clock_mismatch: {stats.clock_mismatch}"), values)
    if not goal:
        return Health("inference", Level.WARN, "no_goal: publish one on `goal` or set the `goal` parameter", values)
    if stats.last_outcome is None:
        if reference_frames == 0:
            return Health("inference", Level.STALE, "waiting for frames from the reference camera", values)
        return Health("inference", Level.STALE, "waiting for the first step", values)
    level = outcome_level(stats.last_outcome)
    outcome = status_text(stats.last_outcome, stats.last_outcome_role)
    message = outcome if level is Level.OK else f"{outcome}: {stats.last_outcome_detail}"
    return Health("inference", level, _short(message), values)


def goal_health(stats: WorkerStats, *, goal: str, episode_id: str, now_wall_s: float) -> Health:
    """The goal status: WARN without a goal or for a while after one was rejected."""
    values: dict[str, Any] = {"goal": goal or "<none>", "episode_id": episode_id,
                              "goals_rejected": stats.goals_rejected,
                              "last_rejection": stats.last_goal_rejection or "<none>"}
    rejected_at = stats.last_goal_rejection_wall_s
    if rejected_at is not None and now_wall_s - rejected_at <= GOAL_REJECTION_WARN_S:
        return Health("goal", Level.WARN, _short(
            f"goal rejected {now_wall_s - rejected_at:.0f} s ago ({stats.goals_rejected} so far): "
            f"{stats.last_goal_rejection}"), values)
    if not goal:
        return Health("goal", Level.WARN, "no goal", values)
    return Health("goal", Level.OK, f"episode {episode_id}", values)


def camera_health(role: str, cam: Mapping[str, Any], *, topic: str, publishers: int, now_ns: int,
                  max_age_ns: int, wall_silence_s: float | None, clock_mismatch: bool) -> Health:
    """One camera: STALE before its first frame, WARN when its newest frame is older than
    ``max_age_ns`` on the node clock or nothing arrived for that long in wall time, ERROR while
    its stamps disagree with the clock."""
    values = {"topic": topic, "publishers": publishers, **cam}
    if wall_silence_s is not None:
        values["wall_s_since_last_frame"] = f"{wall_silence_s:.2f}"
    if not cam.get("received"):
        if publishers == 0:
            return Health(f"camera {role}", Level.STALE, f"no publisher on {topic}", values)
        return Health(f"camera {role}", Level.STALE, f"no frame received yet ({publishers} publisher(s) on {topic}; "
                      "check the QoS and the message type)", values)
    if clock_mismatch:
        return Health(f"camera {role}", Level.ERROR, "clock_mismatch: frame stamps far from the node clock", values)
    newest = cam.get("newest_stamp_ns")
    max_age_s = max_age_ns / 1e9
    if newest is not None and now_ns - int(newest) > max_age_ns:
        age = (now_ns - int(newest)) / 1e9
        return Health(f"camera {role}", Level.WARN, f"stale: newest frame {age:.1f} s old (max {max_age_s:g} s)",
                      values)
    if wall_silence_s is not None and wall_silence_s > max_age_s:
        return Health(f"camera {role}", Level.WARN,
                      f"stale: no frame for {wall_silence_s:.1f} s of wall time (max {max_age_s:g} s)", values)
    return Health(f"camera {role}", Level.OK, "receiving", values)


__all__ = ["Health", "Level", "camera_health", "goal_health", "inference_health", "outcome_level"]
