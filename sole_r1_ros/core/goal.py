"""Goal (task description) validation: done once, where a goal enters (node, worker, CLI)."""

from __future__ import annotations

from sole_r1_ros.errors import InputError

MAX_GOAL_CHARS = 1000


class GoalError(InputError):
    """A goal that cannot start an episode (empty, too long, not text)."""


def validate_goal(goal: object, *, max_chars: int | None = MAX_GOAL_CHARS) -> str:
    """Return the stripped goal or raise :class:`GoalError` with the reason (``max_chars=None``:
    no length limit)."""
    if not isinstance(goal, str):
        raise GoalError(f"goal must be a string, got {type(goal).__name__}")
    text = goal.strip()
    if not text:
        raise GoalError("goal is empty")
    if max_chars is not None and len(text) > max_chars:
        raise GoalError(f"goal has {len(text)} characters; the limit is {max_chars}")
    if "\ufffd" in text:
        raise GoalError("goal is not valid UTF-8 (rclpy replaced undecodable bytes with U+FFFD)")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        raise GoalError("goal contains control characters")
    return text


__all__ = ["MAX_GOAL_CHARS", "GoalError", "validate_goal"]
