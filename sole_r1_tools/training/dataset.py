"""Per-step training examples synthesized from scripted episodes, in the scorer's own protocol.

Each example is exactly what :class:`~sole_r1_ros.core.scorer.ProgressScorer` would send for one
step of an episode: the composite of (first, previous scored, current) frames built by
:func:`~sole_r1_ros.core.composite.compose` and the prompt built by the protocol templates and the
checkpoint's chat template (``TransformersBackend.prompt_text``). The previous progress is the
true one (teacher forcing), optionally noised. The target reply is short reasoning generated
from the scene's true state (what moved between the previous and current frames, contact,
where the target is, what remains) followed by the true progress percentage::

    <think>The gripper moved toward the red block. No block moved. The red block is far from
    the green zone. Progress went up from 5%. Next: push the red block into the zone.</think>
    <answer>12%</answer>

Images are cached as uint8 patches (half the processor's temporal duplication) so thousands
of examples fit in memory; :meth:`ExampleBuilder.pixel_tensor` restores the processor's exact
float input.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sole_r1_ros.core.composite import compose
from sole_r1_ros.core.protocol import Protocol
from sole_r1_tools.synth.episodes import (
    GOAL_TEMPLATES,
    OUTCOMES,
    TASK_KINDS,
    Episode,
    generate_episode,
    relabel_candidates,
    relabel_goal,
)
from sole_r1_tools.synth.scene import BLOCK_COLORS, DISTRACTOR_COLORS, DISTRACTOR_SHAPES, SceneState

NEAR_GRIPPER = 0.05  # m: the gripper is "at" an object (xy)
MOVED = 0.004  # m: an object "moved" between two scored frames
GRIPPER_MOVED = 0.01  # m: the gripper "moved toward/away"
HOVER_Z = 0.13  # m: a gripper below this with nothing in contact is "low"
# The reply's sentences in the order they are said (the shipped model was trained on this order;
# the current frame's state first was tried and tracked worse: docs/default_model.md).
REPLY_SENTENCES = ("motion", "contact", "where", "direction", "remains")

# Mixture of outcomes in training (non-expert trajectories included); weights sum to 1.
DEFAULT_OUTCOME_WEIGHTS: dict[str, float] = {
    "success": 0.28,
    "occlusion": 0.08,
    "partial_regression": 0.16,
    "failure": 0.16,
    "wrong_object": 0.16,
    "hover": 0.16,
}


# --------------------------------------------------------------------------- state → text


def _goal_phrase(kind: str, ref: str) -> str:
    return f"the {ref} block" if kind == "stack" else f"the {ref} zone"


def _target_distance(ep: Episode, i: int) -> float:
    """Distance of the target to its goal region at frame ``i`` (gripper to block for reach)."""
    from sole_r1_tools.synth.episodes import REACH_ABOVE, _goal_distance

    task, scene = ep.meta["task"], ep.meta["scene"]
    poses, grip = ep.meta["poses"][i], ep.meta["gripper"][i]
    if task.kind == "reach":
        obj = scene.objects[task.target]
        p = poses[task.target]
        goal = np.array([p[0], p[1], p[2] + obj.height + REACH_ABOVE])
        return float(np.linalg.norm(grip[:3] - goal))
    state = SceneState(grip, poses, int(ep.meta["holding"][i]))
    return float(_goal_distance(task, scene, state))


def _object_name(ep: Episode, index: int) -> str:
    return str(ep.meta["objects"][index]["name"])


# Decision words (the ones only the images can tell) are wrapped in these marks while the reply is
# built, so training can weight their tokens up; ``reasoning_text`` returns the plain text. The
# comparison marks wrap the words where the reply says whether the object held or moved is the
# goal's: its name and what follows it ("." or ", not"), in both cases alike, so weighting them
# does not favour either answer.
_OPEN, _CLOSE = "\x01", "\x02"
_COPEN, _CCLOSE = "\x03", "\x04"


def _d(words: str) -> str:
    return f"{_OPEN}{words}{_CLOSE}"


def _c(words: str) -> str:
    return f"{_COPEN}{words}{_CCLOSE}"


Span = tuple[int, int]


def strip_marks(marked: str) -> tuple[str, list[Span], list[Span]]:
    """Plain text and the character spans of its marked decision words and comparison words."""
    plain: list[str] = []
    decisions: list[Span] = []
    comparisons: list[Span] = []
    pos, start, cstart = 0, -1, -1
    for ch in marked:
        if ch == _OPEN:
            start = pos
        elif ch == _CLOSE:
            decisions.append((start, pos))
        elif ch == _COPEN:
            cstart = pos
        elif ch == _CCLOSE:
            comparisons.append((cstart, pos))
        else:
            plain.append(ch)
            pos += 1
    return "".join(plain), decisions, comparisons


def reasoning_text(ep: Episode, prev_idx: int, cur_idx: int, prev_percent: int) -> str:
    """Short, temporally grounded reasoning for the step ``prev_idx → cur_idx`` from true state,
    one sentence per name in :data:`REPLY_SENTENCES`, in that order."""
    return strip_marks(marked_reasoning(ep, prev_idx, cur_idx, prev_percent))[0]


def marked_reasoning(ep: Episode, prev_idx: int, cur_idx: int, prev_percent: int) -> str:
    """:func:`reasoning_text` with its decision words (motion, contact, place, direction, phase) and
    its comparison with the goal's object wrapped in marks (:func:`strip_marks`)."""
    meta = ep.meta
    task = meta["task"]
    kind = task.kind
    t = task.target
    target = _object_name(ep, t)
    ref = str(meta["reference"])
    goal = _goal_phrase(kind, ref)
    poses, grip, holding = meta["poses"], meta["gripper"], meta["holding"]
    p0, p1 = poses[prev_idx], poses[cur_idx]
    g0, g1 = grip[prev_idx], grip[cur_idx]
    said: dict[str, str] = {}

    # Gripper motion relative to the target.
    d0 = float(np.hypot(*(g0[:2] - p0[t, :2])))
    d1 = float(np.hypot(*(g1[:2] - p1[t, :2])))
    if float(np.linalg.norm(g1[:3] - g0[:3])) < GRIPPER_MOVED:
        said["motion"] = f"The gripper {_d('barely')} moved."
    elif d1 < d0 - GRIPPER_MOVED:
        said["motion"] = f"The gripper moved {_d('toward')} the {target}."
    elif d1 > d0 + GRIPPER_MOVED:
        said["motion"] = f"The gripper moved {_d('away')} from the {target}."
    else:
        said["motion"] = f"The gripper moved {_d('around')} the {target}."

    # Contact: what is held or pushed, and what moved.
    moved = [j for j in range(len(p1)) if float(np.hypot(*(p1[j, :2] - p0[j, :2]))) > MOVED
             or abs(float(p1[j, 2] - p0[j, 2])) > MOVED]
    h = int(holding[cur_idx])
    if h == t:
        said["contact"] = f"{_d('It holds')} the {_c(target + '.')}"
    elif h >= 0:
        said["contact"] = f"{_d('It holds')} the {_c(_d(_object_name(ep, h)) + ', not')} the {target}."
    elif t in moved:
        near = float(np.hypot(*(g1[:2] - p1[t, :2]))) < 2 * NEAR_GRIPPER and g1[2] < HOVER_Z
        said["contact"] = (f"{_d('It is pushing')} the {_c(target + '.')}" if near
                           else f"{_d('The')} {_c(target)} moved{_c('.')}")
    elif moved:
        said["contact"] = f"{_d('The')} {_c(_d(_object_name(ep, moved[0])))} moved{_c(', not')} the {target}."
    elif g1[2] < HOVER_Z and d1 > NEAR_GRIPPER and kind != "reach":
        said["contact"] = f"{_d('It hovers')} without touching the {target}."
    else:
        said["contact"] = f"{_d('No object')} moved."

    # Where the target is relative to the goal (for reach: where the gripper is).
    if kind == "reach":
        dist, dist0 = _target_distance(ep, cur_idx), _target_distance(ep, 0)
        r = dist / max(dist0, 1e-6)
        where = "right above" if dist < 0.03 else ("near" if r < 0.4 else ("halfway to" if r < 0.75 else "far from"))
        said["where"] = f"The gripper is {_d(where)} the {target}."
    else:
        din, din0 = _target_distance(ep, cur_idx), _target_distance(ep, 0)
        r = din / max(din0, 1e-6)
        if din <= 1e-9:
            where = "on" if kind == "stack" else "in"
        elif r < 0.4:
            where = "near"
        elif r < 0.8:
            where = "halfway to"
        else:
            where = "far from"
        said["where"] = f"The {target} is {_d(where)} {goal}."

    # Direction of progress relative to the quoted previous value.
    true_percent = percent_at(ep, cur_idx)
    if true_percent > prev_percent + 1:
        said["direction"] = f"Progress {_d('went up')} from {prev_percent}%."
    elif true_percent < prev_percent - 1:
        said["direction"] = f"Progress {_d('went down')} from {prev_percent}%."
    else:
        said["direction"] = f"Progress {_d('stayed')} near {prev_percent}%."

    said["remains"] = _remaining(ep, cur_idx, target, goal)
    return " ".join(said[name] for name in REPLY_SENTENCES)


