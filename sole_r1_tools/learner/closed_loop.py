"""The closed-loop run, one command: learn from the reward node's reward alone, and compare.

    python -m sole_r1_tools.learner.closed_loop --out runs/reach --task reach --steps 12000 --seed 0

Three conditions on the same evaluation seeds:

- ``model``: three real processes over ROS 2 (the tabletop driver, the reward node with the
  built-in default model in request mode, the SAC learner node); the learner's only reward is
  the node's ``~/estimate``;
- ``ground_truth``: the same learner code (loop, buffer, client, SAC), in-process, its client
  answered with the true progress;
- ``random``: uniform random chunks.

Outputs in ``--out``: ``results.json`` (every number below, the command and seeds),
``learning_curve.png``, and per condition the learner's log and the ground-truth log. Reported:
true success rate of the deterministic policy at every evaluation, and for the model condition
perceived against true success (episodes whose final progress the model puts at or above
``done_threshold``, against the true outcome) on evaluation and on training episodes, and how the
model's progress at chunk ends relates to the true progress there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "closed_loop"
CONDITIONS = ("model", "ground_truth", "random")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ros_child_env(domain_id: int) -> dict[str, str]:
    """Environment for the three processes: own domain, loopback discovery, one BLAS thread."""
    env = dict(os.environ)
    env.update({"ROS_DOMAIN_ID": str(domain_id), "ROS_LOCALHOST_ONLY": "1",
                "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)})
    return env


def _params(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        out += ["-p", f"{key}:={value}"]
    return out


def process_commands(out: Path, *, task: str, learner_params: dict[str, Any], model_path: str = "",
                     sim_params: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Command lines of the three processes (as ``launch/closed_loop.launch.py`` starts them)."""
    py = sys.executable
    reward_node = str(Path(py).parent / "reward_node")
    return {
        "tabletop_sim": [py, "-m", "sole_r1_tools.sim.ros_driver", "--ros-args",
                         "--params-file", str(CONFIG / "tabletop_sim.yaml"),
                         *_params({"task": task, "ground_truth_log": str(out / "ground_truth.jsonl"),
                                   **(sim_params or {})})],
        "reward_node": [reward_node, "--ros-args", "-r", "__node:=sole_r1_reward",
                        "--params-file", str(CONFIG / "reward_node.yaml"),
                        *(_params({"model.path": model_path}) if model_path else [])],
        "learner": [py, "-m", "sole_r1_tools.learner.node", "--ros-args",
                    "--params-file", str(CONFIG / "learner.yaml"),
                    *_params({"log_path": str(out / "learner.jsonl"), **learner_params})],
    }


