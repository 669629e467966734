"""Episodes and the progress scorer: feed (stamp, views), get an estimate back.

An episode is sequential: each step shows the model the episode's first frame, the previous
*scored* frame and the current frame, and quotes the model's previous answer. The first frame
of an episode is defined as 0 % and costs no model call. Independent episodes can be scored
together in one batched forward pass.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sole_r1_ros.backends.contract import BatchTimings, Generation, VisionLanguageModel
from sole_r1_ros.core.answer import ParseStatus, parse_answer
from sole_r1_ros.core.composite import grid_from_tiles, letterbox_views, to_model_image
from sole_r1_ros.core.goal import GoalError, validate_goal
from sole_r1_ros.core.protocol import Protocol, load_protocol
from sole_r1_ros.core.status import EstimateStatus
from sole_r1_ros.errors import InferenceError
from sole_r1_ros.settings.generation import GenerationSettings

if TYPE_CHECKING:
    from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings

@dataclass(frozen=True)
class FrameSet:
    """One instant as the composite shows it: letterboxed tiles keyed by camera role (a frame
    appears up to three times, as first, previous and current, so it is letterboxed once)."""

    stamp_ns: int
    tiles: Mapping[str, np.ndarray]


@dataclass
class Episode:
    """State carried between steps of one episode."""

    goal: str
    roles: tuple[str, ...]
    episode_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    first: FrameSet | None = None
    previous: FrameSet | None = None
    prev_percent: int = 0
    step: int = 0
    parse_failures: int = 0

    def __post_init__(self) -> None:
        self.goal = validate_goal(self.goal, max_chars=None)  # the length limit is the caller's setting
        if not self.roles:
            raise ValueError("an episode needs at least one camera role")
        self.roles = tuple(self.roles)


@dataclass(frozen=True)
class Estimate:
    """One progress estimate. ``progress`` is ``percent / 100`` (1.0 = done, may be negative).

    ``status``: ``FIRST_FRAME`` (defined 0), ``OK``, ``PARSE_FAILED`` (previous value carried
    forward) or ``ERROR`` (no model answer; previous value carried forward, episode not advanced).
    """

    episode_id: str
    step: int
    goal: str
    stamp_ns: int
    first_stamp_ns: int
    prev_stamp_ns: int | None
    roles: tuple[str, ...]
    percent: int
    prev_percent: int
    status: EstimateStatus
    parse_status: str | None
    reasoning: str
    raw_text: str
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    new_tokens: int = 0

    @property
    def progress(self) -> float:
        """``percent / 100`` (1.0 = done)."""
        return self.percent / 100.0

    @property
    def has_progress(self) -> bool:
        """True when ``percent`` is a progress value to publish: the model's answer, the defined
        0 of the first frame, or the previous value carried over a parse failure."""
        return self.status.has_progress

    def to_dict(self) -> dict[str, Any]:
        """Plain data, JSON-ready."""
        d = asdict(self)
        d["roles"] = list(self.roles)
        d["status"] = self.status.value
        d["progress"] = self.progress
        return d


@dataclass
class _Pending:
    episode: Episode
    current: FrameSet
    image: Image.Image
    conversation: list[dict[str, Any]]
    preprocess_s: float


class ProgressScorer:
    """Turns frames into estimates with a backend and a protocol."""

    def __init__(
        self,
        model: VisionLanguageModel,
        protocol: Protocol,
        *,
        generation: GenerationSettings | None = None,
        from_zero: bool = False,
    ) -> None:
        self.model = model
        self.protocol = protocol
        self.generation = generation or protocol.generation
        self.from_zero = from_zero
        # each called with (episode, stamp_ns, composite) for every step sent to the model: the
        # node's ~/composite, offline thumbnails and video frames
        self.composite_listeners: list[Callable[[Episode, int, Image.Image], None]] = []

    def new_episode(self, goal: str, roles: Sequence[str]) -> Episode:
        """A fresh episode (its first frame will be defined 0 %)."""
        return Episode(goal=goal, roles=tuple(roles))

    def score(self, episode: Episode, stamp_ns: int, views: Mapping[str, np.ndarray]) -> Estimate:
        """Score one frame of one episode."""
        return self.score_batch([(episode, stamp_ns, views)])[0]

    def score_batch(self, items: Sequence[tuple[Episode, int, Mapping[str, np.ndarray]]]) -> list[Estimate]:
        """Score the next frame of several independent episodes (one forward pass)."""
        ids = [id(ep) for ep, _, _ in items]
        if len(set(ids)) != len(ids):
            raise ValueError("an episode can appear only once per batch: its steps are sequential")
        results: list[Estimate | None] = [None] * len(items)
        pending: list[tuple[int, _Pending]] = []
        for index, (episode, stamp_ns, views) in enumerate(items):
            missing = [r for r in episode.roles if r not in views]
            if missing:
                raise KeyError(f"views lack camera roles {missing}")
            t0 = time.perf_counter()
            layout = self.protocol.layout
            current = FrameSet(int(stamp_ns), letterbox_views(views, episode.roles, layout.tile_size))
            if episode.first is None:
                results[index] = self._start(episode, current)
                continue
            columns = [episode.first.tiles, current.tiles]
            if not self.from_zero:
                assert episode.previous is not None
                columns.insert(1, episode.previous.tiles)
            image = to_model_image(grid_from_tiles(columns, episode.roles, layout), layout)
            for listener in self.composite_listeners:
                listener(episode, current.stamp_ns, image)
            prev = None if self.from_zero else episode.prev_percent
            goal = self.model.escape_special_text(episode.goal)
            conversation = self.protocol.templates.messages(goal, prev, n_views=len(episode.roles))
            pending.append((index, _Pending(episode, current, image, conversation, time.perf_counter() - t0)))
        if pending:
            for index, estimate in zip((i for i, _ in pending), self._run([p for _, p in pending])):
                results[index] = estimate
        return [r for r in results if r is not None]

    def _start(self, episode: Episode, current: FrameSet) -> Estimate:
        episode.first = current
        episode.previous = current
        episode.prev_percent = 0
        episode.step = 1
        return Estimate(
            episode_id=episode.episode_id, step=0, goal=episode.goal, stamp_ns=current.stamp_ns,
            first_stamp_ns=current.stamp_ns, prev_stamp_ns=None, roles=episode.roles, percent=0,
            prev_percent=0, status=EstimateStatus.FIRST_FRAME, parse_status=None, reasoning="", raw_text="",
        )

    def _run(self, batch: list[_Pending]) -> list[Estimate]:
        timings = BatchTimings()
        try:
            generations = self.model.generate(
                [p.conversation for p in batch], [p.image for p in batch], self.generation, timings
            )
            if len(generations) != len(batch):
                raise InferenceError(f"model returned {len(generations)} replies for {len(batch)} prompts")
        except InferenceError as err:
            kind = "out_of_memory" if err.out_of_memory else "model_error"
            return [self._failure(p, f"{kind}: {err}", timings) for p in batch]
        except Exception as err:  # noqa: BLE001 - a backend bug must not kill the caller's loop
            return [self._failure(p, f"model_error: {type(err).__name__}: {err}", timings) for p in batch]
        return [self._accept(p, g, timings, len(batch)) for p, g in zip(batch, generations)]

    def _base(self, p: _Pending) -> dict[str, Any]:
        ep = p.episode
        assert ep.first is not None and ep.previous is not None
        return {
            "episode_id": ep.episode_id, "step": ep.step, "goal": ep.goal, "stamp_ns": p.current.stamp_ns,
            "first_stamp_ns": ep.first.stamp_ns,
            "prev_stamp_ns": None if self.from_zero else ep.previous.stamp_ns,
            "roles": ep.roles, "prev_percent": ep.prev_percent,
        }

    @staticmethod
    def _timing(p: _Pending, timings: BatchTimings, batch_size: int, parse_s: float = 0.0) -> dict[str, float]:
        return {
            "preprocess_s": p.preprocess_s + timings.processor_s / batch_size,
            "model_s": timings.model_s,
            "parse_s": parse_s,
            "batch_size": float(batch_size),
        }

    def _failure(self, p: _Pending, error: str, timings: BatchTimings) -> Estimate:
        return Estimate(
            **self._base(p), percent=p.episode.prev_percent, status=EstimateStatus.ERROR, parse_status=None,
            reasoning="", raw_text="", error=error, timings=self._timing(p, timings, 1),
        )

    def _accept(self, p: _Pending, g: Generation, timings: BatchTimings, batch_size: int) -> Estimate:
        t0 = time.perf_counter()
        parsed = parse_answer(g.text, hit_token_limit=g.new_tokens >= self.generation.max_new_tokens)
        parse_s = time.perf_counter() - t0
        ep = p.episode
        base = self._base(p)
        if parsed.status.has_value:
            assert parsed.percent is not None
            percent, status, error = parsed.percent, EstimateStatus.OK, None
        else:
            percent, status = ep.prev_percent, EstimateStatus.PARSE_FAILED
            error = f"{parsed.status.value}: {parsed.reason}"
            ep.parse_failures += 1
        estimate = Estimate(
            **base, percent=percent, status=status, parse_status=parsed.status.value,
            reasoning=parsed.reasoning, raw_text=g.text, error=error,
            timings=self._timing(p, timings, batch_size, parse_s),
            prompt_tokens=g.prompt_tokens, new_tokens=g.new_tokens,
        )
        ep.previous = p.current
        ep.prev_percent = percent
        ep.step += 1
        return estimate


def build_scorer(model: ModelSettings, decoding: DecodingSettings) -> ProgressScorer:
    """Load the backend ``model`` names and the protocol, decoding as ``decoding`` says; raises
    :class:`~sole_r1_ros.errors.ModelLoadError` or :class:`~sole_r1_ros.errors.ConfigError`."""
    from sole_r1_ros.backends.registry import load_backend

    protocol = load_protocol(decoding.prompt_config or None)
    backend = load_backend(model)
    return ProgressScorer(backend, protocol, generation=decoding.generation(protocol.generation),
                          from_zero=decoding.from_zero)


__all__ = ["Episode", "Estimate", "FrameSet", "GoalError", "ParseStatus", "ProgressScorer", "build_scorer",
           "validate_goal"]
