"""Integration tests of the reward node: real rclpy, real DDS, separate processes, no mocks.

Every reward node runs as its own process started the way ``launch/reward_node.launch.py``
starts it (the ``reward_node`` executable, a params file, remaps, ``-p`` overrides), each in its
own namespace of one ROS domain that this test run holds alone. Cameras are
``test/camera_publisher.py`` processes. The pytest process has one listener node (own context,
executor in a background thread) that records outputs, publishes goals/resets/requests and
calls parameter services.

To keep the file fast on 2 cores, the nodes the selected tests need are all started at once
when the first test runs (model loading overlaps); after each test, nodes (and their cameras)
that no remaining test needs get SIGINT, and everything is reaped at the end of the module.
Child processes run with one OpenMP thread: on a shared CPU that keeps step times sane.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ros_helpers import (
    CONFIG,
    ManagedProcess,
    RewardNodeUnderTest,
    RosListener,
    allocate_domain_id,
    camera_publisher_command,
    read_stamp_log,
    restore_env,
    reward_node_command,
    ros_env,
    set_process_ros_env,
    stop_all,
    wait_until,
)

pytestmark = pytest.mark.ros

GOAL = "pick up the red cube"
MODEL_STATUSES = ("ok", "parse_failed")  # a model call happened (the tiny model's text rarely parses)
SCORED_STATUSES = ("first_frame", *MODEL_STATUSES)
ALIGN_TOLERANCE_NS = 50_000_000  # config/reward_node.yaml align_tolerance: 0.05
READY_TIMEOUT = 150.0  # every node loads its model at once on a small shared machine
WRIST_OFFSET_MS = 10.0  # the wrist camera's stamps trail the external camera's
SIM_START_S = 1000.0
OVERFLOW_BURST = 12
NO_DROP_FRAMES = 60

LONG_GOAL_LIMIT = 3000  # above the built-in 1000: a longer goal once raised in a callback and ended the node
TINY = {"model.greedy": True, "model.max_new_tokens": 20, "image_qos.reliability": "reliable"}

# key -> how the node is started: model ("tiny" | "slow" | None: a path that does not exist)
NODE_SPECS: dict[str, dict[str, Any]] = {
    "rate_node": {"ns": "/rate", "model": "tiny",
                  "params": {**TINY, "goal": GOAL, "period": 0.5, "max_goal_chars": LONG_GOAL_LIMIT}},
    "request_node": {"ns": "/req", "model": "tiny", "params": {**TINY, "goal": GOAL, "mode": "request"}},
    # same cameras as request_node (remapped onto its topics), a queue of 2 and slower steps
    "small_queue_node": {
        "ns": "/reqq", "model": "tiny",
        "params": {**TINY, "goal": GOAL, "mode": "request", "request_queue_size": 2, "model.max_new_tokens": 60},
        "remaps": {"cameras/external/image_raw": "/req/cameras/external/image_raw",
                   "cameras/wrist/image_raw": "/req/cameras/wrist/image_raw"},
    },
    "compressed_rig_node": {
        "ns": "/rigc", "model": "tiny", "params_file": CONFIG / "rigs" / "scene_wrist_compressed.yaml",
        "params": {**TINY, "goal": GOAL, "period": 0.5},
        "remaps": {"cameras/external/image_raw/compressed": "/rigB/scene/compressed",
                   "cameras/wrist/image_raw/compressed": "/rigB/wrist/compressed"},
    },
    "wrist_rig_node": {
        "ns": "/rigw", "model": "tiny", "params_file": CONFIG / "rigs" / "wrist_only.yaml",
        "params": {**TINY, "goal": GOAL, "period": 0.5},
        "remaps": {"cameras/wrist/image_raw": "/rigW/wrist/image_raw"},
    },
    "sim_node": {"ns": "/sim", "model": "tiny", "params": {**TINY, "goal": GOAL, "period": 0.5, "use_sim_time": True}},
    "slow_node": {
        "ns": "/slow", "model": "slow",
        "params": {"model.greedy": True, "model.max_new_tokens": 200, "image_qos.reliability": "reliable",
                   "image_qos.depth": 100, "period": 0.0, "goal": GOAL},
    },
    "bad_model_node": {"ns": "/bad", "model": None, "params": TINY, "expect_ready": False},
}


class Fleet:
    """Starts reward nodes and camera publishers once per module; stops them all at the end."""

    def __init__(self, request: pytest.FixtureRequest, listener: RosListener, domain_id: int, workdir: Path,
                 diagnostics: Any) -> None:
        self.request = request
        self.listener = listener
        self.domain_id = domain_id
        self.env = ros_env(domain_id)
        self.workdir = workdir
        self.diagnostics = diagnostics
        self.nodes: dict[str, RewardNodeUnderTest] = {}
        self.ready: set[str] = set()
        self.publishers: dict[str, tuple[ManagedProcess, Path]] = {}
        self.owner: dict[str, str] = {}  # publisher key -> node key
        self.generation: dict[str, int] = {}
        self.missing_model = workdir / "no_such_model_dir"
        self.model_dirs: dict[str, Path] = {}
        self.released: list[ManagedProcess] = []

    def model_path(self, kind: str | None) -> Path:
        if kind is None:
            return self.missing_model
        if kind not in self.model_dirs:
            fixture = "tiny_model_dir" if kind == "tiny" else "slow_model_dir"
            self.model_dirs[kind] = Path(self.request.getfixturevalue(fixture))
        return self.model_dirs[kind]

    def start(self, key: str) -> RewardNodeUnderTest:
        spec = NODE_SPECS[key]
        gen = self.generation[key] = self.generation.get(key, 0) + 1
        argv = reward_node_command(
            params_file=spec.get("params_file", CONFIG / "reward_node.yaml"), namespace=spec["ns"],
            remaps=spec.get("remaps"), params={**spec["params"], "model.path": self.model_path(spec["model"])},
        )
        proc = ManagedProcess(key, argv, env=self.env, log_path=self.workdir / f"{key}.{gen}.log")
        node = RewardNodeUnderTest(key, self.listener, proc, spec["ns"], self.diagnostics)
        self.nodes[key] = node
        self.ready.discard(key)
        return node

    def prestart(self, keys: list[str]) -> None:
        """Start nodes in parallel; those without a model first, then tiny, then slow (models are
        built in this process while the earlier nodes import torch)."""
        order = {None: 0, "tiny": 1, "slow": 2}
        for key in sorted(keys, key=lambda k: order[NODE_SPECS[k]["model"]]):
            if key not in self.nodes:
                self.start(key)

    def get(self, key: str) -> RewardNodeUnderTest:
        """The running node (started if needed, or again if a test consumed it), once ready."""
        node = self.nodes.get(key)
        if node is None or (key in self.ready and not node.process.running()):
            node = self.start(key)
        if NODE_SPECS[key].get("expect_ready", True) and key not in self.ready:
            node.wait_ready(READY_TIMEOUT)
            self.ready.add(key)
        return node

    def retire(self, key: str) -> None:
        """SIGINT (without waiting) node ``key`` and its cameras; close() reaps them. The next
        get(key) starts a new node."""
        for pub_key, owner in list(self.owner.items()):
            if owner == key and pub_key in self.publishers:
                proc = self.publishers.pop(pub_key)[0]
                proc.send_sigint()
                self.released.append(proc)
        node = self.nodes.pop(key, None)
        if node is not None:
            node.process.send_sigint()
            self.released.append(node.process)
        self.ready.discard(key)

    consume = retire  # a test stopped the node itself

    def publisher(self, key: str, owner: str, build: Callable[[Path], list[str]], *,
                  wait_publishing: bool = True) -> tuple[ManagedProcess, Path]:
        """A camera publisher (cached by ``key``); ``build(stamp_log)`` returns its command line."""
        cached = self.publishers.get(key)
        if cached is not None:  # a finite publisher may have finished: that is its normal end
            return cached
        stamp_log = self.workdir / f"{key}.{time.monotonic_ns()}.stamps"
        proc = ManagedProcess(key, build(stamp_log), env=self.env, log_path=stamp_log.with_suffix(".log"))
        self.publishers[key] = (proc, stamp_log)
        self.owner[key] = owner
        if wait_publishing:
            proc.wait_for_output(r"^publishing$", 60)
        return proc, stamp_log

    def stop_publisher(self, key: str) -> None:
        cached = self.publishers.pop(key, None)
        if cached is not None:
            cached[0].stop()

    def release_unneeded(self, still_needed: set[str]) -> None:
        """SIGINT (without waiting) the nodes no remaining test uses, and stop their cameras, so
        idle work does not slow the tests that follow; close() reaps them."""
        for key in list(self.nodes):
            if key not in still_needed:
                self.retire(key)

    def close(self) -> None:
        stop_all([p for p, _ in self.publishers.values()])
        stop_all([n.process for n in self.nodes.values()] + self.released)
        self.publishers.clear()
        self.nodes.clear()


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from diagnostic_msgs.msg import DiagnosticArray

    domain_id = allocate_domain_id()
    old_env = set_process_ros_env(domain_id)
    listener = RosListener(domain_id)
    diagnostics = listener.subscribe("/diagnostics", DiagnosticArray, 200)
    fleet = Fleet(request, listener, domain_id, tmp_path_factory.mktemp("reward_node"), diagnostics)
    wanted = {name for item in _module_items(request) for name in getattr(item, "fixturenames", ())}
    try:
        fleet.prestart([key for key in NODE_SPECS if key in wanted])
        yield fleet
    finally:
        try:
            fleet.close()
        finally:
            listener.close()
            restore_env(old_env)


def _module_items(request: pytest.FixtureRequest) -> list[pytest.Item]:
    return [item for item in request.session.items if getattr(item, "module", None) is request.module]


@pytest.fixture(autouse=True)
def _release_idle_nodes(request: pytest.FixtureRequest):
    yield
    fleet = request.node.funcargs.get("fleet")
    if fleet is None:
        return
    items = _module_items(request)
    remaining = items[items.index(request.node) + 1:] if request.node in items else items
    fleet.release_unneeded({name for item in remaining for name in getattr(item, "fixturenames", ())})


def _node_fixture(key: str):
    @pytest.fixture(name=key)
    def fixture(fleet: Fleet) -> RewardNodeUnderTest:
        return fleet.get(key)

    return fixture


rate_node = _node_fixture("rate_node")
request_node = _node_fixture("request_node")
small_queue_node = _node_fixture("small_queue_node")
compressed_rig_node = _node_fixture("compressed_rig_node")
wrist_rig_node = _node_fixture("wrist_rig_node")
sim_node = _node_fixture("sim_node")
slow_node = _node_fixture("slow_node")
bad_model_node = _node_fixture("bad_model_node")


# --- helpers --------------------------------------------------------------------------------
def stamp_msg(stamp_ns: int):
    from builtin_interfaces.msg import Time

    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def run_of(length: int) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]] | None]:
    """Predicate: the current run once it has ``length`` estimates."""
    def check(estimates: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        run = current_run(estimates)
        return run if len(run) >= length else None

    return check


def current_run(estimates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The estimates of the newest episode that was seen from its step 0, in arrival order."""
    starts = [i for i, e in enumerate(estimates) if e["step"] == 0]
    if not starts:
        return []
    episode = estimates[starts[-1]]["episode_id"]
    return [e for e in estimates[starts[-1]:] if e["episode_id"] == episode and e["step"] is not None]


