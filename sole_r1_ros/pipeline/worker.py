"""The inference worker: picks frames, runs the scorer in its own thread, emits results.

Plain Python (no ROS): the node feeds it raw messages (via the :class:`FrameSelector`), goals,
resets and requests, and gives it a ``clock`` (ROS time, so sim time works) and an ``emit``
callback that publishes. Scheduling:

- ``rate``: score the freshest reference frame whose stamp is ``period_s`` (0: back to back)
  after the last scored one (:class:`RateSchedule`, stamp time, so sim time and bag replay
  work); a frame is never scored twice and nothing is queued, so work is never stale.
- ``request``: every request (a stamp and a correlation id) gets exactly one result, in order;
  the queue is bounded and an overflowing request is answered at once with a failure.

With ``live`` (the node), a rate-mode step that is not scored emits a failure result
naming the reason and the frames it was about, at most one per reason per
``skipped_estimate_period_s`` of wall time (:class:`PerKeyRateLimit`); while nothing is due, the
thread checks every ``max(period + align_tolerance, skipped_estimate_period)`` s why (the
reference camera silent or stale, no goal) and reports that the same way. A rejected goal is
reported likewise, and frame stamps far from the node clock are named (one log line). Offline
scoring leaves ``live`` off: its results are the scored steps, its clock is the bag's.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from sole_r1_ros.core.goal import GoalError, validate_goal
from sole_r1_ros.core.reward import RewardMapper
from sole_r1_ros.core.scorer import Episode, ProgressScorer
from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.messages.image_codec import ImageDecodeError, decode_any
from sole_r1_ros.messages.serialized import materialize
from sole_r1_ros.pipeline.frame_buffer import FrameSelector, Selection
from sole_r1_ros.pipeline.rate_limit import PerKeyRateLimit
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.pipeline.schedule import RateSchedule
from sole_r1_ros.settings.groups import RewardSettings, WorkerSettings

LOG = logging.getLogger(__name__)

# frame stamps further than this from the node clock (and than 10 x max_frame_age) mean the two
# clocks disagree (a bag replayed without --clock/use_sim_time), not that a camera lags
CLOCK_MISMATCH_MIN_S = 60.0


@dataclass
class _Request:
    stamp_ns: int
    request_id: str
    rate: bool = False
    probe: bool = False  # rate mode, nothing due: find out why and report it


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
    goals_rejected: int = 0
    requests_refused: int = 0  # ~/request while in rate mode
    internal_errors: int = 0  # unexpected errors the inference thread survived
    last_goal_rejection: str = ""
    last_goal_rejection_wall_s: float | None = None
    skipped_published: int = 0
    skipped_suppressed: int = 0
    last_outcome: EstimateStatus | None = None  # status of the last result (scored or not), None before any
    last_outcome_role: str | None = None  # its camera, for a per-camera status
    last_outcome_detail: str = ""
    last_outcome_wall_s: float | None = None
    clock_offset_s: dict[str, float] = field(default_factory=dict)  # receive time - stamp, newest frame per camera
    clock_mismatch: str = ""  # a sentence while the node clock and the frame stamps disagree, else ""


class RewardWorker:
    """Owns the episode, the scheduling and the inference thread.

    ``clock``: the node clock (ns; sim time when used); ``wall_clock``: seconds of steady time for
    rate limits; ``live``: the node's reporting of unscored steps and clock mismatches (module
    docstring); ``want_composite``: asked before each model step whether to keep the composite
    image for the result (the node asks whether ``~/composite`` has subscribers).
    """

    def __init__(
        self,
        scorer: ProgressScorer,
        selector: FrameSelector,
        *,
        config: WorkerSettings,
        reward_config: RewardSettings,
        clock: Callable[[], int],
        emit: Callable[[RewardResult], None],
        live: bool = False,
        wall_clock: Callable[[], float] = time.monotonic,
        want_composite: Callable[[], bool] | None = None,
    ) -> None:
        self.scorer = scorer
        self.selector = selector
        self.config = config
        self.reward_config = reward_config
        self.clock = clock
        self._emit = emit
        self.live = live
        self.wall_clock = wall_clock
        self.stats = WorkerStats()
        self._skips = PerKeyRateLimit(config.skipped_estimate_period_s)
        self._want_composite = want_composite
        self._composite: object | None = None
        self._capture = False
        if want_composite is not None:
            scorer.composite_listeners.append(self._keep_composite)
        self._last_job_wall_s = wall_clock()
        self._last_probe_wall_s = self._last_job_wall_s
        self.clock_mismatch_s = max(CLOCK_MISMATCH_MIN_S, 10 * config.max_frame_age_s)
        self._mismatch_ns = int(self.clock_mismatch_s * 1e9)
        self._heard_ns: dict[str, int] = {}  # node-clock time of each camera's newest frame
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

    def set_goal(self, goal: object) -> bool:
        """Start a new episode for ``goal``, unless it is the current goal again (a goal topic
        republished, a latched goal met twice): True when an episode started. Raises
        :class:`~sole_r1_ros.core.goal.GoalError` (state unchanged) if invalid. The one place a
        goal is validated (``max_goal_chars``)."""
        try:
            text = validate_goal(goal, max_chars=self.config.max_goal_chars)
        except GoalError as err:
            self._goal_rejected(str(err))
            raise
        with self._lock:
            if self._slot is not None and self._slot.episode.goal == text:
                return False
            self._new_episode(text)
        return True

    def _goal_rejected(self, reason: str) -> None:
        with self._lock:
            self.stats.goals_rejected += 1
            self.stats.last_goal_rejection = reason
            self.stats.last_goal_rejection_wall_s = self.wall_clock()
            goal, episode = (self._slot.episode.goal, self._slot.episode.episode_id) if self._slot else ("", "")
        self._report_skipped(RewardResult(
            status=EstimateStatus.GOAL_REJECTED, detail=f"goal rejected: {reason}; the episode goes on",
            goal=goal, episode_id=episode,
        ), outcome=False)  # the goal status tells it; the inference status stays about the steps

    def reset(self) -> bool:
        """New episode with the same goal; False when there is no goal yet."""
        with self._lock:
            if self._slot is None:
                return False
            self._new_episode(self._slot.episode.goal)
            return True

    def request(self, stamp_ns: int, request_id: str) -> None:
        """Queue a scoring request (request mode); overflow is answered with a failure at once, and
        so is a request in rate mode (which schedules its own steps and would never take it)."""
        if self.config.mode != "request":
            with self._lock:
                self.stats.requests_refused += 1
            self.emit(RewardResult(
                status=EstimateStatus.REQUEST_REFUSED,
                detail=f"the node is in {self.config.mode} mode and schedules its own steps; "
                       "set mode:=request to score requested frames",
                request_id=request_id, requested_stamp_ns=stamp_ns, goal=self.goal, episode_id=self.episode_id,
            ), outcome=False)
            return
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
        if self.live:
            self._check_clock(role, stamp_ns, received_ns)
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

    def _check_clock(self, role: str, stamp_ns: int, received_ns: int) -> None:
        """Notice (once, with one log line) when frame stamps and the node clock disagree far beyond
        ``max_frame_age``: every frame would be stale, e.g. a bag replayed without sim time. Not
        judged while the node clock reads 0 (sim time before the first ``/clock``). The mismatch
        ends when every camera heard from within the last ``clock_mismatch_s`` agrees again, so a
        camera that stopped does not keep it up."""
        if received_ns == 0:
            return
        offset_ns = received_ns - stamp_ns
        started = ended = ""
        with self._lock:  # diagnostics read these from another thread
            stats = self.stats
            stats.clock_offset_s[role] = offset_ns / 1e9
            self._heard_ns[role] = received_ns
            if abs(offset_ns) > self._mismatch_ns:
                if not stats.clock_mismatch:
                    side = "behind" if offset_ns > 0 else "ahead of"
                    stats.clock_mismatch = started = (
                        f"camera '{role}' stamps are {abs(offset_ns) / 1e9:.0f} s {side} the node clock "
                        f"(max_frame_age {self.config.max_frame_age_s:g} s): every frame is stale. A bag replayed "
                        "without sim time? Play it with --clock and set use_sim_time:=true")
            elif stats.clock_mismatch and all(abs(v) * 1e9 <= self._mismatch_ns
                                              for r, v in stats.clock_offset_s.items()
                                              if received_ns - self._heard_ns[r] <= self._mismatch_ns):
                stats.clock_mismatch = ""
                ended = "clock mismatch over: frame stamps agree with the node clock again"
        if started:
            LOG.error("clock mismatch: %s", started)
        if ended:
            LOG.info(ended)

    def reject_frame(self, role: str, reason: str, detail: str) -> None:
        """Count a message that could not even be stored (e.g. unreadable header)."""
        with self._lock:
            self.stats.decode_errors[reason] += 1
            self.stats.last_failure = f"decode_error:{role}: {detail}"

    def stats_snapshot(self) -> WorkerStats:
        """A copy of the counters, taken under the lock (the inference thread keeps writing them)."""
        with self._lock:
            s = self.stats
            return replace(s, selection_failures=dict(s.selection_failures), decode_errors=dict(s.decode_errors),
                           clock_offset_s=dict(s.clock_offset_s))

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
    @property
    def running(self) -> bool:
        """True while the inference thread runs (started and not ended)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                if not self._run_once():
                    return
            except Exception as err:  # e.g. a publish failing: the thread must go on
                LOG.exception("inference thread: unexpected error; it goes on")
                with self._lock:
                    self.stats.internal_errors += 1
                    self.stats.last_failure = f"internal error: {type(err).__name__}: {err}"
                    self._lock.wait(timeout=0.1)  # no hot loop if the error repeats

    def _run_once(self) -> bool:
        """Wait for one job and run it; False once stopped."""
        with self._lock:
            job = None if self._stop else self._next_job() or self._probe_job()  # stopped: read no clock
            while job is None and not self._stop:
                self._lock.wait(timeout=self._wait_s())
                job = self._next_job() or self._probe_job()
            if self._stop or job is None:
                return False
            slot = self._slot
        if job.probe:
            self._probe(slot)
        else:
            self._last_job_wall_s = self.wall_clock()
            self._execute(job, slot)
        return True

    def emit(self, result: RewardResult, *, outcome: bool = True) -> None:
        """Hand one result to the ``emit`` callback; ``outcome``: it is the last step's outcome
        (what the inference status reports), not a goal or request refused beside the steps."""
        if outcome:
            self._note_outcome(result)
        self._emit(result)

    def _note_outcome(self, result: RewardResult) -> None:
        with self._lock:
            self.stats.last_outcome, self.stats.last_outcome_role = result.status, result.role
            self.stats.last_outcome_detail = result.detail
            self.stats.last_outcome_wall_s = self.wall_clock()

    def _report_skipped(self, result: RewardResult, *, outcome: bool = True) -> None:
        """Emit a failure result of a step that was not scored, rate limited per reason; the
        outcome is noted even when the result itself is held back."""
        if not self.live:
            return
        if outcome:
            self._note_outcome(result)
        with self._lock:
            allowed = self._skips.take(result.status_text, self.wall_clock()) is not None
            self.stats.skipped_published = self._skips.allowed
            self.stats.skipped_suppressed = self._skips.suppressed
        if allowed:
            self._emit(result)

    def _probe_interval_s(self) -> float:
        cfg = self.config
        return max(cfg.period_s + cfg.align_tolerance_s, cfg.skipped_estimate_period_s, 0.2)

    def _probe_job(self) -> _Request | None:
        """Called with the lock held: in rate mode, when nothing was due for a while, a job that
        finds out why (a reference camera gone stale or silent, no goal)."""
        if not self.live or self.config.mode != "rate":
            return None
        now = self.wall_clock()
        interval = self._probe_interval_s()
        if now - self._last_job_wall_s < interval or now - self._last_probe_wall_s < interval:
            return None
        self._last_probe_wall_s = now
        return _Request(stamp_ns=-1, request_id="", rate=True, probe=True)

    def _probe(self, slot: _EpisodeSlot | None) -> None:
        """Nothing came due for a while: report why, if the reference camera is the cause (it has no
        frame or only a stale one) or there is no goal. A missing or unaligned other view is left
        to the steps themselves, which still come due and report it."""
        if slot is None:
            newest = self.selector.buffer(self.selector.reference_role).peek_latest()
            if newest is not None:
                self._report_skipped(RewardResult(
                    status=EstimateStatus.NO_GOAL, detail="frames arrive but no goal has been set (publish one on "
                    "`goal` or set the `goal` parameter)", stamp_ns=newest.stamp_ns,
                    view_stamps_ns=self.selector.newest_stamps()))
            return
        failure = self.selector.reference_failure(max_age_ns=int(self.config.max_frame_age_s * 1e9),
                                                  now_ns=self.clock())
        if failure is not None:
            idle = f"nothing scored for {self.wall_clock() - self._last_job_wall_s:.1f} s: "
            self._report_skipped(self._fail(_Request(-1, "", rate=True), failure.status,
                                            self._with_hint(failure.status, idle + failure.detail), slot,
                                            role=failure.role, stamp_ns=failure.stamp_ns, views=failure.views))

    def _with_hint(self, kind: EstimateStatus, detail: str) -> str:
        mismatch = self.stats.clock_mismatch
        if kind is EstimateStatus.STALE and mismatch:
            return f"{detail} (clock mismatch: {mismatch})"
        return detail

    def _keep_composite(self, _episode: Episode, _stamp_ns: int, image: object) -> None:
        if self._capture:
            self._composite = image

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
            result = self._fail(job, EstimateStatus.ERROR, f"internal error: {type(err).__name__}: {err}", slot)
        finally:
            with self._lock:
                self.stats.busy = False
        with self._lock:
            stopping = self._stop
        if result is None or stopping:
            return
        if not (job.rate and result.status.is_failure and result.estimate is None):
            self.emit(result)
        elif self.live:
            self._report_skipped(result)
        elif result.status in (EstimateStatus.DECODE_ERROR, EstimateStatus.ERROR):
            self.emit(result)  # offline: undecodable frames and internal errors are results; skipped steps are not

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
            return self._fail(job, EstimateStatus.NO_GOAL, "no goal has been set", slot)
        cfg = self.config
        selection = self.selector.select(
            job.stamp_ns,
            tolerance_ns=int(cfg.align_tolerance_s * 1e9),
            max_age_ns=int(cfg.max_frame_age_s * 1e9) if rate_mode else None,
            now_ns=self.clock(),
        )
        if not isinstance(selection, Selection):
            with self._lock:
                self.stats.selection_failures[selection.status.value] += 1
                self.stats.last_failure = f"{selection.reason}: {selection.detail}"
            return self._fail(job, selection.status, self._with_hint(selection.status, selection.detail), slot,
                              role=selection.role, stamp_ns=selection.stamp_ns, views=selection.views)
        previous = slot.episode.previous
        if previous is not None and selection.stamp_ns < previous.stamp_ns:
            # steps are sequential: scoring an older frame would make it the episode's "previous"
            return self._fail(job, EstimateStatus.OUT_OF_ORDER,
                              f"frame {selection.stamp_ns} is older than the episode's last scored frame "
                              f"{previous.stamp_ns}; the episode is left as it was", slot,
                              stamp_ns=selection.stamp_ns,
                              views={r: f.stamp_ns for r, f in selection.frames.items()})
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
                return self._fail(job, EstimateStatus.DECODE_ERROR, str(err), slot, role=role,
                                  stamp_ns=selection.stamp_ns,
                                  views={r: f.stamp_ns for r, f in selection.frames.items()})
        stamps = {role: f.stamp_ns for role, f in selection.frames.items()}
        self._capture = self._want_composite is not None and self._want_composite()
        self._composite = None
        t0 = time.perf_counter()
        try:
            estimate = self.scorer.score(slot.episode, selection.stamp_ns, views)
        finally:
            self._capture = False
        composite, self._composite = self._composite, None
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
            view_stamps_ns=stamps, requested_stamp_ns=requested, token_limit=self.scorer.generation.max_new_tokens,
            composite=composite,
        )

    @staticmethod
    def _fail(job: _Request, status: EstimateStatus, detail: str, slot: _EpisodeSlot | None,
              role: str | None = None, stamp_ns: int | None = None,
              views: dict[str, int] | None = None) -> RewardResult:
        return RewardResult(
            status=status, role=role, detail=detail, request_id=job.request_id,
            requested_stamp_ns=None if job.rate else job.stamp_ns,
            goal=slot.episode.goal if slot else "", episode_id=slot.episode.episode_id if slot else "",
            stamp_ns=stamp_ns, view_stamps_ns=dict(views or {}),
        )
