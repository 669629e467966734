#!/usr/bin/env python3
"""Latency breakdown of one estimate in the real ``RewardNode`` (tiny random Qwen3-VL on CPU).

The node runs in request mode in this process; frames are pushed straight into its buffers
(``RewardWorker.push_frame``, as the image callback does) and each step is one ``~/request``
(``RewardWorker.request``). Stages are timed by wrapping the functions the worker calls:

  selection  FrameSelector.select              decode     decode_any (all views)
  composite  letterbox + grid + final resize   processor  chat template + HF processor + .to(device)
  prefill    generate() start -> first logits  generation first logits -> generate() returns
  post       batch_decode + bookkeeping        parse      parse_answer
  publish    the node's _publish (JSON + 4 publishes)
  e2e        request() -> _publish returned (includes the worker thread wake-up)

node overhead = e2e - (prefill + generation), i.e. everything but the model's generate().

    .venv/bin/python bench/latency_bench.py --steps 30
    .venv/bin/python bench/latency_bench.py --steps 30 --transport compressed --width 1280 --height 720
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

STAGES = ("selection", "decode", "composite", "processor", "prefill", "generation", "post", "parse",
          "publish", "model", "e2e", "node_overhead")


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="model steps measured (after 2 warm-up steps)")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--max-new-tokens", type=int, default=0, help="0 = protocol default (200)")
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--cpu-threads", type=int, default=0, help="node model.cpu_threads (0 = torch default)")
    ap.add_argument("--conv-patch-embedding", action="store_true",
                    help="node model.linear_patch_embedding:=false (the checkpoint's Conv3d patch embedding)")
    ap.add_argument("--domain", type=int, default=int(os.environ.get("BENCH_ROS_DOMAIN_ID", "154")))
    args = ap.parse_args(argv)
    os.environ["ROS_DOMAIN_ID"] = str(args.domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    import rclpy
    from rclpy.parameter import Parameter
    from transformers import LogitsProcessor, LogitsProcessorList

    import bench_publisher
    from sole_r1_ros.backends.wrappers import DelegatingModel
    from sole_r1_ros.core import scorer as scorer_mod
    from sole_r1_ros.pipeline import worker as reward_worker
    from sole_r1_ros.ros import reward_node

    times: dict[str, float] = defaultdict(float)
    local = {"t_request": 0.0}
    done = threading.Event()
    records: list[dict[str, float]] = []
    meta: list[dict] = []

    class BenchNode(reward_node.RewardNode):
        def _publish(self, result):
            t0 = time.perf_counter()
            super()._publish(result)
            t1 = time.perf_counter()
            times["publish"] += t1 - t0
            times["e2e"] = t1 - local["t_request"]
            rec = dict(times)
            e = result.estimate
            meta.append({"status": result.status, "new_tokens": e.new_tokens if e else 0,
                         "prompt_tokens": e.prompt_tokens if e else 0})
            records.append(rec)
            done.set()

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[name] += time.perf_counter() - t0
        return wrapper

    reward_worker.decode_any = timed("decode", reward_worker.decode_any)
    # composite: letterboxing the new frame's views + building the grid + the final resize
    # (older trees composed all columns per step with ``compose``; newer ones keep tiles)
    for name in ("compose", "letterbox_views", "grid_from_tiles", "to_model_image"):
        if hasattr(scorer_mod, name):
            setattr(scorer_mod, name, timed("composite", getattr(scorer_mod, name)))
    scorer_mod.parse_answer = timed("parse", scorer_mod.parse_answer)

    rclpy.init()
    roles = [f"cam{i}" for i in range(args.cameras)]
    params = [Parameter("cameras", value=roles), Parameter("mode", value="request"),
              Parameter("goal", value="put the red block in the bowl"),
              Parameter("model.max_new_tokens", value=args.max_new_tokens),
              Parameter("model.greedy", value=args.greedy)]
    if args.conv_patch_embedding:
        params.append(Parameter("model.linear_patch_embedding", value=False))
    if args.cpu_threads:
        params.append(Parameter("model.cpu_threads", value=args.cpu_threads))
    params += [Parameter(f"camera.{r}.transport", value=args.transport) for r in roles]
    node = BenchNode(parameter_overrides=params)
    worker = node.worker
    worker.selector.select = timed("selection", worker.selector.select)
    backend = worker.scorer.model
    while isinstance(backend, DelegatingModel):  # the node wraps its backend (per-call seeds)
        backend = backend.inner
    processor = backend.processor

    class TimedProcessor:
        def __call__(self, *a, **kw):
            t0 = time.perf_counter()
            out = processor(*a, **kw)
            inner_to = out.to

            def to(device):
                r = inner_to(device)
                times["processor"] += time.perf_counter() - t0
                return r
            out.to = to
            return out

        def __getattr__(self, name):
            return getattr(processor, name)

    backend.processor = TimedProcessor()
    backend.prompt_text = timed("processor", backend.prompt_text)

    class FirstToken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if "t_first" not in local:
                local["t_first"] = time.perf_counter()
            return scores

    model_generate = backend.model.generate

    def generate(*a, **kw):
        local.pop("t_first", None)
        kw["logits_processor"] = LogitsProcessorList([FirstToken()])
        t0 = time.perf_counter()
        out = model_generate(*a, **kw)
        t1 = time.perf_counter()
        times["prefill"] += local.get("t_first", t1) - t0
        times["generation"] += t1 - local.get("t_first", t1)
        times["model"] += t1 - t0
        local["t_gen_end"] = t1
        return out

    backend.model.generate = generate
    backend_generate = backend.generate

    def backend_gen(*a, **kw):
        out = backend_generate(*a, **kw)
        times["post"] += time.perf_counter() - local["t_gen_end"]
        return out

    backend.generate = backend_gen

    frames = [
        bench_publisher.build_messages(i, args.transport, args.width, args.height, 4) for i in range(args.cameras)
    ]
    total = args.steps + 3  # step 0 = first_frame (no model), 2 warm-up model steps
    stamp = time.time_ns()
    for step in range(total):
        stamp += 100_000_000
        for i, role in enumerate(roles):
            msg = frames[i][step % 4]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            # a fresh message object per step, as the subscription would deliver
            m = type(msg)()
            m.header.stamp.sec, m.header.stamp.nanosec = msg.header.stamp.sec, msg.header.stamp.nanosec
            if args.transport == "raw":
                m.encoding, m.height, m.width, m.step = msg.encoding, msg.height, msg.width, msg.step
            else:
                m.format = msg.format
            m.data = msg.data
            worker.push_frame(role, stamp, m, node.get_clock().now().nanoseconds)
        times.clear()
        done.clear()
        local["t_request"] = time.perf_counter()
        worker.request(stamp, f"req{step}")
        if not done.wait(600):
            print("timeout", file=sys.stderr)
            return 1
        print(f"step {step}: {meta[-1]} e2e {records[-1]['e2e'] * 1e3:.1f} ms", file=sys.stderr, flush=True)
    measured = [r for r, m in zip(records, meta) if m["status"] in ("ok", "parse_failed")][2:]
    mm = [m for m in meta if m["status"] in ("ok", "parse_failed")][2:]
    for r in measured:
        r["node_overhead"] = r["e2e"] - r.get("model", 0.0)
    print(f"\n{len(measured)} steps, {args.cameras} x {args.width}x{args.height} {args.transport}, "
          f"prompt tokens p50 {pct([m['prompt_tokens'] for m in mm], 50)}, "
          f"generated tokens p50 {pct([m['new_tokens'] for m in mm], 50)}, "
          f"torch threads {__import__('torch').get_num_threads()}\n")
    print("| stage | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for s in STAGES:
        vals = [r.get(s, 0.0) * 1e3 for r in measured]
        print(f"| {s} | {pct(vals, 50):.2f} | {pct(vals, 99):.2f} | {max(vals):.2f} |")
    worker.stop(10)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
