"""The reward node under faults, as real processes over DDS: signals at many points of a step,
SIGTERM the way ``ros2 launch`` escalates, ``/clock`` stopping, a flood of bad goals, stamps far
from the clock, the composite, and rigs composed from several params files."""

from __future__ import annotations

import io
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ros_helpers import (
    CONFIG,
    ManagedProcess,
    RewardNodeUnderTest,
    camera_publisher_command,
    isolated_ros,
    read_stamp_log,
    reward_node_command,
    wait_until,
)

pytestmark = pytest.mark.ros

GOAL = "pick up the red cube"
TINY = {"model.greedy": True, "model.max_new_tokens": 20, "image_qos.reliability": "reliable"}
MODEL_STATUSES = ("ok", "parse_failed")
SIGNAL_POINTS = 10  # signals spread over one step
BATCH = 5  # nodes started together (model loading overlaps; the waiting ones sit idle)
OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"  # diagnostic_msgs/DiagnosticStatus levels


@pytest.fixture(scope="module")
def ros(tiny_model_dir: Path):
    from diagnostic_msgs.msg import DiagnosticArray

    with isolated_ros("node_faults_listener") as (listener, env):
        diagnostics = listener.subscribe("/diagnostics", DiagnosticArray, 500)
        yield listener, env, diagnostics, tiny_model_dir


def start_node(ros: Any, tmp_path: Path, key: str, ns: str, *, params: dict[str, Any],
               params_file: Path = CONFIG / "reward_node.yaml", overrides: tuple[Path, ...] = (),
               remaps: dict[str, str] | None = None) -> RewardNodeUnderTest:
    listener, env, diagnostics, model_dir = ros
    argv = reward_node_command(params_file=params_file, overrides=overrides, namespace=ns, remaps=remaps,
                               params={"model.path": model_dir, **params})
    proc = ManagedProcess(key, argv, env=env, log_path=tmp_path / f"{key}.log")
    return RewardNodeUnderTest(key, listener, proc, ns, diagnostics)


def cameras(ros: Any, tmp_path: Path, key: str, topics: list[str], **kwargs: Any) -> tuple[ManagedProcess, Path]:
    _, env, _, _ = ros
    stamp_log = tmp_path / f"{key}.stamps"
    proc = ManagedProcess(key, camera_publisher_command(topics=topics, stamp_log=stamp_log, **kwargs), env=env,
                          log_path=tmp_path / f"{key}.log")
    return proc, stamp_log


def assert_clean_exit(node: RewardNodeUnderTest, rc: int | None, what: str) -> None:
    out = node.process.output()
    assert rc is not None, f"{what}: still running\n{node.process.tail()}"
    assert rc == 0, f"{what}: exit {rc}\n{node.process.tail()}"
    assert "Traceback" not in out, f"{what}\n{node.process.tail(200)}"
    assert "did not stop" not in out, f"{what}\n{node.process.tail()}"


