"""The learning loop shared by the ROS learner node and the in-process baselines.

It sees an environment only through :class:`ChunkEnv` (reset to a seed, run one chunk, get the
low-dimensional state and the end frame's stamp back) and rewards only through a client with
:class:`~sole_r1_ros.learner.client.RewardClient`'s interface (``begin_episode``, ``request``,
``in_flight``, ``poll``). Per episode: the anchor frame is requested at reset, then one request
per chunk at its end frame; the transition waits in the :class:`RelabelBuffer` until its answer
comes. Ground truth never enters this module: a :class:`ChunkEnv` logs it aside (the ROS driver to
a file) and the runner joins it with this loop's log afterwards, by the env's episode number.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sole_r1_ros.learner.client import RewardAnswer
from sole_r1_ros.learner.replay import ChunkTransition, RelabelBuffer
from sole_r1_tools.learner.sac import ChunkSAC

EVAL_SEED_BASE = 1_000_000


class ChunkEnv(Protocol):
    def reset(self, seed: int, tag: str) -> tuple[np.ndarray, int, str, int]:
        """-> (obs, stamp_ns of the first frame, goal, env episode number)."""

    def step_chunk(self, actions: np.ndarray) -> tuple[np.ndarray, int, bool]:
        """-> (obs after the chunk, stamp_ns of its last frame, truncated)."""


class Rewards(Protocol):
    def begin_episode(self, goal: str) -> int: ...

    def request(self, stamp_ns: int) -> Future[RewardAnswer]: ...

    def in_flight(self) -> int: ...

    def poll(self) -> list[RewardAnswer]: ...


@dataclass
class LoopSettings:
    total_steps: int = 4000
    horizon: int = 4
    chunks_per_episode: int = 5
    warmup_steps: int = 400
    updates_per_chunk: int = 2
    batch_size: int = 128
    max_in_flight: int = 3
    eval_every: int = 1000
    eval_episodes: int = 10
    done_threshold: float = 0.9  # perceived success: final progress at or above this
    answer_wait_s: float = 60.0
    seed: int = 0


@dataclass
class LoopLog:
    """JSON lines: one per training episode, evaluation episode and the final summary."""

    path: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def _progress_of(future: Future[RewardAnswer], wait_s: float, rewards: Rewards) -> tuple[float | None, str]:
    deadline = time.monotonic() + wait_s
    while not future.done() and time.monotonic() < deadline:
        rewards.poll()
        time.sleep(0.005)
    if not future.done():
        return None, "timeout"
    answer = future.result()
    return (answer.progress if answer.usable else None), answer.outcome.value


class ChunkLearner:
    """Trains a :class:`ChunkSAC` from the rewards a client delivers into a :class:`RelabelBuffer`."""

    def __init__(self, env: ChunkEnv, rewards: Rewards, buffer: RelabelBuffer, agent: ChunkSAC | None,
                 settings: LoopSettings, log: LoopLog, *, action_dim: int,
                 policy: str = "sac") -> None:
        self.env, self.rewards, self.buffer, self.agent = env, rewards, buffer, agent
        self.s, self.log = settings, log
        self.action_dim = action_dim
        self.policy = policy  # "sac" or "random"
        self.rng = np.random.default_rng(settings.seed)
        self.steps = 0
        self.episodes = 0
        self._episode_ends: list[tuple[int, int, list[int], list[float], Future[RewardAnswer]]] = []

    def _chunk(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        if self.policy == "random" or self.agent is None or (not deterministic and self.steps < self.s.warmup_steps):
            return self.rng.uniform(-1.0, 1.0, size=(self.s.horizon, self.action_dim)).astype(np.float32)
        return self.agent.act(obs, deterministic)

    def _train_a_bit(self) -> bool:
        if self.agent is None or self.policy == "random" or self.steps < self.s.warmup_steps:
            return False
        self.buffer.expire()
        if not self.buffer.can_sample(self.s.batch_size):
            return False
        self.agent.update(self.buffer.sample(self.s.batch_size, self.rng))
        return True

    def _wait_for_capacity(self, limit: int) -> None:
        deadline = time.monotonic() + self.s.answer_wait_s
        while self.rewards.in_flight() > limit and time.monotonic() < deadline:
            self.rewards.poll()
            if not self._train_a_bit():
                time.sleep(0.005)

    def _flush_episode_ends(self, *, wait: bool) -> None:
        keep = []
        for env_episode, local, stamps, final_obs, future in self._episode_ends:
            if not future.done() and not wait:
                keep.append((env_episode, local, stamps, final_obs, future))
                continue
            progress, outcome = _progress_of(future, self.s.answer_wait_s, self.rewards)
            self.log.write({"kind": "train_episode", "env_episode": env_episode, "episode": local, "stamps": stamps,
                            "final_obs": final_obs,
                            "final_progress": progress, "outcome": outcome,
                            "perceived_success": progress is not None and progress >= self.s.done_threshold})
        self._episode_ends = keep

    def train_episode(self) -> None:
        """One training episode (the anchor request, then one per chunk)."""
        seed = int(self.s.seed * 100_000 + self.episodes)
        obs, stamp, goal, env_episode = self.env.reset(seed, "train")
        # requests still queued on the node would be scored in the new episode: drain them first
        self._wait_for_capacity(0)
        local = self.rewards.begin_episode(goal)
        self.rewards.request(stamp)
        stamps = [stamp]
        last: Future[RewardAnswer] | None = None
        for k in range(self.s.chunks_per_episode):
            actions = self._chunk(obs, deterministic=False)
            next_obs, stamp, truncated = self.env.step_chunk(actions)
            self._wait_for_capacity(self.s.max_in_flight)
            last = self.rewards.request(stamp)
            stamps.append(stamp)
            self.buffer.add(ChunkTransition(local, k, obs, actions, next_obs, terminal=False))
            self.steps += self.s.horizon
            for _ in range(self.s.updates_per_chunk):
                self._train_a_bit()
            obs = next_obs
            if truncated:
                break
        assert last is not None
        self._episode_ends.append((env_episode, local, stamps, [round(float(v), 4) for v in obs], last))
        self._flush_episode_ends(wait=False)
        self.episodes += 1

    def evaluate(self, at_steps: int) -> None:
        """``eval_episodes`` deterministic episodes on fixed seeds; only the final frame is
        scored (anchor + one request), for perceived success."""
        for i in range(self.s.eval_episodes):
            seed = EVAL_SEED_BASE + i
            self._wait_for_capacity(0)
            obs, stamp, goal, env_episode = self.env.reset(seed, f"eval@{at_steps}")
            local = self.rewards.begin_episode(goal)
            self.rewards.request(stamp)
            stamps = [stamp]
            for _ in range(self.s.chunks_per_episode):
                obs, stamp, truncated = self.env.step_chunk(self._chunk(obs, deterministic=True))
                if truncated:
                    break
            stamps.append(stamp)
            progress, outcome = _progress_of(self.rewards.request(stamp), self.s.answer_wait_s, self.rewards)
            self.log.write({"kind": "eval", "at_steps": at_steps, "env_episode": env_episode, "episode": local,
                            "stamps": stamps, "seed": seed, "final_obs": [round(float(v), 4) for v in obs],
                            "final_progress": progress, "outcome": outcome,
                            "perceived_success": progress is not None and progress >= self.s.done_threshold})

    def run(self, progress: Callable[[str], None] | None = None) -> None:
        """Train for ``total_steps`` env steps, evaluating at 0 and every ``eval_every`` steps."""
        t0 = time.monotonic()
        next_eval = 0
        while True:
            if self.steps >= next_eval:
                self._flush_episode_ends(wait=True)
                self.evaluate(next_eval)
                if progress is not None:
                    progress(f"{self.steps} steps, {self.episodes} episodes, {time.monotonic() - t0:.0f} s")
                next_eval += self.s.eval_every
            if self.steps >= self.s.total_steps:
                break
            self.train_episode()
        self._flush_episode_ends(wait=True)
        self._wait_for_capacity(0)
        self.log.write({"kind": "summary", "steps": self.steps, "episodes": self.episodes,
                        "updates": self.agent.updates if self.agent else 0, "wall_s": time.monotonic() - t0,
                        "buffer": {"added": self.buffer.added, "labelled": self.buffer.labelled_total,
                                   "pending": self.buffer.pending, "dropped": dict(self.buffer.dropped)}})
