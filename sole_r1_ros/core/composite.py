"""The single composite image the SOLE-R1 checkpoint sees at each step.

Rows are cameras (the first configured role on top), columns are timesteps: the episode's
first frame, the previous scored frame and the current frame ("from zero": first and current
only). Each view is letterboxed onto a black square; tiles are separated by black gaps. The
composite is then resized to multiples of the processor's patch factor exactly as the
checkpoint's training images were (qwen-vl-utils ``smart_resize``, PIL bicubic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CompositeLayout:
    """Geometry of the composite; defaults are the SOLE-R1-8B training layout."""

    tile_size: int = 384
    gap: int = 5
    resize_factor: int = 28
    min_pixels: int = 3136
    max_pixels: int = 12_845_056

    def __post_init__(self) -> None:
        if self.tile_size <= 0 or self.gap < 0 or self.resize_factor <= 0:
            raise ValueError(f"invalid composite layout: {self}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self}")


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping aspect ratio (area interpolation) and centre on a black ``size`` square."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("cannot letterbox an empty image")
    scale = size / max(h, w)
    new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    y0, x0 = (size - new_h) // 2, (size - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas


def _round_by(n: float, f: int) -> int:
    return round(n / f) * f


def _floor_by(n: float, f: int) -> int:
    return math.floor(n / f) * f


def _ceil_by(n: float, f: int) -> int:
    return math.ceil(n / f) * f


def smart_resize(
    height: int, width: int, *, factor: int = 28, min_pixels: int = 3136, max_pixels: int = 12_845_056
) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, pixel count within bounds, aspect kept.

    Same arithmetic as qwen-vl-utils, which produced the checkpoint's training images.
    """
    if min(height, width) <= 0:
        raise ValueError(f"invalid image size {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds 200")
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, _floor_by(height / beta, factor))
        w_bar = max(factor, _floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    return h_bar, w_bar


def letterbox_views(views: Mapping[str, np.ndarray], roles: Sequence[str], size: int) -> dict[str, np.ndarray]:
    """Letterboxed tiles of one timestep, keyed by role (cache them: a frame is shown up to 3 times)."""
    missing = [r for r in roles if r not in views]
    if missing:
        raise KeyError(f"no view for camera role(s) {missing}")
    return {role: letterbox(views[role], size) for role in roles}


def grid_from_tiles(
    columns: Sequence[Mapping[str, np.ndarray]],
    roles: Sequence[str],
    layout: CompositeLayout = CompositeLayout(),
) -> np.ndarray:
    """Stack already letterboxed tiles: one row per role (in order), one column per timestep."""
    if not columns or not roles:
        raise ValueError("a composite needs at least one timestep and one camera role")
    size, gap = layout.tile_size, layout.gap
    rows = []
    for role in roles:
        tiles: list[np.ndarray] = []
        for col_index, col in enumerate(columns):
            if role not in col:
                raise KeyError(f"timestep {col_index} has no view for camera role '{role}'")
            if col[role].shape != (size, size, 3):
                raise ValueError(f"tile for '{role}' is {col[role].shape}, expected {(size, size, 3)}")
            if tiles and gap:
                tiles.append(np.zeros((size, gap, 3), dtype=np.uint8))
            tiles.append(col[role])
        rows.append(np.hstack(tiles))
    stacked: list[np.ndarray] = []
    for row in rows:
        if stacked and gap:
            stacked.append(np.zeros((gap, row.shape[1], 3), dtype=np.uint8))
        stacked.append(row)
    return np.vstack(stacked)


def build_grid(
    columns: Sequence[Mapping[str, np.ndarray]],
    roles: Sequence[str],
    layout: CompositeLayout = CompositeLayout(),
) -> np.ndarray:
    """Letterbox and stack: one row per role (in order), one column per timestep.

    ``columns`` is a list of timesteps, each a mapping role → RGB image.
    """
    if not columns or not roles:
        raise ValueError("a composite needs at least one timestep and one camera role")
    tiles = []
    for col_index, views in enumerate(columns):
        try:
            tiles.append(letterbox_views(views, roles, layout.tile_size))
        except KeyError as err:
            raise KeyError(f"timestep {col_index}: {err.args[0]}") from err
    return grid_from_tiles(tiles, roles, layout)


def to_model_image(grid: np.ndarray, layout: CompositeLayout = CompositeLayout()) -> Image.Image:
    """Resize the grid to the training resolution (PIL's default bicubic, as in training)."""
    height, width = grid.shape[:2]
    new_h, new_w = smart_resize(
        height,
        width,
        factor=layout.resize_factor,
        min_pixels=layout.min_pixels,
        max_pixels=layout.max_pixels,
    )
    image = Image.fromarray(grid)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    return image


def compose(
    first: Mapping[str, np.ndarray],
    previous: Mapping[str, np.ndarray] | None,
    current: Mapping[str, np.ndarray],
    roles: Sequence[str],
    layout: CompositeLayout = CompositeLayout(),
) -> Image.Image:
    """The model's input image; ``previous=None`` gives the "from zero" two-column variant."""
    columns = [first, current] if previous is None else [first, previous, current]
    return to_model_image(build_grid(columns, roles, layout), layout)
