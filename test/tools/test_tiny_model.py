"""The tiny model directories load and run through the real transformers Qwen-VL stack, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sole_r1_tools.tiny_model import MAX_IMAGE_TOKENS, SUPPORTED_FAMILIES, build_tiny_model, main

SYSTEM = "You estimate robot task progress."
QUESTION = "How much of the task is done? Answer in <answer>N%</answer>."
EXPECTED_PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{QUESTION}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
    ]


def _composite_image() -> Image.Image:
    """A 1176x784 RGB frame: gradient background with a few solid blocks (like a camera composite)."""
    h, w = 784, 1176
    ys, xs = np.mgrid[0:h, 0:w]
    rgb = np.stack([xs * 255 // w, ys * 255 // h, (xs + ys) * 255 // (w + h)], axis=-1).astype(np.uint8)
    rgb[100:300, 150:400] = (220, 30, 30)
    rgb[400:700, 600:1000] = (30, 30, 220)
    rgb[:, w // 2 - 2 : w // 2 + 2] = 255
    return Image.fromarray(rgb)


@pytest.fixture(scope="module")
def loaded(tiny_model_dirs: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """Family → (processor, model), loaded the way the production backend loads them."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = {}
    for family, path in tiny_model_dirs.items():
        processor = AutoProcessor.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
        out[family] = (processor, model.eval())
    return out


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_directory_is_complete(tiny_model_dirs: dict[str, Path], family: str) -> None:
    path = tiny_model_dirs[family]
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "processor_config.json"):
        assert (path / name).is_file(), name
    assert not list(path.parent.glob(".*.tmp")), "staging directory left behind"


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_real_classes_and_token_wiring(loaded: dict[str, tuple[Any, Any]], family: str) -> None:
    processor, model = loaded[family]
    tok = processor.tokenizer
    prefix = {"qwen3_vl": "Qwen3VL", "qwen2_5_vl": "Qwen2_5_VL", "qwen2_vl": "Qwen2VL"}[family]
    assert type(model).__name__ == f"{prefix}ForConditionalGeneration"
    assert type(processor).__name__ == f"{prefix}Processor"
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert processor.video_processor is not None
    assert model.config.model_type == family
    assert str(model.dtype) == "torch.float32"

    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.get_text_config().vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_chat_template_matches_qwen_instruct_format(loaded: dict[str, tuple[Any, Any]], family: str) -> None:
    processor, _ = loaded[family]
    text = processor.apply_chat_template(_messages(), tokenize=False, add_generation_prompt=True)
    assert text == EXPECTED_PROMPT
    assert text.count("<|image_pad|>") == 1
    roles = [text.index(f"<|im_start|>{role}\n") for role in ("system", "user", "assistant")]
    assert roles == sorted(roles)
    assert processor.tokenizer.apply_chat_template(_messages(), tokenize=False, add_generation_prompt=True) == text


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_reasoning_tags_survive_skip_special_tokens(loaded: dict[str, tuple[Any, Any]], family: str) -> None:
    tok = loaded[family][0].tokenizer
    reply = "<think>The gripper holds the cup; 3/4 done.</think><answer>75%</answer>"
    ids = tok(reply + "<|im_end|>")["input_ids"]
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert tok.convert_tokens_to_ids(tag) in ids
    assert tok.decode(ids, skip_special_tokens=True) == reply
    assert tok.batch_decode([ids], skip_special_tokens=True) == [reply]
    odd = "Ünïcode 漢字 🤖 tab\tnewline\n ~`^"
    assert tok.decode(tok(odd)["input_ids"]) == odd


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_greedy_generation_runs_and_is_deterministic(loaded: dict[str, tuple[Any, Any]], family: str) -> None:
    import torch

    processor, model = loaded[family]
    text = processor.apply_chat_template(_messages(), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[_composite_image()], return_tensors="pt", padding=True)
    vision_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert 0 < vision_tokens <= MAX_IMAGE_TOKENS

    with torch.inference_mode():
        first = model.generate(**inputs, max_new_tokens=30, do_sample=False)
        second = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    assert torch.equal(first, second)
    new = first[:, inputs["input_ids"].shape[1]:]
    assert 0 < new.shape[1] <= 30
    assert isinstance(processor.batch_decode(new, skip_special_tokens=True)[0], str)


def test_same_seed_is_byte_identical_and_seed_matters(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert main([str(tmp_path / "again"), "--family", "qwen3_vl", "--seed", "0"]) == 0
    other = build_tiny_model(tmp_path / "seed1", "qwen3_vl", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    assert (other / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (tiny_model_dir / "model.safetensors").read_bytes()


def test_refuses_to_clobber_overwrites_when_asked(tiny_model_dir: Path, tmp_path: Path) -> None:
    before = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(FileExistsError):
        build_tiny_model(tiny_model_dir, "qwen3_vl")
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == before

    target = build_tiny_model(tmp_path / "m", "qwen3_vl", seed=1)
    assert build_tiny_model(target, "qwen3_vl", seed=0, overwrite=True) == target
    assert (target / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m"], "temp dirs left behind"


def test_rejects_bad_arguments_without_leaving_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported family"):
        build_tiny_model(tmp_path / "x", "llava")
    with pytest.raises(ValueError, match="hidden_size"):
        build_tiny_model(tmp_path / "x", "qwen3_vl", hidden_size=48)
    assert list(tmp_path.iterdir()) == []