def published(stamp_log: Path, timeout: float = 10.0) -> dict[str, list[int]]:
    return wait_until(lambda: read_stamp_log(stamp_log), timeout, f"stamps in {stamp_log}")


def check_scored_run(run: list[dict[str, Any]], stamps: dict[str, list[int]], roles: tuple[str, ...]) -> None:
    """Shared checks of one episode's estimates against what the cameras published."""
    first = run[0]
    assert first["status"] == "first_frame" and first["step"] == 0, first
    assert first["progress"] == 0.0 and first["percent"] == 0 and first["prev_stamp_ns"] is None, first
    assert first["stamp_ns"] == first["first_stamp_ns"], first
    sent = {role: set(stamps.get(role, ())) for role in roles}
    for k, e in enumerate(run):
        assert e["schema"] == "sole_r1_ros/estimate/1"
        assert e["status"] in SCORED_STATUSES, e
        assert e["step"] == k, [x["step"] for x in run]
        assert e["goal"] == run[0]["goal"] and e["episode_id"] == run[0]["episode_id"]
        assert e["first_stamp_ns"] == first["stamp_ns"], "first_stamp_ns must be constant within an episode"
        assert e["stamp_ns"] in sent[roles[0]], f"estimate stamp {e['stamp_ns']} was never published"
        assert set(e["views"]) == set(roles), e["views"]
        assert e["views"][roles[0]] == e["stamp_ns"]
        for role in roles[1:]:
            assert e["views"][role] in sent[role], f"{role} stamp {e['views'][role]} was never published"
            assert abs(e["views"][role] - e["stamp_ns"]) <= ALIGN_TOLERANCE_NS, e["views"]
        assert e["progress"] is not None and e["reward"] is not None, e
        if k:
            assert e["stamp_ns"] > run[k - 1]["stamp_ns"], "stamps must increase"
            assert e["prev_stamp_ns"] == run[k - 1]["stamp_ns"], e
            assert e["tokens"]["generated"] > 0 and e["timings"]["model_s"] > 0, e


