#!/usr/bin/env python3
"""Composite cost, and which cheaper ways to build it give the same pixels (single thread, no model).

Every step of an episode shows N camera rows x 3 timestep columns (2 "from zero"): the first
frame, the previous scored frame and the current one. Variants, timed on the same frames:

* ``current``      - ``composite.compose``: every column letterboxed every step, then the PIL
                     bicubic resize of the whole grid to the smart_resize size
* ``cached tiles`` - what the scorer does: the first and previous columns' letterboxed tiles kept
                     from earlier steps, only the current column letterboxed (same pixels)
* ``reuse first``  - cached tiles, and the first column's *output* kept for the episode: PIL's
                     horizontal pass over the whole grid, its vertical pass only over the output
                     columns right of the first column's (a vertical pass reads one column, so
                     this gives the same pixels; asserted at every step while the other columns
                     change)
* ``cv2 resize``   - cached tiles + ``cv2.resize(INTER_CUBIC)`` for the final resize (not the same
                     pixels: mean/max abs difference printed)

Why the horizontal pass cannot skip the first column: a strip of it would be a resize with a
``box`` starting inside the grid, and Pillow parses ``box`` as C floats (float32), so the strip's
sampling positions move by up to 1/2 ulp of float32 (3e-5 px at x = 388). The bench extracts
Pillow's own 8-bit resampling coefficients exactly (an identity image x 2^22 in mode ``I``, whose
32-bit path rounds like the 8-bit one) for the whole grid and for the strip, and prints how many
coefficients differ: any difference can change output pixels.

    .venv/bin/python bench/composite_micro.py --cameras 1 2 3 --columns 2 3 --n 60
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sole_r1_ros.core.composite import (
    CompositeLayout,
    compose,
    grid_from_tiles,
    letterbox,
    smart_resize,
)

BICUBIC = Image.Resampling.BICUBIC
PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling (Resample.c)


def pct(ts: Sequence[float], q: float) -> float:
    """Percentile of seconds, in ms."""
    s = sorted(ts)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] * 1e3


def model_size(grid: np.ndarray, layout: CompositeLayout) -> tuple[int, int]:
    """(width, height) the grid is resized to."""
    h, w = smart_resize(grid.shape[0], grid.shape[1], factor=layout.resize_factor,
                        min_pixels=layout.min_pixels, max_pixels=layout.max_pixels)
    return w, h


def first_column_outputs(in_w: int, out_w: int, layout: CompositeLayout) -> int:
    """How many output columns read only the first tile and the gap after it (bicubic support 2,
    one pixel of margin for rounding): their pixels are fixed for the whole episode."""
    scale = in_w / out_w
    support = 2.0 * max(1.0, scale)
    second_tile = layout.tile_size + layout.gap
    n = 0
    while (n + 0.5) * scale + support + 0.5 < second_tile - 1:
        n += 1
    return n


def resize_reusing_first(grid: np.ndarray, size: tuple[int, int], first: Image.Image) -> Image.Image:
    """The model image, with the first ``first.width`` output columns taken from ``first``."""
    out_w, out_h = size
    n = first.width
    horizontal = Image.fromarray(grid).resize((out_w, grid.shape[0]), BICUBIC)
    rest = horizontal.crop((n, 0, out_w, grid.shape[0])).resize((out_w - n, out_h), BICUBIC)
    out = Image.new("RGB", size)
    out.paste(first, (0, 0))
    out.paste(rest, (n, 0))
    return out


def pillow_coefficients(in_w: int, out_w: int, box: tuple[float, float]) -> np.ndarray:
    """Pillow's fixed-point horizontal coefficients, [input column, output column]."""
    eye = Image.fromarray(np.eye(in_w, dtype=np.int32) << PRECISION_BITS)
    return np.asarray(eye.resize((out_w, in_w), BICUBIC, box=(box[0], 0, box[1], in_w)))


def strip_mismatch(in_w: int, out_w: int, n_first: int) -> tuple[int, int]:
    """Coefficients that differ between the whole grid's horizontal pass and a strip of it right of
    the first column (box starting at that column's source position): (count, max difference)."""
    whole = pillow_coefficients(in_w, out_w, (0.0, float(in_w)))[:, n_first:]
    strip = pillow_coefficients(in_w, out_w - n_first, (n_first * in_w / out_w, float(in_w)))
    diff = np.abs(whole.astype(np.int64) - strip)
    return int((diff > 0).sum()), int(diff.max())


def timed_letterbox(views: Mapping[str, np.ndarray], roles: Sequence[str], layout: CompositeLayout) -> float:
    """Seconds to letterbox one timestep's views (the part of a step every cached variant pays)."""
    t0 = time.perf_counter()
    for r in roles:
        letterbox(views[r], layout.tile_size)
    return time.perf_counter() - t0


