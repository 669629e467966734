"""What score_bag reads from a bag: goal-topic detection and its errors (no model involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bag_fixtures import write_bag
from sole_r1_ros.offline.plan import ScoreBagError, detect_goal_topic, goal_topic_rule, plan_scoring


@pytest.mark.parametrize("topic", [
    "/goal", "/task", "/instruction", "/prompt", "/robot/goal", "/task_goal", "/ns/TASK_GOAL", "/pick_task",
    "/user_instruction", "/goal_text", "/task_description", "/goal/",
])
def test_goal_like_names(topic: str) -> None:
    assert goal_topic_rule(topic) is not None


@pytest.mark.parametrize("topic", [
    "/status", "/goals", "/goal/status", "/my_prompt", "/_goal", "/goal_", "/rosout", "/taskforce", "/subgoal",
])
def test_other_names(topic: str) -> None:
    assert goal_topic_rule(topic) is None


def test_several_matches_pick_by_rank_then_word_then_name() -> None:
    counts = dict.fromkeys(["/a/task", "/b/goal", "/task_goal", "/goal_text", "/z/goal", "/x_task"], 1)
    assert detect_goal_topic(sorted(counts), counts)[0] == "/b/goal"  # exact 'goal' first, then by name
    del counts["/b/goal"], counts["/z/goal"]
    assert detect_goal_topic(sorted(counts), counts)[0] == "/a/task"  # exact beats suffix
    del counts["/a/task"]
    assert detect_goal_topic(sorted(counts), counts)[0] == "/task_goal"  # '_goal' before '_task'
    del counts["/task_goal"], counts["/x_task"]
    topic, rule = detect_goal_topic(sorted(counts), counts)
    assert topic == "/goal_text" and "prefix" in rule


def test_a_matching_topic_without_messages_is_skipped() -> None:
    counts = {"/goal": 0, "/task_goal": 2}
    assert detect_goal_topic(sorted(counts), counts)[0] == "/task_goal"


def test_task_goal_topic_is_found(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", n=4, goal_topic="/task_goal", strings={"/status": "idle"})
    plan = plan_scoring(bag)
    assert plan.goal_topic == "/task_goal" and plan.goal is None
    assert plan.goal_source.startswith("auto-detected") and "_goal" in plan.goal_source
    assert plan.cameras == {"external": "/camera/external/image_raw", "wrist": "/camera/wrist/image_raw"}
    assert plan.ground_truth_topic == "/ground_truth/progress"


def test_no_goal_topic_lists_the_string_topics(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", n=4, goal=None, strings={"/status": "idle", "/robot/mode": "auto"})
    with pytest.raises(ScoreBagError) as err:
        plan_scoring(bag)
    text = str(err.value)
    assert text.startswith("no goal") and "/status (1 messages)" in text and "/robot/mode" in text
    assert "--goal" in text and "--goal-topic" in text


def test_no_string_topics_says_so(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", n=4, goal=None)
    with pytest.raises(ScoreBagError, match="no goal: the bag has no std_msgs/String topics; pass --goal"):
        plan_scoring(bag)


def test_explicit_goal_topic_is_checked(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", n=4, strings={"/status": "idle"})
    assert plan_scoring(bag, goal_topic="/status").goal_topic == "/status"
    with pytest.raises(ScoreBagError, match="not in the bag.*/goal, /status"):
        plan_scoring(bag, goal_topic="/nope")
    with pytest.raises(ScoreBagError, match="not std_msgs/msg/String"):
        plan_scoring(bag, goal_topic="/ground_truth/progress")
    plan = plan_scoring(bag, goal="  lift it ", goal_topic="/nope")  # a given goal wins: no topic is read
    assert plan.goal == "lift it" and plan.goal_topic is None and plan.goal_source == "--goal"
