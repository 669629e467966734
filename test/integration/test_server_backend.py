"""Remote ≡ local against a real ``transformers serve`` (the shipped default model, CPU, 127.0.0.1):
``score_bag`` (one bag, and several with ``--jobs``) and the live node over the server give the
same estimates, step for step, as the in-process backend; two robots (two node processes, each
its own namespace, goal and episodes) share one server without cross-talk.

One server for the whole module (it loads in seconds and answers one VLM request at a time)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bag_replay import replay_lockstep
from ros_helpers import (
    CONFIG,
    VENV_BIN,
    ManagedProcess,
    camera_publisher_command,
    isolated_ros,
    reward_node_command,
    stop_all,
    wait_until,
)
from sole_r1_ros.backends.default_model import SHIPPED_MODEL_DIR
from sole_r1_ros.cli import score_bag
from sole_r1_tools.synth.bag_writer import write_episode_bag
from sole_r1_tools.synth.episodes import generate_episode

RATE_HZ = 3.0
COMPARED = ("step", "stamp_ns", "first_stamp_ns", "prev_stamp_ns", "views", "status", "percent", "prev_percent",
            "progress", "reward", "reasoning", "parse_status", "goal", "tokens")
SERVER_START_S = 120.0
SCORED = ("first_frame", "ok", "parse_failed", "error")

SERVING_EXTRA = ("fastapi", "uvicorn", "openai", "accelerate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return bool(json.loads(reply.read()).get("status") == "ok")
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transformers serve`` of the shipped default model on CPU; its base URL."""
    if not (VENV_BIN / "transformers").exists() or any(importlib.util.find_spec(m) is None for m in SERVING_EXTRA):
        pytest.skip("transformers serve needs the serving extra (fastapi, uvicorn, openai, accelerate)")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    log = tmp_path_factory.mktemp("transformers_serve") / "serve.log"
    server = ManagedProcess("transformers serve", [str(VENV_BIN / "transformers"), "serve", "--host", "127.0.0.1",
                                                   "--port", str(port), "--device", "cpu", str(SHIPPED_MODEL_DIR)],
                            env=env, log_path=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url) or not server.running(), SERVER_START_S, lambda: f"the server\n{server.tail()}",
                   interval=0.2)
        assert server.running(), server.tail()
        yield url
    finally:
        server.stop(grace=5.0)


def server_options(url: str) -> list[str]:
    return ["--backend", "server", "--model-url", url, "--model-dialect", "transformers"]


def estimates(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "estimates.jsonl").read_text().splitlines()]


def compared(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: row[k] for k in COMPARED} for row in rows]


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bags")
    return [write_episode_bag(generate_episode("push", outcome, seed=seed, n_frames=36, fps=15.0),
                              root / f"episode_{seed}", storage="mcap", image_format="raw")
            for seed, outcome in ((7, "success"), (8, "wrong_object"))]


@pytest.fixture(scope="module")
def in_process(bags: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[dict]]:
    """score_bag with the in-process backend: (bag name, decoding) → estimates."""
    out: dict[tuple[str, str], list[dict]] = {}
    root = tmp_path_factory.mktemp("in_process")
    for index, bag in enumerate(bags):
        for decoding, options in (("greedy", ["--greedy"]), ("seeded", ["--seed", "0"]))[: 2 if index == 0 else 1]:
            target = root / f"{bag.name}_{decoding}"
            assert score_bag.main([str(bag), "--out", str(target), "--rate", str(RATE_HZ), "--quiet", "--no-plot",
                                   "--device", "cpu", "--cpu-threads", "1", *options]) == 0
            out[(bag.name, decoding)] = estimates(target)
    return out


@pytest.mark.parametrize(("decoding", "options"), [("greedy", ["--greedy"]), ("seeded", ["--seed", "0"])])
def test_score_bag_over_the_server_equals_in_process(served: str, bags: list[Path], in_process: dict,
                                                     tmp_path: Path, decoding: str, options: list[str]) -> None:
    """Greedy, and also the offline default (the release's sampling, seeded per step): the server
    seeds torch as the in-process backend does, so even sampled estimates agree."""
    out = tmp_path / "remote"
    assert score_bag.main([str(bags[0]), "--out", str(out), "--rate", str(RATE_HZ), "--quiet", "--no-plot",
                           *server_options(served), *options]) == 0
    remote, local = estimates(out), in_process[(bags[0].name, decoding)]
    assert len(local) >= 6 and len({r["percent"] for r in local}) > 1
    assert compared(remote) == compared(local)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["backend"] == "server" and summary["model"]["url"] == f"{served}/v1"


