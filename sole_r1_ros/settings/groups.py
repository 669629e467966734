"""Every user-facing setting, declared once: the node's parameters and the CLIs' options.

To add a setting, add one field to its group here (and a line to ``config/reward_node.yaml``,
which a test checks); the node declares it as a parameter with a descriptor and the CLIs offer
it as an option on their own. Then read it where it is used.

Zero or ``""`` means "the default of the checkpoint or library" where a description says so:
ROS parameters have no null.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from sole_r1_ros.errors import ConfigError
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.schema import setting, validate


@dataclass(frozen=True)
class ModelSettings:
    """Which model answers and how it is loaded (parameters ``model.*``)."""

    PREFIX: ClassVar[str] = "model"

    backend: str = setting("transformers", "model backend: transformers (in-process Hugging Face generate) | "
                                           "transformers_static (in-process, static KV cache, prompts padded to a "
                                           "length bucket: compiled on a GPU) | server (an OpenAI-compatible "
                                           "server: vLLM, SGLang, transformers serve)",
                           flag="--backend")
    path: str = setting("", "checkpoint directory; empty = the built-in default model (server backend: only the "
                            "tokenizer.json's added tokens are read, for goal escaping)", flag="--model")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N", flag="--device")
    dtype: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float16 | float32",
                         choices=("auto", "bfloat16", "float16", "float32"), flag="--dtype")
    attn_implementation: str = setting("", "attention implementation: '' (transformers' default) | sdpa | eager | "
                                           "flash_attention_2", flag="--attn")
    trust_remote_code: bool = setting(False, "allow the checkpoint's own Python code (off unless reviewed)",
                                      flag="--trust-remote-code")
    min_pixels: int = setting(0, "image token budget, lower bound in pixels; 0 = the processor's own", minimum=0,
                              flag="--min-pixels")
    max_pixels: int = setting(0, "image token budget, upper bound in pixels; 0 = the processor's own", minimum=0,
                              flag="--max-pixels")
    cpu_threads: int = setting(0, "torch threads when running on CPU (leave a core for ROS); 0 = torch's default",
                               minimum=0, flag="--cpu-threads")
    linear_patch_embedding: bool = setting(True, "run the vision Conv3d patch embedding as the equivalent GEMM "
                                                 "(same weights, faster)", flag="--linear-patch-embedding")
    url: str = setting("", "server backend: base URL of the OpenAI-compatible API (http://host:port or "
                           "https://...; /v1 is appended when missing)")
    name: str = setting("", "server backend: the served model's name; empty = the one /v1/models lists "
                            "(transformers serve: its pinned model)")
    api_key_env: str = setting("", "server backend: NAME of the environment variable holding the API key "
                                   "(sent as a bearer token; never logged); empty = no key")
    dialect: str = setting("auto", "server backend: request fields of auto (detected) | vllm | sglang | transformers",
                           choices=("auto", "vllm", "sglang", "transformers"))
    timeout_s: float = setting(60.0, "server backend: seconds to wait for one reply", minimum=0.001,
                               param="timeout")
    max_concurrency: int = setting(8, "server backend: requests in flight at once from this process", minimum=1)
    retries: int = setting(3, "server backend: retries of a request after a connection error, HTTP 5xx or 429",
                           minimum=0)
    retry_backoff_s: float = setting(0.5, "server backend: first wait before a retry, doubled each time (s); "
                                          "a Retry-After header wins", minimum=0.0, param="retry_backoff")
    retry_backoff_max_s: float = setting(8.0, "server backend: cap on the wait before a retry (s)", minimum=0.0,
                                         param="retry_backoff_max")
    startup_wait_s: float = setting(30.0, "server backend: how long start-up waits for an unreachable server "
                                          "before refusing to start (s)", minimum=0.0, param="startup_wait")
    ca_bundle: str = setting("", "server backend, https://: CA certificates (PEM file) to verify the server "
                                 "with; empty = the system's")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class DecodingSettings:
    """How the model is asked and sampled (parameters ``model.*``); zero keeps the protocol's default."""

    PREFIX: ClassVar[str] = "model"

    prompt_config: str = setting("", "protocol YAML; empty = SOLE-R1-8B's", flag="--prompt-config")
    from_zero: bool = setting(False, "show first + current frame only, without previous progress", flag="--from-zero")
    greedy: bool = setting(False, "deterministic decoding instead of the release's sampling", flag="--greedy")
    max_new_tokens: int = setting(0, "0 = protocol default (200)", minimum=0, flag="--max-new-tokens")
    temperature: float = setting(0.0, "0 = protocol default (1.0)", minimum=0.0, flag="--temperature")
    top_p: float = setting(0.0, "0 = protocol default (0.9)", minimum=0.0, maximum=1.0, flag="--top-p")
    top_k: int = setting(0, "0 = protocol default (50)", minimum=0, flag="--top-k")
    seed: int = setting(-1, "sampling seed; -1 = unseeded", minimum=-1, flag="--seed")

    def __post_init__(self) -> None:
        validate(self)

    def generation(self, defaults: GenerationSettings) -> GenerationSettings:
        """The protocol's defaults overridden by the non-zero choices."""
        gen = defaults
        if self.greedy:
            gen = replace(gen, do_sample=False)
        if self.max_new_tokens > 0:
            gen = replace(gen, max_new_tokens=self.max_new_tokens)
        if self.temperature > 0:
            gen = replace(gen, temperature=self.temperature)
        if self.top_p > 0:
            gen = replace(gen, top_p=self.top_p)
        if self.top_k > 0:
            gen = replace(gen, top_k=self.top_k)
        if self.seed >= 0:
            gen = replace(gen, seed=self.seed)
        return gen