def check_output_order(node: RewardNodeUnderTest) -> int:
    """progress, reward, reasoning, estimate: in that order and equal in number for every estimate
    that carries a progress value; returns how many such cycles were seen."""
    listener = node.listener
    with listener.cond:
        rec = {name: list(node.rec[name].items) for name in node.OUTPUTS}
    estimates = rec["estimate"]
    assert estimates, "no estimate recorded"
    last = estimates[-1].seq  # ignore a cycle whose estimate has not arrived yet
    prog, rew, reas = ([r for r in rec[n] if r.seq < last] for n in ("progress", "reward", "reasoning"))
    cycles = [r for r in estimates if json.loads(r.msg.data)["progress"] is not None]
    assert len(prog) == len(rew) == len(reas) == len(cycles), (len(prog), len(rew), len(reas), len(cycles))
    previous = -1
    for p, w, s, e in zip(prog, rew, reas, cycles):
        d = json.loads(e.msg.data)
        assert previous < p.seq < w.seq < s.seq < e.seq, "outputs out of order"
        previous = e.seq
        assert p.msg.data == pytest.approx(d["progress"], abs=1e-6)
        assert math.isnan(w.msg.data) if d["reward"] is None else w.msg.data == pytest.approx(d["reward"], abs=1e-6)
        assert s.msg.data == d["reasoning"]
    return len(cycles)


