"""The inference worker: picks frames, runs the scorer in its own thread, emits results.

Plain Python (no ROS): the node feeds it raw messages (via the :class:`FrameSelector`), goals,
resets and requests, and gives it a ``clock`` (ROS time, so sim time works) and an ``emit``
callback that publishes. Scheduling:

- ``rate``: score the freshest reference frame whose stamp is ``period_s`` (0: back to back)
  after the last scored one (:class:`RateSchedule`, stamp time, so sim time and bag replay
  work); a frame is never scored twice and nothing is queued, so work is never stale.
- ``request``: every request (a stamp and a correlation id) gets exactly one result, in order;
  the queue is bounded and an overflowing request is answered at once with a failure.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sole_r1_ros.core.goal import validate_goal
from sole_r1_ros.core.reward import RewardMapper
from sole_r1_ros.core.scorer import Episode, ProgressScorer
from sole_r1_ros.core.status import EstimateStatus, parse_status_text
from sole_r1_ros.messages.image_codec import ImageDecodeError, decode_any
from sole_r1_ros.messages.serialized import materialize
from sole_r1_ros.pipeline.frame_buffer import FrameSelector, Selection
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.pipeline.schedule import RateSchedule
from sole_r1_ros.settings.groups import RewardSettings, WorkerSettings

LOG = logging.getLogger(__name__)

@dataclass
class _Request:
    stamp_ns: int
    request_id: str
    rate: bool = False


@dataclass
class _EpisodeSlot:
    episode: Episode
    rewards: RewardMapper


@dataclass
class WorkerStats:
    """Counters for diagnostics (read under the worker's lock)."""

    estimates: int = 0
    parse_failures: int = 0
    model_errors: int = 0
    selection_failures: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    decode_errors: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    queue_overflows: int = 0
    time_jumps: int = 0
    last_latency_s: float = 0.0
    last_failure: str = ""
    busy: bool = False


class RewardWorker:
    """Owns the episode, the scheduling and the inference thread."""

    def __init__(
        self,
        scorer: ProgressScorer,
        selector: FrameSelector,
        *,
        config: WorkerSettings,
        reward_config: RewardSettings,
        clock: Callable[[], int],
        emit: Callable[[RewardResult], None],
    ) -> None:
        self.scorer = scorer
        self.selector = selector
        self.config = config
        self.reward_config = reward_config
        self.clock = clock
        self.emit = emit
        self.stats = WorkerStats()
        self._lock = threading.Condition()
        self._slot: _EpisodeSlot | None = None
        self._requests: collections.deque[_Request] = collections.deque()
        self._stop = False
        self._schedule = RateSchedule(int(config.period_s * 1e9), int(config.align_tolerance_s * 1e9))
        self._thread = threading.Thread(target=self._run, name="sole_r1_inference", daemon=True)

    # --- control, called from executor callbacks ---------------------------------------------
    def start(self) -> None:
        """Start the inference thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the thread: a generation in flight is cut short (when the model supports
        ``cancel``) and nothing more is emitted. True when the thread has ended."""
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self.scorer.model.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def goal(self) -> str:
        """The current episode's goal ("" before the first)."""
        with self._lock:
            return self._slot.episode.goal if self._slot else ""

    @property
    def episode_id(self) -> str:
        """The current episode's id ("" before the first)."""
        with self._lock:
            return self._slot.episode.episode_id if self._slot else ""

    def set_goal(self, goal: object) -> str:
        """Start a new episode for ``goal``; raises :class:`~sole_r1_ros.core.goal.GoalError`
        (state unchanged) if invalid. The one place a goal is validated (``max_goal_chars``)."""
        text = validate_goal(goal, max_chars=self.config.max_goal_chars)
        with self._lock:
            self._new_episode(text)
        return text

    def reset(self) -> bool:
        """New episode with the same goal; False when there is no goal yet."""
        with self._lock:
            if self._slot is None:
                return False
            self._new_episode(self._slot.episode.goal)
            return True

    def request(self, stamp_ns: int, request_id: str) -> None:
        """Queue a scoring request (request mode); overflow is answered with a failure at once."""
        overflow = False
        with self._lock:
            if len(self._requests) >= self.config.request_queue_size:
                overflow = True
                self.stats.queue_overflows += 1
            else:
                self._requests.append(_Request(stamp_ns, request_id))
                self._lock.notify_all()
        if overflow:
            self.emit(RewardResult(
                status=EstimateStatus.QUEUE_OVERFLOW,
                detail=f"request queue full ({self.config.request_queue_size}); "
                       "request dropped unanswered by the model",
                request_id=request_id, requested_stamp_ns=stamp_ns, goal=self.goal, episode_id=self.episode_id,
            ))

    def push_frame(self, role: str, stamp_ns: int, msg: object, received_ns: int) -> None:
        """Store a raw camera message (cheap: no decoding). A reference-camera stamp more than
        ``time_jump_back_s`` behind the newest one means time jumped back (a bag loop, a restarted
        clock): buffered frames are dropped and a new episode starts with the same goal."""
        if role == self.selector.reference_role:
            newest = self.selector.buffer(role).peek_latest()
            if newest is not None and newest.stamp_ns - stamp_ns > self.config.time_jump_back_s * 1e9:
                LOG.warning("time jumped back by %.3f s on '%s': new episode", (newest.stamp_ns - stamp_ns) / 1e9, role)
                with self._lock:
                    self.selector.clear()
                    self.stats.time_jumps += 1
                    if self._slot is not None:
                        self._new_episode(self._slot.episode.goal)
        self.selector.push(role, stamp_ns, msg, received_ns)
        if self.config.mode == "rate":
            self.wake()

    def reject_frame(self, role: str, reason: str, detail: str) -> None:
        """Count a message that could not even be stored (e.g. unreadable header)."""
        with self._lock:
            self.stats.decode_errors[reason] += 1
            self.stats.last_failure = f"decode_error:{role}: {detail}"

    def queue_depth(self) -> int:
        """Requests waiting (request mode)."""
        with self._lock:
            return len(self._requests)

    def wake(self) -> None:
        """Re-check schedules now (e.g. after new frames in back-to-back rate mode)."""
        with self._lock:
            self._lock.notify_all()

    def _new_episode(self, goal: str) -> None:
        self._slot = _EpisodeSlot(Episode(goal=goal, roles=self.selector.roles), RewardMapper(self.reward_config))
        self._schedule.reset()
        LOG.info("new episode %s: %s", self._slot.episode.episode_id, goal)

    # --- the inference thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                job = self._next_job()
                while job is None and not self._stop:
                    self._lock.wait(timeout=self._wait_s())
                    job = self._next_job()
                if self._stop or job is None:
                    return
                slot = self._slot
            self._execute(job, slot)

    def run_pending(self) -> int:
        """Run every job that is due now in the caller's thread, for offline scoring (the thread
        is not started then); returns how many ran."""
        count = 0
        while True:
            with self._lock:
                job = self._next_job()
                slot = self._slot
            if job is None:
                return count
            self._execute(job, slot)
            count += 1

    def _execute(self, job: _Request, slot: _EpisodeSlot | None) -> None:
        with self._lock:
            self.stats.busy = True
        try:
            result = self._score(job, slot)
        except Exception as err:
            LOG.exception("inference step failed")
            result = RewardResult(status=EstimateStatus.ERROR, detail=f"internal error: {type(err).__name__}: {err}",
                                  request_id=job.request_id)
        finally:
            with self._lock:
                self.stats.busy = False
        with self._lock:
            stopping = self._stop
        if result is not None and not stopping:
            self.emit(result)

    def _wait_s(self) -> float:
        if self.config.mode == "rate":
            # frames notify; the timeout only matters while waiting out the alignment tolerance
            return min(0.5, max(0.005, self.config.align_tolerance_s / 2))
        return 0.5  # requests, goals and stop notify

    def _next_job(self) -> _Request | None:
        """Called with the lock held. A rate-mode job has an empty request id and no stamp."""
        if self.config.mode == "request":
            return self._requests.popleft() if self._requests else None
        if self._slot is None:
            return None
        stamp = self._schedule.due(self.selector, self.clock())
        if stamp is None:
            return None
        self._schedule.mark(stamp)
        return _Request(stamp_ns=stamp, request_id="", rate=True)

    def _score(self, job: _Request, slot: _EpisodeSlot | None) -> RewardResult | None:
        rate_mode = job.rate
        requested = None if rate_mode else job.stamp_ns
        if slot is None:
            return None if rate_mode else self._fail(job, EstimateStatus.NO_GOAL, "no goal has been set", slot)
        cfg = self.config
        selection = self.selector.select(
            job.stamp_ns,
            tolerance_ns=int(cfg.align_tolerance_s * 1e9),
            max_age_ns=int(cfg.max_frame_age_s * 1e9) if rate_mode else None,
            now_ns=self.clock(),
        )
        if not isinstance(selection, Selection):
            with self._lock:
                self.stats.selection_failures[selection.kind] += 1
                self.stats.last_failure = f"{selection.reason}: {selection.detail}"
            kind, role = parse_status_text(selection.reason)
            return None if rate_mode else self._fail(job, kind, selection.detail, slot, role=role)
        views: dict[str, np.ndarray] = {}
        for role, frame in selection.frames.items():
            try:
                try:
                    msg = materialize(frame.msg)
                except Exception as err:
                    raise ImageDecodeError("bad_message", f"cannot deserialize: {type(err).__name__}: {err}") from err
                views[role] = decode_any(msg, max_pixels=cfg.max_decode_pixels)
            except ImageDecodeError as err:
                with self._lock:
                    self.stats.decode_errors[err.reason] += 1
                    self.stats.last_failure = f"decode_error:{role}: {err}"
                return self._fail(job, EstimateStatus.DECODE_ERROR, str(err), slot, role=role)
        stamps = {role: f.stamp_ns for role, f in selection.frames.items()}
        t0 = time.perf_counter()
        estimate = self.scorer.score(slot.episode, selection.stamp_ns, views)
        latency = time.perf_counter() - t0
        reward = slot.rewards.step(estimate.progress) if estimate.has_progress else None
        with self._lock:
            self.stats.estimates += 1
            self.stats.last_latency_s = latency
            if estimate.status is EstimateStatus.PARSE_FAILED:
                self.stats.parse_failures += 1
            if estimate.status is EstimateStatus.ERROR:
                self.stats.model_errors += 1
                self.stats.last_failure = estimate.error or "model error"
            current = self._slot.episode.episode_id if self._slot else ""
        detail = estimate.error or ""
        if current != estimate.episode_id:
            detail = (detail + "; " if detail else "") + "episode ended while this step ran"
        return RewardResult(
            status=estimate.status, detail=detail, request_id=job.request_id, estimate=estimate, reward=reward,
            view_stamps_ns=stamps, requested_stamp_ns=requested,
        )

    @staticmethod
    def _fail(job: _Request, status: EstimateStatus, detail: str, slot: _EpisodeSlot | None,
              role: str | None = None) -> RewardResult:
        return RewardResult(
            status=status, role=role, detail=detail, request_id=job.request_id,
            requested_stamp_ns=None if job.rate else job.stamp_ns,
            goal=slot.episode.goal if slot else "", episode_id=slot.episode.episode_id if slot else "",
        )
