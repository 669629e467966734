"""Supervised fine-tuning of a small random-init Qwen3-VL on synthesized trajectories (CPU).

    python -m sole_r1_tools.training.train --out sole_r1_ros/data/default_model --seed 0

Steps: build a fresh Qwen3-VL directory (own tokenizer trained on the protocol's prompts and the
reply vocabulary, real Qwen3-VL processors); load it with the production ``TransformersBackend``;
render synthetic episodes (successes, failures, regressions, wrong object, hover, occlusion);
build per-step examples with the production composite and prompt (``dataset``); train with
AdamW on the reply tokens only (the answer tokens weighted up); save atomically with
``save_pretrained(safe_serialization=True)`` plus the processor. Seeded: the same arguments give
the same data and the same initial weights (CPU float kernels may still differ in the last bits).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sole_r1_tools.training.averaging import WeightAverage
from sole_r1_tools.training.dataset import (
    Episode,
    EpisodeSpec,
    Example,
    ExampleBuilder,
    collate,
    colour_counterfactual,
    corpus_lines,
    episode_examples,
    make_episode,
    parse_weights,
    training_specs,
)
from sole_r1_tools.training.heap import release_free_heap
from sole_r1_tools.training.loading import load_model
from sole_r1_tools.training.selection import SELECTION_SEED, CheckpointSelector

# Architecture of the shipped default model (see docs/default_model.md).
ARCH = {
    "hidden_size": 128,
    "num_layers": 4,
    "vision_hidden_size": 64,
    "vision_depth": 2,
    "max_image_tokens": 150,
    "vocab_size": 2048,
}

_WORKER: dict[str, Any] = {}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_initial_model(path: Path, seed: int, arch: dict[str, int]) -> Path:
    """Random-init Qwen3-VL directory with the domain tokenizer."""
    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_tools.tiny_model import build_tiny_model

    return build_tiny_model(path, "qwen3_vl", seed=seed, extra_corpus=corpus_lines(load_protocol()), **arch)


def image_token_budget(backend: Any) -> int:
    """Most LLM tokens one image becomes: the image processor's pixel budget in merged patches."""
    ip = backend.processor.image_processor
    return int(ip.size["longest_edge"]) // (int(ip.patch_size) * int(ip.merge_size)) ** 2


def _worker_init(model_dir: str) -> None:
    import torch

    torch.set_num_threads(1)
    from sole_r1_ros.core.protocol import load_protocol

    _WORKER["builder"] = ExampleBuilder(load_model(Path(model_dir)), load_protocol())


def _episode_job(job: tuple[EpisodeSpec, int, int, float, float, float, float, bool]) -> list[Example]:
    spec, seed, passes, noise, p_noise, p_random, relabel, goal_swaps = job
    ep = make_episode(spec)
    rng = np.random.default_rng([seed, spec.seed, 11])
    return list(episode_examples(_WORKER["builder"], ep, rng, passes=passes, noise=noise, p_noise=p_noise,
                                 p_random=p_random, relabel=relabel, goal_swaps=goal_swaps))


@contextlib.contextmanager
def worker_map(model_dir: Path, workers: int) -> Iterator[Callable[[Callable[[Any], Any], list[Any]], Iterator[Any]]]:
    """A ``map(fn, jobs)`` over ``workers`` forked processes that each hold an ``ExampleBuilder``
    for ``model_dir`` in ``_WORKER["builder"]`` (with ``workers <= 1``, this process does), lazy
    and in job order. The processes live as long as the context, so several maps share them."""
    if workers <= 1:
        import torch

        threads = torch.get_num_threads()
        _worker_init(str(model_dir))
        torch.set_num_threads(threads)  # the worker's one thread is for forked processes only
        yield map
        return
    pool = mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=(str(model_dir),))
    try:
        yield lambda fn, jobs: pool.imap(fn, jobs, chunksize=2)
    finally:
        pool.close()
        pool.join()


def map_episodes(job_fn: Callable[[Any], list[Any]], jobs: list[Any], model_dir: Path, workers: int,
                 what: str = "examples", log_every: int = 50) -> list[Any]:
    """``job_fn`` over per-episode ``jobs`` (:func:`worker_map`), flattened in job order, with
    progress logged."""
    out: list[Any] = []
    t0 = time.perf_counter()
    with worker_map(model_dir, workers) as run:
        for k, items in enumerate(run(job_fn, jobs), 1):
            out.extend(items)
            if k % log_every == 0 or k == len(jobs):
                release_free_heap()
                _log(f"data: {k}/{len(jobs)} episodes, {len(out)} {what}, {time.perf_counter() - t0:.0f} s")
    return out


