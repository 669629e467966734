"""Decode ROS image messages into RGB numpy arrays (no rclpy / cv_bridge).

Messages are duck-typed: ``sensor_msgs/Image`` needs ``encoding, height, width,
step, is_bigendian, data``; ``sensor_msgs/CompressedImage`` needs ``format, data``.
Every decoder returns a fresh, C-contiguous ``HxWx3`` ``uint8`` RGB array and
raises :class:`ImageDecodeError` (never anything else) for bad input.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, SupportsInt, cast

import cv2
import numpy as np

from sole_r1_ros.errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "TimeLike",
    "decode_any",
    "decode_compressed",
    "decode_image",
    "encode_compressed",
    "encode_image",
    "stamp_to_ns",
]

DEFAULT_MAX_PIXELS = 33_177_600  # 7680 x 4320

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_COMPRESSED_DEPTH_HEADER = 12
_JPEG_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


class ImageDecodeError(InputError):
    """An image message could not be decoded.

    ``reason`` is a short machine-readable tag, one of: ``bad_message``,
    ``unknown_encoding``, ``unsupported_format``, ``empty``, ``too_large``,
    ``bad_step``, ``size_mismatch``, ``bad_dimensions``, ``corrupt_compressed``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: str  # little-endian numpy dtype string; byte order is fixed up per message
    to_rgb: Callable[[np.ndarray], np.ndarray]

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * np.dtype(self.dtype).itemsize


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.array(a, dtype=np.uint8, order="C", copy=True)


def _bgr(a: np.ndarray) -> np.ndarray:
    code = cv2.COLOR_BGR2RGB if a.shape[2] == 3 else cv2.COLOR_BGRA2RGB
    return cv2.cvtColor(np.ascontiguousarray(a, dtype=np.uint8), code)


def _rgba(a: np.ndarray) -> np.ndarray:
    return np.array(a[..., :3], dtype=np.uint8, order="C", copy=True)


def _gray(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(a, dtype=np.uint8)[..., None], 3, axis=2)


def _high_byte(a: np.ndarray) -> np.ndarray:
    return (a >> 8).astype(np.uint8)


def _bayer(code: int, sixteen_bit: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    def convert(a: np.ndarray) -> np.ndarray:
        raw = _high_byte(a) if sixteen_bit else np.ascontiguousarray(a, dtype=np.uint8)
        return np.ascontiguousarray(cv2.cvtColor(raw, code))

    return convert


def _yuv(code: int) -> Callable[[np.ndarray], np.ndarray]:
    def convert(a: np.ndarray) -> np.ndarray:
        if a.shape[1] % 2:
            raise ImageDecodeError("bad_dimensions", f"YUV 4:2:2 needs an even width, got {a.shape[1]}")
        return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(a), code))

    return convert


def _normalise_depth(values: np.ndarray) -> np.ndarray:
    """Min-max scale finite values to 0..255; non-finite pixels and constant images give 0."""
    with np.errstate(invalid="ignore"):
        v = values.astype(np.float64)
    finite = np.isfinite(v)
    all_finite = bool(finite.all())
    if not all_finite:
        if not finite.any():
            return np.zeros(v.shape + (3,), np.uint8)
        v[~finite] = np.nan
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    else:
        lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return np.zeros(v.shape + (3,), np.uint8)
    v -= lo
    v *= 255.0 / (hi - lo)
    if not all_finite:
        v[~finite] = 0.0
    np.clip(v, 0.0, 255.0, out=v)
    return _gray(np.rint(v).astype(np.uint8))


def _rgb16(a: np.ndarray) -> np.ndarray:
    return _rgb(_high_byte(a))


def _bgr16(a: np.ndarray) -> np.ndarray:
    return _bgr(_high_byte(a))


