"""Composite layout: positions, letterboxing, gaps and the training resolution, pixel-exact."""

from __future__ import annotations

import numpy as np
import pytest

from sole_r1_ros.core.composite import CompositeLayout, build_grid, compose, letterbox, smart_resize


def solid(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:] = rgb
    return img


def test_letterbox_landscape_is_centred_vertically_on_black() -> None:
    out = letterbox(solid(240, 320, (10, 200, 30)), 384)
    assert out.shape == (384, 384, 3)
    # 320x240 scales by 1.2 to 384x288, centred with 48 black rows above and below
    assert (out[:48] == 0).all() and (out[336:] == 0).all()
    assert (out[48:336] == (10, 200, 30)).all()


def test_letterbox_portrait_is_centred_horizontally() -> None:
    out = letterbox(solid(400, 100, (255, 0, 0)), 384)
    # scale 0.96 -> 96 wide, x offset (384 - 96) // 2 = 144
    assert (out[:, :144] == 0).all() and (out[:, 240:] == 0).all()
    assert (out[:, 144:240] == (255, 0, 0)).all()


def test_letterbox_rejects_non_rgb() -> None:
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10), dtype=np.uint8), 384)
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10, 3), dtype=np.float32), 384)


def test_two_view_three_column_grid_positions_and_gaps() -> None:
    colours = {
        ("external", 0): (200, 0, 0), ("external", 1): (0, 200, 0), ("external", 2): (0, 0, 200),
        ("wrist", 0): (100, 100, 0), ("wrist", 1): (0, 100, 100), ("wrist", 2): (100, 0, 100),
    }
    columns = [{role: solid(384, 384, colours[(role, c)]) for role in ("external", "wrist")} for c in range(3)]
    grid = build_grid(columns, ("external", "wrist"))
    assert grid.shape == (773, 1162, 3)
    for r, role in enumerate(("external", "wrist")):
        for c in range(3):
            y, x = r * 389, c * 389
            assert (grid[y : y + 384, x : x + 384] == colours[(role, c)]).all(), (role, c)
    for gap_x in (384, 773):
        assert (grid[:, gap_x : gap_x + 5] == 0).all()
    assert (grid[384:389] == 0).all()


def test_role_order_sets_rows() -> None:
    columns = [{"wrist": solid(10, 10, (1, 1, 1)), "external": solid(10, 10, (2, 2, 2))}]
    grid = build_grid(columns, ("wrist", "external"))
    assert (grid[:384] == 1).all() and (grid[389:] == 2).all()


def test_missing_role_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="wrist"):
        build_grid([{"external": solid(4, 4, (1, 1, 1))}], ("external", "wrist"))


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (773, 1162, (784, 1176)),  # two views: the checkpoint's training size
        (384, 1162, (392, 1176)),  # single view
        (773, 773, (784, 784)),  # two views, from zero
        (10, 10, (56, 56)),  # below min_pixels: scaled up
        (8000, 8000, (3584, 3584)),  # above max_pixels: scaled down
    ],
)
def test_smart_resize(h: int, w: int, expected: tuple[int, int]) -> None:
    nh, nw = smart_resize(h, w)
    assert (nh, nw) == expected
    assert nh % 28 == 0 and nw % 28 == 0 and 3136 <= nh * nw <= 12_845_056


def test_smart_resize_rejects_extreme_aspect() -> None:
    with pytest.raises(ValueError):
        smart_resize(1, 500)


@pytest.mark.parametrize(
    ("roles", "from_zero", "size"),
    [
        (("external", "wrist"), False, (1176, 784)),
        (("external",), False, (1176, 392)),
        (("external", "wrist"), True, (784, 784)),
    ],
)
def test_compose_outputs_training_resolution(roles: tuple[str, ...], from_zero: bool, size: tuple[int, int]) -> None:
    frame = {r: solid(240, 320, (50, 60, 70)) for r in roles}
    image = compose(frame, None if from_zero else frame, frame, roles)
    assert image.size == size
    assert image.mode == "RGB"


def test_custom_layout() -> None:
    layout = CompositeLayout(tile_size=64, gap=2, resize_factor=32, min_pixels=1024, max_pixels=1 << 20)
    frame = {"external": solid(48, 64, (9, 9, 9))}
    grid = build_grid([frame, frame], ("external",), layout)
    assert grid.shape == (64, 130, 3)
    assert compose(frame, frame, frame, ("external",), layout).size == (192, 64)
    with pytest.raises(ValueError):
        CompositeLayout(min_pixels=10, max_pixels=5)
