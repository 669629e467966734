"""Backends by name, and the built-in default model: found, or a clear load error (never random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sole_r1_ros.backends import default_model, registry
from sole_r1_ros.backends.contract import VisionLanguageModel
from sole_r1_ros.errors import ConfigError, ModelLoadError
from sole_r1_ros.settings.groups import ModelSettings


def test_the_shipped_default_model_is_the_default() -> None:
    assert default_model.default_model_dir() == default_model.SHIPPED_MODEL_DIR
    assert (default_model.SHIPPED_MODEL_DIR / "model.safetensors").is_file()


def test_a_missing_default_model_is_a_load_error_naming_the_path(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(default_model.DEFAULT_MODEL_ENV, raising=False)
    monkeypatch.setattr(default_model, "SHIPPED_MODEL_DIR", tmp_path / "default_model")
    with pytest.raises(ModelLoadError, match="default_model.*reinstall.*model.path"):
        registry.load_backend(ModelSettings(device="cpu"))
    assert not (tmp_path / "default_model").exists()  # nothing was built in its place


def test_a_default_model_variable_that_points_nowhere_is_a_load_error(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(default_model.DEFAULT_MODEL_ENV, str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="SOLE_R1_DEFAULT_MODEL"):
        default_model.default_model_dir()


def test_an_unknown_backend_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="transformers"):
        registry.load_backend(ModelSettings(backend="nope"))


def test_the_transformers_backend_loads_by_name(tiny_model_dir: Path) -> None:
    backend = registry.load_backend(ModelSettings(path=str(tiny_model_dir), device="cpu"))
    assert isinstance(backend, VisionLanguageModel)
    assert backend.describe()["model_type"] == "qwen3_vl"
    backend.close()