def run_model_condition(out: Path, *, task: str, learner_params: dict[str, Any], domain_id: int,
                        timeout_s: float, model_path: str = "", sim_params: dict[str, Any] | None = None) -> int:
    """Start driver, reward node and learner; wait for the learner; stop the others. Returns the
    learner's exit code."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("ground_truth.jsonl", "learner.jsonl", "answers.jsonl"):
        (out / name).unlink(missing_ok=True)
    env = ros_child_env(domain_id)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    try:
        for name, argv in process_commands(out, task=task, learner_params=learner_params, model_path=model_path,
                                           sim_params=sim_params).items():
            log = open(out / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                           start_new_session=True)
        try:
            return procs["learner"].wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return 124
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def run_in_process(out: Path, *, task: str, policy: str, loop: Any, sac_seed: int, max_step_m: float) -> None:
    """The ground-truth or random condition, without ROS."""
    import torch

    from sole_r1_ros.learner.replay import BufferSettings, RelabelBuffer
    from sole_r1_tools.learner.inprocess import LocalChunkEnv, ground_truth_client
    from sole_r1_tools.learner.loop import ChunkLearner, LoopLog
    from sole_r1_tools.learner.sac import ChunkSAC, SacSettings
    from sole_r1_tools.sim.env import TabletopEnv

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learner.jsonl").unlink(missing_ok=True)
    env = LocalChunkEnv(TabletopEnv(task, max_steps=loop.horizon * loop.chunks_per_episode, max_step_m=max_step_m))
    buffer = RelabelBuffer(BufferSettings(horizon=loop.horizon), clock=time.monotonic_ns)
    client = ground_truth_client(env, on_answer=buffer.on_answer)
    obs_dim = env.env.observation_space.shape[0]
    agent = ChunkSAC(obs_dim, 3, SacSettings(horizon=loop.horizon), seed=sac_seed) if policy == "sac" else None
    learner = ChunkLearner(env, client, buffer, agent, loop, LoopLog(out / "learner.jsonl"), action_dim=3,
                           policy=policy)
    learner.run(lambda text: print(f"[{out.name}] {text}", flush=True))
    with open(out / "ground_truth.jsonl", "w", encoding="utf-8") as f:
        for record in env.gt_log:
            f.write(json.dumps(record) + "\n")


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # average ties
        m = x == v
        ranks[m] = ranks[m].mean()
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    """Rank correlation (None with fewer than 3 points or a constant side)."""
    if len(a) < 3:
        return None
    ra, rb = _rank(np.asarray(a, float)), _rank(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


_START_DISTANCE: dict[int, float] = {}


def reach_final_distance(seed: int, true_progress: float) -> float:
    """Reach: the tool centre point's final distance (m) to the goal point, recovered from the true
    progress (``1 - (d - tol) / (d0 - tol)``) and the seed's start distance; inf when progress is 0
    (at or beyond the start distance)."""
    from sole_r1_tools.sim.env import TabletopEnv
    from sole_r1_tools.synth.episodes import REACH_TOL

    if seed not in _START_DISTANCE:
        obs, _ = TabletopEnv("reach").reset(seed=seed)
        _START_DISTANCE[seed] = float(np.linalg.norm(obs[6:9]))
    if true_progress <= 0:
        return float("inf")
    return REACH_TOL + (1.0 - true_progress) * (_START_DISTANCE[seed] - REACH_TOL)


def summarize(cond_dir: Path, done_threshold: float, task: str = "") -> dict[str, Any]:
    """Join a condition's learner log with its ground-truth log (by env episode and stamp)."""
    log = _read_jsonl(cond_dir / "learner.jsonl")
    gt = _read_jsonl(cond_dir / "ground_truth.jsonl")
    final: dict[int, dict[str, Any]] = {}
    by_stamp: dict[int, dict[str, Any]] = {}
    for r in gt:
        final[int(r["env_episode"])] = r
        by_stamp[int(r["stamp_ns"])] = r
    curve = []
    for at in sorted({int(r["at_steps"]) for r in log if r["kind"] == "eval"}):
        evals = [r for r in log if r["kind"] == "eval" and int(r["at_steps"]) == at]
        true = [bool(final[r["env_episode"]]["success"]) for r in evals]
        perceived = [bool(r["perceived_success"]) for r in evals]
        curve.append({
            "steps": at, "episodes": len(evals), "true_success": float(np.mean(true)),
            "true_final_progress": float(np.mean([final[r["env_episode"]]["true_progress"] for r in evals])),
            "perceived_success": float(np.mean(perceived)),
            "perceived_not_true": int(sum(p and not t for p, t in zip(perceived, true))),
            "true_not_perceived": int(sum(t and not p for p, t in zip(perceived, true))),
        })
        if task == "reach":
            dist = [reach_final_distance(int(r["seed"]), float(final[r["env_episode"]]["true_progress"]))
                    for r in evals]
            curve[-1]["within_10cm"] = float(np.mean([d <= 0.10 for d in dist]))
            curve[-1]["median_final_distance_m"] = float(np.median(dist))
    train = [r for r in log if r["kind"] == "train_episode"]
    t_true = [bool(final[r["env_episode"]]["success"]) for r in train if r["env_episode"] in final]
    t_perc = [bool(r["perceived_success"]) for r in train if r["env_episode"] in final]
    summary = next((r for r in log if r["kind"] == "summary"), {})
    answers = _read_jsonl(cond_dir / "answers.jsonl")
    pairs = [(a["progress"], by_stamp[a["stamp_ns"]]["true_progress"]) for a in answers
             if a.get("usable") and a.get("index", 0) > 0 and a.get("stamp_ns") in by_stamp]
    outcomes: dict[str, int] = {}
    for a in answers:
        outcomes[a["outcome"]] = outcomes.get(a["outcome"], 0) + 1
    reward_quality: dict[str, Any] = {}
    if pairs:
        model_p = [p for p, _ in pairs]
        true_p = [t for _, t in pairs]
        bins = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 0.999), (0.999, 1.01)]
        reward_quality = {
            "chunk_ends": len(pairs), "spearman": spearman(model_p, true_p),
            "mae": float(np.mean(np.abs(np.asarray(model_p) - np.asarray(true_p)))),
            "distinct_values": len(set(round(p, 2) for p in model_p)),
            "mean_model_progress_by_true_bin": {
                f"{lo:.2f}-{min(hi, 1.0):.2f}": (float(np.mean([p for p, t in pairs if lo <= t < hi])),
                                                 sum(1 for _, t in pairs if lo <= t < hi))
                for lo, hi in bins if any(lo <= t < hi for _, t in pairs)},
        }
    return {
        "curve": curve,
        "train_episodes": len(train),
        "train_true_success": float(np.mean(t_true)) if t_true else None,
        "train_perceived_success": float(np.mean(t_perc)) if t_perc else None,
        "train_perceived_not_true": int(sum(p and not t for p, t in zip(t_perc, t_true))),
        "train_true_not_perceived": int(sum(t and not p for p, t in zip(t_perc, t_true))),
        "summary": summary, "answer_outcomes": outcomes, "reward_quality": reward_quality,
        "done_threshold": done_threshold,
    }


