"""The in-process backend's decoding: every setting the SOLE-R1 reference fixes is passed to
``generate`` explicitly, so a checkpoint's ``generation_config.json`` cannot change it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.core.protocol import load_protocol
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import ModelSettings


def test_a_checkpoint_repetition_penalty_does_not_change_the_replies(tiny_model_dir: Path, tmp_path: Path,
                                                                     one_torch_thread: None) -> None:
    """The reference decodes with repetition penalty 1 (vLLM's neutral default); a checkpoint whose
    generation_config.json sets another (Qwen checkpoints ship 1.05) must not apply it here."""
    penalised = tmp_path / "penalised"
    shutil.copytree(tiny_model_dir, penalised)
    config_file = penalised / "generation_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config_file.write_text(json.dumps({**config, "repetition_penalty": 50.0}), encoding="utf-8")
    plain = TransformersBackend(ModelSettings(path=str(tiny_model_dir), device="cpu"))
    strict = TransformersBackend(ModelSettings(path=str(penalised), device="cpu"))
    assert strict.model.generation_config.repetition_penalty == 50.0  # the premise: it is loaded
    conversation = load_protocol().templates.messages("push the block", 10, n_views=2)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8))
    for settings in (GenerationSettings.greedy(24), GenerationSettings(max_new_tokens=24, seed=3)):
        replies = [b.generate([conversation], [image], settings)[0] for b in (plain, strict)]
        assert replies[0] == replies[1]
