"""The resume journal: finished model replies of a run, kept in ``OUT.partial/journal.jsonl``.

The first line is the run's fingerprint (bag, cameras, goal and every setting that changes a
result); each further line one model call: a key of exactly what the model was shown (the
conversations, the composites and the decoding) and its replies, fsynced as it is written. A
re-run with the same fingerprint replays a call's replies when the call it is about to make has
the same key, so an interrupted run resumes after its last finished step. A call that failed is
not journaled (the re-run asks again), and from the first call whose key differs the rest of the
journal is dropped and scored afresh: a reply is never handed to another frame.
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
from sole_r1_ros.backends.wrappers import DelegatingModel
from sole_r1_ros.settings.generation import GenerationSettings

LOG = logging.getLogger("score_bag")
JOURNAL_NAME = "journal.jsonl"
JOURNAL_VERSION = 3  # 2: per-step seeds (sole_r1_ros.offline.seeding); 3: one keyed line per call


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
        LOG.info("resuming: %d journaled model calls found in %s", len(replies), partial)
        lines = journal.read_text(encoding="utf-8").splitlines()[: len(replies) + 1]
        journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return journal, replies


def call_key(conversations: Sequence[Conversation], images: Sequence[Image.Image],
             settings: GenerationSettings) -> str:
    """What one model call is shown: its conversations, composites (pixels) and decoding."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([list(conversations), asdict(settings)], sort_keys=True, default=str).encode())
    for image in images:
        h.update(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()


class JournaledModel(DelegatingModel):
    """Replays the calls journaled by an interrupted run while they match, journals new ones."""

    def __init__(self, model: VisionLanguageModel, journal: Path, replies: list[dict[str, Any]]) -> None:
        super().__init__(model)
        self.replay = list(replies)
        self.replayed = 0  # replies (not calls) taken from the journal
        self._path = journal
        self._kept = 0  # journal lines (after the fingerprint) that this run has confirmed
        self._journal = journal.open("a", encoding="utf-8")

    def generate(self, conversations: Sequence[Conversation], images: Sequence[Image.Image],
                 settings: GenerationSettings, timings: BatchTimings | None = None) -> list[Generation]:
        """The journaled replies of this very call while the journal matches, else the model's
        (journaled once they are back)."""
        key = call_key(conversations, images, settings)
        if self.replay:
            entry = self.replay[0]
            replies = entry.get("replies")
            if entry.get("key") == key and isinstance(replies, list) and len(replies) == len(conversations):
                self.replay.pop(0)
                self._kept += 1
                out = [Generation(**r) for r in replies]
                self.replayed += len(out)
                return out
            self._diverged()
        generations = self.inner.generate(conversations, images, settings, timings)
        replies_out = [{"text": g.text, "prompt_tokens": g.prompt_tokens, "new_tokens": g.new_tokens}
                       for g in generations]
        self._journal.write(json.dumps({"key": key, "replies": replies_out}) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._kept += 1
        return generations

    def _diverged(self) -> None:
        """This run's calls part from the journal's (a failed call there was asked again, or the
        inputs differ): drop the rest of the journal, so it is scored afresh and a later resume
        does not read stale lines."""
        LOG.warning("resume: call %d differs from the journaled one; the %d journaled call(s) from there on "
                    "are scored again", self._kept + 1, len(self.replay))
        self.replay.clear()
        self._journal.close()
        lines = self._path.read_text(encoding="utf-8").splitlines()[: self._kept + 1]
        self._path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._journal = self._path.open("a", encoding="utf-8")

    def close(self) -> None:
        """Close the journal (the model stays loaded: the caller owns it)."""
        self._journal.close()


def holds_finished_steps(partial: Path) -> bool:
    """True when ``partial``'s journal holds at least one journaled call (worth a resume)."""
    journal = partial / JOURNAL_NAME
    if not journal.is_file():
        return False
    with journal.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip()) > 1


__all__ = ["JOURNAL_NAME", "JournaledModel", "call_key", "fingerprint", "holds_finished_steps", "open_journal",
           "read_journal"]
