"""The inference worker without ROS: scheduling, requests, goals mid-inference, failures."""

from __future__ import annotations

import json
import threading
import time

import pytest

from image_messages import stamped_rgb
from scripted_model import ScriptedModel
from sole_r1_ros.core.protocol import load_protocol
from sole_r1_ros.core.scorer import GoalError, ProgressScorer
from sole_r1_ros.pipeline.frame_buffer import FrameSelector
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.pipeline.schedule import RateSchedule
from sole_r1_ros.pipeline.worker import RewardWorker
from sole_r1_ros.settings.groups import RewardSettings, WorkerSettings

MS = 1_000_000
ROLES = ("external", "wrist")


class Rig:
    """A worker driven synchronously (run_pending) with a controllable clock."""

    def __init__(self, model: ScriptedModel, *, roles=ROLES, **config) -> None:
        self.now = 0
        self.results: list[RewardResult] = []
        self.selector = FrameSelector.create(roles, maxlen=8)
        self.worker = RewardWorker(
            ProgressScorer(model, load_protocol()), self.selector,
            config=WorkerSettings(**{"period_s": 0.1, "align_tolerance_s": 0.02, "max_frame_age_s": 1.0, **config}),
            reward_config=RewardSettings(mode="delta"), clock=lambda: self.now, emit=self.results.append,
        )

    def frame(self, stamp_ms: int, roles=ROLES, arrive_ms: int | None = None) -> int:
        self.now = (arrive_ms if arrive_ms is not None else stamp_ms) * MS
        for role in roles:
            self.selector.push(role, stamp_ms * MS, stamped_rgb(stamp_ms * MS), self.now)
        return self.worker.run_pending()


