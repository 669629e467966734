"""Hugging Face ``transformers`` backend: load a Qwen-VL checkpoint from disk and generate replies.

No network: the hub is put in offline mode before ``transformers`` is imported here, every load
passes ``local_files_only=True``, weights load from safetensors only, and remote code stays off
unless asked. The checkpoint directory is treated as read-only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from sole_r1_ros.backends.contract import (
    PROTOCOL_TAGS,
    REPETITION_PENALTY,
    BatchTimings,
    Conversation,
    Generation,
    VisionLanguageModel,
    check_batch,
    special_text_order,
    split_special_texts,
)
from sole_r1_ros.errors import InferenceError, ModelLoadError
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import ModelSettings

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import StoppingCriteriaList

SUPPORTED_MODEL_TYPES = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl")


def use_linear_patch_embedding(model: nn.Module) -> int:
    """Run every non-overlapping ``Conv3d`` patch embedding (Qwen2-VL, Qwen2.5-VL, Qwen3-VL
    ``*.patch_embed.proj``: stride == kernel) as the linear layer it is: same weights, same
    function, one GEMM instead of a convolution. oneDNN's and some cuDNN versions' Conv3d kernels
    are many times slower for this shape (measured: docs/performance.md; upstream:
    huggingface/transformers#45750). Only the instances' ``forward`` changes (no class patching,
    checkpoints save as usual). Returns how many modules were switched."""
    import types

    import torch.nn.functional as F
    from torch import nn

    def forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        proj = self.proj
        assert isinstance(proj, nn.Conv3d)
        w = proj.weight
        out = F.linear(hidden_states.reshape(-1, w[0].numel()).to(w.dtype), w.reshape(w.shape[0], -1), proj.bias)
        return out.view(-1, w.shape[0])

    switched = 0
    for name, module in model.named_modules():
        proj = getattr(module, "proj", None)
        if (name.endswith("patch_embed") and isinstance(proj, nn.Conv3d) and proj.stride == proj.kernel_size
                and proj.padding == (0, 0, 0) and proj.dilation == (1, 1, 1) and proj.groups == 1):
            module.forward = types.MethodType(forward, module)
            switched += 1
    return switched


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' requested but CUDA is not available")
    return device


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype '{dtype}'; choose one of auto, {', '.join(table)}")
    return table[dtype]


def _check_model_dir(path: Path, trust_remote_code: bool) -> dict[str, Any]:
    if not path.is_dir():
        raise ModelLoadError(f"model directory '{path}' does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"'{path}' is not a model directory: config.json is missing")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"'{config_file}' is unreadable or not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"'{config_file}' does not hold a JSON object")
    if config.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"the model in '{path}' needs remote code (config.json has auto_map); "
            "this is off by default: set trust_remote_code only for code you have reviewed"
        )
    if not any(path.glob("*.safetensors")):
        raise ModelLoadError(f"no *.safetensors weights in '{path}' (only safetensors are loaded)")
    return config


class TransformersBackend(VisionLanguageModel):
    """A Qwen-VL image-text-to-text model plus its processor, ready to generate in-process."""

    def __init__(self, options: ModelSettings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(options.path).expanduser()
        config = _check_model_dir(path, options.trust_remote_code)
        model_type = config.get("model_type", "?")
        if model_type not in SUPPORTED_MODEL_TYPES and not options.trust_remote_code:
            raise ModelLoadError(
                f"model type '{model_type}' in '{path}' is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        self.options = options
        self.model_type = model_type
        self.device = _resolve_device(options.device)
        self.path = path
        # the Auto* classes resolve to the checkpoint's own model and processor classes at run time
        self.model: Any = None
        self.processor: Any = None
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(
                path, local_files_only=True, trust_remote_code=options.trust_remote_code
            )
            kwargs: dict[str, Any] = {
                "local_files_only": True,
                "use_safetensors": True,
                "trust_remote_code": options.trust_remote_code,
                "dtype": _resolve_dtype(options.dtype, self.device),
            }
            if options.attn_implementation:
                kwargs["attn_implementation"] = options.attn_implementation
            self.model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        except ModelLoadError:
            raise
        except Exception as err:
            raise ModelLoadError(f"failed to load model from '{path}': {type(err).__name__}: {err}") from err
        if self.device == "cpu" and options.cpu_threads > 0:
            torch.set_num_threads(options.cpu_threads)
        self.model.to(self.device)
        self.model.eval()
        self.linear_patch_embeddings = use_linear_patch_embedding(self.model) if options.linear_patch_embedding else 0
        self.processor.tokenizer.padding_side = "left"
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is not None and (options.min_pixels or options.max_pixels):
            # transformers 5 keeps the pixel budget in size{shortest_edge, longest_edge}
            if options.min_pixels:
                image_processor.size["shortest_edge"] = options.min_pixels
            if options.max_pixels:
                image_processor.size["longest_edge"] = options.max_pixels
        self._torch = torch
        self._cancel = threading.Event()
        tokenizer = self.processor.tokenizer
        added = set(getattr(tokenizer, "all_special_tokens", [])) | set(tokenizer.get_added_vocab())
        # plus the protocol's tags, tokens or not: the server backend's set, so both escape alike
        self._added_tokens = special_text_order(added | set(PROTOCOL_TAGS))
        self.dtype = str(self.model.dtype).replace("torch.", "")
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        """Short facts for logs and diagnostics."""
        return {
            "path": str(self.path),
            "model_type": self.model_type,
            "device": self.device,
            "dtype": self.dtype,
            "parameters": self.parameters,
        }

    def escape_special_text(self, text: str) -> str:
        """Make user text (the goal) unable to form the tokenizer's added/special tokens or the
        protocol's tags (:data:`~sole_r1_ros.backends.contract.PROTOCOL_TAGS`, also where the
        tokenizer has no such token), so a goal containing e.g. ``<|im_end|>`` or ``</answer>``
        stays plain text and cannot break the prompt. A zero-width space after the first
        character splits each such string."""
        return split_special_texts(text, self._added_tokens)

    def prompt_text(self, messages: list[dict[str, Any]]) -> str:
        """The exact prompt string the model sees (the checkpoint's own chat template)."""
        text: str = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text

    def generate(
        self,
        conversations: Sequence[Conversation],
        images: Sequence[Image.Image],
        settings: GenerationSettings,
        timings: BatchTimings | None = None,
    ) -> list[Generation]:
        """Generate one reply per (conversation, image) pair in a single batched forward pass."""
        check_batch(conversations, images)
        torch = self._torch
        timings = timings if timings is not None else BatchTimings()
        t0 = time.perf_counter()
        tokenizer = self.processor.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        texts = [self.prompt_text(c) for c in conversations]
        inputs = self.processor(text=texts, images=list(images), return_tensors="pt", padding=True)
        prompt_len = self._pad_prompts(inputs, pad_id)
        inputs = inputs.to(self.device)
        t1 = time.perf_counter()
        kwargs = self._generate_kwargs(settings, pad_id)
        try:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                output = self.model.generate(**inputs, **kwargs)
        except torch.OutOfMemoryError as err:
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            raise InferenceError(f"out of memory during generation: {err}", out_of_memory=True) from err
        except Exception as err:
            raise InferenceError(f"generation failed: {type(err).__name__}: {err}") from err
        t2 = time.perf_counter()
        timings.processor_s += t1 - t0
        timings.model_s += t2 - t1
        new_ids = output[:, prompt_len:]
        replies = self.processor.batch_decode(new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        attention = inputs["attention_mask"]
        results = []
        for row, reply in enumerate(replies):
            generated = new_ids[row]
            n_new = int((generated != pad_id).sum()) if pad_id is not None else len(generated)
            results.append(Generation(text=reply, prompt_tokens=int(attention[row].sum()), new_tokens=n_new))
        return results

    def _pad_prompts(self, inputs: Any, pad_id: int | None) -> int:  # noqa: ANN401 - a processor's BatchFeature
        """The prompts' token length as ``generate`` sees it (a subclass may pad them first)."""
        return int(inputs["input_ids"].shape[1])

    def _generate_kwargs(self, settings: GenerationSettings, pad_id: int | None) -> dict[str, Any]:
        """``model.generate`` options for ``settings``: sampling, the cancel criterion, padding.
        ``repetition_penalty`` is always the reference's neutral 1.0, so a checkpoint's
        ``generation_config.json`` cannot bring in another."""
        kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
                                  "repetition_penalty": REPETITION_PENALTY}
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        kwargs["stopping_criteria"] = self._stopping_criteria()
        kwargs["pad_token_id"] = pad_id
        return kwargs

    def cancel(self) -> None:
        """Make a generation in flight (and later ones) stop at the next token: for fast shutdown."""
        self._cancel.set()

    def _stopping_criteria(self) -> StoppingCriteriaList:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        cancel = self._cancel

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        return StoppingCriteriaList([_Cancelled()])

    def close(self) -> None:
        """Free the model (and GPU memory)."""
        self.model = None
        self.processor = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
