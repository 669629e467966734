#!/usr/bin/env python3
"""Vision patch embedding: the checkpoint's Conv3d vs the same weights as one GEMM.

Qwen-VL patch embeddings are ``Conv3d(kernel == stride)``: a linear map per patch. The backend
runs them as ``F.linear`` (``model.linear_patch_embedding``, default on); this prints what that
saves per composite for the built-in default model's shape and SOLE-R1-8B's (Qwen3-VL-8B:
1152-d, a 1176x784 composite = 3552 patches), on CPU in float32 and, when there is a GPU, on
CUDA in bfloat16. Random weights and inputs; the maximum output difference is printed too.

    .venv/bin/python bench/patch_embed_micro.py --n 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

SHAPES = {  # name: (embed_dim, patches per composite)
    "default model (64-d, 480x320 composite)": (64, 600),
    "SOLE-R1-8B (1152-d, 1176x784 composite)": (1152, 3552),
}


def _time(fn, n: int, device: str) -> list[float]:
    out = []
    for _ in range(n + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t) * 1e3)
    return out[2:]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20, help="timed repetitions per row")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = [("cpu", torch.float32)] + ([("cuda", torch.bfloat16)] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), {args.n} repetitions; ms per composite\n")
    print("| shape | device | dtype | Conv3d p50 | Conv3d p99 | GEMM p50 | GEMM p99 | speed-up (p50) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (dim, patches) in SHAPES.items():
        for device, dtype in devices:
            conv = nn.Conv3d(3, dim, kernel_size=(2, 16, 16), stride=(2, 16, 16)).to(device, dtype)
            x = torch.randn(patches, 3 * 2 * 16 * 16, device=device, dtype=dtype)
            w = conv.weight.reshape(dim, -1)
            with torch.inference_mode():
                a = conv(x.view(-1, 3, 2, 16, 16)).view(-1, dim)
                b = F.linear(x, w, conv.bias)
                diff = float((a.float() - b.float()).abs().max())
                # the lambdas are timed at once, before the loop variables move on
                tc = _time(lambda: conv(x.view(-1, 3, 2, 16, 16)), args.n, device)  # noqa: B023
                tl = _time(lambda: F.linear(x, w, conv.bias), args.n, device)  # noqa: B023
            q = lambda v: statistics.quantiles(v, n=100)[98] if len(v) > 1 else v[0]  # noqa: E731
            print(f"| {name} | {device} | {str(dtype).replace('torch.', '')} | {statistics.median(tc):.3f} | "
                  f"{q(tc):.3f} | {statistics.median(tl):.3f} | {q(tl):.3f} | "
                  f"{statistics.median(tc) / statistics.median(tl):.1f}x | {diff:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
