"""The worker under faults, as the node runs it (``live``): every step that is not
scored says why and which frames it was about, rate limited per reason; rejected goals are
counted and reported; clocks that disagree with the stamps are named; the composite is kept
only when asked for; a cut reply is a parse failure that shows the token limit."""

from __future__ import annotations

import json
import time

import pytest

from image_messages import stamped_rgb
from scripted_model import ScriptedModel
from sole_r1_ros.core.goal import GoalError
from sole_r1_ros.core.protocol import load_protocol
from sole_r1_ros.core.scorer import ProgressScorer
from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.pipeline.frame_buffer import FrameSelector
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.pipeline.worker import RewardWorker
from sole_r1_ros.settings.groups import RewardSettings, WorkerSettings

MS = 1_000_000
S_NS = 1_000_000_000
ROLES = ("external", "wrist")


class Rig:
    """A node-like worker (live) driven synchronously, with a node clock and a wall clock."""

    def __init__(self, model: ScriptedModel, *, roles=ROLES, want_composite=None, **config) -> None:
        self.now = 0
        self.wall = 100.0
        self.results: list[RewardResult] = []
        self.selector = FrameSelector.create(roles, maxlen=8)
        self.scorer = ProgressScorer(model, load_protocol())
        self.worker = RewardWorker(
            self.scorer, self.selector,
            config=WorkerSettings(**{"period_s": 0.1, "align_tolerance_s": 0.02, "max_frame_age_s": 1.0,
                                     "skipped_estimate_period_s": 1.0, **config}),
            reward_config=RewardSettings(), clock=lambda: self.now, emit=self.results.append,
            live=True, wall_clock=lambda: self.wall, want_composite=want_composite,
        )

    def frame(self, stamp_ms: int, roles=ROLES, arrive_ms: int | None = None) -> int:
        self.now = (arrive_ms if arrive_ms is not None else stamp_ms) * MS
        for role in roles:
            self.worker.push_frame(role, stamp_ms * MS, stamped_rgb(stamp_ms * MS), self.now)
        return self.worker.run_pending()

    def json(self) -> list[dict]:
        return [json.loads(r.to_json()) for r in self.results]


def test_a_missing_view_publishes_its_reason_and_frame_once_per_period() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    for t in range(0, 2000, 100):  # the wrist camera never publishes; 20 steps come due
        rig.wall = 100.0 + t / 1000
        rig.frame(t, roles=("external",))
        rig.now += 30 * MS
        rig.worker.run_pending()
    out = rig.json()
    assert [e["status"] for e in out] == ["view_missing:wrist"] * 2  # 2 s of wall time, one per second
    assert out[0]["stamp_ns"] == 0 and out[0]["views"] == {"external": 0}
    assert out[1]["stamp_ns"] == 1000 * MS and out[1]["views"] == {"external": 1000 * MS}
    assert out[0]["progress"] is None and out[0]["goal"] == "g" and out[0]["episode_id"] == rig.worker.episode_id
    assert rig.worker.stats.selection_failures == {"view_missing": 20}
    assert rig.worker.stats.skipped_published == 2 and rig.worker.stats.skipped_suppressed == 18
    assert (rig.worker.stats.last_outcome, rig.worker.stats.last_outcome_role) == (EstimateStatus.VIEW_MISSING, "wrist")


def test_reasons_are_limited_separately_and_zero_period_publishes_every_one() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"), skipped_estimate_period_s=0.0)
    rig.worker.set_goal("g")
    for t in (0, 100, 200):
        rig.frame(t, roles=("external",))
        rig.now += 30 * MS
        rig.worker.run_pending()
    assert [e["status"] for e in rig.json()] == ["view_missing:wrist"] * 3
    limited = Rig(ScriptedModel(default="<answer>5%</answer>"))  # 1 s per reason, the wall clock stands still
    limited.worker.set_goal("g")
    for t in (0, 100):  # no wrist frame at all
        limited.frame(t, roles=("external",))
        limited.now += 30 * MS
        limited.worker.run_pending()
    limited.frame(500, roles=("wrist",))
    for t in (200, 300):  # a wrist frame, but 200+ ms away
        limited.frame(t, roles=("external",), arrive_ms=510 + t)
        limited.now += 30 * MS
        limited.worker.run_pending()
    assert [e["status"] for e in limited.json()] == ["view_missing:wrist", "not_aligned:wrist"]


