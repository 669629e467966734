"""The settings schema: one declaration per setting, from which parameters, options and the
params file's documentation follow."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from sole_r1_ros.errors import ConfigError
from sole_r1_ros.settings import GROUPS, CameraSettings, RewardSettings, WorkerSettings, settings_of, to_parameters
from sole_r1_ros.settings.cli import add_setting_arguments, settings_from_args
from sole_r1_ros.settings.schema import from_parameters

CONFIG = Path(__file__).resolve().parents[3] / "config" / "reward_node.yaml"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def test_the_params_file_documents_every_parameter_with_its_default() -> None:
    params = _flatten(yaml.safe_load(CONFIG.read_text())["/**/sole_r1_reward"]["ros__parameters"])
    declared = {s.name: s.default for group in GROUPS for s in settings_of(group)}
    for role in params["cameras"]:
        for s in settings_of(CameraSettings):
            declared[s.name.replace("<role>", role)] = f"cameras/{role}/image_raw" if s.field == "topic" else s.default
    assert sorted(params) == sorted(declared)
    assert params == declared


def test_every_setting_has_a_description_and_a_unique_name_and_flag() -> None:
    names, flags = [], []
    for group in GROUPS:
        for s in settings_of(group):
            assert s.spec.description.strip(), s.name
            names.append(s.name)
            if s.spec.offline:
                flags.append(s.flag)
    assert len(names) == len(set(names))
    assert len(flags) == len(set(flags))


@pytest.mark.parametrize(("group", "bad"), [
    (WorkerSettings, {"mode": "sometimes"}),
    (WorkerSettings, {"request_queue_size": 0}),
    (WorkerSettings, {"period_s": "1"}),
    (RewardSettings, {"gamma": 1.5}),
    (RewardSettings, {"smoothing": "mean"}),
    (CameraSettings, {"transport": "theora"}),
])
def test_out_of_range_values_are_config_errors_naming_the_parameter(group: Any, bad: dict[str, Any]) -> None:
    field = next(iter(bad))
    name = next(s.name for s in settings_of(group) if s.field == field)
    with pytest.raises(ConfigError, match=name.replace("<role>", ".*").split(".")[-1]):
        group(**bad)


def test_cli_options_round_trip_to_the_same_settings_as_parameters() -> None:
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser, RewardSettings, title="reward")
    args = parser.parse_args(["--reward-mode", "delta", "--reward-clip", "--reward-clip-min", "-0.5",
                              "--reward-success-threshold", "0.9", "--reward-median-window", "5"])
    from_cli = settings_from_args(RewardSettings, args)
    from_params = from_parameters(RewardSettings, {"reward.mode": "delta", "reward.clip": True,
                                                   "reward.clip_min": -0.5, "reward.success_threshold": 0.9,
                                                   "reward.median_window": 5})
    assert from_cli == from_params
    assert to_parameters(from_cli)["reward.clip_min"] == -0.5


def test_node_only_settings_are_not_cli_options() -> None:
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser, WorkerSettings, title="frames")
    flags = {a for action in parser._actions for a in action.option_strings}
    assert "--mode" not in flags and "--period" not in flags and "--request-queue-size" not in flags
    assert {"--align-tolerance", "--max-frame-age", "--buffer-size", "--max-goal-chars"} <= flags