def test_rate_mode_scores_on_a_stamp_grid_and_never_twice() -> None:
    rig = Rig(ScriptedModel(default="<think>t</think><answer>10%</answer>"))
    rig.worker.set_goal("lift the cube")
    for t in range(0, 400, 33):
        rig.frame(t)
    assert rig.worker.run_pending() == 0  # nothing new: nothing is re-scored
    stamps = [r.estimate.stamp_ns // MS for r in rig.results]
    assert stamps == [0, 99, 198, 297, 396]
    assert [r.status for r in rig.results] == ["first_frame"] + ["ok"] * 4
    assert [r.reward for r in rig.results] == pytest.approx([0.0, 0.1, 0.0, 0.0, 0.0])


def test_rate_mode_waits_for_the_other_camera_then_gives_up_after_tolerance() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    assert rig.frame(0, roles=("external",)) == 0  # wrist frame for t=0 not there yet
    assert rig.frame(0, roles=("wrist",), arrive_ms=1) == 1
    assert rig.results[-1].view_stamps_ns == {"external": 0, "wrist": 0}
    assert rig.frame(100, roles=("external",)) == 0
    rig.now = 115 * MS
    assert rig.worker.run_pending() == 0  # still within the 20 ms tolerance since arrival
    rig.now = 121 * MS
    assert rig.worker.run_pending() == 1  # gave up waiting: the wrist has nothing near t=100
    assert rig.worker.stats.selection_failures == {"not_aligned": 1}
    assert len(rig.results) == 1  # rate mode publishes nothing for unusable frames
    assert rig.frame(200) == 1 and rig.results[-1].view_stamps_ns == {"external": 200 * MS, "wrist": 200 * MS}


def test_no_goal_no_estimate_in_rate_mode_and_failure_in_request_mode() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.frame(0)
    assert rig.results == []
    req = Rig(ScriptedModel(default="<answer>5%</answer>"), mode="request")
    req.frame(0)
    req.worker.request(0, "r1")
    req.worker.run_pending()
    assert [(r.status, r.request_id) for r in req.results] == [("no_goal", "r1")]


def test_request_mode_answers_each_request_in_order_with_explicit_failures() -> None:
    rig = Rig(ScriptedModel(default="<answer>7%</answer>"), mode="request", request_queue_size=3)
    rig.worker.set_goal("g")
    for t in (0, 33, 66, 99):
        rig.frame(t)
    for i, t in enumerate((0, 66, 500, 99, 33)):
        rig.worker.request(t * MS, f"r{i}")
    rig.worker.run_pending()
    by_id = {r.request_id: r for r in rig.results}
    assert sorted(by_id) == ["r0", "r1", "r2", "r3", "r4"] and len(rig.results) == 5
    assert by_id["r3"].status == by_id["r4"].status == "queue_overflow"  # queue of 3 was full
    assert [r.request_id for r in rig.results if r.status != "queue_overflow"] == ["r0", "r1", "r2"]
    assert by_id["r0"].status == "first_frame" and by_id["r1"].estimate.stamp_ns == 66 * MS
    assert by_id["r2"].status_text.startswith("not_aligned") and by_id["r2"].estimate is None
    assert json.loads(by_id["r2"].to_json())["progress"] is None


def test_stale_camera_blocks_estimates_until_it_returns() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    rig.frame(0)
    rig.frame(100, roles=("wrist",))
    rig.frame(1500, roles=("external",))
    rig.now = 1530 * MS
    rig.worker.run_pending()
    assert rig.worker.stats.selection_failures == {"stale": 1}
    assert "stale:wrist" in rig.worker.stats.last_failure
    assert len(rig.results) == 1
    rig.frame(1600)
    assert rig.results[-1].estimate.stamp_ns == 1600 * MS and rig.results[-1].status == "ok"


def test_undecodable_frame_is_reported_not_raised() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"), roles=("external",))
    rig.worker.set_goal("g")
    bad = stamped_rgb(0)
    bad.encoding = "yuv444"
    rig.selector.push("external", 0, bad, 0)
    rig.worker.run_pending()
    assert rig.results[-1].status_text == "decode_error:external" and "unknown_encoding" in str(
        rig.worker.stats.decode_errors
    )


def test_invalid_goal_keeps_the_episode() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("first goal")
    episode = rig.worker.episode_id
    for bad in ("", "  ", "x" * 5000):
        with pytest.raises(GoalError):
            rig.worker.set_goal(bad)
    assert rig.worker.episode_id == episode and rig.worker.goal == "first goal"
    assert rig.worker.reset() and rig.worker.episode_id != episode


def test_the_same_goal_again_keeps_the_episode() -> None:
    """A republished (or latched) goal is no new task: the episode and its progress go on."""
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    assert rig.worker.set_goal("stack the cups")
    episode = rig.worker.episode_id
    assert not rig.worker.set_goal("  stack the cups ")
    assert rig.worker.episode_id == episode
    assert rig.worker.set_goal("stack the plates") and rig.worker.episode_id != episode


def test_goal_change_mid_inference_labels_the_old_episode() -> None:
    gate = threading.Event()
    model = ScriptedModel(default="<answer>40%</answer>", gate=gate)
    results: list[RewardResult] = []
    selector = FrameSelector.create(("external",), maxlen=8)
    clock = {"now": 0}
    worker = RewardWorker(ProgressScorer(model, load_protocol()), selector,
                          config=WorkerSettings(period_s=0.0, align_tolerance_s=0.0),
                          reward_config=RewardSettings(), clock=lambda: clock["now"], emit=results.append)
    worker.set_goal("old goal")
    old_episode = worker.episode_id
    worker.start()
    try:
        for t in (0, 10):
            clock["now"] = t * MS
            selector.push("external", t * MS, stamped_rgb(t * MS), t * MS)
            worker.wake()
            time.sleep(0.05)
        assert model.started.wait(5)  # the second frame is with the model now
        worker.set_goal("new goal")
        gate.set()
        deadline = time.monotonic() + 5
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert worker.stop(5)
    assert [r.estimate.episode_id for r in results[:2]] == [old_episode, old_episode]
    assert "episode ended while this step ran" in results[1].detail
    assert results[1].estimate.goal == "old goal" and worker.goal == "new goal"
    assert all(r.estimate.episode_id == worker.episode_id for r in results[2:])  # the new episode starts afresh


def test_stop_joins_the_thread_quickly_when_idle() -> None:
    worker = RewardWorker(ProgressScorer(ScriptedModel(), load_protocol()), FrameSelector.create(ROLES, 4),
                          config=WorkerSettings(), reward_config=RewardSettings(), clock=lambda: 0, emit=lambda r: None)
    worker.start()
    t0 = time.monotonic()
    assert worker.stop(5)
    assert time.monotonic() - t0 < 5


def test_rate_schedule_rules() -> None:
    sel = FrameSelector.create(("a", "b"), 8)
    s = RateSchedule(period_ns=100, tolerance_ns=10)
    assert s.due(sel, 0) is None
    sel.push("a", 1000, None, 1000)
    assert s.due(sel, 1005) is None  # waiting for b
    assert s.due(sel, 1011) == 1000  # gave up waiting after the tolerance
    sel.push("b", 1000, None, 1006)
    s.mark(1000)
    sel.push("a", 1050, None, 1050)
    sel.push("b", 1050, None, 1050)
    assert s.due(sel, 1050) is None  # within the period
    sel.push("a", 1100, None, 1100)
    sel.push("b", 1101, None, 1101)
    assert s.due(sel, 1101) == 1100
    s.reset()
    assert s.due(sel, 1101) == 1100


def test_time_jumping_back_starts_a_new_episode() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    for t in (0, 100, 200, 3000):
        rig.worker.push_frame("external", t * MS, stamped_rgb(t * MS), t * MS)
        rig.worker.push_frame("wrist", t * MS, stamped_rgb(t * MS), t * MS)
        rig.now = t * MS
        rig.worker.run_pending()
    episode = rig.worker.episode_id
    rig.now = 10 * MS  # the bag loops: /clock and stamps restart at 0
    for role in ROLES:
        rig.worker.push_frame(role, 0, stamped_rgb(0), rig.now)
    rig.worker.run_pending()
    assert rig.worker.episode_id != episode and rig.worker.stats.time_jumps == 1
    assert rig.results[-1].status == "first_frame" and rig.results[-1].estimate.stamp_ns == 0
    assert len(rig.selector.buffer("external")) == 1  # frames from before the jump were dropped


def test_goal_flood_keeps_one_episode_and_the_last_goal() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    for i in range(2000):
        rig.worker.set_goal(f"goal {i}")
    rig.frame(0)
    assert rig.worker.goal == "goal 1999"
    assert [(r.status, r.estimate.goal) for r in rig.results] == [("first_frame", "goal 1999")]


def test_reasoning_is_length_bounded() -> None:
    from sole_r1_ros.pipeline.result import MAX_REASONING_CHARS

    rig = Rig(ScriptedModel(default="<think>" + "x" * 50_000 + "</think><answer>5%</answer>"))
    rig.worker.set_goal("g")
    rig.frame(0)
    rig.frame(100)
    result = rig.results[-1]
    assert len(result.estimate.reasoning) == 50_000  # kept whole in the estimate object
    assert len(result.reasoning) == MAX_REASONING_CHARS == len(json.loads(result.to_json())["reasoning"])


def test_the_goal_length_limit_is_the_setting_checked_once() -> None:
    # max_goal_chars above the built-in 1000 used to pass the node's check and then raise inside
    # the worker's second, fixed check: a long goal ended the node
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"), max_goal_chars=3000)
    long_goal = "push the red block " * 100  # 1900 characters
    assert rig.worker.set_goal(long_goal) and rig.worker.goal == long_goal.strip()
    rig.frame(0)
    assert rig.results[-1].status == "first_frame" and rig.results[-1].estimate.goal == long_goal.strip()
    with pytest.raises(GoalError, match="limit is 3000"):
        rig.worker.set_goal("x" * 3001)
    assert rig.worker.goal == long_goal.strip()  # a refused goal leaves the episode alone
