"""``sole-r1-score``: score a video (or image folder) against a goal and print a table.

Use it to sanity-check a checkpoint before it goes near a robot::

    sole-r1-score clip.mp4 --goal "push the red block into the green zone" --rate 2 --model /ckpt/SOLE-R1-8B
    sole-r1-score scene.mp4 --wrist wrist.mp4 --goal "..." --rate 1 --jsonl out.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sole_r1_ros.backends.transformers_backend import ModelLoadError
from sole_r1_ros.messages.video import MediaError, iter_frames, subsample
from sole_r1_ros.settings import add_scorer_arguments, build_scorer, settings_from_args
from sole_r1_ros.core.protocol import ProtocolError
from sole_r1_ros.core.scorer import Estimate, GoalError, validate_goal


def _paired_frames(
    scene: str, wrist: str | None, fps: float | None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    if wrist is None:
        for stamp, frame in iter_frames(scene, fps=fps):
            yield stamp, {"external": frame}
        return
    for (stamp, a), (_, b) in zip(iter_frames(scene, fps=fps), iter_frames(wrist, fps=fps)):
        yield stamp, {"external": a, "wrist": b}


def format_row(e: Estimate) -> str:
    reasoning = " ".join(e.reasoning.split())
    if len(reasoning) > 60:
        reasoning = reasoning[:57] + "..."
    detail = reasoning if e.status in ("ok", "first_frame") else (e.error or "")
    return f"{e.step:>4}  {e.stamp_ns / 1e9:>8.2f}  {e.percent:>5}%  {e.status:<12}  {e.timings.get('model_s', 0.0):>7.3f}  {detail}"


def write_jsonl_atomic(path: Path, rows: Sequence[dict]) -> None:
    """Write all rows or nothing: a temp file in the same folder, renamed when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sole-r1-score", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="video file or folder of images (scene/external camera)")
    parser.add_argument("--wrist", default=None, help="second video/folder for the wrist camera row")
    parser.add_argument("--goal", required=True, help="task description, e.g. 'push the red block into the green zone'")
    parser.add_argument("--rate", type=float, default=1.0, help="scoring rate in Hz of media time (default 1)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of image folders (or override a video's)")
    parser.add_argument("--jsonl", default=None, help="also write every estimate as one JSON line")
    add_scorer_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        goal = validate_goal(args.goal)
        scorer = build_scorer(settings_from_args(args))
    except (GoalError, ModelLoadError, ProtocolError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    roles = ("external",) if args.wrist is None else ("external", "wrist")
    episode = scorer.new_episode(goal, roles)
    estimates: list[Estimate] = []
    print(f"goal: {goal}")
    print(f"{'step':>4}  {'time_s':>8}  {'prog':>6}  {'status':<12}  {'model_s':>7}  reasoning")
    try:
        for stamp, views in subsample(_paired_frames(args.source, args.wrist, args.fps), args.rate):
            estimate = scorer.score(episode, stamp, views)
            estimates.append(estimate)
            print(format_row(estimate), flush=True)
    except (MediaError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not estimates:
        print("error: no frames were scored", file=sys.stderr)
        return 2
    failures = sum(e.status in ("parse_failed", "error") for e in estimates)
    print(f"scored {len(estimates)} frames; final progress {estimates[-1].percent}%; "
          f"max {max(e.percent for e in estimates)}%; failures {failures}")
    if args.jsonl:
        write_jsonl_atomic(Path(args.jsonl), [e.to_dict() for e in estimates])
    return 0


if __name__ == "__main__":
    sys.exit(main())