def _gray16(a: np.ndarray) -> np.ndarray:
    return _gray(_high_byte(a))


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, "u1", _rgb),
    "bgr8": _Layout(3, "u1", _bgr),
    "8UC3": _Layout(3, "u1", _bgr),
    "rgba8": _Layout(4, "u1", _rgba),
    "bgra8": _Layout(4, "u1", _bgr),
    "8UC4": _Layout(4, "u1", _bgr),
    "mono8": _Layout(1, "u1", _gray),
    "8UC1": _Layout(1, "u1", _gray),
    "mono16": _Layout(1, "<u2", _gray16),
    "16UC1": _Layout(1, "<u2", _normalise_depth),
    "32FC1": _Layout(1, "<f4", _normalise_depth),
    "rgb16": _Layout(3, "<u2", _rgb16),
    "bgr16": _Layout(3, "<u2", _bgr16),
    "rgba16": _Layout(4, "<u2", lambda a: _rgba(_high_byte(a))),
    "bgra16": _Layout(4, "<u2", _bgr16),
    "bayer_rggb8": _Layout(1, "u1", _bayer(cv2.COLOR_BayerBG2RGB)),
    "bayer_bggr8": _Layout(1, "u1", _bayer(cv2.COLOR_BayerRG2RGB)),
    "bayer_gbrg8": _Layout(1, "u1", _bayer(cv2.COLOR_BayerGR2RGB)),
    "bayer_grbg8": _Layout(1, "u1", _bayer(cv2.COLOR_BayerGB2RGB)),
    "bayer_rggb16": _Layout(1, "<u2", _bayer(cv2.COLOR_BayerBG2RGB, True)),
    "bayer_bggr16": _Layout(1, "<u2", _bayer(cv2.COLOR_BayerRG2RGB, True)),
    "bayer_gbrg16": _Layout(1, "<u2", _bayer(cv2.COLOR_BayerGR2RGB, True)),
    "bayer_grbg16": _Layout(1, "<u2", _bayer(cv2.COLOR_BayerGB2RGB, True)),
    "yuv422": _Layout(2, "u1", _yuv(cv2.COLOR_YUV2RGB_UYVY)),
    "uyvy": _Layout(2, "u1", _yuv(cv2.COLOR_YUV2RGB_UYVY)),
    "yuv422_yuy2": _Layout(2, "u1", _yuv(cv2.COLOR_YUV2RGB_YUY2)),
    "yuyv": _Layout(2, "u1", _yuv(cv2.COLOR_YUV2RGB_YUY2)),
}

SUPPORTED_ENCODINGS: frozenset[str] = frozenset(_LAYOUTS)


class TimeLike(Protocol):
    """A ``builtin_interfaces/Time`` (rclpy or rosbags message, or anything with ``sec``/``nanosec``)."""

    @property
    def sec(self) -> SupportsInt:
        """Whole seconds."""
        ...

    @property
    def nanosec(self) -> SupportsInt:
        """Nanoseconds within the second."""
        ...


def _field(msg: object, name: str) -> object:
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ImageDecodeError("bad_message", f"message has no '{name}' field") from None


