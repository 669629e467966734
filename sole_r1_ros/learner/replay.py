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
  ``timeout_s`` (buffer clock) is dropped;
- ``relabelled_ratio``: sampling starts once at least ``ratio`` of the transitions added so far
  are labelled, and then draws labelled ones only (Robometer's asynchronous relabelling).

Every transition ends either labelled or dropped with a reason (the answer's outcome or
``timeout`` / ``predecessor_failed``); :attr:`RelabelBuffer.dropped` counts them.
"""

from __future__ import annotations

import collections
import math
import threading
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
        self.settings = settings or BufferSettings()
        self._clock = clock or (lambda: 0)
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], ChunkTransition] = {}
        self._labelled: collections.deque[ChunkTransition] = collections.deque(maxlen=self.settings.capacity)
        # progress per (episode, request index); None = that request failed
        self._progress: dict[tuple[int, int], float | None] = {}
        self._node_reward: dict[tuple[int, int], float | None] = {}
        self._failure: dict[tuple[int, int], str] = {}
        self.added = 0
        self.labelled_total = 0
        self.dropped: collections.Counter[str] = collections.Counter()

    # --- filling -------------------------------------------------------------------------------
    def add(self, transition: ChunkTransition) -> None:
        """Hold a transition until the answer for its end frame (request ``chunk + 1``) arrives."""
        with self._lock:
            transition.added_ns = self._clock()
            self._pending[(transition.episode, transition.chunk)] = transition
            self.added += 1
            self._try_label(transition.episode, transition.chunk)

    def on_answer(self, answer: RewardAnswer) -> None:
        """Feed one client answer (late/duplicate ones are ignored: the final one decided)."""
        if not answer.final:
            return
        with self._lock:
            key = (answer.episode, answer.index)
            usable = answer.usable
            self._progress[key] = answer.progress if usable else None
            self._node_reward[key] = answer.reward if usable else None
            if not usable:
                self._failure[key] = answer.outcome.value
            self._try_label(answer.episode, answer.index - 1)
            self._try_label(answer.episode, answer.index)

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
        """Forget the per-request progress of a finished, fully resolved episode (memory)."""
        with self._lock:
            if any(k[0] == episode for k in self._pending):
                return
            for key in [k for k in self._progress if k[0] == episode]:
                del self._progress[key]
                self._node_reward.pop(key, None)
                self._failure.pop(key, None)

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
    def _drop(self, key: tuple[int, int], reason: str) -> None:
        if self._pending.pop(key, None) is not None:
            self.dropped[reason] += 1

    def _try_label(self, episode: int, chunk: int) -> None:
        t = self._pending.get((episode, chunk))
        if t is None:
            return
        end_key = (episode, chunk + 1)
        if end_key not in self._progress:
            return
        p_end = self._progress[end_key]
        if p_end is None:
            self._drop((episode, chunk), self._failure.get(end_key, "failed"))
            return
        mode = self.settings.reward_mode
        if mode == "progress":
            reward = p_end
        elif mode == "node":
            node = self._node_reward.get(end_key)
            if node is None:
                self._drop((episode, chunk), "no_node_reward")
                return
            reward = node
        else:
            start_key = (episode, chunk)
            if start_key not in self._progress:
                return
            p_start = self._progress[start_key]
            if p_start is None:
                self._drop((episode, chunk), "predecessor_failed")
                return
            discount = self.settings.gamma ** self.settings.horizon if mode == "potential" else 1.0
            reward = discount * p_end - p_start
        if not math.isfinite(reward):
            self._drop((episode, chunk), "non_finite")
            return
        del self._pending[(episode, chunk)]
        t.progress = p_end
        t.reward = self.settings.chunk_return(reward)
        self._labelled.append(t)
        self.labelled_total += 1


__all__ = ["CHUNK_REWARDS", "POLICIES", "REWARD_MODES", "Batch", "BufferSettings", "ChunkTransition",
           "RelabelBuffer"]
