"""RL from verifiable reward (GRPO) after SFT, on the synthetic domain (CPU).

    python -m sole_r1_tools.training.rlvr --init sole_r1_ros/data/default_model --out /tmp/rl_model

The states are the node's own: training episodes scored free-running by the initial model through
the production scorer (``train.on_policy_examples``), so every prompt quotes the progress the model
itself answered the step before. Each step draws ``prompts`` of these states, samples ``group``
replies to each, and scores every reply with the production parser against the true progress
(:func:`reply_reward`). Advantages are normalised within each state's group (GRPO). The update is
one policy-gradient step per batch of fresh samples (on-policy: the importance ratio is 1, so
PPO's clipping never acts), a token-level mean, plus a k3 KL penalty to the initial model. The
result is saved like ``train``'s (atomic, safetensors, a summary that nests the previous stage's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sole_r1_ros.core.answer import ParsedAnswer, parse_answer
from sole_r1_tools.training.dataset import (
    EpisodeSpec,
    Example,
    ExampleBuilder,
    check_not_held_out,
    collate,
    parse_weights,
    training_specs,
)
from sole_r1_tools.training.loading import load_model
from sole_r1_tools.training.train import (
    _log,
    inherited_vision_scale,
    on_policy_examples,
    optimizer_groups,
    save_stage,
)

UNPARSABLE_REWARD = -1.0


def reply_reward(parsed: ParsedAnswer, true_progress: float) -> float:
    """The verifiable reward of one reply, as the production parser read it: ``1 - |answer - true
    progress|`` (both as fractions, so 0..1 within the task's range) when it has an answer, else
    :data:`UNPARSABLE_REWARD` (the format term: an unreadable reply is worse than any answer in range)."""
    if not parsed.status.has_value or parsed.percent is None:
        return UNPARSABLE_REWARD
    return 1.0 - abs(parsed.percent / 100.0 - true_progress)


def group_advantages(rewards: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """GRPO advantages of ``rewards`` [states, group]: each reward minus its group's mean over the
    group's standard deviation; a group whose rewards are all equal teaches nothing (zeros)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, keepdims=True)
    return np.where(std > 1e-9, centred / (std + eps), 0.0)


def sample_replies(model: Any, builder: ExampleBuilder, states: Sequence[Example], group: int, *,
                   temperature: float = 1.0, max_new_tokens: int = 96) -> list[list[int]]:
    """``group`` sampled replies to each state's prompt (its tokens up to ``reply_start`` and its
    composite), as token ids up to and including the first end-of-turn token; state-major order.
    Prompts are left-padded into one batch, as the production backend does."""
    import torch

    tokenizer = builder.tokenizer
    pad = tokenizer.pad_token_id
    image_id = model.config.image_token_id
    rows = [e for e in states for _ in range(group)]
    length = max(e.reply_start for e in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), length), dtype=torch.long)
    for row, e in enumerate(rows):
        ids[row, length - e.reply_start:] = torch.from_numpy(e.input_ids[:e.reply_start].astype(np.int64))
        attn[row, length - e.reply_start:] = 1
    eos = {int(t) for t in np.atleast_1d(model.generation_config.eos_token_id)} | {builder.im_end}
    inputs = {"input_ids": ids, "attention_mask": attn, "mm_token_type_ids": (ids == image_id).long(),
              "image_grid_thw": torch.from_numpy(np.stack([e.grid_thw for e in rows])),
              "pixel_values": builder.pixel_tensor([e.patches for e in rows])}
    model.eval()
    with torch.inference_mode():
        out = model.generate(**{k: v.to(model.device) for k, v in inputs.items()}, do_sample=True,
                             temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             pad_token_id=pad)
    replies = []
    for seq in out[:, length:].tolist():
        end = next((k for k, t in enumerate(seq) if t in eos), None)
        replies.append(seq if end is None else seq[:end + 1])
    return replies