def _remaining(ep: Episode, i: int, target: str, goal: str) -> str:
    kind = ep.meta["task"].kind
    phase = ep.meta["phase"][i]
    if phase == "done":
        return f"{_d('The task')} is complete."
    if kind == "reach":
        return f"{_d('Next: move')} above the {target}."
    if kind == "push":
        return (f"{_d('Next: push')} the {target} into {goal}." if phase == "push"
                else f"{_d('Next: reach')} the {target}, then push it.")
    verb = "on" if kind == "stack" else "in"
    if phase == "reach":
        return f"{_d('Next: grasp')} the {target}."
    if phase in ("grasp", "transport"):
        return f"{_d('Next: carry')} it to {goal}."
    return f"{_d('Next: lower')} and release it {verb} {goal}."


def percent_at(ep: Episode, i: int) -> int:
    """True progress of frame ``i`` as the integer percent the model is taught to answer."""
    return int(round(100.0 * float(ep.progress[i])))


def marked_answer(ep: Episode, prev_idx: int, cur_idx: int, prev_percent: int) -> str:
    """The full target reply with its decision and comparison words marked (:func:`strip_marks`)."""
    return (f"<think>{marked_reasoning(ep, prev_idx, cur_idx, prev_percent)}</think>"
            f"<answer>{percent_at(ep, cur_idx)}%</answer>")


