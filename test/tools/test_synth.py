"""Tests for sole_r1_tools.synth: scene rendering, scripted episodes, rosbag2 writer, CLI."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from sole_r1_tools.synth.bag_writer import (
    DEFAULT_GOAL_TOPIC,
    DEFAULT_PROGRESS_TOPIC,
    DEFAULT_TOPICS,
    compressed_topics,
    export_pngs,
    export_video,
    write_episode_bag,
)
from sole_r1_tools.synth.cli import main
from sole_r1_tools.synth.episodes import (
    DEFAULT_START_NS,
    OUTCOMES,
    TASK_KINDS,
    Episode,
    frame_stamp_ns,
    generate_episode,
    relabel_candidates,
    relabel_goal,
    task_progress,
)
from sole_r1_tools.synth.scene import ROLES, SceneState

SMALL = (96, 72)


@functools.cache
def _episode(task: str, outcome: str, seed: int = 0, n: int = 40, size: tuple[int, int] = SMALL) -> Episode:
    return generate_episode(task, outcome, seed, n, 15.0, size)


@pytest.fixture(scope="module")
def typestore():
    return get_typestore(Stores.ROS2_HUMBLE)


@pytest.fixture(scope="module")
def bag_episode() -> Episode:
    return generate_episode("place", "success", seed=7, n_frames=10, fps=12.5, size=(320, 240))


def _same(a: Episode, b: Episode) -> bool:
    if a.goal != b.goal or len(a.frames) != len(b.frames) or not np.array_equal(a.progress, b.progress):
        return False
    return all(np.array_equal(fa[r], fb[r]) for fa, fb in zip(a.frames, b.frames) for r in ROLES)


def test_deterministic_per_seed():
    a = generate_episode("push", "success", seed=3, n_frames=12, size=SMALL)
    b = generate_episode("push", "success", seed=3, n_frames=12, size=SMALL)
    c = generate_episode("push", "success", seed=4, n_frames=12, size=SMALL)
    assert _same(a, b)
    assert not _same(a, c)
    assert not np.array_equal(a.frames[0]["external"], c.frames[0]["external"])


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (200, 150)])
def test_roles_sizes_and_types(size):
    ep = generate_episode("stack", "success", seed=1, n_frames=4, fps=10.0, size=size)
    w, h = size
    assert ep.n_frames == 4 and len(ep.progress) == 4 and ep.fps == 10.0
    assert ep.roles == ROLES == ("external", "wrist")
    for frame in ep.frames:
        assert set(frame) == {"external", "wrist"}
        for img in frame.values():
            assert img.shape == (h, w, 3) and img.dtype == np.uint8
            assert img.std() > 5
    assert ep.progress.dtype == np.float64
    assert np.all((ep.progress >= 0) & (ep.progress <= 1))
    assert ep.meta["size"] == (w, h)


def test_default_size_and_string_size():
    ep = generate_episode("reach", "success", seed=0, n_frames=2)
    assert ep.frames[0]["external"].shape == (240, 320, 3)
    ep2 = generate_episode("reach", "success", seed=0, n_frames=2, size="160x120")
    assert ep2.frames[1]["wrist"].shape == (120, 160, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(task_kind="fly"),
        dict(outcome="meh"),
        dict(n_frames=1),
        dict(fps=0.0),
        dict(size=(8, 8)),
        dict(size="320by240"),
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_episode(**{"task_kind": "push", "outcome": "success", **kwargs})


def test_colour_parameters_and_goal_strings():
    ep = generate_episode("push", "success", seed=2, n_frames=3, size=SMALL, target_color="red",
                          reference_color="green")
    assert ep.goal == "push the red block into the green zone"
    ep = generate_episode("reach", "success", seed=2, n_frames=3, size=SMALL, target_color="blue")
    assert ep.goal == "move the gripper to the blue block"
    ep = generate_episode("stack", "success", seed=2, n_frames=3, size=SMALL, target_color="yellow",
                          reference_color="blue")
    assert ep.goal == "put the yellow block on the blue block"
    ep = generate_episode("place", "success", seed=2, n_frames=3, size=SMALL)
    assert ep.goal.startswith("put the ") and ep.goal.endswith(" zone")
    with pytest.raises(ValueError):
        generate_episode("push", "success", n_frames=3, size=SMALL, target_color="red", reference_color="red")
    with pytest.raises(ValueError):
        generate_episode("push", "success", n_frames=3, size=SMALL, target_color="chartreuse")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("task", TASK_KINDS)
def test_ground_truth_shape(task, outcome, seed):
    ep = _episode(task, outcome, seed)
    p = ep.progress
    assert ep.outcome == outcome
    assert ep.meta["validated"]
    assert p.shape == (40,) and np.all((p >= 0) & (p <= 1))
    if outcome in ("success", "occlusion"):
        assert p[-1] >= 0.95
        assert p[0] <= 0.1
        assert np.min(np.diff(p)) >= -0.05
        assert np.corrcoef(np.arange(len(p)), p)[0, 1] > 0.75
        assert ep.meta["phase"][-1] == "done"
    elif outcome in ("failure", "wrong_object", "hover"):
        assert p[-1] <= 0.3
    else:
        k = int(np.argmax(p))
        assert p[k] >= 0.6
        assert k < len(p) - 1
        assert p[-1] <= p[k] - 0.25


@pytest.mark.parametrize("task", TASK_KINDS)
def test_ground_truth_is_a_function_of_state(task):
    for outcome in ("success", "wrong_object"):
        ep = _episode(task, outcome)
        scene, spec = ep.meta["scene"], ep.meta["task"]
        states = [SceneState(g, p, h) for g, p, h in zip(ep.meta["gripper"], ep.meta["poses"], ep.meta["holding"])]
        again = [task_progress(spec, scene, s, states[0])[0] for s in states]
        np.testing.assert_allclose(again, ep.progress)
        target_xy = ep.meta["poses"][:, spec.target, :2]
        if outcome == "wrong_object":
            assert np.allclose(target_xy, target_xy[0])
        elif task in ("push", "place"):
            zone = scene.zone
            x, y = target_xy[-1]
            assert abs(x - zone.cx) < zone.hx and abs(y - zone.cy) < zone.hy
        elif task == "stack":
            base = scene.objects[spec.reference]
            assert ep.meta["poses"][-1, spec.target, 2] == pytest.approx(base.height)


@pytest.mark.parametrize("task", TASK_KINDS)
def test_goal_relabelling_turns_a_success_into_a_wrong_object_and_back(task):
    success, wrong = _episode(task, "success"), _episode(task, "wrong_object")
    other = success.meta["objects"].index(next(o for o in success.meta["objects"]
                                               if o["color"] == success.meta["wrong_object"]))
    assert other in relabel_candidates(success)
    assert success.meta["task"].target not in relabel_candidates(success)
    assert success.meta["task"].reference not in relabel_candidates(success)
    relabelled = relabel_goal(success, other)
    assert relabelled.frames is success.frames and relabelled.goal != success.goal
    assert f"the {success.meta['wrong_object']} block" in relabelled.goal
    assert relabelled.goal.split(" block")[-1] == success.goal.split(" block")[-1]  # same goal region
    assert relabelled.meta["relabelled_from"] == success.meta["target"] and success.progress[-1] == 1.0
    # The gripper carried the original target: under the new goal that is the wrong object.
    assert relabelled.progress[-1] <= (0.5 if task == "reach" else 0.3)
    assert relabelled.meta["phase"][-1] != "done" and success.meta["phase"][-1] == "done"
    moved = wrong.meta["objects"].index(
        next(o for o in wrong.meta["objects"] if o["color"] == wrong.meta["wrong_object"])
    )
    assert wrong.progress[-1] <= 0.3 and relabel_goal(wrong, moved).progress[-1] == 1.0
    with pytest.raises(ValueError, match="not a block"):
        relabel_goal(success, success.meta["task"].target)


@pytest.mark.parametrize("task", ["push", "place"])
def test_occlusion_only_changes_occluded_frames(task):
    occ = _episode(task, "occlusion")
    ref = _episode(task, "success")
    np.testing.assert_array_equal(occ.progress, ref.progress)
    assert occ.goal == ref.goal
    occluded = occ.meta["occluded"]
    assert len(occluded["external"]) >= 3
    assert not ref.meta["occluded"]["external"]
    for role in ROLES:
        hidden = set(occluded[role])
        for i, (fo, fr) in enumerate(zip(occ.frames, ref.frames)):
            diff = np.abs(fo[role].astype(int) - fr[role].astype(int)).max(axis=2)
            if i in hidden:
                assert (diff > 25).mean() > 0.04
            else:
                assert np.array_equal(fo[role], fr[role])


def test_views_show_scene_content():
    ep = generate_episode("push", "success", seed=0, n_frames=3, size=(320, 240), target_color="red",
                          reference_color="green")
    ext = ep.frames[0]["external"].astype(int)
    red = (ext[..., 0] > 150) & (ext[..., 1] < 90) & (ext[..., 2] < 90)
    assert red.sum() > 100
    assert not np.array_equal(ep.frames[0]["wrist"], ep.frames[-1]["wrist"])


def test_frame_stamps():
    assert frame_stamp_ns(0, 15.0) == DEFAULT_START_NS
    assert frame_stamp_ns(3, 15.0, 0) == 200_000_000
    assert frame_stamp_ns(1, 15.0, 0) == 66_666_667
    ep = _episode("reach", "success")
    assert ep.stamps_ns(5) == [5 + round(i * 1e9 / 15.0) for i in range(ep.n_frames)]


def _read_bag(path: Path, typestore):
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        counts = {t: info.msgcount for t, info in reader.topics.items()}
        total = reader.message_count
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, typestore.deserialize_cdr(raw, conn.msgtype)))
    return types, counts, total, out


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.mark.parametrize(
    ("storage", "image_format"),
    [("mcap", "raw"), ("sqlite3", "raw"), ("mcap", "jpeg"), ("sqlite3", "jpeg"), ("mcap", "png")],
)
def test_bag_round_trip(tmp_path, typestore, bag_episode, storage, image_format):
    ep = bag_episode
    start_ns = 1_700_000_123_456_789_000
    out = write_episode_bag(ep, tmp_path / "bag", storage=storage, image_format=image_format, start_ns=start_ns)
    assert out == tmp_path / "bag" and out.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert any(p.suffix == suffix for p in out.iterdir())

    types, counts, total, msgs = _read_bag(out, typestore)
    topics = DEFAULT_TOPICS if image_format == "raw" else compressed_topics(DEFAULT_TOPICS)
    img_type = "sensor_msgs/msg/Image" if image_format == "raw" else "sensor_msgs/msg/CompressedImage"
    expected_types = {topics["external"]: img_type, topics["wrist"]: img_type,
                      DEFAULT_GOAL_TOPIC: "std_msgs/msg/String", DEFAULT_PROGRESS_TOPIC: "std_msgs/msg/Float32"}
    assert types == expected_types
    n = ep.n_frames
    assert counts == {topics["external"]: n, topics["wrist"]: n, DEFAULT_GOAL_TOPIC: 1, DEFAULT_PROGRESS_TOPIC: n}
    assert total == 3 * n + 1
    stamps = ep.stamps_ns(start_ns)
    assert stamps[1] - stamps[0] == 80_000_000

    assert [(s, m.data) for s, m in msgs[DEFAULT_GOAL_TOPIC]] == [(start_ns, ep.goal)]
    prog = sorted(msgs[DEFAULT_PROGRESS_TOPIC], key=lambda x: x[0])
    assert [s for s, _ in prog] == stamps
    np.testing.assert_array_equal(np.array([m.data for _, m in prog], dtype=np.float32),
                                  ep.progress.astype(np.float32))

    for role in ROLES:
        got = sorted(msgs[topics[role]], key=lambda x: x[0])
        assert [s for s, _ in got] == stamps
        assert [_stamp(m) for _, m in got] == stamps
        for i, (_, m) in enumerate(got):
            frame = ep.frames[i][role]
            assert m.header.frame_id == f"{role}_camera_optical_frame"
            if image_format == "raw":
                assert (m.height, m.width, m.encoding, m.step, m.is_bigendian) == (240, 320, "rgb8", 960, 0)
                np.testing.assert_array_equal(np.asarray(m.data).reshape(240, 320, 3), frame)
            else:
                assert m.format == f"rgb8; {image_format} compressed bgr8"
                img = cv2.cvtColor(cv2.imdecode(np.asarray(m.data), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                if image_format == "png":
                    np.testing.assert_array_equal(img, frame)
                else:
                    assert np.abs(img.astype(int) - frame.astype(int)).mean() < 6


def test_bag_custom_topics_encoding_and_metadata(tmp_path, typestore, bag_episode):
    ep = bag_episode
    topics = {"external": "/cam/ext", "wrist": "/cam/wrist"}
    out = write_episode_bag(ep, tmp_path / "b", storage="sqlite3", encoding="bgr8", topics=topics,
                            goal_topic="/task/goal", progress_topic="/gt", frame_ids={"wrist": "hand_cam"})
    types, counts, _, msgs = _read_bag(out, typestore)
    assert set(types) == {"/cam/ext", "/cam/wrist", "/task/goal", "/gt"}
    m0 = sorted(msgs["/cam/wrist"], key=lambda x: x[0])[0][1]
    assert m0.encoding == "bgr8" and m0.header.frame_id == "hand_cam"
    np.testing.assert_array_equal(np.asarray(m0.data).reshape(240, 320, 3), ep.frames[0]["wrist"][..., ::-1])
    assert sorted(msgs["/task/goal"])[0][0] == DEFAULT_START_NS
    meta = (out / "metadata.yaml").read_text()
    assert "sole_r1.goal: " + ep.goal in meta
    assert "transient_local" in meta


def test_bag_refuses_existing_path_and_overwrites(tmp_path, bag_episode, typestore):
    out = tmp_path / "bag"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_episode_bag(bag_episode, out)
    assert (out / "keep.txt").read_text() == "x"
    write_episode_bag(bag_episode, out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert _read_bag(out, typestore)[2] == 3 * bag_episode.n_frames + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_atomic_on_malformed_frame(tmp_path, bag_episode, storage):
    frames = [dict(f) for f in bag_episode.frames]
    frames[6]["wrist"] = np.zeros((10, 10), np.float32)
    broken = Episode(bag_episode.goal, bag_episode.fps, frames, bag_episode.progress, "success", {})
    with pytest.raises(ValueError, match="RGB uint8"):
        write_episode_bag(broken, tmp_path / "bag", storage=storage)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_atomic_on_serialize_error(tmp_path, bag_episode, storage, monkeypatch):
    ts = get_typestore(Stores.ROS2_HUMBLE)
    real = ts.serialize_cdr
    calls = {"n": 0}

    def flaky(msg, typename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 12:
            raise RuntimeError("boom")
        return real(msg, typename, *args, **kwargs)

    monkeypatch.setattr(ts, "serialize_cdr", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        write_episode_bag(bag_episode, tmp_path / "bag", storage=storage, typestore=ts)
    assert calls["n"] == 13
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "old"
    write_episode_bag(bag_episode, existing, storage=storage)
    before = sorted((p.name, p.stat().st_size) for p in existing.iterdir())
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="boom"):
        write_episode_bag(bag_episode, existing, storage=storage, typestore=ts, overwrite=True)
    assert sorted((p.name, p.stat().st_size) for p in existing.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_export_video_and_pngs(tmp_path):
    ep = _episode("push", "success", n=8, size=(160, 120))
    mp4 = export_video(ep, tmp_path / "v.mp4")
    assert mp4.stat().st_size > 0
    cap = cv2.VideoCapture(str(mp4))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n += 1
        assert img.shape[1] == 320
    cap.release()
    assert n == ep.n_frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]

    paths = export_pngs(ep, tmp_path / "png")
    assert len(paths) == 2 * ep.n_frames
    img = cv2.cvtColor(cv2.imread(str(tmp_path / "png" / "wrist_0005.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img, ep.frames[5]["wrist"])
    rows = list(csv.DictReader((tmp_path / "png" / "progress.csv").open()))
    assert len(rows) == ep.n_frames
    assert int(rows[2]["stamp_ns"]) == ep.stamps_ns()[2]
    assert float(rows[-1]["progress"]) == ep.progress[-1]
    assert (tmp_path / "png" / "goal.txt").read_text().strip() == ep.goal


def test_cli(tmp_path, capsys, typestore):
    out = tmp_path / "cli_bag"
    args = [str(out), "--task", "place", "--outcome", "hover", "--seed", "2", "--frames", "6", "--fps", "10",
            "--storage", "sqlite3", "--format", "jpeg", "--size", "160x120", "--mp4", str(tmp_path / "x.mp4"),
            "--png-dir", str(tmp_path / "png")]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "outcome=hover" in line and "frames=6" in line
    types, counts, total, msgs = _read_bag(out, typestore)
    assert counts["/camera/external/image_raw/compressed"] == 6
    stamps = [s for s, _ in sorted(msgs[DEFAULT_PROGRESS_TOPIC], key=lambda x: x[0])]
    assert stamps == [DEFAULT_START_NS + i * 100_000_000 for i in range(6)]
    assert (tmp_path / "x.mp4").exists() and (tmp_path / "png" / "external_0005.png").exists()
    assert main(args) == 1
    assert "exists" in capsys.readouterr().err