def timed(fn: Callable[[], Image.Image], times: list[float]) -> np.ndarray:
    """Run ``fn`` once, append its time, return its pixels."""
    t0 = time.perf_counter()
    img = fn()
    times.append(time.perf_counter() - t0)
    return np.asarray(img)


def run(n_cam: int, n_col: int, args: argparse.Namespace, layout: CompositeLayout) -> str:
    """One table row: every variant over ``args.n`` steps of one episode."""
    rng = np.random.default_rng(0)
    roles = [f"c{i}" for i in range(n_cam)]

    def frames() -> dict[str, np.ndarray]:
        return {r: rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for r in roles}

    first = frames()
    first_tiles = {r: letterbox(first[r], layout.tile_size) for r in roles}
    size = model_size(grid_from_tiles([first_tiles] * n_col, roles, layout), layout)
    in_w = n_col * layout.tile_size + (n_col - 1) * layout.gap
    n_first = first_column_outputs(in_w, size[0], layout)
    first_out: Image.Image | None = None
    t_cur: list[float] = []
    t_cache: list[float] = []
    t_reuse: list[float] = []
    t_cv2: list[float] = []
    diffs: list[np.ndarray] = []
    previous = frames()
    prev_tiles = {r: letterbox(previous[r], layout.tile_size) for r in roles}
    for _ in range(args.n):
        current = frames()  # every step a new frame, so only the first column repeats
        shown_previous = previous if n_col == 3 else None
        ref = timed(lambda p=shown_previous, c=current: compose(first, p, c, roles, layout), t_cur)
        cur_tiles = {r: letterbox(current[r], layout.tile_size) for r in roles}
        columns = [first_tiles, prev_tiles, cur_tiles] if n_col == 3 else [first_tiles, cur_tiles]
        letterbox_s = timed_letterbox(current, roles, layout)

        def cached_grid(cols: list[dict[str, np.ndarray]] = columns) -> np.ndarray:
            return grid_from_tiles(cols, roles, layout)

        got = timed(lambda g=cached_grid: Image.fromarray(g()).resize(size, BICUBIC), t_cache)
        assert np.array_equal(got, ref), "cached tiles changed the pixels"
        if first_out is None:  # the episode's second frame: the first column's output is kept from here on
            first_out = Image.fromarray(ref).crop((0, 0, n_first, size[1]))
        got = timed(lambda g=cached_grid, f=first_out: resize_reusing_first(g(), size, f), t_reuse)
        assert np.array_equal(got, ref), "reusing the first column's output changed the pixels"
        got = timed(lambda g=cached_grid: Image.fromarray(cv2.resize(g(), size, interpolation=cv2.INTER_CUBIC)),
                    t_cv2)
        diffs.append(np.abs(got.astype(np.int16) - ref.astype(np.int16)))
        for times in (t_cache, t_reuse, t_cv2):  # each variant letterboxes the current frame once
            times[-1] += letterbox_s
        previous, prev_tiles = current, cur_tiles
    count, worst = strip_mismatch(in_w, size[0], n_first)
    d = np.stack(diffs)
    return (
        f"| {n_cam} | {n_col} | {size[0]}x{size[1]} | {pct(t_cur, 50):.1f} / {pct(t_cur, 99):.1f} "
        f"| {pct(t_cache, 50):.1f} / {pct(t_cache, 99):.1f} | {pct(t_reuse, 50):.1f} / {pct(t_reuse, 99):.1f} "
        f"| {pct(t_reuse, 50) / pct(t_cache, 50):.2f} | {n_first} | {count} / {worst} "
        f"| {pct(t_cv2, 50):.1f} / {pct(t_cv2, 99):.1f} | {d.mean():.2f} / {d.max()} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--columns", nargs="+", type=int, default=[3], choices=[2, 3],
                    help="3 = first, previous, current; 2 = from zero (first, current)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args(argv)
    layout = CompositeLayout()
    print(
        "| cameras | columns | model image | current p50 / p99 ms | cached tiles p50 / p99 ms "
        "| reuse first p50 / p99 ms | reuse / cached p50 | first-column outputs | strip coefficients differing "
        "(count / max of 2^22) | cv2 resize p50 / p99 ms | cv2 vs PIL mean / max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n_col in args.columns:
        for n_cam in args.cameras:
            print(run(n_cam, n_col, args, layout), flush=True)
    print("\n(every 'cached tiles' and 'reuse first' image was asserted equal to 'current', pixel for pixel)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
