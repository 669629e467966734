"""``sole-r1-score``: score a video (or image folder) against a goal and print a table.

Use it to sanity-check a checkpoint before it goes near a robot::

    sole-r1-score clip.mp4 --goal "push the red block into the green zone" --rate 2 --model /ckpt/SOLE-R1-8B
    sole-r1-score scene.mp4 --wrist wrist.mp4 --goal "..." --rate 1 --jsonl out.jsonl --plot out.png --video out.mp4

Sampling is seeded (``--seed``, default 0) so a re-run gives the same table; ``--seed -1``
samples unseeded. ``--plot`` writes the plot ``score_bag`` writes (progress over media time above
composite thumbnails); ``--video`` an annotated video, one frame per scored frame at ``--rate``
frames per second (the composite, the progress curve so far and the reasoning). Each output is
written complete or not at all.
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
from typing import Any, cast

import numpy as np
from PIL import Image

from sole_r1_ros.backends.wrappers import PerStepSeedModel
from sole_r1_ros.core.goal import validate_goal
from sole_r1_ros.core.scorer import Episode, Estimate, ProgressScorer, build_scorer
from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.errors import SoleR1Error
from sole_r1_ros.messages.video import iter_frames, subsample
from sole_r1_ros.offline.plot import ThumbnailSampler, plot
from sole_r1_ros.offline.seeding import OFFLINE_DECODING_OPTIONS
from sole_r1_ros.offline.video_report import AnnotatedVideoWriter, views_image
from sole_r1_ros.settings.cli import add_setting_arguments, settings_from_args
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings

# the node's default align_tolerance: a wrist frame further from the scene frame is not its pair
PAIR_TOLERANCE_NS = 50_000_000


def _paired_frames(
    scene: str, wrist: str | None, fps: float | None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    if wrist is None:
        for stamp, frame in iter_frames(scene, fps=fps):
            yield stamp, {"external": frame}
        return
    yield from pair_by_time(iter_frames(scene, fps=fps), iter_frames(wrist, fps=fps))


def pair_by_time(scene: Iterator[tuple[int, np.ndarray]], wrist: Iterator[tuple[int, np.ndarray]],
                 tolerance_ns: int = PAIR_TOLERANCE_NS) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Each scene frame with the wrist frame nearest in media time, when one lies within
    ``tolerance_ns`` (scene frames without one are left out): videos of different frame rates or
    lengths pair by time, not by index."""
    previous: tuple[int, np.ndarray] | None = None
    upcoming = next(wrist, None)
    for stamp, frame in scene:
        while upcoming is not None and upcoming[0] <= stamp:  # the last wrist frame at or before it
            previous, upcoming = upcoming, next(wrist, None)
        candidates = [c for c in (previous, upcoming) if c is not None]
        if not candidates:
            return
        best = min(candidates, key=lambda c: abs(c[0] - stamp))
        if abs(best[0] - stamp) <= tolerance_ns:
            yield stamp, {"external": frame, "wrist": best[1]}


