"""An annotated video of a scoring run: one frame per scored frame, showing the composite the
model saw (or the camera views at the episode's first frame), the progress curve so far and the
model's reasoning.

Written with OpenCV (``mp4v`` in an ``.mp4``; the codec follows the extension for ``.avi``:
``MJPG``) to a hidden temp file in the target folder and renamed when complete, so a crash or
Ctrl-C never leaves a half-written video under the requested name.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
from PIL import Image

from sole_r1_ros.errors import InputError

VIDEO_SIZE = (960, 720)  # width, height
_TITLE_H, _IMAGE_H, _STATUS_H, _CURVE_H = 36, 380, 34, 170
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BG, _FG, _DIM = (24, 24, 24), (235, 235, 235), (130, 130, 130)
_BLUE, _RED = (66, 135, 245), (230, 60, 60)  # RGB


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return " ".join(text.split()).encode("ascii", "replace").decode("ascii")


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` scaled to fit ``width`` x ``height`` (aspect kept), centred on the background."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), _BG, dtype=np.uint8)
    y, x = (height - size[1]) // 2, (width - size[0]) // 2
    canvas[y : y + size[1], x : x + size[0]] = resized
    return canvas


def views_image(views: Mapping[str, np.ndarray]) -> np.ndarray:
    """The camera views side by side (for a step without a composite: the episode's first frame)."""
    frames = [np.asarray(v) for v in views.values()]
    height = max(f.shape[0] for f in frames)
    scaled = [cv2.resize(f, (max(1, round(f.shape[1] * height / f.shape[0])), height)) for f in frames]
    return np.concatenate(scaled, axis=1)


class AnnotatedVideoWriter:
    """Collects annotated frames into ``path``; call :meth:`commit` when complete, or use it as a
    context manager (committed on a clean exit, discarded on an exception)."""

    def __init__(self, path: str | Path, *, fps: float, title: str = "", size: tuple[int, int] = VIDEO_SIZE) -> None:
        self.path = Path(path)
        self.size = size
        self.title = title
        self.frames = 0
        self._curve: list[tuple[float, float, bool]] = []  # (time s, progress, parse failed)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter.fourcc(*fourcc), max(0.1, fps), size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write video '{self.path}' (OpenCV found no {fourcc} writer for it)")

    def add(self, *, time_s: float, image: Image.Image | np.ndarray, progress: float | None, status: str,
            reasoning: str, step: int | None = None) -> None:
        """One scored frame: ``image`` is the composite (RGB), ``progress`` None when there is none."""
        if progress is not None:
            self._curve.append((time_s, progress, status == "parse_failed"))
        rgb = self.render(time_s=time_s, image=np.asarray(image.convert("RGB") if isinstance(image, Image.Image)
                                                          else image),
                          progress=progress, status=status, reasoning=reasoning, step=step)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def render(self, *, time_s: float, image: np.ndarray, progress: float | None, status: str, reasoning: str,
               step: int | None) -> np.ndarray:
        """The RGB frame for one step (the curve includes the points added so far)."""
        width, height = self.size
        canvas = np.full((height, width, 3), _BG, dtype=np.uint8)
        cv2.putText(canvas, _ascii(self.title)[:110], (10, 24), _FONT, 0.55, _FG, 1, cv2.LINE_AA)
        y = _TITLE_H
        canvas[y : y + _IMAGE_H] = _fit(image, width, _IMAGE_H)
        y += _IMAGE_H
        percent = "n/a" if progress is None else f"{round(progress * 100)} %"
        line = f"step {'-' if step is None else step}   t {time_s:.2f} s   progress {percent}   {status}"
        cv2.putText(canvas, line, (10, y + 24), _FONT, 0.65, _FG, 1, cv2.LINE_AA)
        y += _STATUS_H
        self._draw_curve(canvas, 50, y + 8, width - 70, _CURVE_H - 24, time_s)
        y += _CURVE_H
        lines = textwrap.wrap(_ascii(reasoning), width=110)[:4] or [""]
        for i, text in enumerate(lines):
            cv2.putText(canvas, text, (10, y + 18 + 22 * i), _FONT, 0.5, _FG if i < 3 else _DIM, 1, cv2.LINE_AA)
        return canvas

    def _draw_curve(self, canvas: np.ndarray, x0: int, y0: int, w: int, h: int, now_s: float) -> None:
        low = min([0.0] + [p for _, p, _ in self._curve])
        low = -1.0 if low < 0 else 0.0
        span_t = max(now_s, max((t for t, _, _ in self._curve), default=0.0), 1e-9)

        def xy(t: float, p: float) -> tuple[int, int]:
            return x0 + int(w * t / span_t), y0 + int(h * (1.0 - (p - low) / (1.0 - low)))

        cv2.rectangle(canvas, (x0, y0), (x0 + w, y0 + h), _DIM, 1)
        for level in (low, 0.5 if low == 0 else 0.0, 1.0):
            _, yy = xy(0.0, level)
            cv2.line(canvas, (x0, yy), (x0 + w, yy), (60, 60, 60), 1)
            cv2.putText(canvas, f"{level:.1f}", (x0 - 42, yy + 5), _FONT, 0.45, _DIM, 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{span_t:.1f} s", (x0 + w - 50, y0 + h + 16), _FONT, 0.45, _DIM, 1, cv2.LINE_AA)
        points = [xy(t, p) for t, p, _ in self._curve]
        if len(points) > 1:
            cv2.polylines(canvas, [np.array(points, dtype=np.int32)], False, _BLUE, 2, cv2.LINE_AA)
        for (_, _, failed), pt in zip(self._curve, points):
            cv2.circle(canvas, pt, 4, _RED if failed else _BLUE, -1, cv2.LINE_AA)

    def commit(self) -> Path:
        """Finish the file and give it its name."""
        self._writer.release()
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"no frames for video '{self.path}'")
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard the temp file."""
        self._writer.release()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


__all__ = ["VIDEO_SIZE", "AnnotatedVideoWriter", "views_image"]
