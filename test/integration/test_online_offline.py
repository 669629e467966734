"""Online ≡ offline: a bag replayed (frames + /clock) into the live node running with
use_sim_time gives, with greedy decoding, the same estimates as ``score_bag``, step for step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bag_replay import replay_lockstep
from ros_helpers import CONFIG, ManagedProcess, isolated_ros, reward_node_command
from sole_r1_ros.cli import score_bag
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


def test_replayed_bag_matches_score_bag(tmp_path: Path) -> None:

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
            # the live node also reports steps it could not score (a stalled replay); score_bag's
            # results are the scored steps only
            online = [e for e in replay_lockstep(listener, node, bag, "/replay/sole_r1_reward/estimate", scored)
                      if e["status"] in ("first_frame", "ok", "parse_failed")]
        finally:
            if node is not None:
                node.stop()

    assert [row["stamp_ns"] for row in online] == scored
    assert len({row["reward"] for row in offline}) > 1  # the mapping did something to compare
    for on, off in zip(online, offline):
        assert {k: on[k] for k in COMPARED} == {k: off[k] for k in COMPARED}
