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

from typing import Any

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.settings.generation import GenerationSettings
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

    def _pad_prompts(self, inputs: Any, pad_id: int | None) -> int:  # noqa: ANN401 - a processor's BatchFeature
        """Left-pad the prompts to the next :data:`PROMPT_BUCKET` multiple (one compiled shape)."""
        return pad_to_bucket(inputs, pad_id if pad_id is not None else 0)

    def _generate_kwargs(self, settings: GenerationSettings, pad_id: int | None) -> dict[str, Any]:
        """The transformers backend's options with a static cache (compiled on CPU when asked)."""
        kwargs = super()._generate_kwargs(settings, pad_id)
        kwargs["cache_implementation"] = "static"
        if self.compile_on_cpu and self.device == "cpu":
            from transformers import CompileConfig

            config = CompileConfig(mode="default", fullgraph=False, dynamic=False)
            # transformers compiles by itself only on accelerators
            config._compile_all_devices = True  # type: ignore[assignment]  # noqa: SLF001
            kwargs["compile_config"] = config
        return kwargs


__all__ = ["PROMPT_BUCKET", "StaticCacheBackend", "pad_to_bucket"]
