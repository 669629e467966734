"""Tests for sole_r1_ros.messages.image_codec on real sensor_msgs messages."""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from sole_r1_ros.messages import image_codec
from sole_r1_ros.messages.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_any,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
    stamp_to_ns,
)


def make_image(encoding: str, width: int, height: int, step: int, data: bytes, is_bigendian: int = 0) -> Image:
    msg = Image()
    msg.encoding = encoding
    msg.width = width
    msg.height = height
    msg.step = step
    msg.is_bigendian = is_bigendian
    msg.data = bytes(data)
    return msg


def make_compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage()
    msg.format = fmt
    msg.data = bytes(data)
    return msg


def padded(rows: list[bytes], pad: int, fill: int = 0xEE) -> bytes:
    return b"".join(row + bytes([fill]) * pad for row in rows)


def assert_rgb(img: np.ndarray, height: int, width: int) -> None:
    assert isinstance(img, np.ndarray)
    assert img.dtype == np.uint8
    assert img.shape == (height, width, 3)
    assert img.flags.c_contiguous


def reason_of(excinfo: pytest.ExceptionInfo[ImageDecodeError]) -> str:
    return excinfo.value.reason


# --------------------------------------------------------------------------- raw encodings


@pytest.mark.parametrize(
    ("encoding", "pixel", "expected"),
    [
        ("rgb8", b"\x01\x02\x03", (1, 2, 3)),
        ("bgr8", b"\x01\x02\x03", (3, 2, 1)),
        ("8UC3", b"\x01\x02\x03", (3, 2, 1)),
        ("rgba8", b"\x01\x02\x03\x04", (1, 2, 3)),
        ("bgra8", b"\x01\x02\x03\x04", (3, 2, 1)),
        ("mono8", b"\x07", (7, 7, 7)),
        ("8UC1", b"\xc8", (200, 200, 200)),
    ],
)
def test_8bit_encodings_exact(encoding: str, pixel: bytes, expected: tuple[int, int, int]) -> None:
    width, height = 3, 2
    msg = make_image(encoding, width, height, width * len(pixel), pixel * (width * height))
    img = decode_image(msg)
    assert_rgb(img, height, width)
    assert (img == np.array(expected, np.uint8)).all()


def test_bgr8_distinct_pixels() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = rgb[..., ::-1].tobytes()
    img = decode_image(make_image("bgr8", 3, 2, 9, data))
    np.testing.assert_array_equal(img, rgb)


@pytest.mark.parametrize(
    ("encoding", "bpp", "pixel_le", "pixel_be", "expected"),
    [
        ("mono16", 2, struct.pack("<H", 0x1234), struct.pack(">H", 0x1234), (0x12, 0x12, 0x12)),
        ("rgb16", 6, struct.pack("<3H", 0x0100, 0x0200, 0xFF00), struct.pack(">3H", 0x0100, 0x0200, 0xFF00),
         (1, 2, 255)),
        ("bgr16", 6, struct.pack("<3H", 0x0100, 0x0200, 0xFF00), struct.pack(">3H", 0x0100, 0x0200, 0xFF00),
         (255, 2, 1)),
    ],
)
def test_16bit_colour_keeps_high_byte_both_endians(
    encoding: str, bpp: int, pixel_le: bytes, pixel_be: bytes, expected: tuple[int, int, int]
) -> None:
    for data, big in ((pixel_le, 0), (pixel_be, 1)):
        img = decode_image(make_image(encoding, 2, 2, 2 * bpp, data * 4, is_bigendian=big))
        assert_rgb(img, 2, 2)
        assert (img == np.array(expected, np.uint8)).all(), (encoding, big)


