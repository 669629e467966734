"""The default model's whole recipe as one command: three stages chained, timed, cleaned up."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.settings.groups import ModelSettings
from sole_r1_tools.training import recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "vision_warmup": dict(episodes=2, passes=1, steps=2, val_episodes=1, minutes=5.0),
    "protocol_sft": dict(episodes=1, steps=2, batch_size=2, val_episodes=1, checkpoint_every=0, minutes=5.0),
    "on_policy_sft": dict(episodes=1, on_policy_episodes=1, steps=1, batch_size=2, val_episodes=1,
                          checkpoint_every=0, minutes=5.0),
}


def test_the_stages_chain_from_a_fresh_model_to_an_on_policy_round() -> None:
    names = [name for name, _, _ in recipe.stages()]
    assert names == ["vision_warmup", "protocol_sft", "on_policy_sft"]
    assert recipe.ON_POLICY["on_policy_episodes"] > 0 and recipe.ON_POLICY["seed"] != recipe.SFT["seed"]
    assert recipe.SFT["match_vision_scale"] > 0 and "match_vision_scale" not in recipe.ON_POLICY  # rescaled once
    with pytest.raises(ValueError, match="no recipe stage"):
        recipe.run_recipe(Path("unused"), overrides={"sft": {"steps": 1}})


def test_recipe_runs_every_stage_and_records_its_timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    summary = recipe.run_recipe(tmp_path / "model", threads=1, workers=1, overrides=SMALL,
                                keep_stages=tmp_path / "stages")

    record = summary["recipe"]
    assert [s["stage"] for s in record["stages"]] == ["vision_warmup", "protocol_sft", "on_policy_sft"]
    assert all(s["seconds"] > 0 for s in record["stages"])
    assert record["total_seconds"] >= sum(s["seconds"] for s in record["stages"]) - 0.2  # each rounded to 0.1 s
    assert record["within_budget"] and record["budget_minutes"] == recipe.BUDGET_MINUTES
    assert record["stages"][1]["settings"]["steps"] == 2 and record["stages"][1]["settings"]["lr"] == recipe.SFT["lr"]
    # The final summary is the on-policy round's, nesting the SFT stage's and the warm-up's.
    assert summary["on_policy"]["episodes"] == 1 and summary["steps"] == 1
    assert summary["goal_swap_pairs"] == recipe.ON_POLICY["goal_swap_pairs"] and summary["goal_swap_pairs_built"] > 0
    assert summary["previous_stage"]["steps"] == 2 and summary["previous_stage"]["vision_scale_factors"]
    assert summary["previous_stage"]["previous_stage"]["stage"] == "vision_warmup"
    on_disk = json.loads((tmp_path / "model" / "training_summary.json").read_text(encoding="utf-8"))
    assert on_disk["recipe"] == record and on_disk["previous_stage"]["previous_stage"]["stage"] == "vision_warmup"
    assert TransformersBackend(ModelSettings(path=str(tmp_path / "model"), device="cpu")).model_type == "qwen3_vl"
    assert not list(scratch.glob("sole_r1_*"))  # the intermediate stages are gone from the scratch space
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "scratch", "stages"]
    # ... and kept where asked
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == ["protocol_sft", "vision_warmup"]
    kept = json.loads((tmp_path / "stages" / "protocol_sft" / "training_summary.json").read_text(encoding="utf-8"))
    assert kept == summary["previous_stage"]
