"""Scripted language-conditioned tabletop episodes with state-derived ground-truth progress.

Ground truth is a function of the simulated scene state (and the initial state, for
normalisation) only; see :func:`task_progress`. For a given ``(task_kind, seed)`` the
scene layout, appearance, camera jitter and sensor noise come from independent
random streams, so e.g. ``"occlusion"`` differs from ``"success"`` only in the
occluded frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .scene import (
    ARM_BASE,
    BLOCK_COLORS,
    COLORS,
    DEFAULT_SIZE,
    DISTRACTOR_COLORS,
    DISTRACTOR_SHAPES,
    MAX_OPENING,
    ROLES,
    Appearance,
    LayoutSampler,
    Occluder,
    Scene,
    SceneObject,
    SceneRenderer,
    SceneState,
    Zone,
    parse_size,
)

TASK_KINDS: tuple[str, ...] = ("push", "reach", "place", "stack")
OUTCOMES: tuple[str, ...] = ("success", "failure", "partial_regression", "wrong_object", "hover", "occlusion")
GOAL_TEMPLATES: dict[str, str] = {
    "push": "push the {target} block into the {reference} zone",
    "reach": "move the gripper to the {target} block",
    "place": "put the {target} block in the {reference} zone",
    "stack": "put the {target} block on the {reference} block",
}
DEFAULT_START_NS = 1_700_000_000_000_000_000

TRAVEL_Z = 0.15
HOVER_Z = 0.1
PUSH_Z = 0.022
PUSH_GAP = 0.004
REACH_ABOVE = 0.03
REACH_TOL = 0.02
GRASP_TOL = 0.015
LIFT_H = 0.08
STACK_TOL = 0.3
_MAX_ATTEMPTS = 60


def frame_stamp_ns(index: int, fps: float, start_ns: int = DEFAULT_START_NS) -> int:
    """Timestamp of frame ``index``: ``start_ns + round(index * 1e9 / fps)``."""
    return int(start_ns) + int(round(index * 1e9 / float(fps)))


@dataclass
class Episode:
    """A rendered episode: per-frame camera images and ground-truth progress in [0, 1]."""

    goal: str
    fps: float
    frames: list[dict[str, np.ndarray]]
    progress: np.ndarray
    outcome: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.frames[0]) if self.frames else ()

    def stamps_ns(self, start_ns: int = DEFAULT_START_NS) -> list[int]:
        """Per-frame timestamps as written by the bag writer."""
        return [frame_stamp_ns(i, self.fps, start_ns) for i in range(len(self.frames))]


@dataclass(frozen=True)
class TaskSpec:
    """What the goal string asks for: ``reference`` is an object index (stack) or -1 (zone)."""

    kind: str
    target: int
    reference: int
    goal: str


def _ratio(d: float, d0: float, tol: float) -> float:
    return float(np.clip(1.0 - max(d - tol, 0.0) / max(d0 - tol, 1e-6), 0.0, 1.0))


def _half_extent(obj: SceneObject, yaw: float) -> float:
    if obj.shape == "block":
        return obj.size / 2 * (abs(math.cos(yaw)) + abs(math.sin(yaw)))
    return obj.size / 2


def _push_point(scene: Scene, obj: SceneObject, pose: np.ndarray) -> np.ndarray:
    assert scene.zone is not None
    v = np.array([scene.zone.cx - pose[0], scene.zone.cy - pose[1]])
    n = float(np.hypot(*v))
    u = v / n if n > 1e-9 else np.array([0.0, 1.0])
    return pose[:2] - u * (obj.size / 2 + PUSH_GAP)


def _goal_distance(task: TaskSpec, scene: Scene, state: SceneState) -> float:
    """Distance of the target object to its goal region (0 once inside it)."""
    obj = scene.objects[task.target]
    pa = state.poses[task.target]
    if task.kind in ("push", "place"):
        assert scene.zone is not None
        return scene.zone.distance_inside(float(pa[0]), float(pa[1]), _half_extent(obj, float(pa[3])))
    pb = state.poses[task.reference]
    half = STACK_TOL * scene.objects[task.reference].size
    return math.hypot(max(abs(pa[0] - pb[0]) - half, 0.0), max(abs(pa[1] - pb[1]) - half, 0.0))


def task_progress(task: TaskSpec, scene: Scene, state: SceneState, initial: SceneState) -> tuple[float, str]:
    """Ground-truth progress in [0, 1] and the phase name for one state.

    Phases and weights: push = reach 0.2 (to the pre-push pose) + transport 0.75, 1 once
    the block is fully inside the zone; place/stack = reach 0.2 + grasp 0.1 + transport
    0.6 + lowering 0.07, 1 once released at rest in the goal region; reach = normalised
    distance of the tool centre point to just above the block.
    """
    a = task.target
    obj = scene.objects[a]
    pa, pa0 = state.poses[a], initial.poses[a]
    g, g0 = state.gripper, initial.gripper
    if task.kind == "reach":
        goal = np.array([pa[0], pa[1], pa[2] + obj.height + REACH_ABOVE])
        goal0 = np.array([pa0[0], pa0[1], pa0[2] + obj.height + REACH_ABOVE])
        r = _ratio(float(np.linalg.norm(g[:3] - goal)), float(np.linalg.norm(g0[:3] - goal0)), REACH_TOL)
        return r, ("done" if r >= 1.0 else "reach")

    din = _goal_distance(task, scene, state)
    din0 = _goal_distance(task, scene, initial)
    transport = float(np.clip(1.0 - din / max(din0, 1e-6), 0.0, 1.0))
    inside = din <= 1e-9

    if task.kind == "push":
        p, p0 = _push_point(scene, obj, pa), _push_point(scene, obj, pa0)
        d = math.hypot(float(np.hypot(*(g[:2] - p))), float(g[2] - PUSH_Z))
        d0 = math.hypot(float(np.hypot(*(g0[:2] - p0))), float(g0[2] - PUSH_Z))
        if inside and pa[2] < 0.005:
            return 1.0, "done"
        reach = _ratio(d, d0, REACH_TOL)
        return 0.2 * reach + 0.75 * transport, ("push" if transport > 0.01 else "reach")

    rest_z = 0.0
    if task.kind == "stack":
        rest_z = float(state.poses[task.reference][2] + scene.objects[task.reference].height)
    held = state.holding == a
    if not held and inside and abs(pa[2] - rest_z) < 0.004:
        return 1.0, "done"
    if held:
        lower = float(np.clip(1.0 - (pa[2] - rest_z) / LIFT_H, 0.0, 1.0)) if inside else 0.0
        lifted = pa[2] - pa0[2] > 0.01
        phase = "place" if inside else ("transport" if (transport > 0.01 or lifted) else "grasp")
        return 0.3 + 0.6 * transport + 0.07 * lower, phase
    grasp_pt = np.array([pa[0], pa[1], pa[2] + obj.height])
    grasp_pt0 = np.array([pa0[0], pa0[1], pa0[2] + obj.height])
    reach = _ratio(float(np.linalg.norm(g[:3] - grasp_pt)), float(np.linalg.norm(g0[:3] - grasp_pt0)), GRASP_TOL)
    return 0.2 * reach + 0.6 * transport, "reach"


@dataclass
class _Segment:
    duration: float
    g0: np.ndarray
    g1: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    h0: int
    h1: int
    attached: dict[int, np.ndarray]
    bump: float

    def at(self, u: float) -> SceneState:
        e = u * u * (3.0 - 2.0 * u)
        g = self.g0 + (self.g1 - self.g0) * e
        if self.bump:
            d = self.g1[:2] - self.g0[:2]
            n = float(np.hypot(*d))
            if n > 1e-9:
                g[:2] += np.array([-d[1], d[0]]) / n * self.bump * math.sin(math.pi * u)
        p = self.p0 + (self.p1 - self.p0) * e
        for idx, off in self.attached.items():
            p[idx, :3] = g[:3] + off
        return SceneState(g, p, self.h1 if e >= 0.5 else self.h0)


_KEEP = object()


class _Timeline:
    """Builds a piecewise-smooth trajectory of gripper and object poses."""

    def __init__(self, state: SceneState, rng: np.random.Generator) -> None:
        self.g = state.gripper.astype(np.float64).copy()
        self.p = state.poses.astype(np.float64).copy()
        self.h = state.holding
        self.rng = rng
        self.segments: list[_Segment] = []

    def go(self, duration: float, *, x: float | None = None, y: float | None = None, z: float | None = None,
           yaw: float | None = None, opening: float | None = None, carry: int | None = None,
           objects: dict[int, Sequence[float]] | None = None, hold: Any = _KEEP, bump: float = 0.0) -> None:
        g0, p0 = self.g, self.p
        g1 = g0.copy()
        for i, v in enumerate((x, y, z)):
            if v is not None:
                g1[i] = v
        if yaw is not None:
            g1[3] = g0[3] + (yaw - g0[3] + math.pi) % (2 * math.pi) - math.pi
        if opening is not None:
            g1[4] = opening
        p1 = p0.copy()
        attached = {}
        if carry is not None:
            off = p0[carry, :3] - g0[:3]
            attached[carry] = off
            p1[carry, :3] = g1[:3] + off
        for idx, pose in (objects or {}).items():
            p1[idx] = np.asarray(pose, dtype=np.float64)
        h1 = self.h if hold is _KEEP else int(hold)
        scale = float(self.rng.uniform(0.85, 1.2))
        self.segments.append(_Segment(duration * scale, g0, g1, p0, p1, self.h, h1, attached, bump))
        self.g, self.p, self.h = g1, p1, h1

    def travel(self, x: float, y: float, z: float = TRAVEL_Z, **kw: Any) -> None:
        dist = math.hypot(x - self.g[0], y - self.g[1]) + abs(z - self.g[2])
        bump = float(self.rng.uniform(-0.03, 0.03)) * min(1.0, dist / 0.2)
        self.go(0.35 + 2.4 * dist, x=x, y=y, z=z, bump=bump, **kw)

    def wait(self, duration: float = 0.4) -> None:
        self.go(duration)

    def sample(self, n: int) -> list[SceneState]:
        bounds = np.cumsum([s.duration for s in self.segments])
        total = float(bounds[-1])
        out = []
        for i in range(n):
            t = total * i / (n - 1)
            k = min(int(np.searchsorted(bounds, t, side="left")), len(self.segments) - 1)
            start = bounds[k] - self.segments[k].duration
            u = float(np.clip((t - start) / self.segments[k].duration, 0.0, 1.0))
            out.append(self.segments[k].at(u))
        return out


def _natural_yaw(x: float, y: float) -> float:
    return math.atan2(y - ARM_BASE[1], x - ARM_BASE[0])


def _grasp_yaw(block_yaw: float, x: float, y: float) -> float:
    nat = _natural_yaw(x, y)
    cands = [block_yaw + k * math.pi / 2 for k in range(-4, 5)]
    return min(cands, key=lambda c: abs((c - nat + math.pi) % (2 * math.pi) - math.pi))


@dataclass
class _Layout:
    scene: Scene
    state: SceneState
    task: TaskSpec
    other: int
    home: tuple[float, float]


def _pick_colors(rng: np.random.Generator, kind: str, target: str | None,
                 reference: str | None) -> tuple[str, str | None, str, list[str]]:
    """Return (target block, base block or None, zone colour, other block colours)."""
    for c in (target, reference):
        if c is not None and c not in COLORS:
            raise ValueError(f"unknown colour {c!r}; choose from {sorted(COLORS)}")
    palette = [str(c) for c in rng.permutation(BLOCK_COLORS)]
    used = [c for c in (target, reference) if c]
    if target is not None and target == reference:
        raise ValueError("target and reference colours must differ")
    free = [c for c in palette if c not in used]
    target = target or free.pop(0)
    base = None
    if kind == "stack":
        base = reference or free.pop(0)
        zone = free.pop(0)
    elif kind in ("push", "place"):
        zone = reference or free.pop(0)
    else:
        zone = free.pop(0)
    free = [c for c in free if c not in (target, base, zone)]
    n_other = int(rng.integers(1, 3))
    return target, base, zone, free[:n_other]


def _sample_layout(rng: np.random.Generator, kind: str, target_color: str | None,
                   reference_color: str | None) -> _Layout | None:
    appearance = Appearance.random(rng)
    tgt, base, zone_c, others = _pick_colors(rng, kind, target_color, reference_color)
    sampler = LayoutSampler(rng)
    hx, hy = float(rng.uniform(0.07, 0.095)), float(rng.uniform(0.07, 0.095))
    x0, y0, x1, y1 = sampler.area
    zone = Zone(zone_c, COLORS[zone_c], float(rng.uniform(x0 + hx, x1 - hx)), float(rng.uniform(0.22 + hy, y1 - hy)),
                hx, hy)
    home = (0.5 + float(rng.uniform(-0.22, 0.22)), float(rng.uniform(0.15, 0.2)))
    sampler.add(home[0], home[1], 0.06)

    objects: list[SceneObject] = []
    poses: list[list[float]] = []

    def block(color: str) -> SceneObject:
        return SceneObject(f"{color} block", "block", color, _jitter_rgb(rng, COLORS[color]),
                           float(rng.uniform(0.058, 0.072)))

    def add(obj: SceneObject, xy: tuple[float, float], yaw: float) -> int:
        objects.append(obj)
        poses.append([xy[0], xy[1], 0.0, yaw])
        sampler.add(xy[0], xy[1], obj.radius * 1.42)
        return len(objects) - 1

    def push_start(obj: SceneObject) -> tuple[tuple[float, float], float] | None:
        for _ in range(80):
            ang = math.pi / 2 + float(rng.uniform(-1.75, 1.75))
            u = np.array([math.cos(ang), math.sin(ang)])
            ext = abs(u[0]) * hx + abs(u[1]) * hy
            dist = ext + obj.size / 2 + float(rng.uniform(0.1, 0.26))
            x, y = zone.cx - u[0] * dist, zone.cy - u[1] * dist
            px, py = x - u[0] * 0.06, y - u[1] * 0.06
            r = obj.radius * 1.42
            if not (x0 + r <= x <= x1 - r and y0 + r <= y <= y1 - r and x0 <= px <= x1 and y0 <= py <= y1):
                continue
            if sampler.free(x, y, r, 0.04) and sampler.free(px, py, 0.03, 0.03):
                return (x, y), ang + float(rng.uniform(-0.08, 0.08))
        return None

    target_obj = block(tgt)
    if kind == "push":
        res = push_start(target_obj)
        if res is None:
            return None
        a = add(target_obj, *res)
    else:
        xy = sampler.sample(target_obj.radius * 1.42, avoid_zone=zone)
        if xy is None:
            return None
        a = add(target_obj, xy, float(rng.uniform(-0.35, 0.35)))
    ref = -1
    if base is not None:
        base_obj = block(base)
        xy = sampler.sample(base_obj.radius * 1.42, margin=0.06, avoid_zone=zone)
        if xy is None:
            return None
        ref = add(base_obj, xy, float(rng.uniform(-0.3, 0.3)))
    other = -1
    for c in others:
        obj = block(c)
        if kind == "push" and other < 0:
            res = push_start(obj)
            if res is None:
                return None
            idx = add(obj, *res)
        else:
            xy = sampler.sample(obj.radius * 1.42, avoid_zone=zone)
            if xy is None:
                return None
            idx = add(obj, xy, float(rng.uniform(-0.4, 0.4)))
        if other < 0:
            other = idx
    n_distract = int(rng.integers(1, 4))
    names: set[str] = set()
    for _ in range(n_distract):
        shape = str(rng.choice(DISTRACTOR_SHAPES))
        color = str(rng.choice(DISTRACTOR_COLORS))
        name = f"{color} {shape}"
        if name in names:
            continue
        names.add(name)
        obj = SceneObject(name, shape, color, _jitter_rgb(rng, COLORS[color]), float(rng.uniform(0.045, 0.07)))
        xy = sampler.sample(obj.radius * 1.42, avoid_zone=zone)
        if xy is not None:
            add(obj, xy, float(rng.uniform(-math.pi, math.pi)))

    scene = Scene(tuple(objects), zone, appearance)
    gx, gy = home
    gripper = np.array([gx, gy, TRAVEL_Z + float(rng.uniform(-0.01, 0.02)), _natural_yaw(gx, gy),
                        float(rng.uniform(0.4, 1.0)) * MAX_OPENING])
    state = SceneState(gripper, np.asarray(poses, dtype=np.float64), -1)
    ref_color = base if kind == "stack" else zone_c
    goal = GOAL_TEMPLATES[kind].format(target=tgt, reference=ref_color)
    return _Layout(scene, state, TaskSpec(kind, a, ref, goal), other, home)


def _jitter_rgb(rng: np.random.Generator, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    j = rng.integers(-14, 15, size=3) + int(rng.integers(-10, 11))
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, j))  # type: ignore[return-value]


def _script(lay: _Layout, outcome: str, rng: np.random.Generator) -> tuple[_Timeline, set[int], str]:
    """Build the trajectory; returns (timeline, indices the gripper may touch, variant)."""
    scene, task = lay.scene, lay.task
    tl = _Timeline(lay.state, rng)
    tl.wait(float(rng.uniform(0.2, 0.6)))
    a, w = task.target, lay.other
    variant = outcome
    involved = {a}
    if task.reference >= 0:
        involved.add(task.reference)
    kind = task.kind
    if outcome == "occlusion":
        outcome = "success"
    hx, hy = lay.home

    def pose(i: int) -> np.ndarray:
        return tl.p[i]

    def push(i: int, *, back: float = 0.0) -> None:
        zone = scene.zone
        assert zone is not None
        obj = scene.objects[i]
        p = pose(i).copy()
        margin = _half_extent(obj, float(p[3]))
        dest = np.array([zone.cx, zone.cy]) + rng.uniform(-0.35, 0.35, size=2) * np.array(
            [max(zone.hx - margin, 0.0), max(zone.hy - margin, 0.0)])
        v = dest - p[:2]
        u = v / float(np.hypot(*v))
        start = p[:2] - u * (obj.size / 2 + PUSH_GAP)
        yaw = math.atan2(u[1], u[0])
        tl.travel(float(start[0]), float(start[1]), yaw=yaw, opening=0.012)
        tl.go(0.6, z=PUSH_Z)
        end = start + v
        tl.go(0.6 + 5.0 * float(np.hypot(*v)), x=float(end[0]), y=float(end[1]), carry=i)
        tl.wait(float(rng.uniform(0.2, 0.5)))
        if back > 0:
            ret = end - v * back
            tl.go(0.5 + 4.0 * float(np.hypot(*v)) * back, x=float(ret[0]), y=float(ret[1]), carry=i)
        tl.go(0.5, z=TRAVEL_Z)

    def pick(i: int) -> None:
        obj = scene.objects[i]
        p = pose(i)
        yaw = _grasp_yaw(float(p[3]), float(p[0]), float(p[1]))
        tl.travel(float(p[0]), float(p[1]), yaw=yaw, opening=MAX_OPENING)
        tl.go(0.7, z=float(p[2] + obj.height))
        tl.go(0.45, opening=obj.size - 0.002, hold=i)
        tl.go(0.6, z=TRAVEL_Z, carry=i)

    def put(i: int, xy: np.ndarray, rest_z: float) -> None:
        obj = scene.objects[i]
        tl.travel(float(xy[0]), float(xy[1]), carry=i)
        tl.go(0.8, z=rest_z + obj.height, carry=i)
        tl.go(0.4, opening=MAX_OPENING, hold=-1)
        tl.go(0.6, z=TRAVEL_Z)

    def place_target(i: int) -> tuple[np.ndarray, float]:
        obj = scene.objects[i]
        if kind == "stack":
            b = pose(task.reference)
            base = scene.objects[task.reference]
            ang = float(rng.uniform(-math.pi, math.pi))
            off = base.size * float(rng.uniform(0.14, 0.22)) * np.array([math.cos(ang), math.sin(ang)])
            return b[:2] + off, float(b[2] + base.height)
        zone = scene.zone
        assert zone is not None
        m = obj.size / 2 * 1.42
        off = rng.uniform(-0.35, 0.35, size=2) * np.array([max(zone.hx - m, 0.0), max(zone.hy - m, 0.0)])
        return np.array([zone.cx, zone.cy]) + off, 0.0

    def retreat(frac: float = 1.0) -> None:
        g = tl.g
        tl.travel(float(g[0] + (hx - g[0]) * frac + rng.uniform(-0.05, 0.05)),
                  float(g[1] + (hy - g[1]) * frac + rng.uniform(-0.02, 0.03)))

    def hover(xy: Sequence[float], z: float = HOVER_Z) -> None:
        tl.travel(float(xy[0]), float(xy[1]), z=z)
        for _ in range(int(rng.integers(2, 4))):
            d = rng.uniform(-0.025, 0.025, size=2)
            tl.go(0.5, x=float(xy[0] + d[0]), y=float(xy[1] + d[1]), z=z + float(rng.uniform(-0.015, 0.01)))
        tl.wait(0.5)

    def goal_xy() -> np.ndarray:
        if kind == "stack":
            return pose(task.reference)[:2].copy()
        zone = scene.zone
        assert zone is not None
        return np.array([zone.cx, zone.cy])

    if kind == "reach":
        def go_to(i: int) -> None:
            p = pose(i)
            tl.travel(float(p[0]), float(p[1]), yaw=_natural_yaw(float(p[0]), float(p[1])))
            tl.go(0.7, z=float(p[2] + scene.objects[i].height + REACH_ABOVE))
            tl.wait(float(rng.uniform(0.4, 0.8)))

        if outcome == "success":
            go_to(a)
        elif outcome == "partial_regression":
            go_to(a)
            retreat(float(rng.uniform(0.75, 1.0)))
            tl.wait(0.3)
        elif outcome == "wrong_object":
            involved = {w}
            go_to(w)
        elif outcome == "hover":
            involved = set()
            hover(goal_xy())
        else:
            variant = _failure(tl, rng, pose(a)[:2], lay.home, (0.15, 0.3))
            involved = set()
        return tl, involved, variant

    if outcome == "success":
        if kind == "push":
            push(a)
        else:
            pick(a)
            put(a, *place_target(a))
        retreat()
        tl.wait(float(rng.uniform(0.2, 0.5)))
    elif outcome == "partial_regression":
        if kind == "push":
            push(a, back=float(rng.uniform(0.7, 0.9)))
            retreat()
        else:
            pick(a)
            put(a, *place_target(a))
            tl.wait(0.3)
            p = pose(a).copy()
            if kind == "stack":
                b = pose(task.reference)
                ang = float(rng.uniform(-math.pi, math.pi))
                d = (scene.objects[a].size + scene.objects[task.reference].size) / 2 * 1.45 + float(
                    rng.uniform(0.03, 0.06))
                dest = [b[0] + d * math.cos(ang), b[1] + d * math.sin(ang), 0.0, p[3] + float(rng.uniform(0.3, 0.8))]
                tl.go(0.5, objects={a: dest})
            else:
                zone = scene.zone
                assert zone is not None
                dest = _slide_out(zone, p, scene.objects[a], rng)
                tl.go(1.0, objects={a: dest})
            retreat()
        tl.wait(0.4)
    elif outcome == "wrong_object":
        involved = {w} | ({task.reference} if task.reference >= 0 else set())
        if kind == "push":
            push(w)
        else:
            pick(w)
            put(w, *place_target(w))
        retreat()
        tl.wait(0.3)
    elif outcome == "hover":
        involved = {task.reference} if task.reference >= 0 else set()
        tl.go(0.3, opening=MAX_OPENING)
        hover(goal_xy(), z=HOVER_Z if kind == "push" else HOVER_Z - 0.01)
    else:
        choice = int(rng.integers(0, 3)) if kind != "push" else int(rng.integers(1, 3))
        if choice == 0:
            variant = "slip"
            obj = scene.objects[a]
            p0 = pose(a).copy()
            pick(a)
            tl.go(0.25, z=TRAVEL_Z - 0.04, carry=a)
            drop = [p0[0] + float(rng.uniform(-0.01, 0.01)), p0[1] + float(rng.uniform(-0.01, 0.01)), 0.0,
                    p0[3] + float(rng.uniform(-0.3, 0.3))]
            tl.go(0.35, objects={a: drop}, hold=-1, opening=obj.size + 0.02)
            tl.wait(0.6)
            retreat()
        else:
            variant = _failure(tl, rng, pose(a)[:2], lay.home, (0.3, 0.55))
            involved = set()
    return tl, involved, variant


def _failure(tl: _Timeline, rng: np.random.Generator, target: np.ndarray, home: tuple[float, float],
             frac_range: tuple[float, float]) -> str:
    g = tl.g.copy()
    if rng.random() < 0.5:
        frac = float(rng.uniform(*frac_range))
        tl.travel(float(g[0] + (target[0] - g[0]) * frac), float(g[1] + (target[1] - g[1]) * frac))
        tl.wait(float(rng.uniform(0.5, 1.0)))
        tl.travel(home[0] + float(rng.uniform(-0.03, 0.03)), home[1] + float(rng.uniform(-0.02, 0.02)))
        tl.wait(0.4)
        return "give_up"
    away = np.array([g[0], g[1]]) - target
    away /= max(float(np.hypot(*away)), 1e-6)
    for _ in range(int(rng.integers(2, 4))):
        d = away * rng.uniform(0.0, 0.05) + rng.uniform(-0.06, 0.06, size=2)
        tl.travel(float(np.clip(home[0] + d[0], 0.1, 0.9)), float(np.clip(home[1] + d[1], 0.1, 0.3)),
                  z=TRAVEL_Z + float(rng.uniform(-0.02, 0.02)), opening=float(rng.uniform(0.2, 1.0)) * MAX_OPENING)
        tl.wait(float(rng.uniform(0.2, 0.6)))
    return "wander"


def _slide_out(zone: Zone, pose: np.ndarray, obj: SceneObject, rng: np.random.Generator) -> list[float]:
    ang = float(rng.uniform(-math.pi, math.pi))
    u = np.array([math.cos(ang), math.sin(ang)])
    t = 0.0
    while zone.distance_outside(pose[0] + u[0] * t, pose[1] + u[1] * t) < obj.size * 0.75 + 0.03:
        t += 0.005
    return [float(pose[0] + u[0] * t), float(pose[1] + u[1] * t), 0.0, float(pose[3] + rng.uniform(-0.4, 0.4))]


def _collides(scene: Scene, states: list[SceneState], involved: set[int]) -> bool:
    radii = np.array([o.radius * 1.1 for o in scene.objects])
    p_init = states[0].poses
    x0, y0, x1, y1 = 0.03, 0.03, 0.97, 0.72
    for st in states:
        poses = st.poses
        on_table = poses[:, 2] < 0.01
        moved = np.any(np.abs(poses[:, :2] - p_init[:, :2]) > 1e-6, axis=1)
        for i in np.flatnonzero(moved):
            if not (x0 <= poses[i, 0] <= x1 and y0 <= poses[i, 1] <= y1):
                return True
            if not on_table[i]:
                continue
            d = np.hypot(poses[:, 0] - poses[i, 0], poses[:, 1] - poses[i, 1])
            clash = on_table & (d < radii + radii[i])
            clash[i] = False
            if clash.any():
                return True
        g = st.gripper
        if g[2] < 0.095:
            d = np.hypot(poses[:, 0] - g[0], poses[:, 1] - g[1])
            near = on_table & (d < radii + 0.065)
            for j in involved:
                near[j] = False
            if st.holding >= 0:
                near[st.holding] = False
            if near.any():
                return True
    return False


def _shape_ok(outcome: str, p: np.ndarray) -> bool:
    if outcome in ("success", "occlusion"):
        return bool(p[-1] >= 0.95 and np.min(np.diff(p)) >= -0.05 and p[0] <= 0.1)
    if outcome in ("failure", "wrong_object", "hover"):
        return bool(p[-1] <= 0.3 and p.max() <= 0.35)
    if outcome == "partial_regression":
        k = int(np.argmax(p))
        return bool(p[k] >= 0.6 and p[-1] <= p[k] - 0.3 and k < len(p) - 1)
    raise ValueError(outcome)


def _camera_jitter(rng: np.random.Generator, n: int, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    s = width / 320.0
    ext = np.zeros((n, 3))
    cur = rng.normal(0.0, [1.0 * s, 1.0 * s, 0.002])
    for i in range(n):
        cur = 0.85 * cur + rng.normal(0.0, [0.45 * s, 0.45 * s, 0.0012])
        ext[i] = np.clip(cur, [-3 * s, -3 * s, -0.008], [3 * s, 3 * s, 0.008])
    wrist = np.column_stack([rng.normal(0.0, 0.9 * s, n), rng.normal(0.0, 0.9 * s, n), rng.normal(0.0, 0.006, n)])
    flicker = np.clip(1.0 + rng.normal(0.0, 0.012, n), 0.96, 1.04)
    return {"external": ext, "wrist": wrist}, flicker


def _occlusion_schedule(rng: np.random.Generator, n: int) -> dict[str, dict[int, Occluder]]:
    length = max(2, int(round(n * rng.uniform(0.2, 0.32))))
    lo = int(round(0.2 * n))
    hi = max(lo + 1, n - length - int(round(0.1 * n)))
    start = int(rng.integers(lo, hi))
    side = str(rng.choice(["left", "right", "bottom"]))
    sleeve = [(48, 58, 92), (150, 40, 40), (40, 40, 44), (90, 110, 70), (200, 200, 204)][int(rng.integers(0, 5))]
    skin = [(232, 190, 160), (198, 146, 108), (140, 96, 66), (96, 66, 46)][int(rng.integers(0, 4))]
    base = dict(kind="arm", side=side, along=float(rng.uniform(0.35, 0.65)), reach=float(rng.uniform(0.45, 0.6)),
                width=float(rng.uniform(0.28, 0.38)), angle=float(rng.uniform(-0.3, 0.3)), rgb=sleeve, skin=skin)
    out: dict[str, dict[int, Occluder]] = {"external": {}, "wrist": {}}
    for k, i in enumerate(range(start, min(n, start + length))):
        ramp = min(1.0, (k + 1) / 2, (length - k) / 2)
        occ = dict(base)
        occ["reach"] = base["reach"] * (0.6 + 0.4 * ramp) + float(rng.normal(0.0, 0.01))
        occ["along"] = base["along"] + float(rng.normal(0.0, 0.01))
        out["external"][i] = Occluder(**occ)  # type: ignore[arg-type]
    w_len = max(1, length // 2)
    w_start = start + int(rng.integers(0, max(1, length - w_len)))
    w_side = str(rng.choice(["left", "right"]))
    for i in range(w_start, min(n, w_start + w_len)):
        out["wrist"][i] = Occluder("cable", side=w_side, along=float(rng.uniform(0.15, 0.45)),
                                   reach=float(rng.uniform(0.8, 1.05)), width=0.3, angle=float(rng.uniform(0.1, 0.5)),
                                   rgb=(24, 24, 28))
    return out


def generate_episode(
    task_kind: str = "push",
    outcome: str = "success",
    seed: int = 0,
    n_frames: int = 60,
    fps: float = 15.0,
    size: str | Sequence[int] = DEFAULT_SIZE,
    *,
    target_color: str | None = None,
    reference_color: str | None = None,
) -> Episode:
    """Generate a deterministic scripted episode.

    ``size`` is ``(width, height)`` or ``"WxH"``. ``reference_color`` is the zone colour
    (push/place) or the base block colour (stack). Raises ``ValueError`` on bad arguments.
    """
    if task_kind not in TASK_KINDS:
        raise ValueError(f"task_kind must be one of {TASK_KINDS}, got {task_kind!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    if int(n_frames) < 2:
        raise ValueError("n_frames must be >= 2")
    if not fps > 0:
        raise ValueError("fps must be > 0")
    n = int(n_frames)
    width, height = parse_size(size)
    streams = np.random.SeedSequence([int(seed), TASK_KINDS.index(task_kind)]).spawn(5)
    layout_rng, script_rng, jitter_rng, noise_rng, occ_rng = (np.random.default_rng(s) for s in streams)

    lay: _Layout | None = None
    states: list[SceneState] = []
    progress = np.zeros(n)
    phases: list[str] = []
    variant = outcome
    attempts = 0
    validated = False
    for attempts in range(1, _MAX_ATTEMPTS + 1):  # noqa: B007 - the count is recorded after the loop
        cand = _sample_layout(layout_rng, task_kind, target_color, reference_color)
        if cand is None:
            continue
        tl, involved, variant = _script(cand, outcome, script_rng)
        cand_states = tl.sample(n)
        scored = [task_progress(cand.task, cand.scene, st, cand_states[0]) for st in cand_states]
        cand_p = np.array([s[0] for s in scored])
        lay, states, progress, phases = cand, cand_states, cand_p, [s[1] for s in scored]
        if _shape_ok(outcome, cand_p) and not _collides(cand.scene, tl.sample(max(n, 90)), involved):
            validated = True
            break
    if lay is None:
        raise RuntimeError("could not sample a scene layout")

    renderer = SceneRenderer(lay.scene, (width, height))
    jitter, flicker = _camera_jitter(jitter_rng, n, width)
    occlusion = _occlusion_schedule(occ_rng, n) if outcome == "occlusion" else {"external": {}, "wrist": {}}
    frames = []
    for i, st in enumerate(states):
        occ = {r: [occlusion[r][i]] for r in ROLES if i in occlusion[r]}
        frames.append(renderer.render(st, rng=noise_rng, jitter={r: jitter[r][i] for r in ROLES}, occluders=occ,
                                      flicker=float(flicker[i])))

    scene = lay.scene
    task = lay.task
    assert scene.zone is not None
    meta: dict[str, Any] = {
        "task_kind": task_kind,
        "seed": int(seed),
        "size": (width, height),
        "variant": variant,
        "target": scene.objects[task.target].color,
        "reference": scene.objects[task.reference].color if task.reference >= 0 else scene.zone.color,
        "zone_color": scene.zone.color,
        "wrong_object": scene.objects[lay.other].color if lay.other >= 0 else None,
        "objects": [{"name": o.name, "shape": o.shape, "color": o.color, "size": o.size} for o in scene.objects],
        "table": scene.appearance.table,
        "gripper": np.stack([s.gripper for s in states]),
        "poses": np.stack([s.poses for s in states]),
        "holding": [int(s.holding) for s in states],
        "phase": phases,
        "occluded": {r: sorted(occlusion[r]) for r in ROLES},
        "validated": validated,
        "attempts": attempts,
        "scene": scene,
        "task": task,
    }
    return Episode(goal=task.goal, fps=float(fps), frames=frames, progress=progress.astype(np.float64),
                   outcome=outcome, meta=meta)


def relabel_candidates(ep: Episode) -> list[int]:
    """Indices of the blocks ``ep``'s goal could name instead of its target: every block but the
    target and (stack) the base block."""
    task = ep.meta["task"]
    return [i for i, o in enumerate(ep.meta["objects"])
            if o["shape"] == "block" and i not in (task.target, task.reference)]


def relabel_goal(ep: Episode, target: int) -> Episode:
    """``ep`` with the goal naming block ``target`` instead (hindsight goal relabelling): the same
    frames and trajectory, the goal string, task, progress and phases recomputed for the new target
    by :func:`task_progress`. Relabelling a success to another block gives a moved-wrong-object
    episode with the very same images, and a wrong-object episode to the block it moved gives a
    success, so only the goal's words tell the two apart. Frames are shared, not copied."""
    if target not in relabel_candidates(ep):
        raise ValueError(f"object {target} is not a block the goal could name instead "
                         f"(candidates: {relabel_candidates(ep)})")
    meta = ep.meta
    old, scene = meta["task"], meta["scene"]
    colour = scene.objects[target].color
    reference = scene.objects[old.reference].color if old.reference >= 0 else scene.zone.color
    goal = GOAL_TEMPLATES[old.kind].format(target=colour, reference=reference)
    task = TaskSpec(old.kind, target, old.reference, goal)
    states = [SceneState(g, p, int(h)) for g, p, h in zip(meta["gripper"], meta["poses"], meta["holding"])]
    scored = [task_progress(task, scene, st, states[0]) for st in states]
    new_meta = dict(meta, task=task, target=colour, phase=[s[1] for s in scored], relabelled_from=meta["target"],
                    wrong_object=None)
    return Episode(goal=task.goal, fps=ep.fps, frames=ep.frames, progress=np.array([s[0] for s in scored]),
                   outcome=ep.outcome, meta=new_meta)
