"""In-process fast path (``model.backend: transformers_static``): the transformers backend with a
static KV cache and prompts left-padded to a fixed length bucket.

For a single robot with its own GPU. A static cache has a fixed shape, so the decode step can be
compiled (``torch.compile``; transformers compiles it by itself on CUDA when the cache is static)
and replayed without Python overhead; padding every prompt up to a multiple of
:data:`PROMPT_BUCKET` tokens keeps that shape the same while the goal and the previous percent
change the prompt's length by a few tokens, so it compiles once, not once per length. Padding is
on the left with the attention mask zero there, as for any batched generation: greedy answers
equal the eager path's (``test_static_cache.py``).

On a CPU, compiling is off unless ``compile_on_cpu`` is set (the first call then compiles for
30-90 s on a 2-core machine).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from sole_r1_ros.backends.contract import BatchTimings, Conversation, Generation
from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.core.protocol import GenerationSettings
from sole_r1_ros.errors import InferenceError
from sole_r1_ros.settings.groups import ModelSettings

PROMPT_BUCKET = 64  # tokens: one image (~900 tokens for SOLE-R1-8B) + ~300 text tokens span 1-2 buckets of variation


def pad_to_bucket(inputs: Any, pad_id: int, bucket: int = PROMPT_BUCKET) -> int:  # noqa: ANN401 - BatchFeature
    """Left-pad every per-token tensor of ``inputs`` (``input_ids`` with ``pad_id``, masks and
    token types with 0) to the next multiple of ``bucket``; returns the padded length."""
    import torch

    ids = inputs["input_ids"]
    length = int(ids.shape[1])
    target = -(-length // bucket) * bucket
    if target == length:
        return length
    for key in list(inputs.keys()):
        value = inputs[key]
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == ids.shape:
            fill = pad_id if key == "input_ids" else 0
            pad = torch.full((value.shape[0], target - length), fill, dtype=value.dtype, device=value.device)
            inputs[key] = torch.cat([pad, value], dim=1)
    return target


class StaticCacheBackend(TransformersBackend):
    """:class:`TransformersBackend` generating with a static cache over bucket-padded prompts."""

    def __init__(self, options: ModelSettings, *, compile_on_cpu: bool = False) -> None:
        super().__init__(options)
        self.compile_on_cpu = compile_on_cpu

    def describe(self) -> dict[str, Any]:
        """The transformers backend's facts, plus the cache and bucket."""
        return {**super().describe(), "cache": "static", "prompt_bucket": PROMPT_BUCKET}

    def generate(
        self,
        conversations: Sequence[Conversation],
        images: Sequence[Image.Image],
        settings: GenerationSettings,
        timings: BatchTimings | None = None,
    ) -> list[Generation]:
        """As :meth:`TransformersBackend.generate`, with a static cache and bucket-padded prompts."""
        if len(conversations) != len(images) or not conversations:
            raise ValueError("need one image per conversation and at least one conversation")
        torch = self._torch
        timings = timings if timings is not None else BatchTimings()
        t0 = time.perf_counter()
        tokenizer = self.processor.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        inputs = self.processor(text=[self.prompt_text(c) for c in conversations], images=list(images),
                                return_tensors="pt", padding=True)
        prompt_len = pad_to_bucket(inputs, pad_id)
        inputs = inputs.to(self.device)
        t1 = time.perf_counter()
        kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
                                  "cache_implementation": "static", "pad_token_id": pad_id,
                                  "stopping_criteria": self._stopping_criteria()}
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.compile_on_cpu and self.device == "cpu":
            from transformers import CompileConfig

            config = CompileConfig(mode="default", fullgraph=False, dynamic=False)
            # transformers compiles by itself only on accelerators
            config._compile_all_devices = True  # type: ignore[assignment]  # noqa: SLF001
            kwargs["compile_config"] = config
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
        return [
            Generation(text=reply, prompt_tokens=int(attention[row].sum()),
                       new_tokens=int((new_ids[row] != pad_id).sum()))
            for row, reply in enumerate(replies)
        ]


__all__ = ["PROMPT_BUCKET", "StaticCacheBackend", "pad_to_bucket"]