def answers_by_id(node: RewardNodeUnderTest, start: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in node.estimates()[start:]:
        out.setdefault(e["request_id"], []).append(e)
    return out


def send_requests(fleet: Fleet, node: RewardNodeUnderTest, requests: list[tuple[str, int]]) -> None:
    from std_msgs.msg import Header

    pub = fleet.listener.publisher(node.topic("request"), Header, 100)
    wait_until(lambda: pub.get_subscription_count() >= 1, 30, f"{node.key} subscribing to ~/request")
    for request_id, stamp_ns in requests:
        pub.publish(Header(stamp=stamp_msg(stamp_ns), frame_id=request_id))


def wait_answer(node: RewardNodeUnderTest, request_id: str, start: int, timeout: float = 60.0) -> dict[str, Any]:
    return node.wait_estimates(
        lambda es: next((e for e in es[start:] if e["request_id"] == request_id), None), timeout,
        f"the answer to request {request_id!r}")


def camera_counts(diag: dict[str, dict[str, Any]], roles: tuple[str, ...]) -> dict[str, int]:
    return {role: int(diag[f"camera {role}"]["values"]["received"]) for role in roles}


# --- publishers -------------------------------------------------------------------------------
@pytest.fixture
def rate_cameras(fleet: Fleet, rate_node: RewardNodeUnderTest) -> tuple[RewardNodeUnderTest, Path]:
    _, stamp_log = fleet.publisher("rate_cameras", "rate_node", lambda log: camera_publisher_command(
        topics=["/rate/cameras/external/image_raw", "/rate/cameras/wrist/image_raw"], rate=15,
        stamp_log=log, offsets_ms=[0, WRIST_OFFSET_MS]))
    return rate_node, stamp_log


@pytest.fixture
def request_frames(fleet: Fleet, request_node: RewardNodeUnderTest,
                   small_queue_node: RewardNodeUnderTest) -> dict[str, list[int]]:
    """40 frames per camera published once to /req (both request-mode nodes subscribe), then the
    publisher exits: the nodes' buffers (30 frames) stay put while requests are answered."""
    count = 40
    proc, stamp_log = fleet.publisher("request_cameras", "request_node", lambda log: camera_publisher_command(
        topics=["/req/cameras/external/image_raw", "/req/cameras/wrist/image_raw"], rate=15, count=count,
        depth=count, stamp_log=log, offsets_ms=[0, WRIST_OFFSET_MS], wait_subscribers=2))
    proc.wait_for_output(rf"^done {count}$", 60)
    for node in (request_node, small_queue_node):
        node.wait_diagnostics(lambda d: set(camera_counts(d, ("external", "wrist")).values()) == {count}, 30,
                              f"{count} frames received per camera")
    stamps = read_stamp_log(stamp_log)
    assert [len(stamps[r]) for r in ("external", "wrist")] == [count, count]
    return stamps


# --- 1. rate mode -------------------------------------------------------------------------------
def test_rate_mode_scores_published_aligned_frames(rate_cameras: tuple[RewardNodeUnderTest, Path]) -> None:
    node, stamp_log = rate_cameras
    run = node.wait_estimates(run_of(4), 60,
                              "4 estimates of one episode")
    check_scored_run(run, published(stamp_log), ("external", "wrist"))
    assert run[0]["goal"] == GOAL
    cycles = check_output_order(node)
    assert cycles >= 4
    # rate mode: one estimate per `period` (0.5 s) of stamp time, not one per frame (15 Hz)
    mean_gap = (run[-1]["stamp_ns"] - run[0]["stamp_ns"]) / (len(run) - 1)
    assert mean_gap >= 0.3e9, [e["stamp_ns"] for e in run]


# --- 2. goal topic, reset, empty goal ----------------------------------------------------------
def test_goal_topic_and_reset_start_new_episodes(fleet: Fleet,
                                                 rate_cameras: tuple[RewardNodeUnderTest, Path]) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Empty, String

    node, _ = rate_cameras
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    goal_pub = fleet.listener.publisher(node.topic("goal"), String, latched)
    reset_pub = fleet.listener.publisher(node.topic("reset"), Empty, 10)
    wait_until(lambda: goal_pub.get_subscription_count() >= 1 and reset_pub.get_subscription_count() >= 1, 30,
               "the node subscribing to goal and ~/reset")
    before = node.wait_estimates(lambda es: es[-1] if es else None, 60, "any estimate")
    old_episode = before["episode_id"]

    # a new goal on the topic: new episode, step restarts at 0
    new_goal = "stack the green block on the blue block"
    start = len(node.estimates())
    goal_pub.publish(String(data=new_goal))
    first = node.wait_estimates(lambda es: next((e for e in es[start:] if e["goal"] == new_goal
                                                 and e["step"] is not None), None), 30,
                                "an estimate for the new goal")
    episode = first["episode_id"]
    assert episode != old_episode
    assert first["step"] == 0 and first["status"] == "first_frame" and first["progress"] == 0.0, first
    node.process.wait_for_output(rf"goal from topic: '{new_goal}' \(episode {episode}\)", 10)
    node.wait_estimates(lambda es: any(e["episode_id"] == episode and e["step"] == 1 for e in es), 30,
                        "step 1 of the new episode")

    # ~/reset: new episode, same goal
    start = len(node.estimates())
    reset_pub.publish(Empty())
    reset = node.wait_estimates(
        lambda es: next((e for e in es[start:] if e["episode_id"] not in (old_episode, episode)
                         and e["step"] is not None), None), 30,
        "an estimate of the episode after the reset")
    assert reset["goal"] == new_goal and reset["step"] == 0 and reset["status"] == "first_frame", reset
    node.process.wait_for_output(rf"episode reset: {reset['episode_id']}", 10)

    # an empty goal is rejected: the episode goes on, and ~/estimate says so (goal_rejected)
    log_start = len(node.process.output())
    start = len(node.estimates())
    goal_pub.publish(String(data="   "))
    node.process.wait_for_output(r"goal from topic rejected: goal is empty", 10, start=log_start)
    refusal = node.wait_estimates(lambda es: next((e for e in es[start:] if e["status"] == "goal_rejected"), None),
                                  30, "the goal_rejected estimate")
    assert refusal["episode_id"] == reset["episode_id"] and refusal["progress"] is None, refusal
    assert "goal is empty" in refusal["detail"]
    start = len(node.estimates())
    later = node.wait_estimates(lambda es: [e for e in es[start:] if e["step"] is not None][:2] or None
                                if sum(e["step"] is not None for e in es[start:]) >= 2 else None, 30,
                                "estimates after the rejected goal")
    assert {e["episode_id"] for e in later} == {reset["episode_id"]}, later
    assert {e["goal"] for e in later} == {new_goal}
    assert all(e["step"] > 0 for e in later), [e["step"] for e in later]

    # max_goal_chars is the one limit: a 1900-character goal starts an episode, one over the limit is refused
    long_goal = ("push the red block " * 100).strip()
    start = len(node.estimates())
    goal_pub.publish(String(data=long_goal))
    long_first = node.wait_estimates(lambda es: next((e for e in es[start:] if e["goal"] == long_goal
                                                      and e["step"] is not None), None), 30,
                                     "an estimate for the long goal")
    assert long_first["step"] == 0, long_first
    log_start = len(node.process.output())
    goal_pub.publish(String(data="x" * (LONG_GOAL_LIMIT + 1)))
    node.process.wait_for_output(rf"goal from topic rejected: .*limit is {LONG_GOAL_LIMIT}", 10, start=log_start)
    start = len(node.estimates())
    node.wait_estimates(lambda es: es[start:] if len(es) - start >= 1 else None, 30, "estimates after the refusal")
    assert node.process.running()


# --- 3. request mode ----------------------------------------------------------------------------
def test_request_mode_answers_every_request_once_in_order(fleet: Fleet, request_node: RewardNodeUnderTest,
                                                          request_frames: dict[str, list[int]]) -> None:
    node = request_node
    chosen = request_frames["external"][-16:-8]  # inside the 30-frame buffer
    requests = [(f"r{i}", stamp) for i, stamp in enumerate(chosen)]
    start = len(node.estimates())
    send_requests(fleet, node, requests)
    wait_answer(node, "r7", start)
    send_requests(fleet, node, [("sentinel", chosen[0])])  # answers are in order: nothing for r* after it
    wait_answer(node, "sentinel", start)

    answers = [e for e in node.estimates()[start:] if e["request_id"] != "sentinel"]
    assert [e["request_id"] for e in answers] == [rid for rid, _ in requests], "one answer per request, in order"
    sent_wrist = set(request_frames["wrist"])
    for e, (_rid, stamp) in zip(answers, requests):
        assert e["status"] in SCORED_STATUSES, e
        assert e["requested_stamp_ns"] == stamp and e["stamp_ns"] == stamp, e
        assert e["views"]["external"] == stamp and e["views"]["wrist"] in sent_wrist, e
        assert abs(e["views"]["wrist"] - stamp) <= ALIGN_TOLERANCE_NS
        assert e["goal"] == GOAL
    assert len({e["episode_id"] for e in answers}) == 1
    steps = [e["step"] for e in answers]
    assert steps == list(range(steps[0], steps[0] + len(steps))), steps
    if steps[0] == 0:
        assert answers[0]["status"] == "first_frame" and answers[0]["progress"] == 0.0
    check_output_order(node)


def test_request_without_matching_frame_gets_failure_answer(fleet: Fleet, request_node: RewardNodeUnderTest,
                                                            request_frames: dict[str, list[int]]) -> None:
    node = request_node
    ext = request_frames["external"]
    future, evicted, good = ext[-1] + 5_000_000_000, ext[0], ext[-1]
    start = len(node.estimates())
    progress_before = len(node.rec["progress"])
    send_requests(fleet, node, [("missing-future", future), ("missing-evicted", evicted), ("good", good)])
    wait_answer(node, "good", start)
    answers = answers_by_id(node, start)
    assert sorted(answers) == ["good", "missing-evicted", "missing-future"], answers
    for rid, stamp in (("missing-future", future), ("missing-evicted", evicted)):
        (e,) = answers[rid]
        assert e["status"].startswith(("not_aligned", "stale", "view_missing")), e
        assert e["detail"], e
        assert e["requested_stamp_ns"] == stamp and e["stamp_ns"] is None and e["progress"] is None, e
        assert e["goal"] == GOAL and e["episode_id"], e
    (ok,) = answers["good"]
    assert ok["status"] in SCORED_STATUSES and ok["stamp_ns"] == good, ok
    # failures publish no progress/reward/reasoning: only the good answer did
    wait_until(lambda: len(node.rec["progress"]) >= progress_before + 1, 10, "progress of the good request")
    assert len(node.rec["progress"]) == progress_before + 1
    check_output_order(node)


def test_request_queue_overflow_answers_every_request(fleet: Fleet, small_queue_node: RewardNodeUnderTest,
                                                      request_frames: dict[str, list[int]]) -> None:
    node = small_queue_node
    stamps = request_frames["external"][-12:]
    requests = [(f"q{i}", stamps[i % len(stamps)]) for i in range(OVERFLOW_BURST)]
    start = len(node.estimates())
    send_requests(fleet, node, requests)  # a burst: the queue holds 2
    node.wait_estimates(lambda es: len({e["request_id"] for e in es[start:]}) >= OVERFLOW_BURST, 90,
                        "answers to the whole burst")
    send_requests(fleet, node, [("sentinel", stamps[-1])])
    wait_answer(node, "sentinel", start)

    answers = answers_by_id(node, start)
    assert sorted(answers) == sorted([rid for rid, _ in requests] + ["sentinel"])
    assert all(len(v) == 1 for v in answers.values()), {k: len(v) for k, v in answers.items()}
    overflow = [rid for rid, _ in requests if answers[rid][0]["status"] == "queue_overflow"]
    scored = [rid for rid, _ in requests if rid not in overflow]
    assert overflow, "a burst of 12 requests into a queue of 2 must overflow"
    assert len(scored) >= 2, scored
    for rid, stamp in requests:
        (e,) = answers[rid]
        assert e["requested_stamp_ns"] == stamp, e
        if rid in overflow:
            assert e["stamp_ns"] is None and e["progress"] is None and "queue full" in e["detail"], e
        else:
            assert e["status"] in SCORED_STATUSES and e["stamp_ns"] == stamp, e
    model_order = [e["request_id"] for e in node.estimates()[start:] if e["request_id"] in scored]
    assert model_order == scored, "the queued requests are answered in request order"
    node.wait_diagnostics(lambda d: int(d["inference"]["values"]["queue_overflows"]) >= len(overflow), 10,
                          "the overflow counter")


# --- 4. rigs switched by params file + remaps only ------------------------------------------
def test_compressed_rig_by_remapping(fleet: Fleet, compressed_rig_node: RewardNodeUnderTest) -> None:
    node = compressed_rig_node
    node.process.wait_for_output(r"camera 'external': /rigB/scene/compressed \(compressed\)", 5)
    node.process.wait_for_output(r"camera 'wrist': /rigB/wrist/compressed \(compressed\)", 5)
    _, stamp_log = fleet.publisher("rigB_cameras", "compressed_rig_node", lambda log: camera_publisher_command(
        topics=["/rigB/scene/compressed", "/rigB/wrist/compressed"], transport="compressed", rate=15,
        stamp_log=log, offsets_ms=[0, WRIST_OFFSET_MS]))
    run = node.wait_estimates(run_of(3), 60,
                              "3 estimates from the JPEG cameras")
    check_scored_run(run, published(stamp_log), ("external", "wrist"))
    diag = node.wait_diagnostics(lambda d: min(camera_counts(d, ("external", "wrist")).values()) > 0, 15,
                                 "frames received on both compressed cameras")
    assert not any(k.startswith("decode_errors.") for k in diag["inference"]["values"]), diag["inference"]


def test_wrist_only_rig(fleet: Fleet, wrist_rig_node: RewardNodeUnderTest) -> None:
    node = wrist_rig_node
    node.process.wait_for_output(r"camera 'wrist': /rigW/wrist/image_raw \(raw\)", 5)
    node.process.wait_for_output(r"ready: mode=rate period=0.5s cameras=\['wrist'\]", 5)
    _, stamp_log = fleet.publisher("rigW_camera", "wrist_rig_node", lambda log: camera_publisher_command(
        roles=["wrist"], topics=["/rigW/wrist/image_raw"], rate=15, stamp_log=log))
    run = node.wait_estimates(run_of(3), 60,
                              "3 estimates from the single camera")
    check_scored_run(run, published(stamp_log), ("wrist",))


# --- 5. sim time -------------------------------------------------------------------------------
def test_sim_time_stamps(fleet: Fleet, sim_node: RewardNodeUnderTest) -> None:
    node = sim_node
    _, stamp_log = fleet.publisher("sim_cameras", "sim_node", lambda log: camera_publisher_command(
        topics=["/sim/cameras/external/image_raw", "/sim/cameras/wrist/image_raw"], rate=15, clock=True,
        sim_start=SIM_START_S, stamp_log=log, offsets_ms=[0, WRIST_OFFSET_MS]))
    run = node.wait_estimates(run_of(3), 60,
                              "3 estimates in sim time")
    stamps = published(stamp_log)
    check_scored_run(run, stamps, ("external", "wrist"))
    start_ns = int(SIM_START_S * 1e9)
    assert stamps["external"][0] == start_ns  # the publisher's sim stamps are deterministic
    for e in run:
        assert start_ns <= e["stamp_ns"] < start_ns + 600_000_000_000, e["stamp_ns"]
    t_first = node.rec["estimate"].snapshot()[0].t
    diag = node.wait_diagnostics(lambda d: True, 15, "diagnostics after the first estimate", after=t_first)
    stamp = diag["inference"]["stamp_ns"]
    newest = max(read_stamp_log(stamp_log)["external"])
    assert start_ns <= stamp <= newest + 1_000_000_000, f"diagnostics stamped {stamp}, not sim time"
    assert int(diag["inference"]["values"].get("selection_failures.stale", 0)) == 0, diag["inference"]


# --- 7. no frame lost by the node's callbacks while the model runs ---------------------------
# (before 6: it needs the slow node with no camera running, 6 leaves one running)
def busy_between(node: RewardNodeUnderTest, t0: float, t1: float) -> bool:
    return any(d["inference"]["values"]["busy"] == "True" for d in node.diagnostics_history()
               if t0 <= d["inference"]["t"] <= t1)


def test_no_frames_dropped_while_model_busy(fleet: Fleet, slow_node: RewardNodeUnderTest) -> None:
    node = slow_node
    roles = ("external", "wrist")
    fleet.stop_publisher("slow_cameras")  # no other frames while we count
    t_quiet = time.monotonic()
    baseline = camera_counts(node.wait_diagnostics(lambda d: True, 15, "a baseline", after=t_quiet + 0.2), roles)
    start = len(node.estimates())
    proc, stamp_log = fleet.publisher("slow_burst", "slow_node", lambda log: camera_publisher_command(
        topics=["/slow/cameras/external/image_raw", "/slow/cameras/wrist/image_raw"], rate=30,
        count=NO_DROP_FRAMES, depth=NO_DROP_FRAMES, stamp_log=log, offsets_ms=[0, WRIST_OFFSET_MS]))
    t_publishing = time.monotonic()
    proc.wait_for_output(rf"^done {NO_DROP_FRAMES}$", 60)
    t_done = time.monotonic()
    assert proc.wait_exit(15) == 0, proc.tail()
    stamps = read_stamp_log(stamp_log)
    assert [len(stamps[r]) for r in roles] == [NO_DROP_FRAMES] * 2
    expected = {role: baseline[role] + NO_DROP_FRAMES for role in roles}
    diag = node.wait_diagnostics(lambda d: camera_counts(d, roles) == expected, 30,
                                 f"received counters {expected} (baseline {baseline})", after=t_done)
    assert camera_counts(diag, roles) == expected
    # the model really was running while the frames came in: diagnostics said so, or (if no
    # diagnostics message fell inside the burst) a model step overlapped it
    if not busy_between(node, t_publishing, t_done):
        model = node.wait_estimates(
            lambda es: next((e for e in es[start:] if e["status"] in MODEL_STATUSES), None), 120, "a model step")
        rec = next(r for r in node.rec["estimate"].snapshot()[start:] if json.loads(r.msg.data) == model)
        step_s = model["timings"]["model_s"] + model["timings"]["preprocess_s"]
        assert rec.t - step_s < t_done and rec.t > t_publishing, "no model step overlapped the frames"


# --- 6. parameter services while the model is busy -----------------------------------------
def test_parameter_services_answer_while_model_busy(fleet: Fleet, slow_node: RewardNodeUnderTest) -> None:
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters

    node = slow_node
    get_srv, set_srv = f"{node.fqn}/get_parameters", f"{node.fqn}/set_parameters"
    listener = fleet.listener
    # discover the services first (not timed)
    listener.call(GetParameters, get_srv, GetParameters.Request(names=["goal"]), 30)
    fleet.publisher("slow_cameras", "slow_node", lambda log: camera_publisher_command(
        topics=["/slow/cameras/external/image_raw", "/slow/cameras/wrist/image_raw"], rate=15, stamp_log=log,
        offsets_ms=[0, WRIST_OFFSET_MS]))

    def string_param(value: str) -> ParameterMsg:
        return ParameterMsg(name="goal", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))

    # period 0 and frames coming: once busy, the node stays busy (steps back to back)
    t_wait = time.monotonic()
    node.wait_diagnostics(lambda d: d["inference"]["values"]["busy"] == "True", 60, "busy", after=t_wait)
    start = len(node.estimates())
    t_calls = time.monotonic()
    got, t_get = listener.call(GetParameters, get_srv, GetParameters.Request(names=["goal"]), 5)
    t_get_answered = time.monotonic()
    rejected, t_reject = listener.call(SetParameters, set_srv, SetParameters.Request(parameters=[string_param("")]), 5)
    new_goal = "open the top drawer"
    accepted, t_accept = listener.call(SetParameters, set_srv,
                                       SetParameters.Request(parameters=[string_param(new_goal)]), 5)
    got_new, t_get2 = listener.call(GetParameters, get_srv, GetParameters.Request(names=["goal"]), 5)
    print(f"\nparameter services while busy: get {t_get * 1e3:.1f} ms, set('') {t_reject * 1e3:.1f} ms, "
          f"set(goal) {t_accept * 1e3:.1f} ms, get {t_get2 * 1e3:.1f} ms")

    assert got.values[0].type == ParameterType.PARAMETER_STRING and got.values[0].string_value.strip()
    assert not rejected.results[0].successful and "empty" in rejected.results[0].reason, rejected
    assert accepted.results[0].successful, accepted
    assert got_new.values[0].string_value == new_goal

    # a step was running when the first answer came back: the first model step published after
    # that answer had started before it (steps run back to back, so if the step in flight at the
    # first call ended during it, the next one had already started)
    def first_step_published_after(t: float) -> Any:
        for r in node.rec["estimate"].snapshot()[start:]:
            e = json.loads(r.msg.data)
            if e["status"] in MODEL_STATUSES and r.t >= t:
                return r, e
        return None

    rec, in_flight = wait_until(lambda: first_step_published_after(t_get_answered), 120,
                                "the step that ran during the calls")
    step_s = in_flight["timings"]["model_s"] + in_flight["timings"]["preprocess_s"]
    print(f"slow model: one step ({in_flight['tokens']['generated']} new tokens) took "
          f"{in_flight['timings']['model_s']:.2f} s in generate, {step_s:.2f} s in all")
    assert in_flight["timings"]["model_s"] >= 1.0, in_flight["timings"]
    assert rec.t - step_s <= t_get_answered + 0.5, (
        f"not busy during the call: step ran ~[{rec.t - step_s - t_calls:.2f}, {rec.t - t_calls:.2f}] s "
        f"from the first call, answered after {t_get_answered - t_calls:.2f} s")
    # a new episode follows for the accepted goal; the last step of the old one ran across the
    # change (steps run back to back) and says its episode ended under it
    first = node.wait_estimates(lambda es: next((e for e in es[start:] if e["goal"] == new_goal
                                                 and e["step"] is not None), None), 60,
                                "the new goal's first estimate")
    cut = [e for e in node.estimates()[start:] if e["goal"] != new_goal and e["status"] in MODEL_STATUSES][-1]
    assert "episode ended while this step ran" in cut["detail"], cut
    assert first["step"] == 0 and first["status"] == "first_frame" and first["episode_id"] != cut["episode_id"]
    node.process.wait_for_output(rf"goal from parameter: '{new_goal}'", 10)


