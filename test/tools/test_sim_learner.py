"""The chunked SAC learner on the tabletop in-process, rewarded through the real client."""

from __future__ import annotations

import time

import numpy as np
import torch

from sole_r1_ros.learner.replay import BufferSettings, RelabelBuffer
from sole_r1_tools.learner.closed_loop import spearman, summarize
from sole_r1_tools.learner.inprocess import LocalChunkEnv, ground_truth_client
from sole_r1_tools.learner.loop import EVAL_SEED_BASE, ChunkLearner, LoopLog, LoopSettings
from sole_r1_tools.learner.sac import ChunkSAC, SacSettings
from sole_r1_tools.sim.env import TabletopEnv


def _learner(policy: str, steps: int = 120) -> tuple[ChunkLearner, LocalChunkEnv, RelabelBuffer]:
    torch.set_num_threads(1)
    env = LocalChunkEnv(TabletopEnv("reach", max_steps=20, size=(64, 48)))
    buffer = RelabelBuffer(BufferSettings(horizon=4), clock=time.monotonic_ns)
    client = ground_truth_client(env, on_answer=buffer.on_answer)
    agent = ChunkSAC(9, 3, SacSettings(horizon=4, hidden=32, batch_size=16), seed=0) if policy == "sac" else None
    loop = LoopSettings(total_steps=steps, warmup_steps=40, updates_per_chunk=1, batch_size=16, eval_every=60,
                        eval_episodes=2, seed=1)
    return ChunkLearner(env, client, buffer, agent, loop, LoopLog(None), action_dim=3, policy=policy), env, buffer


def test_chunk_sac_shapes_and_update() -> None:
    agent = ChunkSAC(5, 2, SacSettings(horizon=3, hidden=16), seed=0)
    chunk = agent.act(np.zeros(5, np.float32))
    assert chunk.shape == (3, 2) and np.all(np.abs(chunk) <= 1.0)
    assert np.array_equal(agent.act(np.zeros(5, np.float32), True), agent.act(np.zeros(5, np.float32), True))
    from sole_r1_ros.learner.replay import Batch

    batch = Batch(obs=np.zeros((4, 5), np.float32), actions=np.zeros((4, 3, 2), np.float32),
                  rewards=np.ones(4, np.float32), next_obs=np.zeros((4, 5), np.float32),
                  terminals=np.zeros(4, np.float32))
    losses = agent.update(batch)
    assert set(losses) == {"critic", "actor", "alpha"} and agent.updates == 1


def test_loop_labels_every_transition_and_evaluates_on_fixed_seeds() -> None:
    learner, env, buffer = _learner("sac")
    learner.run()
    log = learner.log.records
    summary = log[-1]
    assert summary["kind"] == "summary" and summary["steps"] == 120 and summary["updates"] > 0
    assert buffer.added == 30 and buffer.labelled_total == 30 and buffer.pending == 0 and not buffer.dropped
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["at_steps"] for r in evals] == [0, 0, 60, 60, 120, 120]
    assert [r["seed"] for r in evals[:2]] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    train = [r for r in log if r["kind"] == "train_episode"]
    assert len(train) == 6 and all(len(r["stamps"]) == 6 for r in train)
    # the ground truth went to the env's log only, and the transitions were labelled with it
    finals = {r["stamp_ns"]: r["true_progress"] for r in env.gt_log}
    for t in buffer.labelled():
        assert t.reward is not None and 0.0 <= t.reward <= 1.0
    assert all(r["final_progress"] == finals[r["stamps"][-1]] for r in train)


def test_random_policy_never_trains() -> None:
    learner, env, _ = _learner("random", steps=40)
    learner.run()
    assert learner.log.records[-1]["updates"] == 0


def test_summarize_joins_logs_with_ground_truth(tmp_path) -> None:
    import json

    learner, env, _ = _learner("sac", steps=60)
    learner.run()
    (tmp_path / "learner.jsonl").write_text("\n".join(json.dumps(r) for r in learner.log.records))
    (tmp_path / "ground_truth.jsonl").write_text("\n".join(json.dumps(r) for r in env.gt_log))
    result = summarize(tmp_path, 0.9)
    assert [c["steps"] for c in result["curve"]] == [0, 60]
    assert result["train_episodes"] == 3 and result["train_true_success"] is not None


def test_spearman() -> None:
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) > 0
