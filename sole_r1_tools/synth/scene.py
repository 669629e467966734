"""Procedurally rendered 2-D tabletop with an external (top-down) and a wrist camera.

World units are roughly metres. The table plane is z = 0, x grows to the right and
y grows towards the bottom of the external image; the visible table spans
``TABLE_EXTENT``. Both cameras are pinholes looking straight down, so heights only
change apparent size (perspective) and shadow offsets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

ROLES: tuple[str, ...] = ("external", "wrist")
DEFAULT_SIZE: tuple[int, int] = (320, 240)
MAX_SIZE: tuple[int, int] = (1920, 1440)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (36, 168, 62),
    "blue": (38, 82, 218),
    "yellow": (242, 208, 36),
    "orange": (246, 128, 28),
    "purple": (136, 58, 178),
    "cyan": (32, 196, 206),
    "pink": (240, 140, 180),
    "white": (236, 236, 230),
    "grey": (128, 128, 132),
    "black": (34, 34, 38),
    "brown": (118, 78, 44),
}
BLOCK_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple")
DISTRACTOR_COLORS: tuple[str, ...] = ("white", "grey", "black", "brown", "pink", "cyan")
DISTRACTOR_SHAPES: tuple[str, ...] = ("cylinder", "ball", "prism", "mug")

TABLES: dict[str, tuple[tuple[int, int, int], str]] = {
    "light_wood": ((196, 160, 118), "wood"),
    "dark_wood": ((124, 90, 62), "wood"),
    "grey_laminate": ((150, 150, 154), "speckle"),
    "beige_cloth": ((212, 202, 180), "cloth"),
    "slate": ((92, 104, 120), "speckle"),
    "white_board": ((222, 222, 216), "plain"),
}

TABLE_EXTENT: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.75)
ARM_BASE: tuple[float, float] = (0.5, -0.34)
ARM_LINKS: tuple[float, float] = (0.62, 0.62)
FINGER_LEN = 0.045
FINGER_W = 0.014
PALM_DEPTH = 0.026
PALM_W = 0.125
MAX_OPENING = 0.095
EXTERNAL_CAM_HEIGHT = 1.2
WRIST_CAM_ABOVE_TCP = 0.16
WRIST_TCP_VIEW_WIDTH = 0.2
WRIST_TCP_ROW = 0.70

_SHIFT = 4
_ONE = 1 << _SHIFT
_TEX_EXTENT = (-0.45, -0.45, 1.45, 1.2)
_NOISE_PAD = 48


def parse_size(size: str | Sequence[int]) -> tuple[int, int]:
    """Parse ``"WxH"`` or ``(w, h)`` into a validated ``(width, height)`` tuple."""
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").split("x")
        if len(parts) != 2:
            raise ValueError(f"size must look like 320x240, got {size!r}")
        w, h = int(parts[0]), int(parts[1])
    else:
        w, h = (int(v) for v in size)
    if not (16 <= w <= MAX_SIZE[0] and 16 <= h <= MAX_SIZE[1]):
        raise ValueError(f"size {w}x{h} outside 16x16..{MAX_SIZE[0]}x{MAX_SIZE[1]}")
    return w, h


@dataclass(frozen=True)
class SceneObject:
    """Static properties of a movable object (a block or a distractor)."""

    name: str
    shape: str
    color: str
    rgb: tuple[int, int, int]
    size: float

    @property
    def height(self) -> float:
        return self.size * {"block": 1.0, "cylinder": 1.25, "ball": 1.0, "prism": 0.8, "mug": 1.1}[self.shape]

    @property
    def radius(self) -> float:
        """Radius of the inscribed footprint circle."""
        return self.size / 2

    def footprint(self, x: float, y: float, yaw: float) -> np.ndarray:
        """Footprint polygon (K, 2) in world coordinates."""
        if self.shape == "block":
            h = self.size / 2
            local = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        elif self.shape == "prism":
            r = self.size * 0.62
            a = np.deg2rad([90.0, 210.0, 330.0])
            local = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
        else:
            a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            local = np.stack([np.cos(a), np.sin(a)], axis=1) * (self.size / 2)
        c, s = math.cos(yaw), math.sin(yaw)
        rot = np.array([[c, -s], [s, c]])
        return local @ rot.T + np.array([x, y])


@dataclass(frozen=True)
class Zone:
    """Axis-aligned target area drawn as a tinted region with a solid outline."""

    color: str
    rgb: tuple[int, int, int]
    cx: float
    cy: float
    hx: float
    hy: float

    def corners(self) -> np.ndarray:
        return np.array(
            [
                [self.cx - self.hx, self.cy - self.hy],
                [self.cx + self.hx, self.cy - self.hy],
                [self.cx + self.hx, self.cy + self.hy],
                [self.cx - self.hx, self.cy + self.hy],
            ]
        )

    def distance_inside(self, x: float, y: float, margin: float = 0.0) -> float:
        """Distance from (x, y) to the zone shrunk by ``margin`` (0 when inside it)."""
        dx = max(abs(x - self.cx) - max(self.hx - margin, 0.0), 0.0)
        dy = max(abs(y - self.cy) - max(self.hy - margin, 0.0), 0.0)
        return math.hypot(dx, dy)

    def distance_outside(self, x: float, y: float) -> float:
        """Distance from (x, y) to the zone rectangle (0 when inside)."""
        return self.distance_inside(x, y, 0.0)


@dataclass(frozen=True)
class Appearance:
    """Per-episode look: table, lighting, white balance, noise and camera mounting."""

    table: str
    table_rgb: tuple[int, int, int]
    texture_kind: str
    texture_seed: int
    light: tuple[float, float]
    shadow_strength: float
    brightness: Mapping[str, float]
    gradient: Mapping[str, tuple[float, float]]
    vignette: Mapping[str, float]
    white_balance: tuple[float, float, float]
    noise_sigma: float
    wrist_tilt: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Appearance:
        """Sample a random appearance."""
        table = str(rng.choice(list(TABLES)))
        base, kind = TABLES[table]
        base = tuple(int(np.clip(c + rng.integers(-14, 15), 0, 255)) for c in base)
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.12, 0.3)
        grads = {}
        for role in ROLES:
            g_ang = rng.uniform(0, 2 * np.pi)
            g_mag = rng.uniform(0.0, 0.35)
            grads[role] = (g_mag * math.cos(g_ang), g_mag * math.sin(g_ang))
        return cls(
            table=table,
            table_rgb=base,  # type: ignore[arg-type]
            texture_kind=kind,
            texture_seed=int(rng.integers(0, 2**31)),
            light=(length * math.cos(ang), length * math.sin(ang)),
            shadow_strength=float(rng.uniform(0.25, 0.5)),
            brightness={"external": float(rng.uniform(0.72, 1.2)), "wrist": float(rng.uniform(0.8, 1.2))},
            gradient=grads,
            vignette={"external": float(rng.uniform(0.0, 0.25)), "wrist": float(rng.uniform(0.1, 0.45))},
            white_balance=tuple(float(v) for v in rng.uniform(0.9, 1.1, size=3)),  # type: ignore[arg-type]
            noise_sigma=float(rng.uniform(1.5, 5.0)),
            wrist_tilt=float(np.deg2rad(rng.uniform(-7.0, 7.0))),
        )


@dataclass(frozen=True)
class Scene:
    """Static scene content: objects, the target zone and the appearance."""

    objects: tuple[SceneObject, ...]
    zone: Zone | None
    appearance: Appearance

    def index(self, name: str) -> int:
        for i, obj in enumerate(self.objects):
            if obj.name == name:
                return i
        raise KeyError(name)


@dataclass(frozen=True)
class SceneState:
    """Dynamic state of one frame.

    ``gripper`` is ``[x, y, z, yaw, opening]`` of the tool centre point (between the
    fingertips; yaw is the direction the fingers point). ``poses`` is ``(N, 4)``
    ``[x, y, z, yaw]`` per object, ``z`` being the elevation of the object's base.
    ``holding`` is the index of the grasped object or -1.
    """

    gripper: np.ndarray
    poses: np.ndarray
    holding: int = -1


@dataclass(frozen=True)
class Occluder:
    """Something between a camera and the table, in normalised image coordinates."""

    kind: str
    side: str = "left"
    along: float = 0.5
    reach: float = 0.5
    width: float = 0.22
    angle: float = 0.0
    rgb: tuple[int, int, int] = (48, 58, 92)
    skin: tuple[int, int, int] = (224, 172, 140)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera looking straight down; ``theta`` rotates world axes into image axes."""

    width: int
    height: int
    cx: float
    cy: float
    wx: float
    wy: float
    theta: float
    focal: float
    elevation: float

    def scale(self, z: float = 0.0) -> float:
        """Pixels per world unit for points at height ``z``."""
        return self.focal / max(self.elevation - z, 1e-3)

    def project(self, pts: np.ndarray, z: float = 0.0) -> np.ndarray:
        """Project world points (K, 2) at height ``z`` to pixels (K, 2)."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        k = self.scale(z)
        c, s = k * math.cos(self.theta), k * math.sin(self.theta)
        m = np.array([[c, s], [-s, c]])
        return (pts - (self.wx, self.wy)) @ m + (self.cx, self.cy)

    def affine(self, z: float = 0.0) -> np.ndarray:
        """2x3 world-to-pixel affine for the plane at height ``z``."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        k = self.scale(z)
        a = k * np.array([[c, -s], [s, c]])
        t = np.array([self.cx, self.cy]) - a @ np.array([self.wx, self.wy])
        return np.hstack([a, t[:, None]])


