"""Model wrappers the offline tools stack around a backend (each one does one thing and delegates
the rest of the :class:`~sole_r1_ros.backends.contract.VisionLanguageModel` contract)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from sole_r1_ros.backends.contract import BatchTimings, Conversation, Generation, VisionLanguageModel
from sole_r1_ros.settings.generation import GenerationSettings


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


__all__ = ["DelegatingModel"]
