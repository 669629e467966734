"""The default-model recipe: examples in the production protocol, a short SFT run, evaluation."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.core.answer import parse_answer
from sole_r1_ros.core.composite import compose
from sole_r1_ros.core.protocol import load_protocol
from sole_r1_ros.settings.groups import ModelSettings
from sole_r1_tools.synth.episodes import generate_episode, relabel_candidates, relabel_goal
from sole_r1_tools.training import dataset as D
from sole_r1_tools.training.evaluate import (
    comparison_probe,
    evaluate,
    format_table,
    reasoning_accuracy,
    true_quote_error,
)
from sole_r1_tools.training.metrics import TARGETS, auroc, spearman
from sole_r1_tools.training.train import (
    counterfactual_rows,
    image_dependence,
    image_token_budget,
    inherited_vision_scale,
    on_policy_examples,
    save_model,
    train,
    weighted_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def episode() -> D.Episode:
    return generate_episode("push", "success", seed=3, n_frames=24, fps=15.0, size=(160, 120))


def test_examples_use_the_production_prompt_and_composite(builder: D.ExampleBuilder, backend: TransformersBackend,
                                                          episode: D.Episode) -> None:
    protocol = load_protocol()
    prev_idx, cur_idx, prev = 6, 14, 20
    prompt, image = builder.prompt_and_image(episode, prev_idx, cur_idx, prev)
    expected_prompt = backend.prompt_text(protocol.templates.messages(episode.goal, prev, n_views=2))
    assert prompt == expected_prompt
    assert f"previous timestep is {prev}%" in prompt
    expected = compose(episode.frames[0], episode.frames[prev_idx], episode.frames[cur_idx], episode.roles,
                       protocol.layout)
    assert image.size == expected.size and np.array_equal(np.asarray(image), np.asarray(expected))

    ex = builder.build(episode, prev_idx, cur_idx, prev)
    inputs = backend.processor(text=[prompt], images=[image], return_tensors="np")
    n = inputs["input_ids"].shape[1]
    assert ex.reply_start == n and np.array_equal(ex.input_ids[:n], inputs["input_ids"][0])
    assert np.abs(builder.pixel_tensor([ex.patches]).numpy() - inputs["pixel_values"]).max() < 1e-5
    # The prompt + reply tokenize exactly as one string would.
    full = backend.processor(text=[prompt + ex.reply + "<|im_end|>"], images=[image], return_tensors="np")
    assert np.array_equal(full["input_ids"][0], ex.input_ids)

    parsed = parse_answer(ex.reply)
    assert parsed.status.value == "ok"
    assert parsed.percent == ex.percent == round(100 * episode.progress[cur_idx])
    assert f"from {prev}%" in parsed.reasoning or f"near {prev}%" in parsed.reasoning


@pytest.mark.parametrize("outcome", ["success", "wrong_object", "hover", "partial_regression", "failure"])
def test_reasoning_is_grounded_and_parses(outcome: str) -> None:
    ep = generate_episode("place", outcome, seed=5, n_frames=30, size=(160, 120))
    idx = D.scored_indices(ep.n_frames, 7.5)
    assert idx[0] == 0 and idx == sorted(set(idx))
    for prev, cur in zip(idx[:-1], idx[1:]):
        reply = D.answer_text(ep, prev, cur, D.percent_at(ep, prev))
        parsed = parse_answer(reply)
        assert parsed.percent == D.percent_at(ep, cur)
        assert ep.meta["target"] in parsed.reasoning
        assert len(reply.split()) < 60
        said = dict(zip(D.REPLY_SENTENCES, re.split(r"(?<=\.) ", parsed.reasoning)))
        assert re.fullmatch(r"The \w+ block is (far from|halfway to|near|in) the \w+ zone\.", said["where"])
        assert re.fullmatch(
            r"The gripper (barely moved|moved (toward|away from|around) the \w+ block)\.", said["motion"]
        )
        assert re.fullmatch(r"Progress (went up from|went down from|stayed near) \d+%\.", said["direction"])
    if outcome == "wrong_object":
        assert any("not the" in D.reasoning_text(ep, p, c, 0) for p, c in zip(idx[:-1], idx[1:]))


def test_decision_words_are_marked_and_weighted(builder: D.ExampleBuilder) -> None:
    ep = generate_episode("stack", "wrong_object", seed=5, n_frames=30, size=(160, 120))
    tok = builder.tokenizer
    seen: set[str] = set()
    frames = D.scored_indices(ep.n_frames, 5.0)
    for prev, cur in zip(frames[:-1], frames[1:]):
        marked = D.marked_answer(ep, prev, cur, 50)
        plain, spans, _ = D.strip_marks(marked)
        assert plain == D.answer_text(ep, prev, cur, 50) and not set("\x01\x02\x03\x04") & set(plain) and spans
        words = [plain[a:b] for a, b in spans]
        seen.update(words)
        ex = builder.build(ep, prev, cur, 50)
        assert ex.reply == plain
        decoded = tok.decode([int(ex.input_ids[p]) for p in ex.decision_positions])
        # Every marked word is covered by its tokens, and only reply tokens are marked.
        assert all(w.split()[-1] in decoded for w in words)
        assert ex.decision_positions.min() >= ex.reply_start and ex.decision_positions.max() < ex.answer_start
        batch = D.collate(builder, [ex], answer_weight=3.0, decision_weight=5.0)
        w = batch["weights"][0]
        assert set(np.flatnonzero(w.numpy() == 5.0)) == set(ex.decision_positions.tolist())
        assert float(w[ex.answer_start]) == 3.0 and float(w[ex.reply_start - 1]) == 0.0
    # Progress direction and the phase are decisions on every step; wrong-object steps name the other object.
    assert {"went up", "went down", "stayed"} & seen and any(w.startswith("Next:") or w == "The task" for w in seen)
    target = D._object_name(ep, ep.meta["task"].target)
    assert any(w.endswith("block") and w != target for w in seen if w != "The task")


def test_comparison_with_the_goal_object_is_marked_alike_whichever_object_is_held(builder: D.ExampleBuilder) -> None:
    held: dict[str, set[str]] = {"success": set(), "wrong_object": set()}
    for outcome in held:
        ep = generate_episode("stack", outcome, seed=5, n_frames=30, size=(160, 120))
        target = D._object_name(ep, ep.meta["task"].target)
        frames = D.scored_indices(ep.n_frames, 5.0)
        for prev, cur in zip(frames[:-1], frames[1:]):
            plain, _, spans = D.strip_marks(D.marked_answer(ep, prev, cur, 50))
            if ep.meta["holding"][cur] < 0:
                continue
            words = "".join(plain[a:b] for a, b in spans)
            held[outcome].add(words)
            ex = builder.build(ep, prev, cur, 50)
            decoded = builder.tokenizer.decode([int(ex.input_ids[p]) for p in ex.comparison_positions])
            assert decoded.replace(" ", "") == words.replace(" ", "")
            batch = D.collate(builder, [ex], answer_weight=3.0, decision_weight=5.0, comparison_weight=4.0)
            w = batch["weights"][0].numpy()
            assert set(np.flatnonzero(w == 4.0)) == set(ex.comparison_positions.tolist())
            assert set(np.flatnonzero(w == 5.0)) == (
                set(ex.decision_positions.tolist()) - set(ex.comparison_positions.tolist())
            )
    # Holding the target ends the name with "."; holding another block goes on with ", not".
    assert held["success"] == {f"{target}."}
    assert held["wrong_object"] and all(
        w.endswith("block, not") and not w.startswith(target) for w in held["wrong_object"]
    )


def test_colour_counterfactuals_train_only_the_token_after_the_named_colour(builder: D.ExampleBuilder) -> None:
    tok = builder.tokenizer
    named: list[D.Example] = []
    for outcome in ("success", "wrong_object"):
        ep = generate_episode("stack", outcome, seed=5, n_frames=30, size=(160, 120))
        goal = D._object_name(ep, ep.meta["task"].target).split()[0]
        frames = D.scored_indices(ep.n_frames, 5.0)
        for prev, cur in zip(frames[:-1], frames[1:]):
            ex = builder.build(ep, prev, cur, 50)
            if ex.comparison_slots is None:
                continue
            colour_pos, stop_pos, goal_id = ex.comparison_slots
            assert tok.decode([goal_id]).strip() == goal
            assert int(ex.input_ids[stop_pos]) == (builder.comma_id if ", not the" in ex.reply else builder.dot_id)
            assert colour_pos < stop_pos < ex.answer_start
            named.append(ex)
    assert {int(e.input_ids[e.comparison_slots[1]]) for e in named} == {builder.comma_id, builder.dot_id}
    ex = named[-1]
    colour_pos, stop_pos, goal_id = ex.comparison_slots
    other = next(c for c in builder.colour_ids.values() if c != goal_id)
    same, differs = (D.colour_counterfactual(ex, c, builder.comma_id, builder.dot_id) for c in (goal_id, other))
    assert int(same.input_ids[stop_pos]) == builder.dot_id and int(differs.input_ids[stop_pos]) == builder.comma_id
    assert int(differs.input_ids[colour_pos]) == other and len(differs.input_ids) == stop_pos + 1
    assert np.array_equal(differs.input_ids[:colour_pos], ex.input_ids[:colour_pos]) and differs.patches is ex.patches
    batch = D.collate(builder, [ex, differs], answer_weight=3.0, decision_weight=5.0, comparison_weight=4.0)
    assert np.flatnonzero(batch["weights"][1].numpy()).tolist() == [stop_pos]
    assert float(batch["weights"][1, stop_pos]) == 4.0 and float(batch["weights"][0, ex.answer_start]) == 3.0
    own = D.collate(builder, [ex, differs], comparison_weight=4.0, counterfactual_weight=50.0)["weights"]
    assert float(own[1, stop_pos]) == 50.0 and float(own[0, ex.comparison_positions[0]]) == 4.0
    rows = counterfactual_rows(builder, named, 400, np.random.default_rng(0))
    names_goal = np.mean([int(r.input_ids[-1]) == builder.dot_id for r in rows])
    assert 0.4 < names_goal < 0.6 and all(r.loss_positions.tolist() == [len(r.input_ids) - 1] for r in rows)
    plain = dataclasses.replace(ex, comparison_slots=None)
    with pytest.raises(ValueError, match="names no"):
        D.colour_counterfactual(plain, other, builder.comma_id, builder.dot_id)


def test_goal_relabelled_twins_share_the_image_and_answer_for_their_own_goal(builder: D.ExampleBuilder) -> None:
    ep = generate_episode("place", "success", seed=5, n_frames=30, size=(160, 120))
    plain = list(D.episode_examples(builder, ep, np.random.default_rng(1), noise=0.0, stride_range=(4.0, 5.0)))
    again = list(D.episode_examples(builder, ep, np.random.default_rng(1), noise=0.0, relabel=0.0,
                                    stride_range=(4.0, 5.0)))
    assert [e.reply for e in again] == [e.reply for e in plain]  # relabel=0 draws nothing extra
    both = list(D.episode_examples(builder, ep, np.random.default_rng(1), noise=0.0, relabel=1.0,
                                     stride_range=(4.0, 5.0)))
    originals, twins = both[0::2], both[1::2]
    assert len(twins) == len(originals) > 2
    other = next(c for c in D.BLOCK_COLORS if f"{c} block" in twins[0].reply and c != ep.meta["target"])
    tok = builder.tokenizer
    for e, t in zip(originals, twins):
        assert t.patches is e.patches and np.array_equal(t.grid_thw, e.grid_thw)
        prompt, twin_prompt = tok.decode(e.input_ids[:e.reply_start]), tok.decode(t.input_ids[:t.reply_start])
        assert f"the {ep.meta['target']} block" in prompt and f"the {other} block" in twin_prompt
        # only the goal's colour and the quoted previous progress (that goal's own) differ
        assert re.sub(r"\d+", "N", prompt.replace(f"the {ep.meta['target']} block", f"the {other} block")) == re.sub(
            r"\d+", "N", twin_prompt
        )
        assert parse_answer(t.reply).percent == t.percent
    # Same images, two goals: the carried block completes the task, the other one never moved.
    assert originals[-1].percent == 100 and twins[-1].percent <= 30
    assert any(f"holds the {ep.meta['target']} block, not the {other} block" in t.reply for t in twins)
    # Goal-swap pairs follow the steps that name the block held or moved.
    rows = list(D.episode_examples(builder, ep, np.random.default_rng(1), noise=0.0, goal_swaps=True,
                                   stride_range=(4.0, 5.0)))
    pairs = [e for e in rows if e.twin is not None]
    assert [e.reply for e in rows if e.twin is None] == [e.reply for e in plain]
    assert pairs and all(e.comparison_slots is not None for e in pairs)
    for pair in pairs:
        stop = pair.comparison_slots[1]
        assert pair.loss_positions.tolist() == [stop] == pair.twin.loss_positions.tolist()
        assert len(pair.input_ids) == len(pair.twin.input_ids) == stop + 1 and pair.twin.patches is pair.patches
        assert {int(pair.input_ids[stop]), int(pair.twin.input_ids[stop])} == {builder.comma_id, builder.dot_id}


def test_goal_counterfactual_changes_only_the_goal_and_the_token_after_the_name(builder: D.ExampleBuilder) -> None:
    def held_other(seed: int) -> tuple[D.Episode, int, int, D.Example, int] | None:
        """A step holding or moving another block whose colour is one token in this tokenizer."""
        ep = generate_episode("stack", "wrong_object", seed=seed, n_frames=30, size=(160, 120))
        frames = D.scored_indices(ep.n_frames, 5.0)
        for prev, cur in zip(frames[:-1], frames[1:]):
            ex = builder.build(ep, prev, cur, 40)
            if ex.comparison_slots is not None and ", not the" in ex.reply:
                named = builder.tokenizer.decode([int(ex.input_ids[ex.comparison_slots[0]])]).strip()
                moved = [i for i in relabel_candidates(ep) if ep.meta["objects"][i]["color"] == named]
                if moved and named in builder.colour_ids:
                    return ep, prev, cur, ex, moved[0]
        return None

    ep, prev, cur, ex, moved = next(found for found in map(held_other, range(5, 25)) if found)
    colour_pos, stop_pos, goal_id = ex.comparison_slots
    named = builder.tokenizer.decode([int(ex.input_ids[colour_pos])]).strip()
    twin = D.goal_counterfactual(builder, ex, relabel_goal(ep, moved))
    new_id = builder.colour_ids[named]
    assert twin.comparison_slots == (colour_pos, stop_pos, new_id) and twin.patches is ex.patches
    assert int(twin.input_ids[stop_pos]) == builder.dot_id  # the moved block is now the goal's
    changed = np.flatnonzero(twin.input_ids != ex.input_ids[:stop_pos + 1])
    assert all(int(ex.input_ids[q]) in (goal_id, builder.comma_id) for q in changed)
    assert all(int(twin.input_ids[q]) in (new_id, builder.dot_id) for q in changed)
    assert (changed < ex.reply_start).any() and (changed > ex.reply_start).any()  # the goal, and its mentions
    assert twin.loss_positions.tolist() == [stop_pos] and twin.prev_percent == ex.prev_percent
    # The twin's prompt, tokenized without the image, is what the processor makes of it with the image.
    full = builder.build(relabel_goal(ep, moved), prev, cur, ex.prev_percent)
    assert twin.input_ids[:ex.reply_start].tolist() == full.input_ids[:full.reply_start].tolist()
    unnamed = [i for i in relabel_candidates(ep) if i != moved]
    if unnamed:
        other = relabel_goal(ep, unnamed[0])
        if other.meta["target"] in builder.colour_ids:
            assert int(D.goal_counterfactual(builder, ex, other).input_ids[stop_pos]) == builder.comma_id
        else:
            with pytest.raises(ValueError, match="not one token"):
                D.goal_counterfactual(builder, ex, other)


def test_specs_are_seeded_and_held_out() -> None:
    a, b = D.training_specs(40, 0), D.training_specs(40, 0)
    assert a == b and {s.outcome for s in a} >= {"success", "wrong_object", "hover", "failure"}
    held = D.evaluation_specs(24, 1000)
    assert {s.seed for s in held}.isdisjoint({s.seed for s in D.training_specs(600, 0)})
    assert {s.outcome for s in held} == set(D.OUTCOMES)


def test_kind_weights_oversample_a_task_kind_and_keep_outcomes_and_seeds() -> None:
    plain = D.training_specs(400, 0)
    weighted = D.training_specs(400, 0, kind_weights={"reach": 3})
    counts = {k: sum(s.task_kind == k for s in weighted) for k in D.TASK_KINDS}
    assert 170 <= counts["reach"] <= 230 and all(40 <= counts[k] <= 95 for k in D.TASK_KINDS if k != "reach")
    assert [s.outcome for s in weighted] == [s.outcome for s in plain]
    assert [s.seed for s in weighted] == [s.seed for s in plain]
    assert D.training_specs(40, 0, kind_weights={"reach": 3}) == D.training_specs(40, 0, kind_weights={"reach": 3})
    only_push = D.training_specs(20, 0, kind_weights={"reach": 0, "place": 0, "stack": 0})
    assert {s.task_kind for s in only_push} == {"push"}
    with pytest.raises(ValueError, match="unknown task kinds"):
        D.training_specs(4, 0, kind_weights={"fly": 1})
    with pytest.raises(ValueError, match="not all 0"):
        D.training_specs(4, 0, kind_weights=dict.fromkeys(D.TASK_KINDS, 0.0))
    assert D.parse_weights("reach=3, push=0.5") == {"reach": 3.0, "push": 0.5}
    for bad in ("reach", "reach=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            D.parse_weights(bad)


def test_outcome_weights_oversample_an_outcome_and_keep_kinds_and_seeds() -> None:
    plain = D.training_specs(400, 0)
    weighted = D.training_specs(400, 0, {"wrong_object": 0.48})
    counts = {o: sum(s.outcome == o for s in weighted) for o in D.OUTCOMES}
    # wrong_object 0.48 / 1.32 of the mixture (36 %) instead of 16 %; the others keep their ratios
    assert 115 <= counts["wrong_object"] <= 175
    assert sum(s.outcome == "wrong_object" for s in plain) <= 85
    assert [s.task_kind for s in weighted] == [s.task_kind for s in plain]
    assert [s.seed for s in weighted] == [s.seed for s in plain]
    assert D.training_specs(400, 0, dict(D.DEFAULT_OUTCOME_WEIGHTS)) == plain
    only_hover = D.training_specs(12, 0, {o: 0.0 for o in D.DEFAULT_OUTCOME_WEIGHTS if o != "hover"})
    assert {s.outcome for s in only_hover} == {"hover"}
    with pytest.raises(ValueError, match="unknown outcomes"):
        D.training_specs(4, 0, {"crash": 1})
    with pytest.raises(ValueError, match="not all 0"):
        D.training_specs(4, 0, dict.fromkeys(D.DEFAULT_OUTCOME_WEIGHTS, 0.0))
    with pytest.raises(ValueError, match=">= 0"):
        D.training_specs(4, 0, {"hover": -1})


def test_a_continued_stage_inherits_the_vision_scale_factors(tmp_path: Path) -> None:
    factors = {"model.visual.merger.linear_fc2": 0.002}
    (tmp_path / "training_summary.json").write_text(json.dumps(
        {"vision_scale_factors": {}, "previous_stage": {"vision_scale_factors": factors}}))
    assert inherited_vision_scale(tmp_path) == factors
    (tmp_path / "training_summary.json").write_text(json.dumps({"steps": 3}))
    assert inherited_vision_scale(tmp_path) == {}
    assert inherited_vision_scale(tmp_path / "missing") == {}


def test_weighted_loss_drops_the_padding_mask_only_where_padding_is_on_the_right(
        builder: D.ExampleBuilder, backend: TransformersBackend, episode: D.Episode) -> None:
    import torch
    import torch.nn.functional as F

    examples = list(D.episode_examples(builder, episode, np.random.default_rng(1), stride_range=(5.0, 6.0)))[:3]
    right = D.collate(builder, examples, 3.0)
    assert not bool(right["attention_mask"].all())  # some rows are padded
    left = {k: v.clone() for k, v in right.items()}
    for row, n in enumerate(right["attention_mask"].sum(1).tolist()):
        for key in ("input_ids", "attention_mask", "mm_token_type_ids", "weights"):
            left[key][row] = torch.roll(right[key][row], int(left[key].shape[1] - n))

    def token_losses(batch: dict) -> torch.Tensor:
        """Cross-entropy of every loss-carrying token in order, with the batch's own padding mask."""
        b = dict(batch)
        w = b.pop("weights")[:, 1:]
        ce = F.cross_entropy(backend.model(**b).logits[:, :-1].float().transpose(1, 2), b["input_ids"][:, 1:],
                             reduction="none")
        return ce[w > 0]

    def loss(ce: torch.Tensor, batch: dict) -> float:
        w = batch["weights"][:, 1:]
        return float((ce * w[w > 0]).sum() / w.sum())

    backend.model.eval()
    with torch.no_grad():
        reference = token_losses(right)
        assert torch.allclose(token_losses(left), reference, atol=1e-4)
        for batch in (right, left):
            assert float(weighted_loss(backend.model, dict(batch))[0]) == pytest.approx(
                loss(reference, right), rel=1e-5
            )
        masked = float(weighted_loss(backend.model, dict(right), causal_fast_path=False)[0])
        assert masked == pytest.approx(loss(reference, right), rel=1e-5)
        # the check can fail: dropping the mask of a left-padded batch lets real tokens see the pads
        unmasked = token_losses(dict(left, attention_mask=torch.ones_like(left["attention_mask"])))
        assert float((unmasked - reference).abs().max()) > 1e-3  # 1e-2 here; masked ones agree to 1e-6