@pytest.mark.parametrize("big", [0, 1])
def test_16uc1_depth_min_max_normalised(big: int) -> None:
    values = np.array([[0, 4], [400, 1020]], dtype=np.uint16)
    data = values.astype(">u2" if big else "<u2").tobytes()
    img = decode_image(make_image("16UC1", 2, 2, 4, data, is_bigendian=big))
    assert_rgb(img, 2, 2)
    np.testing.assert_array_equal(img[..., 0], [[0, 1], [100, 255]])
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_constant_depth_is_zeros(encoding: str) -> None:
    dtype = "<u2" if encoding == "16UC1" else "<f4"
    data = np.full((3, 4), 7, dtype=dtype).tobytes()
    img = decode_image(make_image(encoding, 4, 3, 4 * np.dtype(dtype).itemsize, data))
    assert_rgb(img, 3, 4)
    assert not img.any()


@pytest.mark.parametrize("big", [0, 1])
def test_32fc1_nan_inf_to_zero_and_normalised(big: int) -> None:
    values = np.array([[-1.0, 0.0, np.nan], [100.0, np.inf, 254.0], [-np.inf, 253.0, np.nan]], dtype=np.float32)
    data = values.astype(">f4" if big else "<f4").tobytes()
    img = decode_image(make_image("32FC1", 3, 3, 12, data, is_bigendian=big))
    assert_rgb(img, 3, 3)
    np.testing.assert_array_equal(img[..., 0], [[0, 1, 0], [101, 0, 255], [0, 254, 0]])


def test_32fc1_all_nan_is_zeros() -> None:
    data = np.full((2, 2), np.nan, dtype="<f4").tobytes()
    img = decode_image(make_image("32FC1", 2, 2, 8, data))
    assert_rgb(img, 2, 2)
    assert not img.any()


def test_bayer_rggb_red_scene_is_red() -> None:
    mosaic = np.zeros((6, 6), np.uint8)
    mosaic[0::2, 0::2] = 200
    img = decode_image(make_image("bayer_rggb8", 6, 6, 6, mosaic.tobytes()))
    assert_rgb(img, 6, 6)
    r, g, b = (int(v) for v in img[2, 2])
    assert r == 200 and g == 0 and b == 0


def test_bayer16_uses_high_byte() -> None:
    mosaic = np.zeros((4, 4), "<u2")
    mosaic[1::2, 1::2] = 0xC800
    img = decode_image(make_image("bayer_rggb16", 4, 4, 8, mosaic.tobytes()))
    assert tuple(int(v) for v in img[1, 1]) == (0, 0, 200)


@pytest.mark.parametrize(("encoding", "pair"), [("yuv422", [128, 50, 128, 200]), ("yuv422_yuy2", [50, 128, 200, 128])])
def test_yuv422_neutral_chroma_is_gray(encoding: str, pair: list[int]) -> None:
    img = decode_image(make_image(encoding, 4, 2, 8, bytes(pair) * 4))
    assert_rgb(img, 2, 4)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    expected = [round((50 - 16) * 255 / 219), round((200 - 16) * 255 / 219)] * 2  # BT.601 video range
    assert (np.abs(img[..., 0].astype(int) - expected) <= 1).all()


def test_yuv422_odd_width_rejected() -> None:
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(make_image("yuv422", 3, 1, 6, bytes(6)))
    assert reason_of(exc) == "bad_dimensions"


# --------------------------------------------------------------------------- step / padding


@pytest.mark.parametrize(
    ("encoding", "pixel", "expected"),
    [
        ("rgb8", b"\x0a\x14\x1e", (10, 20, 30)),
        ("bgr8", b"\x0a\x14\x1e", (30, 20, 10)),
        ("rgba8", b"\x0a\x14\x1e\x28", (10, 20, 30)),
        ("bgra8", b"\x0a\x14\x1e\x28", (30, 20, 10)),
        ("mono8", b"\x0a", (10, 10, 10)),
        ("mono16", struct.pack("<H", 0x0A00), (10, 10, 10)),
        ("32FC1", struct.pack("<f", 1.0), (0, 0, 0)),
    ],
)
@pytest.mark.parametrize("pad", [1, 3, 17])
def test_padded_rows_do_not_leak(encoding: str, pixel: bytes, expected: tuple[int, int, int], pad: int) -> None:
    width, height = 5, 4
    rows = [pixel * width for _ in range(height)]
    msg = make_image(encoding, width, height, width * len(pixel) + pad, padded(rows, pad))
    img = decode_image(msg)
    assert_rgb(img, height, width)
    assert (img == np.array(expected, np.uint8)).all()
    assert not (img == 0xEE).any()


