"""The resume journal: finished model replies of a run, kept in ``OUT.partial/journal.jsonl``.

The first line is the run's fingerprint (bag, cameras, goal and every setting); each further line
one reply, fsynced as it is written. A re-run with the same fingerprint replays them instead of
asking the model again, so an interrupted run resumes after its last finished step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from sole_r1_ros.backends.contract import BatchTimings, Conversation, Generation, VisionLanguageModel
from sole_r1_ros.offline.model_wrappers import DelegatingModel
from sole_r1_ros.settings.generation import GenerationSettings

LOG = logging.getLogger("score_bag")
JOURNAL_NAME = "journal.jsonl"
JOURNAL_VERSION = 2  # 2: per-step seeds (sole_r1_ros.offline.seeding)


def fingerprint(identity: dict[str, Any], settings: Sequence[Any]) -> str:
    """Identifies a scoring run: a resume is only allowed when this matches. ``identity`` holds
    plain values (bag facts, cameras, goal), ``settings`` dataclass instances."""
    blob = json.dumps(
        {"version": JOURNAL_VERSION, **identity, **{type(s).__name__: asdict(s) for s in settings}},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def read_journal(partial: Path, fp: str) -> list[dict[str, Any]]:
    """The replies journaled in ``partial`` by a run with fingerprint ``fp`` (none for another run)."""
    journal = partial / JOURNAL_NAME
    if not journal.is_file():
        return []
    lines = journal.read_text(encoding="utf-8").splitlines()
    try:
        if not lines or json.loads(lines[0]).get("fingerprint") != fp:
            return []
    except (json.JSONDecodeError, AttributeError):
        return []
    replies = []
    for line in lines[1:]:
        try:
            replies.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a crash: that step is redone
    return replies


def open_journal(partial: Path, fp: str) -> tuple[Path, list[dict[str, Any]]]:
    """Prepare ``partial`` for a run: keep the replies of the same run (resume), else start afresh."""
    replies = read_journal(partial, fp)
    if not replies and partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    journal = partial / JOURNAL_NAME
    if not replies:
        journal.write_text(json.dumps({"fingerprint": fp}) + "\n", encoding="utf-8")
    else:
        LOG.info("resuming: %d finished steps found in %s", len(replies), partial)
        lines = journal.read_text(encoding="utf-8").splitlines()[: len(replies) + 1]
        journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return journal, replies


class JournaledModel(DelegatingModel):
    """Replays replies journaled by an interrupted run, journals new ones."""

    def __init__(self, model: VisionLanguageModel, journal: Path, replies: list[dict[str, Any]]) -> None:
        super().__init__(model)
        self.replay = list(replies)
        self.replayed = 0
        self._journal = journal.open("a", encoding="utf-8")

    def generate(self, conversations: Sequence[Conversation], images: Sequence[Image.Image],
                 settings: GenerationSettings, timings: BatchTimings | None = None) -> list[Generation]:
        """The next journaled replies while there are any, else the model's (journaled)."""
        if len(self.replay) >= len(conversations):
            out = [Generation(**self.replay.pop(0)) for _ in conversations]
            self.replayed += len(out)
            return out
        generations = self.inner.generate(conversations, images, settings, timings)
        for g in generations:
            self._journal.write(json.dumps({"text": g.text, "prompt_tokens": g.prompt_tokens,
                                            "new_tokens": g.new_tokens}) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        return generations

    def close(self) -> None:
        """Close the journal (the model stays loaded: the caller owns it)."""
        self._journal.close()


__all__ = ["JOURNAL_NAME", "JournaledModel", "fingerprint", "open_journal", "read_journal"]
