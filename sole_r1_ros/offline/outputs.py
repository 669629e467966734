"""A scored bag's outputs, written into ``OUT.partial`` and committed to ``OUT`` in one rename.

``results/`` (a rosbag2 with progress/reward/reasoning/estimate stamped in bag time),
``estimates.jsonl`` (the node's ``~/estimate`` schema plus ``ground_truth``), ``estimates.csv``,
``summary.json`` and ``plot.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.messages.bags import BagWriter
from sole_r1_ros.offline.bag_scoring import ScoredBag, ScoringSettings
from sole_r1_ros.offline.journal import JOURNAL_NAME
from sole_r1_ros.offline.plan import Plan
from sole_r1_ros.offline.plot import plot
from sole_r1_ros.offline.seeding import describe_sampling

RESULT_NAMESPACE = "/sole_r1_reward"
SUMMARY_NAME = "summary.json"
DECIMALS = 4


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), DECIMALS)


def goals_used(rows: list[dict[str, Any]]) -> list[str]:
    """The distinct goals the estimates were made for, in order of first use."""
    seen: dict[str, None] = {}
    for row in rows:
        if row["goal"] and row["step"] is not None:
            seen.setdefault(row["goal"], None)
    return list(seen)


def summarize(scored: ScoredBag, plan: Plan, settings: ScoringSettings) -> dict[str, Any]:
    """The ``summary.json`` object: counts, final values (rounded to 4 decimals), the goal text(s)
    and topics used, decoding (seed included) and the model."""
    rows = scored.rows
    done = [r for r in rows if r["progress"] is not None]
    goals = goals_used(rows)
    return {
        "bag": str(plan.bag),
        "goal": goals[0] if goals else plan.goal,
        "goals": goals,
        "goal_source": plan.goal_source,
        "cameras": plan.cameras,
        "topics": {"cameras": plan.cameras, "goal": plan.goal_topic, "ground_truth": plan.ground_truth_topic},
        "estimates": len(rows),
        "scored": len(done),
        "parse_failures": sum(r["status"] == EstimateStatus.PARSE_FAILED for r in rows),
        "errors": sum(r["progress"] is None for r in rows),
        "final_progress": _round(done[-1]["progress"]) if done else None,
        "max_progress": _round(max((r["progress"] for r in done), default=None)),
        "final_ground_truth": _round(rows[-1]["ground_truth"]) if rows else None,
        "mean_model_s": _round(sum(r["timings"].get("model_s", 0.0) for r in done[1:]) / max(1, len(done) - 1)),
        "rate_hz": settings.rate_hz,
        "seed": settings.decoding.seed if settings.decoding.seed >= 0 else None,
        "decoding": describe_sampling(scored.generation, settings.decoding.seed),
        "reward": asdict(settings.reward),
        "replayed_steps": scored.replayed,
        "model": scored.model_info,
    }


def _write_results_bag(rows: list[dict[str, Any]], path: Path, storage: str) -> None:
    if path.exists():
        shutil.rmtree(path)
    with BagWriter(path, storage=storage) as writer:
        for row in rows:
            t = row["stamp_ns"] if row["stamp_ns"] is not None else row["requested_stamp_ns"] or 0
            if row["progress"] is not None:
                writer.write_float32(f"{RESULT_NAMESPACE}/progress", t, row["progress"])
                writer.write_float32(f"{RESULT_NAMESPACE}/reward", t,
                                     row["reward"] if row["reward"] is not None else math.nan)
                writer.write_string(f"{RESULT_NAMESPACE}/reasoning", t, row["reasoning"])
            writer.write_string(f"{RESULT_NAMESPACE}/estimate", t,
                                json.dumps({k: v for k, v in row.items() if k != "ground_truth"}))


def _write_csv(rows: list[dict[str, Any]], path: Path, start_ns: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["episode_id", "step", "time_s", "stamp_ns", "status", "percent", "progress", "reward",
                    "ground_truth", "parse_status", "model_s", "reasoning"])
        for row in rows:
            stamp = row["stamp_ns"]
            w.writerow([row["episode_id"], row["step"], f"{(stamp - start_ns) / 1e9:.3f}" if stamp else "", stamp,
                        row["status"], row["percent"], row["progress"], row["reward"], row["ground_truth"],
                        row["parse_status"], f"{row['timings'].get('model_s', 0.0):.4f}", row["reasoning"]])


def write_outputs(scored: ScoredBag, plan: Plan, settings: ScoringSettings, partial: Path, *,
                  storage: str = "mcap", with_plot: bool = True) -> dict[str, Any]:
    """Everything goes into ``partial`` (:func:`commit` renames it when complete); returns the summary."""
    rows = scored.rows
    start = plan.bag_info["start_ns"]
    _write_results_bag(rows, partial / "results", storage)
    with (partial / "estimates.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    _write_csv(rows, partial / "estimates.csv", start)
    summary = summarize(scored, plan, settings)
    (partial / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    if with_plot:
        goal = summary["goal"] or ""
        plot(rows, partial / "plot.png", title=f"{plan.bag.name}: {goal}", start_ns=start,
             ground_truth=scored.ground_truth, thumbnails=scored.thumbnails)
    return summary


def commit(partial: Path, out: Path) -> None:
    """Make the outputs appear: replace ``out`` by ``partial`` (one rename), drop the journal."""
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    finish_commit(out)


def is_committed(partial: Path, out: Path) -> bool:
    """True once :func:`commit`'s rename is done (the outputs in ``out`` are complete)."""
    return not partial.exists() and (out / SUMMARY_NAME).is_file()


def finish_commit(out: Path) -> None:
    """The part of :func:`commit` after the rename (safe to repeat)."""
    (out / JOURNAL_NAME).unlink(missing_ok=True)


__all__ = ["RESULT_NAMESPACE", "commit", "finish_commit", "goals_used", "is_committed", "summarize", "write_outputs"]