def _uint_field(msg: object, name: str) -> int:
    value = _field(msg, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageDecodeError("bad_message", f"'{name}' must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ImageDecodeError("bad_message", f"'{name}' must be non-negative, got {value}")
    return int(value)


def _as_bytes_view(data: object) -> np.ndarray:
    """A flat uint8 view of ``data`` (bytes, bytearray, array.array, memoryview, ndarray, list)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, str):
        raise ImageDecodeError("bad_message", "'data' must be bytes-like, got str")
    try:
        # memoryview() itself is the buffer-protocol check: a non-buffer raises TypeError
        return np.frombuffer(memoryview(cast("Buffer", data)).cast("B"), dtype=np.uint8)
    except (TypeError, ValueError):
        pass
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageDecodeError("bad_message", f"'data' is not a byte sequence: {exc}") from None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large", f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}"
        )


def decode_image(msg: object, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` into a fresh ``HxWx3`` uint8 RGB array.

    Honours ``step`` row padding and ``is_bigendian``. 16-bit colour/mono data keep the
    high byte; ``16UC1``/``32FC1`` depth is min-max normalised over finite values.
    """
    encoding = _field(msg, "encoding")
    layout = _LAYOUTS.get(encoding) if isinstance(encoding, str) else None
    if layout is None:
        raise ImageDecodeError("unknown_encoding", f"unsupported encoding {encoding!r}")
    width = _uint_field(msg, "width")
    height = _uint_field(msg, "height")
    step = _uint_field(msg, "step")
    if width == 0 or height == 0:
        raise ImageDecodeError("empty", f"image is {width}x{height}")
    _check_pixels(width, height, max_pixels)
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ImageDecodeError(
            "bad_step", f"step {step} < width {width} * {layout.bytes_per_pixel} bytes per pixel ({encoding})"
        )
    buf = _as_bytes_view(_field(msg, "data"))
    needed = step * height
    if buf.size < needed:
        raise ImageDecodeError("size_mismatch", f"data has {buf.size} bytes, step*height needs {needed}")

    rows = np.ascontiguousarray(buf[:needed].reshape(height, step)[:, :row_bytes])
    dtype = np.dtype(layout.dtype)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if bool(_field(msg, "is_bigendian")) else "<")
        rows = rows.view(dtype).astype(dtype.newbyteorder("="))
    pixels = rows.reshape(height, width, layout.channels)
    if layout.channels == 1:
        pixels = pixels[..., 0]
    try:
        rgb = layout.to_rgb(pixels)
    except cv2.error as exc:
        raise ImageDecodeError("bad_dimensions", f"cannot convert {encoding} {width}x{height}: {exc}") from None
    return _ensure_rgb(rgb, buf)


def _ensure_rgb(rgb: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Guarantee a C-contiguous HxWx3 uint8 array that does not alias ``source``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageDecodeError("bad_dimensions", f"conversion produced {rgb.dtype} {rgb.shape}")
    if not rgb.flags.c_contiguous or np.may_share_memory(rgb, source):
        rgb = np.array(rgb, dtype=np.uint8, order="C", copy=True)
    return rgb


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageDecodeError("corrupt_compressed", "PNG without a leading IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Scan JPEG marker segments up to the first SOF and return (width, height)."""
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise ImageDecodeError("corrupt_compressed", f"JPEG: expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):
            raise ImageDecodeError("corrupt_compressed", "JPEG: no frame header before scan data")
        if pos + 2 > n:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ImageDecodeError("corrupt_compressed", "JPEG: bad segment length")
        if marker in _JPEG_SOF_MARKERS:
            if length < 8 or pos + 7 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            return width, height
        pos += length
    raise ImageDecodeError("corrupt_compressed", "JPEG: truncated before the frame header")


def _parse_format(fmt: str) -> tuple[str | None, str, bool]:
    """Split a CompressedImage ``format`` into (source encoding, codec, is_compressed_depth)."""
    fmt = fmt.strip()
    source: str | None = None
    rest = fmt
    if ";" in fmt:
        head, rest = fmt.split(";", 1)
        source = head.strip() or None
    words = rest.strip().lower().split()
    depth = "compresseddepth" in words
    codec = ""
    for word in words:
        if word in ("jpeg", "jpg", "png", "rvl", "tiff", "bmp", "webp", "jp2", "theora", "h264", "ffmpeg"):
            codec = "jpeg" if word == "jpg" else word
            break
    return source, codec, depth


def _compressed_depth_to_float(raw: np.ndarray, header: bytes) -> np.ndarray:
    """Undo compressed_depth_image_transport's inverse-depth quantisation for 32FC1."""
    _, quant_a, quant_b = struct.unpack("<iff", header)
    depth = np.full(raw.shape, np.nan, dtype=np.float64)
    valid = raw > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth[valid] = quant_a / (raw[valid].astype(np.float64) - quant_b)
    return depth


def decode_compressed(msg: object, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG / PNG / compressedDepth PNG) to RGB.

    The container's declared size is read from the PNG IHDR / JPEG SOF and checked
    against ``max_pixels`` before any pixel memory is allocated. The container is
    identified by its magic bytes; the ``format`` string only selects the depth path.
    """
    fmt = _field(msg, "format")
    if not isinstance(fmt, str):
        raise ImageDecodeError("bad_message", f"'format' must be str, got {type(fmt).__name__}")
    source, codec, is_depth = _parse_format(fmt)
    if codec and codec not in ("jpeg", "png"):
        raise ImageDecodeError("unsupported_format", f"compressed format {fmt!r} is not supported")
    data = _as_bytes_view(_field(msg, "data")).tobytes()
    if not data:
        raise ImageDecodeError("empty", "compressed image has no data")

    header = b""
    if data.startswith(_PNG_SIGNATURE):
        container = "png"
    elif data.startswith(_JPEG_SOI):
        container = "jpeg"
    elif data[_COMPRESSED_DEPTH_HEADER:].startswith(_PNG_SIGNATURE):
        header, data = data[:_COMPRESSED_DEPTH_HEADER], data[_COMPRESSED_DEPTH_HEADER:]
        container = "png"
        is_depth = True
    elif is_depth and codec != "png" and len(data) >= _COMPRESSED_DEPTH_HEADER:
        raise ImageDecodeError("unsupported_format", f"compressedDepth payload {fmt!r} is not PNG (RVL?)")
    else:
        raise ImageDecodeError("corrupt_compressed", f"data is neither PNG nor JPEG (format {fmt!r})")

    width, height = _png_size(data) if container == "png" else _jpeg_size(data)
    if width == 0 or height == 0:
        raise ImageDecodeError("corrupt_compressed", f"header declares a {width}x{height} image")
    _check_pixels(width, height, max_pixels)

    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageDecodeError("corrupt_compressed", f"OpenCV could not decode {container}: {exc}") from None
    if img is None or img.size == 0:
        raise ImageDecodeError("corrupt_compressed", f"OpenCV could not decode {container} data")
    if img.shape[0] * (img.shape[1] if img.ndim > 1 else 1) > max_pixels:
        raise ImageDecodeError("too_large", f"decoded image {img.shape} exceeds max_pixels={max_pixels}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]

    src = (source or "").strip()
    if img.ndim == 2 and (is_depth or src in ("16UC1", "32FC1")):
        if header and src == "32FC1" and img.dtype == np.uint16:
            return _normalise_depth(_compressed_depth_to_float(img, header))
        return _normalise_depth(img)
    if img.dtype == np.uint16:
        img = _high_byte(img)
    elif img.dtype != np.uint8:
        raise ImageDecodeError("corrupt_compressed", f"unexpected decoded dtype {img.dtype}")
    if img.ndim == 2:
        return _gray(img)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return _bgr(img)
    raise ImageDecodeError("corrupt_compressed", f"unexpected decoded shape {img.shape}")


def decode_any(msg: object, **kw: int) -> np.ndarray:
    """Decode a raw or compressed image message, dispatching on ``format`` vs ``encoding``."""
    if hasattr(msg, "format"):
        return decode_compressed(msg, **kw)
    if hasattr(msg, "encoding"):
        return decode_image(msg, **kw)
    raise ImageDecodeError("bad_message", f"{type(msg).__name__} has neither 'format' nor 'encoding'")


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def _single_channel(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if rgb.ndim == 2:
        src = rgb
        if encoding in ("mono8", "8UC1"):
            return src.astype(np.uint8)
        if encoding in ("mono16", "16UC1"):
            return src.astype(np.uint16)
        return src.astype(np.float32)
    gray = _to_gray(rgb)
    if encoding in ("mono8", "8UC1"):
        return gray
    # numpy's stubs type arithmetic on an ndarray of unknown dtype as Any; the result is an ndarray
    scaled: np.ndarray
    if encoding in ("mono16", "16UC1"):
        scaled = gray.astype(np.uint16) * np.uint16(257)
    else:
        scaled = gray.astype(np.float32) / np.float32(255.0)
    return scaled


def encode_image(
    rgb: np.ndarray, encoding: str = "rgb8", *, is_bigendian: bool = False, row_padding: int = 0
) -> dict[str, Any]:
    """Build the fields of a ``sensor_msgs/Image`` from an ``HxWx3`` uint8 RGB array.

    Single-channel encodings (mono8/8UC1/mono16/16UC1/32FC1) also accept an ``HxW``
    array whose values are used as-is; RGB input is converted to gray. Returns a dict
    with ``encoding, height, width, step, is_bigendian, data`` (``data`` is bytes).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] not in (3, 4)):
        raise ValueError(f"expected HxWx3 or HxW array, got shape {rgb.shape}")
    if row_padding < 0:
        raise ValueError("row_padding must be >= 0")
    three = rgb if rgb.ndim == 3 else None
    if encoding in ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "8UC4"):
        if three is None:
            three = np.repeat(rgb.astype(np.uint8)[..., None], 3, axis=2)
        three = three[..., :3].astype(np.uint8)
        if encoding in ("bgr8", "8UC3", "bgra8", "8UC4"):
            three = three[..., ::-1]
        if encoding in ("rgba8", "bgra8", "8UC4"):
            alpha = np.full(three.shape[:2] + (1,), 255, np.uint8)
            three = np.concatenate([three, alpha], axis=2)
        pixels = np.ascontiguousarray(three)
    elif encoding in ("mono8", "8UC1", "mono16", "16UC1", "32FC1"):
        pixels = _single_channel(rgb, encoding)
        if pixels.dtype.itemsize > 1:
            pixels = pixels.astype(pixels.dtype.newbyteorder(">" if is_bigendian else "<"))
    else:
        raise ValueError(f"encode_image does not support encoding {encoding!r}")
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).view(np.uint8)
    if row_padding:
        row = np.concatenate([row, np.zeros((height, row_padding), np.uint8)], axis=1)
    return {
        "encoding": encoding,
        "height": int(height),
        "width": int(width),
        "step": int(row.shape[1]),
        "is_bigendian": int(bool(is_bigendian)),
        "data": np.ascontiguousarray(row).tobytes(),
    }


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """Compress an ``HxWx3`` RGB (or ``HxW`` gray) uint8 array to JPEG or PNG.

    Returns ``(format_string, data)`` in the ``image_transport`` style, e.g.
    ``("rgb8; jpeg compressed bgr8", b"...")``.
    """
    codec = fmt.strip().lower()
    if codec == "jpg":
        codec = "jpeg"
    if codec not in ("jpeg", "png"):
        raise ValueError(f"unsupported compressed format {fmt!r}")
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 input, got {arr.dtype}")
    if arr.ndim == 2:
        src, dst, pixels = "mono8", "mono8", arr
    elif arr.ndim == 3 and arr.shape[2] == 3:
        src, dst, pixels = "rgb8", "bgr8", cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    else:
        raise ValueError(f"expected HxWx3 or HxW array, got shape {arr.shape}")
    if codec == "jpeg":
        params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]
    else:
        params = [int(cv2.IMWRITE_PNG_COMPRESSION), 3]
    ok, buf = cv2.imencode("." + ("jpg" if codec == "jpeg" else "png"), np.ascontiguousarray(pixels), params)
    if not ok:
        raise ValueError(f"OpenCV failed to encode {codec}")
    return f"{src}; {codec} compressed {dst}", buf.tobytes()


def stamp_to_ns(stamp: TimeLike) -> int:
    """``builtin_interfaces/Time``-like ``stamp`` (``sec``, ``nanosec``) to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
