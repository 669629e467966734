"""``score_bag``: score a recorded rosbag2 offline with the same frame, scorer and reward code as the node.

    score_bag episode_bag --out results/episode --rate 2 --model /ckpt/SOLE-R1-8B
    score_bag bags/* --out results/ --jobs 8 --backend server --model-url http://gpu:8000

Writes into ``OUT`` (only once everything is complete; until then work lives in
``OUT.partial`` and a re-run with the same inputs resumes from the last finished step):
``results/`` (a rosbag2 with progress/reward/reasoning/estimate stamped in bag time),
``estimates.jsonl`` (the node's ``~/estimate`` schema), ``estimates.csv``, ``plot.png`` and
``summary.json``. Sampling is seeded (``--seed``, default 0) so a re-run gives the same result;
``--seed -1`` samples unseeded.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sole_r1_ros.errors import InferenceError, ModelLoadError, SoleR1Error
from sole_r1_ros.offline.bag_scoring import ScoringSettings
from sole_r1_ros.offline.journal import holds_finished_steps
from sole_r1_ros.offline.many_bags import BagJob, output_dirs, score_bags
from sole_r1_ros.offline.one_bag import partial_dir, score_into
from sole_r1_ros.offline.plan import GOAL_RULE_TEXT, Plan, parse_camera_specs, plan_scoring
from sole_r1_ros.offline.seeding import OFFLINE_DECODING_OPTIONS
from sole_r1_ros.settings.cli import add_setting_arguments, settings_from_args
from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings, RewardSettings, WorkerSettings


def build_parser() -> argparse.ArgumentParser:
    """The command line: its own options plus one per offline setting of the node's groups."""
    parser = argparse.ArgumentParser(prog="score_bag", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("bag", nargs="+", help="rosbag2 directory (mcap or sqlite3); several: each is scored "
                                               "into OUT/<bag name>")
    parser.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite); with "
                                                     "several bags, the parent of one directory per bag")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="bags scored concurrently (server backend: N episodes in flight at the server; "
                             "default 1)")
    parser.add_argument("--camera", action="append", default=[], metavar="ROLE=TOPIC",
                        help="camera role and topic, in composite row order (default: auto-detect)")
    parser.add_argument("--goal", default=None, help="task description (default: the bag's goal topic)")
    parser.add_argument("--goal-topic", default=None,
                        help=f"std_msgs/String goal topic (default: auto-detect {GOAL_RULE_TEXT})")
    parser.add_argument("--ground-truth-topic", default=None,
                        help="std_msgs/Float32 ground truth (auto: */ground_truth/*)")
    parser.add_argument("--rate", type=float, default=1.0, help="estimates per second of bag time (default 1)")
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"], help="results bag storage")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (ours and transformers')")
    add_setting_arguments(parser, ModelSettings, title="model")
    add_setting_arguments(parser, DecodingSettings, title="decoding", **OFFLINE_DECODING_OPTIONS)
    add_setting_arguments(parser, WorkerSettings, title="frames (as the node's parameters)")
    add_setting_arguments(parser, RewardSettings, title="reward (as the node's reward.* parameters)")
    return parser