def answer_text(ep: Episode, prev_idx: int, cur_idx: int, prev_percent: int) -> str:
    """The full target reply (without the end-of-turn token)."""
    return strip_marks(marked_answer(ep, prev_idx, cur_idx, prev_percent))[0]


def corpus_lines(protocol: Protocol) -> tuple[str, ...]:
    """Text for the tokenizer's BPE training: the protocol's prompts, goals and reply vocabulary,
    so frequent words are single tokens (shorter sequences, cheaper training and generation)."""
    t = protocol.templates
    lines: list[str] = [t.system] * 4
    colors = list(BLOCK_COLORS)
    for tmpl in (t.multi_view, t.single_view, t.multi_view_from_zero, t.single_view_from_zero):
        for k in range(4):
            lines.append(tmpl.format(task_description="the task", prev_progress=25 * k))
    names = [f"{c} block" for c in colors] + [f"{c} {s}" for c in DISTRACTOR_COLORS for s in DISTRACTOR_SHAPES]
    for kind in TASK_KINDS:
        for a in colors:
            for b in colors:
                if a != b:
                    lines.append(GOAL_TEMPLATES[kind].format(target=a, reference=b) + ".")
    phrases = [
        "The gripper barely moved.", "The gripper moved toward the", "The gripper moved away from the",
        "The gripper moved around the", "It holds the", "not the", "It is pushing the", "moved, not the",
        "It hovers without touching the", "No object moved.", "The gripper is right above the",
        "near", "halfway to", "far from", "is in the zone", "is on the block", "Progress went up from",
        "Progress went down from", "Progress stayed near", "The task is complete.", "Next: move above the",
        "Next: push the", "Next: reach the", "then push it.", "Next: grasp the", "Next: carry it to",
        "Next: lower and release it in", "Next: lower and release it on",
    ]
    for _ in range(6):
        lines.extend(phrases)
        lines.extend(f"the {n}." for n in names)
        lines.extend(f"<think>{p}</think><answer>{p}%</answer>" for p in range(0, 101))
    return tuple(lines)


# --------------------------------------------------------------------------- episodes and steps


@dataclass(frozen=True)
class EpisodeSpec:
    task_kind: str
    outcome: str
    seed: int


