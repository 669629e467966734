"""Load a model for training and evaluation through the runtime's own loader (float32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sole_r1_ros.backends.registry import load_backend
from sole_r1_ros.settings.groups import ModelSettings


def load_model(model_dir: str | Path, device: str = "cpu") -> Any:
    """The checkpoint in ``model_dir`` as the node would load it, in float32 (returns the
    :class:`~sole_r1_ros.backends.transformers_backend.TransformersBackend`)."""
    return load_backend(ModelSettings(path=str(model_dir), device=device, dtype="float32"))
