"""What the worker emits for one scoring attempt, and its wire form (the ``~/estimate`` JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sole_r1_ros.core.scorer import Estimate
from sole_r1_ros.core.status import EstimateStatus, status_text

ESTIMATE_SCHEMA = "sole_r1_ros/estimate/1"
MAX_REASONING_CHARS = 4000


@dataclass(frozen=True)
class RewardResult:
    """What the node publishes for one scoring attempt.

    ``estimate`` is None when no estimate could be made (no goal, frames missing/stale/not
    aligned, undecodable image, queue overflow, a rejected goal); ``status`` then names the
    reason, ``role`` the camera it is about, if any, and ``stamp_ns`` / ``view_stamps_ns`` the
    frames it was about. ``token_limit`` is the generation's ``max_new_tokens`` (so the JSON can
    say whether a reply was cut by it); ``composite`` the image the model saw, when asked for.
    """

    status: EstimateStatus
    detail: str
    role: str | None = None
    request_id: str = ""
    estimate: Estimate | None = None
    reward: float | None = None
    view_stamps_ns: dict[str, int] = field(default_factory=dict)
    episode_id: str = ""
    goal: str = ""
    requested_stamp_ns: int | None = None
    stamp_ns: int | None = None
    token_limit: int | None = None
    composite: Any = field(default=None, compare=False, repr=False)

    @property
    def publishes_progress(self) -> bool:
        """Progress/reward/reasoning topics get a value only when the model (or the episode's
        defined start) produced one; a parse failure carries the previous value forward."""
        return self.estimate is not None and self.estimate.has_progress

    @property
    def reasoning(self) -> str:
        """The model's reasoning, bounded to ``MAX_REASONING_CHARS``."""
        text = self.estimate.reasoning if self.estimate else ""
        return text[:MAX_REASONING_CHARS]

    @property
    def status_text(self) -> str:
        """The wire form of the status (``stale:wrist``)."""
        return status_text(self.status, self.role)

    def to_dict(self) -> dict[str, Any]:
        """The ``~/estimate`` object (schema ``sole_r1_ros/estimate/1``)."""
        e = self.estimate
        return {
            "schema": ESTIMATE_SCHEMA,
            "status": self.status_text,
            "detail": self.detail,
            "request_id": self.request_id,
            "requested_stamp_ns": self.requested_stamp_ns,
            "stamp_ns": e.stamp_ns if e else self.stamp_ns,
            "first_stamp_ns": e.first_stamp_ns if e else None,
            "prev_stamp_ns": e.prev_stamp_ns if e else None,
            "views": self.view_stamps_ns,
            "goal": e.goal if e else self.goal,
            "episode_id": e.episode_id if e else self.episode_id,
            "step": e.step if e else None,
            "progress": e.progress if self.publishes_progress and e else None,
            "percent": e.percent if self.publishes_progress and e else None,
            "prev_percent": e.prev_percent if e else None,
            "reward": self.reward,
            "reasoning": self.reasoning,
            "parse_status": e.parse_status if e else None,
            "error": e.error if e else None,
            "timings": dict(e.timings) if e else {},
            "tokens": self._tokens(e),
        }

    def _tokens(self, e: Estimate | None) -> dict[str, Any]:
        if e is None:
            return {}
        tokens: dict[str, Any] = {"prompt": e.prompt_tokens, "generated": e.new_tokens}
        if self.token_limit is not None and e.status not in (EstimateStatus.FIRST_FRAME, EstimateStatus.ERROR):
            tokens["limit"] = self.token_limit
            tokens["hit_limit"] = e.new_tokens >= self.token_limit
        return tokens

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False)