def _quoted_job(job: tuple[Episode, list[tuple[int, int, int]]]) -> list[Example]:
    ep, steps = job
    return [_WORKER["builder"].build(ep, prev_idx, cur_idx, quoted) for prev_idx, cur_idx, quoted in steps]


def on_policy_examples(model_dir: Path, specs: list[EpisodeSpec], *, workers: int = 2, device: str = "cpu",
                       chunk: int = 32) -> tuple[list[Example], dict[str, Any]]:
    """One DAgger round on the quoted previous progress: score ``specs`` free-running with the
    model in ``model_dir`` (``evaluate``: production scorer, 2 Hz, greedy, its own answers fed
    back) and build an example for every model call with the value the model itself quoted there,
    the reply again from the true state (so "went up from N%" is said against the model's own N).
    Episodes are scored ``chunk`` at a time (a multiple of evaluate's batch of 8, so the batches
    are the same) to keep the rendered frames of only one chunk in memory. Each chunk is rendered
    once, by the ``workers`` processes, which then build its examples from the same frames."""
    from sole_r1_tools.training.evaluate import evaluate
    from sole_r1_tools.training.metrics import trace_metrics

    backend = load_model(model_dir, device)
    examples: list[Example] = []
    traces: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with worker_map(model_dir, workers) as run:
        for start in range(0, len(specs), chunk):
            part = specs[start:start + chunk]
            rendered = list(run(make_episode, part))
            jobs = []
            for ep, trace in zip(rendered, evaluate(backend, specs=part, rendered=rendered)["traces"]):
                frames = trace["frames"]
                jobs.append((ep, [(frames[k], frames[k + 1], int(q)) for k, q in enumerate(trace["quoted"])]))
                traces.append(trace)
            del rendered
            for items in run(_quoted_job, jobs):
                examples.extend(items)
            del jobs
            release_free_heap()
            _log(f"data: {start + len(part)}/{len(specs)} episodes scored, {len(examples)} on-policy examples, "
                 f"{time.perf_counter() - t0:.0f} s")
    backend.close()
    rollout = {k: round(float(v), 4) for k, v in trace_metrics(traces).items()}
    _log(f"on-policy rollouts of the initial model on {len(specs)} training episodes: {json.dumps(rollout)}")
    return examples, {"episodes": len(specs), "examples": len(examples), "rollout_metrics": rollout}


def build_examples(model_dir: Path, specs: list[EpisodeSpec], seed: int, *, passes: int = 1, noise: float = 6.0,
                   p_noise: float = 0.5, p_random: float = 0.0, workers: int = 2,
                   relabel: float = 0.0, goal_swaps: bool = False) -> list[Example]:
    """Render ``specs`` and build their examples (deterministic order; ``workers`` processes), with
    goal-relabelled twins of a ``relabel`` fraction of the steps and, with ``goal_swaps``, goal-swap
    pairs (``dataset.episode_examples``)."""
    jobs = [(s, seed, passes, noise, p_noise, p_random, relabel, goal_swaps) for s in specs]
    return map_episodes(_episode_job, jobs, model_dir, workers)


def weighted_loss(model: Any, batch: dict[str, Any], causal_fast_path: bool = True) -> tuple[Any, Any]:
    """Mean cross-entropy over reply tokens (per-token weights); also the unweighted mean.
    ``causal_fast_path=False`` keeps the padding mask of a right-padded batch (benchmarks only)."""
    import torch
    import torch.nn.functional as F

    weights = batch.pop("weights")
    mask = batch["attention_mask"]
    if causal_fast_path and torch.equal(
        mask, (torch.arange(mask.shape[1], device=mask.device) < mask.sum(1, keepdim=True)).long()
    ):
        # right padding: causal masking alone keeps every real token off the pads after it, and an
        # all-ones mask lets attention take its causal fast path (pad positions carry no loss)
        batch = {**batch, "attention_mask": torch.ones_like(mask)}
    out = model(**batch)
    logits = out.logits[:, :-1].float()
    target = batch["input_ids"][:, 1:]
    w = weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none").view_as(w)
    mask = (w > 0).float()
    loss = (ce * w).sum() / w.sum()
    plain = (ce * mask).sum() / mask.sum()
    return loss, plain.detach() if isinstance(plain, torch.Tensor) else plain


