"""The interactive tabletop (gymnasium Env): scenes, kinematics, ground truth kept in info."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sole_r1_tools.sim.env import TabletopEnv
from sole_r1_tools.synth.scene import SceneState


def test_passes_the_gymnasium_checker() -> None:
    for task in ("reach", "push"):
        check_env(TabletopEnv(task), skip_render_check=True)


def test_same_seed_same_scene_and_goal() -> None:
    a, b = TabletopEnv("reach"), TabletopEnv("reach")
    oa, ia = a.reset(seed=11)
    ob, ib = b.reset(seed=11)
    assert np.array_equal(oa, ob) and a.goal == b.goal == ia["goal"]
    assert a.goal.startswith("move the gripper to the ")
    oc, _ = a.reset(seed=12)
    assert not np.array_equal(oa, oc)


def test_actions_move_the_gripper_by_at_most_max_step() -> None:
    env = TabletopEnv("reach", max_step_m=0.04)
    env.reset(seed=1)
    g0 = env.state.gripper[:3].copy()
    env.step(np.array([1.0, 0.0, 0.0], np.float32))
    assert env.state.gripper[0] - g0[0] == pytest.approx(0.04)
    env.step(np.array([5.0, 0.0, 0.0], np.float32))  # clipped to the action space
    assert env.state.gripper[0] - g0[0] == pytest.approx(0.08)
    for _ in range(30):
        env.step(np.array([1.0, 1.0, -1.0], np.float32))
    g = env.state.gripper
    assert g[0] <= 0.98 and g[1] <= 0.73 and g[2] >= 0.01  # stays over the table


def test_reach_ground_truth_is_in_info_and_reward_only() -> None:
    env = TabletopEnv("reach", max_steps=40)
    obs, info = env.reset(seed=3)
    assert info["true_progress"] == 0.0 and not info["success"]
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(np.clip(obs[6:9] / env.max_step_m, -1, 1))
        assert not terminated  # never ends on true success: the learner must not learn it from that
        if truncated:
            break
    assert truncated and env.steps == 40
    assert info["success"] and reward == info["true_progress"] == 1.0


def test_push_moves_the_block_towards_the_zone() -> None:
    env = TabletopEnv("push", max_steps=200, max_step_m=0.02)
    obs, _ = env.reset(seed=4)
    block0 = obs[3:5].copy()
    zone = obs[9:11]
    away = (block0 - zone) / np.linalg.norm(block0 - zone)
    behind = block0 + away * 0.06
    # go above the pre-push point, down to table height, then push through the block
    info = {}
    for target in (np.r_[behind, 0.15], np.r_[behind, 0.015], np.r_[zone - away * 0.0, 0.015]):
        for _ in range(60):
            d = target - env.state.gripper[:3]
            if np.linalg.norm(d) < 1e-3:
                break
            obs, _, _, _, info = env.step(np.clip(d / env.max_step_m, -1, 1))
    moved = np.linalg.norm(obs[3:5] - block0)
    assert moved > 0.05
    assert np.linalg.norm(obs[3:5] - zone) < np.linalg.norm(block0 - zone)
    assert info["true_progress"] > 0.2


def test_grasp_lift_and_release() -> None:
    env = TabletopEnv("reach", grip=True, max_steps=200, max_step_m=0.02)
    env.reset(seed=5)
    assert env.action_space.shape == (4,)
    i = env.spec_task.target
    top = env.state.poses[i, 2] + env.scene.objects[i].height
    target = np.r_[env.state.poses[i, :2], top]
    for _ in range(80):
        d = target - env.state.gripper[:3]
        env.step(np.r_[np.clip(d / env.max_step_m, -1, 1), 1.0])
    env.step(np.array([0, 0, 0, -1.0]))  # close
    assert env.state.holding == i
    for _ in range(3):
        env.step(np.array([0, 0, 1.0, -1.0]))  # lift
    assert env.state.poses[i, 2] > 0.04
    env.step(np.array([0.0, 0.0, 0.0, 1.0]))  # open: dropped on the table
    assert env.state.holding == -1 and env.state.poses[i, 2] == 0.0


def test_views_and_stamps() -> None:
    env = TabletopEnv("reach", size=(160, 120), dt=0.1, start_ns=5_000_000_000)
    env.reset(seed=2)
    views = env.render_views()
    assert set(views) == {"external", "wrist"}
    assert views["external"].shape == (120, 160, 3) and views["external"].dtype == np.uint8
    assert env.render().shape == (120, 160, 3)
    assert env.stamp_ns() == 5_000_000_000
    env.step(np.zeros(3, np.float32))
    assert env.stamp_ns() == 5_100_000_000
    moved_before = views["wrist"]
    env.step(np.array([1.0, 0.0, 0.0], np.float32))
    assert not np.array_equal(env.render_views()["wrist"], moved_before)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TabletopEnv("stack")
    with pytest.raises(ValueError):
        TabletopEnv("reach", max_steps=0)
    env = TabletopEnv("reach")
    with pytest.raises(RuntimeError):
        env.step(np.zeros(3))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.zeros(4))
    assert isinstance(env.state, SceneState)
