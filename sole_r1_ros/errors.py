"""The package's exceptions: one root, one branch per kind of failure.

Catch :class:`SoleR1Error` to handle anything this package raises on purpose. Input errors
(a bad goal, image, message, bag or clip) are also ``ValueError`` instances, and so are
configuration errors.
"""

from __future__ import annotations


class SoleR1Error(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(SoleR1Error, ValueError):
    """A setting, parameter or protocol file is invalid; nothing was started."""


class ModelLoadError(SoleR1Error):
    """The model cannot be loaded: directory missing or incomplete, unsupported, or unreachable."""


class InferenceError(SoleR1Error):
    """The model failed while answering (``out_of_memory`` tells whether memory ran out)."""

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


class InputError(SoleR1Error, ValueError):
    """Bad input data: a goal, an image or message, a bag or a video clip."""


__all__ = ["ConfigError", "InferenceError", "InputError", "ModelLoadError", "SoleR1Error"]
