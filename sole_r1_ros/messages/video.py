"""Read timestamped RGB frames from a video file or a folder of images."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from sole_r1_ros.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class MediaError(InputError):
    """A video or image folder that cannot be read."""


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key reading runs of digits as numbers: ``frame_2`` before ``frame_10``."""
    parts = re.split(r"([0-9]+)", name)  # odd indexes: the digit runs
    return tuple((0, int(part)) if i % 2 else (1, part) for i, part in enumerate(parts))


def iter_frames(source: str | Path, *, fps: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(time_ns, rgb)`` from a video file or an image folder (in natural order of the file
    names, so ``frame_2.png`` comes before ``frame_10.png``).

    Image folders have no clock: ``fps`` (default 1.0) spaces them. For videos the container's
    frame rate is used unless ``fps`` overrides it.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise MediaError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder '{path}'")
        rate = fps or 1.0
        for index, file in enumerate(files):
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise MediaError(f"cannot decode image '{file}'")
            yield round(index * 1e9 / rate), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return
    if not path.is_file():
        raise MediaError(f"'{path}' is neither a video file nor a folder of images")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MediaError(f"cannot open video '{path}'")
    try:
        rate = fps or capture.get(cv2.CAP_PROP_FPS) or 0.0
        if rate <= 0:
            raise MediaError(f"video '{path}' has no frame rate; pass fps")
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield round(index * 1e9 / rate), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        if index == 0:
            raise MediaError(f"video '{path}' has no decodable frames")
    finally:
        capture.release()


def subsample(frames: Iterator[tuple[int, np.ndarray]], rate_hz: float | None) -> Iterator[tuple[int, np.ndarray]]:
    """Keep the first frame and then one frame per ``1/rate_hz`` seconds of media time."""
    if rate_hz is not None and rate_hz <= 0:
        raise ValueError("rate must be positive")
    period_ns = None if rate_hz is None else int(round(1e9 / rate_hz))
    next_ns: int | None = None
    for stamp_ns, frame in frames:
        if next_ns is None:
            next_ns = stamp_ns
        if period_ns is None or stamp_ns >= next_ns:
            yield stamp_ns, frame
            while period_ns is not None and next_ns <= stamp_ns:
                next_ns += period_ns
