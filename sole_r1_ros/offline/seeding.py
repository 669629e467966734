"""Reproducible sampling for the offline tools (``score_bag``, ``sole-r1-score``).

Offline runs keep the release's sampling (``do_sample``, temperature, top-p, top-k from the
protocol) but are seeded by default with :data:`OFFLINE_SEED`, so the same bag and settings give
the same estimates; ``--seed N`` picks another seed and ``--seed -1`` samples unseeded (the
node's default).

The backend re-seeds torch with ``GenerationSettings.seed`` before every ``generate`` call. Handing
it the same seed at every step would replay the same random stream at every step: the sampling
noise of all steps of a run would be correlated (a draw that lands in a distribution's tail at one
step tends to do so at every step), so a run's errors would not average out over time. Instead
:class:`PerStepSeedModel` gives the ``k``-th model call of a run the seed :func:`step_seed`
``(seed, k)``: independent-looking streams per step, still fixed by the run's seed. Because every
call is re-seeded, a resumed run (replayed journal steps count as calls) continues exactly as the
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from PIL import Image

from sole_r1_ros.backends.contract import BatchTimings, Conversation, Generation, VisionLanguageModel
from sole_r1_ros.offline.model_wrappers import DelegatingModel
from sole_r1_ros.settings.generation import GenerationSettings

OFFLINE_SEED = 0
SEED_HELP = (f"sampling seed; offline runs are seeded by default ({OFFLINE_SEED}) so that a re-run gives the "
             "same estimates (each model call gets its own seed derived from this one and its index); "
             "-1 = unseeded")
# how the offline CLIs offer DecodingSettings: seeded by default (the node's default is -1, unseeded)
OFFLINE_DECODING_OPTIONS: dict[str, Any] = {"defaults": {"seed": OFFLINE_SEED}, "helps": {"seed": SEED_HELP}}
SEEDING_TEXT = "per model call: sha256('sole_r1_ros/step-seed/<seed>/<call index>'), 63 bits"


def step_seed(seed: int, index: int) -> int:
    """The torch seed of the ``index``-th model call (0-based) of a run seeded with ``seed``."""
    digest = hashlib.sha256(f"sole_r1_ros/step-seed/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class PerStepSeedModel(DelegatingModel):
    """Replaces ``settings.seed`` (when set) by :func:`step_seed` of it and the call's index."""

    def __init__(self, inner: VisionLanguageModel) -> None:
        super().__init__(inner)
        self.calls = 0

    def generate(self, conversations: Sequence[Conversation], images: Sequence[Image.Image],
                 settings: GenerationSettings, timings: BatchTimings | None = None) -> list[Generation]:
        """Generate with this call's derived seed."""
        index = self.calls
        self.calls += 1
        if settings.seed is not None:
            settings = replace(settings, seed=step_seed(settings.seed, index))
        return self.inner.generate(conversations, images, settings, timings)


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


__all__ = ["OFFLINE_DECODING_OPTIONS", "OFFLINE_SEED", "PerStepSeedModel", "describe_sampling", "step_seed"]
