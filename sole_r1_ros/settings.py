"""Build a scorer from user-facing settings (shared by the CLIs and the node).

A single :class:`ScorerSettings` holds everything a user can choose; the CLIs fill it from
argparse, the node from ROS parameters.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from sole_r1_ros.backends.transformers_backend import ModelOptions, TransformersBackend
from sole_r1_ros.core.protocol import GenerationSettings, load_protocol
from sole_r1_ros.core.scorer import ProgressScorer

LOG = logging.getLogger(__name__)

DEFAULT_MODEL_ENV = "SOLE_R1_DEFAULT_MODEL"


@dataclass(frozen=True)
class ScorerSettings:
    """Model, protocol and decoding choices. Empty ``model_path`` selects the built-in default."""

    model_path: str = ""
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = ""
    trust_remote_code: bool = False
    prompt_config: str = ""
    from_zero: bool = False
    greedy: bool = False
    max_new_tokens: int = 0  # 0: the protocol's default
    temperature: float = 0.0  # 0: the protocol's default
    top_p: float = 0.0
    top_k: int = 0
    seed: int = -1  # -1: unseeded
    min_pixels: int = 0  # 0: the processor's own
    max_pixels: int = 0
    cpu_threads: int = 0  # 0: torch's default
    linear_patch_embedding: bool = True


SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "data" / "default_model"


def default_model_dir() -> Path:
    """The built-in default model: ``$SOLE_R1_DEFAULT_MODEL``, else the small model shipped with
    the package (trained on synthetic episodes, see docs/default_model.md), else a tiny
    random-weight Qwen3-VL built once into the user cache (pipeline only; its numbers are noise)."""
    env = os.environ.get(DEFAULT_MODEL_ENV)
    if env:
        return Path(env).expanduser()
    if (SHIPPED_MODEL_DIR / "model.safetensors").is_file():
        return SHIPPED_MODEL_DIR
    from sole_r1_tools.tiny_model import build_tiny_model

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sole_r1_ros" / "tiny-qwen3_vl-seed0"
    if not (cache / "config.json").is_file():
        LOG.warning("building the built-in tiny random-weight model in %s (its progress numbers are noise)", cache)
        try:
            build_tiny_model(cache, "qwen3_vl", seed=0)
        except FileExistsError:
            pass  # another process finished building it first (the build is atomic)
    return cache


def generation_settings(settings: ScorerSettings, defaults: GenerationSettings) -> GenerationSettings:
    """Protocol defaults overridden by the non-zero user choices."""
    gen = defaults
    if settings.greedy:
        gen = replace(gen, do_sample=False)
    if settings.max_new_tokens > 0:
        gen = replace(gen, max_new_tokens=settings.max_new_tokens)
    if settings.temperature > 0:
        gen = replace(gen, temperature=settings.temperature)
    if settings.top_p > 0:
        gen = replace(gen, top_p=settings.top_p)
    if settings.top_k > 0:
        gen = replace(gen, top_k=settings.top_k)
    if settings.seed >= 0:
        gen = replace(gen, seed=settings.seed)
    return gen


def build_scorer(settings: ScorerSettings) -> ProgressScorer:
    """Load the model and protocol; raises ``ModelLoadError`` / ``ProtocolError`` with a clear message."""
    protocol = load_protocol(settings.prompt_config or None)
    model_path = settings.model_path or str(default_model_dir())
    backend = TransformersBackend(
        ModelOptions(
            path=model_path,
            device=settings.device,
            dtype=settings.dtype,
            attn_implementation=settings.attn_implementation or None,
            trust_remote_code=settings.trust_remote_code,
            min_pixels=settings.min_pixels or None,
            max_pixels=settings.max_pixels or None,
            cpu_threads=settings.cpu_threads,
            linear_patch_embedding=settings.linear_patch_embedding,
        )
    )
    return ProgressScorer(
        backend, protocol, generation=generation_settings(settings, protocol.generation), from_zero=settings.from_zero
    )


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    """The model/decoding options every CLI shares."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="", help="checkpoint directory (default: the built-in default model)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    g.add_argument("--attn", default="", help="attention implementation: sdpa | eager | flash_attention_2")
    g.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    g.add_argument("--prompt-config", default="", help="protocol YAML (default: SOLE-R1-8B's)")
    g.add_argument("--from-zero", action="store_true", help="first+current frames only, no previous progress")
    g.add_argument("--greedy", action="store_true", help="deterministic decoding instead of the release's sampling")
    g.add_argument("--max-new-tokens", type=int, default=0)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=-1)
    g.add_argument("--min-pixels", type=int, default=0)
    g.add_argument("--max-pixels", type=int, default=0)
    g.add_argument("--cpu-threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    g.add_argument("--conv-patch-embedding", action="store_true",
                   help="run the vision patch embedding as the checkpoint's Conv3d (default: the equivalent, faster GEMM)")


def settings_from_args(args: argparse.Namespace) -> ScorerSettings:
    return ScorerSettings(
        model_path=args.model, device=args.device, dtype=args.dtype, attn_implementation=args.attn,
        trust_remote_code=args.trust_remote_code, prompt_config=args.prompt_config, from_zero=args.from_zero,
        greedy=args.greedy, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, seed=args.seed, min_pixels=args.min_pixels, max_pixels=args.max_pixels,
        cpu_threads=args.cpu_threads, linear_patch_embedding=not args.conv_patch_embedding,
    )
