"""Bounded soak: 3 cameras x 30 Hz at 640x480 into the live node while it answers requests.
Memory stays flat, the node's callbacks drop nothing, every request is answered.
Duration: ``SOLE_R1_SOAK_S`` seconds (default 20 in CI; run longer as a benchmark)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ros_helpers import (
    ManagedProcess,
    camera_publisher_command,
    isolated_ros,
    read_stamp_log,
    reward_node_command,
    wait_until,
)

pytestmark = pytest.mark.ros

ROLES = ("external", "wrist", "side")
RATE = 30.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_soak_three_cameras(tiny_model_dir: Path, tmp_path: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Header, String

    seconds = float(os.environ.get("SOLE_R1_SOAK_S", "20"))
    ticks = int(seconds * RATE)
    with isolated_ros("soak_listener") as (listener, env):
        node = publisher = None
        try:
            node = ManagedProcess("soak_node", reward_node_command(
                namespace="/soak",
                params={"model.path": tiny_model_dir, "model.greedy": True, "model.max_new_tokens": 16,
                        "cameras": "[external, wrist, side]", "mode": "request", "request_queue_size": 64,
                        "image_qos.reliability": "reliable", "image_qos.depth": 100, "goal": "push the red block",
                        "diagnostics_period": 0.5, "align_tolerance": 0.02},
            ), env=env, log_path=tmp_path / "node.log")
            estimates = listener.subscribe("/soak/sole_r1_reward/estimate", String, 500)
            diagnostics = listener.subscribe("/diagnostics", DiagnosticArray, 100)
            requests = listener.publisher("/soak/sole_r1_reward/request", Header, 100)
            node.wait_for_output(r"\bready: mode=", 120)
            stamp_log = tmp_path / "stamps.txt"
            publisher = ManagedProcess("soak_cameras", camera_publisher_command(
                topics=[f"/soak/cameras/{r}/image_raw" for r in ROLES], roles=ROLES, rate=RATE, count=ticks,
                stamp_log=stamp_log, depth=100, extra=["--width", "640", "--height", "480"],
            ), env=env, log_path=tmp_path / "cameras.log")
            publisher.wait_for_output(r"^publishing$", 60)
            wait_until(lambda: requests.get_subscription_count() >= 1, 30, "request subscription")

            sent: list[str] = []
            rss: list[float] = []
            t_end = time.monotonic() + seconds + 60
            while publisher.running() and time.monotonic() < t_end:
                time.sleep(0.5)
                published = read_stamp_log(stamp_log).get("external", [])
                if len(published) > 3:
                    header = Header(frame_id=f"q{len(sent)}")
                    header.stamp.sec, header.stamp.nanosec = divmod(published[-3], 1_000_000_000)
                    requests.publish(header)
                    sent.append(header.frame_id)
                rss.append(rss_mib(node.pid))
            assert publisher.wait_exit(120) == 0, publisher.tail()
            wait_until(
                lambda: len(estimates) >= len(sent), 120, lambda: f"answers to {len(sent)} requests\n{node.tail()}"
            )
            published = read_stamp_log(stamp_log)

            def received() -> dict[str, int]:
                for item in reversed(diagnostics.snapshot()):
                    for status in item.msg.status:
                        if status.name.startswith("/soak/sole_r1_reward: camera "):
                            pass
                    counts = {s.name.rsplit(" ", 1)[-1]: int({kv.key: kv.value for kv in s.values}["received"])
                              for s in item.msg.status if s.name.startswith("/soak/sole_r1_reward: camera ")}
                    if counts:
                        return counts
                return {}

            wait_until(lambda: received() == {r: ticks for r in ROLES}, 30,
                       lambda: f"every frame counted by the node: {received()} vs {ticks}")
        finally:
            for proc in (publisher, node):
                if proc is not None:
                    proc.stop()

    answers = [json.loads(r.msg.data) for r in estimates.snapshot()]
    assert sorted(a["request_id"] for a in answers) == sorted(sent)
    assert all(len(published[r]) == ticks for r in ROLES)
    warm = rss[len(rss) // 4:]  # after model warm-up
    growth = warm[-1] - warm[0]
    print(f"\nsoak {seconds:.0f}s: {ticks} frames x {len(ROLES)} cameras, {len(sent)} requests answered, "
          f"node RSS {warm[0]:.0f} -> {warm[-1]:.0f} MiB (max {max(rss):.0f})")
    assert growth < 100, f"node RSS grew by {growth:.0f} MiB during the soak: {rss}"
