#!/usr/bin/env python3
"""SOLE-R1-8B step cost on a GPU: random weights, real architecture, no download.

Builds ``Qwen3VLForConditionalGeneration`` with the Qwen3-VL-8B-Instruct shape (SOLE-R1-8B's base)
directly on the device in bf16 with random weights, feeds it one composite image (default
1176x784 = 2 cameras x 3 timesteps, as the node sends) plus a text prompt of ``--text-tokens``
tokens, and forces ``--new-tokens`` generated tokens (``min_new_tokens == max_new_tokens``).

Reports, per configuration (attention implementation x static-cache/compile x image token budget
x generation cap x batch size):

* TTFT        - generate() start -> first token's logits (vision encoder + prefill), same call
* decode      - (step - TTFT) / (new_tokens - 1) of the same call: per-sequence and aggregate tokens/s
* step        - one full estimate: ``generate`` with ``--new-tokens`` forced tokens
* processor   - the HF image processor on the composite (CPU)
* peak memory - ``torch.cuda.max_memory_allocated``
* floor       - memory-bandwidth floor of one decode step: bytes read per step (decoder weights
                + lm_head + KV cache) / measured device copy bandwidth; ``% of floor`` =
                floor time / measured decode time per step (100 % = at the hardware floor)

Config values (verified against released Qwen3-VL-8B-based config.json files; transformers'
``Qwen3VLConfig()`` defaults are NOT the 8B shape - e.g. 32 layers, 32 kv heads, intermediate
22016, rope_theta 5e5, out_hidden 3584 - so every value is set explicitly here):
text hidden 4096, 36 layers, 32 heads, 8 kv heads, head_dim 128, intermediate 12288, vocab 151936,
rope_theta 5e6, interleaved MRoPE [24, 20, 20], untied lm_head; vision depth 27, hidden 1152,
intermediate 4304, 16 heads, patch 16, temporal patch 2, merge 2, 2304 position embeddings,
deepstack [8, 16, 24], out_hidden 4096.

One command on a GPU machine (about 5-10 minutes on an H100):

    .venv/bin/python bench/gpu_sole_r1_8b.py

More options:

    .venv/bin/python bench/gpu_sole_r1_8b.py --attn sdpa flash_attention_2 --static-compile both \\
        --max-pixels 0 401408 200704 --new-tokens 200 100 --batch 1 2 4 8 --json /tmp/gpu.json

CPU smoke test of the whole script (tiny config, fp32):

    .venv/bin/python bench/gpu_sole_r1_8b.py --tiny
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_TOKEN_ID = 151655
VIDEO_TOKEN_ID = 151656
VISION_START_ID = 151652
VISION_END_ID = 151653
EOS_ID = 151645
PAD_ID = 151643
QWEN3_VL_MAX_PIXELS = 16_777_216  # Qwen3-VL processor size.longest_edge
QWEN3_VL_MIN_PIXELS = 65_536


def model_config(tiny: bool):
    from transformers import Qwen3VLConfig

    if tiny:
        text = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                                     "mrope_section": [4, 2, 2], "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                      num_position_embeddings=2304, deepstack_visual_indexes=[0, 1])
    else:
        text = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act="silu",
                    max_position_embeddings=262144, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                                     "mrope_section": [24, 20, 20], "mrope_interleaved": True})
        vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=4096,
                      num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
                      hidden_act="gelu_pytorch_tanh")
    text.update(bos_token_id=151643, eos_token_id=EOS_ID, pad_token_id=None, attention_bias=False)
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN_ID,
                         video_token_id=VIDEO_TOKEN_ID, vision_start_token_id=VISION_START_ID,
                         vision_end_token_id=VISION_END_ID, tie_word_embeddings=False)


def build_model(config, device: str, dtype, attn: str, linear_patch_embedding: bool = True):
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from sole_r1_ros.backends.transformers_backend import use_linear_patch_embedding

    config._attn_implementation = attn  # noqa: SLF001 - set before construction
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        # random weights without reading a checkpoint
        model = Qwen3VLForConditionalGeneration._from_config(  # noqa: SLF001
            config, dtype=dtype, attn_implementation=attn
        )
    model.eval()
    if linear_patch_embedding:  # as the node does by default (model.linear_patch_embedding)
        use_linear_patch_embedding(model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return model, time.perf_counter() - t0


def image_processor(max_pixels: int):
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2,
                                 image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                 size={"shortest_edge": QWEN3_VL_MIN_PIXELS,
                                       "longest_edge": max_pixels or QWEN3_VL_MAX_PIXELS})


def composite(width: int, height: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 90)], -1).astype(np.uint8)
    rgb = rgb // 2 + rng.integers(0, 64, size=rgb.shape, dtype=np.uint8)
    return Image.fromarray(rgb)


def make_inputs(proc, image, batch: int, text_tokens: int, device: str):
    """input_ids = chat-like text + <vision_start> <image_pad>*n <vision_end> + text, per sample."""
    import torch

    t0 = time.perf_counter()
    out = proc(images=[image] * batch, return_tensors="pt")
    proc_s = (time.perf_counter() - t0) / batch
    grid = out["image_grid_thw"]
    n_img = int(grid[0].prod()) // 4  # merge 2x2
    rng = np.random.default_rng(1)
    head = text_tokens // 3
    rows = []
    for _ in range(batch):
        ids = rng.integers(1000, 150000, size=text_tokens).tolist()
        rows.append(ids[:head] + [VISION_START_ID] + [IMAGE_TOKEN_ID] * n_img + [VISION_END_ID] + ids[head:])
    input_ids = torch.tensor(rows, dtype=torch.long)
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": out["pixel_values"].to(device),
        "image_grid_thw": grid.to(device),
    }
    return inputs, n_img, input_ids.shape[1], proc_s, tuple(int(x) for x in grid[0])


def copy_bandwidth(device: str, dtype) -> float:
    """Device memory bandwidth in bytes/s from a large on-device copy (read + write)."""
    import torch

    if not device.startswith("cuda"):
        n = 64 * 2**20
        a = torch.empty(n, dtype=torch.uint8)
        b = torch.empty_like(a)
        b.copy_(a)
        t0 = time.perf_counter()
        for _ in range(5):
            b.copy_(a)
        return 2 * n * 5 / (time.perf_counter() - t0)
    n = 2 * 2**30  # 2 GiB
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(2):
        b.copy_(a)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    reps = 10
    for _ in range(reps):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    bw = 2 * n * reps / (start.elapsed_time(end) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return bw


def decode_bytes_per_step(model, config, context: int, batch: int) -> float:
    """Bytes a decode step must read: decoder layers + final norm + lm_head (not the embedding table,
    only one row per token is gathered; not the vision tower) + the KV cache of the context."""
    lm = model.model.language_model
    elem = next(model.parameters()).element_size()
    params = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    params += model.lm_head.weight.numel()
    t = config.text_config
    kv = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * context * batch * elem
    return params * elem + kv


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_generate(model, inputs, device: str, new_tokens: int, gen_kwargs: dict) -> tuple[float, float]:
    """One ``generate`` call; returns (seconds to the first token's logits, total seconds).
    The first-token time is taken inside the same call (a logits processor that synchronises the
    device once), so TTFT and decode come from one run."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    marks: list[float] = []

    class FirstToken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if not marks:
                sync(device)
                marks.append(time.perf_counter())
            return scores

    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             logits_processor=LogitsProcessorList([FirstToken()]), **gen_kwargs)
    sync(device)
    t1 = time.perf_counter()
    produced = out.shape[1] - inputs["input_ids"].shape[1]
    if produced != new_tokens:
        raise RuntimeError(f"generated {produced} tokens, expected {new_tokens}")
    return (marks[0] if marks else t1) - t0, t1 - t0