def test_padded_16bit_big_endian_odd_step() -> None:
    width, height, pad = 3, 2, 1
    rows = [struct.pack(">3H", 0x0100, 0x7F00, 0xFE00) for _ in range(height)]
    img = decode_image(make_image("mono16", width, height, width * 2 + pad, padded(rows, pad), is_bigendian=1))
    np.testing.assert_array_equal(img[..., 0], [[1, 127, 254], [1, 127, 254]])


def test_padded_depth_padding_excluded_from_normalisation() -> None:
    rows = [struct.pack("<2H", 0, 1020), struct.pack("<2H", 4, 400)]
    msg = make_image("16UC1", 2, 2, 6, padded(rows, 2, fill=0xFF))
    img = decode_image(msg)
    np.testing.assert_array_equal(img[..., 0], [[0, 255], [1, 100]])


def test_trailing_extra_data_is_ignored() -> None:
    msg = make_image("mono8", 2, 1, 2, b"\x05\x06" + b"\xff" * 10)
    np.testing.assert_array_equal(decode_image(msg)[..., 0], [[5, 6]])


def test_result_is_a_copy_not_a_view() -> None:
    msg = make_image("rgb8", 2, 2, 6, bytes(range(12)))
    img = decode_image(msg)
    img[:] = 99
    assert bytes(msg.data) == bytes(range(12))

    backing = np.arange(12, dtype=np.uint8)
    duck = SimpleNamespace(encoding="rgb8", width=2, height=2, step=6, is_bigendian=0, data=backing)
    out = decode_image(duck)
    assert not np.shares_memory(out, backing)
    assert out.flags.owndata or out.base is None or not np.may_share_memory(out, backing)


@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview, list])
def test_duck_typed_data_containers(data_type: type) -> None:
    raw = bytes([1, 2, 3, 4, 5, 6])
    data = list(raw) if data_type is list else data_type(raw)
    duck = SimpleNamespace(encoding="bgr8", width=2, height=1, step=6, is_bigendian=0, data=data)
    np.testing.assert_array_equal(decode_image(duck), [[[3, 2, 1], [6, 5, 4]]])


# --------------------------------------------------------------------------- raw errors


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (dict(encoding="bogus", width=2, height=2, step=6, data=bytes(12)), "unknown_encoding"),
        (dict(encoding="", width=2, height=2, step=6, data=bytes(12)), "unknown_encoding"),
        (dict(encoding="RGB8", width=2, height=2, step=6, data=bytes(12)), "unknown_encoding"),
        (dict(encoding="rgb8", width=0, height=2, step=6, data=bytes(12)), "empty"),
        (dict(encoding="rgb8", width=2, height=0, step=6, data=bytes(12)), "empty"),
        (dict(encoding="rgb8", width=2, height=2, step=5, data=bytes(12)), "bad_step"),
        (dict(encoding="mono16", width=3, height=1, step=5, data=bytes(6)), "bad_step"),
        (dict(encoding="rgb8", width=2, height=2, step=6, data=bytes(11)), "size_mismatch"),
        (dict(encoding="rgb8", width=2, height=2, step=8, data=bytes(12)), "size_mismatch"),
        (dict(encoding="rgb8", width=2, height=2, step=6, data=b""), "size_mismatch"),
    ],
)
def test_raw_error_reasons(fields: dict, reason: str) -> None:
    msg = make_image(fields["encoding"], fields["width"], fields["height"], fields["step"], fields["data"])
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(msg)
    assert reason_of(exc) == reason
    assert isinstance(exc.value, ValueError)
    assert exc.value.message


