"""Write synthetic episodes as rosbag2 bags (pure Python, ``rosbags``), MP4 videos or PNGs.

Bag layout (all timestamps in ns; frame ``i`` is stamped ``start_ns + round(i * 1e9 / fps)``,
see :func:`~sole_r1_tools.synth.episodes.frame_stamp_ns`):

* one ``sensor_msgs/msg/Image`` (``image_format="raw"``) or ``sensor_msgs/msg/CompressedImage``
  per camera role and frame; header stamp == bag log time == the frame stamp;
* ``std_msgs/msg/String`` goal at the first frame's stamp (and again whenever
  ``episode.meta["goal_per_frame"]`` changes, if present), offered as transient-local;
* ``std_msgs/msg/Float32`` ground-truth progress per frame at the frame stamp.

Episode info is also stored in the bag's ``custom_data`` under ``sole_r1.*`` keys.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from .episodes import DEFAULT_START_NS, Episode, frame_stamp_ns

DEFAULT_TOPICS: dict[str, str] = {
    "external": "/camera/external/image_raw",
    "wrist": "/camera/wrist/image_raw",
}
DEFAULT_FRAME_IDS: dict[str, str] = {
    "external": "external_camera_optical_frame",
    "wrist": "wrist_camera_optical_frame",
}
DEFAULT_GOAL_TOPIC = "/goal"
DEFAULT_PROGRESS_TOPIC = "/ground_truth/progress"
DEFAULT_STORE = Stores.ROS2_HUMBLE
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
IMAGE_FORMATS: tuple[str, ...] = ("raw", "jpeg", "png")
ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "mono8")

IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
STRING_MSGTYPE = "std_msgs/msg/String"
FLOAT32_MSGTYPE = "std_msgs/msg/Float32"


def compressed_topics(topics: Mapping[str, str]) -> dict[str, str]:
    """Image transport naming: ``/x/image_raw`` -> ``/x/image_raw/compressed``."""
    return {role: t if t.endswith("/compressed") else t.rstrip("/") + "/compressed" for role, t in topics.items()}


@functools.cache
def _typestore_for(store: Stores) -> Any:
    return get_typestore(store)


def resolve_typestore(typestore: Any = None) -> Any:
    """Return a rosbags typestore from None (Humble), a ``Stores`` member/name or a typestore."""
    if typestore is None:
        return _typestore_for(DEFAULT_STORE)
    if isinstance(typestore, Stores):
        return _typestore_for(typestore)
    if isinstance(typestore, str):
        return _typestore_for(Stores(typestore.lower()))
    return typestore


def _latched_qos() -> list[Any]:
    try:
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    except ImportError:
        return []
    inf = QosTime(0x7FFFFFFF, 0xFFFFFFFF)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, inf, inf,
                QosLiveliness.AUTOMATIC, inf, False)]


def _convert(frame: np.ndarray, encoding: str) -> np.ndarray:
    """RGB uint8 HxWx3 -> array laid out for ``encoding``."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"frame must be an RGB uint8 HxWx3 array, got shape={shape} dtype={dtype}")
    if encoding == "rgb8":
        return np.ascontiguousarray(frame)
    if encoding == "bgr8":
        return np.ascontiguousarray(frame[..., ::-1])
    if encoding == "mono8":
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def _header(ts: Any, stamp_ns: int, frame_id: str) -> Any:
    time_t = ts.types["builtin_interfaces/msg/Time"]
    header_t = ts.types["std_msgs/msg/Header"]
    return header_t(stamp=time_t(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                    frame_id=frame_id)


def image_message(ts: Any, frame: np.ndarray, stamp_ns: int, frame_id: str, *, encoding: str = "rgb8",
                  image_format: str = "raw", jpeg_quality: int = 90) -> Any:
    """Build an ``Image`` (raw) or ``CompressedImage`` (jpeg/png) message from an RGB frame."""
    arr = _convert(frame, encoding)
    header = _header(ts, stamp_ns, frame_id)
    if image_format == "raw":
        height, width = arr.shape[:2]
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        return ts.types[IMAGE_MSGTYPE](header=header, height=height, width=width, encoding=encoding,
                                       is_bigendian=0, step=width * channels, data=arr.reshape(-1))
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    mono = encoding == "mono8"
    src = arr if mono else (arr if encoding == "bgr8" else arr[..., ::-1])
    if image_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, buf = cv2.imencode(".png", src, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"cv2.imencode failed for {image_format}")
    fmt = f"{encoding}; {image_format} compressed {'mono8' if mono else 'bgr8'}"
    return ts.types[COMPRESSED_MSGTYPE](header=header, format=fmt, data=buf.reshape(-1))


def write_episode_bag(
    episode: Episode,
    out_path: str | os.PathLike[str],
    *,
    storage: str = "mcap",
    image_format: str = "raw",
    encoding: str = "rgb8",
    topics: Mapping[str, str] | None = None,
    goal_topic: str = DEFAULT_GOAL_TOPIC,
    progress_topic: str | None = DEFAULT_PROGRESS_TOPIC,
    start_ns: int = DEFAULT_START_NS,
    frame_ids: Mapping[str, str] | None = None,
    jpeg_quality: int = 90,
    typestore: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write ``episode`` as a rosbag2 directory at ``out_path`` and return that path.

    ``topics`` maps camera role -> topic and defaults to ``DEFAULT_TOPICS`` (with
    ``/compressed`` appended for jpeg/png); roles missing from ``topics`` are not written.
    The bag is written into a temporary directory beside ``out_path`` and renamed into
    place on success; on any error nothing is left at ``out_path`` (an existing bag there
    is kept). Raises ``FileExistsError`` if ``out_path`` exists and not ``overwrite``.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if not episode.frames:
        raise ValueError("episode has no frames")
    if topics is None:
        topics = DEFAULT_TOPICS if image_format == "raw" else compressed_topics(DEFAULT_TOPICS)
    frame_ids = {**DEFAULT_FRAME_IDS, **(frame_ids or {})}
    ts = resolve_typestore(typestore)
    out = Path(out_path)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out} exists already")
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        bag_dir = tmp_root / out.name
        _write(episode, bag_dir, ts, storage=storage, image_format=image_format, encoding=encoding,
               topics=dict(topics), goal_topic=goal_topic, progress_topic=progress_topic, start_ns=int(start_ns),
               frame_ids=frame_ids, jpeg_quality=jpeg_quality)
        if out.exists() or out.is_symlink():
            old = tmp_root / f"{out.name}.old"
            os.replace(out, old)
            try:
                os.replace(bag_dir, out)
            except BaseException:
                os.replace(old, out)
                raise
        else:
            os.replace(bag_dir, out)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return out


def _write(episode: Episode, bag_dir: Path, ts: Any, *, storage: str, image_format: str, encoding: str,
           topics: dict[str, str], goal_topic: str, progress_topic: str | None, start_ns: int,
           frame_ids: Mapping[str, str], jpeg_quality: int) -> None:
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    img_type = IMAGE_MSGTYPE if image_format == "raw" else COMPRESSED_MSGTYPE
    goals: Sequence[str] = episode.meta.get("goal_per_frame") or [episode.goal] * len(episode.frames)
    if len(goals) != len(episode.frames):
        raise ValueError("meta['goal_per_frame'] must have one goal per frame")
    progress = np.asarray(episode.progress, dtype=np.float64)
    if progress_topic and progress.shape != (len(episode.frames),):
        raise ValueError(f"progress has shape {progress.shape}, expected ({len(episode.frames)},)")

    writer = Writer(bag_dir, version=getattr(Writer, "VERSION_LATEST", 8), storage_plugin=plugin)
    for key, value in _custom_data(episode, start_ns, image_format, encoding).items():
        writer.set_custom_data(key, value)
    with writer:
        conns = {role: writer.add_connection(topic, img_type, typestore=ts) for role, topic in topics.items()}
        goal_conn = (writer.add_connection(goal_topic, STRING_MSGTYPE, typestore=ts,
                                           offered_qos_profiles=_latched_qos()) if goal_topic else None)
        prog_conn = writer.add_connection(progress_topic, FLOAT32_MSGTYPE, typestore=ts) if progress_topic else None
        string_t, float_t = ts.types[STRING_MSGTYPE], ts.types[FLOAT32_MSGTYPE]
        for i, frame in enumerate(episode.frames):
            stamp = frame_stamp_ns(i, episode.fps, start_ns)
            if goal_conn is not None and (i == 0 or goals[i] != goals[i - 1]):
                writer.write(goal_conn, stamp, ts.serialize_cdr(string_t(data=str(goals[i])), STRING_MSGTYPE))
            for role, conn in conns.items():
                if role not in frame:
                    raise KeyError(f"frame {i} has no {role!r} image (has {sorted(frame)})")
                msg = image_message(ts, frame[role], stamp, frame_ids.get(role, f"{role}_camera_optical_frame"),
                                    encoding=encoding, image_format=image_format, jpeg_quality=jpeg_quality)
                writer.write(conn, stamp, ts.serialize_cdr(msg, img_type))
            if prog_conn is not None:
                writer.write(prog_conn, stamp, ts.serialize_cdr(float_t(data=float(progress[i])), FLOAT32_MSGTYPE))


def _custom_data(episode: Episode, start_ns: int, image_format: str, encoding: str) -> dict[str, str]:
    meta = episode.meta
    data = {
        "sole_r1.goal": episode.goal,
        "sole_r1.outcome": episode.outcome,
        "sole_r1.fps": repr(float(episode.fps)),
        "sole_r1.n_frames": str(len(episode.frames)),
        "sole_r1.start_ns": str(start_ns),
        "sole_r1.image_format": image_format,
        "sole_r1.encoding": encoding,
    }
    for key in ("task_kind", "seed", "variant"):
        if key in meta:
            data[f"sole_r1.{key}"] = str(meta[key])
    return data


def _side_by_side(frame: Mapping[str, np.ndarray], roles: Sequence[str]) -> np.ndarray:
    imgs = [frame[r] for r in roles]
    h = imgs[0].shape[0]
    imgs = [im if im.shape[0] == h else cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h)) for im in imgs]
    return np.hstack(imgs)


