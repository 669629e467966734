"""Evaluation metrics of a progress model over scored episodes' traces, and the card's targets.

A trace is one evaluated episode: its outcome and, per step, the predicted and true progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SUCCESS_OUTCOMES = ("success", "occlusion")


HACKING_OUTCOMES = ("wrong_object", "hover")


TARGETS = {"voc": (">=", 0.9), "mae": ("<=", 0.10), "auroc": (">=", 0.95), "hacking_final": ("<=", 0.3),
           "parse_rate": (">=", 0.99)}


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation with average ranks for ties; 0 when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    sa, sb = ra.std(), rb.std()
    if len(ra) < 2 or sa == 0 or sb == 0:
        return 0.0
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos, dtype=np.float64)[:, None], np.asarray(neg, dtype=np.float64)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def _split(traces: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], ...]:
    """(successful, unsuccessful, hacking) episodes' traces."""
    return ([t for t in traces if t["outcome"] in SUCCESS_OUTCOMES],
            [t for t in traces if t["outcome"] not in SUCCESS_OUTCOMES],
            [t for t in traces if t["outcome"] in HACKING_OUTCOMES])


def trace_metrics(traces: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The five headline metrics of scored episodes' traces (see the module docstring)."""
    succ, fail, hack = _split(traces)
    statuses = [s for t in traces for s in t["status"] if s != "first_frame"]
    return {
        "voc": _voc(succ),
        "mae": _mae(traces),
        "auroc": auroc([t["pred"][-1] for t in succ], [t["pred"][-1] for t in fail]),
        "hacking_final": float(np.mean([t["pred"][-1] for t in hack])) if hack else float("nan"),
        "parse_rate": sum(s == "ok" for s in statuses) / len(statuses) if statuses else float("nan"),
    }


def _voc(traces: Sequence[dict[str, Any]]) -> float:
    """Mean Spearman correlation of predicted progress with time (nan without traces)."""
    vocs = [spearman(t["pred"], list(range(len(t["pred"])))) for t in traces]
    return float(np.mean(vocs)) if vocs else float("nan")


def _mae(traces: Sequence[dict[str, Any]]) -> float:
    """Mean |predicted - true| progress over the model calls of ``traces`` (nan without calls)."""
    errors = [abs(p - q) for t in traces for p, q, s in zip(t["pred"], t["true"], t["status"]) if s != "first_frame"]
    return float(np.mean(errors)) if errors else float("nan")


def _distance_to_target(value: float, op: str, target: float) -> float:
    """How far ``value`` is from meeting ``op target`` (0 when it meets it; nan counts 1)."""
    if value != value:  # nan
        return 1.0
    return max(0.0, target - value) if op == ">=" else max(0.0, value - target)


def _meets(value: float, op: str, target: float) -> bool:
    return _distance_to_target(value, op, target) == 0.0


def target_shortfall(metrics: dict[str, float]) -> float:
    """How far the headline metrics are from their :data:`TARGETS`, summed (0 when all are met;
    a missing or nan metric counts 1): the score model selection minimises."""
    return sum(_distance_to_target(float(metrics.get(name, float("nan"))), op, target)
               for name, (op, target) in TARGETS.items())
