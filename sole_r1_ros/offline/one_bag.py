"""One bag from its plan to committed outputs: score it (journaling into ``OUT.partial``), write
the outputs there, then make them appear in ``OUT`` at once. ``score_bag`` runs this for one bag
and, in threads, for many (:mod:`sole_r1_ros.offline.many_bags`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sole_r1_ros.core.scorer import ProgressScorer
from sole_r1_ros.offline.bag_scoring import ScoredBag, ScoringSettings, run
from sole_r1_ros.offline.outputs import commit, finish_commit, is_committed, write_outputs
from sole_r1_ros.offline.plan import Plan, ScoreBagError


def partial_dir(out: Path) -> Path:
    """Where a run for ``out`` works (and journals its steps) until its outputs are complete."""
    return out.with_name(out.name + ".partial")


def score_into(plan: Plan, settings: ScoringSettings, out: Path, *, storage: str = "mcap", with_plot: bool = True,
               quiet: bool = False, loaded: ProgressScorer | None = None, stop: threading.Event | None = None,
               on_progress: Callable[[float, int], None] | None = None) -> tuple[ScoredBag, dict[str, Any]]:
    """Score ``plan``'s bag into ``out``; returns the scored rows and the summary. Raises
    :class:`ScoreBagError` when nothing was scored. ``KeyboardInterrupt`` leaves the finished steps
    journaled in :func:`partial_dir` for a resume, unless it came after the outputs were moved into
    place: then the run finishes as if uninterrupted. The keyword arguments after ``with_plot``
    are :func:`~sole_r1_ros.offline.bag_scoring.run`'s."""
    partial = partial_dir(out)
    scored = run(plan, settings, partial, quiet=quiet, loaded=loaded, stop=stop, on_progress=on_progress)
    if not scored.rows:
        raise ScoreBagError("no estimates were made (no aligned frames?)")
    summary = write_outputs(scored, plan, settings, partial, storage=storage, with_plot=with_plot)
    try:
        commit(partial, out)
    except KeyboardInterrupt:
        if not is_committed(partial, out):
            raise
        finish_commit(out)
    return scored, summary


__all__ = ["partial_dir", "score_into"]
