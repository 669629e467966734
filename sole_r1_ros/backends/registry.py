"""Backends by name (the ``model.backend`` setting); each one's heavy code is imported only when chosen."""

from __future__ import annotations

import importlib
from typing import Protocol, cast

from sole_r1_ros.backends.contract import VisionLanguageModel
from sole_r1_ros.backends.default_model import default_model_dir
from sole_r1_ros.errors import ConfigError
from sole_r1_ros.settings.groups import ModelSettings

# name -> "module:class"; the class takes the ModelSettings (with the model path resolved)
BACKENDS: dict[str, str] = {
    "transformers": "sole_r1_ros.backends.transformers_backend:TransformersBackend",
    "server": "sole_r1_ros.backends.openai_server:OpenAIServerBackend",
    "transformers_static": "sole_r1_ros.backends.static_cache:StaticCacheBackend",
}


class BackendFactory(Protocol):
    """A backend class: built from the model settings."""

    in_process: bool

    def __call__(self, settings: ModelSettings) -> VisionLanguageModel: ...


def backend_class(name: str) -> BackendFactory:
    """The backend class registered as ``name`` (imported now); raises :class:`ConfigError`."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"model.backend '{name}' unknown; choose one of {', '.join(sorted(BACKENDS))}") from None
    module_name, _, class_name = target.partition(":")
    return cast(BackendFactory, getattr(importlib.import_module(module_name), class_name))


def load_backend(settings: ModelSettings) -> VisionLanguageModel:
    """Load the model ``settings`` name; an empty path selects the built-in default model.
    Raises :class:`~sole_r1_ros.errors.ModelLoadError` or :class:`ConfigError`."""
    factory = backend_class(settings.backend)
    if not settings.path:
        from dataclasses import replace

        settings = replace(settings, path=str(default_model_dir()))
    return factory(settings)


__all__ = ["BACKENDS", "backend_class", "load_backend"]
