"""Model selection during a training stage: free-running validation rollouts pick the weights that are saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.settings.groups import ModelSettings
from sole_r1_tools.training.dataset import check_not_held_out, evaluation_specs
from sole_r1_tools.training.evaluate import evaluate
from sole_r1_tools.training.metrics import TARGETS, target_shortfall
from sole_r1_tools.training.rlvr import rl_episode_specs
from sole_r1_tools.training.selection import SELECTION_SEED, CheckpointSelector
from sole_r1_tools.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "sole_r1_ros" / "data" / "default_model"


def test_target_shortfall_sums_the_distance_to_each_target() -> None:
    met = {"voc": 0.95, "mae": 0.05, "auroc": 1.0, "hacking_final": 0.1, "parse_rate": 1.0}
    assert target_shortfall(met) == 0.0
    assert set(met) == set(TARGETS)
    missed = dict(met, voc=0.8, mae=0.25, hacking_final=0.5)
    assert target_shortfall(missed) == pytest.approx(0.1 + 0.15 + 0.2)
    assert target_shortfall(dict(met, auroc=float("nan"))) == 1.0  # no negatives or no positives: counts 1
    assert target_shortfall({}) == len(TARGETS)


def test_selection_episodes_are_held_out_from_the_evaluation_sets() -> None:
    seeds = {s.seed for s in evaluation_specs(96, SELECTION_SEED)}
    check_not_held_out(seeds, "selection")
    # The recipe's episodes (seeds 0 and 1): SFT 0 on, stage 2 100 000 on, their validation steps
    # 190 000 and 290 000 on, stage 2's rollouts 600 000 on, the warm-up 500 000 on, its probe's
    # validation 800 000 on.
    assert {seed // 100_000 for seed in seeds} == {9}
    with pytest.raises(ValueError, match="overlap the held-out set 800000..800047"):
        CheckpointSelector(4, 100, seed=800_040)
    with pytest.raises(ValueError, match="overlap the held-out set 1000..1023"):
        CheckpointSelector(10, 100, seed=995)


def test_the_rl_stage_learns_from_no_held_out_episode() -> None:
    seeds = [s.seed for s in rl_episode_specs(150, 0)]  # the rlvr CLI's defaults
    assert seeds == list(range(1_800_000, 1_800_150))
    # where they were until 2026-11-30: the third held-out set's seeds
    with pytest.raises(ValueError, match="RL episode seeds 800000..800149 overlap the held-out set 800000..800047"):
        check_not_held_out(range(800_000, 800_150), "RL episode")


@pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="no shipped default model")
def test_selector_keeps_the_better_weights_even_when_a_later_candidate_is_worse() -> None:
    import torch

    backend = TransformersBackend(ModelSettings(path=str(DEFAULT_MODEL), device="cpu", dtype="float32"))
    model = backend.model
    selector = CheckpointSelector(episodes=6, every=100, start=200)
    assert [selector.due(k) for k in (100, 200, 250, 300)] == [False, True, False, True]
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    good = selector.consider(backend, 200)
    assert good["parse_rate"] == 1.0
    with torch.no_grad():  # wreck the weights: the replies stop parsing
        for p in model.parameters():
            p.mul_(0.0)
    bad = selector.consider(backend, 300)
    assert bad["shortfall"] > good["shortfall"]
    assert selector.scored(300) and not selector.scored(250)
    assert selector.consider(backend, 300) is bad  # the same step is scored once
    assert selector.restore_best(model) == 200 == selector.chosen_step
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    record = selector.summary()
    assert [c["step"] for c in record["candidates"]] == [200, 300] and record["seed"] == SELECTION_SEED


def test_train_refuses_a_held_out_selection_seed_before_building_anything(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overlap the held-out set 800000..800047"):
        train(tmp_path / "m", steps=3, episodes=1, select_episodes=48, select_seed=800_000)
    assert not (tmp_path / "m").exists()


def test_train_saves_the_chosen_candidate_and_records_every_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    summary = train(tmp_path / "m", steps=3, episodes=1, batch_size=2, warmup=1, workers=1, val_episodes=1,
                    init_dir=tiny_model_dir, threads=1, checkpoint_every=0, lr=0.02,
                    select_episodes=2, select_every=2, select_from=2)
    selection = summary["selection"]
    candidates = selection["candidates"]
    assert [c["step"] for c in candidates] == [2, 3]  # step 2, then the last step
    best = min(candidates, key=lambda c: (c["shortfall"], c["mae"], -c["step"]))
    assert selection["chosen_step"] == best["step"]
    # The saved model is the chosen candidate: scored again, it gives that candidate's metrics.
    saved = evaluate(str(tmp_path / "m"), specs=evaluation_specs(2, SELECTION_SEED))
    assert round(saved["mae"], 4) == best["mae"] and round(target_shortfall(saved), 4) == best["shortfall"]
    with pytest.raises(ValueError, match="every >= 1"):
        CheckpointSelector(episodes=2, every=0)