def test_many_bags_concurrently_equal_each_bag_in_process(served: str, bags: list[Path], in_process: dict,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "many"
    assert score_bag.main([*map(str, bags), "--out", str(out), "--jobs", "2", "--rate", str(RATE_HZ), "--quiet",
                           "--no-plot", "--greedy", *server_options(served)]) == 0
    for bag in bags:
        assert compared(estimates(out / bag.name)) == compared(in_process[(bag.name, "greedy")])
    printed = capsys.readouterr().out
    assert all(f"{bag}: " in printed for bag in bags)


def test_jobs_need_the_server_backend(bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert score_bag.main([*map(str, bags), "--out", str(tmp_path / "x"), "--jobs", "2", "--quiet"]) == 2
    assert "--jobs > 1 needs --backend server" in capsys.readouterr().err


@pytest.mark.ros
def test_live_node_over_the_server_equals_in_process(served: str, bags: list[Path], in_process: dict,
                                                      tmp_path: Path) -> None:
    """The bag replayed in lockstep (frames + /clock) into a node in server mode."""

    bag, offline = bags[0], in_process[(bags[0].name, "greedy")]
    scored = [row["stamp_ns"] for row in offline]
    with isolated_ros("server_bag_player") as (listener, env):
        node = None
        try:
            argv = reward_node_command(
                params_file=CONFIG / "reward_node.yaml", namespace="/remote",
                remaps={"cameras/external/image_raw": "/camera/external/image_raw",
                        "cameras/wrist/image_raw": "/camera/wrist/image_raw", "goal": "/goal"},
                params={"model.backend": "server", "model.url": served, "model.greedy": True,
                        "use_sim_time": True, "period": 1.0 / RATE_HZ, "image_qos.reliability": "reliable",
                        "image_qos.depth": 50},
            )
            node = ManagedProcess("remote_node", argv, env=env, log_path=tmp_path / "node.log")
            # skipped rate-mode steps (not_aligned while a camera's frame is on its way) are reported
            # by the node but never scored: only the scored steps are compared
            online = [e for e in replay_lockstep(listener, node, bag, "/remote/sole_r1_reward/estimate", scored)
                      if e["status"] in SCORED]
        finally:
            if node is not None:
                node.stop()
    assert [row["stamp_ns"] for row in online] == scored
    assert compared(online) == compared(offline)


@pytest.mark.ros
def test_two_robots_share_one_server_without_cross_talk(served: str, tmp_path: Path) -> None:
    from std_msgs.msg import String

    robots = {"/robot_a": "push the red block into the green zone", "/robot_b": "pick up the blue block"}
    with isolated_ros("fleet_listener") as (listener, env):
        processes: list[ManagedProcess] = []
        try:
            recorders = {ns: listener.subscribe(f"{ns}/sole_r1_reward/estimate", String, 100) for ns in robots}
            for ns, goal in robots.items():
                argv = reward_node_command(namespace=ns, params={
                    "model.backend": "server", "model.url": served, "model.greedy": True, "period": 0.5,
                    "goal": goal, "image_qos.reliability": "reliable"})
                processes.append(ManagedProcess(f"node{ns}", argv, env=env, log_path=tmp_path / f"{ns[1:]}.log"))
                processes.append(ManagedProcess(f"cameras{ns}", camera_publisher_command(
                    topics=[f"{ns}/cameras/external/image_raw", f"{ns}/cameras/wrist/image_raw"], rate=5.0),
                    env=env, log_path=tmp_path / f"{ns[1:]}_cameras.log"))

            def oks(ns: str) -> list[dict[str, Any]]:
                return [e for e in (json.loads(r.msg.data) for r in recorders[ns].snapshot()) if e["status"] == "ok"]

            wait_until(lambda: all(len(oks(ns)) >= 3 for ns in robots), 120,
                       lambda: "3 estimates from each robot\n" + "\n".join(p.tail(15) for p in processes))
            per_robot = {ns: [json.loads(r.msg.data) for r in recorders[ns].snapshot()] for ns in robots}
        finally:
            stop_all(processes)
    episodes = {ns: {e["episode_id"] for e in rows} for ns, rows in per_robot.items()}
    assert episodes["/robot_a"].isdisjoint(episodes["/robot_b"])
    for ns, rows in per_robot.items():
        scored = [e for e in rows if e["progress"] is not None]
        assert {e["goal"] for e in scored} == {robots[ns]}
        steps = [e["step"] for e in scored]  # one episode, no step taken by the other robot
        assert steps == list(range(steps[0], steps[0] + len(steps)))
        for before, after in zip(scored, scored[1:]):  # each prompt quoted this robot's own previous answer
            assert after["prev_percent"] == before["percent"] and after["prev_stamp_ns"] == before["stamp_ns"]


@pytest.mark.ros
def test_shutdown_under_load_cancels_the_request_in_flight(tmp_path: Path) -> None:
    """SIGINT while the node waits for a reply that never comes (cameras streaming): the request is
    cancelled, the worker stops within the node's 1.5 s bound, exit code 0, no traceback."""
    import threading

    from scripted_server import Reply, ScriptedServer

    never = threading.Event()
    with ScriptedServer(default=Reply(hold=never)) as server, isolated_ros("server_shutdown") as (_, env):
        processes: list[ManagedProcess] = []
        try:
            argv = reward_node_command(namespace="/stop", params={
                "model.backend": "server", "model.url": server.url, "model.timeout": 60.0, "period": 0.2,
                "goal": "push the block", "image_qos.reliability": "reliable"})
            node = ManagedProcess("node", argv, env=env, log_path=tmp_path / "node.log")
            processes.append(node)
            processes.append(ManagedProcess("cameras", camera_publisher_command(
                topics=["/stop/cameras/external/image_raw", "/stop/cameras/wrist/image_raw"], rate=30.0),
                env=env, log_path=tmp_path / "cameras.log"))
            wait_until(lambda: server.posts(), 60, lambda: f"a request at the server\n{node.tail()}")
            node.send_sigint()
            code = node.wait_exit(30)
            log = node.output()
        finally:
            never.set()
            stop_all(processes)
    assert code == 0, log
    assert "did not stop within" not in log and "Traceback" not in log, log
