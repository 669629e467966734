"""A deterministic stand-in for the VLM, for tests of the plain-Python state machines around it
(episode state, scheduling). Composite, prompt and parser stay real; model behaviour is tested
with real tiny transformers models elsewhere."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from sole_r1_ros.backends.contract import BatchTimings, Generation, VisionLanguageModel


class ScriptedModel(VisionLanguageModel):
    """Replies from a script and records what it was asked: isolates the episode state machine
    (composite, prompt and parser stay real) from model randomness."""

    def __init__(self, replies: Sequence[str | Exception] = (), *, default: str | None = None,
                 gate: threading.Event | None = None) -> None:
        self.replies = list(replies)
        self.default = default
        self.gate = gate  # when set, each call blocks until the test opens the gate
        self.started = threading.Event()
        self.calls: list[tuple[list[list[dict[str, Any]]], list[Image.Image]]] = []

    def generate(self, conversations, images, settings, timings: BatchTimings | None = None) -> list[Generation]:
        self.calls.append((list(conversations), list(images)))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        out = []
        for _ in conversations:
            reply = self.replies.pop(0) if self.replies or self.default is None else self.default
            if isinstance(reply, Exception):
                raise reply
            out.append(Generation(text=reply, prompt_tokens=10, new_tokens=5))
        return out