def policy_rows(states: Sequence[Example], replies: Sequence[list[int]], group: int) -> list[Example]:
    """Each state's prompt followed by one of its sampled replies, as examples whose reply tokens
    all carry loss weight 1 (no answer or decision weighting: the advantage is the weight)."""
    rows = []
    for k, reply in enumerate(replies):
        e = states[k // group]
        ids = np.concatenate([e.input_ids[:e.reply_start], np.asarray(reply, dtype=np.int32)]).astype(np.int32)
        rows.append(dataclasses.replace(e, input_ids=ids, answer_start=len(ids), decision_positions=None,
                                        comparison_positions=None, comparison_slots=None, loss_positions=None))
    return rows


def token_logprobs(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Log-probabilities of each next token [rows, length-1] and the reply-token mask."""
    import torch.nn.functional as F

    weights = batch.pop("weights")
    logits = model(**batch).logits[:, :-1].float()
    target = batch["input_ids"][:, 1:]
    logp = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return logp.view_as(target), (weights[:, 1:] > 0).float()


def grpo_loss(logp: Any, mask: Any, advantages: Any, ref_logp: Any | None, kl_coef: float,
              n_tokens: int) -> tuple[Any, Any]:
    """Policy-gradient loss summed over this micro-batch's reply tokens and divided by the whole
    batch's ``n_tokens`` (a token-level mean across micro-batches), with the k3 estimate of
    KL(policy || reference) weighted by ``kl_coef``; also the KL sum (detached)."""
    import torch

    pg = -(advantages[:, None] * logp * mask).sum()
    kl = torch.zeros((), dtype=logp.dtype)
    if ref_logp is not None:
        delta = ref_logp - logp
        kl = ((torch.exp(delta) - delta - 1.0) * mask).sum()
    return (pg + kl_coef * kl) / n_tokens, kl.detach()


def rl_episode_specs(episodes: int, seed: int, outcome_weights: Any = None,
                     kind_weights: Any = None) -> list[EpisodeSpec]:
    """The episodes whose free-running states the RL stage learns from: seeds 1 800 000 on for
    seed 0 (until 2026-11-30 they were 800 000 on, the third held-out set's); refused if they
    reach a held-out set."""
    specs = [EpisodeSpec(s.task_kind, s.outcome, s.seed + 1_400_000)
             for s in training_specs(episodes, seed + 4, outcome_weights, kind_weights=kind_weights)]
    check_not_held_out((s.seed for s in specs), "RL episode")
    return specs


def rlvr(
    init_dir: Path,
    out: Path,
    *,
    seed: int = 0,
    episodes: int = 150,
    steps: int = 100,
    prompts: int = 8,
    group: int = 8,
    lr: float = 1e-4,
    vision_lr_mult: float = 0.3,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    kl_coef: float = 0.02,
    micro_batch: int = 16,
    outcome_weights: dict[str, float] | None = None,
    kind_weights: dict[str, float] | None = None,
    minutes: float = 60.0,
    threads: int = 2,
    workers: int = 2,
    log_every: int = 5,
) -> dict[str, Any]:
    """Run the RL stage from ``init_dir`` and save the policy to ``out``; returns the summary."""
    import torch

    if prompts < 1 or group < 2:
        raise ValueError("need at least 1 prompt and a group of at least 2 replies (advantages are within a group)")
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    specs = rl_episode_specs(episodes, seed, outcome_weights, kind_weights)
    states, on_policy = on_policy_examples(Path(init_dir), specs, workers=workers)
    if not states:
        raise ValueError("the rollouts gave no model calls to learn from")
    data_s = time.perf_counter() - t_start
    _log(f"{len(states)} on-policy states from {len(specs)} episodes in {data_s:.0f} s")

    torch.set_num_threads(threads)
    from sole_r1_ros.core.protocol import load_protocol

    backend = load_model(Path(init_dir))
    builder = ExampleBuilder(backend, load_protocol())
    model = backend.model
    reference = load_model(Path(init_dir)).model.eval() if kl_coef > 0 else None
    scaled = inherited_vision_scale(Path(init_dir))
    opt = torch.optim.AdamW(optimizer_groups(model, scaled, vision_lr_mult), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_mult"]
    order_rng = np.random.default_rng([seed, 5])
    order: list[int] = []
    log: list[dict[str, Any]] = []
    t_train = time.perf_counter()
    deadline = t_train + minutes * 60.0
    totals = {"replies": 0, "unparsable": 0, "zero_variance_groups": 0}
    step, stopped_early = 0, False
    for step in range(steps):
        if time.perf_counter() > deadline:
            stopped_early = True
            _log(f"time budget of {minutes} min reached at step {step}")
            break
        if len(order) < prompts:
            order.extend(order_rng.permutation(len(states)).tolist())
        picked, order = [states[i] for i in order[:prompts]], order[prompts:]
        t0 = time.perf_counter()
        replies = sample_replies(model, builder, picked, group, temperature=temperature, max_new_tokens=max_new_tokens)
        answers = [parse_answer(t) for t in builder.tokenizer.batch_decode(replies, skip_special_tokens=True)]
        rewards = np.array([reply_reward(a, picked[k // group].percent / 100.0) for k, a in enumerate(answers)])
        readable = np.array([a.status.has_value for a in answers])
        advantages = group_advantages(rewards.reshape(len(picked), group)).reshape(-1)
        sample_s = time.perf_counter() - t0
        rows = policy_rows(picked, replies, group)
        n_tokens = sum(len(r) for r in replies)
        model.train()
        opt.zero_grad(set_to_none=True)
        kl_sum = 0.0
        for a in range(0, len(rows), micro_batch):
            batch = collate(builder, rows[a:a + micro_batch], device=model.device)
            ref_logp = None
            if reference is not None:
                with torch.no_grad():
                    ref_logp, _ = token_logprobs(reference, dict(batch))
            logp, mask = token_logprobs(model, batch)
            adv = torch.as_tensor(advantages[a:a + micro_batch], dtype=logp.dtype, device=logp.device)
            loss, kl = grpo_loss(logp, mask, adv, ref_logp, kl_coef, n_tokens)
            loss.backward()
            kl_sum += float(kl)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        unparsable = int((~readable).sum())
        flat = int((advantages.reshape(len(picked), group) == 0).all(axis=1).sum())  # groups with no spread
        totals["replies"] += len(rewards)
        totals["unparsable"] += unparsable
        totals["zero_variance_groups"] += flat
        entry = {"step": step, "reward": round(float(rewards.mean()), 4),
                 "abs_error": round(float(1.0 - rewards[readable].mean()), 4) if readable.any() else None,
                 "unparsable": unparsable, "zero_variance_groups": flat, "kl": round(kl_sum / n_tokens, 5),
                 "reply_tokens": round(n_tokens / len(replies), 1), "grad_norm": round(grad_norm, 3),
                 "sample_s": round(sample_s, 1), "elapsed_s": round(time.perf_counter() - t_train, 1)}
        log.append(entry)
        if step % log_every == 0 or step == steps - 1:
            _log(json.dumps(entry))
    final_steps = step + (0 if stopped_early else 1)
    recent = log[-20:]
    summary = {
        "stage": "rlvr", "seed": seed, "init": "previous_stage", "episodes": episodes, "states": len(states),
        "on_policy": on_policy, "steps": final_steps, "planned_steps": steps, "prompts": prompts, "group": group,
        "lr": lr, "vision_lr_mult": vision_lr_mult, "vision_scale_factors": scaled, "temperature": temperature,
        "max_new_tokens": max_new_tokens, "kl_coef": kl_coef, "outcome_weights": outcome_weights or None,
        "kind_weights": kind_weights or None, "reward": "1 - |answer - true progress|; unparsable: -1",
        "stopped_early": stopped_early, **totals,
        "mean_reward_first_20": round(float(np.mean([e["reward"] for e in log[:20]])), 4) if log else None,
        "mean_reward_last_20": round(float(np.mean([e["reward"] for e in recent])), 4) if recent else None,
        "data_seconds": round(data_s, 1), "train_seconds": round(time.perf_counter() - t_train, 1),
        "torch_threads": torch.get_num_threads(), "device": str(model.device),
    }
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    save_stage(backend, out, Path(init_dir), summary, log)
    _log(f"saved {out}: {json.dumps({k: v for k, v in summary.items() if k != 'previous_stage'})}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", type=Path, required=True, help="the SFT model directory to start from")
    p.add_argument("--out", type=Path, required=True, help="model directory to write (replaced atomically)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=150, help="training episodes whose free-running states are used")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--prompts", type=int, default=8, help="states per step")
    p.add_argument("--group", type=int, default=8, help="sampled replies per state")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--vision-lr-mult", type=float, default=0.3)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument(
        "--kl-coef", type=float, default=0.02, help="weight of the KL penalty to the initial model (0: none)"
    )
    p.add_argument("--micro-batch", type=int, default=16, help="rows per forward/backward pass")
    p.add_argument("--outcome-weights", type=parse_weights, default=None, metavar="OUTCOME=W[,OUTCOME=W]")
    p.add_argument("--kind-weights", type=parse_weights, default=None, metavar="KIND=W[,KIND=W]")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock cap on the RL loop")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes for building the states")
    p.add_argument("--log-every", type=int, default=5)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    rlvr(args.init, args.out, seed=args.seed, episodes=args.episodes, steps=args.steps, prompts=args.prompts,
         group=args.group, lr=args.lr, vision_lr_mult=args.vision_lr_mult, temperature=args.temperature,
         max_new_tokens=args.max_new_tokens, kl_coef=args.kl_coef, micro_batch=args.micro_batch,
         outcome_weights=args.outcome_weights, kind_weights=args.kind_weights, minutes=args.minutes,
         threads=args.threads, workers=args.workers, log_every=args.log_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
