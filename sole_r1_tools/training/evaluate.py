"""Evaluate a progress model on held-out synthetic episodes through the production scorer.

    python -m sole_r1_tools.training.evaluate --model sole_r1_ros/data/default_model --episodes 24 --seed 1000

Each episode (60 frames at 15 Hz, two cameras) is scored at 2 Hz of stamp time, exactly as the
demo does: the first frame is 0 % without a model call; every later scored frame goes through
:class:`~sole_r1_ros.core.scorer.ProgressScorer` (production composite, prompt, generation with
greedy decoding, answer parsing, the model's own previous answer fed back). Episodes are
scored side by side in batched forward passes. Metrics:

* ``voc``: value-order correlation, mean Spearman of predicted progress vs time on episodes
  that succeed (``success``, ``occlusion``);
* ``mae``: mean |predicted - true| progress (fractions) over all model calls;
* ``auroc``: AUROC of the final predicted progress, successful vs unsuccessful episodes;
* ``hacking_final``: mean final predicted progress on ``wrong_object`` and ``hover`` episodes;
* ``parse_rate``: fraction of model replies with a usable ``<answer>``.

Diagnostics: ``reasoning_accuracy``, per sentence of the reply (gripper motion, contact, where
the target is, progress direction, what remains), the fraction of model calls whose sentence
equals the one generated from the scene's true state for the same step and the same quoted
previous progress: it shows *what* the model fails to see.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sole_r1_ros.core.answer import parse_answer
from sole_r1_tools.synth.episodes import Episode
from sole_r1_tools.training.dataset import (
    REPLY_SENTENCES,
    EpisodeSpec,
    evaluation_specs,
    make_episode,
    reasoning_text,
    scored_indices,
)
from sole_r1_tools.training.loading import load_model
from sole_r1_tools.training.metrics import SUCCESS_OUTCOMES, TARGETS, _mae, _meets, _split, _voc, trace_metrics


def _backend(model: str | Any, device: str) -> Any:
    """``model`` itself if it is a loaded backend, else the model directory loaded in float32."""
    if hasattr(model, "generate"):
        return model
    return load_model(model, device=device)


def evaluate(
    model: str | Any,
    *,
    episodes: int = 24,
    seed: int = 1000,
    specs: Sequence[EpisodeSpec] | None = None,
    rendered: Sequence[Episode] | None = None,
    n_frames: int = 60,
    fps: float = 15.0,
    rate_hz: float = 2.0,
    max_new_tokens: int = 96,
    batch_size: int = 8,
    verbose: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score held-out episodes with ``model`` (a directory or a loaded ``TransformersBackend``)
    through ``ProgressScorer`` (greedy) and return the metrics and per-episode traces.
    ``rendered``: the episodes of ``specs``, already rendered (``make_episode``), in their order."""
    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_ros.core.scorer import ProgressScorer
    from sole_r1_ros.settings.generation import GenerationSettings

    backend = _backend(model, device)
    protocol = load_protocol()
    scorer = ProgressScorer(backend, protocol, generation=GenerationSettings.greedy(max_new_tokens))
    specs = list(specs) if specs is not None else evaluation_specs(episodes, seed)
    stride = fps / rate_hz
    t0 = time.perf_counter()
    if rendered is None:
        rendered = [make_episode(s, n_frames=n_frames, fps=fps) for s in specs]
    elif len(rendered) != len(specs):
        raise ValueError(f"{len(rendered)} rendered episodes for {len(specs)} specs")
    render_s = time.perf_counter() - t0

    traces: list[dict[str, Any]] = []
    calls = 0
    t1 = time.perf_counter()
    for start in range(0, len(rendered), batch_size):
        group = list(range(start, min(start + batch_size, len(rendered))))
        states = {}
        for k in group:
            ep, spec = rendered[k], specs[k]
            states[k] = {
                "episode": scorer.new_episode(ep.goal, ep.roles), "idx": scored_indices(ep.n_frames, stride),
                "stamps": ep.stamps_ns(), "pred": [], "true": [], "status": [], "replies": [], "quoted": [],
            }
        n_steps = max(len(s["idx"]) for s in states.values())
        for step in range(n_steps):
            items, keys = [], []
            for k in group:
                st = states[k]
                if step < len(st["idx"]):
                    i = st["idx"][step]
                    items.append((st["episode"], st["stamps"][i], rendered[k].frames[i]))
                    keys.append(k)
            for k, est in zip(keys, scorer.score_batch(items)):
                st = states[k]
                i = st["idx"][step]
                st["pred"].append(est.progress)
                st["true"].append(float(rendered[k].progress[i]))
                st["status"].append(est.status)
                if est.status != "first_frame":
                    st["replies"].append(est.raw_text)
                    st["quoted"].append(est.prev_percent)
                    calls += 1
        for k in group:
            st, spec = states[k], specs[k]
            trace = {"task_kind": spec.task_kind, "outcome": spec.outcome, "seed": spec.seed,
                     "goal": rendered[k].goal, "frames": st["idx"], "pred": st["pred"], "true": st["true"],
                     "status": st["status"], "replies": st["replies"], "quoted": st["quoted"]}
            traces.append(trace)
            if verbose:
                print(f"{spec.task_kind:5s} {spec.outcome:18s} seed {spec.seed}: pred "
                      f"{[round(p, 2) for p in st['pred']]} true {[round(t, 2) for t in st['true']]}\n    last reply: "
                      f"{(st['replies'] or [''])[-1]!r}", flush=True)
    score_s = time.perf_counter() - t1

    succ, fail, hack = _split(traces)
    metrics = trace_metrics(traces)
    by_outcome = {}
    for outcome in sorted({t["outcome"] for t in traces}):
        ts = [t for t in traces if t["outcome"] == outcome]
        by_outcome[outcome] = {
            "episodes": len(ts),
            "final_pred": float(np.mean([t["pred"][-1] for t in ts])),
            "final_true": float(np.mean([t["true"][-1] for t in ts])),
            "mae": _mae(ts),
        }
    by_task = {}
    for kind in sorted({t["task_kind"] for t in traces}):
        ts = [t for t in traces if t["task_kind"] == kind]
        by_task[kind] = {"episodes": len(ts), "voc": _voc([t for t in ts if t["outcome"] in SUCCESS_OUTCOMES]),
                         "mae": _mae(ts)}
    return {
        **metrics,
        "targets_met": {k: _meets(metrics[k], *TARGETS[k]) for k in TARGETS},
        "episodes": len(traces), "model_calls": calls, "success_episodes": len(succ),
        "failure_episodes": len(fail), "hacking_episodes": len(hack), "by_outcome": by_outcome, "by_task": by_task,
        "reasoning_accuracy": reasoning_accuracy(rendered, traces),
        "render_seconds": round(render_s, 1), "score_seconds": round(score_s, 1), "traces": traces,
    }