def test_two_sft_steps_reduce_loss_and_save_a_loadable_model(builder: D.ExampleBuilder, backend: TransformersBackend,
                                                            episode: D.Episode, tmp_path: Path) -> None:
    import torch

    rng = np.random.default_rng(0)
    examples = list(D.episode_examples(builder, episode, rng, stride_range=(5.0, 6.0)))[:4]
    assert len(examples) == 4
    model = backend.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(3):
            loss, plain = weighted_loss(model, D.collate(builder, examples, 3.0))
            losses.append(float(plain))
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert losses[-1] < losses[0]
        out = save_model(backend, tmp_path / "model", {"training_summary.json": {"steps": 2}})
    finally:
        model.load_state_dict(state)
        model.eval()
    loaded = TransformersBackend(ModelSettings(path=str(out), device="cpu"))
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 2
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".*.tmp"))
    assert loaded.processor.tokenizer.padding_side == "left"
    trained = dict(loaded.model.named_parameters())
    assert any(not torch.equal(trained[n], p) for n, p in model.named_parameters() if n in trained)


def test_train_cli_recipe_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    summary = train(tmp_path / "m", steps=2, episodes=1, batch_size=2, warmup=1, workers=1, val_episodes=1,
                    init_dir=tiny_model_dir, threads=1, checkpoint_every=0, match_vision_scale=1.0, goal_swap_pairs=1)
    assert summary["steps"] == 2 and summary["train_examples"] > 0
    assert summary["goal_swap_pairs"] == 1 and summary["goal_swap_pairs_built"] > 0
    dependence = summary["image_dependence_random_prev"]
    assert dependence["answer_loss"] > 0 and dependence["answer_loss_shuffled_images"] > 0
    factors = summary["vision_scale_factors"]
    assert len(factors) == 3 and all(0 < k for k in factors.values())
    TransformersBackend(ModelSettings(path=str(tmp_path / "m"), device="cpu"))
    # A further stage keeps the rescaled layers' learning-rate factors instead of rescaling again.
    again = train(tmp_path / "m2", steps=1, episodes=1, batch_size=2, warmup=1, workers=1, val_episodes=1,
                  init_dir=tmp_path / "m", threads=1, checkpoint_every=0, kind_weights={"reach": 1.0},
                  outcome_weights={"hover": 1.0}, goal_relabel=1.0)
    assert again["vision_scale_factors"] == factors and again["kind_weights"] == {"reach": 1.0}
    assert again["goal_relabel"] == 1.0 and summary["goal_relabel"] == 0.0
    assert again["outcome_weights"] == {"hover": 1.0}
    assert again["on_policy"] is None
    with pytest.raises(ValueError, match="--init"):  # checked before any data is built
        train(tmp_path / "m3", steps=1, episodes=1, on_policy_episodes=1, workers=1)
    assert again["previous_stage"]["steps"] == 2


