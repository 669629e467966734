"""The built-in default model's whole recipe in one command, timed against a 60-minute budget.

    python -m sole_r1_tools.training.recipe --out /tmp/default_model

Runs the three stages of docs/default_model.md one after the other, each from the model the
stage before it saved:

0. ``vision_warmup``: the vision tower of a fresh random-init Qwen3-VL on state and per-token
   labels;
1. ``train``: protocol SFT from the warmed model;
2. ``train --on-policy-episodes --goal-swap-pairs``: one DAgger round on the quoted progress, with a
   goal-swap pair in every batch, from the stage-1 model.

The final model's ``training_summary.json`` nests the earlier stages' summaries and gains a
``recipe`` entry: each stage's wall-clock seconds, the total and whether it kept the budget
(on a 2-core machine: 44.2 min with this code; the shipped model's run, before training steps
took attention's causal fast path, 66.7 min; docs/default_model.md).
Each stage's ``minutes`` is a guard on its optimisation loop, the shipped commands' own; a
triggered guard is recorded as ``stopped_early`` in that stage's summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sole_r1_tools.training.train import _log

BUDGET_MINUTES = 60.0

# Stage settings (keyword arguments of warmup() / train()): the shipped model's (docs/default_model.md).
WARMUP = dict(seed=0, episodes=300, passes=3, steps=1050, minutes=25.0, lr=3e-3, dense_weight=1.0)
SFT = dict(seed=0, episodes=420, steps=2200, minutes=31.0, lr=1e-3, noise=12.0, p_noise=0.5, p_random=0.5,
           answer_weight=5.0, decision_weight=5.0, match_vision_scale=1.0, vision_lr_mult=0.3)
ON_POLICY = dict(seed=1, episodes=300, on_policy_episodes=300, steps=1000, minutes=40.0, lr=5e-4, warmup=30,
                 noise=12.0, p_noise=0.5, p_random=0.5, answer_weight=5.0, decision_weight=5.0, vision_lr_mult=0.3,
                 goal_swap_pairs=1, counterfactual_weight=200.0)


def stages() -> list[tuple[str, Callable[..., dict[str, Any]], dict[str, Any]]]:
    """(name, stage function, its settings) in the order they run."""
    from sole_r1_tools.training.train import train
    from sole_r1_tools.training.vision_warmup import warmup

    return [("vision_warmup", warmup, dict(WARMUP)), ("protocol_sft", train, dict(SFT)),
            ("on_policy_sft", train, dict(ON_POLICY))]


def run_recipe(out: Path, *, threads: int = 2, workers: int = 2, device: str = "cpu",
               overrides: dict[str, dict[str, Any]] | None = None,
               budget_minutes: float = BUDGET_MINUTES, keep_stages: Path | None = None) -> dict[str, Any]:
    """Run every stage into ``out`` (written atomically by the last stage); ``overrides`` maps a
    stage name to settings that replace its own (smaller runs); ``keep_stages``: also keep each
    earlier stage's model there, under the stage's name. Returns the final summary."""
    plan = stages()
    unknown = set(overrides or {}) - {name for name, _, _ in plan}
    if unknown:
        raise ValueError(f"no recipe stage named {sorted(unknown)}")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sole_r1_recipe_"))
    timings: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        init: Path | None = None
        for k, (name, fn, settings) in enumerate(plan):
            settings.update((overrides or {}).get(name, {}))
            target = out if k == len(plan) - 1 else work / name
            _log(f"recipe stage {k} ({name}): {json.dumps(settings)}")
            t0 = time.perf_counter()
            fn(target, init_dir=init, threads=threads, workers=workers, device=device, **settings)
            timings.append({"stage": name, "seconds": round(time.perf_counter() - t0, 1), "settings": settings})
            if keep_stages is not None and target != out:  # copied outside the timed stage
                shutil.copytree(target, Path(keep_stages) / name, dirs_exist_ok=True)
            init = target
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_start
    record = {"stages": timings, "total_seconds": round(total, 1), "budget_minutes": budget_minutes,
              "within_budget": total <= 60.0 * budget_minutes, "torch_threads": threads, "workers": workers,
              "device": device}
    summary_path = out / "training_summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary["recipe"] = record
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, summary_path)
    _log(f"recipe done in {total / 60:.1f} min, {'within' if record['within_budget'] else 'OVER'} its "
         f"{budget_minutes:g}-minute budget: "
         + ", ".join(f"{t['stage']} {t['seconds'] / 60:.1f} min" for t in timings))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="model directory to write (replaced atomically)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every stage")
    p.add_argument("--workers", type=int, default=2, help="processes for data synthesis")
    p.add_argument("--device", default="cpu", help="torch device for training (data synthesis stays on the CPU)")
    p.add_argument("--keep-stages", type=Path, default=None, metavar="DIR",
                   help="also keep the earlier stages' models in DIR/<stage name> (by default they are deleted)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    run_recipe(args.out, threads=args.threads, workers=args.workers, device=args.device,
               keep_stages=args.keep_stages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
