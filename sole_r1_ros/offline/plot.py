"""The offline tools' plot: progress (and reward, and ground truth when known) over time, above a
few of the composites the model was shown."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from sole_r1_ros.core.status import EstimateStatus

MAX_THUMBNAILS = 4
THUMBNAIL_SIZE = (392, 262)


class ThumbnailSampler:
    """Keeps a bounded, evenly strided sample of composites (the stride doubles as needed), so a
    long run holds at most ``4 * count`` small images."""

    def __init__(self, count: int = MAX_THUMBNAILS) -> None:
        self.count = count
        self._kept: list[Image.Image] = []
        self._stride = 1
        self._seen = 0

    def add(self, image: Image.Image) -> None:
        """Offer one composite (kept as a thumbnail when it falls on the stride)."""
        if self._seen % self._stride == 0:
            thumb = image.copy()
            thumb.thumbnail(THUMBNAIL_SIZE)
            self._kept.append(thumb)
            if len(self._kept) > 4 * self.count:
                self._kept = self._kept[::2]
                self._stride *= 2
        self._seen += 1

    @property
    def thumbnails(self) -> list[Image.Image]:
        """At most ``count`` kept thumbnails, evenly spread over the run."""
        if len(self._kept) <= self.count:
            return list(self._kept)
        step = (len(self._kept) - 1) / (self.count - 1)
        return [self._kept[round(i * step)] for i in range(self.count)]


def plot(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str, start_ns: int,
         ground_truth: Mapping[int, float] | None = None, thumbnails: Sequence[Image.Image] = (),
         time_label: str = "bag time [s]") -> None:
    """Write a PNG to ``path`` (complete or not at all: a temp file renamed when written).

    ``rows`` are estimate dicts with ``stamp_ns``, ``progress`` (None: nothing to show),
    ``status`` and optionally ``reward`` (drawn when any row has one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_thumbs = len(thumbnails)
    fig = plt.figure(figsize=(11, 7 if n_thumbs else 4.5), dpi=100)
    try:
        grid = fig.add_gridspec(2 if n_thumbs else 1, max(1, n_thumbs), height_ratios=[2, 1] if n_thumbs else [1])
        ax = fig.add_subplot(grid[0, :])
        scored = [r for r in rows if r["progress"] is not None]
        t = [(r["stamp_ns"] - start_ns) / 1e9 for r in scored]
        ax.plot(t, [r["progress"] for r in scored], "o-", label="predicted progress", color="tab:blue")
        if any(r.get("reward") is not None for r in scored):
            rewards = [math.nan if r.get("reward") is None else float(r["reward"]) for r in scored]
            ax.plot(t, rewards, "s--", label="reward", color="tab:orange", alpha=0.8)
        failed = [r for r in scored if r["status"] == EstimateStatus.PARSE_FAILED]
        if failed:
            ax.plot([(r["stamp_ns"] - start_ns) / 1e9 for r in failed], [r["progress"] for r in failed], "x",
                    color="tab:red", markersize=9, label="parse failed (carried forward)")
        if ground_truth:
            keys = sorted(ground_truth)
            ax.plot([(k - start_ns) / 1e9 for k in keys], [ground_truth[k] for k in keys], "-", color="tab:green",
                    label="ground truth", alpha=0.7)
        ax.set_xlabel(time_label)
        ax.set_ylabel("progress (1.0 = done)")
        ax.set_ylim(-1.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title, fontsize=10)
        for i, thumb in enumerate(thumbnails):
            tax = fig.add_subplot(grid[1, i])
            tax.imshow(thumb)
            tax.set_axis_off()
        fig.tight_layout()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            fig.savefig(tmp, format="png")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        plt.close(fig)


__all__ = ["MAX_THUMBNAILS", "ThumbnailSampler", "plot"]
