#!/usr/bin/env python3
"""The node's own scoring path with the SOLE-R1-8B shape on a GPU: in-process eager against the
static-cache fast path, and ``transformers serve`` with 1 and 8 requests in flight.

Where ``bench/gpu_sole_r1_8b.py`` times bare ``generate`` calls, this one goes through what the node
runs: ``load_backend`` on a checkpoint directory, ``ProgressScorer`` (composite of two 640x480
cameras x 3 timesteps = 1176x784, the SOLE-R1 prompt, the answer parser), and, for the server
part, ``model.backend: server`` (PNG data URL, HTTP) against ``transformers serve``.

1. **build** - Qwen3VLForConditionalGeneration with the Qwen3-VL-8B shape (gpu_sole_r1_8b's config,
   vocabulary 151936 kept) and random bf16 weights, built on the GPU (no download), saved as a
   checkpoint directory with the shipped default model's tokenizer, chat template and processor
   (its pixel budget raised to Qwen3-VL's, so the composite is 888 image tokens). The special
   token ids are the shipped tokenizer's; random weights never stop early, so each estimate
   decodes ``--max-new-tokens`` tokens and ends ``parse_failed`` (timing, not quality).
2. **inprocess** - for ``transformers`` (HF eager cache) and ``transformers_static`` (static cache,
   prompts padded to 64-token buckets; transformers compiles its decode step on CUDA): one warm-up
   episode, then ``--steps`` scored steps. Per estimate: latency, and decode ms/token from the same
   composites scored again with 1 new token (prefill only): (t_N - t_1) / (N - 1). Against the
   memory-bandwidth floor (decoder + lm_head bytes + KV cache / measured copy bandwidth).
   Target: decode <= 1.5x the floor at batch 1.
3. **serve** - ``transformers serve`` of the saved directory on the GPU, then ``--concurrency``
   (default 1 and 8) independent episodes in threads through the server backend: estimates/s,
   latency p50/p99, and the throughput ratio of 8 to 1 (target >= 5x). (``transformers serve
   --continuous-batching`` is no option worth a run: transformers 5.23 logs "Qwen3VLForConditionalGeneration
   does not support continuous batching. Falling back to sequential generation.")

On an H200 (target: under 10 minutes; prints a line per measurement as it goes). That machine's
image has torch and an older transformers but no fastapi/uvicorn/openai: ``bash bench/gpu_wheels.sh``
here first puts the pinned wheels in ``.whl/`` (git-ignored), then one device run, carrying ``.whl``:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/gpu_scorer_8b.py --json $OUT/gpu_scorer.json

CPU smoke test of the whole script (tiny shape, fp32, a CPU ``transformers serve``; ~1 minute):

    .venv/bin/python bench/gpu_scorer_8b.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gpu_sole_r1_8b as shape  # noqa: E402 - the 8B config, model builder, bandwidth and floor
from sole_r1_ros.backends.default_model import SHIPPED_MODEL_DIR  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
GOAL = "push the red block into the green zone"
ROLES = ("external", "wrist")


def pct(values: list[float], q: float) -> float:
    """Percentile (nan when empty)."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def log(line: str) -> None:
    """Progress as it happens (a device lease shows only the output's tail)."""
    print(line, flush=True)


def build_checkpoint(out_dir: Path, tiny: bool, device: str, dtype: Any) -> tuple[Any, float]:
    """Save a random-weight model of the 8B (or tiny) shape as a checkpoint directory; its config."""
    import torch

    shipped = json.loads((SHIPPED_MODEL_DIR / "config.json").read_text())
    config = shape.model_config(tiny)
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(config, key, shipped[key])  # the shipped tokenizer's ids
    shipped_text = shipped["text_config"]
    config.text_config.eos_token_id = shipped_text["eos_token_id"]
    config.text_config.pad_token_id = shipped_text["pad_token_id"]
    config.text_config.bos_token_id = shipped_text.get("bos_token_id")
    t0 = time.perf_counter()
    model, _ = shape.build_model(config, device, dtype, "sdpa", linear_patch_embedding=False)
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir, max_shard_size="5GB")
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    for name in TOKENIZER_FILES:
        shutil.copy(SHIPPED_MODEL_DIR / name, out_dir / name)
    processor = json.loads((SHIPPED_MODEL_DIR / "processor_config.json").read_text())
    processor["image_processor"]["size"] = {"shortest_edge": shape.QWEN3_VL_MIN_PIXELS,
                                            "longest_edge": shape.QWEN3_VL_MAX_PIXELS}
    (out_dir / "processor_config.json").write_text(json.dumps(processor, indent=1))
    return config, time.perf_counter() - t0