# --- 1. a signal at any point of a step ------------------------------------------------------
def test_a_signal_at_any_point_of_a_step_exits_cleanly(ros: Any, tmp_path: Path) -> None:
    """Request mode with a queue of requests, so steps run back to back while the other nodes sit
    idle (steady step times); each node gets SIGINT or SIGTERM at its own offset into a step, from
    its start to just past its end, spread over ``SIGNAL_POINTS`` nodes."""
    from std_msgs.msg import Header

    listener = ros[0]
    topics = ["/many/cameras/external/image_raw", "/many/cameras/wrist/image_raw"]
    cams, stamp_log = cameras(ros, tmp_path, "many_cameras", topics, rate=15, wait_subscribers=0,
                              offsets_ms=[0, 10])
    remaps = {"cameras/external/image_raw": topics[0], "cameras/wrist/image_raw": topics[1]}
    report: list[str] = []
    signalled: list[tuple[RewardNodeUnderTest, str]] = []

    def request(pub: Any, ids: list[str]) -> None:
        stamp = read_stamp_log(stamp_log)["external"][-3]  # well inside the node's 30-frame buffer
        for request_id in ids:
            msg = Header(frame_id=request_id)
            msg.stamp.sec, msg.stamp.nanosec = divmod(stamp, 1_000_000_000)
            pub.publish(msg)

    try:
        for first in range(0, SIGNAL_POINTS, BATCH):
            nodes = [start_node(ros, tmp_path, f"sig{k}", f"/sig{k}", remaps=remaps,
                                params={**TINY, "goal": GOAL, "mode": "request", "diagnostics_period": 0.2})
                     for k in range(first, min(first + BATCH, SIGNAL_POINTS))]
            try:
                for k, node in enumerate(nodes, start=first):
                    node.wait_ready(150)
                    pub = listener.publisher(node.topic("request"), Header, 50)
                    wait_until(lambda p=pub: p.get_subscription_count() >= 1, 30,  # type: ignore[misc]
                               "the node subscribing to ~/request")
                    node.wait_diagnostics(lambda d: min(int(d[f"camera {r}"]["values"]["received"])
                                                        for r in ("external", "wrist")) >= 10, 30, "frames")
                    request(pub, ["w0", "w1", "w2"])  # first_frame, then two model steps to time
                    warm = node.wait_estimates(
                        lambda es: [e for e in es if e["request_id"] in ("w1", "w2")] if sum(
                            e["request_id"] in ("w1", "w2") for e in es) == 2 else None, 60, "the warm-up steps")
                    assert all(e["status"] in MODEL_STATUSES for e in warm), [node.estimates(), node.process.tail()]
                    step_s = max(e["timings"]["model_s"] + e["timings"]["preprocess_s"] for e in warm)
                    offset = step_s * k / (SIGNAL_POINTS - 1) * 1.1  # the last lands just after a step's end
                    sig = signal.SIGINT if k % 2 == 0 else signal.SIGTERM
                    request(pub, [f"s{i}" for i in range(6)])
                    node.wait_estimates(lambda es: any(e["request_id"] == "s0" for e in es), 30,
                                        "the end of a step")  # s1 starts now
                    time.sleep(offset)
                    node.process.proc.send_signal(sig)
                    signalled.append((node, f"{sig.name}@{offset * 1e3:.0f}/{step_s * 1e3:.0f}ms"))
                for node, what in signalled[first:]:  # each exits while the next one is tested
                    assert_clean_exit(node, node.process.wait_exit(20), f"{what} (offset into a step / step)")
                    report.append(what)
            finally:
                for node in nodes:
                    node.process.stop()
    finally:
        cams.stop()
    print(f"\nclean exits after signals at (offset/step): {', '.join(report)}")
    assert len(report) == SIGNAL_POINTS


# --- 2. SIGTERM as launch sends it, with nothing to score --------------------------------------
def test_sigterm_with_the_wrist_camera_never_published_exits(ros: Any, tmp_path: Path) -> None:
    """``ros2 launch`` signalled alone sends its children no SIGINT and SIGTERM after 5 s; the
    default rig with only the scene camera publishing (every step ``view_missing:wrist``)."""
    node = start_node(ros, tmp_path, "term", "/term", params={**TINY, "goal": GOAL, "diagnostics_period": 0.5})
    cams, stamp_log = cameras(ros, tmp_path, "term_cameras", ["/term/cameras/external/image_raw"],
                              roles=["external"], rate=15)
    try:
        node.wait_ready(150)
        missing = node.wait_estimates(
            lambda es: next((e for e in es if e["status"] == "view_missing:wrist"), None), 60,
            "a view_missing:wrist estimate")
        assert missing["stamp_ns"] in read_stamp_log(stamp_log)["external"], missing
        assert missing["views"] == {"external": missing["stamp_ns"]} and missing["progress"] is None
        node.wait_diagnostics(lambda d: d["camera wrist"]["message"].startswith("no publisher on /term/cameras/wrist"),
                              15, "the wrist camera reported missing")
        t0 = time.monotonic()
        node.process.proc.send_signal(signal.SIGTERM)
        rc = node.process.wait_exit(10)  # launch would SIGKILL 5 s after its SIGTERM
        elapsed = time.monotonic() - t0
    finally:
        cams.stop()
        node.process.stop()
    assert_clean_exit(node, rc, "SIGTERM with nothing to score")
    print(f"\nSIGTERM, wrist camera never published: exit 0 after {elapsed:.2f} s")


