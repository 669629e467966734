"""Command line: generate one synthetic episode and write it as a rosbag2 bag."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .bag_writer import ENCODINGS, IMAGE_FORMATS, STORAGES, export_pngs, export_video, write_episode_bag
from .episodes import DEFAULT_START_NS, OUTCOMES, TASK_KINDS, generate_episode
from .scene import parse_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sole_r1_tools.synth", description=__doc__)
    p.add_argument("out", help="output bag directory (must not exist unless --overwrite)")
    p.add_argument("--task", choices=TASK_KINDS, default="push")
    p.add_argument("--outcome", choices=OUTCOMES, default="success")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--format", dest="image_format", choices=IMAGE_FORMATS, default="raw")
    p.add_argument("--encoding", choices=ENCODINGS, default="rgb8")
    p.add_argument("--size", type=parse_size, default=(320, 240), help="WxH, e.g. 320x240")
    p.add_argument("--target-color", default=None)
    p.add_argument("--reference-color", default=None, help="zone colour (push/place) or base block (stack)")
    p.add_argument("--start-ns", type=int, default=DEFAULT_START_NS)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--mp4", default=None, help="also write a side-by-side MP4 here")
    p.add_argument("--png-dir", default=None, help="also write per-frame PNGs here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        t0 = time.perf_counter()
        ep = generate_episode(args.task, args.outcome, args.seed, args.frames, args.fps, args.size,
                              target_color=args.target_color, reference_color=args.reference_color)
        t1 = time.perf_counter()
        out = write_episode_bag(ep, args.out, storage=args.storage, image_format=args.image_format,
                                encoding=args.encoding, start_ns=args.start_ns, jpeg_quality=args.jpeg_quality,
                                overwrite=args.overwrite)
        t2 = time.perf_counter()
        extra = ""
        if args.mp4:
            extra += f" mp4={export_video(ep, args.mp4)}"
        if args.png_dir:
            export_pngs(ep, args.png_dir, start_ns=args.start_ns)
            extra += f" png_dir={args.png_dir}"
    except (ValueError, FileExistsError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    p = ep.progress
    w, h = ep.meta["size"]
    print(f"wrote {out}: task={args.task} outcome={args.outcome} variant={ep.meta['variant']} seed={args.seed} "
          f"goal={ep.goal!r} frames={ep.n_frames} fps={ep.fps:g} size={w}x{h} storage={args.storage} "
          f"format={args.image_format} progress={p[0]:.2f}->{p[-1]:.2f} (max {p.max():.2f}) "
          f"gen={t1 - t0:.2f}s write={t2 - t1:.2f}s{extra}")
    return 0