def _subsampled(
    frames: Iterator[tuple[int, dict[str, np.ndarray]]], rate_hz: float
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """:func:`~sole_r1_ros.messages.video.subsample` over view dicts (it keeps any payload)."""
    return cast("Iterator[tuple[int, dict[str, np.ndarray]]]", subsample(cast("Iterator[Any]", frames), rate_hz))


def format_row(e: Estimate) -> str:
    """One table row for an estimate."""
    reasoning = " ".join(e.reasoning.split())
    if len(reasoning) > 60:
        reasoning = reasoning[:57] + "..."
    detail = reasoning if e.status in (EstimateStatus.OK, EstimateStatus.FIRST_FRAME) else (e.error or "")
    return (f"{e.step:>4}  {e.stamp_ns / 1e9:>8.2f}  {e.percent:>5}%  {e.status.value:<12}  "
            f"{e.timings.get('model_s', 0.0):>7.3f}  {detail}")


def format_decoding(generation: GenerationSettings, seed: int) -> str:
    """How the model is sampled, in words."""
    if not generation.do_sample:
        return f"greedy, max {generation.max_new_tokens} new tokens"
    seeding = "unseeded" if seed < 0 else f"seed {seed} (one derived seed per step)"
    return (f"sampled (temperature {generation.temperature:g}, top-p {generation.top_p:g}, top-k {generation.top_k}, "
            f"max {generation.max_new_tokens} new tokens), {seeding}")


def write_jsonl_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> None:
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


def plot_rows(estimates: Sequence[Estimate]) -> list[dict[str, Any]]:
    """What :func:`~sole_r1_ros.offline.plot.plot` draws: progress where there is one (no reward)."""
    return [{"stamp_ns": e.stamp_ns, "progress": e.progress if e.has_progress else None, "reward": None,
             "status": e.status.value} for e in estimates]


def build_parser() -> argparse.ArgumentParser:
    """The command line: its own options plus the model and decoding settings."""
    parser = argparse.ArgumentParser(prog="sole-r1-score", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("source", help="video file or folder of images (scene/external camera)")
    parser.add_argument("--wrist", default=None, help="second video/folder for the wrist camera row")
    parser.add_argument("--goal", required=True, help="task description, e.g. 'push the red block into the green zone'")
    parser.add_argument("--rate", type=float, default=1.0, help="scoring rate in Hz of media time (default 1)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of image folders (or override a video's)")
    parser.add_argument("--jsonl", default=None, help="also write every estimate as one JSON line")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="also write the plot score_bag writes: progress over media time above composite "
                             "thumbnails (default: no plot)")
    parser.add_argument("--video", default=None, metavar="MP4",
                        help="also write an annotated video (mp4v): per scored frame the composite, the progress "
                             "curve so far and the reasoning, at --rate frames per second (default: no video)")
    add_setting_arguments(parser, ModelSettings, title="model")
    add_setting_arguments(parser, DecodingSettings, title="decoding", **OFFLINE_DECODING_OPTIONS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sole-r1-score``; returns the exit status (0 done, 2 bad input or failure)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.rate <= 0:
        print("error: --rate must be positive", file=sys.stderr)
        return 2
    try:
        goal = validate_goal(args.goal)
        decoding = settings_from_args(DecodingSettings, args)
        loaded = build_scorer(settings_from_args(ModelSettings, args), decoding)
    except SoleR1Error as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown: list[Image.Image | None] = [None]  # the composite of the current step
    thumbnails = ThumbnailSampler()

    def on_image(_episode: Episode, _stamp_ns: int, image: Image.Image) -> None:
        shown[0] = image
        thumbnails.add(image)

    scorer = ProgressScorer(PerStepSeedModel(loaded.model), loaded.protocol, generation=loaded.generation,
                            from_zero=loaded.from_zero)
    scorer.composite_listeners.append(on_image)
    roles = ("external",) if args.wrist is None else ("external", "wrist")
    episode = scorer.new_episode(goal, roles)
    estimates: list[Estimate] = []
    title = f"{Path(args.source).name}: {goal}"
    video: AnnotatedVideoWriter | None = None
    try:
        if args.video:
            video = AnnotatedVideoWriter(args.video, fps=args.rate, title=title)
        print(f"goal: {goal}")
        print(f"decoding: {format_decoding(loaded.generation, decoding.seed)}")
        print(f"{'step':>4}  {'time_s':>8}  {'prog':>6}  {'status':<12}  {'model_s':>7}  reasoning")
        for stamp, views in _subsampled(_paired_frames(args.source, args.wrist, args.fps), args.rate):
            shown[0] = None
            estimate = scorer.score(episode, stamp, views)
            estimates.append(estimate)
            print(format_row(estimate), flush=True)
            if video is not None:
                ok = estimate.status in (EstimateStatus.OK, EstimateStatus.FIRST_FRAME)
                video.add(time_s=(stamp - estimates[0].stamp_ns) / 1e9,
                          image=shown[0] if shown[0] is not None else views_image(views),
                          progress=estimate.progress if estimate.has_progress else None,
                          status=estimate.status.value, reasoning=estimate.reasoning if ok else (estimate.error or ""),
                          step=estimate.step)
        if not estimates:
            print("error: no frames were scored", file=sys.stderr)
            return 2
        failures = sum(e.status in (EstimateStatus.PARSE_FAILED, EstimateStatus.ERROR) for e in estimates)
        print(f"scored {len(estimates)} frames; final progress {estimates[-1].percent}%; "
              f"max {max(e.percent for e in estimates)}%; failures {failures}")
        if args.jsonl:
            write_jsonl_atomic(Path(args.jsonl), [e.to_dict() for e in estimates])
        if args.plot:
            plot(plot_rows(estimates), Path(args.plot), title=title, start_ns=estimates[0].stamp_ns,
                 thumbnails=thumbnails.thumbnails, time_label="media time [s]")
            print(f"plot: {args.plot}")
        if video is not None:
            print(f"video: {video.commit()} ({video.frames} frames)")
            video = None
    except (SoleR1Error, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if video is not None:
            video.abort()
        loaded.model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