WORKER_MODES = ("rate", "request")


@dataclass(frozen=True)
class WorkerSettings:
    """Scheduling, frame selection and input limits (top-level parameters)."""

    PREFIX: ClassVar[str] = ""

    mode: str = setting("rate", "rate: score the freshest frames every `period` s; request: score on ~/request",
                        choices=WORKER_MODES, offline=False)
    period_s: float = setting(1.0, "rate mode: seconds between estimates (0 = back to back)", minimum=0.0,
                              param="period", offline=False)
    align_tolerance_s: float = setting(0.05, "max stamp difference (s) between a camera's frame and the reference",
                                       minimum=0.0, param="align_tolerance")
    max_frame_age_s: float = setting(2.0, "rate mode: frames older than this (s, node clock) are stale", minimum=0.0,
                                     param="max_frame_age")
    request_queue_size: int = setting(16, "request mode: pending requests beyond this are answered with a failure",
                                      minimum=1, offline=False)
    time_jump_back_s: float = setting(1.0, "a reference stamp this far (s) behind the newest one (bag loop, "
                                           "restarted clock) starts a new episode", minimum=0.0,
                                      param="time_jump_back")
    max_decode_pixels: int = setting(33_177_600, "larger images are rejected before decoding (8K = 33 Mpx)",
                                     minimum=1)
    buffer_size: int = setting(30, "raw frames kept per camera (memory bound)", minimum=1)
    buffer_max_mb: int = setting(256, "message data kept per camera, MiB (bounds memory for huge frames)",
                                 minimum=1)
    max_goal_chars: int = setting(1000, "longer goals are rejected", minimum=1)
    skipped_estimate_period_s: float = setting(1.0, "rate mode: a step that is not scored publishes a failure "
                                                    "~/estimate, at most one per reason per this many s (wall "
                                                    "time); 0 = every one", minimum=0.0,
                                               param="skipped_estimate_period", offline=False)

    def __post_init__(self) -> None:
        validate(self)
        if self.max_frame_age_s <= 0:
            raise ConfigError("max_frame_age must be > 0")


