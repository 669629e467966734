"""``score_bag``: score a recorded rosbag2 offline with the same frame, scorer and reward code as the node.

    score_bag episode_bag --out results/episode --rate 2 --model /ckpt/SOLE-R1-8B

Writes into ``OUT`` (only once everything is complete; until then work lives in
``OUT.partial`` and a re-run with the same inputs resumes from the last finished step):
``results/`` (a rosbag2 with progress/reward/reasoning/estimate stamped in bag time),
``estimates.jsonl`` (the node's ``~/estimate`` schema), ``estimates.csv``, ``plot.png`` and
``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sole_r1_ros.backends.transformers_backend import BatchTimings, Generation, ModelLoadError
from sole_r1_ros.messages.bags import FLOAT32_TYPE, IMAGE_TYPES, STRING_TYPE, BagError, BagReader, BagWriter
from sole_r1_ros.pipeline.frame_buffer import FrameSelector
from sole_r1_ros.messages.image_codec import ImageDecodeError, decode_any, stamp_to_ns
from sole_r1_ros.settings import ScorerSettings, add_scorer_arguments, build_scorer, settings_from_args
from sole_r1_ros.core.protocol import GenerationSettings, ProtocolError
from sole_r1_ros.core.reward import RewardConfig
from sole_r1_ros.pipeline.worker import RewardResult, RewardWorker, WorkerConfig
from sole_r1_ros.core.scorer import GoalError, ProgressScorer, VisionLanguageModel, validate_goal

LOG = logging.getLogger("score_bag")
RESULT_NAMESPACE = "/sole_r1_reward"
MAX_THUMBNAILS = 4


class ScoreBagError(RuntimeError):
    """Bad input: the run stops before writing anything."""


@dataclass
class Plan:
    """What will be scored: cameras (role → topic), goal source, ground truth."""

    bag: Path
    cameras: dict[str, str]
    goal: str | None
    goal_topic: str | None
    ground_truth_topic: str | None
    fingerprint: str = ""
    bag_info: dict[str, Any] = field(default_factory=dict)


def _guess_roles(topics: list[str]) -> dict[str, str]:
    if len(topics) == 1:
        return {"external": topics[0]}
    if len(topics) == 2:
        wrist = [t for t in topics if "wrist" in t.lower()]
        if len(wrist) == 1:
            other = next(t for t in topics if t != wrist[0])
            return {"external": other, "wrist": wrist[0]}
    raise ScoreBagError(
        f"cannot tell which camera is which among {topics}; name them: --camera external=/topic [--camera wrist=/topic]"
    )


def plan_scoring(args: argparse.Namespace) -> Plan:
    """Open the bag, find cameras, goal and ground truth, and check the first frame of each camera decodes."""
    with BagReader(args.bag) as bag:
        if args.camera:
            cameras: dict[str, str] = {}
            for spec in args.camera:
                role, sep, topic = spec.partition("=")
                if not sep or not role or not topic:
                    raise ScoreBagError(f"--camera takes ROLE=TOPIC, got '{spec}'")
                cameras[role] = topic
        else:
            image_topics = bag.topics_of_type(IMAGE_TYPES)
            if not image_topics:
                raise ScoreBagError(f"bag has no sensor_msgs Image/CompressedImage topics; topics: {bag.topics}")
            cameras = _guess_roles(image_topics)
        for role, topic in cameras.items():
            if topic not in bag.topics:
                raise ScoreBagError(f"camera '{role}': topic '{topic}' is not in the bag; topics: {sorted(bag.topics)}")
            if bag.topics[topic] not in IMAGE_TYPES:
                raise ScoreBagError(f"camera '{role}': '{topic}' is {bag.topics[topic]}, not an image topic")
            if bag.counts.get(topic, 0) == 0:
                raise ScoreBagError(f"camera '{role}': topic '{topic}' has no messages")
            first = next(bag.messages([topic]))
            try:
                decode_any(first.msg)
            except ImageDecodeError as err:
                raise ScoreBagError(f"camera '{role}' on '{topic}': {err}") from err

        goal_topic = None
        goal = None
        if args.goal:
            goal = validate_goal(args.goal)
        else:
            candidates = [args.goal_topic] if args.goal_topic else [
                t for t in bag.topics_of_type([STRING_TYPE]) if t.rstrip("/").split("/")[-1] in ("goal", "task", "instruction")
            ]
            candidates = [t for t in candidates if t in bag.topics and bag.counts.get(t, 0) > 0]
            if not candidates:
                raise ScoreBagError("no goal: the bag has no goal topic with messages; pass --goal \"...\" or --goal-topic")
            goal_topic = candidates[0]
        gt = args.ground_truth_topic
        if gt is None:
            gts = [t for t in bag.topics_of_type([FLOAT32_TYPE]) if "ground_truth" in t]
            gt = gts[0] if gts else None
        elif gt not in bag.topics:
            raise ScoreBagError(f"ground-truth topic '{gt}' is not in the bag")
        info = {"topics": bag.topics, "counts": bag.counts, "start_ns": bag.start_ns, "end_ns": bag.end_ns}
    return Plan(Path(args.bag), cameras, goal, goal_topic, gt, bag_info=info)


def fingerprint(plan: Plan, settings: ScorerSettings, worker: WorkerConfig, reward: RewardConfig) -> str:
    """Identifies a scoring run: a resume is only allowed when this matches."""
    blob = json.dumps(
        {"bag": plan.bag_info, "cameras": plan.cameras, "goal": plan.goal, "goal_topic": plan.goal_topic,
         "settings": asdict(settings), "worker": asdict(worker), "reward": asdict(reward)},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class JournaledModel:
    """Wraps the model: replays replies journaled by an interrupted run, journals new ones, and
    keeps a few composite thumbnails for the plot."""

    def __init__(self, model: VisionLanguageModel, journal: Path, replies: list[dict[str, Any]]) -> None:
        self.model = model
        self.replay = list(replies)
        self.replayed = 0
        self._journal = journal.open("a", encoding="utf-8")
        self._kept: list[Image.Image] = []
        self._stride = 1
        self._seen = 0

    def describe(self) -> dict[str, Any]:
        return self.model.describe() if hasattr(self.model, "describe") else {}

    def escape_special_text(self, text: str) -> str:
        escape = getattr(self.model, "escape_special_text", None)
        return escape(text) if escape else text

    def generate(self, conversations: Sequence[list[dict[str, Any]]], images: Sequence[Image.Image],
                 settings: GenerationSettings, timings: BatchTimings | None = None) -> list[Generation]:
        for image in images:
            self._keep_thumbnail(image)
        if len(self.replay) >= len(conversations):
            out = [Generation(**self.replay.pop(0)) for _ in conversations]
            self.replayed += len(out)
            return out
        generations = self.model.generate(conversations, images, settings, timings)
        for g in generations:
            self._journal.write(json.dumps({"text": g.text, "prompt_tokens": g.prompt_tokens, "new_tokens": g.new_tokens}) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        return generations

    def _keep_thumbnail(self, image: Image.Image) -> None:
        """Keep a bounded, evenly strided sample of composites (the stride doubles as needed)."""
        if self._seen % self._stride == 0:
            thumb = image.copy()
            thumb.thumbnail((392, 262))
            self._kept.append(thumb)
            if len(self._kept) > 4 * MAX_THUMBNAILS:
                self._kept = self._kept[::2]
                self._stride *= 2
        self._seen += 1

    @property
    def thumbnails(self) -> list[Image.Image]:
        if len(self._kept) <= MAX_THUMBNAILS:
            return list(self._kept)
        step = (len(self._kept) - 1) / (MAX_THUMBNAILS - 1)
        return [self._kept[round(i * step)] for i in range(MAX_THUMBNAILS)]

    def close(self) -> None:
        self._journal.close()


def _read_journal(partial: Path, fp: str) -> list[dict[str, Any]]:
    journal = partial / "journal.jsonl"
    if not journal.is_file():
        return []
    lines = journal.read_text(encoding="utf-8").splitlines()
    if not lines or json.loads(lines[0]).get("fingerprint") != fp:
        return []
    replies = []
    for line in lines[1:]:
        try:
            replies.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a crash: that step is redone
    return replies


def _progress_bar(fraction: float, steps: int) -> None:
    width = 30
    filled = int(width * min(1.0, max(0.0, fraction)))
    sys.stderr.write(f"\rscoring [{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}%  {steps} estimates")
    sys.stderr.flush()


def run(plan: Plan, args: argparse.Namespace, partial: Path) -> tuple[list[dict[str, Any]], JournaledModel, dict[int, float]]:
    """Score the bag; returns estimate rows, the model wrapper (thumbnails) and ground truth by time."""
    settings = settings_from_args(args)
    worker_config = WorkerConfig(mode="rate", period_s=1.0 / args.rate, align_tolerance_s=args.align_tolerance,
                                 max_frame_age_s=args.max_frame_age)
    reward_config = RewardConfig(mode=args.reward_mode)
    fp = fingerprint(plan, settings, worker_config, reward_config)
    replies = _read_journal(partial, fp)
    if not replies and partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    journal = partial / "journal.jsonl"
    if not replies:
        journal.write_text(json.dumps({"fingerprint": fp}) + "\n", encoding="utf-8")
    else:
        LOG.info("resuming: %d finished steps found in %s", len(replies), partial)
        lines = journal.read_text(encoding="utf-8").splitlines()[: len(replies) + 1]
        journal.write_text("\n".join(lines) + "\n", encoding="utf-8")

    loaded = build_scorer(settings)
    model = JournaledModel(loaded.model, journal, replies)
    scorer = ProgressScorer(model, loaded.protocol, generation=loaded.generation, from_zero=loaded.from_zero)
    roles = list(plan.cameras)
    selector = FrameSelector.create(roles, maxlen=args.buffer_size, max_bytes=256 << 20)
    results: list[RewardResult] = []
    now = [0]
    worker = RewardWorker(scorer, selector, config=worker_config, reward_config=reward_config,
                          clock=lambda: now[0], emit=results.append)
    if plan.goal:
        worker.set_goal(plan.goal)
    topic_role = {topic: role for role, topic in plan.cameras.items()}
    topics = list(plan.cameras.values()) + [t for t in (plan.goal_topic, plan.ground_truth_topic) if t]
    ground_truth: dict[int, float] = {}
    start, end = plan.bag_info["start_ns"], plan.bag_info["end_ns"]
    show = sys.stderr.isatty() and not args.quiet
    try:
        with BagReader(plan.bag) as bag:
            for m in bag.messages(topics):
                now[0] = m.log_time_ns
                if m.topic == plan.goal_topic:
                    try:
                        if m.msg.data.strip() != worker.goal:
                            worker.set_goal(m.msg.data)
                    except GoalError as err:
                        LOG.warning("goal at %d ignored: %s", m.log_time_ns, err)
                    continue
                if m.topic == plan.ground_truth_topic:
                    ground_truth[m.log_time_ns] = float(m.msg.data)
                    continue
                worker.push_frame(topic_role[m.topic], stamp_to_ns(m.msg.header.stamp), m.msg, m.log_time_ns)
                if worker.run_pending() and show:
                    _progress_bar((m.log_time_ns - start) / max(1, end - start), len(results))
            now[0] = end + int(1e9 * (args.align_tolerance + 1))
            worker.run_pending()
    finally:
        model.close()
        if show:
            sys.stderr.write("\n")
    rows = []
    for r in results:
        row = r.to_dict()
        row["ground_truth"] = _nearest_value(ground_truth, r.estimate.stamp_ns) if r.estimate else None
        rows.append(row)
    if model.replayed:
        LOG.info("replayed %d journaled steps, scored %d new", model.replayed, len(rows) - model.replayed)
    return rows, model, ground_truth


def _nearest_value(series: dict[int, float], t: int) -> float | None:
    if not series:
        return None
    key = min(series, key=lambda k: abs(k - t))
    return series[key]


def write_outputs(rows: list[dict[str, Any]], model: JournaledModel, ground_truth: dict[int, float],
                  plan: Plan, partial: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything goes into ``partial``; the caller renames it when complete."""
    results_bag = partial / "results"
    if results_bag.exists():
        shutil.rmtree(results_bag)
    with BagWriter(results_bag, storage=args.storage) as writer:
        for row in rows:
            t = row["stamp_ns"] if row["stamp_ns"] is not None else row["requested_stamp_ns"] or 0
            if row["progress"] is not None:
                writer.write_float32(f"{RESULT_NAMESPACE}/progress", t, row["progress"])
                writer.write_float32(f"{RESULT_NAMESPACE}/reward", t, row["reward"] if row["reward"] is not None else math.nan)
                writer.write_string(f"{RESULT_NAMESPACE}/reasoning", t, row["reasoning"])
            writer.write_string(f"{RESULT_NAMESPACE}/estimate", t, json.dumps({k: v for k, v in row.items() if k != "ground_truth"}))
    with (partial / "estimates.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    start = plan.bag_info["start_ns"]
    with (partial / "estimates.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["episode_id", "step", "time_s", "stamp_ns", "status", "percent", "progress", "reward",
                    "ground_truth", "parse_status", "model_s", "reasoning"])
        for row in rows:
            stamp = row["stamp_ns"]
            w.writerow([row["episode_id"], row["step"], f"{(stamp - start) / 1e9:.3f}" if stamp else "", stamp,
                        row["status"], row["percent"], row["progress"], row["reward"], row["ground_truth"],
                        row["parse_status"], f"{row['timings'].get('model_s', 0.0):.4f}", row["reasoning"]])
    scored = [r for r in rows if r["progress"] is not None]
    summary = {
        "bag": str(plan.bag), "cameras": plan.cameras, "goal": plan.goal or f"<from {plan.goal_topic}>",
        "estimates": len(rows), "scored": len(scored),
        "parse_failures": sum(r["status"] == "parse_failed" for r in rows),
        "errors": sum(r["status"] not in ("ok", "first_frame", "parse_failed") for r in rows),
        "final_progress": scored[-1]["progress"] if scored else None,
        "max_progress": max((r["progress"] for r in scored), default=None),
        "final_ground_truth": rows[-1]["ground_truth"] if rows else None,
        "mean_model_s": (sum(r["timings"].get("model_s", 0.0) for r in scored[1:]) / max(1, len(scored) - 1)),
        "model": model.describe(),
    }
    (partial / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    if not args.no_plot:
        plot(rows, ground_truth, model.thumbnails, start, partial / "plot.png", plan)
    return summary


def plot(rows: list[dict[str, Any]], ground_truth: dict[int, float], thumbnails: list[Image.Image],
         start_ns: int, path: Path, plan: Plan) -> None:
    """Progress and reward over bag time (ground truth when present) above composite thumbnails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_thumbs = len(thumbnails)
    fig = plt.figure(figsize=(11, 7 if n_thumbs else 4.5), dpi=100)
    grid = fig.add_gridspec(2 if n_thumbs else 1, max(1, n_thumbs), height_ratios=[2, 1] if n_thumbs else [1])
    ax = fig.add_subplot(grid[0, :])
    scored = [r for r in rows if r["progress"] is not None]
    t = [(r["stamp_ns"] - start_ns) / 1e9 for r in scored]
    ax.plot(t, [r["progress"] for r in scored], "o-", label="predicted progress", color="tab:blue")
    ax.plot(t, [r["reward"] for r in scored], "s--", label="reward", color="tab:orange", alpha=0.8)
    failed = [r for r in scored if r["status"] == "parse_failed"]
    if failed:
        ax.plot([(r["stamp_ns"] - start_ns) / 1e9 for r in failed], [r["progress"] for r in failed], "x",
                color="tab:red", markersize=9, label="parse failed (carried forward)")
    if ground_truth:
        keys = sorted(ground_truth)
        ax.plot([(k - start_ns) / 1e9 for k in keys], [ground_truth[k] for k in keys], "-", color="tab:green",
                label="ground truth", alpha=0.7)
    ax.set_xlabel("bag time [s]")
    ax.set_ylabel("progress (1.0 = done)")
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    goal = plan.goal or (rows[0]["goal"] if rows else "")
    ax.set_title(f"{plan.bag.name}: {goal}", fontsize=10)
    for i, thumb in enumerate(thumbnails):
        tax = fig.add_subplot(grid[1, i])
        tax.imshow(thumb)
        tax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="score_bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    parser.add_argument("--camera", action="append", default=[], metavar="ROLE=TOPIC",
                        help="camera role and topic, in composite row order (default: auto-detect)")
    parser.add_argument("--goal", default=None, help="task description (default: the bag's goal topic)")
    parser.add_argument("--goal-topic", default=None, help="std_msgs/String goal topic (default: auto-detect)")
    parser.add_argument("--ground-truth-topic", default=None, help="std_msgs/Float32 ground truth (auto: */ground_truth/*)")
    parser.add_argument("--rate", type=float, default=1.0, help="estimates per second of bag time (default 1)")
    parser.add_argument("--align-tolerance", type=float, default=0.05, help="s between cameras' stamps (default 0.05)")
    parser.add_argument("--max-frame-age", type=float, default=2.0, help="s; as the node's max_frame_age")
    parser.add_argument("--buffer-size", type=int, default=30, help="frames buffered per camera (as the node)")
    parser.add_argument("--reward-mode", default="progress", help="progress | delta | potential")
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"], help="results bag storage")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_scorer_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.rate <= 0:
        print("error: --rate must be positive", file=sys.stderr)
        return 2
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not args.overwrite:
        print(f"error: '{out}' exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        plan = plan_scoring(args)
        rows, model, ground_truth = run(plan, args, partial)
        if not rows:
            raise ScoreBagError("no estimates were made (no aligned frames?)")
        summary = write_outputs(rows, model, ground_truth, plan, partial, args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished steps are kept in '{partial}'; re-run the same command to resume", file=sys.stderr)
        return 130
    except (BagError, ScoreBagError, GoalError, ModelLoadError, ProtocolError, OSError) as err:
        if partial.exists() and not isinstance(err, OSError):
            shutil.rmtree(partial, ignore_errors=True)
        print(f"error: {err}", file=sys.stderr)
        return 2
    if out.exists():
        shutil.rmtree(out)
    (partial / "journal.jsonl").unlink(missing_ok=True)
    os.replace(partial, out)
    print_summary(rows, summary, out, plan.bag_info["start_ns"])
    return 0


def print_summary(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path, start_ns: int) -> None:
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
    print(f"{summary['estimates']} estimates ({summary['parse_failures']} parse failures, {summary['errors']} errors); "
          f"final progress {summary['final_progress']}, ground truth {summary['final_ground_truth']}")
    print(f"outputs in {out}/: results/ (rosbag2), estimates.jsonl, estimates.csv, summary.json"
          + ("" if not (out / "plot.png").exists() else ", plot.png"))


if __name__ == "__main__":
    sys.exit(main())
