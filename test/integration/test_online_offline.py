"""Online ≡ offline: a bag replayed (frames + /clock) into the live node running with
use_sim_time gives, with greedy decoding, the same estimates as ``score_bag``, step for step."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import CONFIG, ManagedProcess, isolated_ros, reward_node_command, wait_until
from sole_r1_ros.cli import score_bag
from sole_r1_ros.messages.bags import BagReader
from sole_r1_ros.messages.image_codec import stamp_to_ns
from sole_r1_tools.synth.bag_writer import write_episode_bag
from sole_r1_tools.synth.episodes import generate_episode

pytestmark = pytest.mark.ros

GENERATION = ["--greedy"]  # with the built-in default model: it answers in the protocol, so rewards move
# every reward-mapping setting away from its default, the same online (parameters) and offline (options)
REWARD = {"reward.mode": "delta", "reward.smoothing": "ema", "reward.ema_alpha": 0.6,
          "reward.success_threshold": 0.3, "reward.success_bonus": 0.5, "reward.clip": True,
          "reward.clip_min": -0.25, "reward.clip_max": 1.2}
REWARD_OPTIONS = ["--reward-mode", "delta", "--reward-smoothing", "ema", "--reward-ema-alpha", "0.6",
                  "--reward-success-threshold", "0.3", "--reward-success-bonus", "0.5", "--reward-clip",
                  "--reward-clip-min", "-0.25", "--reward-clip-max", "1.2"]
RATE_HZ = 3.0
COMPARED = ("step", "stamp_ns", "first_stamp_ns", "prev_stamp_ns", "views", "status", "percent",
            "prev_percent", "reward", "reasoning", "parse_status", "goal")


def _ros_message(msg, msgtype: str):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header, String

    if msgtype == "std_msgs/msg/String":
        return String(data=msg.data)
    header = Header(
        stamp=Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec), frame_id=msg.header.frame_id
    )
    if msgtype == "sensor_msgs/msg/Image":
        return Image(header=header, height=msg.height, width=msg.width, encoding=msg.encoding,
                     is_bigendian=msg.is_bigendian, step=msg.step, data=np.asarray(msg.data).tobytes())
    return CompressedImage(header=header, format=msg.format, data=np.asarray(msg.data).tobytes())


def test_replayed_bag_matches_score_bag(tmp_path: Path) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    episode = generate_episode("push", "success", seed=7, n_frames=36, fps=15.0)
    bag = write_episode_bag(episode, tmp_path / "bag", storage="mcap", image_format="raw")
    offline_dir = tmp_path / "offline"
    assert score_bag.main([str(bag), "--out", str(offline_dir), "--rate", str(RATE_HZ), "--quiet", "--no-plot",
                           *GENERATION, *REWARD_OPTIONS]) == 0
    offline = [json.loads(line) for line in (offline_dir / "estimates.jsonl").read_text().splitlines()]
    scored = [row["stamp_ns"] for row in offline]
    assert len(scored) >= 4

    with isolated_ros("bag_player") as (listener, env):
        node = None
        try:
            argv = reward_node_command(
                params_file=CONFIG / "reward_node.yaml", namespace="/replay",
                remaps={"cameras/external/image_raw": "/camera/external/image_raw",
                        "cameras/wrist/image_raw": "/camera/wrist/image_raw", "goal": "/goal"},
                params={"model.greedy": True,
                        "use_sim_time": True, "period": 1.0 / RATE_HZ, "image_qos.reliability": "reliable",
                        "image_qos.depth": 50, **REWARD},
            )
            node = ManagedProcess("replay_node", argv, env=env, log_path=tmp_path / "node.log")
            estimates = listener.subscribe("/replay/sole_r1_reward/estimate", String, 100)
            latched = QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
            clock_pub = listener.publisher("/clock", Clock, 10)
            goal_pub = listener.publisher("/goal", String, latched)
            image_pubs = {
                t: listener.publisher(t, Image, 50) for t in ("/camera/external/image_raw", "/camera/wrist/image_raw")
            }
            node.wait_for_output(r"\bready: mode=", 120)
            wait_until(lambda: all(p.get_subscription_count() >= 1 for p in (clock_pub, goal_pub, *image_pubs.values()))
                       and estimates.matched() >= 1, 30, "the node to match the player")

            def clock(t_ns: int) -> None:
                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = divmod(t_ns, 1_000_000_000)
                clock_pub.publish(msg)
                time.sleep(0.01)  # the node takes /clock before the frames that follow it

            with BagReader(bag) as reader:
                topics = [t for t in reader.topics if t != "/ground_truth/progress"]
                messages = list(reader.messages(topics))
            roles_per_stamp = len(image_pubs)
            seen: dict[int, int] = {}
            for m in messages:
                clock(m.log_time_ns)
                if m.topic == "/goal":
                    goal_pub.publish(_ros_message(m.msg, m.msgtype))
                    node.wait_for_output(r"goal from topic", 30)
                    continue
                image_pubs[m.topic].publish(_ros_message(m.msg, m.msgtype))
                stamp = stamp_to_ns(m.msg.header.stamp)
                seen[stamp] = seen.get(stamp, 0) + 1
                if stamp in scored and seen[stamp] == roles_per_stamp:  # lockstep: let the node finish this step
                    # wait_until calls the lambdas before the loop moves on: this iteration's stamp is meant
                    wait_until(lambda: any(json.loads(r.msg.data)["stamp_ns"] == stamp  # noqa: B023
                                           for r in estimates.snapshot()),
                               60, lambda: f"the node's estimate for stamp {stamp}\n{node.tail()}")  # noqa: B023
            # the live node also reports steps it could not score (a stalled replay); score_bag's
            # results are the scored steps only
            online = [e for e in (json.loads(r.msg.data) for r in estimates.snapshot())
                      if e["status"] in ("first_frame", "ok", "parse_failed")]
        finally:
            if node is not None:
                node.stop()

    assert [row["stamp_ns"] for row in online] == scored
    assert len({row["reward"] for row in offline}) > 1  # the mapping did something to compare
    for on, off in zip(online, offline):
        assert {k: on[k] for k in COMPARED} == {k: off[k] for k in COMPARED}
