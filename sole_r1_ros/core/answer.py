"""Parse ``<think>…</think><answer>N%</answer>`` replies without ever raising or inventing a number.

A reply that ends inside its answer is a failure (``truncated``), never a number: ``<answer>4``
cut by the token limit on its way to ``45%`` must not read as 4 %, nor ``<answer>100100`` as
100 %. The answer is complete when it has a closing tag (``</answer``; the final ``>`` may be
missing) or, without one, when its number ends in ``%`` and the generation ended on its own
(not at the token limit).
"""

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
_NUMBER = re.compile(r"[+-]?[0-9]{1,6}(?:\.[0-9]{1,6})?")  # ASCII digits; bounded, so float() stays finite


class ParseStatus(str, Enum):
    """Outcome of parsing one reply."""

    OK = "ok"
    CLIPPED = "clipped"  # a number outside [-100, 100], clipped to the range
    NO_ANSWER = "no_answer"  # no <answer> tag at all
    INVALID_NUMBER = "invalid_number"  # an <answer> tag without a number in it
    TRUNCATED = "truncated"  # the reply ends inside its <answer> (no closing tag, and no % or the token limit)

    @property
    def has_value(self) -> bool:
        """Whether the reply yielded a progress number (possibly clipped)."""
        return self in (ParseStatus.OK, ParseStatus.CLIPPED)


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed reply. ``percent`` is ``None`` exactly when no number could be read; ``reason``
    says why in words ("" when a number was read)."""

    percent: int | None
    reasoning: str
    status: ParseStatus
    answer_text: str | None
    reason: str = ""


def _reasoning(text: str) -> str:
    match = _THINK_CLOSED.search(text) or _THINK_OPEN.search(text)
    if match:
        return match.group(1).strip()
    head = text.split("<answer>", 1)[0]
    return head.replace("</think>", "").strip()


def parse_answer(text: str, *, hit_token_limit: bool = False) -> ParsedAnswer:
    """Read the progress percentage and reasoning from a model reply.

    Tolerates a truncated closing tag (``</answer`` without ``>``), a ``%`` sign, surrounding
    whitespace and a decimal number (rounded); values are clipped to [-100, 100]. An answer
    without any closing tag counts only when its number ends in ``%`` and ``hit_token_limit``
    is False (the generation stopped by itself); otherwise it is ``TRUNCATED``.
    """
    reasoning = _reasoning(text)
    closed = _ANSWER_CLOSED.search(text)
    match = closed or _ANSWER_OPEN.search(text)
    if match is None:
        why = "no <answer> tag in the reply"
        if hit_token_limit:
            why += " (generation stopped at the token limit)"
        return ParsedAnswer(None, reasoning, ParseStatus.NO_ANSWER, None, why)
    answer_text = match.group(1).strip()
    if closed is None:
        if hit_token_limit:
            return ParsedAnswer(None, reasoning, ParseStatus.TRUNCATED, answer_text,
                                "the reply ends inside <answer>: generation stopped at the token limit")
        if not answer_text.endswith("%"):
            return ParsedAnswer(None, reasoning, ParseStatus.TRUNCATED, answer_text,
                                "the reply ends inside <answer>: no '%' and no closing tag")
    number = _NUMBER.fullmatch(answer_text.replace("%", "").strip())
    if number is None:
        return ParsedAnswer(None, reasoning, ParseStatus.INVALID_NUMBER, answer_text,
                            f"no number in <answer>{answer_text[:40]!r}")
    value = round(float(number.group(0)))
    clipped = min(PROGRESS_MAX, max(PROGRESS_MIN, value))
    status = ParseStatus.OK if clipped == value else ParseStatus.CLIPPED
    return ParsedAnswer(clipped, reasoning, status, answer_text)
