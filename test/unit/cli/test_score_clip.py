"""sole-r1-score: a video file or an image folder against a goal, with the real tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sole_r1_ros.cli import score_clip as score_cli
from sole_r1_ros.messages.video import MediaError, iter_frames, subsample


def frames(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        rgb = np.full((120, 160, 3), 40, dtype=np.uint8)
        rgb[40:80, 10 + 8 * i : 40 + 8 * i] = (230, 20, 20)
        out.append(rgb)
    return out


def write_video(path: Path, n: int = 12, fps: float = 6.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for rgb in frames(n):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_folder(path: Path, n: int = 6) -> Path:
    path.mkdir()
    for i, rgb in enumerate(frames(n)):
        cv2.imwrite(str(path / f"frame_{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_media_reading_and_subsampling(tmp_path: Path) -> None:
    video = list(iter_frames(write_video(tmp_path / "v.mp4", n=12, fps=6.0)))
    assert len(video) == 12 and video[1][0] == round(1e9 / 6) and video[0][1].shape == (120, 160, 3)
    folder = list(iter_frames(write_folder(tmp_path / "f"), fps=2.0))
    assert [t for t, _ in folder] == [i * 500_000_000 for i in range(6)]
    assert (folder[0][1][60, 20] == (230, 20, 20)).all()  # RGB order, PNG exact
    assert [t for t, _ in subsample(iter(folder), 1.0)] == [0, 1_000_000_000, 2_000_000_000]
    with pytest.raises(MediaError):
        list(iter_frames(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no images"):
        list(iter_frames(tmp_path / "empty"))


def test_an_image_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    """frame_2 comes before frame_10 (a plain sort would shuffle the episode)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10, 11, 3):
        cv2.imwrite(str(folder / f"frame_{i}.png"), np.full((8, 8, 3), i, dtype=np.uint8))
    levels = [int(rgb[0, 0, 0]) for _, rgb in iter_frames(folder, fps=1.0)]
    assert levels == [1, 2, 3, 10, 11]


def test_scores_a_video_and_writes_jsonl(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out.jsonl"
    code = score_cli.main([str(video), "--goal", "push the red block", "--rate", "2", "--model", str(tiny_model_dir),
                           "--greedy", "--max-new-tokens", "16", "--jsonl", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "goal: push the red block" in text and "scored 4 frames" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[0]["status"] == "first_frame"
    assert [r["stamp_ns"] for r in rows] == [0, 500_000_000, 1_000_000_000, 1_500_000_000]


def test_scene_and_wrist_folders(tiny_model_dir: Path, tmp_path: Path) -> None:
    scene, wrist = write_folder(tmp_path / "scene"), write_folder(tmp_path / "wrist")
    out = tmp_path / "o.jsonl"
    assert score_cli.main([str(scene), "--wrist", str(wrist), "--fps", "2", "--goal", "g", "--rate", "2",
                           "--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "8",
                           "--jsonl", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["roles"] == ["external", "wrist"]


@pytest.mark.parametrize(("args", "message"), [
    (["--goal", "   "], "goal is empty"),
    (["--goal", "g", "--model", "/nonexistent/model"], "does not exist"),
])
def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    video = write_video(tmp_path / "clip.mp4", n=2)
    assert score_cli.main([str(video), *args]) == 2
    assert message in capsys.readouterr().err


def test_writes_the_plot_and_an_annotated_video(tiny_model_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from sole_r1_ros.offline.video_report import VIDEO_SIZE

    video = write_video(tmp_path / "clip.mp4")
    plot, annotated = tmp_path / "report" / "plot.png", tmp_path / "report" / "annotated.mp4"
    assert score_cli.main([str(video), "--wrist", str(video), "--goal", "push the red block", "--rate", "2",
                           "--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "16",
                           "--plot", str(plot), "--video", str(annotated)]) == 0
    assert f"video: {annotated} (4 frames)" in capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capture = cv2.VideoCapture(str(annotated))
    read = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        read.append(bgr)
    capture.release()
    assert len(read) == 4 and all(f.shape == (VIDEO_SIZE[1], VIDEO_SIZE[0], 3) for f in read)
    assert sorted(p.name for p in annotated.parent.iterdir()) == ["annotated.mp4", "plot.png"]  # no temp files


def test_an_interrupted_run_leaves_no_video(tiny_model_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from sole_r1_ros.backends.transformers_backend import TransformersBackend

    real_generate = TransformersBackend.generate
    calls = {"n": 0}

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_generate(self, *a, **kw)

    monkeypatch.setattr(TransformersBackend, "generate", interrupted)
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        score_cli.main([str(video), "--goal", "g", "--rate", "2", "--model", str(tiny_model_dir), "--greedy",
                        "--max-new-tokens", "8", "--video", str(out / "v.mp4"), "--plot", str(out / "p.png")])
    assert list(out.iterdir()) == []


def test_default_sampling_is_seeded(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "clip.mp4")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        assert score_cli.main([str(video), "--goal", "push the red block", "--rate", "2", "--model",
                               str(tiny_model_dir), "--max-new-tokens", "16", "--jsonl", str(out)]) == 0
        runs.append([{k: v for k, v in json.loads(line).items() if k not in ("timings", "episode_id")}
                     for line in out.read_text().splitlines()])
    assert runs[0] == runs[1]
    text = capsys.readouterr().out
    assert "decoding: sampled (temperature 1, top-p 0.9, top-k 50" in text
    assert "seed 0 (one derived seed per step)" in text


def test_scene_and_wrist_pair_by_time_not_by_index() -> None:
    """A 30 fps scene with a 15 fps wrist video: each scene frame gets the wrist frame of its time."""
    from sole_r1_ros.cli.score_clip import pair_by_time

    scene = ((round(i * 1e9 / 30), np.full((2, 2, 3), i, np.uint8)) for i in range(60))  # 2 s
    wrist = ((round(j * 1e9 / 15), np.full((2, 2, 3), j, np.uint8)) for j in range(20))  # 1.33 s only
    pairs = list(pair_by_time(scene, wrist))
    wrist_times = [round(j * 1e9 / 15) for j in range(20)]
    for stamp, views in pairs:  # the nearest wrist frame in time (by index it would be frame i, twice as late)
        nearest = min(range(20), key=lambda j: abs(wrist_times[j] - stamp))
        assert int(views["wrist"][0, 0, 0]) == nearest and abs(wrist_times[nearest] - stamp) <= 50_000_000
    assert [int(v["wrist"][0, 0, 0]) for _, v in pairs[:4]] == [0, 0, 1, 1]
    assert pairs[-1][0] <= round(19 * 1e9 / 15) + 50_000_000  # scene frames past the wrist video are left out
