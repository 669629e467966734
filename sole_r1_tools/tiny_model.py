"""Build tiny random-weight Qwen-VL model directories for offline tests.

The directories hold exactly what the production loader reads
(``AutoProcessor.from_pretrained`` + ``AutoModelForImageTextToText.from_pretrained``):
config, generation config, ``model.safetensors``, a byte-level BPE tokenizer
trained here from a built-in corpus, the family's chat template, image processor
and video processor. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SUPPORTED_FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl")
_PROCESSOR_CLASSES = {
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen2_vl": "Qwen2VLProcessor",
}

TOKENIZER_VOCAB_SIZE = 1024
"""Upper bound on the trained BPE vocabulary (special and added tokens come on top)."""

MAX_IMAGE_TOKENS = 128
"""Most LLM tokens one image becomes (the image processor's ``longest_edge`` in merged patches)."""

# Same order as the real Qwen2/Qwen3 tokenizers, so relative ids match theirs.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
)

# Qwen3-VL-*-Instruct chat template (as shipped in chat_template.json).
QWEN3_VL_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # noqa: E501 - the template is verbatim upstream text

# Qwen2-VL / Qwen2.5-VL-*-Instruct chat template (injects a default system turn).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_LINES = (
    "The robot arm picks up the red block and places it in the blue bin.",
    "Task progress: 0%, 5%, 10%, 15%, 20%, 25%, 30%, 35%, 40%, 45%, 50%.",
    "Task progress: 55%, 60%, 65%, 70%, 75%, 80%, 85%, 90%, 95%, 100%.",
    "The gripper is open. The gripper is closed. The object is grasped.",
    "Is the task complete? Yes, the task is complete. No, the task is not complete.",
    "Estimate how much of the task has been completed, from 0 to 100 percent.",
    "Frame 1 shows the start; frame 2 shows the current state; frame 3 shows the goal.",
    "The robot moves to the left, then to the right, then up and down.",
    "Open the drawer, put the cup inside, and close the drawer.",
    "Pick the apple from the table and place it on the plate.",
    "Fold the towel in half, then fold it again.",
    "Push the button, turn the knob, pull the lever, and lift the lid.",
    "Stack the green cube on top of the yellow cube.",
    "The camera view shows the wrist, the table, the bowl and the spoon.",
    "Success: true. Success: false. Failure detected: the object fell.",
    "<think> The arm has reached the object but has not lifted it yet. </think>",
    "<answer> 45% </answer> <answer> 100% </answer> <answer> 0% </answer>",
    "First, I look at the initial image. Then I compare it with the current image.",
    "The progress is about 3/4 done; roughly 75 percent, maybe 80.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 42 64 99 100 128 256 1000.",
    "Punctuation: . , ; : ! ? ' \" ( ) [ ] { } < > / \\ | - _ + = * & ^ % $ # @ ~ `",
    "Step 1: reach. Step 2: grasp. Step 3: lift. Step 4: move. Step 5: release.",
    "You are a helpful assistant that evaluates robot manipulation videos.",
    "Describe the scene. What is the robot doing? Where is the object now?",
    "The left image is the reference and the right image is the observation.",
    "The mug is on the shelf, the sponge is in the sink, the door is half open.",
    "Reward: 0.0, 0.25, 0.5, 0.75, 1.0. Value: -1.0 to 1.0.",
    "Answer with a single number between 0 and 100 followed by a percent sign.",
    "The episode ended after 120 steps at 10 Hz, which is 12 seconds.",
    "Navigation: the robot drives forward 2 meters, turns 90 degrees, and stops.",
)


