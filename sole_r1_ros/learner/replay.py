"""A replay buffer that holds chunk transitions until the node's reward for them arrives.

One transition is one action chunk: observation at the chunk's start, the H actions, the
observation at its end. Its reward comes from the answer to the request made at the chunk's end
frame (request index ``k + 1`` of the episode; index 0 is the episode's anchor frame, defined 0 %).

Reward modes, computed here from the answers' progress ``p`` (so the node may run in any mode):

- ``progress``: ``r_k = p_{k+1}`` (the paper's choice);
- ``delta``: ``r_k = p_{k+1} - p_k``;
- ``potential``: ``r_k = gamma**H * p_{k+1} - p_k`` (shaping with the chunk's discount);
- ``node``: the node's own ``reward`` field (whatever ``reward.mode`` the node runs).

``delta`` and ``potential`` need the previous boundary's answer too; when that one failed the
transition cannot be labelled and is dropped (reason ``predecessor_failed``).

Chunk rewards: only the chunk's end frame is scored, so the per-step rewards inside a chunk are
not observed. ``chunk_reward="end"`` uses the boundary reward as the chunk's reward
(``R = r_k``); ``"discounted_sum"`` assumes every step of the chunk earned it and discounts inside
the chunk as a per-step learner would, ``R = sum_{i<H} gamma**i r_k``. Either way the critic's
target is ``R + gamma**H * Q(s_{k+1}, a')``: a chunk is one decision of H steps.

Policies for transitions whose reward is not there yet:

- ``wait``: nothing may be sampled while any transition is pending (the learner waits);
- ``drop_after_timeout``: labelled transitions are sampled at once; a pending one older than
  ``timeout_s`` is dropped (by :meth:`RelabelBuffer.expire`, on the buffer's clock, which must be
  given for this policy: the ROS clock for sim-time seconds, ``time.monotonic_ns`` for wall time);
- ``relabelled_ratio``: sampling starts once at least ``ratio`` of the transitions added so far
  are labelled, and then draws labelled ones only (Robometer's asynchronous relabelling).

Every transition ends either labelled or dropped with a reason (the answer's outcome or
``timeout`` / ``predecessor_failed``); :attr:`RelabelBuffer.dropped` counts them.

Memory: the answers are kept per episode and request index only while a transition may still
need them. An episode is *over* once a transition of a later episode is added (the learner adds
an episode's transitions before it begins the next one) or :meth:`RelabelBuffer.end_episode`
says so; an over episode's answers are forgotten as soon as none of its transitions is pending
(when the last one is labelled or dropped), and answers that arrive for it after that are
ignored. A transition added to an episode that is over may find its answers gone (it then waits
for the timeout, or for ever under ``wait``).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sole_r1_ros.learner.client import RewardAnswer

REWARD_MODES = ("progress", "delta", "potential", "node")
CHUNK_REWARDS = ("end", "discounted_sum")
POLICIES = ("wait", "drop_after_timeout", "relabelled_ratio")


@dataclass(frozen=True)
class BufferSettings:
    """How rewards are formed and when transitions may be sampled."""

    capacity: int = 100_000
    reward_mode: str = "progress"
    chunk_reward: str = "end"
    gamma: float = 0.99
    horizon: int = 4  # H, the chunk length
    policy: str = "drop_after_timeout"
    timeout_s: float = 60.0
    ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}")
        if self.chunk_reward not in CHUNK_REWARDS:
            raise ValueError(f"chunk_reward must be one of {CHUNK_REWARDS}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        if self.capacity < 1 or self.horizon < 1:
            raise ValueError("capacity and horizon must be >= 1")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError("ratio must be in [0, 1]")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError("gamma must be in (0, 1]")

    def chunk_return(self, reward: float) -> float:
        """The chunk's reward ``R`` from the boundary reward (see the module docstring)."""
        if self.chunk_reward == "end":
            return reward
        return reward * sum(self.gamma ** i for i in range(self.horizon))