def markdown_table(results: dict[str, Any]) -> str:
    """The results table of docs/learning.md: one row per condition at the last evaluation."""
    lines = ["| condition | env steps | true success | true final progress | within 10 cm (reach) | "
             "perceived success | perceived, not true | true, not perceived |", "|---|---|---|---|---|---|---|---|"]
    for cond, data in results["conditions"].items():
        if not data["curve"]:
            continue
        last = data["curve"][-1]
        perceived = cond == "model"
        lines.append(
            f"| {cond} | {last['steps']} | {last['true_success']:.2f} ({round(last['true_success'] * last['episodes'])}"
            f"/{last['episodes']}) | {last['true_final_progress']:.3f} | "
            + (f"{last['within_10cm']:.2f} | " if "within_10cm" in last else "– | ")
            + (f"{last['perceived_success']:.2f} | {last['perceived_not_true']} | {last['true_not_perceived']} |"
               if perceived else "– | – | – |"))
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"model": "tab:blue", "ground_truth": "tab:green", "random": "tab:grey"}
    labels = {"model": "reward model (default, over ROS)", "ground_truth": "ground-truth reward",
              "random": "random policy"}
    for cond, data in results["conditions"].items():
        curve = data["curve"]
        xs = [c["steps"] for c in curve]
        for ax, key in zip(axes, ("true_success", "true_final_progress")):
            if cond == "random":
                ax.axhline(float(np.mean([c[key] for c in curve])), color=colors[cond], ls="--", label=labels[cond])
            else:
                ax.plot(xs, [c[key] for c in curve], marker="o", color=colors[cond], label=labels[cond])
        if cond == "model":
            axes[0].plot(xs, [c["perceived_success"] for c in curve], marker="x", ls=":", color=colors[cond],
                         label="reward model: perceived success")
    axes[0].set_title("true success rate (deterministic policy)")
    axes[1].set_title("true final progress")
    for ax in axes:
        ax.set_xlabel("environment steps")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{results['task']}: SAC with action chunking (H={results['horizon']}), seed {results['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--task", default="reach", choices=("reach", "push"))
    ap.add_argument("--steps", type=int, default=12000, help="environment steps of training")
    ap.add_argument("--eval-every", type=int, default=0, help="default: steps / 6")
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--horizon", type=int, default=4)
    ap.add_argument("--chunks-per-episode", type=int, default=5)
    ap.add_argument("--updates-per-chunk", type=int, default=8)
    ap.add_argument("--warmup-steps", type=int, default=400)
    ap.add_argument("--max-step", type=float, default=0.05, help="m per step at full action")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--done-threshold", type=float, default=0.9)
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--model-path", default="", help="reward model checkpoint ('' = built-in default)")
    ap.add_argument("--domain-id", type=int, default=0, help="ROS_DOMAIN_ID (0 = pick one in 60-99)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="s; the model condition is stopped after this")
    ap.add_argument("--summarize-only", action="store_true",
                    help="recompute results.json, the table and the plot from the logs already in --out")
    args = ap.parse_args(argv)

    from sole_r1_tools.learner.loop import LoopSettings

    eval_every = args.eval_every or max(args.horizon * args.chunks_per_episode, args.steps // 6)
    loop = LoopSettings(total_steps=args.steps, horizon=args.horizon, chunks_per_episode=args.chunks_per_episode,
                        warmup_steps=args.warmup_steps, updates_per_chunk=args.updates_per_chunk,
                        eval_every=eval_every, eval_episodes=args.eval_episodes,
                        done_threshold=args.done_threshold, seed=args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    previous: dict[str, Any] = {}
    if args.summarize_only:
        previous = json.loads((out / "results.json").read_text(encoding="utf-8"))
        timings, args.conditions = previous["wall_s"], list(previous["conditions"])
    for cond in [] if args.summarize_only else args.conditions:
        t0 = time.monotonic()
        if cond == "model":
            domain = args.domain_id or random.Random().randint(60, 99)
            params = {f"loop.{k}": v for k, v in vars(loop).items()}
            params.update({"buffer.horizon": args.horizon, "sac.horizon": args.horizon})
            code = run_model_condition(out / cond, task=args.task, learner_params=params, domain_id=domain,
                                       timeout_s=args.timeout, model_path=args.model_path,
                                       sim_params={"max_step_m": args.max_step,
                                                   "max_steps": args.horizon * args.chunks_per_episode})
            print(f"[model] learner exited with {code}", flush=True)
            if code != 0:
                print(f"see {out / cond}/*.log", file=sys.stderr)
                return 1
        else:
            run_in_process(out / cond, task=args.task, policy="sac" if cond == "ground_truth" else "random",
                           loop=loop, sac_seed=args.seed, max_step_m=args.max_step)
        timings[cond] = time.monotonic() - t0
    results = {
        "task": args.task, "steps": args.steps, "horizon": args.horizon, "seed": args.seed,
        "eval_seeds": f"{1_000_000}..{1_000_000 + args.eval_episodes - 1}", "eval_every": eval_every,
        "command": previous["command"] if args.summarize_only else " ".join(
            [Path(sys.executable).name, "-m", "sole_r1_tools.learner.closed_loop",
             *(argv if argv is not None else sys.argv[1:])]),
        "wall_s": timings,
        "conditions": {cond: summarize(out / cond, args.done_threshold, args.task) for cond in args.conditions},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    plot(results, out / "learning_curve.png")
    (out / "results.md").write_text(markdown_table(results), encoding="utf-8")
    for cond, data in results["conditions"].items():
        last = data["curve"][-1] if data["curve"] else {}
        print(f"{cond:>13}: true success {last.get('true_success')} (final progress "
              f"{last.get('true_final_progress')}), perceived {last.get('perceived_success')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
