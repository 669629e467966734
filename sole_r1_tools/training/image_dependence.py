"""Image dependence of a trained model: does its answer use the composite, or only the quoted
previous progress? Teacher-forced answer-token loss on held-out steps whose quoted previous
progress is uniform random, with the right composites and with composites swapped.

    python -m sole_r1_tools.training.image_dependence --model M --episodes 8 --seed 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sole_r1_ros.core.protocol import load_protocol
from sole_r1_tools.training.dataset import ExampleBuilder, evaluation_specs
from sole_r1_tools.training.loading import load_model
from sole_r1_tools.training.train import build_examples, image_dependence


def measure_image_dependence(model_dir: str | Path, episodes: int = 8, seed: int = 1000) -> dict[str, float]:
    """Teacher-forced answer-token loss on held-out steps whose quoted previous progress is uniform
    random, with the right composites and with composites swapped between steps
    (``train.image_dependence``)."""
    specs = evaluation_specs(episodes, seed)
    examples = build_examples(Path(model_dir), specs, seed, noise=0.0, p_random=1.0, workers=1)
    backend = load_model(Path(model_dir))
    result = image_dependence(backend.model, ExampleBuilder(backend, load_protocol()), examples, 8)
    return {**result, "examples": len(examples)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sole_r1_tools.training.image_dependence",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=1000)
    args = p.parse_args(argv)
    print(json.dumps(measure_image_dependence(args.model, args.episodes, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