def _corpus(extra: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the built-in training corpus (repeated so frequent pairs dominate), then ``extra``."""
    for _ in range(8):
        yield from _CORPUS_LINES
    yield from (f"{i}% {i} percent" for i in range(101))
    yield from extra


def _train_bpe(vocab_size: int, extra: tuple[str, ...] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with the Qwen2 pre-tokenizer; return vocab and merges."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(extra), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tokenizer(vocab_size: int = TOKENIZER_VOCAB_SIZE, extra_corpus: tuple[str, ...] = ()) -> Any:
    """Return a Qwen2Tokenizer with a freshly trained vocabulary and Qwen's special tokens.

    ``extra_corpus`` lines are added to the BPE training text (e.g. a domain's answer
    vocabulary, so its words become single tokens); ``vocab_size`` bounds the merges.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(vocab_size, tuple(extra_corpus))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=32768,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.extra_special_tokens = [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"]
    return tokenizer


def _image_video_processors(family: str, max_image_tokens: int = MAX_IMAGE_TOKENS) -> tuple[Any, Any]:
    """Return the family's real image and video processor classes, configured tiny."""
    if family == "qwen3_vl":
        from transformers import Qwen2VLImageProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        factor = 16 * 2
        half = [0.5, 0.5, 0.5]
        image = Qwen2VLImageProcessor(
            patch_size=16,
            temporal_patch_size=2,
            merge_size=2,
            image_mean=half,
            image_std=half,
            size={"shortest_edge": 64 * factor**2, "longest_edge": max_image_tokens * factor**2},
        )
        video = Qwen3VLVideoProcessor(
            patch_size=16,
            temporal_patch_size=2,
            merge_size=2,
            image_mean=half,
            image_std=half,
            size={"shortest_edge": 16 * factor**2, "longest_edge": 4 * max_image_tokens * factor**2},
            max_video_tokens=max_image_tokens,
            cap_pixels_per_frame=True,
            fps=2,
            min_frames=4,
            max_frames=16,
        )
        return image, video

    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    factor = 14 * 2
    image = Qwen2VLImageProcessor(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": 56 * 56, "longest_edge": max_image_tokens * factor**2},
    )
    video = Qwen2VLVideoProcessor(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": 16 * factor**2, "longest_edge": 4 * max_image_tokens * factor**2},
        max_video_tokens=4 * max_image_tokens,
        cap_pixels_per_frame=True,
        min_frames=4,
        max_frames=16,
    )
    return image, video


def _model_config(family: str, tokenizer: Any, hidden_size: int, num_layers: int,
                  vision_hidden_size: int = 32, vision_depth: int = 2) -> Any:
    """Return a tiny config of the family's real architecture, wired to ``tokenizer``."""
    num_heads = 4
    head_dim = hidden_size // num_heads
    half = head_dim // 2
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads // 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "dtype": "float32",
    }
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        "tie_word_embeddings": False,
        "dtype": "float32",
    }
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        # Interleaved MRoPE: T takes the remainder, H and W every third frequency.
        hw = half // 4
        text.update(
            head_dim=head_dim,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [half - 2 * hw, hw, hw],
                "mrope_interleaved": True,
            },
        )
        vision = {
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": hidden_size,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": list(range(min(vision_depth, num_layers))),
        }
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)

    # Qwen2(.5)-VL MRoPE: contiguous T/H/W blocks over head_dim // 2 frequencies.
    hw = (half * 3) // 8
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": [half - 2 * hw, hw, hw],
    }
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = {
            "depth": vision_depth,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": hidden_size,
            "fullatt_block_indexes": [vision_depth - 1],
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)

    from transformers import Qwen2VLConfig

    vision = {
        "depth": vision_depth,
        "embed_dim": 32,
        "mlp_ratio": 2,
        "num_heads": 2,
        "hidden_size": hidden_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' tqdm bars (e.g. "Writing model shards") and restore the setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_model_dir(target: Path, family: str, seed: int, hidden_size: int, num_layers: int,
                     extra: dict[str, Any] | None = None) -> None:
    """Write every file of the model directory into the existing empty folder ``target``."""
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, GenerationConfig

    extra = extra or {}
    tokenizer = build_tokenizer(extra.get("vocab_size", TOKENIZER_VOCAB_SIZE), extra.get("extra_corpus", ()))
    config = _model_config(family, tokenizer, hidden_size, num_layers,
                           extra.get("vision_hidden_size", 32), extra.get("vision_depth", 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.eval()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(
        bos_token_id=None,
        eos_token_id=[im_end, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    with quiet_progress_bars():
        model.save_pretrained(target, safe_serialization=True)

    chat_template = QWEN3_VL_CHAT_TEMPLATE if family == "qwen3_vl" else QWEN2_VL_CHAT_TEMPLATE
    tokenizer.chat_template = chat_template
    image_processor, video_processor = _image_video_processors(family, extra.get("max_image_tokens", MAX_IMAGE_TOKENS))
    processor = getattr(transformers, _PROCESSOR_CLASSES[family])(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )
    processor.save_pretrained(target)


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    family: str = "qwen3_vl",
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    overwrite: bool = False,
    vision_hidden_size: int = 32,
    vision_depth: int = 2,
    max_image_tokens: int = MAX_IMAGE_TOKENS,
    vocab_size: int = TOKENIZER_VOCAB_SIZE,
    extra_corpus: tuple[str, ...] = (),
) -> Path:
    """Build a tiny random-weight ``family`` model directory at ``out_dir`` and return its path.

    The directory is assembled in a sibling temp dir and renamed into place, so
    ``out_dir`` is either absent, the previous version, or complete. Same ``seed`` →
    byte-identical files. The keyword-only extras size the vision tower, the image token
    budget and the tokenizer (``extra_corpus``: more BPE training text); the defaults give
    the test model.
    """
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(f"unsupported family {family!r}; expected one of {SUPPORTED_FAMILIES}")
    if hidden_size <= 0 or hidden_size % 32:
        raise ValueError(f"hidden_size must be a positive multiple of 32 (4 heads, MRoPE), got {hidden_size}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    out = Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_model_dir(staging, family, seed, hidden_size, num_layers, {
            "vision_hidden_size": vision_hidden_size, "vision_depth": vision_depth,
            "max_image_tokens": max_image_tokens, "vocab_size": vocab_size, "extra_corpus": tuple(extra_corpus),
        })
        # mkdtemp (and safetensors) create owner-only modes; model dirs are meant to be shared.
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        staging.chmod(0o755)
        if overwrite and out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(staging, out)
            except OSError as exc:
                if out.exists():
                    raise FileExistsError(f"{out} was created by someone else while building") from exc
                raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m sole_r1_tools.tiny_model OUT_DIR [--family F] [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--family", choices=SUPPORTED_FAMILIES, default="qwen3_vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = build_tiny_model(
            args.out_dir,
            args.family,
            seed=args.seed,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
