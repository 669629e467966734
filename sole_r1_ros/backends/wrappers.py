"""Wrappers around a backend that add one thing and delegate the rest of the
:class:`~sole_r1_ros.backends.contract.VisionLanguageModel` contract.

:class:`PerStepSeedModel` seeds each model call of a run with its own seed. The backend re-seeds
torch with ``GenerationSettings.seed`` before every ``generate`` call; handing it the same seed
at every step would replay the same random stream at every step, so the sampling noise of all
steps of a run would be correlated (a draw that lands in a distribution's tail at one step tends
to do so at every step) and a run's errors would not average out over time. The ``k``-th call
instead gets :func:`step_seed` ``(seed, k)``: independent-looking streams per step, still fixed by
the run's seed. The node and the offline tools both use it, so a seeded node and a seeded
``score_bag`` draw the same streams.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from PIL import Image

from sole_r1_ros.backends.contract import BatchTimings, Conversation, Generation, VisionLanguageModel
from sole_r1_ros.settings.generation import GenerationSettings

SEEDING_TEXT = "per model call: sha256('sole_r1_ros/step-seed/<seed>/<call index>'), 63 bits"


class DelegatingModel(VisionLanguageModel):
    """Passes every call to ``inner``; subclasses override what they add."""

    def __init__(self, inner: VisionLanguageModel) -> None:
        self.inner = inner

    def generate(self, conversations: Sequence[Conversation], images: Sequence[Image.Image],
                 settings: GenerationSettings, timings: BatchTimings | None = None) -> list[Generation]:
        """The inner model's replies."""
        return self.inner.generate(conversations, images, settings, timings)

    def describe(self) -> dict[str, Any]:
        """The inner model's facts."""
        return self.inner.describe()

    def escape_special_text(self, text: str) -> str:
        """Escaped as the inner model escapes it."""
        return self.inner.escape_special_text(text)

    def cancel(self) -> None:
        """Cancel the inner model's generation."""
        self.inner.cancel()

    def close(self) -> None:
        """Close the inner model."""
        self.inner.close()


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


__all__ = ["SEEDING_TEXT", "DelegatingModel", "PerStepSeedModel", "step_seed"]