REWARD_MODES = ("progress", "delta", "potential")
SMOOTHING_MODES = ("none", "ema", "median")


@dataclass(frozen=True)
class RewardSettings:
    """Progress → reward mapping (parameters ``reward.*``; see :mod:`sole_r1_ros.core.reward`)."""

    PREFIX: ClassVar[str] = "reward"

    mode: str = setting("progress", "progress (the paper's choice) | delta | potential", choices=REWARD_MODES)
    gamma: float = setting(0.99, "discount for potential-based shaping", minimum=0.0, maximum=1.0)
    smoothing: str = setting("none", "none | ema | median", choices=SMOOTHING_MODES)
    ema_alpha: float = setting(0.5, "EMA weight of the newest progress, in (0, 1]", minimum=0.0, maximum=1.0)
    median_window: int = setting(3, "running-median window", minimum=1)
    success_threshold: float = setting(-1.0, "progress at/above which the bonus is added; < 0 disables")
    success_bonus: float = setting(0.0, "bonus added at/above the success threshold")
    clip: bool = setting(False, "clip rewards to [clip_min, clip_max]")
    clip_min: float = setting(-1.0, "lower reward bound when clipping")
    clip_max: float = setting(1.0, "upper reward bound when clipping")

    def __post_init__(self) -> None:
        validate(self)
        if self.ema_alpha <= 0:
            raise ConfigError("reward.ema_alpha must be in (0, 1]")
        if self.clip_min > self.clip_max:
            raise ConfigError("reward.clip_min must not exceed reward.clip_max")


IMAGE_RELIABILITY = ("best_effort", "reliable")


@dataclass(frozen=True)
class NodeSettings:
    """The node's own settings: cameras, QoS, goal and diagnostics (top-level parameters)."""

    PREFIX: ClassVar[str] = ""

    cameras: list[str] = setting(["external", "wrist"], "camera roles, in composite row order (first = top row "
                                                        "and time reference)", offline=False)
    image_qos_reliability: str = setting("best_effort", "best_effort (sensor data; matches any camera driver) or "
                                                        "reliable", choices=IMAGE_RELIABILITY,
                                         param="image_qos.reliability", offline=False)
    image_qos_depth: int = setting(10, "subscription queue depth for images (raise it for reliable multi-camera "
                                       "rigs)", minimum=1, param="image_qos.depth", offline=False)
    goal: str = setting("", "initial task description; also settable at runtime (starts a new episode)",
                        offline=False, runtime=True)
    diagnostics_period: float = setting(1.0, "seconds between /diagnostics messages (steady clock: keeps "
                                             "publishing when /clock stops)", minimum=0.0, offline=False)
    composite_format: str = setting("jpeg", "~/composite encoding: jpeg (quality 95, small, fast) or png "
                                            "(lossless: the model's exact pixels, ~10-30x slower to encode)",
                                    choices=("jpeg", "png"), offline=False)

    def __post_init__(self) -> None:
        validate(self)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"parameter 'cameras' must list distinct roles, got {list(self.cameras)}")
        if self.diagnostics_period <= 0:
            raise ConfigError("diagnostics_period must be > 0")


CAMERA_TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class CameraSettings:
    """One camera (parameters ``camera.<role>.*``; the node declares them per role)."""

    PREFIX: ClassVar[str] = "camera.<role>"

    topic: str = setting("", "image topic of this camera (relative; remap it); declared with the default "
                              "cameras/<role>/image_raw", offline=False)
    transport: str = setting("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)",
                             choices=CAMERA_TRANSPORTS, offline=False)

    def __post_init__(self) -> None:
        validate(self)


GROUPS = (ModelSettings, DecodingSettings, WorkerSettings, RewardSettings, NodeSettings)

__all__ = [
    "CAMERA_TRANSPORTS",
    "GROUPS",
    "CameraSettings",
    "DecodingSettings",
    "ModelSettings",
    "NodeSettings",
    "RewardSettings",
    "WorkerSettings",
]
