#!/usr/bin/env python3
"""Resident memory of building training examples, with and without giving freed heap pages back
(``sole_r1_tools.training.heap.release_free_heap``, called by ``train.map_episodes``).

Each configuration runs in a fresh process: it builds the SFT examples of ``--episodes``
synthetic episodes through ``train.build_examples`` (``--workers`` processes) with a freshly
built tiny Qwen3-VL of the shipped architecture, then prints the bytes the examples keep (uint8
patches + token ids) against how much the process's resident memory grew.

    .venv/bin/python bench/training_data_memory.py --episodes 60 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from sole_r1_tools.training import train as T
from sole_r1_tools.training.dataset import training_specs

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

model_dir, episodes, workers, trim = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if not trim:
    T.release_free_heap = lambda: False
T._worker_init(str(model_dir))  # load libraries and the processor before the baseline
before = rss_mb()
examples = T.build_examples(model_dir, training_specs(episodes, 0), 0, workers=workers)
after = rss_mb()
kept = sum(e.patches.nbytes + e.input_ids.nbytes for e in examples) / 2**20
print(json.dumps({"examples": len(examples), "kept_mb": kept, "rss_growth_mb": after - before}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from sole_r1_tools.training.train import ARCH, build_initial_model; "
                        "build_initial_model(Path(sys.argv[1]), 0, ARCH)", str(model_dir)],
                       check=True, cwd=ROOT, capture_output=True)
        print(f"{args.episodes} episodes of SFT examples, shipped architecture\n")
        print("| workers | give freed heap back | examples | kept MB | RSS growth MB | growth / kept |")
        print("|---|---|---|---|---|---|")
        for workers in args.workers:
            for trim in (False, True):
                out = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), str(args.episodes), str(workers),
                                      "1" if trim else "0"], check=True, cwd=ROOT, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {workers} | {'yes' if trim else 'no'} | {r['examples']} | {r['kept_mb']:.0f} | "
                      f"{r['rss_growth_mb']:.0f} | {r['rss_growth_mb'] / r['kept_mb']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