def _annotate(canvas: np.ndarray, goal: str, progress: float, index: int) -> np.ndarray:
    h, w = canvas.shape[:2]
    bar_h = max(18, h // 10)
    out = np.zeros((h + bar_h, w, 3), np.uint8)
    out[:h] = canvas
    scale = bar_h / 40.0
    cv2.rectangle(out, (0, h), (int(round(w * float(np.clip(progress, 0, 1)))), h + bar_h - 1), (40, 150, 60), -1)
    text = f"{index:04d} {progress * 100:5.1f}%  {goal}"
    cv2.putText(out, text, (4, h + int(bar_h * 0.7)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def export_video(episode: Episode, path: str | os.PathLike[str], *, fps: float | None = None,
                 roles: Sequence[str] | None = None, annotate: bool = True) -> Path:
    """Write an MP4 (``mp4v``) with the camera views side by side; optional goal/progress strip."""
    out = Path(path)
    roles = list(roles or episode.roles)
    if not episode.frames:
        raise ValueError("episode has no frames")
    first = _side_by_side(episode.frames[0], roles)
    if annotate:
        first = _annotate(first, episode.goal, float(episode.progress[0]), 0)
    h, w = first.shape[:2]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix or '.mp4'}")
    vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps or episode.fps), (w, h))
    if not vw.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {tmp}")
    try:
        for i, frame in enumerate(episode.frames):
            canvas = _side_by_side(frame, roles)
            if annotate:
                canvas = _annotate(canvas, episode.goal, float(episode.progress[i]), i)
            vw.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        vw.release()
        os.replace(tmp, out)
    except BaseException:
        vw.release()
        tmp.unlink(missing_ok=True)
        raise
    return out


def export_pngs(episode: Episode, out_dir: str | os.PathLike[str], *, roles: Sequence[str] | None = None,
                start_ns: int = DEFAULT_START_NS) -> list[Path]:
    """Write ``{role}_{i:04d}.png`` per frame plus ``progress.csv`` and ``goal.txt``; return the PNG paths."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    roles = list(roles or episode.roles)
    paths = []
    for i, frame in enumerate(episode.frames):
        for role in roles:
            p = d / f"{role}_{i:04d}.png"
            if not cv2.imwrite(str(p), cv2.cvtColor(frame[role], cv2.COLOR_RGB2BGR)):
                raise RuntimeError(f"cv2.imwrite failed for {p}")
            paths.append(p)
    with (d / "progress.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "stamp_ns", "progress"])
        for i, stamp in enumerate(episode.stamps_ns(start_ns)):
            w.writerow([i, stamp, repr(float(episode.progress[i]))])
    (d / "goal.txt").write_text(episode.goal + "\n")
    return paths
