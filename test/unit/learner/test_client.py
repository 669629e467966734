"""RewardClient: every way an answer can come back is matched and named, never a silent 0."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sole_r1_ros.learner.client import ClientSettings, Outcome, RewardAnswer, RewardClient


class FakeNode:
    """Records what the client publishes and answers like the node's ``~/estimate``."""

    def __init__(self) -> None:
        self.now = 0
        self.goals: list[str] = []
        self.resets = 0
        self.requests: list[tuple[int, str]] = []
        self.delivered: list[RewardAnswer] = []

    def client(self, **settings: Any) -> RewardClient:
        return RewardClient(publish_goal=self.goals.append, publish_reset=self._reset,
                            publish_request=lambda stamp, rid: self.requests.append((stamp, rid)),
                            clock=lambda: self.now, settings=ClientSettings(**settings),
                            on_answer=self.delivered.append, client_id="c1")

    def _reset(self) -> None:
        self.resets += 1

    @staticmethod
    def estimate(request_id: str, stamp: int | None, *, status: str = "ok", episode: str = "E1",
                 step: int | None = 1, progress: float | None = 0.5, reward: float | None = 0.5,
                 detail: str = "", views: dict[str, int] | None = None) -> str:
        return json.dumps({"schema": "sole_r1_ros/estimate/1", "status": status, "detail": detail,
                           "request_id": request_id, "requested_stamp_ns": stamp, "stamp_ns": stamp,
                           "views": views or {}, "episode_id": episode, "step": step, "progress": progress,
                           "reward": reward})


def _anchor(node: FakeNode, client: RewardClient, *, episode: str = "E1", goal: str = "reach") -> None:
    client.begin_episode(goal)
    client.request(100)
    stamp, rid = node.requests[-1]
    client.handle_estimate(node.estimate(rid, stamp, status="first_frame", episode=episode, step=0, progress=0.0))


def test_goal_then_reset_then_new_goal() -> None:
    node = FakeNode()
    client = node.client()
    assert client.begin_episode("reach the red block") == 0
    assert client.begin_episode("reach the red block") == 1
    assert client.begin_episode("reach the blue block") == 2
    assert node.goals == ["reach the red block", "reach the blue block"]
    assert node.resets == 2  # the first episode resets too: the node may hold that goal already
    with pytest.raises(ValueError, match="empty"):
        client.begin_episode("  ")


def test_request_before_episode_is_refused() -> None:
    with pytest.raises(RuntimeError, match="begin_episode"):
        FakeNode().client().request(1)


def test_ok_answers_resolve_futures_in_order() -> None:
    node = FakeNode()
    client = node.client()
    client.begin_episode("reach")
    anchor = client.request(100)
    chunk = client.request(200)
    assert [rid for _, rid in node.requests] == ["c1:0:0", "c1:0:1"]
    assert client.in_flight() == 2
    client.handle_estimate(node.estimate("c1:0:0", 100, status="first_frame", step=0, progress=0.0))
    client.handle_estimate(node.estimate("c1:0:1", 200, progress=0.7, reward=0.7))
    a0, a1 = anchor.result(timeout=0), chunk.result(timeout=0)
    assert (a0.outcome, a0.progress, a0.index) == (Outcome.OK, 0.0, 0)
    assert (a1.outcome, a1.progress, a1.reward, a1.index, a1.episode) == (Outcome.OK, 0.7, 0.7, 1, 0)
    assert a1.usable and a1.node_episode_id == "E1"
    assert client.in_flight() == 0


def test_timeout_then_late_answer() -> None:
    node = FakeNode()
    client = node.client(timeout_s=1.0)
    _anchor(node, client)
    future = client.request(200)
    node.now = int(0.9e9)
    assert client.poll() == []
    node.now = int(1.5e9)
    [timeout] = client.poll()
    assert timeout.outcome is Outcome.TIMEOUT and timeout.progress is None and timeout.final
    assert future.result(timeout=0) is timeout
    late = client.handle_estimate(node.estimate("c1:0:1", 200, progress=0.9))
    assert late is not None and late.outcome is Outcome.LATE and not late.final and not late.usable
    assert late.progress == 0.9  # what the node said is kept, but it is not the final outcome
    assert future.result(timeout=0).outcome is Outcome.TIMEOUT
    again = client.handle_estimate(node.estimate("c1:0:1", 200, progress=0.9))
    assert again is not None and again.outcome is Outcome.DUPLICATE


def test_duplicate_answer_does_not_replace_the_first() -> None:
    node = FakeNode()
    client = node.client()
    _anchor(node, client)
    future = client.request(200)
    client.handle_estimate(node.estimate("c1:0:1", 200, progress=0.4))
    dup = client.handle_estimate(node.estimate("c1:0:1", 200, progress=0.8))
    assert dup is not None and dup.outcome is Outcome.DUPLICATE and not dup.final
    assert future.result(timeout=0).progress == 0.4
    assert client.counts["duplicate"] == 1