def training_specs(n_episodes: int, seed: int, weights: dict[str, float] | None = None,
                   kind_weights: dict[str, float] | None = None) -> list[EpisodeSpec]:
    """``n_episodes`` (task kind, outcome, seed) triples: outcomes drawn by ``weights`` (relative;
    outcomes left out keep their :data:`DEFAULT_OUTCOME_WEIGHTS` weight); task kinds round-robin,
    or drawn by ``kind_weights`` (relative weights, kinds left out weigh 1).

    Episode seeds are ``seed * 100_000 + i`` (evaluation uses seeds ≥ 1000 with a different
    stream; see :func:`evaluation_specs`)."""
    rng = np.random.default_rng([seed, 7])
    outcomes = list(DEFAULT_OUTCOME_WEIGHTS)
    probs = _relative_weights("outcome", OUTCOMES, DEFAULT_OUTCOME_WEIGHTS | (weights or {}), outcomes)
    picks = rng.choice(len(outcomes), size=n_episodes, p=probs)
    kinds = [TASK_KINDS[i % len(TASK_KINDS)] for i in range(n_episodes)]
    if kind_weights:
        kp = _relative_weights("task kind", TASK_KINDS, dict.fromkeys(TASK_KINDS, 1.0) | kind_weights, TASK_KINDS)
        kind_rng = np.random.default_rng([seed, 11])
        kinds = [TASK_KINDS[int(k)] for k in kind_rng.choice(len(TASK_KINDS), size=n_episodes, p=kp)]
    return [EpisodeSpec(kind, outcomes[int(k)], seed * 100_000 + i) for i, (kind, k) in enumerate(zip(kinds, picks))]


def _relative_weights(what: str, known: Sequence[str], weights: dict[str, float], order: Sequence[str]) -> np.ndarray:
    """``weights`` in ``order`` as probabilities; unknown names, negative or all-zero weights raise."""
    unknown = set(weights) - set(known)
    if unknown:
        raise ValueError(f"unknown {what}s {sorted(unknown)}; known: {', '.join(known)}")
    p = np.array([float(weights[name]) for name in order], dtype=np.float64)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"{what} weights must be >= 0 and not all 0, got {weights}")
    return p / p.sum()


def parse_weights(text: str) -> dict[str, float]:
    """``"reach=3,push=0.5"`` as ``{"reach": 3.0, "push": 0.5}`` (the CLIs' ``--kind-weights`` and
    ``--outcome-weights``)."""
    out = {}
    for item in text.split(","):
        name, sep, weight = item.partition("=")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {item!r}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {item!r}")
    return out


# The model card's held-out sets as (first seed, episodes): 24 from 1000, 48 from 2000, 48 from 800 000.
HELD_OUT_SETS = ((1000, 24), (2000, 48), (800_000, 48))


def check_not_held_out(seeds: Iterable[int], what: str) -> None:
    """Raise ``ValueError`` if any of ``seeds`` (episodes a stage learns or selects from) is in one
    of the held-out sets, whose metrics would then be biased."""
    seeds = set(seeds)
    for first, count in HELD_OUT_SETS:
        if seeds & set(range(first, first + count)):
            raise ValueError(f"{what} seeds {min(seeds)}..{max(seeds)} overlap the held-out set "
                             f"{first}..{first + count - 1}: choose another seed")