def test_an_aligned_stale_pair_names_both_frames() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    rig.frame(0)
    rig.frame(100, roles=("wrist",))
    rig.frame(1500, roles=("external",))
    rig.now = 1530 * MS
    rig.worker.run_pending()
    stale = rig.json()[-1]
    assert stale["status"] == "stale:wrist", stale
    assert stale["stamp_ns"] == 1500 * MS and stale["views"]["external"] == 1500 * MS
    assert stale["views"]["wrist"] == 100 * MS  # the frame that was too old


def test_nothing_due_is_reported_by_the_thread_with_its_reason() -> None:
    """A reference camera that stops: no step comes due, and the thread says why."""
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"), roles=("external",), period_s=0.5)
    rig.worker.set_goal("g")
    rig.frame(0, roles=("external",))
    assert [r.status for r in rig.results] == ["first_frame"]
    with rig.worker._lock:
        assert rig.worker._probe_job() is None  # just scored
    rig.wall += 1.0
    rig.now = 3000 * MS  # the frame is 3 s old on the node clock
    with rig.worker._lock:
        job = rig.worker._probe_job()
    assert job is not None and job.probe
    rig.worker._probe(rig.worker._slot)
    report = rig.json()[-1]
    assert report["status"] == "stale:external" and report["stamp_ns"] == 0 and report["views"] == {"external": 0}
    assert report["detail"].startswith("nothing scored for 1.0 s: ")


def test_no_goal_with_frames_is_reported() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.frame(40)
    rig.worker._probe(None)
    report = rig.json()[-1]
    assert report["status"] == "no_goal" and report["stamp_ns"] == 40 * MS
    assert report["views"] == {"external": 40 * MS, "wrist": 40 * MS}


def test_decode_errors_carry_their_frame() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"), roles=("external",))
    rig.worker.set_goal("g")
    bad = stamped_rgb(70 * MS)
    bad.encoding = "yuv444"
    rig.worker.push_frame("external", 70 * MS, bad, 70 * MS)
    rig.now = 70 * MS
    rig.worker.run_pending()
    failure = rig.json()[-1]
    assert failure["status"] == "decode_error:external"
    assert failure["stamp_ns"] == 70 * MS and failure["views"] == {"external": 70 * MS}


def test_rejected_goals_are_counted_and_reported_rate_limited() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("the goal")
    episode = rig.worker.episode_id
    for k in range(500):
        bad = ("", "x" * 5000, "a\x00b")[k % 3]
        try:
            rig.worker.set_goal(bad)
        except GoalError:
            pass
        rig.wall += 0.004  # 500 goals in 2 s
    stats = rig.worker.stats
    assert stats.goals_rejected == 500
    reports = [e for e in rig.json() if e["status"] == "goal_rejected"]
    assert len(reports) == 2, len(reports)
    assert reports[0]["goal"] == "the goal" and reports[0]["episode_id"] == episode
    assert rig.worker.goal == "the goal" and rig.worker.episode_id == episode