# --- 8. shutdown --------------------------------------------------------------------------------
def test_sigint_while_scoring_exits_cleanly(fleet: Fleet, small_queue_node: RewardNodeUnderTest,
                                            request_frames: dict[str, list[int]]) -> None:
    """Request mode makes "while scoring" certain: after one answer the next request is in the model."""
    from std_msgs.msg import Empty

    node = small_queue_node
    stamps = request_frames["external"][-2:]
    ids = ["stop0", "stop1"]  # within the queue (2): the anchor (no model call), then a model step
    # a fresh episode: earlier tests scored these frames, and a frame older than the episode's
    # last scored one is answered out_of_order without the model
    resets = node.process.output().count("episode reset: ")
    reset_pub = fleet.listener.publisher(node.topic("reset"), Empty, 10)
    wait_until(lambda: reset_pub.get_subscription_count() >= 1, 30, "the node subscribing to ~/reset")
    reset_pub.publish(Empty())
    wait_until(lambda: node.process.output().count("episode reset: ") > resets, 10, "the node's episode reset")
    start = len(node.estimates())
    send_requests(fleet, node, list(zip(ids, stamps)))
    try:
        node.wait_estimates(lambda es: any(e["request_id"] == "stop0" for e in es[start:]), 60,
                            "the anchor's answer")
        answered = {e["request_id"] for e in node.estimates()[start:]}
        t0 = time.monotonic()
        node.process.send_sigint()
        rc = node.process.wait_exit(10)
        elapsed = time.monotonic() - t0
    finally:
        fleet.consume("small_queue_node")
    out = node.process.output()
    assert rc is not None, f"still running 10 s after SIGINT\n{node.process.tail()}"
    assert rc == 0, node.process.tail()
    assert "Traceback" not in out, node.process.tail(200)
    # the worker takes the next request as soon as it emits an answer: one was in the model
    seen = [(e["request_id"], e["status"], e["detail"]) for e in node.estimates()[start:]]
    assert len(answered) < len(ids), f"every request was answered before SIGINT: nothing was in flight: {seen}"
    print(f"\nSIGINT while scoring: exited with 0 after {elapsed:.2f} s")


def test_missing_model_path_fails_clearly(bad_model_node: RewardNodeUnderTest, fleet: Fleet) -> None:
    node = bad_model_node
    rc = node.process.wait_exit(120)
    assert rc is not None, node.process.tail()
    assert rc != 0, node.process.tail()
    out = node.process.output()
    assert "cannot start" in out and str(fleet.missing_model) in out, node.process.tail()
    assert "Traceback" not in out, node.process.tail(200)
