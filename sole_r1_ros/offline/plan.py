"""What a bag scoring run reads: cameras (role → topic), where the goal comes from, ground truth.

Checked before anything is written: every camera topic exists, is an image topic, has messages
and its first frame decodes; the goal is given (``goal``) or comes from a ``std_msgs/String``
topic, named (``goal_topic``) or auto-detected by :func:`goal_topic_rule`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sole_r1_ros.core.goal import validate_goal
from sole_r1_ros.errors import InputError
from sole_r1_ros.messages.bags import FLOAT32_TYPE, IMAGE_TYPES, STRING_TYPE, BagReader
from sole_r1_ros.messages.image_codec import ImageDecodeError, decode_any

LOG = logging.getLogger("score_bag")

# Goal topic auto-detection: a std_msgs/String topic whose last name segment (case-insensitive)
# is one of GOAL_NAMES, ends with one of GOAL_SUFFIXES or starts with one of GOAL_PREFIXES.
GOAL_NAMES = ("goal", "task", "instruction", "prompt")
GOAL_SUFFIXES = ("_goal", "_task", "_instruction")
GOAL_PREFIXES = ("goal_", "task_")
GOAL_RULE_TEXT = (
    "a std_msgs/String topic whose last name segment is goal, task, instruction or prompt, ends with "
    "_goal, _task or _instruction, or starts with goal_ or task_ (case-insensitive); when several match, "
    "an exact name beats a suffix, a suffix beats a prefix, then the order of the words as listed, "
    "then the topic name alphabetically"
)


class ScoreBagError(InputError):
    """Bad input: the run stops before writing anything."""


@dataclass
class Plan:
    """What will be scored: cameras (role → topic), goal source, ground truth."""

    bag: Path
    cameras: dict[str, str]
    goal: str | None
    goal_topic: str | None
    ground_truth_topic: str | None
    bag_info: dict[str, Any] = field(default_factory=dict)
    goal_source: str = ""  # "--goal", "--goal-topic" or "auto-detected (<rule>)"


def goal_topic_rule(topic: str) -> tuple[int, int, str] | None:
    """``(rank, word, rule)`` when ``topic``'s name looks like a goal topic, else None; a lower
    ``(rank, word)`` is preferred (rank 0: exact name, 1: suffix, 2: prefix)."""
    name = topic.rstrip("/").rsplit("/", 1)[-1].lower()
    if name in GOAL_NAMES:
        return 0, GOAL_NAMES.index(name), f"name '{name}'"
    for i, suffix in enumerate(GOAL_SUFFIXES):
        if name.endswith(suffix) and len(name) > len(suffix):
            return 1, i, f"suffix '{suffix}'"
    for i, prefix in enumerate(GOAL_PREFIXES):
        if name.startswith(prefix) and len(name) > len(prefix):
            return 2, i, f"prefix '{prefix}'"
    return None


def detect_goal_topic(string_topics: Sequence[str], counts: Mapping[str, int]) -> tuple[str, str]:
    """The goal topic among a bag's String topics and the rule that chose it; raises
    :class:`ScoreBagError` listing the String topics when none qualifies."""
    matches = sorted(
        (found[0], found[1], topic, found[2])
        for topic in string_topics if (found := goal_topic_rule(topic)) is not None
    )
    usable = [m for m in matches if counts.get(m[2], 0) > 0]
    if not usable:
        hint = "pass --goal \"...\" or --goal-topic TOPIC"
        if not string_topics:
            raise ScoreBagError(f"no goal: the bag has no std_msgs/String topics; {hint}")
        listed = ", ".join(f"{t} ({counts.get(t, 0)} messages)" for t in sorted(string_topics))
        why = (f"the goal-like topics {', '.join(m[2] for m in matches)} have no messages" if matches
               else "none of them looks like a goal topic")
        raise ScoreBagError(f"no goal: the bag's std_msgs/String topics are {listed}; {why} "
                            f"(auto-detection takes {GOAL_RULE_TEXT}); {hint}")
    _, _, topic, rule = usable[0]
    others = [m[2] for m in usable[1:]]
    LOG.info("goal topic: %s (auto-detected by %s)%s", topic, rule,
             f"; also goal-like: {', '.join(others)} (pass --goal-topic to choose)" if others else "")
    return topic, rule


def parse_camera_specs(specs: Sequence[str]) -> dict[str, str]:
    """``ROLE=TOPIC`` strings → role → topic, in the given order."""
    cameras: dict[str, str] = {}
    for spec in specs:
        role, sep, topic = spec.partition("=")
        if not sep or not role or not topic:
            raise ScoreBagError(f"--camera takes ROLE=TOPIC, got '{spec}'")
        cameras[role] = topic
    return cameras


def _guess_roles(topics: list[str]) -> dict[str, str]:
    if len(topics) == 1:
        return {"external": topics[0]}
    if len(topics) == 2:
        wrist = [t for t in topics if "wrist" in t.lower()]
        if len(wrist) == 1:
            other = next(t for t in topics if t != wrist[0])
            return {"external": other, "wrist": wrist[0]}
    raise ScoreBagError(
        f"cannot tell which camera is which among {topics}; name them: --camera external=/topic [--camera wrist=/topic]"
    )


def _check_cameras(bag: BagReader, cameras: Mapping[str, str]) -> None:
    for role, topic in cameras.items():
        if topic not in bag.topics:
            raise ScoreBagError(f"camera '{role}': topic '{topic}' is not in the bag; topics: {sorted(bag.topics)}")
        if bag.topics[topic] not in IMAGE_TYPES:
            raise ScoreBagError(f"camera '{role}': '{topic}' is {bag.topics[topic]}, not an image topic")
        if bag.counts.get(topic, 0) == 0:
            raise ScoreBagError(f"camera '{role}': topic '{topic}' has no messages")
        first = next(bag.messages([topic]))
        try:
            decode_any(first.msg)
        except ImageDecodeError as err:
            raise ScoreBagError(f"camera '{role}' on '{topic}': {err}") from err


def _check_goal_topic(bag: BagReader, topic: str) -> None:
    if topic not in bag.topics:
        strings = bag.topics_of_type([STRING_TYPE])
        raise ScoreBagError(f"goal topic '{topic}' is not in the bag; its std_msgs/String topics: "
                            f"{', '.join(sorted(strings)) or 'none'}")
    if bag.topics[topic] != STRING_TYPE:
        raise ScoreBagError(f"goal topic '{topic}' is {bag.topics[topic]}, not {STRING_TYPE}")
    if bag.counts.get(topic, 0) == 0:
        raise ScoreBagError(f"goal topic '{topic}' has no messages; pass --goal \"...\"")


def plan_scoring(
    bag_path: str | Path, *, cameras: Mapping[str, str] | None = None, goal: str | None = None,
    goal_topic: str | None = None, ground_truth_topic: str | None = None, max_goal_chars: int | None = 1000,
) -> Plan:
    """Open the bag, find cameras, goal and ground truth, and check the first frame of each camera
    decodes. ``cameras`` (role → topic, composite row order) is auto-detected when empty; ``goal``
    wins over any topic; ``goal_topic`` is auto-detected (:data:`GOAL_RULE_TEXT`) when None."""
    with BagReader(bag_path) as bag:
        if cameras:
            chosen = dict(cameras)
        else:
            image_topics = bag.topics_of_type(IMAGE_TYPES)
            if not image_topics:
                raise ScoreBagError(f"bag has no sensor_msgs Image/CompressedImage topics; topics: {bag.topics}")
            chosen = _guess_roles(image_topics)
        _check_cameras(bag, chosen)

        text: str | None = None
        topic: str | None = None
        if goal:
            text = validate_goal(goal, max_chars=max_goal_chars)
            source = "--goal"
        elif goal_topic:
            _check_goal_topic(bag, goal_topic)
            topic, source = goal_topic, "--goal-topic"
        else:
            topic, rule = detect_goal_topic(bag.topics_of_type([STRING_TYPE]), bag.counts)
            source = f"auto-detected ({rule})"

        gt = ground_truth_topic
        if gt is None:
            gts = sorted(t for t in bag.topics_of_type([FLOAT32_TYPE]) if "ground_truth" in t)
            gt = gts[0] if gts else None
        elif gt not in bag.topics:
            raise ScoreBagError(f"ground-truth topic '{gt}' is not in the bag")
        info = {"topics": bag.topics, "counts": bag.counts, "start_ns": bag.start_ns, "end_ns": bag.end_ns}
    return Plan(Path(bag_path), chosen, text, topic, gt, bag_info=info, goal_source=source)


__all__ = ["GOAL_RULE_TEXT", "Plan", "ScoreBagError", "detect_goal_topic", "goal_topic_rule",
           "parse_camera_specs", "plan_scoring"]