@dataclass(frozen=True)
class _Boundary:
    """The answer for one request (chunk boundary): progress and node reward, None when it failed."""

    progress: float | None
    node_reward: float | None
    failure: str = ""  # the failed answer's outcome


@dataclass
class ChunkTransition:
    """One chunk: ``obs`` -> ``actions`` (H x action dim) -> ``next_obs``. ``terminal``: no
    bootstrap from ``next_obs`` (a time limit is not terminal)."""

    episode: int
    chunk: int
    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    terminal: bool = False
    added_ns: int = 0
    reward: float | None = None
    progress: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Stacked sampled transitions (numpy)."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminals: np.ndarray


class RelabelBuffer:
    """Pending transitions keyed by (episode, chunk); fed by the client's answers."""

    def __init__(self, settings: BufferSettings | None = None, *, clock: Callable[[], int] | None = None) -> None:
        """``clock`` (nanoseconds) stamps added transitions; it is required with the
        ``drop_after_timeout`` policy, whose ``timeout_s`` is measured on it."""
        self.settings = settings or BufferSettings()
        if clock is None and self.settings.policy == "drop_after_timeout":
            raise ValueError("clock is required with policy 'drop_after_timeout' (timeout_s is measured on it): "
                             "pass clock=, e.g. the ROS clock's nanoseconds or time.monotonic_ns")
        self._clock = clock or time.monotonic_ns
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], ChunkTransition] = {}
        self._labelled: collections.deque[ChunkTransition] = collections.deque(maxlen=self.settings.capacity)
        # episode -> request index -> its final answer; only while a transition may need it
        self._answers: dict[int, dict[int, _Boundary]] = {}
        self._pending_per_episode: dict[int, int] = {}  # episodes with pending transitions only
        self._newest_episode = -1  # the newest episode a transition was added to; older ones are over
        self._ended: set[int] = set()  # episodes declared over by end_episode, not older than the newest
        self.added = 0
        self.labelled_total = 0
        self.dropped: collections.Counter[str] = collections.Counter()

    # --- filling -------------------------------------------------------------------------------
    def add(self, transition: ChunkTransition) -> None:
        """Hold a transition until the answer for its end frame (request ``chunk + 1``) arrives."""
        with self._lock:
            episode = transition.episode
            key = (episode, transition.chunk)
            transition.added_ns = self._clock()
            if key not in self._pending:
                self._pending_per_episode[episode] = self._pending_per_episode.get(episode, 0) + 1
            self._pending[key] = transition
            self.added += 1
            if episode > self._newest_episode:  # the episodes before it are over
                self._newest_episode = episode
                self._ended = {e for e in self._ended if e >= episode}
                for old in [e for e in self._answers if e < episode]:
                    self._forget_if_resolved(old)
            self._try_label(episode, transition.chunk)

    def on_answer(self, answer: RewardAnswer) -> None:
        """Feed one client answer (late/duplicate ones are ignored: the final one decided)."""
        if not answer.final:
            return
        with self._lock:
            episode = answer.episode
            if self._over(episode) and episode not in self._pending_per_episode:
                return  # no transition of a finished episode is left to use it
            usable = answer.usable
            self._answers.setdefault(episode, {})[answer.index] = _Boundary(
                answer.progress if usable else None, answer.reward if usable else None,
                "" if usable else answer.outcome.value)
            self._try_label(episode, answer.index - 1)
            self._try_label(episode, answer.index)

    def expire(self) -> int:
        """``drop_after_timeout``: drop pending transitions older than ``timeout_s``; returns how many."""
        if self.settings.policy != "drop_after_timeout":
            return 0
        now = self._clock()
        limit = int(self.settings.timeout_s * 1e9)
        with self._lock:
            old = [k for k, t in self._pending.items() if now - t.added_ns > limit]
            for key in old:
                self._drop(key, "timeout")
        return len(old)

    def end_episode(self, episode: int) -> None:
        """Declare ``episode`` over (no more transitions come for it): its answers are forgotten
        now if none of its transitions is pending, else when the last one is labelled or dropped.
        Optional: adding a transition of a later episode declares it over too."""
        with self._lock:
            if episode >= self._newest_episode:
                self._ended.add(episode)
            self._forget_if_resolved(episode)

    # --- sampling ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Transitions still waiting for their reward."""
        with self._lock:
            return len(self._pending)

    def __len__(self) -> int:
        with self._lock:
            return len(self._labelled)

    def can_sample(self, batch_size: int = 1) -> bool:
        """Whether the policy allows sampling ``batch_size`` transitions now."""
        with self._lock:
            if len(self._labelled) < max(1, batch_size):
                return False
            if self.settings.policy == "wait":
                return not self._pending
            if self.settings.policy == "relabelled_ratio":
                resolved = self.labelled_total + len(self._pending)
                return resolved > 0 and self.labelled_total / resolved >= self.settings.ratio
            return True

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Draw ``batch_size`` labelled transitions uniformly, with replacement; raises
        ``RuntimeError`` when the policy allows no sampling now (``can_sample(1)`` is False)."""
        if not self.can_sample(1):
            raise RuntimeError("nothing may be sampled now (see can_sample)")
        with self._lock:
            idx = rng.integers(0, len(self._labelled), size=batch_size)
            items = [self._labelled[int(i)] for i in idx]
        return Batch(
            obs=np.stack([t.obs for t in items]).astype(np.float32),
            actions=np.stack([t.actions for t in items]).astype(np.float32),
            rewards=np.array([t.reward for t in items], dtype=np.float32),
            next_obs=np.stack([t.next_obs for t in items]).astype(np.float32),
            terminals=np.array([t.terminal for t in items], dtype=np.float32),
        )

    def labelled(self) -> Sequence[ChunkTransition]:
        """A snapshot of the labelled transitions (oldest first)."""
        with self._lock:
            return list(self._labelled)

    # --- internals (lock held) -----------------------------------------------------------------
    def _over(self, episode: int) -> bool:
        return episode < self._newest_episode or episode in self._ended

    def _forget_if_resolved(self, episode: int) -> None:
        """Forget an episode's answers once it is over and none of its transitions is pending."""
        if self._over(episode) and episode not in self._pending_per_episode:
            self._answers.pop(episode, None)

    def _resolve(self, key: tuple[int, int]) -> ChunkTransition | None:
        """Take a transition out of the pending ones (it was labelled or dropped)."""
        t = self._pending.pop(key, None)
        if t is not None:
            episode = key[0]
            left = self._pending_per_episode[episode] - 1
            if left:
                self._pending_per_episode[episode] = left
            else:
                del self._pending_per_episode[episode]
                self._forget_if_resolved(episode)
        return t

    def _drop(self, key: tuple[int, int], reason: str) -> None:
        if self._resolve(key) is not None:
            self.dropped[reason] += 1

    def _try_label(self, episode: int, chunk: int) -> None:
        t = self._pending.get((episode, chunk))
        if t is None:
            return
        answers = self._answers.get(episode, {})
        end = answers.get(chunk + 1)
        if end is None:
            return
        p_end = end.progress
        if p_end is None:
            self._drop((episode, chunk), end.failure or "failed")
            return
        mode = self.settings.reward_mode
        if mode == "progress":
            reward = p_end
        elif mode == "node":
            if end.node_reward is None:
                self._drop((episode, chunk), "no_node_reward")
                return
            reward = end.node_reward
        else:
            start = answers.get(chunk)
            if start is None:
                return
            if start.progress is None:
                self._drop((episode, chunk), "predecessor_failed")
                return
            discount = self.settings.gamma ** self.settings.horizon if mode == "potential" else 1.0
            reward = discount * p_end - start.progress
        if not math.isfinite(reward):
            self._drop((episode, chunk), "non_finite")
            return
        self._resolve((episode, chunk))
        t.progress = p_end
        t.reward = self.settings.chunk_return(reward)
        self._labelled.append(t)
        self.labelled_total += 1


__all__ = ["CHUNK_REWARDS", "POLICIES", "REWARD_MODES", "Batch", "BufferSettings", "ChunkTransition",
           "RelabelBuffer"]