def test_too_large_checked_before_data() -> None:
    msg = make_image("rgb8", 100_000, 100_000, 300_000, b"")
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(msg)
    assert reason_of(exc) == "too_large"


def test_max_pixels_is_configurable() -> None:
    msg = make_image("mono8", 4, 4, 4, bytes(16))
    assert decode_image(msg, max_pixels=16).shape == (4, 4, 3)
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(msg, max_pixels=15)
    assert reason_of(exc) == "too_large"


def test_duck_typed_bad_fields() -> None:
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(SimpleNamespace(encoding="rgb8", width=1, height=1, step=3, is_bigendian=0))
    assert reason_of(exc) == "bad_message"
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(SimpleNamespace(encoding="rgb8", width=-1, height=1, step=3, is_bigendian=0, data=b"abc"))
    assert reason_of(exc) == "bad_message"
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(SimpleNamespace(encoding="rgb8", width=1.0, height=1, step=3, is_bigendian=0, data=b"abc"))
    assert reason_of(exc) == "bad_message"
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(SimpleNamespace(encoding=None, width=1, height=1, step=3, is_bigendian=0, data=b"abc"))
    assert reason_of(exc) == "unknown_encoding"


# --------------------------------------------------------------------------- encode_image round trip


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "8UC4"])
@pytest.mark.parametrize("row_padding", [0, 3])
def test_encode_image_colour_round_trip(encoding: str, row_padding: int) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = Image(**encode_image(rgb, encoding, row_padding=row_padding))
    assert msg.step == 7 * (4 if "a" in encoding or encoding == "8UC4" else 3) + row_padding
    np.testing.assert_array_equal(decode_image(msg), rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "mono16"])
