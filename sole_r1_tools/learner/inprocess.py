"""In-process stand-ins for the ROS side, for the baselines: the env as a :class:`ChunkEnv` and
the ground-truth reward answered through the real :class:`RewardClient` (same matching code as
the node's answers, just immediate)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sole_r1_ros.learner.client import ClientSettings, RewardClient
from sole_r1_tools.sim.env import TabletopEnv


class LocalChunkEnv:
    """A :class:`TabletopEnv` stepped a chunk at a time; ground truth goes to ``gt_log`` only."""

    def __init__(self, env: TabletopEnv) -> None:
        self.env = env
        self.episode = -1
        self.tag = ""
        self.gt_log: list[dict[str, Any]] = []
        self._next_start_ns = env.start_ns

    def reset(self, seed: int, tag: str) -> tuple[np.ndarray, int, str, int]:
        self.env.start_ns = self._next_start_ns
        obs, info = self.env.reset(seed=seed)
        self.episode += 1
        self.tag = tag
        self._log(info, truncated=False)
        return obs, self.env.stamp_ns(), self.env.goal, self.episode

    def step_chunk(self, actions: np.ndarray) -> tuple[np.ndarray, int, bool]:
        truncated = False
        obs = None
        info: dict[str, Any] = {}
        for a in actions:
            obs, _, _, truncated, info = self.env.step(a)
            if truncated:
                break
        assert obs is not None
        self._next_start_ns = self.env.stamp_ns() + int(self.env.dt * 1e9)
        self._log(info, truncated=truncated)
        return obs, self.env.stamp_ns(), truncated

    def true_progress(self) -> float:
        return float(self.env._info()["true_progress"])  # noqa: SLF001

    def _log(self, info: dict[str, Any], *, truncated: bool) -> None:
        self.gt_log.append({"env_episode": self.episode, "tag": self.tag, "seed": self.env.episode_seed,
                            "step": self.env.steps, "stamp_ns": self.env.stamp_ns(),
                            "true_progress": info["true_progress"], "success": info["success"],
                            "truncated": truncated})


def ground_truth_client(env: LocalChunkEnv, **kw: Any) -> RewardClient:
    """A :class:`RewardClient` whose 'node' answers every request at once with the true progress
    of the env's current state (requests are made right after the frame they name)."""
    state = {"episode": 0, "step": 0}
    holder: list[RewardClient] = []

    def publish_goal(_goal: str) -> None:
        state["episode"] += 1
        state["step"] = 0

    def publish_request(stamp_ns: int, request_id: str) -> None:
        step = state["step"]
        state["step"] += 1
        answer = {"request_id": request_id, "status": "first_frame" if step == 0 else "ok",
                  "episode_id": f"gt{state['episode']}", "step": step, "stamp_ns": stamp_ns,
                  "requested_stamp_ns": stamp_ns, "progress": 0.0 if step == 0 else env.true_progress()}
        holder[0].handle_estimate(json.dumps(answer))

    client = RewardClient(publish_goal=publish_goal, publish_reset=lambda: publish_goal(""),
                          publish_request=publish_request, clock=lambda: 0,
                          settings=kw.pop("settings", ClientSettings()), **kw)
    holder.append(client)
    return client