def test_out_of_order_answer_is_named() -> None:
    node = FakeNode()
    client = node.client()
    _anchor(node, client)
    first = client.request(200)
    second = client.request(300)
    client.handle_estimate(node.estimate("c1:0:2", 300, step=1, progress=0.6))
    client.handle_estimate(node.estimate("c1:0:1", 200, step=2, progress=0.3))
    assert second.result(timeout=0).outcome is Outcome.OK
    late = first.result(timeout=0)
    assert late.outcome is Outcome.OUT_OF_ORDER and not late.usable


def test_episode_change_mid_chunk() -> None:
    """A request still queued on the node when the episode changed is scored in the new one."""
    node = FakeNode()
    client = node.client()
    _anchor(node, client, episode="E1")
    stale = client.request(200)
    _anchor(node, client, episode="E2", goal="reach other")  # local episode 1 bound to E2
    client.handle_estimate(node.estimate("c1:0:1", 200, episode="E2", step=1, progress=0.2))
    answer = stale.result(timeout=0)
    assert answer.outcome is Outcome.EPISODE_CHANGED and "E2" in answer.detail


def test_reset_overtaken_by_the_anchor_request() -> None:
    """The anchor scored in the previous node episode (the reset arrived after it)."""
    node = FakeNode()
    client = node.client()
    _anchor(node, client, episode="E1")
    client.begin_episode("reach")
    anchor = client.request(500)
    client.handle_estimate(node.estimate("c1:1:0", 500, episode="E1", step=1, progress=0.1))
    assert anchor.result(timeout=0).outcome is Outcome.EPISODE_CHANGED


def test_failed_anchor_makes_later_answers_episode_changed() -> None:
    """If the anchor was not scored, the node's step 0 is a later frame: not the episode's start."""
    node = FakeNode()
    client = node.client()
    client.begin_episode("reach")
    anchor = client.request(100)
    client.handle_estimate(node.estimate("c1:0:0", 100, status="error", step=None, progress=None,
                                         detail="model failed"))
    assert anchor.result(timeout=0).outcome is Outcome.NODE_FAILURE
    later = client.request(200)
    client.handle_estimate(node.estimate("c1:0:1", 200, status="first_frame", step=0, progress=0.0))
    assert later.result(timeout=0).outcome is Outcome.EPISODE_CHANGED


def test_node_restarting_its_episode_is_named() -> None:
    node = FakeNode()
    client = node.client()
    _anchor(node, client)
    future = client.request(200)
    client.handle_estimate(node.estimate("c1:0:1", 200, status="first_frame", step=0, progress=0.0))
    assert future.result(timeout=0).outcome is Outcome.EPISODE_CHANGED


@pytest.mark.parametrize(("status", "outcome"), [
    ("queue_overflow", Outcome.QUEUE_OVERFLOW),
    ("error", Outcome.NODE_FAILURE),
    ("no_goal", Outcome.NODE_FAILURE),
    ("stale:wrist", Outcome.NODE_FAILURE),
    ("not_aligned:external", Outcome.NODE_FAILURE),
    ("decode_error:wrist", Outcome.NODE_FAILURE),
])
def test_failure_statuses_carry_no_progress(status: str, outcome: Outcome) -> None:
    node = FakeNode()
    client = node.client()
    _anchor(node, client)
    future = client.request(200)
    client.handle_estimate(node.estimate("c1:0:1", 200, status=status, step=None, progress=None, reward=None,
                                         detail="why"))
    answer = future.result(timeout=0)
    assert answer.outcome is outcome and answer.progress is None and not answer.usable
    assert answer.status == status and answer.detail == "why"


def test_parse_failed_is_explicit_unless_accepted() -> None:
    for accept, outcome in ((False, Outcome.PARSE_FAILED), (True, Outcome.OK)):
        node = FakeNode()
        client = node.client(accept_parse_failed=accept)
        _anchor(node, client)
        future = client.request(200)
        client.handle_estimate(node.estimate("c1:0:1", 200, status="parse_failed", progress=0.3))
        answer = future.result(timeout=0)
        assert answer.outcome is outcome and answer.progress == 0.3
        assert answer.usable is accept


def test_wrong_frame_is_never_paired() -> None:
    node = FakeNode()
    client = node.client(stamp_tolerance_ns=5)
    _anchor(node, client)
    future = client.request(200)
    msg = json.loads(node.estimate("c1:0:1", 200))
    msg["stamp_ns"] = 300  # the node scored a frame of another chunk
    client.handle_estimate(json.dumps(msg))
    assert future.result(timeout=0).outcome is Outcome.WRONG_FRAME
    near = client.request(400)
    msg = json.loads(node.estimate("c1:0:2", 400))
    msg["stamp_ns"] = 404
    client.handle_estimate(json.dumps(msg))
    assert near.result(timeout=0).outcome is Outcome.OK


def test_unsolicited_foreign_and_rate_mode_messages() -> None:
    node = FakeNode()
    client = node.client()
    _anchor(node, client)
    unknown = client.handle_estimate(node.estimate("c1:7:3", 1))
    assert unknown is not None and unknown.outcome is Outcome.UNSOLICITED and not unknown.final
    assert client.handle_estimate(node.estimate("other:0:1", 1)) is None  # another learner's request
    assert client.handle_estimate(node.estimate("", 1)) is None  # a rate-mode estimate
    assert client.handle_estimate("not json") is None
    assert client.handle_estimate("[1, 2]") is None


