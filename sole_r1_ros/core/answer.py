"""Parse ``<think>…</think><answer>N%</answer>`` replies without ever raising or inventing a number."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

PROGRESS_MIN = -100
PROGRESS_MAX = 100

_ANSWER_CLOSED = re.compile(r"<answer>(.*?)</answer", re.DOTALL)
_ANSWER_OPEN = re.compile(r"<answer>(.*)\Z", re.DOTALL)
_THINK_CLOSED = re.compile(r"<think>(.*?)</think", re.DOTALL)
_THINK_OPEN = re.compile(r"<think>(.*?)(?:<answer>|\Z)", re.DOTALL)
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


class ParseStatus(str, Enum):
    """Outcome of parsing one reply."""

    OK = "ok"
    CLIPPED = "clipped"  # a number outside [-100, 100], clipped to the range
    NO_ANSWER = "no_answer"  # no <answer> tag at all
    INVALID_NUMBER = "invalid_number"  # an <answer> tag without a number in it

    @property
    def has_value(self) -> bool:
        """Whether the reply yielded a progress number (possibly clipped)."""
        return self in (ParseStatus.OK, ParseStatus.CLIPPED)


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed reply. ``percent`` is ``None`` exactly when no number could be read."""

    percent: int | None
    reasoning: str
    status: ParseStatus
    answer_text: str | None


def _reasoning(text: str) -> str:
    match = _THINK_CLOSED.search(text) or _THINK_OPEN.search(text)
    if match:
        return match.group(1).strip()
    head = text.split("<answer>", 1)[0]
    return head.replace("</think>", "").strip()


def parse_answer(text: str) -> ParsedAnswer:
    """Read the progress percentage and reasoning from a model reply.

    Tolerates a missing closing tag (or a truncated ``</answer``), a ``%`` sign, surrounding
    whitespace and a decimal number (rounded). Values are clipped to [-100, 100].
    """
    reasoning = _reasoning(text)
    match = _ANSWER_CLOSED.search(text) or _ANSWER_OPEN.search(text)
    if match is None:
        return ParsedAnswer(None, reasoning, ParseStatus.NO_ANSWER, None)
    answer_text = match.group(1).strip()
    number = _NUMBER.fullmatch(answer_text.replace("%", "").strip())
    if number is None:
        return ParsedAnswer(None, reasoning, ParseStatus.INVALID_NUMBER, answer_text)
    value = round(float(number.group(0)))
    clipped = min(PROGRESS_MAX, max(PROGRESS_MIN, value))
    status = ParseStatus.OK if clipped == value else ParseStatus.CLIPPED
    return ParsedAnswer(clipped, reasoning, status, answer_text)
