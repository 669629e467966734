#!/usr/bin/env python3
"""Wall-clock seconds of one DAgger round's data (``train.on_policy_examples``): render synthetic
training episodes, score them free-running with a model, build an example for every model call.
This is the biggest data cost of the recipe's stage 2.

    .venv/bin/python bench/on_policy_data.py --episodes 64 --workers 2

``--model`` defaults to the shipped default model. Prints one JSON line: seconds, examples,
seconds per episode and the rollout metrics (which must not change when only the speed does).
To compare two versions of the code, run it from each checkout on the same machine, one after
the other, with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sole_r1_tools.training.dataset import EpisodeSpec, training_specs

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "sole_r1_ros" / "data" / "default_model"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the scoring process")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sole_r1_tools.training.train import on_policy_examples

    # the recipe's own offset for on-policy episodes (train.train)
    specs = [EpisodeSpec(s.task_kind, s.outcome, s.seed + 300_000) for s in training_specs(args.episodes, args.seed)]
    t0 = time.perf_counter()
    examples, info = on_policy_examples(args.model, specs, workers=args.workers)
    seconds = time.perf_counter() - t0
    print(json.dumps({"episodes": args.episodes, "workers": args.workers, "threads": args.threads,
                      "seconds": round(seconds, 1), "seconds_per_episode": round(seconds / args.episodes, 3),
                      "examples": len(examples), "rollout_metrics": info["rollout_metrics"]}))


if __name__ == "__main__":
    main()