def _lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def save_model(backend: Any, out: Path, extra_files: dict[str, Any] | None = None) -> Path:
    """Atomically write model (safetensors) + processor into ``out``."""
    from sole_r1_tools.tiny_model import quiet_progress_bars

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        backend.model.eval()
        with quiet_progress_bars():  # restored afterwards: a disabled bar outlived this call before
            backend.model.save_pretrained(staging, safe_serialization=True)
        backend.processor.tokenizer.padding_side = "right"
        backend.processor.save_pretrained(staging)
        backend.processor.tokenizer.padding_side = "left"
        for name, data in (extra_files or {}).items():
            (staging / name).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        for p in staging.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        staging.chmod(0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def save_stage(backend: Any, out: Path, init_dir: Path | None, summary: dict[str, Any],
               log: list[dict[str, Any]]) -> Path:
    """:func:`save_model` with ``training_summary.json`` (``summary``, nesting the initial model's own
    summary as ``previous_stage`` when there is one) and ``training_log.json`` (``log``)."""
    previous = Path(init_dir) / "training_summary.json" if init_dir else None
    if previous is not None and previous.is_file():
        summary["previous_stage"] = json.loads(previous.read_text(encoding="utf-8"))
    return save_model(backend, out, {"training_summary.json": summary, "training_log.json": log})


def train(
    out: Path,
    *,
    seed: int = 0,
    minutes: float = 42.0,
    steps: int = 1400,
    episodes: int = 420,
    passes: int = 1,
    batch_size: int = 8,
    lr: float = 1e-3,
    warmup: int = 60,
    answer_weight: float = 3.0,
    noise: float = 12.0,
    p_noise: float = 0.6,
    p_random: float = 0.0,
    workers: int = 2,
    arch: dict[str, int] | None = None,
    init_dir: Path | None = None,
    log_every: int = 25,
    val_episodes: int = 6,
    threads: int = 2,
    checkpoint_every: int = 300,
    examples_cache: Path | None = None,
    data_only: bool = False,
    match_vision_scale: float = 0.0,
    vision_lr_mult: float = 1.0,
    decision_weight: float = 1.0,
    comparison_weight: float = 1.0,
    colour_counterfactuals: int = 0,
    kind_weights: dict[str, float] | None = None,
    outcome_weights: dict[str, float] | None = None,
    on_policy_episodes: int = 0,
    goal_relabel: float = 0.0,
    goal_swap_pairs: int = 0,
    counterfactual_weight: float | None = None,
    select_episodes: int = 0,
    select_every: int = 100,
    select_from: int = 0,
    select_seed: int = SELECTION_SEED,
    weight_average: float = 0.0,
    weight_average_from: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the whole recipe; returns the training summary (also written as ``training_summary.json``).
    ``select_episodes`` > 0: score the model free-running on that many validation episodes every
    ``select_every`` steps from ``select_from`` on and after the last step (episode seeds
    ``select_seed`` on), and save the best (``selection.CheckpointSelector``); 0 saves the last
    step's weights. ``weight_average`` > 0: save (and score as candidates) the moving average of the
    weights with that decay, taken from step ``weight_average_from`` on (``averaging.WeightAverage``)
    instead of the live weights."""
    import torch

    if on_policy_episodes > 0 and not init_dir:
        raise ValueError("on-policy examples need a trained initial model (--init)")
    average = WeightAverage(weight_average, weight_average_from) if weight_average > 0 else None
    t_start = time.perf_counter()
    selector = (CheckpointSelector(select_episodes, select_every, select_from, seed=select_seed)
                if select_episodes > 0 else None)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    arch = dict(ARCH if arch is None else arch)

    tmp = Path(tempfile.mkdtemp(prefix="sole_r1_train_"))
    try:
        model_dir = init_dir or build_initial_model(tmp / "init", seed, arch)
        _log(f"initial model: {model_dir}")
        specs = training_specs(episodes, seed, outcome_weights, kind_weights=kind_weights)
        data_key = {"seed": seed, "episodes": episodes, "passes": passes, "noise": noise, "p_noise": p_noise,
                    "p_random": p_random, "kind_weights": kind_weights or None,
                    "outcome_weights": outcome_weights or None, "on_policy_episodes": on_policy_episodes,
                    "goal_relabel": goal_relabel, "goal_swaps": goal_swap_pairs > 0,
                    "tokenizer_processor_template": _digest(Path(model_dir), "tokenizer.json", "tokenizer_config.json",
                                                            "processor_config.json", "chat_template.jinja"),
                    # on-policy examples are the initial model's own rollouts
                    "initial_model": _digest(Path(model_dir), "model.safetensors") if on_policy_episodes > 0 else None}
        cached = load_examples_cache(Path(examples_cache), data_key) if examples_cache else None
        if cached is not None:
            examples, on_policy = cached
            _log(f"loaded {len(examples)} examples from {examples_cache}")
        else:
            examples = build_examples(model_dir, specs, seed, passes=passes, noise=noise, p_noise=p_noise,
                                      p_random=p_random, workers=workers, relabel=goal_relabel,
                                      goal_swaps=goal_swap_pairs > 0)
            on_policy = {}
            if on_policy_episodes > 0:
                extra, on_policy = on_policy_examples(
                    Path(model_dir), [EpisodeSpec(s.task_kind, s.outcome, s.seed + 300_000)
                                      for s in training_specs(on_policy_episodes, seed + 2, outcome_weights,
                                                              kind_weights=kind_weights)],
                    workers=workers, device=device)
                examples = examples + extra
            if examples_cache:
                save_examples_cache(Path(examples_cache), data_key, examples, on_policy)
        if data_only:
            return {"train_examples": len(examples)}
        pairs = [e for e in examples if e.twin is not None]  # goal-swap pairs are drawn apart from the examples
        examples = [e for e in examples if e.twin is None]
        val_specs = [
            EpisodeSpec(s.task_kind, s.outcome, s.seed + 90_000) for s in training_specs(val_episodes, seed + 1)
        ]
        val = build_examples(model_dir, val_specs, seed + 1, noise=0.0, workers=1 if len(val_specs) < 4 else workers)
        data_s = time.perf_counter() - t_start
        _log(f"data ready: {len(examples)} train / {len(val)} val examples in {data_s:.0f} s")

        torch.set_num_threads(threads)
        backend = load_model(model_dir, device)
        builder = ExampleBuilder(
            backend, __import__("sole_r1_ros.core.protocol", fromlist=["load_protocol"]).load_protocol()
        )
        model = backend.model
        model.train()
        if init_dir:  # the architecture is the initial model's, whatever ``arch`` says
            cfg = model.config
            arch = {"hidden_size": cfg.text_config.hidden_size, "num_layers": cfg.text_config.num_hidden_layers,
                    "vision_hidden_size": cfg.vision_config.hidden_size, "vision_depth": cfg.vision_config.depth,
                    "max_image_tokens": image_token_budget(backend),
                    "vocab_size": len(backend.processor.tokenizer)}
        scaled: dict[str, float] = {}
        if match_vision_scale > 0:
            scaled = rescale_vision(model, collate(builder, examples[:batch_size], 1.0, device=model.device),
                                    match_vision_scale)["factors"]
        elif init_dir:
            scaled = inherited_vision_scale(Path(model_dir))
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(optimizer_groups(model, scaled, vision_lr_mult), lr=lr, betas=(0.9, 0.95), eps=1e-8)
        order_rng = np.random.default_rng([seed, 3])
        counterfactual_rng = np.random.default_rng([seed, 4])
        named = [e for e in examples if e.comparison_slots is not None]
        if colour_counterfactuals and not named:
            raise ValueError("--colour-counterfactuals needs examples that name a held or moved object")
        if goal_swap_pairs and not pairs:
            raise ValueError("--goal-swap-pairs found no step that names a held or moved block")
        order: list[int] = []
        log: list[dict[str, Any]] = []
        t_train = time.perf_counter()
        deadline = t_train + minutes * 60.0
        step = 0
        ema = None
        stopped_early = False
        for step in range(steps):
            if time.perf_counter() > deadline:
                stopped_early = True
                _log(f"time budget of {minutes} min reached at step {step}")
                break
            if len(order) < batch_size:
                order.extend(order_rng.permutation(len(examples)).tolist())
            idx, order = order[:batch_size], order[batch_size:]
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr, warmup) * g.get("lr_mult", 1.0)
            rows = [examples[i] for i in idx]
            rows += counterfactual_rows(builder, named, colour_counterfactuals, counterfactual_rng)
            for k in counterfactual_rng.integers(len(pairs), size=goal_swap_pairs) if goal_swap_pairs else ():
                rows += [pairs[int(k)], pairs[int(k)].twin]
            batch = collate(builder, rows, answer_weight, decision_weight=decision_weight,
                            comparison_weight=comparison_weight, counterfactual_weight=counterfactual_weight,
                            device=model.device)
            loss, plain = weighted_loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if average is not None:
                average.update(model, step + 1)
            value = float(plain)
            if checkpoint_every and step > 0 and step % checkpoint_every == 0:
                save_model(backend, out.parent / f"{out.name}.checkpoint", {"checkpoint_step.json": {"step": step}})
                model.train()
            if selector is not None and selector.due(step + 1):
                with _averaged(average, model):
                    _log(f"selection candidate: {json.dumps(selector.consider(backend, step + 1))}")
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            if step % log_every == 0 or step == steps - 1:
                entry = {"step": step, "loss": round(value, 4), "loss_ema": round(ema, 4),
                         "lr": round(opt.param_groups[0]["lr"], 6),
                         "elapsed_s": round(time.perf_counter() - t_train, 1)}
                if step % (log_every * 10) == 0 or step == steps - 1:
                    entry["val_loss"] = round(validation_loss(model, builder, val, batch_size), 4)
                    model.train()
                log.append(entry)
                _log(json.dumps(entry))
        final_steps = step + (0 if stopped_early else 1)
        if selector is not None:
            if not selector.scored(final_steps):
                with _averaged(average, model):
                    _log(f"selection candidate: {json.dumps(selector.consider(backend, final_steps))}")
            _log(f"selection: the weights after step {selector.restore_best(model)} of {final_steps} are saved")
        elif average is not None and average.active:
            average.copy_to(model)
            _log(f"weight average (decay {weight_average}, {average.updates} steps) is saved")
        elif average is not None:
            _log(f"weight average: none, the stage stopped before step {weight_average_from}; "
                 "the last weights are saved")
        val_loss = validation_loss(model, builder, val, batch_size)
        val_random_prev = build_examples(model_dir, val_specs, seed + 1, noise=0.0, p_random=1.0,
                                         workers=1 if len(val_specs) < 4 else workers)
        dependence = image_dependence(model, builder, val_random_prev, batch_size)
        _log(f"image dependence (random quoted previous progress): {json.dumps(dependence)}")
        summary = {
            "seed": seed, "init": "previous_stage" if init_dir else "random", "arch": arch, "parameters": n_params,
            "episodes": episodes, "passes": passes,
            "train_examples": len(examples), "val_examples": len(val), "steps": final_steps, "planned_steps": steps,
            "batch_size": batch_size, "lr": lr, "warmup": warmup, "answer_weight": answer_weight,
            "decision_weight": decision_weight, "comparison_weight": comparison_weight,
            "colour_counterfactuals": colour_counterfactuals,
            "match_vision_scale": match_vision_scale, "vision_lr_mult": vision_lr_mult,
            "vision_scale_factors": scaled, "kind_weights": kind_weights or None,
            "outcome_weights": outcome_weights or None, "on_policy": on_policy or None, "goal_relabel": goal_relabel,
            "goal_swap_pairs": goal_swap_pairs, "goal_swap_pairs_built": len(pairs),
            "counterfactual_weight": counterfactual_weight,
            "selection": selector.summary() if selector is not None else None,
            "weight_average": average.summary() if average is not None else None,
            "prev_noise": {"sigma_percent": noise, "probability": p_noise, "p_uniform_random": p_random},
            "stopped_early": stopped_early,
            "data_seconds": round(data_s, 1), "train_seconds": round(time.perf_counter() - t_train, 1),
            "final_val_loss": round(val_loss, 4), "image_dependence_random_prev": dependence,
            "final_train_loss_ema": round(ema or float("nan"), 4),
            "torch_threads": torch.get_num_threads(), "device": str(model.device),
        }
        summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
        save_stage(backend, out, init_dir, summary, log)
        _log(f"saved {out}: {json.dumps(summary)}")
        shutil.rmtree(out.parent / f"{out.name}.checkpoint", ignore_errors=True)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _averaged(average: WeightAverage | None, model: Any) -> contextlib.AbstractContextManager[None]:
    """The weight average in ``model`` for a ``with`` block when there is one, else the live weights."""
    return average.applied(model) if average is not None and average.active else contextlib.nullcontext()


def optimizer_groups(model: Any, scaled: dict[str, float], vision_lr_mult: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices but not embeddings, norms and biases; the
    vision tower's learning rate times ``vision_lr_mult`` (``lr_mult``); the rescaled vision output
    layers named in ``scaled`` also times their factor. Adam's step size is scale-free, so this keeps
    them at their new scale instead of re-growing them within steps."""
    special = {n: k for n, _ in model.named_parameters() for m, k in scaled.items() if n.startswith(m + ".")}
    groups = []
    for vision in (False, True):
        mult = vision_lr_mult if vision else 1.0
        named = [(n, p) for n, p in model.named_parameters()
                 if n.startswith("model.visual.") == vision and n not in special]
        groups.append({"params": [p for n, p in named if p.ndim >= 2 and "embed" not in n],
                       "weight_decay": 0.01, "lr_mult": mult})
        groups.append({"params": [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)],
                       "weight_decay": 0.0, "lr_mult": mult})
    groups += [{"params": [p], "weight_decay": 0.0, "lr_mult": special[n] * vision_lr_mult}
               for n, p in model.named_parameters() if n in special]
    return groups


def counterfactual_rows(builder: ExampleBuilder, named: list[Example], n: int,
                        rng: np.random.Generator) -> list[Example]:
    """``n`` colour counterfactuals (:func:`colour_counterfactual`) of examples drawn from ``named``,
    the colour drawn so that half name the goal object's colour and half another block's."""
    rows = []
    for k in rng.integers(len(named), size=n) if n else ():
        e = named[int(k)]
        goal = e.comparison_slots[2]
        others = [c for c in builder.colour_ids.values() if c != goal]
        colour = goal if rng.random() < 0.5 else int(rng.choice(others))
        rows.append(colour_counterfactual(e, colour, builder.comma_id, builder.dot_id))
    return rows


def _digest(model_dir: Path, *names: str) -> str:
    """SHA-256 over the named files of a model directory (a missing one counts as empty)."""
    h = hashlib.sha256()
    for name in names:
        path = model_dir / name
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return h.hexdigest()


def save_examples_cache(path: Path, key: dict[str, Any], examples: list[Example], on_policy: dict[str, Any]) -> None:
    """Write the synthesized examples (ordinary and on-policy) with the settings that made them,
    atomically: an interrupted write leaves neither a cache nor a partial file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump({"key": key, "examples": examples, "on_policy": on_policy}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_examples_cache(path: Path, key: dict[str, Any]) -> tuple[list[Example], dict[str, Any]] | None:
    """The cached examples and on-policy summary if ``path`` exists (None if not); a cache made
    with other settings is an error, not silently other data."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        cached = pickle.load(f)
    found = cached.get("key") if isinstance(cached, dict) else None
    if found != key:
        diff = sorted(k for k in set(key) | set(found or {}) if (found or {}).get(k) != key.get(k))
        raise ValueError(f"examples cache {path} was made with other settings ({', '.join(diff) or 'no key'}); "
                         "remove it or point --examples-cache elsewhere")
    return cached["examples"], cached["on_policy"]


def inherited_vision_scale(model_dir: Path) -> dict[str, float]:
    """The vision output layers' rescale factors of an earlier stage (``training_summary.json``,
    ``vision_scale_factors``, this stage's or a nested earlier one's), so a continued run keeps
    their learning rates scaled with them; empty if none was recorded."""
    path = model_dir / "training_summary.json"
    summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    while summary:
        if summary.get("vision_scale_factors"):
            factors = {str(k): float(v) for k, v in summary["vision_scale_factors"].items()}
            _log(f"vision output layers keep the learning-rate factors of an earlier stage: {json.dumps(factors)}")
            return factors
        summary = summary.get("previous_stage") or {}
    return {}


def rescale_vision(model: Any, batch: dict[str, Any], factor: float = 1.0) -> dict[str, Any]:
    """Scale the merger (and DeepStack mergers) output layers so the image embeddings' RMS equals
    ``factor`` times the text embeddings' RMS (exact: the last layer is linear)."""
    import torch

    inner = model.model
    text_rms = float(inner.language_model.embed_tokens.weight.detach().pow(2).mean().sqrt())
    with torch.no_grad():
        vo = inner.visual(
            batch["pixel_values"].to(inner.visual.dtype), grid_thw=batch["image_grid_thw"], return_dict=True
        )
        feats = [("model.visual.merger", inner.visual.merger, vo.pooler_output)]
        feats += [(f"model.visual.deepstack_merger_list.{i}", m, f) for i, (m, f) in
                  enumerate(zip(inner.visual.deepstack_merger_list, vo.deepstack_features))]
        info: dict[str, Any] = {"text_rms": text_rms, "factors": {}}
        for name, module, f in feats:
            rms = float(f.float().pow(2).mean().sqrt())
            k = factor * text_rms / rms
            module.linear_fc2.weight.mul_(k)
            module.linear_fc2.bias.mul_(k)
            info[name] = rms
            info["factors"][name + ".linear_fc2"] = k
    _log(f"rescaled vision outputs to {factor} x text RMS: {json.dumps(info)}")
    return info


def validation_loss(model: Any, builder: ExampleBuilder, val: list[Example], batch_size: int,
                    answer_only: bool = False) -> float:
    """Mean teacher-forced loss over the reply tokens (``answer_only``: from ``<answer>`` on)."""
    import torch

    if not val:
        return float("nan")
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(val), batch_size):
            chunk = val[k:k + batch_size]
            batch = collate(builder, chunk, 1.0, device=model.device)
            if answer_only:
                for row, e in enumerate(chunk):
                    batch["weights"][row, :e.answer_start] = 0.0
            _, plain = weighted_loss(model, batch)
            total += float(plain) * len(chunk)
            n += len(chunk)
    return total / n


