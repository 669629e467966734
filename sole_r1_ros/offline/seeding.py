"""Reproducible sampling for the offline tools (``score_bag``, ``sole-r1-score``).

Offline runs keep the release's sampling (``do_sample``, temperature, top-p, top-k from the
protocol) but are seeded by default with :data:`OFFLINE_SEED`, so the same bag and settings give
the same estimates; ``--seed N`` picks another seed and ``--seed -1`` samples unseeded (the
node's default). Each model call gets its own seed derived from the run's
(:class:`~sole_r1_ros.backends.wrappers.PerStepSeedModel`); replayed journal steps count as calls,
so a resumed run continues as the uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

from sole_r1_ros.backends.wrappers import SEEDING_TEXT
from sole_r1_ros.settings.generation import GenerationSettings

OFFLINE_SEED = 0
SEED_HELP = (f"sampling seed; offline runs are seeded by default ({OFFLINE_SEED}) so that a re-run gives the "
             "same estimates (each model call gets its own seed derived from this one and its index); "
             "-1 = unseeded")
# how the offline CLIs offer DecodingSettings: seeded by default (the node's default is -1, unseeded)
OFFLINE_DECODING_OPTIONS: dict[str, Any] = {"defaults": {"seed": OFFLINE_SEED}, "helps": {"seed": SEED_HELP}}


def describe_sampling(generation: GenerationSettings, seed: int) -> dict[str, object]:
    """What a run's summary records about decoding (``seed``: None when unseeded)."""
    return {
        "do_sample": generation.do_sample,
        "temperature": generation.temperature if generation.do_sample else None,
        "top_p": generation.top_p if generation.do_sample else None,
        "top_k": generation.top_k if generation.do_sample else None,
        "max_new_tokens": generation.max_new_tokens,
        "seed": seed if seed >= 0 else None,
        "seeding": ("greedy: deterministic, the seed is not used" if not generation.do_sample
                    else SEEDING_TEXT if seed >= 0 else "unseeded"),
    }


__all__ = ["OFFLINE_DECODING_OPTIONS", "OFFLINE_SEED", "describe_sampling"]
