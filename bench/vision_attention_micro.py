#!/usr/bin/env python3
"""Vision attention: transformers' per-image loop vs one batched call for equally sized images.

Without flash attention, transformers' ``Qwen3VLVisionAttention`` splits the packed patch
sequence at ``cu_seqlens`` and calls attention once per image in a Python loop. The scorer's and
the training's images all have the composite's size, so the chunks could stack into one
``(images, heads, patches, head_dim)`` batch: the same function, one kernel call. This measures
what that would save (not applied in the package: docs/performance.md). The built-in default
model's vision tower (real weights) on a batch of composite-sized images (480x320: 600 patches
each), forward alone and forward + backward, the two variants alternating on the same inputs.
Prints the median milliseconds of each, their ratio and the largest difference of the outputs and
of the gradients.

    .venv/bin/python bench/vision_attention_micro.py --images 1 8 32 --n 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sole_r1_ros.backends.transformers_backend import TransformersBackend
from sole_r1_ros.settings.groups import ModelSettings

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "sole_r1_ros" / "data" / "default_model"


def use_batched_vision_attention(model: Any) -> int:
    """Switch ``model``'s Qwen3-VL vision attention to one attention call for equally sized images
    (the composites all are); other calls keep transformers' per-image loop. Returns how many
    modules were switched."""
    import sys
    import types

    switched = 0
    for module in model.modules():
        if type(module).__name__ not in ("Qwen3VLVisionAttention", "Qwen3VLMoeVisionAttention"):
            continue
        lib = sys.modules[type(module).__module__]
        needed = ("ALL_ATTENTION_FUNCTIONS", "eager_attention_forward", "apply_rotary_pos_emb_vision",
                  "is_flash_attention_requested")
        if (not all(hasattr(lib, name) for name in needed) or not hasattr(module, "qkv")
                or not hasattr(lib.ALL_ATTENTION_FUNCTIONS, "get_interface")):
            continue
        original = module.forward

        def forward(self: Any, hidden_states: Any, cu_seqlens: Any, position_embeddings: Any = None,
                    max_seqlen: Any = None, *, _original: Any = original, _lib: Any = lib, **kwargs: Any) -> Any:
            lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
            if (_lib.is_flash_attention_requested(self.config) or len(lengths) < 2 or position_embeddings is None
                    or any(n != lengths[0] for n in lengths)):
                return _original(hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                                 max_seqlen=max_seqlen, **kwargs)
            seq_length, images, per_image = hidden_states.shape[0], len(lengths), lengths[0]
            q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            q, k = _lib.apply_rotary_pos_emb_vision(q, k, *position_embeddings)
            # (patches, heads, dim) -> (images, heads, patches per image, dim)
            q, k, v = (t.reshape(images, per_image, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
            attention = _lib.ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, _lib.eager_attention_forward)  # noqa: SLF001 - as transformers' own
            out = attention(self, q, k, v, attention_mask=None, scaling=self.scaling,
                            dropout=self.attention_dropout if self.training else 0.0, is_causal=False, **kwargs)[0]
            return self.proj(out.reshape(seq_length, -1).contiguous())  # (images, patches, heads, dim) in order

        module.forward = types.MethodType(forward, module)
        switched += 1
    return switched



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--images", type=int, nargs="+", default=[1, 8, 32], help="images per call")
    p.add_argument("--n", type=int, default=20, help="timed repetitions of each variant")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def tower(batched: bool) -> torch.nn.Module:
        visual = TransformersBackend(ModelSettings(path=str(args.model), device="cpu")).model.model.visual
        if batched:
            assert use_batched_vision_attention(visual) == len(visual.blocks)
        return visual

    looped, batched = tower(False), tower(True)
    patch_dim = looped.patch_embed.proj.weight[0].numel()
    rows = []
    for images in args.images:
        grid = torch.tensor([[1, 20, 30]] * images)
        x = torch.randn(images * 600, patch_dim)

        def run(model: torch.nn.Module, backward: bool) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
            # only called within this iteration, so the loop's x and grid are the ones meant
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            if backward:
                out = model(x, grid_thw=grid).pooler_output  # noqa: B023
                (out.square().mean()).backward()
            else:
                with torch.inference_mode():
                    out = model(x, grid_thw=grid).pooler_output  # noqa: B023
            seconds = time.perf_counter() - t
            grads = [q.grad.clone() for q in model.parameters() if q.grad is not None] if backward else []
            return seconds, out.detach().clone(), grads

        for backward in (False, True):
            times: dict[str, list[float]] = {"loop": [], "batched": []}
            out_diff = grad_diff = 0.0
            for k in range(args.n + 1):
                t_loop, o_loop, g_loop = run(looped, backward)
                t_batch, o_batch, g_batch = run(batched, backward)
                if k:  # the first pair warms up
                    times["loop"].append(t_loop)
                    times["batched"].append(t_batch)
                out_diff = max(out_diff, float((o_loop - o_batch).abs().max()))
                grad_diff = max([grad_diff] + [float((a - b).abs().max()) for a, b in zip(g_loop, g_batch)])
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append({"images": images, "pass": "forward+backward" if backward else "forward",
                         "loop_ms": round(med["loop"], 1), "batched_ms": round(med["batched"], 1),
                         "batched_over_loop": round(med["batched"] / med["loop"], 3),
                         "max_output_difference": float(f"{out_diff:.3g}"),
                         "max_gradient_difference": float(f"{grad_diff:.3g}")})
            print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