def _ipts(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _ipt(pt: Sequence[float]) -> tuple[int, int]:
    return int(round(pt[0] * _ONE)), int(round(pt[1] * _ONE))


def _col(rgb: Sequence[float], k: float = 1.0) -> tuple[int, int, int]:
    r, g, b = rgb
    return (min(255, max(0, int(r * k + 0.5))), min(255, max(0, int(g * k + 0.5))),
            min(255, max(0, int(b * k + 0.5))))


def _fill(img: np.ndarray, pts: np.ndarray, rgb: Sequence[float]) -> None:
    cv2.fillPoly(img, [_ipts(pts)], _col(rgb), cv2.LINE_AA, _SHIFT)


def _outline(img: np.ndarray, pts: np.ndarray, rgb: Sequence[float], thickness: int) -> None:
    cv2.polylines(img, [_ipts(pts)], True, _col(rgb), max(1, thickness), cv2.LINE_AA, _SHIFT)


def _hull(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.vstack([a, b]).astype(np.float32)).reshape(-1, 2)


def _rect(center: np.ndarray, fwd: np.ndarray, lat: np.ndarray, length: float, width: float) -> np.ndarray:
    f, l_ = fwd * (length / 2), lat * (width / 2)
    return np.array([center - f - l_, center + f - l_, center + f + l_, center - f + l_])


def make_texture(appearance: Appearance, ppu: float) -> tuple[np.ndarray, float]:
    """Table texture (uint8 RGB) covering the world extent ``_TEX_EXTENT``; returns (image, ppu)."""
    x0, y0, x1, y1 = _TEX_EXTENT
    w, h = int((x1 - x0) * ppu), int((y1 - y0) * ppu)
    rng = np.random.default_rng(appearance.texture_seed)

    def smooth(cells: tuple[int, int]) -> np.ndarray:
        small = rng.standard_normal(cells).astype(np.float32)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)

    blotch = smooth((7, 8))
    kind = appearance.texture_kind
    if kind == "wood":
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        warp = smooth((5, 9)) * (0.05 * ppu)
        period = (0.018 + 0.01 * rng.random()) * ppu
        grain = np.sin((yy + warp + 0.02 * xx) * (2 * np.pi / period))
        plank = 0.14 * ppu
        seam = (np.mod(yy + 0.3 * warp, plank) < max(1.0, 0.004 * ppu)).astype(np.float32)
        v = 0.07 * grain + 0.05 * blotch - 0.25 * seam
    elif kind == "cloth":
        p = 0.012 * ppu
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        weave = np.sin(xx * (2 * np.pi / p)) * np.sin(yy * (2 * np.pi / p))
        v = 0.05 * weave + 0.05 * blotch
    elif kind == "speckle":
        fine = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8)
        v = 0.12 * fine + 0.05 * blotch
    else:
        v = 0.035 * blotch
    v = v + 0.02 * rng.standard_normal((h, w)).astype(np.float32)
    tex = np.asarray(appearance.table_rgb, dtype=np.float32)[None, None, :] * (1.0 + v[..., None])
    return np.clip(tex, 0, 255).astype(np.uint8), ppu


