"""The backend contract: what the scorer needs from a model, and what a model hands back.

A backend subclasses :class:`VisionLanguageModel` and implements :meth:`~VisionLanguageModel.generate`;
every other method has a default for backends with nothing to do there. Failures during an
answer are raised as :class:`~sole_r1_ros.errors.InferenceError`, failures to load as
:class:`~sole_r1_ros.errors.ModelLoadError`. Backends are chosen by name in
:mod:`sole_r1_ros.backends.registry`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from sole_r1_ros.errors import InferenceError, ModelLoadError
from sole_r1_ros.settings.generation import GenerationSettings

Conversation = list[dict[str, Any]]


@dataclass(frozen=True)
class Generation:
    """One reply and what producing it cost."""

    text: str
    prompt_tokens: int
    new_tokens: int


@dataclass
class BatchTimings:
    """Seconds spent preparing the inputs (processor) and producing the replies, for one batch."""

    processor_s: float = 0.0
    model_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


# The SOLE-R1 reference's repetition penalty: its vLLM SamplingParams leave it at the neutral 1.0
# (and min_p 0, no presence/frequency penalty). Sent explicitly by every backend, so that a
# checkpoint's generation_config.json (which vLLM, SGLang and transformers apply to what a request
# leaves out) cannot bring in another.
REPETITION_PENALTY = 1.0

# The protocol's own tags. A goal must not form them whether or not the tokenizer has them as
# tokens (Qwen3-VL's has <think> but no <answer>): every backend adds them to its tokenizer's
# special strings, so the in-process and server backends escape a goal alike.
PROTOCOL_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def special_text_order(specials: Iterable[str]) -> tuple[str, ...]:
    """The strings a goal must not form, longest first (so a longer one is split before a part of it)."""
    return tuple(sorted({t for t in specials if len(t) > 1}, key=lambda t: (-len(t), t)))


def split_special_texts(text: str, ordered_specials: Sequence[str]) -> str:
    """Split every such string in ``text`` with a zero-width space after its first character, so
    that user text (the goal) stays plain text and cannot form a special token; ``ordered_specials``
    as :func:`special_text_order` gives them."""
    for token in ordered_specials:
        if token in text:
            text = text.replace(token, token[0] + "\u200b" + token[1:])
    return text


def check_batch(conversations: Sequence[Conversation], images: Sequence[Image.Image]) -> None:
    """Raise ``ValueError`` unless there is one image per conversation and at least one of each."""
    if len(conversations) != len(images) or not conversations:
        raise ValueError("need one image per conversation and at least one conversation")


class VisionLanguageModel(abc.ABC):
    """A model that answers chat conversations about one image each."""

    # True: the model runs in this process (one generate call at a time, loaded with transformers);
    # False: it is served elsewhere and takes concurrent calls
    in_process: ClassVar[bool] = True

    @abc.abstractmethod
    def generate(
        self,
        conversations: Sequence[Conversation],
        images: Sequence[Image.Image],
        settings: GenerationSettings,
        timings: BatchTimings | None = None,
    ) -> list[Generation]:
        """One reply per (conversation, image) pair, in order; raises :class:`InferenceError`."""

    def describe(self) -> dict[str, Any]:
        """Short facts for logs and diagnostics (path, device, ...)."""
        return {}

    def escape_special_text(self, text: str) -> str:
        """Make user text (the goal) unable to form the model's special tokens."""
        return text

    def cancel(self) -> None:  # noqa: B027 - optional: a backend that cannot cancel does nothing
        """Make a generation in flight (and later ones) stop as soon as possible: for shutdown."""

    def close(self) -> None:  # noqa: B027 - optional: a backend that holds nothing does nothing
        """Free what the model holds (memory, connections)."""


__all__ = [
    "PROTOCOL_TAGS",
    "REPETITION_PENALTY",
    "BatchTimings",
    "Conversation",
    "Generation",
    "InferenceError",
    "ModelLoadError",
    "VisionLanguageModel",
    "check_batch",
    "special_text_order",
    "split_special_texts",
]