def test_delayed_send_and_retry_of_a_frame_not_yet_there() -> None:
    node = FakeNode()
    client = node.client(send_delay_s=0.05, max_retries=2, retry_delay_s=0.01)
    client.begin_episode("reach")
    future = client.request(100)
    assert node.requests == []  # held until due
    node.now = int(0.06e9)
    client.poll()
    assert node.requests == [(100, "c1:0:0")]
    detail = "camera 'wrist' has no frame within 0 ns of 100 (newest stamp 90)"
    retry = client.handle_estimate(node.estimate("c1:0:0", None, status="not_aligned:wrist", step=None,
                                                 progress=None, detail=detail, views={"wrist": 90}))
    assert retry is not None and retry.outcome is Outcome.RETRYING and not future.done()
    node.now = int(0.08e9)
    client.poll()
    assert node.requests[-1] == (100, "c1:0:0")
    client.handle_estimate(node.estimate("c1:0:0", 100, status="first_frame", step=0, progress=0.0))
    assert future.result(timeout=0).outcome is Outcome.OK


def test_no_retry_for_an_older_request_or_a_frame_that_is_gone() -> None:
    node = FakeNode()
    client = node.client(max_retries=3)
    _anchor(node, client)
    older = client.request(200)
    client.request(300)
    client.handle_estimate(node.estimate("c1:0:1", None, status="not_aligned:external", step=None, progress=None,
                                         views={"external": 150}))
    assert older.result(timeout=0).outcome is Outcome.NODE_FAILURE  # a resend would reorder the node's steps
    newest = client.request(400)
    client.handle_estimate(node.estimate("c1:0:3", None, status="not_aligned:external", step=None, progress=None,
                                         views={"external": 900}))
    assert newest.result(timeout=0).outcome is Outcome.NODE_FAILURE  # evicted, not late


def test_timeouts_use_the_given_clock() -> None:
    """Sim time: nothing times out while the clock stands still, however long that takes."""
    node = FakeNode()
    client = node.client(timeout_s=0.5)
    client.begin_episode("reach")
    client.request(1)
    assert client.poll() == []
    node.now = int(0.6e9)
    assert [a.outcome for a in client.poll()] == [Outcome.TIMEOUT]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        ClientSettings(timeout_s=0)
    with pytest.raises(ValueError):
        ClientSettings(stamp_tolerance_ns=-1)
    with pytest.raises(ValueError):
        ClientSettings(max_retries=-1)


def test_old_final_requests_are_forgotten() -> None:
    node = FakeNode()
    client = node.client(max_pending=3)
    _anchor(node, client)
    for i in range(5):
        client.request(200 + i)
        client.handle_estimate(node.estimate(f"c1:0:{i + 1}", 200 + i, step=i + 1))
    assert len(client._pending) <= 4
    forgotten = client.handle_estimate(node.estimate("c1:0:0", 100, step=0))
    assert forgotten is not None and forgotten.outcome is Outcome.UNSOLICITED


def test_no_resend_after_a_newer_request_went_out() -> None:
    """The retry was decided while k was the newest; k + 1 went out before it was due: resending k
    now would make the node score k + 1 then k."""
    node = FakeNode()
    client = node.client(max_retries=2, retry_delay_s=0.01)
    _anchor(node, client)
    older = client.request(200)
    retry = client.handle_estimate(node.estimate("c1:0:1", None, status="not_aligned:external", step=None,
                                                 progress=None, views={"external": 150}))
    assert retry is not None and retry.outcome is Outcome.RETRYING and not older.done()
    client.request(300)  # before the retry is due
    sent = list(node.requests)
    node.now = int(0.02e9)
    client.poll()
    assert node.requests == sent  # k was not sent again
    final = older.result(timeout=0)
    assert final.outcome is Outcome.NODE_FAILURE and final.final and not final.usable
    assert "newer request" in final.detail and "c1:0:2" in final.detail
    assert final.status == "not_aligned:external"
    assert client.in_flight() == 1  # only k + 1
    assert [a.outcome for a in node.delivered if a.request_id == "c1:0:1"] == [Outcome.RETRYING, Outcome.NODE_FAILURE]


def test_no_resend_after_the_episode_changed() -> None:
    node = FakeNode()
    client = node.client(max_retries=2, retry_delay_s=0.01)
    client.begin_episode("reach")
    anchor = client.request(100)
    client.handle_estimate(node.estimate("c1:0:0", None, status="no_frames", step=None, progress=None))
    assert not anchor.done()
    client.begin_episode("reach")  # a reset before the retry was due
    sent = list(node.requests)
    node.now = int(0.02e9)
    client.poll()
    assert node.requests == sent
    answer = anchor.result(timeout=0)
    assert answer.outcome is Outcome.NODE_FAILURE and "episode" in answer.detail
