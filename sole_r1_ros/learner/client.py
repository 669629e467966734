"""The learner's side of request mode: goal, reset, one reward request per chunk boundary.

Plain Python (no ROS): :class:`RewardClient` is given three publish callbacks (goal, reset,
request), a clock (nanoseconds; pass the ROS clock and ``use_sim_time`` works) and answers the
node's ``~/estimate`` JSON through :meth:`RewardClient.handle_estimate`. Every request ends in
exactly one *final* :class:`RewardAnswer` (delivered to the callback and to the request's
future): an answer or a timeout. Whatever arrives after that (a late or duplicated answer) is
delivered too, marked as such, and never changes the final one. Nothing is ever turned into a
silent 0 reward: an answer without a usable progress has ``progress`` None and an outcome that
says why.

Episodes: :meth:`RewardClient.begin_episode` publishes the goal (a new goal starts a new
episode on the node) or, for the same goal, a reset. The node names its episodes itself, so the
client binds its local episode to the node's ``episode_id`` on the answer to the episode's first
request (its anchor frame, ``step`` 0). An answer from another node episode than the bound one
(the reset overtook queued requests, the node's episode restarted, the first request failed so
a later frame became the node's step 0) is ``EPISODE_CHANGED``.

Sending: requests go out in the order they were made, and a resend (a request answered "frame
not there yet") goes out only while it is still the episode's newest request: once a newer
request (or a new episode) came first, resending would make the node score the steps out of
order, so the request ends ``NODE_FAILURE`` instead. Deciding to send and publishing happen
under one lock, so a :meth:`RewardClient.request` from another thread cannot slip in between.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sole_r1_ros.core.status import EstimateStatus, parse_status_text


class Outcome(str, Enum):
    """What became of one reward request (or of one unexpected answer)."""

    OK = "ok"  # the model's progress for the requested frame (or the anchor's defined 0)
    PARSE_FAILED = "parse_failed"  # the model answered unreadably; ``progress`` is the carried-forward value
    NODE_FAILURE = "node_failure"  # the node could not score (no_goal, stale, not_aligned, error, ...)
    QUEUE_OVERFLOW = "queue_overflow"  # the node's request queue was full
    TIMEOUT = "timeout"  # no answer within the timeout (missing)
    LATE = "late"  # an answer that came after its request had timed out
    DUPLICATE = "duplicate"  # a second answer for a request already answered
    OUT_OF_ORDER = "out_of_order"  # answered after a later request of the same episode
    EPISODE_CHANGED = "episode_changed"  # scored in another node episode than the request's
    WRONG_FRAME = "wrong_frame"  # the scored frame is not the requested one
    UNSOLICITED = "unsolicited"  # an answer to a request this client never sent
    RETRYING = "retrying"  # the frame had not reached the node yet; the request is sent again

    def __str__(self) -> str:
        return self.value

    @property
    def usable(self) -> bool:
        """True when the answer's progress may be paired with the request's transition."""
        return self is Outcome.OK


@dataclass(frozen=True)
class ClientSettings:
    """Timeouts and checks of the client (seconds in the client's clock)."""

    timeout_s: float = 30.0  # a request with no answer after this is TIMEOUT
    stamp_tolerance_ns: int = 0  # |stamp_ns - requested| above this is WRONG_FRAME
    accept_parse_failed: bool = False  # True: a parse failure's carried-forward progress counts as OK
    max_pending: int = 10_000  # bound on tracked requests (oldest final ones are forgotten first)
    send_delay_s: float = 0.0  # hold each request this long (sent by poll()): lets its frame arrive first
    max_retries: int = 0  # resend a request answered "frame not there yet" this many times
    retry_delay_s: float = 0.05

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if self.send_delay_s < 0 or self.retry_delay_s < 0 or self.max_retries < 0:
            raise ValueError("send_delay_s, retry_delay_s and max_retries must be >= 0")
        if self.stamp_tolerance_ns < 0:
            raise ValueError("stamp_tolerance_ns must be >= 0")


@dataclass(frozen=True)
class RewardAnswer:
    """One delivered outcome. ``episode`` and ``index`` are the client's (local episode number,
    request index within it: 0 = the anchor); ``final`` is False for late and duplicate ones."""

    request_id: str
    outcome: Outcome
    episode: int
    index: int
    requested_stamp_ns: int | None
    final: bool = True
    progress: float | None = None
    reward: float | None = None
    status: str = ""
    detail: str = ""
    node_episode_id: str = ""
    step: int | None = None
    stamp_ns: int | None = None
    sent_ns: int | None = None
    received_ns: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def usable(self) -> bool:
        """True when the progress may be paired with the transition (a final OK answer)."""
        return self.final and self.outcome.usable and self.progress is not None

    @property
    def latency_s(self) -> float | None:
        """Seconds from sending to the answer (client clock), when both are known."""
        if self.sent_ns is None or self.received_ns is None:
            return None
        return (self.received_ns - self.sent_ns) / 1e9


@dataclass
class _Pending:
    request_id: str
    episode: int
    index: int
    stamp_ns: int
    sent_ns: int
    future: Future[RewardAnswer]
    final: RewardAnswer | None = None
    answers: int = 0
    due_ns: int | None = None  # not published yet: publish at this time
    retries: int = 0
    retry_status: str = ""  # the status of the answer that asked for the last retry


@dataclass
class _EpisodeState:
    goal: str
    node_episode_id: str = ""
    next_index: int = 0
    highest_answered: int = -1


class RewardClient:
    """Requests rewards at chunk boundaries and matches the node's answers to them."""

    def __init__(
        self,
        *,
        publish_goal: Callable[[str], None],
        publish_reset: Callable[[], None],
        publish_request: Callable[[int, str], None],
        clock: Callable[[], int],
        settings: ClientSettings | None = None,
        on_answer: Callable[[RewardAnswer], None] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        self.client_id = client_id or uuid.uuid4().hex[:8]
        self._publish_goal = publish_goal
        self._publish_reset = publish_reset
        self._publish_request = publish_request
        self._clock = clock
        self._on_answer = on_answer
        self._lock = threading.Lock()
        # held from deciding to publish (goal/reset, request, resend) to having published, so the
        # node sees them in the order decided; taken before ``_lock``, never while holding it
        self._send_lock = threading.RLock()
        self._episodes: dict[int, _EpisodeState] = {}
        self._episode = -1
        self._goal = ""
        self._pending: dict[str, _Pending] = {}
        self._bound_ids: dict[str, int] = {}
        self.counts: dict[str, int] = {o.value: 0 for o in Outcome}

    # --- learner side --------------------------------------------------------------------------
    @property
    def episode(self) -> int:
        """The current local episode number (-1 before the first)."""
        return self._episode

    def begin_episode(self, goal: str) -> int:
        """Start a new episode: publish ``goal`` when it differs from the last one, else a reset;
        this client's first episode publishes both, since the node may hold that goal already (a
        restarted learner) and would then go on with its episode. Returns the local episode
        number; its first :meth:`request` is the anchor (step 0)."""
        goal = goal.strip()
        if not goal:
            raise ValueError("goal must not be empty")
        with self._send_lock:
            with self._lock:
                self._episode += 1
                self._episodes[self._episode] = _EpisodeState(goal=goal)
                same, first = goal == self._goal, not self._goal
                self._goal = goal
                episode = self._episode
            if not same:
                self._publish_goal(goal)
            if same or first:
                self._publish_reset()
        return episode

    def request(self, stamp_ns: int) -> Future[RewardAnswer]:
        """Ask for the reward of the frame stamped ``stamp_ns`` in the current episode; the future
        resolves with the request's final answer (or TIMEOUT, via :meth:`poll`)."""
        with self._send_lock:
            with self._lock:
                if self._episode < 0:
                    raise RuntimeError("begin_episode() first")
                ep = self._episodes[self._episode]
                index = ep.next_index
                ep.next_index += 1
                request_id = f"{self.client_id}:{self._episode}:{index}"
                future: Future[RewardAnswer] = Future()
                now = self._clock()
                p = _Pending(request_id, self._episode, index, int(stamp_ns), now, future)
                delayed = self.settings.send_delay_s > 0
                if delayed:
                    p.due_ns = now + int(self.settings.send_delay_s * 1e9)
                self._pending[request_id] = p
                self._forget_old()
            if not delayed:
                self._publish_request(int(stamp_ns), request_id)
        return future

    def in_flight(self) -> int:
        """Requests without a final answer yet."""
        with self._lock:
            return sum(1 for p in self._pending.values() if p.final is None)

    def poll(self) -> list[RewardAnswer]:
        """Send delayed requests and retries that are due (in order) and time out requests older
        than ``timeout_s`` (client clock, from the request). A due retry that is no longer the
        episode's newest request is not resent but ends ``NODE_FAILURE`` (a resend would reorder
        the node's steps). Returns (and delivers) the final outcomes decided here."""
        now = self._clock()
        limit = int(self.settings.timeout_s * 1e9)
        expired: list[RewardAnswer] = []
        due: list[tuple[int, str]] = []
        with self._send_lock:
            with self._lock:
                for p in self._pending.values():
                    if p.final is None and p.due_ns is not None and now >= p.due_ns:
                        p.due_ns = None
                        overtaken = self._overtaken(p) if p.retries > 0 else ""
                        if overtaken:
                            p.final = RewardAnswer(
                                p.request_id, Outcome.NODE_FAILURE, p.episode, p.index, p.stamp_ns,
                                status=p.retry_status, sent_ns=p.sent_ns, received_ns=now,
                                detail=f"not resent after retry {p.retries}: {overtaken} "
                                       "(a resend would reorder the node's steps)")
                            expired.append(p.final)
                        else:
                            due.append((p.stamp_ns, p.request_id))
            for stamp, request_id in due:
                self._publish_request(stamp, request_id)
        with self._lock:
            for p in self._pending.values():
                if p.final is None and now - p.sent_ns > limit:
                    p.final = RewardAnswer(
                        p.request_id, Outcome.TIMEOUT, p.episode, p.index, p.stamp_ns,
                        detail=f"no answer after {self.settings.timeout_s:g} s", sent_ns=p.sent_ns,
                        received_ns=None)
                    expired.append(p.final)
        for answer in expired:
            self._deliver(answer, self._pending_future(answer.request_id))
        return expired

    # --- node side -----------------------------------------------------------------------------
    def handle_estimate(self, text: str) -> RewardAnswer | None:
        """Match one ``~/estimate`` message; returns what was delivered (None for rate-mode
        estimates without a request id, and for other clients' requests)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        request_id = str(data.get("request_id") or "")
        if not request_id:
            return None
        owner, _, _ = request_id.partition(":")
        if owner != self.client_id:
            return None
        now = self._clock()
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is None:
                answer = self._answer(data, Outcome.UNSOLICITED, -1, -1, None, None, now, final=False,
                                      detail="no such request (never sent, or forgotten)")
                future = None
            else:
                answer = self._classify(pending, data, now)
                future = pending.future if answer.final else None
        self._deliver(answer, future)
        return answer

    # --- internals -----------------------------------------------------------------------------
    def _classify(self, p: _Pending, data: dict[str, Any], now: int) -> RewardAnswer:
        """Called with the lock held: the outcome of an answer to a known request."""
        p.answers += 1
        if p.final is not None:
            late = p.final.outcome is Outcome.TIMEOUT and p.answers == 1
            outcome = Outcome.LATE if late else Outcome.DUPLICATE
            return self._answer(data, outcome, p.episode, p.index, p.stamp_ns, p.sent_ns, now, final=False,
                                detail=f"after the final outcome {p.final.outcome.value}")
        ep = self._episodes[p.episode]
        status, role = _parsed_status(data.get("status"))
        if self._frame_not_there_yet(p, ep, data, status, role):
            p.retries += 1
            p.answers -= 1
            p.retry_status = str(data.get("status") or "")
            p.due_ns = now + int(self.settings.retry_delay_s * 1e9)
            return self._answer(data, Outcome.RETRYING, p.episode, p.index, p.stamp_ns, p.sent_ns, now, final=False,
                                detail=f"retry {p.retries}/{self.settings.max_retries}: {data.get('detail', '')}")
        node_episode = str(data.get("episode_id") or "")
        step = data.get("step")
        outcome = Outcome.OK
        detail = str(data.get("detail") or "")
        if status is EstimateStatus.QUEUE_OVERFLOW:
            outcome = Outcome.QUEUE_OVERFLOW
        elif status is None or not status.has_progress:
            outcome = Outcome.NODE_FAILURE
        elif node_episode in self._bound_ids and self._bound_ids[node_episode] != p.episode:
            outcome = Outcome.EPISODE_CHANGED
            detail = f"scored in node episode {node_episode} of local episode {self._bound_ids[node_episode]}"
        elif ep.node_episode_id and node_episode != ep.node_episode_id:
            outcome = Outcome.EPISODE_CHANGED
            detail = f"node episode {node_episode}, expected {ep.node_episode_id}"
        elif not ep.node_episode_id and (p.index != 0 or step != 0):
            outcome = Outcome.EPISODE_CHANGED
            detail = "the episode's anchor frame was not scored as the node's first frame"
        elif ep.node_episode_id and step == 0:
            outcome = Outcome.EPISODE_CHANGED
            detail = "the node started a new episode at this frame"
        elif p.index < ep.highest_answered:
            outcome = Outcome.OUT_OF_ORDER
            detail = f"answered after request {ep.highest_answered}"
        stamp = data.get("stamp_ns")
        if outcome is Outcome.OK and (stamp is None or abs(int(stamp) - p.stamp_ns) > self.settings.stamp_tolerance_ns):
            outcome = Outcome.WRONG_FRAME
            detail = f"scored frame {stamp}, requested {p.stamp_ns}"
        if outcome is Outcome.OK and status is EstimateStatus.PARSE_FAILED and not self.settings.accept_parse_failed:
            outcome = Outcome.PARSE_FAILED
        if outcome is Outcome.OK and not ep.node_episode_id:
            ep.node_episode_id = node_episode
            self._bound_ids[node_episode] = p.episode
        if outcome in (Outcome.OK, Outcome.PARSE_FAILED):
            ep.highest_answered = max(ep.highest_answered, p.index)
        answer = self._answer(data, outcome, p.episode, p.index, p.stamp_ns, p.sent_ns, now, final=True,
                              detail=detail)
        p.final = answer
        return answer

    def _frame_not_there_yet(self, p: _Pending, ep: _EpisodeState, data: dict[str, Any],
                             status: EstimateStatus | None, role: str | None) -> bool:
        """A failure meaning the requested frame had not reached the node, for the episode's newest
        request (resending an older one would reorder the node's steps). For ``not_aligned`` the
        estimate's ``views`` holds the camera's newest stamp: only one older than the request
        means the frame may still come."""
        if p.retries >= self.settings.max_retries or status not in _FRAME_NOT_THERE_YET:
            return False
        if p.episode != self._episode or p.index != ep.next_index - 1:
            return False
        if status is not EstimateStatus.NOT_ALIGNED:
            return True
        views = data.get("views")
        newest = views.get(role) if isinstance(views, dict) and role else None
        return isinstance(newest, int) and newest < p.stamp_ns

    def _overtaken(self, p: _Pending) -> str:
        """Called with the lock held: why resending ``p`` now would reorder the node's steps
        ("" when ``p`` is still the current episode's newest request)."""
        if p.episode != self._episode:
            return f"episode {self._episode} began first"
        newest = self._episodes[p.episode].next_index - 1
        if p.index != newest:
            return f"a newer request, {self.client_id}:{p.episode}:{newest}, was made first"
        return ""

    @staticmethod
    def _answer(data: dict[str, Any], outcome: Outcome, episode: int, index: int, stamp: int | None,
                sent: int | None, now: int, *, final: bool, detail: str) -> RewardAnswer:
        progress = data.get("progress")
        reward = data.get("reward")
        step = data.get("step")
        scored = data.get("stamp_ns")
        return RewardAnswer(
            request_id=str(data.get("request_id") or ""), outcome=outcome, episode=episode, index=index,
            requested_stamp_ns=stamp, final=final,
            progress=float(progress) if isinstance(progress, (int, float)) else None,
            reward=float(reward) if isinstance(reward, (int, float)) else None,
            status=str(data.get("status") or ""), detail=detail, node_episode_id=str(data.get("episode_id") or ""),
            step=int(step) if isinstance(step, int) else None,
            stamp_ns=int(scored) if isinstance(scored, int) else None,
            sent_ns=sent, received_ns=now, raw=data)

    def _pending_future(self, request_id: str) -> Future[RewardAnswer] | None:
        with self._lock:
            p = self._pending.get(request_id)
            return p.future if p else None

    def _deliver(self, answer: RewardAnswer, future: Future[RewardAnswer] | None) -> None:
        with self._lock:
            self.counts[answer.outcome.value] += 1
        if future is not None and not future.done():
            future.set_result(answer)
        if self._on_answer is not None:
            self._on_answer(answer)

    def _forget_old(self) -> None:
        """Called with the lock held: keep at most ``max_pending`` requests, dropping final ones."""
        excess = len(self._pending) - self.settings.max_pending
        if excess <= 0:
            return
        for request_id in [k for k, p in self._pending.items() if p.final is not None][:excess]:
            del self._pending[request_id]


_FRAME_NOT_THERE_YET = frozenset({EstimateStatus.NOT_ALIGNED, EstimateStatus.VIEW_MISSING, EstimateStatus.NO_FRAMES})


def _parsed_status(text: object) -> tuple[EstimateStatus | None, str | None]:
    """An estimate's status and camera role; (None, None) for a status this client does not know."""
    try:
        return parse_status_text(str(text or ""))
    except ValueError:
        return None, None


__all__ = ["ClientSettings", "Outcome", "RewardAnswer", "RewardClient"]