def median(xs):
    return float(np.median(xs)) if xs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny config on CPU (fp32): a smoke test of this script")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on cuda, fp32 on cpu) | bfloat16 | float16 | float32")
    ap.add_argument(
        "--attn", nargs="+", default=["sdpa"], help="attention implementations: sdpa flash_attention_2 eager"
    )
    ap.add_argument("--static-compile", choices=("off", "on", "both"), default="both",
                    help="static KV cache (transformers then torch.compile's the decode step on CUDA)")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--width", type=int, default=1176)
    ap.add_argument("--height", type=int, default=784)
    ap.add_argument("--max-pixels", nargs="+", type=int, default=[0],
                    help="image token budget (processor longest_edge, pixels); 0 = Qwen3-VL default")
    ap.add_argument("--new-tokens", nargs="+", type=int, default=[200], help="forced generation lengths (caps)")
    ap.add_argument("--text-tokens", type=int, default=300, help="prompt text tokens besides the image")
    ap.add_argument(
        "--greedy", action="store_true", help="greedy instead of the release's sampling (T=1, top_p .9, top_k 50)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--conv-patch-embedding", action="store_true",
                    help="keep the checkpoint's Conv3d patch embedding "
                    "(the node's model.linear_patch_embedding:=false)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    if args.tiny:
        if args.new_tokens == [200]:
            args.new_tokens = [16]
        if args.batch == [1, 2, 4, 8]:
            args.batch = [1, 2]
        args.repeats = min(args.repeats, 2)
        if args.static_compile == "both":
            args.static_compile = "off"  # static cache on CPU works but is not compiled; keep the smoke test quick
    elif not device.startswith("cuda"):
        print("warning: the 8B model on CPU will take very long; use --tiny for a smoke test", file=sys.stderr)

    config = model_config(args.tiny)
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(f"device {device} ({gpu}), dtype {str(dtype).replace('torch.', '')}, torch {torch.__version__}, "
          f"{'TINY config' if args.tiny else 'Qwen3-VL-8B shape'}", flush=True)
    bw = copy_bandwidth(device, dtype)
    print(f"measured device copy bandwidth: {bw / 1e9:.0f} GB/s", flush=True)
    image = composite(args.width, args.height)
    gen_kwargs = {"do_sample": not args.greedy, "pad_token_id": PAD_ID, "eos_token_id": EOS_ID}
    if not args.greedy:
        gen_kwargs.update(temperature=1.0, top_p=0.9, top_k=50)

    rows = []
    compile_modes = {"off": [False], "on": [True], "both": [False, True]}[args.static_compile]
    for attn in args.attn:
        try:
            model, build_s = build_model(config, device, dtype, attn, not args.conv_patch_embedding)
        except Exception as err:  # noqa: BLE001 - e.g. flash_attention_2 not installed
            print(f"attn={attn}: cannot build: {type(err).__name__}: {err}", flush=True)
            continue
        n_params = sum(p.numel() for p in model.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        print(f"attn={attn}: built {n_params / 1e9:.2f} B params ({weight_bytes / 2**30:.1f} GiB) in {build_s:.1f} s",
              flush=True)
        for static, max_pixels, new_tokens, batch in itertools.product(
                compile_modes, args.max_pixels, args.new_tokens, args.batch):
            kw = dict(gen_kwargs)
            if static:
                kw["cache_implementation"] = "static"
            proc = image_processor(max_pixels)
            inputs, n_img, prompt_len, proc_s, grid = make_inputs(proc, image, batch, args.text_tokens, device)
            on_gpu = device.startswith("cuda")
            label = f"{attn}{('+static+compile' if on_gpu else '+static(no compile on cpu)') if static else ''}"
            try:
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                # warm-up (compiles on the first static-cache call)
                t_warm = sum(timed_generate(model, inputs, device, new_tokens, kw))
                runs = [timed_generate(model, inputs, device, new_tokens, kw) for _ in range(args.repeats)]
                ttft = median([r[0] for r in runs])
                step = median([r[1] for r in runs])
                per_tok = median([(r[1] - r[0]) / max(1, new_tokens - 1) for r in runs])
            except torch.OutOfMemoryError:
                print(f"{label} batch {batch}: out of memory", flush=True)
                torch.cuda.empty_cache()
                rows.append({"config": label, "batch": batch, "error": "OOM"})
                continue
            except Exception as err:  # noqa: BLE001 - report and go on with the other configurations
                print(f"{label} batch {batch}: {type(err).__name__}: {err}", flush=True)
                rows.append({"config": label, "batch": batch, "error": f"{type(err).__name__}: {str(err)[:120]}"})
                continue
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
            ctx = prompt_len + new_tokens // 2
            floor_s = decode_bytes_per_step(model, config, ctx, batch) / bw
            row = {
                "config": label, "batch": batch, "max_pixels": max_pixels or QWEN3_VL_MAX_PIXELS,
                "grid_thw": grid, "image_tokens": n_img, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
                "processor_ms": proc_s * 1e3, "ttft_ms": ttft * 1e3, "decode_ms_per_token": per_tok * 1e3,
                "decode_tok_s_per_seq": 1 / per_tok, "decode_tok_s_total": batch / per_tok,
                "step_ms": step * 1e3, "step_ms_per_estimate": step * 1e3 / batch, "peak_mem_gib": peak,
                "floor_ms_per_token": floor_s * 1e3, "pct_of_floor": 100 * floor_s / per_tok,
                "first_call_s": t_warm,  # includes torch.compile for static cache
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

    print(f"\n{gpu}, copy bandwidth {bw / 1e9:.0f} GB/s, composite {args.width}x{args.height}, "
          f"{args.text_tokens} text tokens, {'greedy' if args.greedy else 'sampling'}\n")
    heads = ["config", "batch", "img tok", "prompt tok", "new tok", "proc ms", "TTFT ms", "decode ms/tok",
             "tok/s/seq", "tok/s total", "step ms", "ms/estimate", "peak GiB", "floor ms/tok", "% of floor"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | {r['batch']} | {r['error']} |")
            continue
        print(f"| {r['config']} | {r['batch']} | {r['image_tokens']} | {r['prompt_tokens']} | {r['new_tokens']} | "
              f"{r['processor_ms']:.1f} | {r['ttft_ms']:.1f} | {r['decode_ms_per_token']:.2f} | "
              f"{r['decode_tok_s_per_seq']:.1f} | {r['decode_tok_s_total']:.1f} | {r['step_ms']:.0f} | "
              f"{r['step_ms_per_estimate']:.0f} | {r['peak_mem_gib']:.1f} | {r['floor_ms_per_token']:.2f} | "
              f"{r['pct_of_floor']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": gpu, "bandwidth_Bps": bw, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
