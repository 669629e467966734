#!/usr/bin/env python3
"""Composite cost and two cheaper equivalents (single thread, no model).

* ``current``      - ``composite.compose`` as the scorer calls it: 3 columns x N cameras letterboxed
                     every step, then PIL bicubic resize to the smart_resize size
* ``cached tiles`` - the first and previous columns' letterboxed tiles kept from earlier steps
                     (they are the same frames), so only the current column is letterboxed;
                     output identical to ``current``
* ``cv2 resize``   - cached tiles + the final resize with cv2 INTER_CUBIC instead of PIL
                     (not bit-identical: mean/max abs pixel difference vs ``current`` printed)

    .venv/bin/python bench/composite_micro.py --cameras 2 3 --n 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sole_r1_ros.core.composite import CompositeLayout, compose, letterbox, smart_resize


def grid_from_tiles(tile_columns, roles, layout):
    size, gap = layout.tile_size, layout.gap
    rows = []
    for role in roles:
        parts = []
        for col in tile_columns:
            if parts and gap:
                parts.append(np.zeros((size, gap, 3), np.uint8))
            parts.append(col[role])
        rows.append(np.hstack(parts))
    out = []
    for row in rows:
        if out and gap:
            out.append(np.zeros((gap, row.shape[1], 3), np.uint8))
        out.append(row)
    return np.vstack(out)


def pct(ts, q):
    s = sorted(ts)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args(argv)
    layout = CompositeLayout()
    rng = np.random.default_rng(0)
    print(
        "| cameras | composite px | current p50 / p99 ms | cached tiles p50 / p99 ms "
        "| cached + cv2 resize p50 / p99 ms | cv2 vs PIL mean / max abs diff |"
    )
    print("|---|---|---|---|---|---|")
    for n_cam in args.cameras:
        roles = [f"c{i}" for i in range(n_cam)]
        frames = [
            {r: rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8) for r in roles} for _ in range(3)
        ]
        t_cur, t_cache, t_cv2 = [], [], []
        diff = None
        for _ in range(args.n):
            t0 = time.perf_counter()
            ref = compose(frames[0], frames[1], frames[2], roles, layout)
            t_cur.append(time.perf_counter() - t0)
            first_tiles = {r: letterbox(frames[0][r], layout.tile_size) for r in roles}  # kept from step 0
            prev_tiles = {r: letterbox(frames[1][r], layout.tile_size) for r in roles}   # kept from last step
            t0 = time.perf_counter()
            cur_tiles = {r: letterbox(frames[2][r], layout.tile_size) for r in roles}
            grid = grid_from_tiles([first_tiles, prev_tiles, cur_tiles], roles, layout)
            h, w = grid.shape[:2]
            nh, nw = smart_resize(
                h, w, factor=layout.resize_factor, min_pixels=layout.min_pixels, max_pixels=layout.max_pixels
            )
            img = Image.fromarray(grid).resize((nw, nh), resample=Image.Resampling.BICUBIC)
            t_cache.append(time.perf_counter() - t0)
            assert np.array_equal(np.asarray(img), np.asarray(ref))
            t0 = time.perf_counter()
            cur_tiles = {r: letterbox(frames[2][r], layout.tile_size) for r in roles}
            grid = grid_from_tiles([first_tiles, prev_tiles, cur_tiles], roles, layout)
            arr = cv2.resize(grid, (nw, nh), interpolation=cv2.INTER_CUBIC)
            img2 = Image.fromarray(arr)
            t_cv2.append(time.perf_counter() - t0)
            d = np.abs(np.asarray(img2).astype(int) - np.asarray(ref).astype(int))
            diff = (d.mean(), d.max())
        print(f"| {n_cam} | {ref.size[0]}x{ref.size[1]} | {pct(t_cur, 50):.1f} / {pct(t_cur, 99):.1f} | "
              f"{pct(t_cache, 50):.1f} / {pct(t_cache, 99):.1f} | {pct(t_cv2, 50):.1f} / {pct(t_cv2, 99):.1f} | "
              f"{diff[0]:.2f} / {diff[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
