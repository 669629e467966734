"""Where the built-in default model lives, and a clear error when it is not there."""

from __future__ import annotations

import os
from pathlib import Path

from sole_r1_ros.errors import ModelLoadError

DEFAULT_MODEL_ENV = "SOLE_R1_DEFAULT_MODEL"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "default_model"


def default_model_dir() -> Path:
    """The built-in default model: ``$SOLE_R1_DEFAULT_MODEL`` if set, else the small model shipped
    with the package (trained on synthetic episodes, docs/default_model.md). Raises
    :class:`ModelLoadError` naming the path when it is missing: a reward from random weights
    would be noise, so nothing is ever built in its place."""
    env = os.environ.get(DEFAULT_MODEL_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"${DEFAULT_MODEL_ENV} points at '{path}', which is not a model directory "
                                 "(no config.json); unset it or point it at a checkpoint")
        return path
    if not (SHIPPED_MODEL_DIR / "model.safetensors").is_file():
        raise ModelLoadError(
            f"the built-in default model is missing from '{SHIPPED_MODEL_DIR}' (an incomplete install, or a "
            "checkout without its data files): reinstall the package, or point model.path / --model at a "
            f"checkpoint directory (or set ${DEFAULT_MODEL_ENV})"
        )
    return SHIPPED_MODEL_DIR


__all__ = ["DEFAULT_MODEL_ENV", "SHIPPED_MODEL_DIR", "default_model_dir"]