def test_sigterm_while_the_executor_waits_on_nothing_exits(ros: Any, tmp_path: Path) -> None:
    """Request mode, no cameras, diagnostics every 60 s: the executor waits with nothing due, so
    a Python-level handler alone would not run for up to a minute; the node's watcher thread
    shuts the context down at once."""
    node = start_node(ros, tmp_path, "idle", "/idle", params={**TINY, "mode": "request", "diagnostics_period": 60.0})
    try:
        node.wait_ready(150)
        time.sleep(1.0)
        t0 = time.monotonic()
        node.process.proc.send_signal(signal.SIGTERM)
        rc = node.process.wait_exit(10)
        elapsed = time.monotonic() - t0
    finally:
        node.process.stop()
    assert_clean_exit(node, rc, "SIGTERM to an idle executor")
    print(f"\nSIGTERM to an idle node: exit 0 after {elapsed:.2f} s")


# --- 3. diagnostics keep going when /clock stops -----------------------------------------------
def test_diagnostics_keep_publishing_when_the_clock_stops(ros: Any, tmp_path: Path) -> None:
    node = start_node(ros, tmp_path, "frozen", "/frozen",
                      params={**TINY, "goal": GOAL, "use_sim_time": True, "diagnostics_period": 0.25})
    cams, _ = cameras(ros, tmp_path, "frozen_cameras",
                      ["/frozen/cameras/external/image_raw", "/frozen/cameras/wrist/image_raw"],
                      rate=15, count=45, clock=True, offsets_ms=[0, 10])
    try:
        node.wait_ready(150)
        cams.wait_for_output(r"^done 45$", 60)
        assert cams.wait_exit(15) == 0, cams.tail()
        t_stopped = time.monotonic()  # the "bag player" is gone: /clock stands still
        silent = node.wait_diagnostics(
            lambda d: d["camera external"]["level"] == WARN and "wall time" in d["camera external"]["message"], 15,
            "the camera reported silent in wall time", after=t_stopped)
        later = wait_until(lambda: [d for d in node.diagnostics_history() if d["inference"]["t"] > t_stopped][12:],
                           15, "diagnostics going on after /clock stopped")  # 0.25 s period: > 3 s of them
    finally:
        node.process.stop()
    assert len({d["inference"]["stamp_ns"] for d in later}) == 1, "stamps should be the frozen sim time"
    print(f"\n/clock stopped: diagnostics kept coming; camera: {silent['camera external']['message']!r}")


