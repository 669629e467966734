#!/usr/bin/env python3
"""Seconds per SFT step (forward, backward, AdamW) of the recipe's batches, with the padding mask
that ``collate`` builds and with the all-ones mask ``train.weighted_loss`` uses for right-padded
batches (attention's causal fast path), alternating the two on the same batches.

    .venv/bin/python bench/sft_step.py --steps 20

``--model`` defaults to the shipped default model. Prints one JSON line: the median seconds per
step of each variant, their ratio, and the largest difference between the two losses (rounding
only: causal masking keeps every real token off the pads after it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from sole_r1_tools.training.dataset import training_specs

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "sole_r1_ros" / "data" / "default_model"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--steps", type=int, default=20, help="steps of each variant")
    p.add_argument("--episodes", type=int, default=8, help="training episodes the batches are drawn from")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_tools.training.dataset import ExampleBuilder, collate
    from sole_r1_tools.training.loading import load_model
    from sole_r1_tools.training.train import build_examples, weighted_loss

    torch.set_num_threads(args.threads)
    examples = build_examples(args.model, training_specs(args.episodes, 0), 0, noise=12.0, p_noise=0.5,
                              p_random=0.5, workers=1)
    torch.set_num_threads(args.threads)
    backend = load_model(args.model)
    builder = ExampleBuilder(backend, load_protocol())
    model = backend.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    rng = np.random.default_rng(0)

    def step(batch: dict[str, Any], padding_mask: bool) -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = weighted_loss(model, dict(batch), causal_fast_path=not padding_mask)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, float(loss.detach())

    times: dict[str, list[float]] = {"padding_mask": [], "causal_only": []}
    diffs = []
    for k in range(args.steps + 1):
        batch = collate(builder, [examples[int(i)] for i in rng.integers(len(examples), size=args.batch_size)], 5.0)
        state = {n: t.clone() for n, t in model.state_dict().items()}
        t_mask, l_mask = step(batch, True)
        model.load_state_dict(state)  # both variants step from the same weights
        t_causal, l_causal = step(batch, False)
        if k:  # the first pair warms up
            times["padding_mask"].append(t_mask)
            times["causal_only"].append(t_causal)
            diffs.append(abs(l_mask - l_causal))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"steps": args.steps, "batch_size": args.batch_size, "threads": args.threads,
                      "seconds_per_step": {k: round(v, 4) for k, v in med.items()},
                      "causal_over_mask": round(med["causal_only"] / med["padding_mask"], 3),
                      "max_loss_difference": float(f"{max(diffs):.3g}"),
                      "sequence_length": int(batch["input_ids"].shape[1])}))


if __name__ == "__main__":
    main()
