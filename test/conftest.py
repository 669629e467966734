"""Shared pytest fixtures: tiny random-weight Qwen-VL model directories built offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never reach the Hugging Face hub; set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny matmuls gain nothing from intra-op threads and stall badly when another process holds a core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen3-VL checkpoint directory (seed 0), built once per session."""
    from sole_r1_tools.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_models") / "qwen3_vl", "qwen3_vl", seed=0)


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> Any:
    """The production ``TransformersBackend`` over the tiny Qwen3-VL (CPU), one per test module."""
    from sole_r1_ros.backends.transformers_backend import TransformersBackend
    from sole_r1_ros.settings.groups import ModelSettings

    return TransformersBackend(ModelSettings(path=str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def builder(backend: Any) -> Any:
    """A training ``ExampleBuilder`` over :func:`backend` with the default protocol."""
    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_tools.training.dataset import ExampleBuilder

    return ExampleBuilder(backend, load_protocol())


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Family name → tiny checkpoint directory (seed 0) for every supported family."""
    from sole_r1_tools.tiny_model import SUPPORTED_FAMILIES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models_all")
    return {
        family: tiny_model_dir if family == "qwen3_vl" else build_tiny_model(root / family, family, seed=0)
        for family in SUPPORTED_FAMILIES
    }


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bigger random-weight Qwen3-VL (hidden 512, 8 layers, ~20 M parameters): one 200-token
    step takes seconds on a CPU, long enough to observe the reward node while it is busy."""
    from sole_r1_tools.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("slow_model") / "qwen3_vl_h512_l8", "qwen3_vl",
                            seed=0, hidden_size=512, num_layers=8)
