"""RelabelBuffer: transitions wait for their reward, every one ends labelled or dropped with a reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sole_r1_ros.learner.client import Outcome, RewardAnswer
from sole_r1_ros.learner.replay import BufferSettings, ChunkTransition, RelabelBuffer


def _t(episode: int, chunk: int) -> ChunkTransition:
    return ChunkTransition(episode, chunk, np.full(3, chunk, np.float32), np.zeros((4, 2), np.float32),
                           np.full(3, chunk + 1, np.float32))


def _answer(episode: int, index: int, progress: float | None, outcome: Outcome = Outcome.OK, *,
            final: bool = True, reward: float | None = None) -> RewardAnswer:
    return RewardAnswer(f"c:{episode}:{index}", outcome, episode, index, 100 + index, final=final,
                        progress=progress, reward=reward if reward is not None else progress)


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _buffer(**kw: object) -> RelabelBuffer:
    return RelabelBuffer(BufferSettings(**kw), clock=Clock())  # type: ignore[arg-type]


def _entries(buf: RelabelBuffer) -> int:
    """Per-request entries the buffer holds, over all episodes."""
    return sum(len(answers) for answers in buf._answers.values())


@pytest.mark.parametrize(("mode", "expected"), [
    ("progress", [0.25, 0.75]),
    ("delta", [0.25, 0.5]),
    ("potential", [0.9 ** 4 * 0.25 - 0.0, 0.9 ** 4 * 0.75 - 0.25]),
    ("node", [10.0, 30.0]),
])
def test_reward_modes(mode: str, expected: list[float]) -> None:
    buf = _buffer(reward_mode=mode, gamma=0.9, horizon=4)
    buf.on_answer(_answer(0, 0, 0.0, reward=0.0))  # the anchor
    buf.add(_t(0, 0))
    buf.add(_t(0, 1))
    buf.on_answer(_answer(0, 1, 0.25, reward=10.0))
    buf.on_answer(_answer(0, 2, 0.75, reward=30.0))
    rewards = [t.reward for t in buf.labelled()]
    assert rewards == pytest.approx(expected)
    assert buf.pending == 0 and buf.labelled_total == 2


def test_discounted_sum_chunk_reward() -> None:
    buf = _buffer(chunk_reward="discounted_sum", gamma=0.5, horizon=3)
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.on_answer(_answer(0, 1, 0.8))
    assert buf.labelled()[0].reward == pytest.approx(0.8 * (1 + 0.5 + 0.25))


def test_answer_before_add_and_out_of_order_answers() -> None:
    buf = _buffer(reward_mode="delta")
    buf.on_answer(_answer(0, 2, 0.6))  # chunk 1's end arrives first
    buf.on_answer(_answer(0, 1, 0.4))
    buf.add(_t(0, 1))
    assert buf.pending == 0 and buf.labelled()[0].reward == pytest.approx(0.2)
    buf.add(_t(0, 0))
    assert buf.pending == 1  # waits for the anchor
    buf.on_answer(_answer(0, 0, 0.0))
    assert buf.pending == 0 and sorted(t.chunk for t in buf.labelled()) == [0, 1]


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.NODE_FAILURE, Outcome.QUEUE_OVERFLOW,
                                     Outcome.EPISODE_CHANGED, Outcome.WRONG_FRAME, Outcome.OUT_OF_ORDER,
                                     Outcome.PARSE_FAILED])
def test_failed_answer_drops_its_transition_with_the_reason(outcome: Outcome) -> None:
    buf = _buffer()
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.on_answer(_answer(0, 1, None, outcome))
    assert buf.pending == 0 and len(buf) == 0
    assert buf.dropped == {outcome.value: 1}


def test_failed_boundary_also_drops_the_next_transition_in_delta_modes() -> None:
    for mode, next_labelled in (("progress", True), ("delta", False), ("potential", False)):
        buf = _buffer(reward_mode=mode)
        buf.on_answer(_answer(0, 0, 0.0))
        buf.add(_t(0, 0))
        buf.add(_t(0, 1))
        buf.on_answer(_answer(0, 1, None, Outcome.TIMEOUT))
        buf.on_answer(_answer(0, 2, 0.5))
        assert buf.pending == 0
        assert (len(buf) == 1) is next_labelled
        assert buf.dropped["timeout"] == 1
        assert buf.dropped.get("predecessor_failed", 0) == (0 if next_labelled else 1)


def test_late_and_duplicate_answers_change_nothing() -> None:
    buf = _buffer()
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.on_answer(_answer(0, 1, None, Outcome.TIMEOUT))
    buf.on_answer(_answer(0, 1, 0.9, Outcome.LATE, final=False))
    assert len(buf) == 0 and buf.dropped == {"timeout": 1}
    buf.add(_t(1, 0))
    buf.on_answer(_answer(1, 0, 0.0))
    buf.on_answer(_answer(1, 1, 0.3))
    buf.on_answer(_answer(1, 1, 0.7, Outcome.DUPLICATE, final=False))
    assert [t.reward for t in buf.labelled()] == [0.3]


def test_wait_policy_samples_only_when_nothing_is_pending() -> None:
    buf = _buffer(policy="wait")
    rng = np.random.default_rng(0)
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.add(_t(0, 1))
    buf.on_answer(_answer(0, 1, 0.5))
    assert not buf.can_sample(1)
    with pytest.raises(RuntimeError):
        buf.sample(1, rng)
    buf.on_answer(_answer(0, 2, 0.6))
    assert buf.can_sample(2)
    batch = buf.sample(8, rng)
    assert batch.obs.shape == (8, 3) and batch.actions.shape == (8, 4, 2)
    assert set(np.round(batch.rewards.astype(float), 3).tolist()) <= {0.5, 0.6}


def test_drop_after_timeout_policy() -> None:
    clock = Clock()
    buf = RelabelBuffer(BufferSettings(policy="drop_after_timeout", timeout_s=1.0), clock=clock)
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    clock.now = int(0.5e9)
    buf.add(_t(0, 1))
    buf.on_answer(_answer(0, 1, 0.5))
    assert buf.can_sample(1)  # labelled ones are sampled while others wait
    clock.now = int(1.2e9)
    assert buf.expire() == 0
    clock.now = int(1.6e9)
    assert buf.expire() == 1
    assert buf.pending == 0 and buf.dropped == {"timeout": 1}
    buf.on_answer(_answer(0, 2, 0.9))  # too late: nothing is relabelled twice
    assert len(buf) == 1


def test_relabelled_ratio_policy() -> None:
    buf = _buffer(policy="relabelled_ratio", ratio=0.6)
    buf.on_answer(_answer(0, 0, 0.0))
    for k in range(4):
        buf.add(_t(0, k))
    buf.on_answer(_answer(0, 1, 0.1))
    buf.on_answer(_answer(0, 2, 0.2))
    assert not buf.can_sample(1)  # 2 of 4
    buf.on_answer(_answer(0, 3, 0.3))
    assert buf.can_sample(1)  # 3 of 4
    batch = buf.sample(32, np.random.default_rng(1))
    assert set(np.round(batch.rewards.astype(float), 3).tolist()) <= {0.1, 0.2, 0.3}  # only relabelled ones


def test_expire_is_a_no_op_for_other_policies() -> None:
    clock = Clock()
    buf = RelabelBuffer(BufferSettings(policy="wait", timeout_s=0.1), clock=clock)
    buf.add(_t(0, 0))
    clock.now = int(10e9)
    assert buf.expire() == 0 and buf.pending == 1


def test_capacity_and_end_episode() -> None:
    buf = _buffer(capacity=2)
    buf.on_answer(_answer(0, 0, 0.0))
    for k in range(3):
        buf.add(_t(0, k))
        buf.on_answer(_answer(0, k + 1, 0.1 * (k + 1)))
    assert len(buf) == 2 and buf.labelled_total == 3
    buf.end_episode(0)
    assert not buf._answers


def test_non_finite_reward_is_dropped() -> None:
    buf = _buffer()
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.on_answer(_answer(0, 1, math.nan))
    assert buf.dropped == {"non_finite": 1}


def test_node_mode_without_a_node_reward() -> None:
    buf = _buffer(reward_mode="node")
    buf.add(_t(0, 0))
    buf.on_answer(RewardAnswer("c:0:1", Outcome.OK, 0, 1, 1, progress=0.5, reward=None))
    assert buf.dropped == {"no_node_reward": 1}


@pytest.mark.parametrize("bad", [{"reward_mode": "x"}, {"chunk_reward": "x"}, {"policy": "x"}, {"capacity": 0},
                                 {"ratio": 1.5}, {"gamma": 0.0}, {"horizon": 0}])
def test_settings_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BufferSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["progress", "delta"])
def test_per_request_entries_stay_bounded_over_many_episodes(mode: str) -> None:
    """Without end_episode: an episode's entries go once a later episode's transition is added
    and all of its own are labelled or dropped (here the last one by a late final answer that
    arrives in the next episode). Evaluation episodes (answers, no transitions) go too."""
    buf = RelabelBuffer(BufferSettings(reward_mode=mode), clock=Clock())
    late: RewardAnswer | None = None
    episode = 0
    for n in range(200):
        train, episode = episode, episode + 1
        buf.on_answer(_answer(train, 0, 0.0))
        for k in range(5):
            buf.add(_t(train, k))
            if k == 0 and late is not None:
                buf.on_answer(late)  # the previous episode's last answer, after this one began
                late = None
            if k == 2 and n % 3 == 0:
                buf.on_answer(_answer(train, k + 1, None, Outcome.NODE_FAILURE))
            elif k < 4 or n % 2 == 0:
                buf.on_answer(_answer(train, k + 1, 0.1 * k))
            else:
                late = _answer(train, k + 1, 0.9)
        if n % 10 == 0:  # an evaluation episode: anchor and final frame, no transitions
            evaluation, episode = episode, episode + 1
            buf.on_answer(_answer(evaluation, 0, 0.0))
            buf.on_answer(_answer(evaluation, 1, 0.5))
        assert len(buf._answers) <= 3 and _entries(buf) <= 14
    assert buf.added == 1000 and buf.pending == 1  # the last episode's last answer is still out
    assert buf.labelled_total + sum(buf.dropped.values()) == 999
    assert len(buf._answers) == 1 and _entries(buf) == 5  # the current episode's answers only
    assert len(buf._pending_per_episode) == 1 and not buf._ended


def test_answers_for_a_finished_episode_are_not_kept() -> None:
    buf = _buffer()
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.on_answer(_answer(0, 1, 0.5))
    buf.add(_t(1, 0))  # episode 0 is over, and resolved
    assert set(buf._answers) == set()
    buf.on_answer(_answer(0, 1, 0.5))  # a repeat of a final answer: nothing can use it
    assert 0 not in buf._answers and len(buf) == 1


def test_end_episode_while_pending_forgets_once_the_last_one_is_resolved() -> None:
    """end_episode need not be called again: the entries go when the last transition is labelled."""
    buf = _buffer()
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.add(_t(0, 1))
    buf.on_answer(_answer(0, 1, 0.5))
    buf.end_episode(0)
    assert buf.pending == 1 and _entries(buf) == 2
    buf.on_answer(_answer(0, 2, 0.7))
    assert buf.pending == 0 and not buf._answers and len(buf) == 2


def test_expiring_the_last_transition_forgets_its_episode() -> None:
    clock = Clock()
    buf = RelabelBuffer(BufferSettings(policy="drop_after_timeout", timeout_s=1.0), clock=clock)
    buf.on_answer(_answer(0, 0, 0.0))
    buf.add(_t(0, 0))
    buf.end_episode(0)
    clock.now = int(2e9)
    assert buf.expire() == 1
    assert not buf._answers and not buf._pending_per_episode


def test_drop_after_timeout_needs_a_clock() -> None:
    """Without a clock the timeout would never fire (every transition added at time 0, forever)."""
    with pytest.raises(ValueError, match="clock"):
        RelabelBuffer(BufferSettings(policy="drop_after_timeout"))
    with pytest.raises(ValueError, match="clock"):
        RelabelBuffer()  # drop_after_timeout is the default policy
    for policy in ("wait", "relabelled_ratio"):
        RelabelBuffer(BufferSettings(policy=policy))  # no timeout: no clock needed