def _gain_map(width: int, height: int, brightness: float, grad: tuple[float, float], vignette: float,
              wb: Sequence[float]) -> np.ndarray:
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / height - 0.5) * (height / width)
    g = 1.0 + 2.0 * (grad[0] * xs[None, :] + grad[1] * ys[:, None])
    g *= 1.0 - 2.0 * vignette * (xs[None, :] ** 2 + ys[:, None] ** 2)
    g *= brightness
    return (g[..., None] * np.asarray(wb, dtype=np.float32)[None, None, :]).astype(np.float32)


def arm_elbow(wrist: np.ndarray) -> np.ndarray:
    """Elbow position of the two-link arm reaching from ``ARM_BASE`` to ``wrist``."""
    base = np.asarray(ARM_BASE)
    l1, l2 = ARM_LINKS
    d_vec = wrist - base
    d = float(np.clip(np.hypot(*d_vec), 0.05, l1 + l2 - 1e-3))
    a = math.atan2(d_vec[1], d_vec[0])
    b = math.acos(np.clip((l1 * l1 + d * d - l2 * l2) / (2 * l1 * d), -1.0, 1.0))
    return base + l1 * np.array([math.cos(a + b), math.sin(a + b)])


class SceneRenderer:
    """Renders ``SceneState`` s of one ``Scene`` into RGB uint8 images per camera role."""

    def __init__(self, scene: Scene, size: str | Sequence[int] = DEFAULT_SIZE) -> None:
        self.scene = scene
        self.width, self.height = parse_size(size)
        app = scene.appearance
        x0, y0, x1, y1 = TABLE_EXTENT
        self._ext_ppu = min(self.width / (x1 - x0), self.height / (y1 - y0)) * 1.02
        self._wrist_focal = self.width * WRIST_CAM_ABOVE_TCP / WRIST_TCP_VIEW_WIDTH
        tex_ppu = float(np.clip(0.9 * self._ext_ppu, 260.0, 700.0))
        self._texture, self._tex_ppu = make_texture(app, tex_ppu)
        self._gain = {
            role: _gain_map(self.width, self.height, app.brightness[role], app.gradient[role],
                            app.vignette[role], app.white_balance)
            for role in ROLES
        }
        self._px = self.width / 320.0
        noise_rng = np.random.default_rng(app.texture_seed ^ 0x5EED)
        self._noise = noise_rng.standard_normal((self.height + _NOISE_PAD, self.width + _NOISE_PAD, 3),
                                                dtype=np.float32) * np.float32(app.noise_sigma)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def external_camera(self, jitter: Sequence[float] = (0.0, 0.0, 0.0)) -> Camera:
        """Fixed overhead camera; ``jitter`` is (dx px, dy px, rotation rad)."""
        x0, y0, x1, y1 = TABLE_EXTENT
        return Camera(self.width, self.height, self.width / 2 + jitter[0], self.height / 2 + jitter[1],
                      (x0 + x1) / 2, (y0 + y1) / 2, float(jitter[2]),
                      self._ext_ppu * EXTERNAL_CAM_HEIGHT, EXTERNAL_CAM_HEIGHT)

    def wrist_camera(self, gripper: np.ndarray, jitter: Sequence[float] = (0.0, 0.0, 0.0)) -> Camera:
        """Camera rigidly mounted on the gripper; the fingers point to the image top."""
        x, y, z, yaw = (float(v) for v in gripper[:4])
        theta = -math.pi / 2 - yaw + self.scene.appearance.wrist_tilt + float(jitter[2])
        k_tcp = self._wrist_focal / WRIST_CAM_ABOVE_TCP
        c, s = math.cos(theta), math.sin(theta)
        off = np.array([0.0, (WRIST_TCP_ROW - 0.5) * self.height]) / k_tcp
        back = np.array([c * off[0] + s * off[1], -s * off[0] + c * off[1]])
        return Camera(self.width, self.height, self.width / 2 + jitter[0], self.height / 2 + jitter[1],
                      x - back[0], y - back[1], theta, self._wrist_focal, z + WRIST_CAM_ABOVE_TCP)

    def render(
        self,
        state: SceneState,
        *,
        rng: np.random.Generator | None = None,
        jitter: Mapping[str, Sequence[float]] | None = None,
        occluders: Mapping[str, Sequence[Occluder]] | None = None,
        flicker: float = 1.0,
    ) -> dict[str, np.ndarray]:
        """Render all roles; ``rng`` picks the sensor-noise pattern (no noise when None)."""
        jitter = jitter or {}
        occluders = occluders or {}
        out = {}
        for role in ROLES:
            out[role] = self.render_view(role, state, rng=rng, jitter=jitter.get(role, (0.0, 0.0, 0.0)),
                                         occluders=occluders.get(role, ()), flicker=flicker)
        return out

    def render_view(
        self,
        role: str,
        state: SceneState,
        *,
        rng: np.random.Generator | None = None,
        jitter: Sequence[float] = (0.0, 0.0, 0.0),
        occluders: Sequence[Occluder] = (),
        flicker: float = 1.0,
    ) -> np.ndarray:
        """Render one camera role to an RGB uint8 image."""
        if role == "external":
            cam = self.external_camera(jitter)
        elif role == "wrist":
            cam = self.wrist_camera(state.gripper, jitter)
        else:
            raise ValueError(f"unknown role {role!r}")
        img = self._table(cam)
        self._draw_zone(img, cam)
        self._draw_shadows(img, cam, state)
        self._draw_objects(img, cam, state)
        if role == "external":
            self._draw_gripper_top(img, cam, state.gripper)
        else:
            self._draw_fingers(img, cam, state.gripper)
        for occ in occluders:
            self._draw_occluder(img, occ)
        return self._expose(img, role, rng, flicker)

    def _table(self, cam: Camera) -> np.ndarray:
        x0, y0 = _TEX_EXTENT[:2]
        a = cam.affine(0.0)
        m = a.copy()
        m[:, :2] = a[:, :2] / self._tex_ppu
        m[:, 2] = a[:, :2] @ np.array([x0, y0]) + a[:, 2]
        return cv2.warpAffine(self._texture, m, (self.width, self.height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    def _draw_zone(self, img: np.ndarray, cam: Camera) -> None:
        zone = self.scene.zone
        if zone is None:
            return
        pts = cam.project(zone.corners(), 0.0)
        overlay = img.copy()
        _fill(overlay, pts, zone.rgb)
        cv2.addWeighted(overlay, 0.33, img, 0.67, 0.0, dst=img)
        _outline(img, pts, _col(zone.rgb, 0.85), int(round(0.008 * cam.scale(0.0))))

    def _shadow_polys(self, cam: Camera, state: SceneState) -> list[np.ndarray]:
        lx, ly = self.scene.appearance.light
        light = np.array([lx, ly])
        polys = []
        for obj, pose in zip(self.scene.objects, state.poses):
            x, y, z, yaw = (float(v) for v in pose)
            fp = obj.footprint(x, y, yaw)
            polys.append(cam.project(_hull(fp + light * z, fp + light * (z + obj.height)), 0.0))
        g = state.gripper
        fwd, lat = _axes(float(g[3]))
        tcp = np.asarray(g[:2], dtype=np.float64)
        for part in _gripper_parts(tcp, fwd, lat, float(g[4])):
            polys.append(cam.project(part + light * float(g[2]), 0.0))
        return polys

    def _draw_shadows(self, img: np.ndarray, cam: Camera, state: SceneState) -> None:
        mask = np.zeros(img.shape[:2], np.uint8)
        for poly in self._shadow_polys(cam, state):
            cv2.fillPoly(mask, [_ipts(poly)], 255, cv2.LINE_AA, _SHIFT)
        k_size = max(3, int(0.01 * cam.scale(0.0)) | 1)
        mask = cv2.blur(cv2.blur(mask, (k_size, k_size)), (k_size, k_size))
        k = self.scene.appearance.shadow_strength
        inv = (255 - mask.astype(np.float32) * k).astype(np.uint8)
        cv2.multiply(img, cv2.merge([inv, inv, inv]), dst=img, scale=1.0 / 255)

    def _draw_objects(self, img: np.ndarray, cam: Camera, state: SceneState) -> None:
        order = np.argsort(state.poses[:, 2], kind="stable")
        for i in order:
            obj = self.scene.objects[int(i)]
            x, y, z, yaw = (float(v) for v in state.poses[int(i)])
            top = z + obj.height
            if cam.elevation - top < 0.02:
                continue
            if obj.shape == "ball":
                r = obj.size / 2
                c = cam.project(np.array([[x, y]]), z + r)[0]
                rp = r * cam.scale(z + r)
                cv2.circle(img, _ipt(c), int(rp * _ONE), _col(obj.rgb, 0.7), -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(img, _ipt(c - rp * 0.08), int(rp * 0.85 * _ONE), _col(obj.rgb), -1, cv2.LINE_AA,
                           _SHIFT)
                cv2.circle(img, _ipt(c - rp * 0.35), int(rp * 0.25 * _ONE), _col(obj.rgb, 1.25), -1,
                           cv2.LINE_AA, _SHIFT)
                continue
            fp = obj.footprint(x, y, yaw)
            bottom = cam.project(fp, z)
            top_pts = cam.project(fp, top)
            _fill(img, _hull(bottom, top_pts), _col(obj.rgb, 0.58))
            _fill(img, top_pts, obj.rgb)
            edge = max(1, int(round(0.0025 * cam.scale(top))))
            _outline(img, top_pts, _col(obj.rgb, 0.75), edge)
            if obj.shape == "mug":
                inner = cam.project(obj.footprint(x, y, yaw) * 0.72 + np.array([x, y]) * 0.28, top)
                _fill(img, inner, _col(obj.rgb, 0.45))
                fwd, _ = _axes(yaw)
                hc = np.array([x, y]) + fwd * obj.size * 0.62
                handle = cam.project(_rect(hc, fwd, np.array([-fwd[1], fwd[0]]), obj.size * 0.28,
                                           obj.size * 0.14), z + obj.height * 0.6)
                _fill(img, handle, _col(obj.rgb, 0.8))

    def _draw_gripper_top(self, img: np.ndarray, cam: Camera, g: np.ndarray) -> None:
        x, y, z, yaw, opening = (float(v) for v in g)
        fwd, lat = _axes(yaw)
        tcp = np.array([x, y])
        wrist = tcp - fwd * (FINGER_LEN + PALM_DEPTH + 0.02)
        elbow = arm_elbow(wrist)
        arm_z = z + 0.08
        base_p, elbow_p, wrist_p = cam.project(np.array([ARM_BASE, elbow, wrist]), arm_z)
        k = cam.scale(arm_z)
        for p0, p1, w in ((base_p, elbow_p, 0.07), (elbow_p, wrist_p, 0.055)):
            cv2.line(img, _ipt(p0), _ipt(p1), _col((96, 98, 106)), max(2, int(w * k)), cv2.LINE_AA, _SHIFT)
            cv2.line(img, _ipt(p0), _ipt(p1), _col((208, 210, 216)), max(1, int((w - 0.012) * k)), cv2.LINE_AA,
                     _SHIFT)
        for p, r in ((elbow_p, 0.042), (wrist_p, 0.034)):
            cv2.circle(img, _ipt(p), int(r * k * _ONE), _col((96, 98, 106)), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, _ipt(p), int((r - 0.01) * k * _ONE), _col((170, 172, 180)), -1, cv2.LINE_AA, _SHIFT)
        parts = _gripper_parts(tcp, fwd, lat, opening)
        palm, fingers = parts[0], parts[1:]
        palm_p = cam.project(palm, z + 0.03)
        _fill(img, palm_p, (62, 64, 72))
        _outline(img, palm_p, (30, 30, 34), max(1, int(0.003 * cam.scale(z))))
        for f in fingers:
            fp = cam.project(f, z + 0.01)
            _fill(img, fp, (44, 46, 52))
            _outline(img, fp, (150, 152, 160), max(1, int(0.0025 * cam.scale(z))))

    def _draw_fingers(self, img: np.ndarray, cam: Camera, g: np.ndarray) -> None:
        w, h = self.width, self.height
        k = self._wrist_focal / WRIST_CAM_ABOVE_TCP
        cx = w / 2
        ty = WRIST_TCP_ROW * h
        opening = float(g[4])
        tip_y = ty - 0.006 * k
        for side in (-1.0, 1.0):
            inner = cx + side * (opening / 2) * k
            outer_tip = inner + side * FINGER_W * k
            outer_bot = inner + side * FINGER_W * k * 2.1
            inner_bot = inner + side * FINGER_W * k * 0.35
            body = np.array([[inner, tip_y], [outer_tip, tip_y], [outer_bot, h + 2.0], [inner_bot, h + 2.0]])
            _fill(img, body, (58, 60, 68))
            pad = np.array([[inner, tip_y], [inner + side * FINGER_W * k * 0.28, tip_y],
                            [inner_bot + side * FINGER_W * k * 0.3, h + 2.0], [inner_bot, h + 2.0]])
            _fill(img, pad, (26, 26, 30))
            _outline(img, body, (150, 152, 162), max(1, int(round(1.2 * self._px))))
        palm_top = h - 0.07 * h
        palm = np.array([[cx - 0.36 * w, palm_top], [cx + 0.36 * w, palm_top], [cx + 0.42 * w, h + 2.0],
                         [cx - 0.42 * w, h + 2.0]])
        _fill(img, palm, (72, 74, 82))
        _outline(img, palm, (30, 30, 34), max(1, int(round(1.2 * self._px))))

    def _draw_occluder(self, img: np.ndarray, occ: Occluder) -> None:
        w, h = self.width, self.height
        side_pt = {
            "left": (np.array([-0.05 * w, occ.along * h]), np.array([1.0, 0.0])),
            "right": (np.array([1.05 * w, occ.along * h]), np.array([-1.0, 0.0])),
            "bottom": (np.array([occ.along * w, 1.05 * h]), np.array([0.0, -1.0])),
            "top": (np.array([occ.along * w, -0.05 * h]), np.array([0.0, 1.0])),
        }
        start, direction = side_pt[occ.side]
        c, s = math.cos(occ.angle), math.sin(occ.angle)
        direction = np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1]])
        span = w if occ.side in ("left", "right") else h
        end = start + direction * occ.reach * span * 1.05
        lat = np.array([-direction[1], direction[0]])
        thick = occ.width * min(w, h)
        if occ.kind == "cable":
            mid = (start + end) / 2 + lat * thick * 0.8
            curve = np.array([(1 - t) ** 2 * start + 2 * (1 - t) * t * mid + t * t * end
                              for t in np.linspace(0, 1, 24)])
            cv2.polylines(img, [_ipts(curve)], False, _col(occ.rgb), max(2, int(thick * 0.45)), cv2.LINE_AA,
                          _SHIFT)
            cv2.polylines(img, [_ipts(curve - lat * thick * 0.08)], False, _col(occ.rgb, 1.8),
                          max(1, int(thick * 0.08)), cv2.LINE_AA, _SHIFT)
            return
        sleeve = np.array([start - lat * thick * 0.55, end - lat * thick * 0.5, end + lat * thick * 0.5,
                           start + lat * thick * 0.55])
        _fill(img, sleeve, occ.rgb)
        hand_c = end + direction * thick * 0.55
        axes = (int(thick * 0.75 * _ONE), int(thick * 0.5 * _ONE))
        ang = math.degrees(math.atan2(direction[1], direction[0]))
        cv2.ellipse(img, _ipt(hand_c), axes, ang, 0, 360, _col(occ.skin), -1, cv2.LINE_AA, _SHIFT)
        for f in (-0.3, 0.0, 0.3):
            tip = hand_c + direction * thick * 0.75 + lat * thick * f
            cv2.ellipse(img, _ipt(tip), (int(thick * 0.3 * _ONE), int(thick * 0.11 * _ONE)), ang, 0, 360,
                        _col(occ.skin, 0.95), -1, cv2.LINE_AA, _SHIFT)
        thumb = hand_c + lat * thick * 0.55 + direction * thick * 0.2
        cv2.ellipse(img, _ipt(thumb), (int(thick * 0.28 * _ONE), int(thick * 0.12 * _ONE)), ang + 40, 0, 360,
                    _col(occ.skin, 0.92), -1, cv2.LINE_AA, _SHIFT)

    def _expose(self, img: np.ndarray, role: str, rng: np.random.Generator | None, flicker: float) -> np.ndarray:
        f = img.astype(np.float32)
        f *= self._gain[role]
        if flicker != 1.0:
            f *= np.float32(flicker)
        if rng is not None and self.scene.appearance.noise_sigma > 0:
            dy, dx, sign = rng.integers(0, _NOISE_PAD), rng.integers(0, _NOISE_PAD), rng.integers(0, 2)
            noise = self._noise[dy:dy + self.height, dx:dx + self.width]
            if sign:
                f -= noise
            else:
                f += noise
        np.clip(f, 0.0, 255.0, out=f)
        return f.astype(np.uint8)


