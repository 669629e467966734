"""Offline seeding: one derived seed per model call, fixed by the run's seed."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sole_r1_ros.backends.contract import Generation, VisionLanguageModel
from sole_r1_ros.backends.wrappers import PerStepSeedModel, step_seed
from sole_r1_ros.offline.seeding import OFFLINE_DECODING_OPTIONS, OFFLINE_SEED
from sole_r1_ros.settings.cli import add_setting_arguments, settings_from_args
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import DecodingSettings


class Recorder(VisionLanguageModel):
    def __init__(self) -> None:
        self.seeds: list[int | None] = []

    def generate(self, conversations: Sequence, images: Sequence, settings: GenerationSettings,
                 timings=None) -> list[Generation]:
        self.seeds.append(settings.seed)
        return [Generation("<answer>1%</answer>", 1, 1) for _ in conversations]


def test_each_call_gets_its_own_reproducible_seed() -> None:
    seeds = []
    for _ in range(2):
        inner = Recorder()
        model = PerStepSeedModel(inner)
        for _ in range(5):
            model.generate([[]], [None], GenerationSettings(seed=7))
        seeds.append(inner.seeds)
    assert seeds[0] == seeds[1] == [step_seed(7, k) for k in range(5)]
    assert len(set(seeds[0])) == 5 and all(0 <= s < 2**63 for s in seeds[0])
    assert step_seed(0, 1) != step_seed(1, 0)  # runs with neighbouring seeds do not share streams


def test_unseeded_stays_unseeded() -> None:
    inner = Recorder()
    PerStepSeedModel(inner).generate([[]], [None], GenerationSettings(seed=None))
    assert inner.seeds == [None]


def test_offline_options_default_to_the_offline_seed() -> None:
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser, DecodingSettings, title="decoding", **OFFLINE_DECODING_OPTIONS)
    assert settings_from_args(DecodingSettings, parser.parse_args([])).seed == OFFLINE_SEED
    assert settings_from_args(DecodingSettings, parser.parse_args(["--seed", "-1"])).seed == -1
    gen = settings_from_args(DecodingSettings, parser.parse_args([])).generation(GenerationSettings())
    assert gen.do_sample and gen.temperature == 1.0 and gen.seed == OFFLINE_SEED  # still the release's sampling