# --- 4. a flood of bad goals -------------------------------------------------------------------
def test_a_flood_of_bad_goals_is_counted_not_logged_line_by_line(ros: Any, tmp_path: Path) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    listener = ros[0]
    node = start_node(ros, tmp_path, "goals", "/goals", params={**TINY, "goal": GOAL, "diagnostics_period": 0.25})
    try:
        node.wait_ready(150)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = listener.publisher(node.topic("goal"), String, qos)
        wait_until(lambda: pub.get_subscription_count() >= 1, 30, "the node subscribing to goal")
        goal = node.wait_diagnostics(lambda d: d["goal"]["level"] == OK, 15, "a goal")["goal"]
        episode = goal["values"]["episode_id"]
        log_start = len(node.process.output())
        bad = ["", "   ", "bad\x01goal\x07", "x" * 1_000_000]
        t0 = time.monotonic()
        for k in range(500):  # 500 goals in 2 s
            pub.publish(String(data=bad[3] if k % 10 == 0 else bad[k % 3]))  # every tenth 1 MB
            time.sleep(max(0.0, t0 + (k + 1) * 0.004 - time.monotonic()))
        settled = node.wait_diagnostics(
            lambda d: int(d["goal"]["values"]["goals_rejected"]) >= 100 and d["goal"]["level"] == WARN, 30,
            "rejections counted")
        time.sleep(3.0)  # let every rejection arrive and the last throttled line go out
        final = node.latest_diagnostics()
        out = node.process.output()[log_start:]
        estimates = node.estimates()
    finally:
        node.process.stop()
    rejected = int(final["goal"]["values"]["goals_rejected"])
    lines = [line for line in out.splitlines() if "goal from topic rejected" in line or "goal rejected: " in line]
    reports = [e for e in estimates if e["status"] == "goal_rejected"]
    print(f"\n500 bad goals: {rejected} counted, {len(lines)} log lines, {len(reports)} goal_rejected estimates; "
          f"goal status {settled['goal']['message']!r}")
    assert rejected >= 100
    assert 1 <= len(lines) <= 15, lines  # per kind of rejection (3 here) one line per 2 s, with the count held back
    held = sum(int(m.group(1)) for line in lines for m in [re.search(r"(\d+) more like it", line)] if m)
    assert held == rejected - sum("goal from topic rejected" in line for line in lines), lines  # all accounted for
    assert 1 <= len(reports) <= 8, len(reports)  # one per second
    assert all(e["goal"] == GOAL and e["episode_id"] == episode for e in reports)
    assert final["goal"]["values"]["goal"] == GOAL and final["goal"]["values"]["episode_id"] == episode


# --- 5. a bag replayed without sim time -----------------------------------------------------------
def test_stamps_far_from_the_clock_are_named_in_one_line_and_a_diagnostic(ros: Any, tmp_path: Path) -> None:
    node = start_node(ros, tmp_path, "replay", "/replay", params={**TINY, "goal": GOAL, "diagnostics_period": 0.25})
    cams, _ = cameras(ros, tmp_path, "replay_cameras",
                      ["/replay/cameras/external/image_raw", "/replay/cameras/wrist/image_raw"],
                      rate=15, offsets_ms=[0, 10], extra=["--sim-time"])  # stamps from t = 1000 s, no /clock
    try:
        node.wait_ready(150)
        diag = node.wait_diagnostics(lambda d: d["inference"]["level"] == ERROR, 30, "an ERROR inference status")
        stale = node.wait_estimates(lambda es: next((e for e in es if e["status"].startswith("stale:")), None), 30,
                                    "a stale estimate")
        time.sleep(2.0)  # more stale steps: still one line
        out = node.process.output()
    finally:
        cams.stop()
        node.process.stop()
    assert diag["inference"]["message"].startswith("clock_mismatch: "), diag["inference"]
    assert "use_sim_time" in diag["inference"]["message"]
    assert "clock mismatch" in stale["detail"] and stale["stamp_ns"] is not None, stale
    assert len(re.findall(r"^\[ERROR\].*\]: clock mismatch: camera", out, re.MULTILINE)) == 1, out[-3000:]