def _axes(yaw: float) -> tuple[np.ndarray, np.ndarray]:
    fwd = np.array([math.cos(yaw), math.sin(yaw)])
    return fwd, np.array([-fwd[1], fwd[0]])


def _gripper_parts(tcp: np.ndarray, fwd: np.ndarray, lat: np.ndarray, opening: float) -> list[np.ndarray]:
    """Palm and two finger polygons in world coordinates (palm first)."""
    palm = _rect(tcp - fwd * (FINGER_LEN + PALM_DEPTH / 2), fwd, lat, PALM_DEPTH, PALM_W)
    parts = [palm]
    for side in (-1.0, 1.0):
        c = tcp - fwd * (FINGER_LEN / 2) + lat * side * (opening / 2 + FINGER_W / 2)
        parts.append(_rect(c, fwd, lat, FINGER_LEN, FINGER_W))
    return parts


@dataclass
class LayoutSampler:
    """Rejection sampler for non-overlapping object positions on the table."""

    rng: np.random.Generator
    area: tuple[float, float, float, float] = (0.08, 0.1, 0.92, 0.69)
    placed: list[tuple[float, float, float]] = field(default_factory=list)

    def free(self, x: float, y: float, r: float, margin: float = 0.03) -> bool:
        return all(math.hypot(x - px, y - py) >= r + pr + margin for px, py, pr in self.placed)

    def sample(self, r: float, *, margin: float = 0.03, avoid_zone: Zone | None = None,
               tries: int = 200) -> tuple[float, float] | None:
        x0, y0, x1, y1 = self.area
        for _ in range(tries):
            x = float(self.rng.uniform(x0 + r, x1 - r))
            y = float(self.rng.uniform(y0 + r, y1 - r))
            if avoid_zone is not None and avoid_zone.distance_outside(x, y) < r + 0.03:
                continue
            if self.free(x, y, r, margin):
                return x, y
        return None

    def add(self, x: float, y: float, r: float) -> None:
        self.placed.append((x, y, r))
