"""What the launch files' arguments add to the node's params files: only the arguments that were
given, so a params file's ``model.path`` or ``use_sim_time`` is not reset by an empty default."""

from __future__ import annotations

from typing import Any

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def explicit_parameters(*, model_path: str = "", use_sim_time: str = "") -> dict[str, Any]:
    """Parameters for the node from launch arguments, applied after the params files; an empty
    argument (the default) leaves the files' value. Raises ``ValueError`` for a ``use_sim_time``
    that is not a boolean word."""
    out: dict[str, Any] = {}
    if model_path.strip():
        out["model.path"] = model_path.strip()
    word = use_sim_time.strip().lower()
    if word:
        if word not in _TRUE + _FALSE:
            raise ValueError(f"use_sim_time:={use_sim_time!r} is not true or false")
        out["use_sim_time"] = word in _TRUE
    return out


__all__ = ["explicit_parameters"]