def test_examples_cache_holds_the_on_policy_examples_and_refuses_other_settings(tiny_model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    cache = tmp_path / "examples.pkl"
    common = dict(steps=1, episodes=1, batch_size=2, warmup=1, workers=1, val_episodes=1, threads=1,
                  checkpoint_every=0, init_dir=tiny_model_dir, examples_cache=cache)
    built = train(tmp_path / "unused", data_only=True, on_policy_episodes=1, **common)
    assert cache.is_file() and not list(tmp_path.glob("*.tmp")) and not (tmp_path / "unused").exists()
    summary = train(tmp_path / "m", on_policy_episodes=1, comparison_weight=3.0, colour_counterfactuals=2, **common)
    assert summary["train_examples"] == built["train_examples"] > 7  # the ordinary episode's steps and 7 on-policy
    assert summary["on_policy"]["episodes"] == 1 and summary["on_policy"]["examples"] == 7
    assert summary["comparison_weight"] == 3.0 and summary["colour_counterfactuals"] == 2
    for other in ({"on_policy_episodes": 0}, {"on_policy_episodes": 1, "outcome_weights": {"hover": 1.0}}):
        with pytest.raises(ValueError, match="other settings"):
            train(tmp_path / "m2", **other, **common)
    # The on-policy examples are the initial model's rollouts: another initial model is other data.
    with pytest.raises(ValueError, match="initial_model"):
        train(tmp_path / "m3", on_policy_episodes=1, **{**common, "init_dir": tmp_path / "m"})


def test_on_policy_examples_quote_what_the_model_itself_answered(tiny_model_dir: Path) -> None:
    import torch

    specs = [D.EpisodeSpec("reach", "success", 5), D.EpisodeSpec("push", "hover", 6)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        examples, info = on_policy_examples(tiny_model_dir, specs, workers=1)
        assert torch.get_num_threads() == 2  # building in this process leaves its thread count alone
    finally:
        torch.set_num_threads(threads)
    rollout = evaluate(str(tiny_model_dir), specs=specs)  # greedy: the same rollouts again
    quoted = [q for trace in rollout["traces"] for q in trace["quoted"]]
    assert info["examples"] == len(examples) == len(quoted) == 2 * 7
    for key in TARGETS:  # the rollouts are the same greedy runs, scored in the same batches
        assert info["rollout_metrics"][key] == pytest.approx(rollout[key], abs=1e-4, nan_ok=True)
    assert [e.prev_percent for e in examples] == quoted
    k = 0
    for spec, trace in zip(specs, rollout["traces"]):
        ep = D.make_episode(spec)
        for prev_idx, cur_idx in zip(trace["frames"], trace["frames"][1:]):
            assert examples[k].reply == D.answer_text(ep, prev_idx, cur_idx, quoted[k])
            assert examples[k].percent == D.percent_at(ep, cur_idx)
            k += 1
    # Rendered and built by two worker processes: the same examples.
    forked, _ = on_policy_examples(tiny_model_dir, specs, workers=2, chunk=8)
    assert len(forked) == len(examples)
    for a, b in zip(examples, forked):
        assert a.input_ids.tolist() == b.input_ids.tolist() and np.array_equal(a.patches, b.patches)


def test_image_dependence_swaps_images_and_scores_only_the_answer(builder: D.ExampleBuilder,
                                                                   backend: TransformersBackend,
                                                                   episode: D.Episode) -> None:
    import dataclasses

    rng = np.random.default_rng(1)
    examples = list(D.episode_examples(builder, episode, rng, stride_range=(5.0, 6.0), p_random=1.0))[:3]
    different = image_dependence(backend.model, builder, examples, 2)
    assert different["answer_loss"] != different["answer_loss_shuffled_images"]  # random weights read the image
    same_image = [dataclasses.replace(e, patches=examples[0].patches) for e in examples]
    same = image_dependence(backend.model, builder, same_image, 2)
    assert same["answer_loss"] == same["answer_loss_shuffled_images"]
    # only the answer tokens count: the loss over the whole reply differs
    _, reply_loss = weighted_loss(backend.model, D.collate(builder, same_image, 1.0))
    assert round(float(reply_loss), 4) != same["answer_loss"]


def test_evaluate_returns_every_metric(backend: TransformersBackend) -> None:
    specs = [D.EpisodeSpec("push", "success", 1000), D.EpisodeSpec("reach", "hover", 1001)]
    result = evaluate(backend, specs=specs, n_frames=16, max_new_tokens=4)
    for key in TARGETS:
        assert key in result and key in result["targets_met"]
    assert result["episodes"] == 2 and result["model_calls"] == 2 * 2
    assert 0.0 <= result["parse_rate"] <= 1.0
    assert "| metric |" in format_table(result) and "| reply sentence |" in format_table(result)
    assert set(result["reasoning_accuracy"]) == set(D.REPLY_SENTENCES)
    assert len(result["traces"][0]["quoted"]) == len(result["traces"][0]["replies"]) == 2
    # Per task kind: the push success has a VOC, the reach hover none; MAE over each kind's own calls.
    push, reach = result["by_task"]["push"], result["by_task"]["reach"]
    assert set(result["by_task"]) == {"push", "reach"} and "| task kind |" in format_table(result)
    assert -1.0 <= push["voc"] <= 1.0 and np.isnan(reach["voc"])
    for d, trace in ((push, result["traces"][0]), (reach, result["traces"][1])):
        assert d["episodes"] == 1
        assert d["mae"] == pytest.approx(np.mean([abs(p - t) for p, t in zip(trace["pred"][1:], trace["true"][1:])]))


def test_true_quote_error_quotes_the_true_previous_progress(backend: TransformersBackend) -> None:
    specs = [D.EpisodeSpec("reach", "success", 1000), D.EpisodeSpec("push", "partial_regression", 1001)]
    quoted: list[str] = []

    class Recording:  # the real tiny backend; records the prompts it is given
        def generate(self, conversations, images, settings):
            quoted.extend(c[-1]["content"][-1]["text"] for c in conversations)
            return backend.generate(conversations, images, settings)

    result = true_quote_error(Recording(), specs=specs, n_frames=16, max_new_tokens=4)
    assert result["model_calls"] == 2 * 2 and set(result["by_task"]) == {"reach", "push"}
    assert all(0.0 <= v <= 1.0 for v in result["by_task"].values()) and 0.0 <= result["mae"] <= 1.0
    expected = []
    for spec in specs:
        ep = D.make_episode(spec, n_frames=16)
        expected += [D.percent_at(ep, a) for a in D.scored_indices(16, 7.5)[:-1]]
    protocol = load_protocol()
    assert quoted == [protocol.templates.user_text(ep_goal, q, n_views=2) for ep_goal, q in
                      zip([D.make_episode(s, n_frames=16).goal for s in specs for _ in range(2)], expected)]


def test_reasoning_accuracy_compares_each_sentence_with_the_true_state() -> None:
    ep = generate_episode("place", "success", seed=5, n_frames=30, size=(160, 120))
    frames = D.scored_indices(ep.n_frames, 5.0)
    quoted = [D.percent_at(ep, p) for p in frames[:-1]]
    replies = [D.answer_text(ep, p, c, q) for p, c, q in zip(frames[:-1], frames[1:], quoted)]
    trace = {"frames": frames, "status": ["first_frame"] + ["ok"] * len(replies), "replies": replies, "quoted": quoted}
    assert reasoning_accuracy([ep], [trace]) == {name: 1.0 for name in D.REPLY_SENTENCES}
    # The same replies read against other quoted values: only the direction sentence can change.
    shifted = dict(trace, quoted=[(q + 50) % 101 for q in quoted])
    acc = reasoning_accuracy([ep], [shifted])
    assert acc["direction"] == 0.0 and all(acc[n] == 1.0 for n in D.REPLY_SENTENCES if n != "direction")
    # A reply that claims the target is in the zone on every step is wrong wherever it is not.
    liar = dict(trace, replies=[re.sub(r"is (far from|halfway to|near|in)", "is in", r) for r in replies])
    truly_in = [" is in " in r for r in replies]
    assert 0.0 < np.mean(truly_in) < 1.0
    assert reasoning_accuracy([ep], [liar])["where"] == pytest.approx(np.mean(truly_in))
    assert reasoning_accuracy([ep], [dict(trace, replies=["garbage"] * len(replies))])["motion"] == 0.0


def test_metric_helpers() -> None:
    assert spearman([0, 0.1, 0.5, 1.0], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [0, 1, 2]) == 0.0
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.5], [0.5]) == 0.5


DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "sole_r1_ros" / "data" / "default_model"


@pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="no shipped default model")
def test_shipped_default_model_answers_in_protocol() -> None:
    from sole_r1_ros.core.scorer import ProgressScorer
    from sole_r1_ros.settings.generation import GenerationSettings

    backend = TransformersBackend(ModelSettings(path=str(DEFAULT_MODEL), device="cpu"))
    assert backend.model_type == "qwen3_vl"
    scorer = ProgressScorer(backend, load_protocol(), generation=GenerationSettings.greedy(96))
    ep = generate_episode("push", "success", seed=1234, n_frames=16)
    episode = scorer.new_episode(ep.goal, ep.roles)
    stamps = ep.stamps_ns()
    estimates = [scorer.score(episode, stamps[i], ep.frames[i]) for i in (0, 8, 15)]
    assert [e.status for e in estimates] == ["first_frame", "ok", "ok"]
    assert all(0 <= e.percent <= 100 for e in estimates)
    summary = json.loads((DEFAULT_MODEL / "training_summary.json").read_text())
    assert summary["steps"] > 0
    assert image_token_budget(backend) == summary["arch"]["max_image_tokens"] == 150


def test_comparison_probe_reads_the_shipped_model_after_the_named_object() -> None:
    probe = comparison_probe(DEFAULT_MODEL, episodes=4, seed=1000)  # push, reach, place, stack (wrong object)
    assert probe["other_steps"] > 0 and probe["target_steps"] > 0
    assert all(0.0 <= v <= 1.0 for k, v in probe.items() if k.startswith("p_not_"))
    assert set(probe) == {"other_steps", "target_steps", "p_not_other", "p_not_other_swapped", "p_not_target",
                          "p_not_target_swapped", "other_goal_swapped_steps", "target_goal_swapped_steps",
                          "p_not_other_goal_swapped", "p_not_target_goal_swapped"}
    assert probe["other_goal_swapped_steps"] > 0 and probe["target_goal_swapped_steps"] > 0
    # With the true reply before it the shipped model tells the two apart (0.80 against 0.01 here),
    # and its decision follows the goal: swap which block the goal names and it flips (0.05, 1.00).
    assert probe["p_not_other"] > probe["p_not_target"] + 0.3
    assert probe["p_not_other_goal_swapped"] < probe["p_not_other"] - 0.3
    assert probe["p_not_target_goal_swapped"] > probe["p_not_target"] + 0.3