# --- 6. what the model saw ---------------------------------------------------------------------
def test_composite_is_the_scored_image_stamped_with_its_frame(ros: Any, tmp_path: Path) -> None:
    from PIL import Image
    from sensor_msgs.msg import CompressedImage

    listener = ros[0]
    node = start_node(ros, tmp_path, "comp", "/comp", params={**TINY, "goal": GOAL, "period": 0.5})
    composites = listener.subscribe("/comp/sole_r1_reward/composite", CompressedImage, 20)
    cams, _ = cameras(ros, tmp_path, "comp_cameras",
                      ["/comp/cameras/external/image_raw", "/comp/cameras/wrist/image_raw"], rate=15,
                      offsets_ms=[0, 10])
    try:
        node.wait_ready(150)
        wait_until(lambda: len(composites) >= 2, 60, lambda: f"2 composites\n{node.process.tail()}")
        got = composites.snapshot()
        estimates = node.wait_estimates(lambda es: es if sum(e["status"] in MODEL_STATUSES for e in es) >= 2
                                        else None, 30, "model steps")
    finally:
        cams.stop()
        node.process.stop()
    by_stamp = {e["stamp_ns"]: e for e in estimates if e["status"] in MODEL_STATUSES}
    for item in got:
        msg = item.msg
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert stamp in by_stamp, "the composite is stamped with a scored frame"
        assert msg.format == "jpeg" and msg.header.frame_id == by_stamp[stamp]["episode_id"]
        assert Image.open(io.BytesIO(bytes(msg.data))).size == (1176, 784)
    for e in by_stamp.values():  # the tiny model's replies are cut by its 20-token limit: the JSON says so
        assert e["tokens"]["limit"] == 20 and e["tokens"]["hit_limit"] == (e["tokens"]["generated"] >= 20), e
        if e["status"] == "parse_failed":
            assert e["progress"] is not None and e["parse_status"] in ("no_answer", "invalid_number", "truncated")


# --- 7. rigs compose -----------------------------------------------------------------------------
def test_rig_plus_overrides_later_file_wins(ros: Any, tmp_path: Path) -> None:
    from rcl_interfaces.srv import GetParameters

    listener = ros[0]
    first = tmp_path / "site.yaml"
    first.write_text(f'/**/sole_r1_reward:\n  ros__parameters:\n    period: 0.3\n    goal: "{GOAL}"\n')
    second = tmp_path / "robot.yaml"
    second.write_text("/**/sole_r1_reward:\n  ros__parameters:\n    period: 0.5\n")
    # remaps as launch/reward_node.launch.py builds them from external_topic / wrist_topic
    scene, wrist = "/rigJ/scene_cam/image_raw", "/rigJ/wrist_cam/image_raw"
    remaps = {"cameras/external/image_raw": scene, "cameras/wrist/image_raw": wrist,
              "cameras/external/image_raw/compressed": f"{scene}/compressed",
              "cameras/wrist/image_raw/compressed": f"{wrist}/compressed"}
    node = start_node(ros, tmp_path, "rigj", "/rigj", params={"model.greedy": True, "model.max_new_tokens": 20},
                      params_file=CONFIG / "rigs" / "scene_raw_wrist_jpeg.yaml",
                      overrides=(CONFIG / "rigs" / "reliable_images.yaml", first, second), remaps=remaps)
    cams, stamp_log = cameras(ros, tmp_path, "rigj_cameras", [scene, f"{wrist}/compressed"], rate=15,
                              transports=["raw", "compressed"], offsets_ms=[0, 10])
    try:
        node.wait_ready(150)
        node.process.wait_for_output(rf"camera 'external': {scene} \(raw\)", 5)
        node.process.wait_for_output(rf"camera 'wrist': {wrist}/compressed \(compressed\)", 5)
        node.process.wait_for_output(r"ready: mode=rate period=0.5s", 5)  # the last file won
        got, _ = listener.call(GetParameters, f"{node.fqn}/get_parameters",
                               GetParameters.Request(names=["image_qos.reliability", "image_qos.depth", "goal"]), 30)
        run = node.wait_estimates(lambda es: [e for e in es if e["status"] in ("first_frame", *MODEL_STATUSES)][:3]
                                  if sum(e["status"] in ("first_frame", *MODEL_STATUSES) for e in es) >= 3 else None,
                                  60, "3 scored steps from a raw and a JPEG camera")
    finally:
        cams.stop()
        node.process.stop()
    assert [v.string_value for v in (got.values[0], got.values[2])] == ["reliable", GOAL]
    assert got.values[1].integer_value == 30
    sent = read_stamp_log(stamp_log)
    for e in run:
        assert e["views"]["external"] in sent["external"] and e["views"]["wrist"] in sent["wrist"], e
    assert json.dumps(run)  # plain JSON all the way