_SENTENCE_END = re.compile(r"(?<=\.) ")


def reasoning_accuracy(episodes: Sequence[Episode], traces: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per reply sentence, the fraction of model calls that state what the true state says
    (``dataset.reasoning_text`` for the same step and quoted previous progress)."""
    hits: dict[str, list[bool]] = {name: [] for name in REPLY_SENTENCES}
    for ep, trace in zip(episodes, traces):
        frames, calls = trace["frames"], [k for k, s in enumerate(trace["status"]) if s != "first_frame"]
        for reply, quoted, k in zip(trace["replies"], trace["quoted"], calls):
            said = _SENTENCE_END.split(parse_answer(reply).reasoning)
            truth = _SENTENCE_END.split(reasoning_text(ep, frames[k - 1], frames[k], int(quoted)))
            for j, name in enumerate(REPLY_SENTENCES):
                hits[name].append(j < len(said) and j < len(truth) and said[j] == truth[j])
    return {name: float(np.mean(v)) if v else float("nan") for name, v in hits.items()}


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of the headline metrics against the targets."""
    names = {"voc": "VOC (Spearman, successful episodes)", "mae": "MAE vs true progress",
             "auroc": "AUROC final progress, success vs not", "hacking_final": "hacking episodes' mean final progress",
             "parse_rate": "parse success rate"}
    rows = ["| metric | value | target | met |", "|---|---|---|---|"]
    for key, (op, target) in TARGETS.items():
        rows.append(f"| {names[key]} | {result[key]:.3f} | {op} {target:g} | "
                    f"{'yes' if result['targets_met'][key] else 'no'} |")
    rows.append("")
    rows.append("| outcome | episodes | mean final predicted | mean final true | MAE |")
    rows.append("|---|---|---|---|---|")
    for outcome, d in result["by_outcome"].items():
        rows.append(f"| {outcome} | {d['episodes']} | {d['final_pred']:.2f} | {d['final_true']:.2f} | {d['mae']:.3f} |")
    if "by_task" in result:
        rows.append("")
        rows.append("| task kind | episodes | VOC (successful) | MAE |")
        rows.append("|---|---|---|---|")
        for kind, d in result["by_task"].items():
            rows.append(f"| {kind} | {d['episodes']} | {d['voc']:.3f} | {d['mae']:.3f} |")
    if "reasoning_accuracy" in result:
        rows.append("")
        rows.append("| reply sentence | " + " | ".join(REPLY_SENTENCES) + " |")
        rows.append("|---|" + "---|" * len(REPLY_SENTENCES))
        rows.append("| matches the true state | " + " | ".join(
            f"{result['reasoning_accuracy'][n]:.2f}" for n in REPLY_SENTENCES) + " |")
    return "\n".join(rows)


def true_quote_error(model: str | Any, *, episodes: int = 24, seed: int = 1000,
                     specs: Sequence[EpisodeSpec] | None = None, n_frames: int = 60, fps: float = 15.0,
                     rate_hz: float = 2.0, max_new_tokens: int = 96, device: str = "cpu") -> dict[str, Any]:
    """Mean |answer - true progress| per task kind (fractions) when every call quotes the *true*
    previous progress instead of the model's own last answer: separates misreading the images
    from the free-running loop's drift. Same composites and prompt as the scorer, greedy; an
    unparsable answer counts as an error of 1."""
    from sole_r1_ros.core.composite import compose
    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_ros.settings.generation import GenerationSettings
    from sole_r1_tools.training.dataset import percent_at

    backend = _backend(model, device)
    protocol = load_protocol()
    settings = GenerationSettings.greedy(max_new_tokens)
    errors: dict[str, list[float]] = {}
    for spec in (specs if specs is not None else evaluation_specs(episodes, seed)):
        ep = make_episode(spec, n_frames=n_frames, fps=fps)
        idx = scored_indices(ep.n_frames, fps / rate_hz)
        pairs = list(zip(idx[:-1], idx[1:]))
        conversations = [protocol.templates.messages(ep.goal, percent_at(ep, a), n_views=len(ep.roles))
                         for a, _ in pairs]
        images = [compose(ep.frames[0], ep.frames[a], ep.frames[c], ep.roles, protocol.layout) for a, c in pairs]
        for (_, c), reply in zip(pairs, backend.generate(conversations, images, settings)):
            percent = parse_answer(reply.text).percent
            error = 1.0 if percent is None else abs(percent / 100.0 - float(ep.progress[c]))
            errors.setdefault(spec.task_kind, []).append(error)
    by_task = {kind: round(float(np.mean(e)), 4) for kind, e in sorted(errors.items())}
    return {"mae": round(float(np.mean([x for e in errors.values() for x in e])), 4), "by_task": by_task,
            "model_calls": sum(len(e) for e in errors.values())}


def comparison_probe(model_dir: str | Path, episodes: int = 48, seed: int = 2000,
                     batch_size: int = 8) -> dict[str, float]:
    """Does the model compare the colour it names with the goal's? Teacher-forced, on held-out
    steps (true previous progress, push / place / stack) whose reply names the object held or
    moved: the probability of "," (", not the …") against "." right after the name, on steps
    where it is another block and where it is the target, each once with the true text, once
    with the named colour swapped (:func:`~sole_r1_tools.training.dataset.colour_counterfactual`:
    the goal's colour on the other-block steps, another block's on the target steps), and once
    with the *goal* swapped instead (``*_goal_swapped``,
    :func:`~sole_r1_tools.training.dataset.goal_swap_pair`: the goal names the held or moved
    block on the other-block steps, another block on the target steps; the images, the quoted
    progress and the reply's words are the same). A model that compares follows the colour swap;
    one that binds the goal's colour to the block in the image follows the goal swap; one that
    reads other cues (the reply's motion words before the name) follows neither."""
    import torch

    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_tools.training.dataset import (
        ExampleBuilder,
        collate,
        colour_counterfactual,
        goal_swap_pair,
        percent_at,
        scored_indices,
    )

    backend = load_model(Path(model_dir))
    builder = ExampleBuilder(backend, load_protocol())
    model = backend.model.eval()
    rows: list[tuple[str, Any]] = []
    for spec in evaluation_specs(episodes, seed):
        if spec.task_kind == "reach":
            continue
        ep = make_episode(spec)
        frames = scored_indices(ep.n_frames, 7.5)
        for prev, cur in zip(frames[:-1], frames[1:]):
            ex = builder.build(ep, prev, cur, percent_at(ep, prev))
            if ex.comparison_slots is None:
                continue
            _, stop, goal = ex.comparison_slots
            other = int(ex.input_ids[stop]) == builder.comma_id
            swap = goal if other else next(c for c in builder.colour_ids.values() if c != goal)
            kind = "other" if other else "target"
            rows += [(kind, ex), (f"{kind}_swapped", colour_counterfactual(ex, swap, builder.comma_id, builder.dot_id))]
            pair = goal_swap_pair(builder, ep, ex)
            if pair is not None:
                rows.append((f"{kind}_goal_swapped", pair.twin))
    p_not: dict[str, list[float]] = {}
    with torch.no_grad():
        for k in range(0, len(rows), batch_size):
            chunk = rows[k:k + batch_size]
            batch = collate(builder, [e for _, e in chunk], device=model.device)
            batch.pop("weights")
            logits = model(**batch).logits.float()
            for row, (kind, e) in enumerate(chunk):
                probs = torch.softmax(logits[row, e.comparison_slots[1] - 1], -1)
                comma, dot = float(probs[builder.comma_id]), float(probs[builder.dot_id])
                p_not.setdefault(kind, []).append(comma / max(comma + dot, 1e-12))
    result = {f"{kind}_steps": len(v) for kind, v in p_not.items() if not kind.endswith("_swapped")}
    result.update({f"{kind}_steps": len(v) for kind, v in p_not.items() if kind.endswith("_goal_swapped")})
    result.update({f"p_not_{kind}": round(float(np.mean(v)), 4) for kind, v in sorted(p_not.items())})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--seed", type=int, default=1000, help="first held-out episode seed")
    p.add_argument("--batch-size", type=int, default=8, help="episodes scored side by side")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda, auto)")
    p.add_argument("--json", default="", help="also write the full result (with traces) to this file")
    p.add_argument("--verbose", action="store_true", help="print each episode's predicted and true progress")
    p.add_argument("--true-quotes", action="store_true",
                   help="also report the MAE per task kind when each call quotes the true previous progress")
    p.add_argument("--comparison-probe", action="store_true",
                   help="also report, teacher-forced on the same episodes, whether the model's ', not' follows the "
                        "colour it names, the block the goal names, or other cues (comparison_probe)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="also print each metric's 95%% interval from N resamples of the episodes (training.bootstrap)")
    args = p.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    result = evaluate(args.model, episodes=args.episodes, seed=args.seed, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, verbose=args.verbose, device=args.device)
    print(format_table(result))
    print(f"\n{result['episodes']} episodes ({result['success_episodes']} successful, {result['hacking_episodes']} "
          f"hacking), {result['model_calls']} model calls, scoring {result['score_seconds']} s")
    if args.bootstrap > 0:
        from sole_r1_tools.training.bootstrap import metric_intervals

        result["intervals"] = metric_intervals(result["traces"], resamples=args.bootstrap)
        print("95% intervals over the episodes (bootstrap within each outcome): " + ", ".join(
            f"{m} [{d['low']:.3f}, {d['high']:.3f}]" for m, d in result["intervals"].items()))
    if args.true_quotes:
        result["true_quotes"] = true_quote_error(args.model, episodes=args.episodes, seed=args.seed,
                                                 max_new_tokens=args.max_new_tokens, device=args.device)
        print(f"MAE with the true previous progress quoted: {json.dumps(result['true_quotes'])}")
    if args.comparison_probe:
        result["comparison_probe"] = comparison_probe(args.model, args.episodes, args.seed)
        print(f"comparison probe (P(', not') after the named object, teacher-forced): "
              f"{json.dumps(result['comparison_probe'])}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