@pytest.mark.parametrize("big", [False, True])
def test_encode_image_gray_round_trip(encoding: str, big: bool) -> None:
    gray = np.random.default_rng(2).integers(0, 256, (4, 6), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    msg = Image(**encode_image(rgb, encoding, is_bigendian=big, row_padding=1))
    np.testing.assert_array_equal(decode_image(msg), rgb)


@pytest.mark.parametrize("big", [False, True])
def test_encode_image_depth_from_2d(big: bool) -> None:
    depth = np.array([[1.0, 2.0], [np.nan, 5.0]], np.float32)
    msg = Image(**encode_image(depth, "32FC1", is_bigendian=big))
    assert msg.step == 8 and msg.is_bigendian == int(big)
    np.testing.assert_array_equal(decode_image(msg)[..., 0], [[0, 64], [0, 255]])
    raw = np.array([[0, 1020]], np.uint16)
    np.testing.assert_array_equal(decode_image(Image(**encode_image(raw, "16UC1")))[..., 0], [[0, 255]])


def test_encode_image_rejects_unknown() -> None:
    with pytest.raises(ValueError):
        encode_image(np.zeros((2, 2, 3), np.uint8), "yuv422")


# --------------------------------------------------------------------------- compressed


def smooth_image(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 128)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("fmt_override", [None, "png", "bgr8; png compressed bgr8", "", "unknown words"])
def test_png_round_trip_exact(fmt_override: str | None) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    fmt, data = encode_compressed(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    img = decode_compressed(make_compressed(fmt if fmt_override is None else fmt_override, data))
    assert_rgb(img, 9, 13)
    np.testing.assert_array_equal(img, rgb)


def test_png_gray_and_rgba() -> None:
    gray = np.random.default_rng(4).integers(0, 256, (5, 6), dtype=np.uint8)
    fmt, data = encode_compressed(gray, "png")
    assert fmt.startswith("mono8;")
    np.testing.assert_array_equal(decode_compressed(make_compressed(fmt, data)), np.repeat(gray[..., None], 3, 2))
    bgra = np.dstack([np.full((3, 3), 10, np.uint8), np.full((3, 3), 20, np.uint8), np.full((3, 3), 30, np.uint8),
                      np.full((3, 3), 40, np.uint8)])
    ok, buf = cv2.imencode(".png", bgra)
    assert ok
    img = decode_compressed(make_compressed("png", buf.tobytes()))
    assert (img == np.array([30, 20, 10], np.uint8)).all()


def test_png_16bit_non_depth_keeps_high_byte() -> None:
    ok, buf = cv2.imencode(".png", np.full((2, 3), 0x4200, np.uint16))
    assert ok
    img = decode_compressed(make_compressed("png", buf.tobytes()))
    assert (img == 0x42).all()


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"])
def test_jpeg_round_trip_within_tolerance(fmt: str) -> None:
    rgb = smooth_image()
    _, data = encode_compressed(rgb, "jpeg", quality=95)
    img = decode_compressed(make_compressed(fmt, data))
    assert_rgb(img, *rgb.shape[:2])
    diff = np.abs(img.astype(int) - rgb.astype(int))
    assert diff.mean() < 2.0
    assert diff.max() <= 16
    assert img[0, -1, 0] > 200 and img[0, -1, 1] < 50  # red at top-right, i.e. channels not swapped


def test_compressed_depth_16uc1_with_header() -> None:
    depth = np.array([[0, 4], [400, 1020]], np.uint16)
    ok, buf = cv2.imencode(".png", depth)
    assert ok
    header = struct.pack("<iff", 0, 0.0, 0.0)
    img = decode_compressed(make_compressed("16UC1; compressedDepth png", header + buf.tobytes()))
    assert_rgb(img, 2, 2)
    np.testing.assert_array_equal(img[..., 0], [[0, 1], [100, 255]])
    img_no_header = decode_compressed(make_compressed("16UC1; compressedDepth", buf.tobytes()))
    np.testing.assert_array_equal(img_no_header, img)


def test_compressed_depth_32fc1_dequantised() -> None:
    quant_a, quant_b = 100.0, -9.0
    quantised = np.array([[91, 41], [11, 0]], np.uint16)  # depth 1 m, 2 m, 5 m, invalid
    ok, buf = cv2.imencode(".png", quantised)
    assert ok
    header = struct.pack("<iff", 0, quant_a, quant_b)
    img = decode_compressed(make_compressed("32FC1; compressedDepth png", header + buf.tobytes()))
    np.testing.assert_array_equal(img[..., 0], [[0, 64], [255, 0]])


@pytest.mark.parametrize(
    ("fmt", "data", "reason"),
    [
        ("16UC1; compressedDepth rvl", struct.pack("<iff", 1, 0, 0) + bytes(40), "unsupported_format"),
        ("16UC1; compressedDepth", struct.pack("<iff", 1, 0, 0) + bytes(40), "unsupported_format"),
        ("theora", b"\x00" * 20, "unsupported_format"),
        ("h264", b"\x00\x00\x00\x01" * 5, "unsupported_format"),
        ("jpeg", b"", "empty"),
        ("png", b"", "empty"),
        ("jpeg", b"this is not an image at all", "corrupt_compressed"),
        ("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "corrupt_compressed"),
        ("png", b"\x89PNG\r\n\x1a\n", "corrupt_compressed"),
        ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF", "corrupt_compressed"),
        ("jpeg", b"\xff\xd8\xff\xda\x00\x08" + bytes(20), "corrupt_compressed"),
    ],
)
def test_compressed_error_reasons(fmt: str, data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as exc:
        decode_compressed(make_compressed(fmt, data))
    assert reason_of(exc) == reason


def test_truncated_png_is_corrupt() -> None:
    rgb = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _, data = encode_compressed(rgb, "png")
    with pytest.raises(ImageDecodeError) as exc:
        decode_compressed(make_compressed("png", data[: len(data) // 2]))
    assert reason_of(exc) == "corrupt_compressed"


def test_png_with_bad_ihdr_dimensions_is_corrupt() -> None:
    _, data = encode_compressed(np.zeros((4, 4, 3), np.uint8), "png")
    broken = data[:16] + struct.pack(">II", 0, 4) + data[24:]
    with pytest.raises(ImageDecodeError) as exc:
        decode_compressed(make_compressed("png", broken))
    assert reason_of(exc) == "corrupt_compressed"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(side: int) -> bytes:
    """A valid 8-bit gray PNG of side x side zero pixels, built without allocating it."""
    comp = zlib.compressobj(9)
    row = bytes(side + 1)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_with_declared_size(width: int, height: int) -> bytes:
    _, data = encode_compressed(np.zeros((16, 16, 3), np.uint8), "jpeg")
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


@pytest.fixture
def no_imdecode(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args, **_kwargs):
        raise AssertionError("cv2.imdecode must not be called for an oversized header")

    monkeypatch.setattr(image_codec.cv2, "imdecode", forbidden)


@pytest.mark.usefixtures("no_imdecode")
@pytest.mark.parametrize("kind", ["png", "jpeg", "depth_png"])
def test_8k_by_8k_header_rejected_before_decoding(kind: str) -> None:
    if kind == "png":
        msg = make_compressed("png", png_bomb(8192))
        assert len(msg.data) < 200_000
    elif kind == "jpeg":
        msg = make_compressed("rgb8; jpeg compressed bgr8", jpeg_with_declared_size(8192, 8192))
    else:
        header = struct.pack("<iff", 0, 0.0, 0.0)
        msg = make_compressed("16UC1; compressedDepth png", header + png_bomb(8192))
    with pytest.raises(ImageDecodeError) as exc:
        decode_compressed(msg)
    assert reason_of(exc) == "too_large"


def test_jpeg_sof_parser_reads_declared_size() -> None:
    data = jpeg_with_declared_size(640, 480)
    assert image_codec._jpeg_size(data) == (640, 480)
    rgb = np.zeros((10, 30, 3), np.uint8)
    _, real = encode_compressed(rgb, "jpeg")
    assert image_codec._jpeg_size(real) == (30, 10)


def test_compressed_max_pixels_configurable() -> None:
    _, data = encode_compressed(np.zeros((8, 8, 3), np.uint8), "png")
    msg = make_compressed("png", data)
    assert decode_compressed(msg, max_pixels=64).shape == (8, 8, 3)
    with pytest.raises(ImageDecodeError) as exc:
        decode_compressed(msg, max_pixels=63)
    assert reason_of(exc) == "too_large"


def test_encode_compressed_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_compressed(np.zeros((2, 2, 3), np.uint8), "webp")
    with pytest.raises(ValueError):
        encode_compressed(np.zeros((2, 2, 3), np.float32), "png")


# --------------------------------------------------------------------------- dispatch / stamps


def test_decode_any_dispatch() -> None:
    rgb = np.random.default_rng(6).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    raw = Image(**encode_image(rgb, "bgr8"))
    fmt, data = encode_compressed(rgb, "png")
    np.testing.assert_array_equal(decode_any(raw), rgb)
    np.testing.assert_array_equal(decode_any(make_compressed(fmt, data)), rgb)
    with pytest.raises(ImageDecodeError) as exc:
        decode_any(raw, max_pixels=1)
    assert reason_of(exc) == "too_large"
    with pytest.raises(ImageDecodeError) as exc:
        decode_any(SimpleNamespace(data=b""))
    assert reason_of(exc) == "bad_message"


def test_stamp_to_ns_exact() -> None:
    msg = Image()
    msg.header.stamp.sec = 1_700_000_000
    msg.header.stamp.nanosec = 999_999_999
    assert stamp_to_ns(msg.header.stamp) == 1_700_000_000_999_999_999
    assert stamp_to_ns(SimpleNamespace(sec=3, nanosec=5)) == 3_000_000_005


# --------------------------------------------------------------------------- fuzz


def check_fuzz_result(call) -> np.ndarray | None:
    try:
        img = call()
    except ImageDecodeError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return None
    assert isinstance(img, np.ndarray)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.flags.c_contiguous
    return img


_ENCODINGS = sorted(SUPPORTED_ENCODINGS) + ["", "bogus", "RGB8", "32FC3", "16SC1"]


@st.composite
def raw_messages(draw: st.DrawFn) -> SimpleNamespace:
    encoding = draw(st.sampled_from(_ENCODINGS))
    width = draw(st.integers(-1, 24))
    height = draw(st.integers(-1, 24))
    step = draw(st.one_of(st.integers(-1, 200), st.just(max(width, 0) * 8)))
    target = max(step, 0) * max(height, 0) + draw(st.integers(-3, 3))
    size = draw(st.one_of(st.just(max(target, 0)), st.integers(0, 600)))
    data = draw(st.binary(min_size=size, max_size=size))
    return SimpleNamespace(
        encoding=encoding, width=width, height=height, step=step, is_bigendian=draw(st.integers(0, 1)), data=data
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw_messages())
def test_fuzz_raw_decode_never_crashes(msg: SimpleNamespace) -> None:
    img = check_fuzz_result(lambda: decode_image(msg, max_pixels=400))
    if img is not None:
        assert img.shape == (msg.height, msg.width, 3)


def _seed_payloads() -> list[bytes]:
    rgb = np.random.default_rng(7).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    seeds = [encode_compressed(rgb, "png")[1], encode_compressed(rgb, "jpeg")[1]]
    seeds.append(encode_compressed(rgb[..., 0], "jpeg")[1])
    ok, buf = cv2.imencode(".png", np.arange(120, dtype=np.uint16).reshape(12, 10))
    assert ok
    seeds.append(struct.pack("<iff", 0, 100.0, -9.0) + buf.tobytes())
    return seeds


_SEEDS = _seed_payloads()
_FORMATS = ["jpeg", "png", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth png",
            "32FC1; compressedDepth png", "32FC1; compressedDepth", "", "theora", "bgr8; png compressed bgr8"]


@st.composite
def compressed_messages(draw: st.DrawFn) -> SimpleNamespace:
    mode = draw(st.sampled_from(["random", "prefixed", "mutated", "truncated"]))
    if mode == "random":
        data = draw(st.binary(max_size=300))
    elif mode == "prefixed":
        prefix = draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", bytes(12) + b"\x89PNG\r\n\x1a\n"]))
        data = prefix + draw(st.binary(max_size=300))
    else:
        data = bytearray(draw(st.sampled_from(_SEEDS)))
        if mode == "truncated":
            data = data[: draw(st.integers(0, len(data)))]
        for _ in range(draw(st.integers(1, 8))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(data)
    return SimpleNamespace(format=draw(st.sampled_from(_FORMATS)), data=data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(compressed_messages())
def test_fuzz_compressed_decode_never_crashes(msg: SimpleNamespace) -> None:
    check_fuzz_result(lambda: decode_any(msg, max_pixels=1 << 16))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1"]),
    st.integers(1, 8),
    st.integers(1, 8),
    st.integers(0, 5),
    st.booleans(),
    st.binary(min_size=1024, max_size=1024),
)
def test_fuzz_real_messages_with_padding(
    encoding: str, width: int, height: int, pad: int, big: bool, noise: bytes
) -> None:
    bpp = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "16UC1": 2, "32FC1": 4}[encoding]
    step = width * bpp + pad
    msg = make_image(encoding, width, height, step, noise[: step * height], is_bigendian=int(big))
    img = check_fuzz_result(lambda: decode_image(msg))
    assert img is not None
    assert img.shape == (height, width, 3)
