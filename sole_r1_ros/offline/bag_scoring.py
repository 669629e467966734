"""Score a recorded rosbag2 offline with the same frame, scorer and reward code as the node.

:func:`~sole_r1_ros.offline.plan.plan_scoring` checks the bag and finds what to read, :func:`run`
replays it through a :class:`~sole_r1_ros.pipeline.worker.RewardWorker` in bag time (resuming
from the journal in ``OUT.partial`` when an interrupted run left one) and
:mod:`sole_r1_ros.offline.outputs` writes and commits the results. The ``score_bag`` command
(:mod:`sole_r1_ros.cli.score_bag`) puts them together.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from sole_r1_ros.backends.wrappers import PerStepSeedModel
from sole_r1_ros.core.goal import GoalError
from sole_r1_ros.core.scorer import ProgressScorer
from sole_r1_ros.errors import ConfigError
from sole_r1_ros.messages.bags import BagReader
from sole_r1_ros.messages.image_codec import stamp_to_ns
from sole_r1_ros.offline.journal import JournaledModel, fingerprint, open_journal
from sole_r1_ros.offline.loading import load_scorer
from sole_r1_ros.offline.plan import Plan, ScoreBagError, plan_scoring
from sole_r1_ros.offline.plot import ThumbnailSampler
from sole_r1_ros.offline.seeding import OFFLINE_SEED
from sole_r1_ros.pipeline.frame_buffer import FrameSelector
from sole_r1_ros.pipeline.result import RewardResult
from sole_r1_ros.pipeline.worker import RewardWorker
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import DecodingSettings, ModelSettings, RewardSettings, WorkerSettings

LOG = logging.getLogger("score_bag")


@dataclass(frozen=True)
class ScoringSettings:
    """Everything that decides a run's estimates: the scoring rate in bag time and the settings
    groups the node has. Decoding defaults to the release's sampling, seeded with
    :data:`~sole_r1_ros.offline.seeding.OFFLINE_SEED` (``seed=-1``: unseeded)."""

    rate_hz: float = 1.0
    model: ModelSettings = field(default_factory=ModelSettings)
    decoding: DecodingSettings = field(default_factory=lambda: DecodingSettings(seed=OFFLINE_SEED))
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ConfigError("--rate must be positive")

    @property
    def scheduled_worker(self) -> WorkerSettings:
        """The worker settings of an offline run: rate mode at ``rate_hz`` of bag time."""
        return replace(self.worker, mode="rate", period_s=1.0 / self.rate_hz)


@dataclass
class ScoredBag:
    """What :func:`run` produced."""

    rows: list[dict[str, Any]]  # the node's ~/estimate objects, plus "ground_truth"
    ground_truth: dict[int, float]  # bag time (ns) → ground-truth progress
    thumbnails: list[Image.Image]
    model_info: dict[str, Any]
    generation: GenerationSettings
    replayed: int = 0


def _progress_bar(fraction: float, steps: int) -> None:
    width = 30
    filled = int(width * min(1.0, max(0.0, fraction)))
    sys.stderr.write(f"\rscoring [{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}%  {steps} estimates")
    sys.stderr.flush()


def _nearest_value(series: dict[int, float], t: int) -> float | None:
    if not series:
        return None
    key = min(series, key=lambda k: abs(k - t))
    return series[key]


# how the model is reached, not what it answers: changing them keeps a journal resumable
TRANSPORT_SETTINGS = ("timeout_s", "max_concurrency", "retries", "retry_backoff_s", "retry_backoff_max_s",
                      "startup_wait_s", "cpu_threads", "ca_bundle", "api_key_env")


def run_fingerprint(plan: Plan, settings: ScoringSettings) -> str:
    """The journal fingerprint of scoring ``plan`` with ``settings`` (all but the transport ones)."""
    model = {k: v for k, v in asdict(settings.model).items() if k not in TRANSPORT_SETTINGS}
    return fingerprint(
        {"bag": plan.bag_info, "cameras": plan.cameras, "goal": plan.goal, "goal_topic": plan.goal_topic,
         "model": model},
        [settings.decoding, settings.scheduled_worker, settings.reward],
    )


def run(plan: Plan, settings: ScoringSettings, partial: Path, *, quiet: bool = False,
        loaded: ProgressScorer | None = None, stop: threading.Event | None = None,
        on_progress: Callable[[float, int], None] | None = None) -> ScoredBag:
    """Score the bag, journaling replies in ``partial`` (and resuming from it when it holds the
    same run). ``quiet``: no progress bar, no transformers loading output. ``loaded``: a scorer
    shared by concurrent runs (its model is then left open); ``stop``: when set, the run stops
    between messages with ``KeyboardInterrupt`` (finished steps stay journaled); ``on_progress``
    (fraction of bag time, estimates) replaces the progress bar."""
    worker_config = settings.scheduled_worker
    journal, replies = open_journal(partial, run_fingerprint(plan, settings))
    owned = loaded is None
    if loaded is None:
        loaded = load_scorer(settings.model, settings.decoding, quiet=quiet)
    backend = loaded.model
    model_info = backend.describe()
    sampler = ThumbnailSampler()
    journaled = JournaledModel(backend, journal, replies)
    scorer = ProgressScorer(PerStepSeedModel(journaled), loaded.protocol, generation=loaded.generation,
                            from_zero=loaded.from_zero)
    scorer.composite_listeners.append(lambda _episode, _stamp_ns, image: sampler.add(image))
    selector = FrameSelector.create(list(plan.cameras), maxlen=worker_config.buffer_size,
                                    max_bytes=worker_config.buffer_max_mb << 20)
    results: list[RewardResult] = []
    now = [0]
    worker = RewardWorker(scorer, selector, config=worker_config, reward_config=settings.reward,
                          clock=lambda: now[0], emit=results.append)
    if plan.goal:
        worker.set_goal(plan.goal)
    topic_role = {topic: role for role, topic in plan.cameras.items()}
    topics = list(plan.cameras.values()) + [t for t in (plan.goal_topic, plan.ground_truth_topic) if t]
    ground_truth: dict[int, float] = {}
    start, end = plan.bag_info["start_ns"], plan.bag_info["end_ns"]
    show = sys.stderr.isatty() and not quiet and on_progress is None
    try:
        with BagReader(plan.bag) as bag:
            for m in bag.messages(topics):
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                now[0] = m.log_time_ns
                if m.topic == plan.goal_topic:
                    try:
                        worker.set_goal(m.msg.data)
                    except GoalError as err:
                        LOG.warning("goal at %d ignored: %s", m.log_time_ns, err)
                    continue
                if m.topic == plan.ground_truth_topic:
                    ground_truth[m.log_time_ns] = float(m.msg.data)
                    continue
                worker.push_frame(topic_role[m.topic], stamp_to_ns(m.msg.header.stamp), m.msg, m.log_time_ns)
                if worker.run_pending():
                    fraction = (m.log_time_ns - start) / max(1, end - start)
                    if on_progress is not None:
                        on_progress(fraction, len(results))
                    elif show:
                        _progress_bar(fraction, len(results))
            now[0] = end + int(1e9 * (worker_config.align_tolerance_s + 1))
            worker.run_pending()
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
    finally:
        journaled.close()
        if owned:
            backend.close()
        if show:
            sys.stderr.write("\n")
    rows = []
    for r in results:
        row = r.to_dict()
        row["ground_truth"] = _nearest_value(ground_truth, r.estimate.stamp_ns) if r.estimate else None
        rows.append(row)
    if journaled.replayed:
        LOG.info("replayed %d journaled steps, scored %d new", journaled.replayed, len(rows) - journaled.replayed)
    return ScoredBag(rows, ground_truth, sampler.thumbnails, model_info, loaded.generation, journaled.replayed)


__all__ = ["Plan", "ScoreBagError", "ScoredBag", "ScoringSettings", "plan_scoring", "run", "run_fingerprint"]
