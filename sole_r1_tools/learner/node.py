"""The example learner node: SAC with action chunking, rewarded only by the reward node.

Talks to the tabletop driver (``<sim>/command``, ``<sim>/state``: low-dimensional state only, no
pixels, no ground truth) and to the reward node through
:func:`~sole_r1_ros.learner.ros_client.create_ros_reward_client` (goal, reset, one request per
chunk end). Writes its log (training episodes, evaluations, a summary with the buffer's
counters) as JSON lines to ``log_path`` and exits when done.

    python -m sole_r1_tools.learner.node --ros-args --params-file config/closed_loop/learner.yaml
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

from sole_r1_ros.learner.client import ClientSettings, RewardAnswer
from sole_r1_ros.learner.replay import BufferSettings, RelabelBuffer
from sole_r1_ros.learner.ros_client import create_ros_reward_client
from sole_r1_tools.learner.loop import ChunkLearner, LoopLog, LoopSettings
from sole_r1_tools.learner.sac import ChunkSAC, SacSettings


class RosChunkEnv:
    """:class:`~sole_r1_tools.learner.loop.ChunkEnv` over the driver's command/state topics."""

    def __init__(self, node: Node, sim: str, timeout_s: float = 30.0) -> None:
        self.pub = node.create_publisher(String, f"{sim}/command", 50)
        node.create_subscription(String, f"{sim}/state", self._on_state, 50)
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._states: dict[int, dict[str, Any]] = {}
        self._next_id = 0

    def _on_state(self, msg: String) -> None:
        state = json.loads(msg.data)
        with self._cond:
            self._states[int(state["id"])] = state
            self._cond.notify_all()

    def _call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            cid = self._next_id
            self._next_id += 1
        self.pub.publish(String(data=json.dumps({"id": cid, **cmd})))
        with self._cond:
            if not self._cond.wait_for(lambda: cid in self._states, self.timeout_s):
                raise TimeoutError(f"the tabletop driver did not answer command {cid} ({cmd['op']})")
            return self._states.pop(cid)

    def wait_ready(self, node: Node, sim: str, timeout_s: float) -> None:
        """Wait until the driver's command subscription and state publisher have matched (a
        command published before that is lost)."""
        deadline = time.monotonic() + timeout_s
        while self.pub.get_subscription_count() == 0 or node.count_publishers(f"{sim}/state") == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no tabletop driver on {sim}/command after {timeout_s:.0f} s")
            time.sleep(0.05)
        time.sleep(0.3)  # the state subscription's match can trail the publisher count

    def reset(self, seed: int, tag: str) -> tuple[np.ndarray, int, str, int]:
        s = self._call({"op": "reset", "seed": seed, "tag": tag})
        return np.asarray(s["obs"], dtype=np.float32), int(s["stamp_ns"]), str(s["goal"]), int(s["env_episode"])

    def step_chunk(self, actions: np.ndarray) -> tuple[np.ndarray, int, bool]:
        s = self._call({"op": "step", "actions": np.asarray(actions).tolist()})
        return np.asarray(s["obs"], dtype=np.float32), int(s["stamp_ns"]), bool(s["truncated"])


def _declare(node: Node, cls: Any, prefix: str) -> Any:
    values = {}
    for f in dataclasses.fields(cls):
        values[f.name] = node.declare_parameter(f"{prefix}{f.name}", f.default).value
    return cls(**values)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = Node("chunk_learner")
    loop = _declare(node, LoopSettings, "loop.")
    buf_settings = _declare(node, BufferSettings, "buffer.")
    client_settings = _declare(node, ClientSettings, "client.")
    sac = _declare(node, SacSettings, "sac.")
    log_path = str(node.declare_parameter("log_path", "learner.jsonl").value)
    sim = str(node.declare_parameter("sim_node", "/tabletop_sim").value)
    reward_node = str(node.declare_parameter("reward_node", "/sole_r1_reward").value)
    policy = str(node.declare_parameter("policy", "sac").value)
    action_dim = int(node.declare_parameter("action_dim", 3).value)
    torch.set_num_threads(int(node.declare_parameter("torch_threads", 1).value))

    buffer = RelabelBuffer(buf_settings, clock=lambda: node.get_clock().now().nanoseconds)
    answers_log = AnswerLog(_fresh(str(Path(log_path).with_name("answers.jsonl"))))

    def on_answer(answer: RewardAnswer) -> None:
        buffer.on_answer(answer)
        answers_log.write(answer)

    client = create_ros_reward_client(node, node_name=reward_node, settings=client_settings,
                                      on_answer=on_answer, steady_timeouts=True)
    env = RosChunkEnv(node, sim)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    code = 0
    try:
        env.wait_ready(node, sim, 60.0)
        _wait_for_reward_node(node, reward_node, 300.0)
        obs, _, _, _ = env.reset(0, "probe")
        agent = ChunkSAC(obs.shape[0], action_dim, dataclasses.replace(sac, horizon=loop.horizon), seed=loop.seed)
        learner = ChunkLearner(env, client, buffer, agent, loop, LoopLog(_fresh(log_path)), action_dim=action_dim,
                               policy=policy)
        learner.run(lambda text: node.get_logger().info(text))
        torch.save(agent.actor.state_dict(), Path(log_path).with_name("policy.pt"))
        node.get_logger().info(f"done; client outcomes {client.counts}")
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 130
    except TimeoutError as err:
        node.get_logger().error(str(err))
        code = 1
    finally:
        # stop and join the spin thread before rclpy shuts down: a thread still in its wait set
        # when the interpreter exits aborts the process ("terminate called without an active exception")
        executor.shutdown(timeout_sec=5)
        spinner.join(timeout=5)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


class AnswerLog:
    """Every delivered answer as one JSON line (joined with the ground truth by stamp afterwards)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, a: RewardAnswer) -> None:
        record = {"episode": a.episode, "index": a.index, "outcome": a.outcome.value, "final": a.final,
                  "usable": a.usable, "progress": a.progress, "reward": a.reward, "status": a.status,
                  "stamp_ns": a.stamp_ns, "requested_stamp_ns": a.requested_stamp_ns,
                  "node_episode_id": a.node_episode_id, "step": a.step, "latency_s": a.latency_s,
                  "detail": a.detail}
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _wait_for_reward_node(node: Node, name: str, timeout_s: float) -> None:
    """Requests sent before the node subscribes would be lost (then time out): wait for it."""
    deadline = time.monotonic() + timeout_s
    topic = f"{name.rstrip('/')}/request"
    while node.count_subscribers(topic) == 0 or node.count_publishers(f"{name.rstrip('/')}/estimate") == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reward node on {topic} after {timeout_s:.0f} s")
        time.sleep(0.1)
    time.sleep(0.5)  # let the latched goal subscription match too


def _fresh(path: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("", encoding="utf-8")
    return p


if __name__ == "__main__":
    sys.exit(main())
