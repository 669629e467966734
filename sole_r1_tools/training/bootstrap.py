"""How much of a metric is the evaluation set's luck: bootstrap intervals over episodes.

    python -m sole_r1_tools.training.bootstrap A.json B.json [--resamples 2000]

``evaluate --json`` writes every episode's trace. Resampling the episodes (with replacement,
within each outcome, so every resample keeps the set's successes, failures and hacking episodes)
and recomputing the headline metrics gives a percentile interval for each metric of one model,
and, for two models scored on the same episodes, for the *difference* of each metric: the two
models are resampled together, episode by episode (a paired bootstrap), so an interval that
excludes 0 is a difference the evaluation set's draw of episodes does not explain. It says
nothing about training's own run-to-run variance: that needs several training runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sole_r1_tools.training.metrics import TARGETS, trace_metrics

METRICS = tuple(TARGETS)


def _strata(traces: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Indices of the episodes of each outcome (the resampling keeps each outcome's count)."""
    outcomes = sorted({t["outcome"] for t in traces})
    return [np.array([k for k, t in enumerate(traces) if t["outcome"] == o]) for o in outcomes]


def _bootstrap(traces: Sequence[dict[str, Any]], statistic: Callable[[Sequence[int]], dict[str, float]], *,
               resamples: int, seed: int, level: float) -> dict[str, dict[str, float]]:
    """Per headline metric: ``statistic`` of all episodes and its percentile interval over
    ``resamples`` draws of the episode indices (with replacement, within each outcome)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    strata = _strata(traces)
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(resamples):
        sample = statistic(np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata]).tolist())
        for m in METRICS:
            draws[m].append(sample[m])
    point = statistic(range(len(traces)))
    return {m: {"value": point[m], "low": lo, "high": hi}
            for m in METRICS for lo, hi in [_interval(draws[m], level)]}


def _interval(values: list[float], level: float) -> tuple[float, float]:
    v = np.asarray([x for x in values if x == x], dtype=np.float64)  # nan-free (e.g. AUROC without negatives)
    if not len(v):
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    return float(np.percentile(v, tail)), float(np.percentile(v, 100.0 - tail))


def metric_intervals(traces: Sequence[dict[str, Any]], *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, dict[str, float]]:
    """Per headline metric: its value on ``traces`` and the bootstrap percentile interval."""
    return _bootstrap(traces, lambda idx: trace_metrics([traces[k] for k in idx]),
                      resamples=resamples, seed=seed, level=level)


def _aligned(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``b``'s traces in ``a``'s episode order; both must hold the same episodes."""
    def key(t: dict[str, Any]) -> tuple[Any, ...]:
        return t["seed"], t["task_kind"], t["outcome"]

    by_key = {key(t): t for t in b}
    if len(by_key) != len(b) or sorted(by_key) != sorted(key(t) for t in a):
        raise ValueError("the two evaluations did not score the same episodes (compare runs of one --episodes/--seed)")
    return [by_key[key(t)] for t in a]


def paired_differences(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], *, resamples: int = 2000,
                       seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Per headline metric: B minus A on the same episodes, with the paired bootstrap interval."""
    b = _aligned(a, b)

    def difference(idx: Sequence[int]) -> dict[str, float]:
        sa, sb = trace_metrics([a[k] for k in idx]), trace_metrics([b[k] for k in idx])
        return {m: sb[m] - sa[m] for m in METRICS}

    return _bootstrap(a, difference, resamples=resamples, seed=seed, level=level)


def _row(name: str, d: dict[str, float], signed: bool) -> str:
    f = "+.3f" if signed else ".3f"
    return f"| {name} | {d['value']:{f}} | [{d['low']:{f}}, {d['high']:{f}}] |"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="evaluate --json files: one (intervals) or two on the same episodes "
                                              "(the second minus the first)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95)
    args = p.parse_args(argv)
    if len(args.results) > 2:
        p.error("give one evaluation (intervals) or two (their difference)")
    if not 0.0 < args.level < 1.0:
        p.error("--level must be in (0, 1)")
    traces = []
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            traces.append(json.load(f)["traces"])
    opts = dict(resamples=args.resamples, seed=args.seed, level=args.level)
    if len(traces) == 1:
        table = metric_intervals(traces[0], **opts)
        print(f"| metric | value | {args.level:.0%} interval |\n|---|---|---|")
    else:
        table = paired_differences(traces[0], traces[1], **opts)
        print(f"| metric | second - first | {args.level:.0%} interval (paired) |\n|---|---|---|")
    print("\n".join(_row(m, table[m], signed=len(traces) == 2) for m in METRICS))
    print(f"\n{len(traces[0])} episodes, {args.resamples} resamples within each outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
