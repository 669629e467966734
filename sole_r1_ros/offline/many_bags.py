"""Score many bags concurrently against one model (``score_bag BAG... --jobs N``).

Each bag is an independent run (:func:`~sole_r1_ros.offline.one_bag.score_into`: own plan, journal,
outputs and commit, as for one bag) in its own
thread; they share one loaded scorer, so with the server backend up to ``N`` episodes are in
flight at the server at once (it batches them) and offline relabelling runs at the server's
throughput. One progress bar covers all bags. Ctrl-C stops every run between messages, keeps
their finished steps for a resume, and aborts the requests in flight.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sole_r1_ros.backends.registry import backend_class
from sole_r1_ros.core.scorer import ProgressScorer
from sole_r1_ros.errors import ConfigError, SoleR1Error
from sole_r1_ros.offline.bag_scoring import ScoringSettings
from sole_r1_ros.offline.loading import load_scorer
from sole_r1_ros.offline.one_bag import partial_dir, score_into
from sole_r1_ros.offline.plan import Plan, ScoreBagError


@dataclass
class BagJob:
    """One bag of a many-bag run and what became of it."""

    bag: Path
    out: Path
    status: str = "pending"  # pending | running | done | failed | interrupted
    error: str = ""
    fraction: float = 0.0
    estimates: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def partial(self) -> Path:
        """Where the run works until its outputs are complete."""
        return partial_dir(self.out)


def output_dirs(bags: Sequence[Path], out: Path) -> list[Path]:
    """``OUT/<bag directory name>`` per bag; raises :class:`ScoreBagError` when two bags share a name."""
    names = [Path(b).resolve().name for b in bags]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScoreBagError(f"several bags are named {duplicates}: their outputs would collide in '{out}'")
    return [out / n for n in names]


class ProgressBoard:
    """One stderr line for all bags: bags done, estimates, bag time scored (thread-safe)."""

    def __init__(self, jobs: Sequence[BagJob], *, show: bool) -> None:
        self.jobs = jobs
        self.show = show
        self._lock = threading.Lock()
        self._last = 0.0

    def update(self, force: bool = False) -> None:
        """Redraw (at most 10 times a second unless ``force``)."""
        if not self.show:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < 0.1:
                return
            self._last = now
            done = sum(j.status in ("done", "failed") for j in self.jobs)
            fraction = sum(1.0 if j.status in ("done", "failed") else j.fraction for j in self.jobs) / len(self.jobs)
            estimates = sum(j.estimates for j in self.jobs)
            width = 30
            filled = int(width * min(1.0, fraction))
            sys.stderr.write(f"\rscoring [{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}%  "
                             f"{done}/{len(self.jobs)} bags  {estimates} estimates")
            sys.stderr.flush()

    def finish(self) -> None:
        """End the line."""
        if self.show:
            self.update(force=True)
            sys.stderr.write("\n")


def score_bags(
    jobs: Sequence[BagJob],
    settings: ScoringSettings,
    make_plan: Callable[[Path], Plan],
    *,
    concurrency: int,
    quiet: bool = False,
    storage: str = "mcap",
    with_plot: bool = True,
) -> list[BagJob]:
    """Score every job's bag, ``concurrency`` at a time, with one shared scorer; returns the jobs
    with their status. ``KeyboardInterrupt`` is re-raised after every run has stopped."""
    if concurrency > 1 and backend_class(settings.model.backend).in_process:
        raise ConfigError("--jobs > 1 needs --backend server: the in-process model answers one call at a time")
    loaded: ProgressScorer = load_scorer(settings.model, settings.decoding, quiet=quiet)
    stop = threading.Event()
    board = ProgressBoard(jobs, show=sys.stderr.isatty() and not quiet)

    def one(job: BagJob) -> None:
        if stop.is_set():
            job.status = "interrupted"
            return
        job.status = "running"

        def progress(fraction: float, estimates: int) -> None:
            job.fraction, job.estimates = fraction, estimates
            board.update()

        try:
            scored, job.summary = score_into(make_plan(job.bag), settings, job.out, storage=storage,
                                             with_plot=with_plot, quiet=True, loaded=loaded, stop=stop,
                                             on_progress=progress)
            job.estimates = len(scored.rows)
            job.status = "done"
        except KeyboardInterrupt:
            job.status = "interrupted"
        except (SoleR1Error, OSError) as err:
            job.status, job.error = "failed", str(err)
        board.update(force=True)

    pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="score_bag")
    try:
        futures = [pool.submit(one, job) for job in jobs]
        try:
            for future in futures:
                while not future.done():
                    time.sleep(0.05)
                future.result()
        except KeyboardInterrupt:
            stop.set()
            loaded.model.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            for job in jobs:
                if job.status in ("pending", "running"):
                    job.status = "interrupted"
            raise
    finally:
        pool.shutdown(wait=True)
        board.finish()
        loaded.model.close()
    return list(jobs)


__all__ = ["BagJob", "ProgressBoard", "output_dirs", "score_bags"]
