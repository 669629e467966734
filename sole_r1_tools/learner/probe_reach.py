"""Probe the reward model on placed reach states: what does it call done?

    python -m sole_r1_tools.learner.probe_reach --scenes 12

For each of the first ``--scenes`` evaluation scenes (seeds 1 000 000 ...), the gripper is placed
at the goal, beside it, high above the goal block, above another block, and low on the table;
each state is scored against the scene's start frame (one step of an episode, greedy) and
compared with the true progress. Prints one row per placement.
"""

from __future__ import annotations

import argparse

import numpy as np

from sole_r1_tools.learner.loop import EVAL_SEED_BASE


def placements(env) -> dict[str, np.ndarray]:
    obs = env._obs()  # noqa: SLF001 - the env's own state, at reset
    goal = obs[3:6]
    start = env.state
    out = {
        "at the goal (true success)": goal,
        "5 cm beside the goal": goal + np.r_[0.05, 0.0, 0.0],
        "10 cm beside the goal": goal + np.r_[0.10, 0.0, 0.0],
        "above the goal block, high (z = 0.15)": np.r_[goal[:2], 0.15],
        "lowered to the table at the start": np.r_[start.gripper[:2], 0.01],
        "low in a table corner": np.r_[0.05, 0.7, 0.01],
    }
    others = [j for j, o in enumerate(env.scene.objects) if j != env.spec_task.target and o.shape == "block"]
    if others:
        j = others[0]
        p = start.poses[j]
        out["3 cm above another block"] = np.r_[p[:2], p[2] + env.scene.objects[j].height + 0.03]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--model", default="", help="checkpoint ('' = built-in default)")
    ap.add_argument("--done", type=float, default=0.9)
    args = ap.parse_args(argv)

    import torch

    from sole_r1_ros.core.scorer import build_scorer
    from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings
    from sole_r1_tools.sim.env import TabletopEnv
    from sole_r1_tools.synth.scene import SceneState

    torch.set_num_threads(1)
    scorer = build_scorer(ModelSettings(path=args.model), DecodingSettings(greedy=True))
    env = TabletopEnv("reach")
    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in range(EVAL_SEED_BASE, EVAL_SEED_BASE + args.scenes):
        env.reset(seed=seed)
        start = env.state
        first = env.render_views()
        for name, xyz in placements(env).items():
            g = start.gripper.copy()
            g[:3] = xyz
            env._state = SceneState(g, start.poses.copy(), -1)  # noqa: SLF001 - a placed state
            episode = scorer.new_episode(env.goal, ("external", "wrist"))
            scorer.score(episode, 0, first)
            estimate = scorer.score(episode, 1_000_000_000, env.render_views())
            rows.setdefault(name, []).append((estimate.progress, env._info()["true_progress"]))  # noqa: SLF001
    print(f"| gripper placed | called done (>= {args.done}) | mean model progress | mean true progress |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        v = np.asarray(values)
        done = int((v[:, 0] >= args.done).sum())
        print(f"| {name} | {done}/{len(v)} | {v[:, 0].mean():.2f} | {v[:, 1].mean():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
