"""The RL-from-verifiable-reward stage: reward, GRPO advantages and update, sampling, the whole run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.core.answer import parse_answer
from sole_r1_ros.settings.groups import ModelSettings
from sole_r1_tools.synth.episodes import generate_episode
from sole_r1_tools.training import dataset as D
from sole_r1_tools.training.rlvr import (
    UNPARSABLE_REWARD,
    group_advantages,
    grpo_loss,
    policy_rows,
    reply_reward,
    rlvr,
    sample_replies,
    token_logprobs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "sole_r1_ros" / "data" / "default_model"


@pytest.fixture(scope="module")
def states(builder: D.ExampleBuilder) -> list[D.Example]:
    ep = generate_episode("push", "success", seed=3, n_frames=24, fps=15.0, size=(160, 120))
    return [builder.build(ep, 0, 8, 0), builder.build(ep, 8, 16, 40)]


def test_reply_reward_is_one_minus_the_error_and_punishes_an_unreadable_reply() -> None:
    def reward(text: str, true_progress: float) -> float:
        return reply_reward(parse_answer(text), true_progress)

    assert reward("<think>x</think><answer>40%</answer>", 0.5) == pytest.approx(0.9)
    assert reward("<answer>100</answer>", 0.0) == pytest.approx(0.0)
    assert reward("<answer>250%</answer>", 1.0) == pytest.approx(1.0)  # clipped to 100 by the parser
    assert reward("<think>no answer</think>", 0.5) == UNPARSABLE_REWARD
    assert reward("<answer>most of it</answer>", 0.5) == UNPARSABLE_REWARD


def test_group_advantages_are_normalised_within_each_group_and_zero_for_a_flat_group() -> None:
    rewards = np.array([[0.2, 0.4, 0.6, 0.8], [0.5, 0.5, 0.5, 0.5], [-1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(rewards)
    assert np.allclose(adv[0].mean(), 0.0) and np.allclose(adv[0].std(), 1.0, atol=1e-3)
    assert np.all(np.diff(adv[0]) > 0)
    assert np.array_equal(adv[1], np.zeros(4))
    assert adv[2, 0] < 0 < adv[2, 1] == adv[2, 3]


def test_sampled_replies_are_cut_at_the_end_of_turn(builder: D.ExampleBuilder, backend: TransformersBackend,
                                                    states: list[D.Example]) -> None:
    import torch

    torch.manual_seed(0)
    replies = sample_replies(backend.model, builder, states, 3, max_new_tokens=12)
    assert len(replies) == 6
    eos = set(np.atleast_1d(backend.model.generation_config.eos_token_id).tolist()) | {builder.im_end}
    for reply in replies:
        assert 1 <= len(reply) <= 12
        assert not eos & set(reply[:-1])  # nothing kept after the first end-of-turn token
    rows = policy_rows(states, replies, 3)
    for k, (row, reply) in enumerate(zip(rows, replies)):
        state = states[k // 3]
        assert row.input_ids[:row.reply_start].tolist() == state.input_ids[:state.reply_start].tolist()
        assert row.input_ids[row.reply_start:].tolist() == reply
        assert row.answer_start == len(row.input_ids)  # no answer weighting: every reply token weighs 1


def test_one_grpo_step_makes_the_better_reply_likelier_and_the_worse_one_less_likely(
        builder: D.ExampleBuilder, backend: TransformersBackend, states: list[D.Example]) -> None:
    import torch

    model = backend.model
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    good = builder.tokenizer("<think>ok</think><answer>40%</answer>", add_special_tokens=False)["input_ids"]
    bad = builder.tokenizer("<think>ok</think><answer>90%</answer>", add_special_tokens=False)["input_ids"]
    replies = [good + [builder.im_end], bad + [builder.im_end]]
    rows = policy_rows(states[:1], replies, 2)
    texts = builder.tokenizer.batch_decode(replies, skip_special_tokens=True)
    rewards = np.array([[reply_reward(parse_answer(t), 0.4) for t in texts]])
    adv = torch.as_tensor(group_advantages(rewards).reshape(-1), dtype=torch.float32)
    assert adv[0] > 0 > adv[1]

    def reply_logp() -> list[float]:
        with torch.no_grad():
            logp, mask = token_logprobs(model, D.collate(builder, rows))
        return (logp * mask).sum(dim=1).tolist()

    try:
        before = reply_logp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        model.train()
        logp, mask = token_logprobs(model, D.collate(builder, rows))
        n_tokens = int(mask.sum())
        loss, kl = grpo_loss(logp, mask, adv, logp.detach(), 0.1, n_tokens)
        assert float(kl) == pytest.approx(0.0, abs=1e-6)  # the reference is the policy itself
        loss.backward()
        opt.step()
        after = reply_logp()
    finally:
        model.load_state_dict(saved)
        model.eval()
    assert after[0] > before[0] and after[1] < before[1]


def test_the_kl_term_pulls_toward_the_reference_when_no_reward_differs(
        builder: D.ExampleBuilder, backend: TransformersBackend, states: list[D.Example]) -> None:
    import torch

    model = backend.model
    reply = builder.tokenizer("<answer>40%</answer>", add_special_tokens=False)["input_ids"] + [builder.im_end]
    batch = D.collate(builder, policy_rows(states[:1], [reply], 1))
    with torch.no_grad():
        logp, mask = token_logprobs(model, dict(batch))
    reference = logp + 0.5 * mask  # a reference that finds the reply likelier than the policy does
    policy = logp.clone().requires_grad_(True)
    loss, kl = grpo_loss(policy, mask, torch.zeros(1), reference, 1.0, int(mask.sum()))
    loss.backward()
    assert float(kl) > 0
    assert float((policy.grad * mask).sum()) < 0  # descending the loss raises the reply's log-probability


def test_rlvr_runs_from_the_shipped_model_and_saves_a_loadable_stage(tmp_path: Path) -> None:
    summary = rlvr(DEFAULT_MODEL, tmp_path / "rl", episodes=1, steps=2, prompts=2, group=3, threads=1, workers=1,
                   max_new_tokens=96, kl_coef=0.02)
    assert summary["steps"] == 2 and summary["states"] == 7 and summary["replies"] == 12
    assert summary["on_policy"]["episodes"] == 1
    assert summary["previous_stage"]["steps"] > 0  # the SFT stage's summary is kept
    log = json.loads((tmp_path / "rl" / "training_log.json").read_text())
    assert [e["step"] for e in log] == [0, 1]
    assert all(-1.0 <= e["reward"] <= 1.0 and e["reply_tokens"] > 5 for e in log)
    assert summary["unparsable"] < summary["replies"]  # the shipped model answers in protocol
    loaded = TransformersBackend(ModelSettings(path=str(tmp_path / "rl"), device="cpu"))
    assert loaded.model_type == "qwen3_vl"
    with pytest.raises(ValueError, match="group of at least 2"):
        rlvr(DEFAULT_MODEL, tmp_path / "rl2", group=1)