def image_dependence(model: Any, builder: ExampleBuilder, val: list[Example], batch_size: int) -> dict[str, float]:
    """Answer-token loss (``<answer>…</answer>``) with each example's own composite and with the
    composite of the next example (same grid) swapped in. Equal losses mean the answer does not
    depend on the image; on examples whose quoted previous progress is random the gap is how much
    the model reads progress from the image."""
    import dataclasses

    shuffled = [dataclasses.replace(e, patches=o.patches, grid_thw=o.grid_thw)
                for e, o in zip(val, val[1:] + val[:1]) if np.array_equal(e.grid_thw, o.grid_thw)]
    return {name: round(validation_loss(model, builder, exs, batch_size, answer_only=True), 4)
            for name, exs in (("answer_loss", val), ("answer_loss_shuffled_images", shuffled))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="model directory to write (replaced atomically)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=42.0, help="wall-clock cap on the optimisation loop")
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--episodes", type=int, default=420)
    p.add_argument("--passes", type=int, default=1, help="scoring passes (random strides) per episode")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--answer-weight", type=float, default=3.0)
    p.add_argument("--decision-weight", type=float, default=1.0,
                   help="loss weight of the reply's decision words (motion, contact, place, direction, phase): "
                        "the tokens only the images can tell")
    p.add_argument("--comparison-weight", type=float, default=1.0,
                   help="loss weight of the words that say whether the object held or moved is the goal's "
                        "(its name and the '.' or ', not' after it, marked alike in both cases)")
    p.add_argument("--colour-counterfactuals", type=int, default=0, metavar="N",
                   help="add N rows to each batch in which the colour of the object the reply names as held or "
                        "moved is swapped, half the time for the goal's, and only the '.' or ',' after it is "
                        "trained (weight --comparison-weight): comparing the named colour with the goal's")
    p.add_argument("--noise", type=float, default=12.0, help="sigma (percent) of the previous-progress noise")
    p.add_argument("--p-noise", type=float, default=0.6, help="probability a step's previous progress is noised")
    p.add_argument("--p-random", type=float, default=0.0,
                   help="probability a step's previous progress is replaced by a uniform random value")
    p.add_argument("--workers", type=int, default=2, help="processes for data synthesis")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--examples-cache", type=Path, default=None,
                   help="pickle of the synthesized training examples, on-policy ones included, with the "
                        "settings that made them: loaded if present (settings must match), else written")
    p.add_argument("--data-only", action="store_true", help="only synthesize the examples (with --examples-cache)")
    p.add_argument("--init", type=Path, default=None,
                   help="continue from this model directory instead of a fresh random init (a second stage)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch intra-op threads (1 is steadier when other processes load the cores)")
    p.add_argument("--match-vision-scale", type=float, default=0.0,
                   help="if > 0, rescale the vision mergers' last layers so image embeddings have this multiple "
                        "of the text embeddings' RMS (0: leave as built)")
    p.add_argument("--vision-lr-mult", type=float, default=1.0,
                   help="learning-rate multiplier for the vision tower (below 1 keeps a warmed-up tower's features)")
    p.add_argument("--hidden-size", type=int, default=ARCH["hidden_size"])
    p.add_argument("--num-layers", type=int, default=ARCH["num_layers"])
    p.add_argument("--vision-hidden-size", type=int, default=ARCH["vision_hidden_size"])
    p.add_argument("--vision-depth", type=int, default=ARCH["vision_depth"])
    p.add_argument("--max-image-tokens", type=int, default=ARCH["max_image_tokens"])
    p.add_argument("--kind-weights", type=parse_weights, default=None, metavar="KIND=W[,KIND=W]",
                   help="draw task kinds by these relative weights instead of round-robin (e.g. reach=3)")
    p.add_argument("--outcome-weights", type=parse_weights, default=None, metavar="OUTCOME=W[,OUTCOME=W]",
                   help="relative outcome weights of the training and on-policy episodes; outcomes left out keep "
                        "their default weight (e.g. wrong_object=0.48 against the default 0.16; the defaults sum to 1)")
    p.add_argument("--on-policy-episodes", type=int, default=0,
                   help="with --init: also train on this many episodes scored free-running by the initial model, "
                        "each step quoting the progress the model itself answered before")
    p.add_argument("--goal-relabel", type=float, default=0.0, metavar="P",
                   help="add, for this fraction of the ordinary steps, a twin whose goal names another block of the "
                        "scene (same images; reply and progress for that goal): a moved block then only counts if "
                        "the goal names it")
    p.add_argument("--goal-swap-pairs", type=int, default=0, metavar="N",
                   help="add N goal-swap pairs to every batch: a step naming the block held or moved, trained only on "
                        "the '.' or ', not' after the name, beside the same step with only the goal swapped "
                        "(dataset.goal_swap_pair)")
    p.add_argument("--counterfactual-weight", type=float, default=None, metavar="W",
                   help="loss weight of the one token a counterfactual row trains (--colour-counterfactuals, "
                        "--goal-swap-pairs); default: --comparison-weight")
    p.add_argument("--select-episodes", type=int, default=0, metavar="N",
                   help="score the model free-running on N validation episodes (seeds --select-seed on, held out "
                        "from training and evaluation) at candidate steps and save the best (0: the last step's)")
    p.add_argument("--select-every", type=int, default=100, metavar="K", help="candidate steps: every K steps")
    p.add_argument("--select-from", type=int, default=0, metavar="STEP", help="first candidate step")
    p.add_argument("--select-seed", type=int, default=SELECTION_SEED, metavar="SEED",
                   help=f"first validation episode seed (default {SELECTION_SEED}; the model card's held-out sets "
                        "start at 1000, 2000 and 800000)")
    p.add_argument("--weight-average", type=float, default=0.0, metavar="DECAY",
                   help="save the exponential moving average of the weights with this decay (e.g. 0.99: about the "
                        "last 100 steps) instead of the last step's weights; 0: off")
    p.add_argument("--weight-average-from", type=int, default=0, metavar="STEP",
                   help="first step folded into the weight average")
    p.add_argument("--device", default="cpu", help="torch device for training (data synthesis stays on the CPU)")
    args = p.parse_args(argv)
    if not 0.0 <= args.weight_average < 1.0:
        p.error("--weight-average must be in [0, 1)")
    if args.goal_swap_pairs < 0:
        p.error("--goal-swap-pairs must be >= 0")
    if not 0.0 <= args.goal_relabel <= 1.0:
        p.error("--goal-relabel must be in [0, 1]")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    arch = dict(ARCH, hidden_size=args.hidden_size, num_layers=args.num_layers,
                vision_hidden_size=args.vision_hidden_size, vision_depth=args.vision_depth,
                max_image_tokens=args.max_image_tokens)
    train(args.out, seed=args.seed, minutes=args.minutes, steps=args.steps, episodes=args.episodes,
          passes=args.passes, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
          answer_weight=args.answer_weight, noise=args.noise, p_noise=args.p_noise, p_random=args.p_random,
          workers=args.workers, arch=arch, log_every=args.log_every,
          threads=args.threads, init_dir=args.init,
          examples_cache=args.examples_cache, data_only=args.data_only,
          match_vision_scale=args.match_vision_scale, vision_lr_mult=args.vision_lr_mult,
          decision_weight=args.decision_weight, comparison_weight=args.comparison_weight,
          colour_counterfactuals=args.colour_counterfactuals,
          kind_weights=args.kind_weights,
          outcome_weights=args.outcome_weights,
          on_policy_episodes=args.on_policy_episodes, goal_relabel=args.goal_relabel,
          goal_swap_pairs=args.goal_swap_pairs, counterfactual_weight=args.counterfactual_weight,
          select_episodes=args.select_episodes, select_every=args.select_every, select_from=args.select_from,
          select_seed=args.select_seed,
          weight_average=args.weight_average, weight_average_from=args.weight_average_from, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
