#!/usr/bin/env python3
"""Smoke run of every bench: each one with its smallest settings (seconds of measuring), to keep
the benches runnable as the code moves (CI). Prints one line per bench and exits 1 when any fails.

    .venv/bin/python bench/smoke.py                 # all
    .venv/bin/python bench/smoke.py ingest_bench server_bench

Each bench's smallest settings are its own options (``--smoke`` where it has one); the numbers
they print are not measurements.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = os.environ.get("BENCH_ROS_DOMAIN_ID", "159")

# bench -> its smallest command-line options
SMOKE: dict[str, list[str]] = {
    "composite_micro": ["--cameras", "2", "--columns", "2", "3", "--n", "2"],
    "ingest_micro": ["--n", "50"],
    "ingest_bench": ["--smoke", "--domain", DOMAIN],
    "latency_bench": ["--steps", "1", "--cameras", "1", "--max-new-tokens", "8", "--domain", DOMAIN],
    "memory_bench": ["--duration", "2", "--warmup", "1", "--sample", "0.25", "--cameras", "1", "--print-every", "1",
                     "--domain", DOMAIN],
    "patch_embed_micro": ["--n", "1"],
    "gpu_sole_r1_8b": ["--tiny", "--batch", "1", "--new-tokens", "4", "--static-compile", "off"],
    "gpu_scorer_8b": ["--tiny"],
    "on_policy_data": ["--episodes", "1", "--workers", "1"],
    "sft_step": ["--steps", "1", "--episodes", "1", "--batch-size", "1"],
    "training_data_memory": ["--episodes", "2", "--workers", "1"],
    "vision_attention_micro": ["--images", "1", "--n", "1"],
    "server_bench": ["--smoke"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benches", nargs="*", default=list(SMOKE), help=f"some of: {', '.join(SMOKE)}")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per bench")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.benches) - set(SMOKE))
    if unknown:
        ap.error(f"unknown benches {unknown}; choose from {', '.join(SMOKE)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           "ROS_DOMAIN_ID": DOMAIN, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    failed = []
    for name in args.benches:
        command = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *SMOKE[name]]
        t0 = time.monotonic()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
            ok, tail = done.returncode == 0, (done.stdout + done.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            ok, tail = False, f"timed out after {args.timeout:.0f} s"
        print(f"{'ok  ' if ok else 'FAIL'} {name:<24} {time.monotonic() - t0:6.1f} s   {' '.join(SMOKE[name])}",
              flush=True)
        if not ok:
            failed.append(name)
            print("    " + tail.replace("\n", "\n    "), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
