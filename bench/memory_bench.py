#!/usr/bin/env python3
"""Memory over a run: the real node (``python -m sole_r1_ros.ros.reward_node``) as its own process,
tiny random Qwen3-VL scoring back to back (``period`` 0), fed by ``bench/bench_publisher.py``
(3 cameras x 30 Hz, RELIABLE). RSS of the node process is sampled every ``--sample`` seconds from
/proc; this process also counts the node's ``~/estimate`` messages.

Prints the RSS trace (every ``--print-every`` s) and a summary: RSS after warm-up, at the end,
max, and the slope of a least-squares line over the second half of the run (MB/min; "flat"
means the slope is within noise, i.e. |slope| * duration is small against the ring buffers).

    .venv/bin/python bench/memory_bench.py                       # 60 s, 3 x 640x480 rgb8
    .venv/bin/python bench/memory_bench.py --duration 300        # the issue's 5 minutes
    .venv/bin/python bench/memory_bench.py --transport compressed --width 1280 --height 720
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured after warm-up")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--sample", type=float, default=1.0)
    ap.add_argument("--print-every", type=float, default=10.0)
    ap.add_argument("--domain", type=int, default=int(os.environ.get("BENCH_ROS_DOMAIN_ID", "155")))
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    os.environ.update(ROS_DOMAIN_ID=str(args.domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    roles = [f"cam{i}" for i in range(args.cameras)]
    node_cmd = [sys.executable, "-m", "sole_r1_ros.ros.reward_node", "--ros-args",
                "-p", f"cameras:=[{', '.join(roles)}]", "-p", "image_qos.reliability:=reliable",
                "-p", "period:=0.0", "-p", "goal:=put the red block in the bowl"]
    for r in roles:
        node_cmd += ["-p", f"camera.{r}.topic:=/bench/{r}", "-p", f"camera.{r}.transport:={args.transport}"]
    total = args.warmup + args.duration
    pub_cmd = [sys.executable, str(ROOT / "bench" / "bench_publisher.py"), "--cameras", str(args.cameras),
               "--transport", args.transport, "--width", str(args.width), "--height", str(args.height),
               "--rate", str(args.rate), "--duration", str(total + 5), "--wait-timeout", "120"]

    import rclpy
    from std_msgs.msg import String

    rclpy.init()
    listener = rclpy.create_node("sole_r1_memory_bench")
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def on_estimate(msg: String) -> None:
        status = json.loads(msg.data).get("status", "?")
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    listener.create_subscription(String, "/sole_r1_reward/estimate", on_estimate, 50)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    # stopped and joined before rclpy shuts down: a spin thread still in its wait set at
    # interpreter exit aborts the process ("terminate called without an active exception")
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

    node = subprocess.Popen(node_cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pub = subprocess.Popen(pub_cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = pub.stdout.readline()  # message sizes
        while line and "ready" not in line:
            line = pub.stdout.readline()
        print(f"publisher ready; node pid {node.pid}, RSS {rss_mb(node.pid):.0f} MB", flush=True)
        t_start = time.monotonic()
        trace: list[tuple[float, float]] = []
        next_print = 0.0
        while True:
            t = time.monotonic() - t_start
            if t > total or node.poll() is not None:
                break
            trace.append((t, rss_mb(node.pid)))
            if t >= next_print:
                with lock:
                    est = sum(statuses.values())
                print(f"t={t:6.1f}s RSS {trace[-1][1]:7.1f} MB  estimates {est}", flush=True)
                next_print += args.print_every
            time.sleep(args.sample)
    finally:
        node.send_signal(2)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
        pub.terminate()
        pub_out = pub.communicate(timeout=30)[0]
        executor.shutdown(timeout_sec=5)
        spin.join(timeout=5)
        listener.destroy_node()
        rclpy.try_shutdown()
    measured = [(t, r) for t, r in trace if t >= args.warmup]
    if len(measured) < 4:
        print("node died or too few samples:\n" + (node.stderr.read() if node.stderr else ""), file=sys.stderr)
        return 1
    ts = np.array([t for t, _ in measured])
    rs = np.array([r for _, r in measured])
    half = ts >= ts[0] + (ts[-1] - ts[0]) / 2
    slope_all = np.polyfit(ts, rs, 1)[0] * 60
    slope_half = np.polyfit(ts[half], rs[half], 1)[0] * 60
    summary = {
        "duration_s": float(ts[-1] - ts[0]), "rss_after_warmup_mb": float(rs[0]), "rss_end_mb": float(rs[-1]),
        "rss_min_mb": float(rs.min()), "rss_max_mb": float(rs.max()),
        "slope_mb_per_min": float(slope_all), "slope_second_half_mb_per_min": float(slope_half),
        "estimates": dict(statuses),
        "publisher": [ln for ln in pub_out.splitlines() if ln.startswith("published")],
    }
    print(f"\n{args.cameras} x {args.width}x{args.height} {args.transport} @ {args.rate} Hz, "
          f"{summary['duration_s']:.0f} s after {args.warmup:.0f} s warm-up\n")
    print(
        "| RSS after warm-up MB | RSS end MB | min MB | max MB "
        "| slope MB/min (all) | slope MB/min (2nd half) | estimates |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| {summary['rss_after_warmup_mb']:.1f} | {summary['rss_end_mb']:.1f} | {summary['rss_min_mb']:.1f} | "
          f"{summary['rss_max_mb']:.1f} | {slope_all:+.2f} | {slope_half:+.2f} | {statuses} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trace": trace}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
