"""The in-process fast path: a static KV cache over prompts left-padded to a length bucket gives
the eager path's greedy answers (tiny model, CPU); compiled too, when asked (slow: opt-in)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sole_r1_ros.backends.registry import load_backend
from sole_r1_ros.backends.static_cache import PROMPT_BUCKET, StaticCacheBackend, pad_to_bucket
from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.core.protocol import load_protocol
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import ModelSettings

# goals and previous percents of different lengths: the prompts span several token counts
ASKS = (("push the red block", 10), ("pick up the blue cube and put it in the bowl on the left", 100), ("x", -5))


def asks() -> tuple[list[list[dict]], list[Image.Image]]:
    protocol = load_protocol()
    rng = np.random.default_rng(0)
    conversations = [protocol.templates.messages(goal, prev, n_views=2) for goal, prev in ASKS]
    images = [Image.fromarray(rng.integers(0, 256, (112, 168, 3), dtype=np.uint8)) for _ in ASKS]
    return conversations, images


def eager_answers(model_dir: Path) -> list[str]:
    eager = TransformersBackend(ModelSettings(path=str(model_dir), device="cpu"))
    conversations, images = asks()
    return [eager.generate([c], [i], GenerationSettings.greedy(24))[0].text for c, i in zip(conversations, images)]


def test_padding_to_the_bucket_is_on_the_left_and_masked() -> None:
    inputs = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones((1, 3), dtype=torch.long),
              "mm_token_type_ids": torch.tensor([[0, 1, 0]]), "pixel_values": torch.zeros((4, 8))}
    assert pad_to_bucket(inputs, pad_id=99, bucket=4) == 4
    assert inputs["input_ids"].tolist() == [[99, 5, 6, 7]]
    assert inputs["attention_mask"].tolist() == [[0, 1, 1, 1]]
    assert inputs["mm_token_type_ids"].tolist() == [[0, 0, 1, 0]]
    assert inputs["pixel_values"].shape == (4, 8)  # not a per-token tensor: untouched
    assert pad_to_bucket(inputs, pad_id=99, bucket=4) == 4  # already a multiple


def test_static_cache_with_bucketed_prompts_equals_eager_greedy(tiny_model_dir: Path, one_torch_thread: None) -> None:
    fast = load_backend(ModelSettings(backend="transformers_static", path=str(tiny_model_dir), device="cpu"))
    assert isinstance(fast, StaticCacheBackend) and fast.describe()["cache"] == "static"
    conversations, images = asks()
    lengths = {fast.processor(text=[fast.prompt_text(c)], images=[i], return_tensors="pt")["input_ids"].shape[1]
               for c, i in zip(conversations, images)}
    assert len(lengths) == len(ASKS) and len({-(-n // PROMPT_BUCKET) for n in lengths}) == 1  # one bucket
    replies = [fast.generate([c], [i], GenerationSettings.greedy(24))[0] for c, i in zip(conversations, images)]
    assert [r.text for r in replies] == eager_answers(tiny_model_dir)
    assert all(r.prompt_tokens in lengths for r in replies)  # padding is not counted
    batched = fast.generate(conversations, images, GenerationSettings.greedy(24))  # a batch pads alike
    assert [g.text for g in batched] == [r.text for r in replies]


@pytest.mark.skipif(os.environ.get("SOLE_R1_COMPILE_TEST") != "1",
                    reason="compiling on CPU takes ~30 s on 2 cores: set SOLE_R1_COMPILE_TEST=1")
def test_compiled_static_cache_equals_eager_greedy_and_compiles_once(tiny_model_dir: Path,
                                                                     one_torch_thread: None) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    fast = StaticCacheBackend(ModelSettings(path=str(tiny_model_dir), device="cpu"), compile_on_cpu=True)
    conversations, images = asks()
    answers = [fast.generate([c], [i], GenerationSettings.greedy(24))[0].text for c, i in zip(conversations, images)]
    assert answers == eager_answers(tiny_model_dir)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # three prompt lengths, one compile