def settings_from(args: argparse.Namespace) -> ScoringSettings:
    """The run's settings from parsed options."""
    return ScoringSettings(
        rate_hz=args.rate,
        model=settings_from_args(ModelSettings, args),
        decoding=settings_from_args(DecodingSettings, args),
        worker=settings_from_args(WorkerSettings, args),
        reward=settings_from_args(RewardSettings, args),
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_summary(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path, start_ns: int) -> None:
    """The table of estimates and a one-line summary (values rounded for reading)."""
    print(f"{'step':>4}  {'time_s':>7}  {'status':<14}  {'prog':>6}  {'reward':>7}  {'truth':>6}  reasoning")
    for r in rows:
        truth = "" if r["ground_truth"] is None else f"{r['ground_truth']:.2f}"
        prog = "" if r["progress"] is None else f"{r['progress']:.2f}"
        reward = "" if r["reward"] is None else f"{r['reward']:.3f}"
        time_s = "" if r["stamp_ns"] is None else f"{(r['stamp_ns'] - start_ns) / 1e9:.2f}"
        reasoning = " ".join(r["reasoning"].split())
        reasoning = reasoning if len(reasoning) <= 50 else reasoning[:47] + "..."
        print(f"{r['step'] if r['step'] is not None else '-':>4}  {time_s:>7}  {r['status']:<14}  "
              f"{prog:>6}  {reward:>7}  {truth:>6}  {reasoning}")
    seed = "unseeded" if summary["seed"] is None else f"seed {summary['seed']}"
    print(f"{summary['estimates']} estimates ({summary['parse_failures']} parse failures, {summary['errors']} errors); "
          f"final progress {_fmt(summary['final_progress'])}, ground truth {_fmt(summary['final_ground_truth'])}; "
          f"{seed}")
    print(f"outputs in {out}/: results/ (rosbag2), estimates.jsonl, estimates.csv, summary.json"
          + ("" if not (out / "plot.png").exists() else ", plot.png"))


def _plan(bag: str | Path, args: argparse.Namespace, settings: ScoringSettings) -> Plan:
    return plan_scoring(bag, cameras=parse_camera_specs(args.camera), goal=args.goal, goal_topic=args.goal_topic,
                        ground_truth_topic=args.ground_truth_topic, max_goal_chars=settings.worker.max_goal_chars)


def main_many(args: argparse.Namespace) -> int:
    """Several bags (or ``--jobs`` > 1): each into ``OUT/<bag name>``, ``--jobs`` at a time."""
    out = Path(args.out)
    try:
        settings = settings_from(args)
        jobs = [BagJob(Path(b), o) for b, o in zip(args.bag, output_dirs([Path(b) for b in args.bag], out))]
        existing = [str(j.out) for j in jobs if j.out.exists()]
        if existing and not args.overwrite:
            print(f"error: {', '.join(existing)} exist; pass --overwrite to replace them", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        score_bags(jobs, settings, lambda bag: _plan(bag, args, settings), concurrency=args.jobs,
                   quiet=args.quiet, storage=args.storage, with_plot=not args.no_plot)
    except KeyboardInterrupt:
        print("\ninterrupted: finished steps are kept in each '<bag>.partial'; re-run the same command to resume",
              file=sys.stderr)
        return 130
    except (SoleR1Error, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for job in jobs:
        if job.status == "done":
            s = job.summary
            print(f"{job.bag}: {s['estimates']} estimates ({s['parse_failures']} parse failures, "
                  f"{s['errors']} errors); final progress {_fmt(s['final_progress'])} -> {job.out}")
        else:
            print(f"{job.bag}: {job.status}: {job.error}", file=sys.stderr)
    return 0 if all(j.status == "done" for j in jobs) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``score_bag``; returns the exit status (0 done, 2 bad input or failure, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.rate <= 0:
        print("error: --rate must be positive", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    if len(args.bag) > 1 or args.jobs > 1:
        return main_many(args)
    args.bag = args.bag[0]
    out = Path(args.out)
    partial = partial_dir(out)
    if out.exists() and not args.overwrite:
        print(f"error: '{out}' exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        settings = settings_from(args)
        plan = _plan(args.bag, args, settings)
        scored, summary = score_into(plan, settings, out, storage=args.storage, with_plot=not args.no_plot,
                                     quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished steps are kept in '{partial}'; re-run the same command to resume",
              file=sys.stderr)
        return 130
    except (SoleR1Error, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, (ModelLoadError, InferenceError, OSError)) and holds_finished_steps(partial):
            # the model (or the disk) failed, not the input: a re-run resumes the finished steps
            print(f"finished steps are kept in '{partial}'; re-run the same command to resume", file=sys.stderr)
        elif partial.exists() and not isinstance(err, OSError):
            shutil.rmtree(partial, ignore_errors=True)
        return 2
    try:
        print_summary(scored.rows, summary, out, plan.bag_info["start_ns"])
    except KeyboardInterrupt:
        print(f"\ninterrupted while printing; the outputs in '{out}' are complete", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