def evaluation_specs(n_episodes: int, seed: int = 1000) -> list[EpisodeSpec]:
    """Held-out episodes: every outcome in turn, kinds shifting so each (kind, outcome) pair
    appears across 24 episodes; seeds ``seed + i`` (unseen by :func:`training_specs` with its
    default seed 0, whose seeds are ``0 .. n_episodes - 1``)."""
    out = []
    for i in range(n_episodes):
        outcome = OUTCOMES[i % len(OUTCOMES)]
        kind = TASK_KINDS[(i + i // len(OUTCOMES)) % len(TASK_KINDS)]
        out.append(EpisodeSpec(kind, outcome, seed + i))
    return out


def make_episode(spec: EpisodeSpec, n_frames: int = 60, fps: float = 15.0) -> Episode:
    return generate_episode(spec.task_kind, spec.outcome, seed=spec.seed, n_frames=n_frames, fps=fps)


def scored_indices(n_frames: int, stride: float, offset: float = 0.0) -> list[int]:
    """Frames the scorer would take at a fixed period of ``stride`` frames: 0, then ⌈k·stride⌉."""
    out = [0]
    k = 1
    while True:
        i = int(math.ceil(k * stride + offset - 1e-9))
        if i >= n_frames:
            return out
        if i > out[-1]:
            out.append(i)
        k += 1


def step_pairs(n_frames: int, rng: np.random.Generator, stride_range: tuple[float, float] = (4.0, 10.0)
               ) -> list[tuple[int, int]]:
    """(previous, current) scored-frame pairs of one pass over an episode at a random stride."""
    stride = float(rng.uniform(*stride_range))
    idx = scored_indices(n_frames, stride, offset=float(rng.uniform(0.0, 1.0)))
    return list(zip(idx[:-1], idx[1:]))


def noised_previous(true_percent: int, rng: np.random.Generator, noise: float, p_noise: float,
                    p_random: float = 0.0) -> int:
    """Teacher forcing with the true previous percent, noised with probability ``p_noise``; with
    probability ``p_random`` it is replaced by a uniform value in [0, 100], so the quoted previous
    progress cannot stand in for looking at the images."""
    if p_random > 0 and rng.random() < p_random:
        return int(rng.integers(0, 101))
    if noise > 0 and rng.random() < p_noise:
        return int(np.clip(round(true_percent + rng.normal(0.0, noise)), 0, 100))
    return true_percent


# --------------------------------------------------------------------------- tokenized examples


@dataclass
class Example:
    """One cached training example."""

    input_ids: np.ndarray  # int32 [L]: prompt (image tokens expanded) + reply + <|im_end|>
    reply_start: int  # first position of the reply (loss is on positions >= reply_start)
    answer_start: int  # first position of "<answer>" (answer tokens may be weighted up)
    patches: np.ndarray  # uint8 [n_patches, C*P*P]: first temporal slice of pixel_values
    grid_thw: np.ndarray  # int64 [3]
    percent: int
    prev_percent: int
    reply: str
    decision_positions: np.ndarray | None = None  # int32: positions of decision-word tokens (reply)
    comparison_positions: np.ndarray | None = None  # int32: positions of comparison-word tokens (reply)
    # (position of the named object's colour token, position of the "." or "," after its name,
    # token id of the goal object's colour) where the reply says which object is held or moved
    comparison_slots: tuple[int, int, int] | None = None
    loss_positions: np.ndarray | None = None  # if set, the only positions that carry loss (counterfactuals)
    frames: tuple[int, int] | None = None  # (previous, current) frame indices of the step
    twin: Example | None = None  # a decision-only row's goal-swapped twin (:func:`goal_swap_pair`)


class ExampleBuilder:
    """Builds examples with the production composite, prompt and processor of ``backend``."""

    def __init__(self, backend: Any, protocol: Protocol) -> None:
        self.backend = backend
        self.protocol = protocol
        self.processor = backend.processor
        self.tokenizer = backend.processor.tokenizer
        ip = self.processor.image_processor
        self.mean = np.asarray(ip.image_mean, dtype=np.float32)
        self.std = np.asarray(ip.image_std, dtype=np.float32)
        self.temporal = int(ip.temporal_patch_size)
        self.patch = int(ip.patch_size)
        self.im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.answer_id = self.tokenizer.convert_tokens_to_ids("<answer>")
        self.comma_id, self.dot_id = self.tokenizer.convert_tokens_to_ids([",", "."])
        # the block colours that are one token each (as in the default model's tokenizer)
        encoded = {c: self.tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in BLOCK_COLORS}
        self.colour_ids = {c: ids[0] for c, ids in encoded.items() if len(ids) == 1}

    def messages(self, goal: str, prev_percent: int, n_views: int) -> list[dict[str, Any]]:
        escape = getattr(self.backend, "escape_special_text", lambda s: s)
        return self.protocol.templates.messages(escape(goal), prev_percent, n_views=n_views)

    def prompt_and_image(self, ep: Episode, prev_idx: int, cur_idx: int, prev_percent: int) -> tuple[str, Any]:
        """The scorer's composite and prompt text for this step."""
        image = compose(ep.frames[0], ep.frames[prev_idx], ep.frames[cur_idx], ep.roles, self.protocol.layout)
        return self.prompt_text(ep, prev_percent), image

    def prompt_text(self, ep: Episode, prev_percent: int) -> str:
        """The prompt text (the checkpoint's chat template) for a step of ``ep``."""
        return self.backend.prompt_text(self.messages(ep.goal, prev_percent, len(ep.roles)))

    def prompt_ids(self, ep: Episode, prev_percent: int, image_tokens: int) -> np.ndarray:
        """The prompt tokens :meth:`build` gets from the processor, without rendering or processing
        the composite: the chat text tokenized with its one image placeholder expanded to
        ``image_tokens`` copies (the count an image of this size already produced), as the processor
        expands it. For a prompt whose image is already known, e.g. the same step under another goal."""
        ids = self.tokenizer(self.prompt_text(ep, prev_percent), add_special_tokens=False)["input_ids"]
        image_id = self.backend.model.config.image_token_id
        if ids.count(image_id) != 1:
            raise ValueError(f"the prompt holds {ids.count(image_id)} image placeholders, expected 1")
        k = ids.index(image_id)
        return np.asarray(ids[:k] + [image_id] * image_tokens + ids[k + 1:], dtype=np.int64)

    def build(self, ep: Episode, prev_idx: int, cur_idx: int, prev_percent: int) -> Example:
        prompt, image = self.prompt_and_image(ep, prev_idx, cur_idx, prev_percent)
        inputs = self.processor(text=[prompt], images=[image], return_tensors="np")
        prompt_ids = np.asarray(inputs["input_ids"][0], dtype=np.int64)
        reply, decision_spans, comparison_spans = strip_marks(marked_answer(ep, prev_idx, cur_idx, prev_percent))
        encoded = self.tokenizer(reply, add_special_tokens=False, return_offsets_mapping=True)
        reply_ids = list(encoded["input_ids"]) + [self.im_end]

        def positions(spans: list[Span]) -> np.ndarray:  # the reply tokens that overlap a span
            return np.asarray([len(prompt_ids) + k for k, (a, b) in enumerate(encoded["offset_mapping"])
                               if any(a < end and b > start for start, end in spans)], dtype=np.int32)
        ids = np.concatenate([prompt_ids, np.asarray(reply_ids, dtype=np.int64)]).astype(np.int32)
        answer_pos = len(prompt_ids) + reply_ids.index(self.answer_id)
        compared = positions(comparison_spans)
        stops = [int(q) for q in compared if int(ids[q]) in (self.comma_id, self.dot_id)]
        goal_colour = self.colour_ids.get(_object_name(ep, ep.meta["task"].target).split()[0])
        slots = (int(compared[0]), stops[0], goal_colour) if stops and goal_colour is not None else None
        return Example(
            input_ids=ids, reply_start=len(prompt_ids), answer_start=answer_pos,
            patches=self.to_patches(np.asarray(inputs["pixel_values"])),
            grid_thw=np.asarray(inputs["image_grid_thw"][0], dtype=np.int64),
            percent=percent_at(ep, cur_idx), prev_percent=prev_percent, reply=reply,
            decision_positions=positions(decision_spans), comparison_positions=compared, comparison_slots=slots,
            frames=(prev_idx, cur_idx),
        )

    def to_patches(self, pixel_values: np.ndarray) -> np.ndarray:
        """Float pixel_values [N, C*T*P*P] → uint8 [N, C*P*P] (the T copies of an image are equal)."""
        n = pixel_values.shape[0]
        pv = pixel_values.reshape(n, 3, self.temporal, self.patch * self.patch)[:, :, 0]
        raw = (pv * self.std[None, :, None] + self.mean[None, :, None]) * 255.0
        return np.clip(np.rint(raw), 0, 255).astype(np.uint8).reshape(n, -1)

    def pixel_tensor(self, patches: Sequence[np.ndarray], device: Any = "cpu") -> Any:
        """Inverse of :meth:`to_patches`: the processor's float32 pixel_values of several composites,
        as one tensor on ``device``. The uint8 patches are what crosses to a GPU (8x fewer bytes than
        the temporal-doubled floats) and the normalisation runs there."""
        import torch

        raw = torch.from_numpy(np.concatenate(patches)).to(device)
        n = raw.shape[0]
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=raw.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=raw.device).view(1, 3, 1, 1)
        x = (raw.view(n, 3, 1, self.patch * self.patch).float() / 255.0 - mean) / std
        return x.expand(n, 3, self.temporal, self.patch * self.patch).reshape(n, -1)


def episode_examples(builder: ExampleBuilder, ep: Episode, rng: np.random.Generator, *, passes: int = 1,
                     noise: float = 6.0, p_noise: float = 0.5, p_random: float = 0.0,
                     stride_range: tuple[float, float] = (4.0, 10.0), relabel: float = 0.0,
                     goal_swaps: bool = False) -> Iterator[Example]:
    """Examples of ``passes`` scoring passes over one episode, each at its own random stride.

    With ``relabel`` > 0 each step is followed, with that probability, by its twin under a goal
    naming another block of the scene (:func:`~sole_r1_tools.synth.episodes.relabel_goal`, one block
    drawn per episode): the same composite, another goal, the reply and progress of that goal. The
    twins share the step's image patches. With ``goal_swaps`` each step whose reply names the block
    held or moved is also followed by its :func:`goal_swap_pair` (a decision-only row carrying its
    goal-swapped ``twin``)."""
    twin_ep = None
    if relabel > 0:
        candidates = relabel_candidates(ep)
        twin_ep = relabel_goal(ep, int(rng.choice(candidates))) if candidates else None
    for _ in range(passes):
        for prev_idx, cur_idx in step_pairs(ep.n_frames, rng, stride_range):
            prev = noised_previous(percent_at(ep, prev_idx), rng, noise, p_noise, p_random)
            example = builder.build(ep, prev_idx, cur_idx, prev)
            yield example
            pair = goal_swap_pair(builder, ep, example) if goal_swaps else None
            if pair is not None:
                yield pair
            if twin_ep is not None and rng.random() < relabel:
                twin_prev = noised_previous(percent_at(twin_ep, prev_idx), rng, noise, p_noise, p_random)
                twin = builder.build(twin_ep, prev_idx, cur_idx, twin_prev)
                yield dataclasses.replace(twin, patches=example.patches)


def colour_counterfactual(e: Example, colour_id: int, comma_id: int, dot_id: int) -> Example:
    """``e`` with the colour of the object its reply names as held or moved replaced by
    ``colour_id``, and the token after the name made to agree with the goal: "." if it is now the
    goal object's colour, "," (", not the …") if not. Only that token carries loss
    (``loss_positions``), so the image and the rest of the reply, which may now disagree with the
    text, teach nothing: the lesson is to compare the colour the reply named with the goal's."""
    if e.comparison_slots is None:
        raise ValueError("the example names no held or moved object")
    colour_pos, stop_pos, goal_colour = e.comparison_slots
    ids = e.input_ids[:stop_pos + 1].copy()  # what follows cannot change the prediction there
    ids[colour_pos] = colour_id
    ids[stop_pos] = dot_id if colour_id == goal_colour else comma_id
    return dataclasses.replace(e, input_ids=ids, loss_positions=np.asarray([stop_pos], dtype=np.int32),
                               decision_positions=None, comparison_positions=None)


def goal_counterfactual(builder: ExampleBuilder, e: Example, relabelled: Episode) -> Example:
    """``e`` (a step of an episode whose reply names the object held or moved) asked under the goal
    of ``relabelled`` (the same episode, :func:`~sole_r1_tools.synth.episodes.relabel_goal`) with
    nothing else changed: the same composite and quoted previous progress, and ``e``'s reply up to
    the "." or "," after the name, the old goal colour's mentions replaced by the new one's (all
    but the named object's). That token is made what the new goal makes true: "." if the named
    object is now the goal's, "," (", not the …") if not, and it alone carries loss. Unlike the
    new goal's own true reply, whose words before the name (the gripper's motion relative to the
    target) differ too, this changes only which block the goal names. The composite is not
    rendered again: the prompt is :meth:`ExampleBuilder.prompt_ids` with ``e``'s image token count."""
    if e.comparison_slots is None:
        raise ValueError("the example names no held or moved object")
    colour_pos, stop_pos, goal_colour = e.comparison_slots
    new_colour = builder.colour_ids.get(str(relabelled.meta["target"]))
    if new_colour is None:
        raise ValueError(f"the colour {relabelled.meta['target']!r} is not one token in this tokenizer")
    image_id = builder.backend.model.config.image_token_id
    prompt = builder.prompt_ids(relabelled, e.prev_percent, int((e.input_ids[:e.reply_start] == image_id).sum()))
    if len(prompt) != e.reply_start:
        raise ValueError("the two goals' prompts differ in length; the colours are not one token each")
    ids = np.concatenate([prompt, e.input_ids[e.reply_start:stop_pos + 1]]).astype(e.input_ids.dtype)
    reply = np.arange(len(ids)) >= e.reply_start
    ids[reply & (ids == goal_colour) & (np.arange(len(ids)) != colour_pos)] = new_colour
    ids[stop_pos] = builder.dot_id if int(ids[colour_pos]) == new_colour else builder.comma_id
    return dataclasses.replace(e, input_ids=ids, loss_positions=np.asarray([stop_pos], dtype=np.int32),
                               decision_positions=None, comparison_positions=None,
                               comparison_slots=(colour_pos, stop_pos, new_colour))


def goal_swap_pair(builder: ExampleBuilder, ep: Episode, e: Example) -> Example | None:
    """For a step of ``ep`` whose reply names the block held or moved: the step as a row that trains
    only the "." or "," after the name, with its :func:`goal_counterfactual` as ``twin``, the goal
    swapped to the named block if that is another block (the truth becomes "."), else to another
    block (", not"). Trained side by side, the pair differs only in which block the goal names, so
    the one way to fit both is to read that. None if the reply names no held or moved block or no
    block can be swapped to (its colour must be one token)."""
    if e.comparison_slots is None or e.frames is None:
        return None
    colour_pos, stop_pos, _ = e.comparison_slots
    other = int(e.input_ids[stop_pos]) == builder.comma_id
    named = builder.tokenizer.decode([int(e.input_ids[colour_pos])]).strip()
    objects = ep.meta["objects"]
    swap_to = next((i for i in relabel_candidates(ep) if (objects[i]["color"] == named) == other
                    and objects[i]["color"] in builder.colour_ids), None)
    if swap_to is None:
        return None
    twin = goal_counterfactual(builder, e, relabel_goal(ep, swap_to))
    return dataclasses.replace(e, input_ids=e.input_ids[:stop_pos + 1].copy(),
                               loss_positions=np.asarray([stop_pos], dtype=np.int32),
                               decision_positions=None, comparison_positions=None, twin=twin)


def collate(builder: ExampleBuilder, batch: Sequence[Example], answer_weight: float = 1.0,
            pad_to: int = 16, decision_weight: float = 1.0, comparison_weight: float = 1.0,
            counterfactual_weight: float | None = None,
            device: Any = "cpu") -> dict[str, Any]:
    """Right-padded tensors (on ``device``) for one forward pass, with per-token loss weights on the
    reply: 1, the answer tokens ``answer_weight``, the decision words' tokens ``decision_weight``,
    the comparison words' tokens ``comparison_weight`` (where a token is both, this one). An example
    with ``loss_positions`` (a counterfactual row) carries loss there alone, at ``counterfactual_weight``
    (default: ``comparison_weight``)."""
    import torch

    pad = builder.tokenizer.pad_token_id
    image_id = builder.backend.model.config.image_token_id
    length = max(len(e.input_ids) for e in batch)
    length = -(-length // pad_to) * pad_to  # few distinct shapes
    ids = torch.full((len(batch), length), pad, dtype=torch.long)
    attn = torch.zeros((len(batch), length), dtype=torch.long)
    weights = torch.zeros((len(batch), length), dtype=torch.float32)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.from_numpy(e.input_ids.astype(np.int64))
        attn[row, :n] = 1
        if e.loss_positions is not None:
            weights[row, torch.from_numpy(e.loss_positions.astype(np.int64))] = (
                comparison_weight if counterfactual_weight is None else counterfactual_weight)
            continue
        weights[row, e.reply_start:n] = 1.0
        weights[row, e.answer_start:n] = answer_weight
        if decision_weight != 1.0 and e.decision_positions is not None and len(e.decision_positions):
            weights[row, torch.from_numpy(e.decision_positions.astype(np.int64))] = decision_weight
        if comparison_weight != 1.0 and e.comparison_positions is not None and len(e.comparison_positions):
            weights[row, torch.from_numpy(e.comparison_positions.astype(np.int64))] = comparison_weight
    grid = torch.from_numpy(np.stack([e.grid_thw for e in batch]))
    tensors = {"input_ids": ids, "attention_mask": attn, "mm_token_type_ids": (ids == image_id).long(),
               "image_grid_thw": grid, "weights": weights}
    return {**{k: v.to(device) for k, v in tensors.items()},
            "pixel_values": builder.pixel_tensor([e.patches for e in batch], device)}


__all__ = [
    "DEFAULT_OUTCOME_WEIGHTS", "REPLY_SENTENCES", "EpisodeSpec", "Example", "ExampleBuilder", "answer_text", "collate",
    "colour_counterfactual", "corpus_lines", "episode_examples", "evaluation_specs", "goal_counterfactual",
    "goal_swap_pair", "make_episode", "marked_answer", "marked_reasoning",
    "noised_previous", "parse_weights", "percent_at", "reasoning_text", "scored_indices", "step_pairs",
    "strip_marks", "training_specs",
]
