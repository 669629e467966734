"""The synthetic tabletop as an interactive gymnasium ``Env``.

Scenes (layout, colours, table, lighting, goal text) come from the synthetic-episode generator
(:mod:`sole_r1_tools.synth.episodes`) and frames from its renderer
(:class:`~sole_r1_tools.synth.scene.SceneRenderer`), so the reward model sees the domain it was
trained on. Kinematics are simple on purpose: the tool centre point moves by the action (a
velocity command, clipped to ``max_step_m`` per step and to the table), a low gripper pushes
blocks out of its way (a disc against the blocks' inscribed circles), and, with ``grip=True``, a
fourth action dimension closes the fingers around a block under them (grasp) and opens them
(release onto the table).

Observations are low-dimensional state (no pixels): gripper position, the goal block's position
and the goal point (reach: just above the block; push: the zone's centre), and their offsets.
The env's ``reward`` and ``info['true_progress']`` / ``info['success']`` are *ground truth*
(:func:`~sole_r1_tools.synth.episodes.task_progress`), for evaluation and the ground-truth
baseline only; a learner trained on the reward model never sees them (the ROS driver keeps them
in a log file). Episodes end by the time limit only (``truncated``), never by true success.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sole_r1_tools.synth.episodes import (
    REACH_ABOVE,
    TASK_KINDS,
    TaskSpec,
    _sample_layout,  # the generator's scene sampler, reused on purpose
    task_progress,
)
from sole_r1_tools.synth.scene import (
    DEFAULT_SIZE,
    MAX_OPENING,
    TABLE_EXTENT,
    Scene,
    SceneRenderer,
    SceneState,
)

TASKS = ("reach", "push")
PUSH_RADIUS = 0.03  # half the width of the gripper's pushing front
Z_RANGE = (0.01, 0.25)
GRASP_RADIUS = 0.025
DEFAULT_START_NS = 1_700_000_000_000_000_000


class TabletopEnv(gym.Env[np.ndarray, np.ndarray]):
    """Reach or push on the synthetic tabletop; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str = "reach", *, max_steps: int = 20, dt: float = 0.1, max_step_m: float = 0.05,
                 size: tuple[int, int] = DEFAULT_SIZE, grip: bool = False, sensor_noise: bool = True,
                 start_ns: int = DEFAULT_START_NS) -> None:
        if task not in TASKS or task not in TASK_KINDS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if max_steps < 1 or dt <= 0 or max_step_m <= 0:
            raise ValueError("max_steps >= 1, dt > 0 and max_step_m > 0 required")
        self.task = task
        self.max_steps = int(max_steps)
        self.dt = float(dt)
        self.max_step_m = float(max_step_m)
        self.size = size
        self.grip = bool(grip)
        self.sensor_noise = sensor_noise
        self.start_ns = int(start_ns)
        n_act = 4 if grip else 3
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n_act,), dtype=np.float32)
        n_obs = 9 if task == "reach" else 13
        self.observation_space = spaces.Box(-2.0, 2.0, shape=(n_obs,), dtype=np.float32)
        self.scene: Scene | None = None
        self.spec_task: TaskSpec | None = None
        self.goal = ""
        self._renderer: SceneRenderer | None = None
        self._state: SceneState | None = None
        self._initial: SceneState | None = None
        self._noise_rng = np.random.default_rng(0)
        self.steps = 0
        self.episode_seed = 0

    # --- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new scene from ``seed`` (the same seed gives the same scene and goal)."""
        super().reset(seed=seed)
        self.episode_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31))
        rng = np.random.default_rng([self.episode_seed, TASK_KINDS.index(self.task)])
        layout = None
        while layout is None:
            layout = _sample_layout(rng, self.task, None, None)
        self.scene, self.spec_task, self.goal = layout.scene, layout.task, layout.task.goal
        g = layout.state.gripper.copy()
        self._state = SceneState(g, layout.state.poses.copy(), -1)
        self._initial = self._state
        self._renderer = None
        self._noise_rng = np.random.default_rng([self.episode_seed, 7])
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one action; ``reward`` is the ground-truth progress (evaluation only)."""
        if self._state is None:
            raise RuntimeError("reset() first")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape[0] != self.action_space.shape[0]:
            raise ValueError(f"action must have {self.action_space.shape[0]} values, got {a.shape[0]}")
        self._apply(a)
        self.steps += 1
        info = self._info()
        truncated = self.steps >= self.max_steps
        return self._obs(), float(info["true_progress"]), False, truncated, info

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The external camera's view (gymnasium's ``rgb_array``)."""
        return self.render_views()["external"]

    # --- extras ----------------------------------------------------------------------------------
    def render_views(self) -> dict[str, np.ndarray]:
        """Both cameras' RGB uint8 images of the current state, keyed by role."""
        if self._state is None or self.scene is None:
            raise RuntimeError("reset() first")
        if self._renderer is None:
            self._renderer = SceneRenderer(self.scene, self.size)
        return self._renderer.render(self._state, rng=self._noise_rng if self.sensor_noise else None)

    def stamp_ns(self) -> int:
        """Simulated time of the current state: ``start_ns + steps * dt``."""
        return self.start_ns + int(round(self.steps * self.dt * 1e9))

    @property
    def state(self) -> SceneState:
        if self._state is None:
            raise RuntimeError("reset() first")
        return self._state

    # --- internals ------------------------------------------------------------------------------
    def _goal_point(self) -> np.ndarray:
        assert self.scene is not None and self.spec_task is not None and self._state is not None
        i = self.spec_task.target
        pose = self._state.poses[i]
        if self.task == "reach":
            return np.array([pose[0], pose[1], pose[2] + self.scene.objects[i].height + REACH_ABOVE])
        assert self.scene.zone is not None
        return np.array([self.scene.zone.cx, self.scene.zone.cy, 0.0])

    def _obs(self) -> np.ndarray:
        assert self.spec_task is not None and self._state is not None
        g = self._state.gripper[:3]
        block = self._state.poses[self.spec_task.target][:3]
        goal = self._goal_point()
        if self.task == "reach":
            parts = [g, goal, goal - g]
        else:
            parts = [g, block, block - g, goal[:2], goal[:2] - block[:2]]
        return np.concatenate(parts).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        assert self.scene is not None and self.spec_task is not None
        assert self._state is not None and self._initial is not None
        progress, phase = task_progress(self.spec_task, self.scene, self._state, self._initial)
        return {"true_progress": float(progress), "success": bool(progress >= 1.0), "phase": phase,
                "stamp_ns": self.stamp_ns(), "seed": self.episode_seed, "goal": self.goal}

    def _apply(self, a: np.ndarray) -> None:
        assert self.scene is not None and self._state is not None
        g = self._state.gripper.copy()
        poses = self._state.poses.copy()
        holding = self._state.holding
        x0, y0, x1, y1 = TABLE_EXTENT
        delta = a[:3] * self.max_step_m
        substeps = 4
        for _ in range(substeps):
            g[0] = float(np.clip(g[0] + delta[0] / substeps, x0 + 0.02, x1 - 0.02))
            g[1] = float(np.clip(g[1] + delta[1] / substeps, y0 + 0.02, y1 - 0.02))
            g[2] = float(np.clip(g[2] + delta[2] / substeps, *Z_RANGE))
            if holding >= 0:
                poses[holding, :2] = g[:2]
                poses[holding, 2] = max(0.0, g[2] - self.scene.objects[holding].height)
            else:
                self._push(g, poses, delta[:2] / substeps)
        if self.grip:
            holding = self._grip(float(a[3]), g, poses, holding)
        g[3] = math.atan2(g[1] + 0.34, g[0] - 0.5)  # the arm's natural yaw, as in the generator
        self._state = SceneState(g, poses, holding)

    def _push(self, g: np.ndarray, poses: np.ndarray, motion: np.ndarray) -> None:
        """A low gripper moving in ``motion`` (xy) pushes a block in its path straight ahead: the
        fingers and palm form a flat front ``PUSH_RADIUS`` wide on each side of the centre."""
        assert self.scene is not None
        speed = float(np.hypot(*motion))
        if speed < 1e-9:
            return
        fwd = motion / speed
        lat = np.array([-fwd[1], fwd[0]])
        for i, obj in enumerate(self.scene.objects):
            if g[2] >= poses[i, 2] + obj.height - 0.005:
                continue  # the fingertips are above its top: they pass over it
            d = poses[i, :2] - g[:2]
            along, across = float(d @ fwd), float(d @ lat)
            reach = PUSH_RADIUS / 2 + obj.size / 2
            if abs(across) < PUSH_RADIUS + obj.size / 2 and -reach < along < reach:
                poses[i, :2] += fwd * (reach - along)

    def _grip(self, command: float, g: np.ndarray, poses: np.ndarray, holding: int) -> int:
        assert self.scene is not None
        if command < 0 and holding < 0:
            for i, obj in enumerate(self.scene.objects):
                top = poses[i, 2] + obj.height
                if obj.shape == "block" and np.hypot(*(poses[i, :2] - g[:2])) < GRASP_RADIUS and \
                        abs(g[2] - top) < 0.03:
                    g[4] = obj.size
                    return i
            g[4] = 0.02
        elif command >= 0:
            if holding >= 0:
                poses[holding, 2] = 0.0
            g[4] = MAX_OPENING
            return -1
        return holding