def test_stamps_far_from_the_clock_are_named_once(caplog) -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    recorded = 1000 * 1_000_000_000  # a bag recorded at t = 1000 s, replayed at t = 1 day
    today = 86_400 * 1_000_000_000
    with caplog.at_level("ERROR"):
        for k in range(5):
            rig.now = today + k * 100 * MS
            for role in ROLES:
                rig.worker.push_frame(role, recorded + k * 100 * MS, stamped_rgb(recorded), rig.now)
            rig.worker.run_pending()
    lines = [r for r in caplog.records if "clock mismatch" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "use_sim_time" in lines[0].getMessage()
    assert rig.worker.stats.clock_mismatch
    stale = rig.json()[-1]
    assert stale["status"].startswith("stale:") and "clock mismatch" in stale["detail"]
    rig.now = recorded + 600 * MS  # sim time now: stamps and clock agree again
    for role in ROLES:
        rig.worker.push_frame(role, recorded + 600 * MS, stamped_rgb(recorded), rig.now)
    assert rig.worker.stats.clock_mismatch == ""


def test_composite_is_kept_only_when_wanted() -> None:
    wanted = {"on": False}
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"), want_composite=lambda: wanted["on"])
    rig.worker.set_goal("g")
    rig.frame(0)
    rig.frame(100)
    assert rig.results[-1].status == "ok" and rig.results[-1].composite is None
    wanted["on"] = True
    rig.frame(200)
    composite = rig.results[-1].composite
    assert composite is not None and composite.size == (1176, 784)  # two views, three columns
    assert "composite" not in rig.json()[-1]


def test_a_reply_cut_by_the_token_limit_is_a_parse_failure_that_says_so() -> None:
    model = ScriptedModel(default="<think>closer</think><answer>4")
    rig = Rig(model)
    rig.worker.set_goal("g")
    rig.frame(0)
    rig.frame(100)
    e = rig.json()[-1]
    assert e["status"] == "parse_failed" and e["progress"] == 0.0 and e["parse_status"] == "truncated"
    assert e["error"].startswith("truncated: the reply ends inside <answer>")
    limit = rig.scorer.generation.max_new_tokens
    assert e["tokens"] == {"prompt": 10, "generated": 5, "limit": limit, "hit_limit": False}


def test_request_failures_carry_the_frames_they_were_about_and_are_never_limited() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"), mode="request")
    rig.worker.set_goal("g")
    rig.frame(0)
    rig.frame(100, roles=("external",))
    for i in range(3):  # the same failure three times within a second: each request gets its answer
        rig.worker.request(100 * MS, f"r{i}")
    rig.worker.request(900 * MS, "far")
    rig.now = 200 * MS
    rig.worker.run_pending()
    out = {e["request_id"]: e for e in rig.json()}
    assert [out[f"r{i}"]["status"] for i in range(3)] == ["not_aligned:wrist"] * 3
    assert out["r0"]["stamp_ns"] == 100 * MS and out["r0"]["views"] == {"external": 100 * MS, "wrist": 0}
    assert out["far"]["status"] == "not_aligned:external" and out["far"]["stamp_ns"] is None  # no such frame
    assert out["far"]["requested_stamp_ns"] == 900 * MS
    assert out["far"]["views"] == {"external": 100 * MS}  # the reference camera's newest frame


def test_a_rejected_goal_is_not_the_inference_outcome() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    rig.frame(0)
    assert rig.worker.stats.last_outcome is EstimateStatus.FIRST_FRAME
    with pytest.raises(GoalError):
        rig.worker.set_goal("")
    assert rig.results[-1].status is EstimateStatus.GOAL_REJECTED  # published ...
    assert rig.worker.stats.last_outcome is EstimateStatus.FIRST_FRAME  # ... but the steps' status stands


def test_a_held_back_failure_is_still_the_last_outcome() -> None:
    """After an OK step, failures rate limited away must not leave the inference status at OK."""
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    rig.frame(0)
    for t in (100, 400):  # the wrist frame missing: the first not_aligned is published, the second held back
        if t == 400:
            rig.frame(200)
            rig.frame(300)
            assert rig.worker.stats.last_outcome is EstimateStatus.OK
        rig.frame(t, roles=("external",))
        rig.now += 30 * MS  # past the alignment tolerance
        rig.worker.run_pending()
    assert rig.results[-1].status is EstimateStatus.OK and rig.worker.stats.skipped_suppressed == 1
    assert (rig.worker.stats.last_outcome, rig.worker.stats.last_outcome_role) == (
        EstimateStatus.NOT_ALIGNED, "wrist")


def test_a_request_in_rate_mode_is_answered_at_once_with_the_reason() -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    rig.worker.request(123, "learner:0:0")
    refused = rig.json()[-1]
    assert refused["status"] == "request_refused" and refused["request_id"] == "learner:0:0"
    assert "mode:=request" in refused["detail"] and refused["requested_stamp_ns"] == 123
    assert rig.worker.queue_depth() == 0 and rig.worker.stats.requests_refused == 1
    assert rig.worker.stats.last_outcome is None  # not a step


def test_no_clock_yet_is_no_clock_mismatch_and_a_silent_camera_does_not_keep_one(caplog) -> None:
    rig = Rig(ScriptedModel(default="<answer>5%</answer>"))
    rig.worker.set_goal("g")
    stamp = 1_700_000_000 * 1_000_000_000
    rig.worker.push_frame("external", stamp, stamped_rgb(stamp), 0)  # sim time before the first /clock
    assert rig.worker.stats.clock_mismatch == ""
    today = 86_400 * 1_000_000_000
    rig.worker.push_frame("wrist", 1000 * S_NS, stamped_rgb(0), today)  # a wrist camera on the wrong clock ...
    assert rig.worker.stats.clock_mismatch.startswith("camera 'wrist'")
    for k in range(1, 80):  # ... then silent, while the scene camera agrees with the clock for 79 s
        rig.worker.push_frame("external", today + k * S_NS, stamped_rgb(0), today + k * S_NS)
    assert rig.worker.stats.clock_mismatch == ""


def test_the_inference_thread_survives_an_error_in_publishing() -> None:
    calls = {"n": 0}
    published: list[RewardResult] = []

    def emit(result: RewardResult) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("publisher gone")
        published.append(result)

    clock = {"now": 0}
    selector = FrameSelector.create(("external",), maxlen=8)
    worker = RewardWorker(ProgressScorer(ScriptedModel(default="<answer>5%</answer>"), load_protocol()), selector,
                          config=WorkerSettings(period_s=0.0, align_tolerance_s=0.0), reward_config=RewardSettings(),
                          clock=lambda: clock["now"], emit=emit)
    worker.set_goal("g")
    worker.start()
    try:
        for t in range(4):
            clock["now"] = t * 100 * MS
            selector.push("external", t * 100 * MS, stamped_rgb(t * 100 * MS), t * 100 * MS)
            worker.wake()
            deadline = time.monotonic() + 5
            while calls["n"] < t + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert worker.running
    finally:
        assert worker.stop(5)
    assert calls["n"] == 4 and len(published) == 3
    assert worker.stats.internal_errors == 1 and "publisher gone" in worker.stats.last_failure


def test_a_request_for_a_frame_older_than_the_last_scored_one_leaves_the_episode_alone() -> None:
    """Requests k+1 then k (a learner's late resend): k must not become the episode's previous frame."""
    rig = Rig(ScriptedModel(default="<answer>30%</answer>"), mode="request")
    rig.worker.set_goal("g")
    for t in (0, 100, 200):
        rig.frame(t)
    rig.worker.request(0, "anchor")
    rig.worker.request(200 * MS, "k+1")
    rig.worker.request(100 * MS, "k")
    rig.worker.run_pending()
    out = {e["request_id"]: e for e in rig.json()}
    assert out["k+1"]["status"] == "ok" and out["k+1"]["step"] == 1
    assert out["k"]["status"] == "out_of_order" and "older than the episode's last scored frame" in out["k"]["detail"]
    assert out["k"]["progress"] is None and out["k"]["views"] == {"external": 100 * MS, "wrist": 100 * MS}
    rig.frame(300)
    rig.worker.request(300 * MS, "k+2")
    rig.worker.run_pending()
    nxt = rig.json()[-1]
    assert nxt["status"] == "ok" and nxt["step"] == 2 and nxt["prev_stamp_ns"] == 200 * MS