def episode_views(rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
    """Frame ``k``: two 640x480 noise-textured views (only the pixels' shape matters to timing)."""
    base = np.full((480, 640, 3), 40 + (k * 7) % 150, dtype=np.uint8)
    return {role: np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8) for role in ROLES}


def part_inprocess(model_dir: Path, args: argparse.Namespace, device: str, config: Any,
                   bandwidth: float) -> list[dict[str, Any]]:
    """Eager against the static-cache path through ``ProgressScorer``."""
    import torch

    from sole_r1_ros.backends.registry import load_backend
    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_ros.core.scorer import ProgressScorer
    from sole_r1_ros.settings.generation import GenerationSettings
    from sole_r1_ros.settings.groups import ModelSettings

    protocol = load_protocol(None)
    rows = []
    for backend_name in args.backends:
        t0 = time.perf_counter()
        backend = load_backend(ModelSettings(backend=backend_name, path=str(model_dir), device=device,
                                             dtype=args.dtype_name, attn_implementation="sdpa"))
        load_s = time.perf_counter() - t0
        full = ProgressScorer(backend, protocol, generation=GenerationSettings.greedy(args.max_new_tokens))
        prefill = ProgressScorer(backend, protocol, generation=GenerationSettings.greedy(1))
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for scorer in (full, prefill):  # the first frame costs no model call; the second compiles (static cache)
            warm = scorer.new_episode(GOAL, ROLES)
            for k in range(2):
                scorer.score(warm, k, episode_views(rng, k))
        first_call_s = time.perf_counter() - t0
        ep, ep1 = full.new_episode(GOAL, ROLES), prefill.new_episode(GOAL, ROLES)
        frames = [episode_views(rng, k) for k in range(args.steps + 1)]
        full.score(ep, 0, frames[0])
        prefill.score(ep1, 0, frames[0])
        lat_full, lat_one, tokens, prompt = [], [], [], []
        for k in range(1, args.steps + 1):
            e = full.score(ep, k, frames[k])
            lat_full.append(e.timings["model_s"])
            tokens.append(e.new_tokens)
            prompt.append(e.prompt_tokens)
            e1 = prefill.score(ep1, k, frames[k])
            lat_one.append(e1.timings["model_s"])
            if e.status.value == "error" or e1.status.value == "error":
                raise RuntimeError(f"{backend_name}: {e.error or e1.error}")
        new = statistics.median(tokens)
        per_token = (statistics.median(lat_full) - statistics.median(lat_one)) / max(1.0, new - 1)
        context = int(statistics.median(prompt) + new / 2)
        floor = shape.decode_bytes_per_step(backend.model, config, context, 1) / bandwidth
        row = {"part": "inprocess", "backend": backend_name, "load_s": load_s, "first_calls_s": first_call_s,
               "prompt_tokens": statistics.median(prompt), "new_tokens": new,
               "estimate_s_p50": statistics.median(lat_full), "prefill_s_p50": statistics.median(lat_one),
               "decode_ms_per_token": per_token * 1e3, "floor_ms_per_token": floor * 1e3,
               "x_floor": per_token / floor,
               "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None}
        log(json.dumps(row))
        rows.append(row)
        backend.close()
        del backend, full, prefill
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return rows


def start_server(model_dir: Path, device: str, flags: list[str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``transformers serve`` of ``model_dir`` on 127.0.0.1; waits for /health (at most 600 s)."""
    from server_bench import free_port

    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="transformers_serve_", suffix=".log")[1])
    # the console script may not be installed next to this interpreter (wheels unpacked with --target)
    command = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; "
               "sys.argv[0] = 'transformers'; sys.exit(main())", "serve"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as out:
        proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port), "--device", device, *flags,
                                 str(model_dir)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if json.loads(reply.read()).get("status") == "ok":
                    return proc, url, log_path
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"transformers serve did not come up:\n{log_path.read_text()[-2000:]}")


def serve_episodes(url: str, n: int, steps: int, max_new_tokens: int, timeout_s: float) -> dict[str, Any]:
    """``n`` episodes in parallel threads through the server backend, ``steps`` scored steps each."""
    from server_bench import run_episodes
    from sole_r1_ros.core.scorer import build_scorer
    from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings

    scorer = build_scorer(ModelSettings(backend="server", url=url, dialect="transformers", max_concurrency=n,
                                        timeout_s=timeout_s, retries=0),
                          DecodingSettings(greedy=True, max_new_tokens=max_new_tokens))
    try:
        latencies, tokens, errors, wall = run_episodes(scorer, ROLES, n, steps)
    finally:
        scorer.model.close()
    return {"in_flight": n, "estimates": len(latencies), "errors": errors,
            "estimates_per_s": (len(latencies) - errors) / wall, "latency_s_p50": pct(latencies, 50),
            "latency_s_p99": pct(latencies, 99), "new_tokens_mean": statistics.mean(tokens) if tokens else 0.0,
            "wall_s": wall}


def part_serve(model_dir: Path, args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """``transformers serve`` at each concurrency."""
    flags = [*args.serve_flags.split(), *(["--dtype", "bfloat16"] if device.startswith("cuda") else [])]
    t0 = time.perf_counter()
    try:
        proc, url, log_path = start_server(model_dir, device, flags)
    except RuntimeError as err:
        log(f"serve: {err}")
        return [{"part": "serve", "error": str(err)[-500:]}]
    log(f"serve: up in {time.perf_counter() - t0:.1f} s at {url}")
    rows: list[dict[str, Any]] = []
    try:
        serve_episodes(url, 1, 1, args.max_new_tokens, args.timeout_s)  # warm-up
        base = None
        for n in args.concurrency:
            row = {"part": "serve", **serve_episodes(url, n, args.serve_steps, args.max_new_tokens,
                                                       args.timeout_s)}
            base = base or row["estimates_per_s"]
            row["throughput_x_of_first"] = row["estimates_per_s"] / base if base else float("nan")
            log(json.dumps(row))
            rows.append(row)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if any(r.get("errors") for r in rows):
            log(f"serve log tail:\n{log_path.read_text()[-1500:]}")
        log_path.unlink(missing_ok=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Build, measure, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shape on CPU (fp32): a smoke test of this script")
    ap.add_argument("--parts", nargs="+", choices=("inprocess", "serve"), default=["inprocess", "serve"])
    ap.add_argument("--backends", nargs="+", default=["transformers", "transformers_static"])
    ap.add_argument("--steps", type=int, default=3, help="scored steps per in-process episode")
    ap.add_argument("--serve-steps", type=int, default=1, help="scored steps per episode against the server")
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--serve-flags", default="", help="extra flags for transformers serve, e.g. '--compile'")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--model-dir", default="", help="reuse or keep the checkpoint here (default: a temporary one)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    args.dtype_name = "bfloat16" if device == "cuda" else "float32"
    if args.tiny:
        args.max_new_tokens = min(args.max_new_tokens, 8)
        args.steps = min(args.steps, 1)
        args.concurrency = [1, 2] if args.concurrency == [1, 8] else args.concurrency
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    log(f"device {device} ({gpu}), torch {torch.__version__}, {'TINY shape' if args.tiny else 'Qwen3-VL-8B shape'}")
    bandwidth = shape.copy_bandwidth(device, dtype)
    log(f"device copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    keep = bool(args.model_dir)
    model_dir = Path(args.model_dir or tempfile.mkdtemp(prefix="sole_r1_8b_shape_"))
    rows: list[dict[str, Any]] = []
    try:
        if (model_dir / "config.json").exists():
            from transformers import Qwen3VLConfig

            config = Qwen3VLConfig.from_pretrained(model_dir)
            log(f"reusing {model_dir}")
        else:
            model_dir.mkdir(parents=True, exist_ok=True)
            config, build_s = build_checkpoint(model_dir, args.tiny, device, dtype)
            size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**30
            log(f"built and saved the checkpoint ({size:.1f} GiB) in {build_s:.1f} s")
        if "inprocess" in args.parts:
            rows += part_inprocess(model_dir, args, device, config, bandwidth)
        if "serve" in args.parts:
            rows += part_serve(model_dir, args, device)
    finally:
        if not keep:
            shutil.rmtree(model_dir, ignore_errors=True)

    print(f"\n{gpu}, copy bandwidth {bandwidth / 1e9:.0f} GB/s, 2 cameras (1176x784 composite), greedy, "
          f"{args.max_new_tokens} new tokens at most\n")
    print("| in-process backend | prompt tok | new tok | estimate s | prefill s | decode ms/tok | floor ms/tok "
          "| x floor | load s | first calls s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["part"] == "inprocess":
            print(f"| {r['backend']} | {r['prompt_tokens']:.0f} | {r['new_tokens']:.0f} | {r['estimate_s_p50']:.2f} "
                  f"| {r['prefill_s_p50']:.3f} | {r['decode_ms_per_token']:.2f} | {r['floor_ms_per_token']:.2f} "
                  f"| {r['x_floor']:.2f} | {r['load_s']:.1f} | {r['first_calls_s']:.1f} |")
    print("\n| transformers serve, in flight | estimates/s | x of the first | latency p50 s | latency p99 s | errors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["part"] == "serve":
            if "error" in r:
                print("| failed to start: see above | | | | | |")
                continue
            print(f"| {r['in_flight']} | {r['estimates_per_s']:.3f} | "
                  f"{r['throughput_x_of_first']:.2f} | {r['latency_s_p50']:.2f} | {r['latency_s_p99']:.2f} | "
                  f"{r['errors']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": gpu, "bandwidth_Bps": bandwidth, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