def test_state_targets_follow_the_true_state() -> None:
    from sole_r1_tools.training.vision_warmup import TARGETS, goal_ids, state_targets

    ep = generate_episode("place", "success", seed=5, n_frames=40, size=(160, 120))
    last = state_targets(ep, 30, ep.n_frames - 1)
    assert last[TARGETS.index("progress")] == pytest.approx(1.0)
    assert last[TARGETS.index("remaining")] == pytest.approx(0.0)
    held = [i for i in range(ep.n_frames) if ep.meta["holding"][i] == ep.meta["task"].target]
    assert held, "a successful place episode grasps its target"
    mid = state_targets(ep, held[0] - 1, held[-1])
    assert mid[TARGETS.index("holds_target")] == 1.0 and mid[TARGETS.index("holds_other")] == 0.0
    assert mid[TARGETS.index("prev_progress")] == pytest.approx(D.percent_at(ep, held[0] - 1) / 100)
    kind, target, reference = goal_ids(ep)
    assert kind == D.TASK_KINDS.index("place")
    from sole_r1_tools.training.vision_warmup import COLOR_NAMES
    assert COLOR_NAMES[target] in ep.goal and COLOR_NAMES[reference] in ep.goal


@pytest.mark.parametrize("kind,seed", [("push", 5), ("stack", 8), ("reach", 2)])
def test_token_labels_cover_the_pixels_the_object_changes(kind: str, seed: int) -> None:
    """Ground truth from the renderer itself: the composite pixels that change when the target is
    removed from the scene must fall on the tokens labelled with the target's colour."""
    from sole_r1_tools.synth.scene import SceneRenderer, SceneState
    from sole_r1_tools.training.vision_warmup import COLOR_NAMES, token_labels

    ep = generate_episode(kind, "success", seed=seed, n_frames=30, size=(320, 240))
    meta, i = ep.meta, 12
    target = meta["task"].target
    renderer = SceneRenderer(meta["scene"], meta["size"])
    state = SceneState(meta["gripper"][i], meta["poses"][i], int(meta["holding"][i]))
    away = meta["poses"][i].copy()
    away[target, :2] = (25.0, 25.0)
    with_target = renderer.render(state)
    without = renderer.render(SceneState(state.gripper, away, state.holding))
    a = np.asarray(compose(with_target, with_target, with_target, ep.roles), dtype=np.int32)
    b = np.asarray(compose(without, without, without, ep.roles), dtype=np.int32)
    ys, xs = np.nonzero(np.abs(a - b).sum(axis=-1) > 120)
    assert len(ys) > 50, "the target must be visible"
    rows, cols = 10, 15
    labels = token_labels(ep, (i, i, i), (rows, cols)).reshape(rows, cols, -1)
    channel = labels[..., COLOR_NAMES.index(meta["target"])]
    cells = channel[ys * rows // a.shape[0], xs * cols // a.shape[1]]
    assert cells.mean() > 0.9
    assert channel.sum() < 0.3 * rows * cols  # boxes, not the whole image
    absent = set(COLOR_NAMES) - {o["color"] for o in meta["objects"]}
    assert all(labels[..., COLOR_NAMES.index(c)].sum() == 0 for c in absent)


def test_vision_warmup_trains_only_the_vision_tower(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from sole_r1_tools.training.vision_warmup import warmup

    summary = warmup(tmp_path / "warm", init_dir=tiny_model_dir, episodes=2, passes=1, steps=6, stop_after=3,
                     val_episodes=1, workers=1, threads=1, log_every=1)
    assert summary["steps"] == 3 and summary["planned_steps"] == 6 and summary["train_composites"] > 0
    assert summary["init"] == "previous_stage" and not summary["stopped_early"]
    assert set(summary["val_after"]) >= {"mae_progress", "acc_holds_target", "mae_progress_if_constant",
                                         "token_label_f1"}
    before = dict(TransformersBackend(ModelSettings(path=str(tiny_model_dir), device="cpu")).model.named_parameters())
    after = dict(TransformersBackend(ModelSettings(path=str(tmp_path / "warm"), device="cpu")).model.named_parameters())
    assert before.keys() == after.keys()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("model.visual.") for n in changed)
    assert "model.visual.patch_embed.proj.weight" in changed


def test_gripper_positive_tokens_weigh_more_in_the_dense_loss() -> None:
    import torch
    import torch.nn.functional as F

    from sole_r1_tools.training.vision_warmup import TARGETS, TOKEN_CHANNELS, VisionExample, make_head, warmup_loss

    torch.manual_seed(0)
    head, n, grip = make_head(16), 12, TOKEN_CHANNELS.index("gripper")
    labels = np.zeros((n, len(TOKEN_CHANNELS)), np.uint8)
    labels[5, 0] = 1  # an object, not the gripper
    ex = VisionExample(patches=np.zeros((4, 8), np.uint8), grid_thw=np.array([1, 2, 2]), goal=np.array([0, 0, 1]),
                       targets=np.zeros(len(TARGETS), np.float32), token_labels=labels)
    tokens = [torch.randn(n, 16)]
    with torch.no_grad():
        assert torch.equal(warmup_loss(head, tokens, [ex], 1.0, 1.0), warmup_loss(head, tokens, [ex], 1.0, 8.0))
        labels[3, grip] = 1
        gap = warmup_loss(head, tokens, [ex], 1.0, 8.0) - warmup_loss(head, tokens, [ex], 1.0, 1.0)
        expected = 7.0 * float(-F.logsigmoid(head.dense(tokens[0])[3, grip])) / labels.size
    assert float(gap) == pytest.approx(expected, rel=1e-4)
